"""Save under tf.distribute.MirroredStrategy on two logical CPUs, restore without it
(and the other way round); prints OK when every value is equal.

Usage: mirrored.py DIR
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasave as ks  # noqa: E402


def build():
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
    return model


def state(model):
    return [np.asarray(keras.ops.convert_to_numpy(v))
            for v in model.weights + model.optimizer.variables]


def same(a, b):
    return len(a) == len(b) and all(x.tobytes() == y.tobytes() for x, y in zip(a, b))


def main(directory):
    data, labels = ks.reference_data(64)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = build()
    mirrored.fit(data, labels, batch_size=16, epochs=1, verbose=0)
    saved = ks.CheckpointManager(os.path.join(directory, "a"), model=mirrored).save()
    plain = build()
    ks.CheckpointManager(os.path.join(directory, "a"), model=plain).restore_or_initialize()
    assert same(state(mirrored), state(plain)), "mirrored -> plain"
    print("restored", saved)

    plain.fit(data, labels, batch_size=16, epochs=1, verbose=0)
    ks.CheckpointManager(os.path.join(directory, "b"), model=plain).save()
    with strategy.scope():
        mirrored2 = build()
        ks.CheckpointManager(os.path.join(directory, "b"), model=mirrored2).restore_or_initialize()
    assert same(state(plain), state(mirrored2)), "plain -> mirrored"
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1])
