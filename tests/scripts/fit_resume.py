"""``model.fit`` with kerasave's Checkpoint callback, killable mid-epoch.

Usage: fit_resume.py CKPT_DIR|- OUT.npz [KILL_AT_GLOBAL_BATCH]

Trains the reference model (plus a Dropout layer, so RNG state matters) for 3
epochs of 8 batches on deterministic data; with CKPT_DIR it saves every 3
batches. Writes the final weights and optimizer state to OUT.npz. With
KILL_AT_GLOBAL_BATCH it SIGKILLs itself after that batch, as a crash would.
With KERASAVE_BLOCKING=0 in the environment, the callback saves in the background.
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasave as ks  # noqa: E402
from kerasave.callbacks import Checkpoint  # noqa: E402


class Kill(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def main(directory, out, kill_at=None):
    keras.utils.set_random_seed(0)
    glorot = keras.initializers.GlorotUniform
    model = keras.Sequential([
        keras.Input((32,)),
        keras.layers.Dense(64, activation="relu", kernel_initializer=glorot(0)),
        keras.layers.Dropout(0.25, seed=1),
        keras.layers.Dense(10, activation="softmax", kernel_initializer=glorot(1)),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    data, labels = ks.reference_data(256, seed=0)
    callbacks = []
    if directory != "-":
        callbacks.append(Checkpoint(directory, save_freq=3, max_to_keep=2,
                                    blocking=os.environ.get("KERASAVE_BLOCKING", "1") != "0"))
    if kill_at is not None:
        callbacks.append(Kill(kill_at))
    model.fit(data, labels, epochs=3, batch_size=32, shuffle=False, callbacks=callbacks,
              verbose=0)
    state = model.weights + model.optimizer.variables
    np.savez(out, **{f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(state)})


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], int(args[2]) if len(args) > 2 else None)
