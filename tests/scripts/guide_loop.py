"""The checkpoint guide's custom training loop, with kerasave's CheckpointManager.

Usage: guide_loop.py CKPT_DIR OUT.npz TOTAL_STEPS [KILL_AT_STEP]

With KERASAVE_BLOCKING=0 in the environment, saves run in the background
(``save(blocking=False)``).

Trains the guide's toy model to TOTAL_STEPS, saving when the step counter hits a
multiple of 5 (the guide's loop), and writes the
final state and the loss of every step it ran to OUT.npz. With KILL_AT_STEP it
SIGKILLs itself right after that step, as a crash would.
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasave as ks  # noqa: E402


class Net(keras.Model):
    """A simple linear model (the guide's)."""

    def __init__(self):
        super().__init__()
        self.l1 = keras.layers.Dense(5)

    def call(self, x):
        return self.l1(x)


def toy_dataset():
    inputs = tf.range(10.0)[:, None]
    labels = inputs * 5.0 + tf.range(5.0)[None, :]
    return tf.data.Dataset.from_tensor_slices(dict(x=inputs, y=labels)).repeat().batch(2)


def train_step(net, example, optimizer):
    with tf.GradientTape() as tape:
        output = net(example["x"])
        loss = tf.reduce_mean(tf.abs(output - example["y"]))
    variables = net.trainable_variables
    gradients = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(gradients, variables))
    return loss


def main(directory, out, total, kill_at=None):
    keras.utils.set_random_seed(0)
    net = Net()  # fresh and unbuilt: the case that loses the kernel natively
    opt = keras.optimizers.Adam(0.1)
    iterator = iter(toy_dataset())
    step = tf.Variable(1)
    manager = ks.CheckpointManager(directory, model=net, optimizer=opt, max_to_keep=3,
                                   step=step, iterator=iterator)
    restored = manager.restore_or_initialize()
    print("restored from", restored, flush=True)
    losses = {}
    while int(step) <= total:
        loss = train_step(net, next(iterator), opt)
        losses[int(step)] = float(loss.numpy())
        if kill_at is not None and int(step) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        step.assign_add(1)
        if int(step) % 5 == 0:
            manager.save(blocking=os.environ.get("KERASAVE_BLOCKING", "1") != "0")
    manager.close()
    np.savez(out, steps=np.array(sorted(losses)), losses=np.array([losses[k] for k in
                                                                   sorted(losses)]),
             iterations=opt.iterations.numpy(), step=step.numpy(),
             **{f"w{i}": v.numpy() for i, v in enumerate(net.weights + opt.variables)})


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], int(args[2]), int(args[3]) if len(args) > 3 else None)
