"""One worker of a two-worker ``MultiWorkerMirroredStrategy`` cluster on localhost that
trains with a custom loop (TensorFlow's multi-worker custom training loop guide) and
checkpoints through ``kerasave.CheckpointManager``; both workers call ``save``.

The batch of step ``s`` depends on ``s`` and the worker's index only, so a run resumed
from a checkpoint sees the batches a straight run sees. At the end the worker writes
every model and optimizer variable, by name, and the step to ``--out`` (.npz).

Usage: mw_worker.py --index I --ports P0,P1 --directory DIR --steps N --save-every K
                    --out OUT.npz
"""

import argparse
import json
import os
import sys
import time

PER_WORKER_BATCH = 8
WORKERS = 2


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, required=True, choices=range(WORKERS))
    parser.add_argument("--ports", required=True, help="two comma-separated ports")
    parser.add_argument("--directory", required=True, help="the shared checkpoint directory")
    parser.add_argument("--steps", type=int, required=True, help="train until the step is this")
    parser.add_argument("--save-every", type=int, required=True, help="save every k steps")
    parser.add_argument("--out", required=True, help="the .npz written at the end")
    parser.add_argument("--chief-fails-at", type=int, default=None,
                        help="at this step the chief's save fails before it begins")
    args = parser.parse_args(argv)
    ports = args.ports.split(",")
    if len(ports) != WORKERS:
        parser.error(f"--ports needs {WORKERS} ports; got {args.ports!r}")
    args.ports = ports
    return args


def batch(step, index):
    """The batch worker ``index`` trains on at step ``step`` (numpy, float32)."""
    import numpy as np

    rng = np.random.RandomState(seed=step * 7 + index)
    x = rng.standard_normal((PER_WORKER_BATCH, 8)).astype(np.float32)
    y = rng.standard_normal((PER_WORKER_BATCH, 4)).astype(np.float32)
    return x, y


def build():
    """The model (with BatchNormalization) and its built Adam, the same in every run;
    in a strategy's scope when one is wanted. ``synchronized=True``: the batch
    statistics are all-reduced, so every worker's moving mean and variance stay the
    same (unsynchronized, each worker moves its own copy by its own batches, and the
    workers drift apart)."""
    import keras

    inputs = keras.Input((8,), name="x")
    seeded = keras.initializers.GlorotUniform  # the same start in every run (no global seed)
    hidden = keras.layers.Dense(16, activation="relu", kernel_initializer=seeded(seed=1),
                                name="hidden")(inputs)
    hidden = keras.layers.BatchNormalization(synchronized=True, name="norm")(hidden)
    outputs = keras.layers.Dense(4, kernel_initializer=seeded(seed=2), name="head")(hidden)
    model = keras.Model(inputs, outputs, name="mw")
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def state(model, optimizer, step):
    """Every model and optimizer variable by a stable name (in one order), and the step."""
    import keras
    import numpy as np

    arrays = {"step": np.asarray(keras.ops.convert_to_numpy(step))}
    for prefix, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
        for v in variables:
            name = f"{prefix}/{v.path}"
            assert name not in arrays, name
            arrays[name] = np.array(keras.ops.convert_to_numpy(v), copy=True)
    return arrays


def main(argv=None):
    args = parse(argv)
    # Before TensorFlow is imported: the strategy reads the cluster from TF_CONFIG.
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{port}" for port in args.ports]},
        "task": {"type": "worker", "index": args.index},
    })
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

    import keras
    import numpy as np
    import tensorflow as tf

    import kerasave

    started = time.perf_counter()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == WORKERS, strategy.num_replicas_in_sync
    global_batch = PER_WORKER_BATCH * strategy.num_replicas_in_sync

    with strategy.scope():
        model, optimizer = build()
        step = tf.Variable(0, dtype=tf.int64, name="step")
        # A metric's variables are synchronized on read: reading them all-reduces
        # across the workers, so a save that only the chief took part in would hang.
        mean_loss = keras.metrics.Mean(name="mean_loss")

    manager = kerasave.CheckpointManager(args.directory, model=model, optimizer=optimizer,
                                         step=step, max_to_keep=2,
                                         # (a Keras metric is no Trackable: its variables are)
                                         loss_total=mean_loss.variables[0],
                                         loss_count=mean_loss.variables[1])
    restored = manager.restore_or_initialize()

    def replica_fn(x, y):
        with tf.GradientTape() as tape:
            predictions = model(x, training=True)  # BN's moving statistics move
            per_example = tf.reduce_mean(tf.square(predictions - y), axis=-1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        mean_loss.update_state(loss)
        return loss

    @tf.function
    def train_step(x, y):
        losses = strategy.run(replica_fn, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    while int(step.numpy()) < args.steps:
        s = int(step.numpy())

        def values(context, s=s):
            # One replica per worker: its replica id is the worker's index.
            assert context.replica_id_in_sync_group == args.index
            return batch(s, args.index)

        x, y = strategy.experimental_distribute_values_from_function(values)
        train_step(x, y)
        step.assign_add(1)
        if int(step.numpy()) % args.save_every == 0:
            if int(step.numpy()) == args.chief_fails_at and args.index == 0:
                def broken():
                    raise kerasave.KerasaveError("the listing failed (on purpose)")

                manager._entries = broken  # (the chief's save fails before it writes)
            manager.save(step=step)  # ckpt-<step>
    manager.close()

    # Read in one order on every worker (a variable synchronized on read would
    # all-reduce when read).
    arrays = state(model, optimizer, step)
    arrays.update({f"mean_loss/{v.name}": np.array(v.numpy()) for v in mean_loss.variables})
    np.savez(args.out, **arrays)
    print(json.dumps({"index": args.index, "restored": restored, "step": int(step.numpy()),
                      "seconds": round(time.perf_counter() - started, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
