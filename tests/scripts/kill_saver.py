"""Save a model of tens of MB in a loop until killed (for the SIGKILL tests).

Usage: kill_saver.py CALL PATH

Alternates two versions of the same model (A, and A with every float variable
plus one) and saves them to PATH with kerasave's CALL (save_weights,
save_model, save_config) back to back, printing "saved N" after each save.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasave as ks  # noqa: E402


def big_model():
    glorot = keras.initializers.GlorotUniform
    model = keras.Sequential([
        keras.Input((1024,)),
        keras.layers.Dense(2048, activation="relu", kernel_initializer=glorot(0)),
        keras.layers.Dense(2048, activation="relu", kernel_initializer=glorot(1)),
        keras.layers.Dense(10, kernel_initializer=glorot(2)),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def versions(model):
    a = [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.weights]
    return a, [w + np.ones_like(w) for w in a]


def main(call, path):
    model = big_model()
    a, b = versions(model)
    n = 0
    while True:
        for variable, value in zip(model.weights, a if n % 2 == 0 else b):
            variable.assign(value)
        getattr(ks, call)(model, path)
        n += 1
        print(f"saved {n}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
