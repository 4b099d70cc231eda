"""The resume corpus: training runs as users write them, straight and killed-and-re-run.

Usage:
    resume_corpus.py straight OUT_DIR CASE...        each case uninterrupted -> OUT_DIR/CASE.npz
    resume_corpus.py kill CKPT_ROOT CASE             CASE with checkpoints in CKPT_ROOT/CASE,
                                                     SIGKILLed at the case's batch
    resume_corpus.py resume CKPT_ROOT OUT_DIR CASE...  each case run again: it resumes

A case named ``NAME@backup`` is NAME with Keras' ``BackupAndRestore`` (same save
frequency) in place of kerasave's ``Checkpoint`` (bench/resume.py compares the two
on every case; the guide's loop has no such twin). Several cases run in
one process: each starts from ``keras.backend.clear_session()`` and the same seeds,
as a fresh script would. A case that is refused prints ``REFUSED CASE: message``;
every ``ResumeWarning`` prints ``WARNING CASE: message``. Each npz holds the model's
and optimizer's variables (``w*``), the History (``h:<key>``), and what the case's
callbacks recorded (``x:<name>``).
"""

import importlib.util
import json
import os
import signal
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasave as ks  # noqa: E402
from kerasave._fastpaths import enabled  # noqa: E402
from kerasave.callbacks import Checkpoint, ResumeWarning  # noqa: E402

CASES = {}
# Run with KERASAVE_FAST_PATHS=0, every case is on the public API (make test-public's way).
PUBLIC = not enabled()


def case(kill, save_freq="epoch", epochs=4, fast_paths=True):
    """Register a case: SIGKILL after ``kill`` trained batches; save every
    ``save_freq``; with ``fast_paths`` False, KERASAVE_FAST_PATHS=0."""
    def register(build):
        CASES[build.__name__] = dict(build=build, kill=kill, save_freq=save_freq,
                                     epochs=epochs, fast_paths=fast_paths)
        return build
    return register


def _model(dropout=True, optimizer=None):
    glorot = keras.initializers.GlorotUniform
    layers = [keras.Input((32,)),
              keras.layers.Dense(16, activation="relu", kernel_initializer=glorot(0))]
    if dropout:
        layers.append(keras.layers.Dropout(0.25, seed=1))
    layers.append(keras.layers.Dense(10, activation="softmax", kernel_initializer=glorot(1)))
    model = keras.Sequential(layers)
    model.compile(optimizer=optimizer or keras.optimizers.Adam(0.01),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n=96, seed=0):
    return ks.reference_data(n, seed=seed)


def _ds(n=96, seed=0):
    return tf.data.Dataset.from_tensor_slices(_data(n, seed))


# -- the cases --------------------------------------------------------------------------

@case(kill=14, save_freq=4)
def arrays_mid_epoch(work):
    """Arrays with fit's default shuffling, killed mid-epoch."""
    x, y = _data()
    return _model(), dict(x=x, y=y, batch_size=16), []


@case(kill=14)
def arrays_epoch(work):
    x, y = _data()
    return _model(), dict(x=x, y=y, batch_size=16), []


@case(kill=14)
def tfdata_fixed(work):
    """A tf.data pipeline that does not shuffle."""
    return _model(), dict(x=_ds().batch(16).prefetch(2)), []


@case(kill=14)
def tfdata_fixed_no_dropout(work):
    """Nothing random in training at all (BackupAndRestore's best case)."""
    return _model(dropout=False), dict(x=_ds().batch(16).prefetch(2)), []


@case(kill=14)
def tfdata_reshuffled(work):
    """The issue's pipeline: ds.shuffle(n, seed=s).batch(b), reshuffled every epoch."""
    return _model(), dict(x=_ds().shuffle(96, seed=7).batch(16)), []


@case(kill=15, save_freq=4)
def tfdata_reshuffled_mid_epoch(work):
    ds = _ds().shuffle(64, seed=7).map(lambda x, y: (x * 2.0, y)).batch(16).prefetch(2)
    return _model(), dict(x=ds), []


@case(kill=17, save_freq=5)
def tfdata_repeat(work):
    """One iterator for the whole run: repeat() with steps_per_epoch, a partial batch at
    the end of each pass, a deterministic parallel map and interleave."""
    x, y = _data()
    parts = tf.data.Dataset.range(2).interleave(
        lambda i: tf.data.Dataset.from_tensor_slices((x, y)).shard(2, i), cycle_length=2,
        num_parallel_calls=2, deterministic=True)
    ds = parts.shuffle(96, seed=3).map(lambda a, b: (a + 1.0, b), num_parallel_calls=2) \
        .batch(20).repeat().prefetch(2)
    return _model(), dict(x=ds, steps_per_epoch=7), []


@case(kill=14)
def tfdata_repeat_epoch(work):
    ds = _ds().shuffle(96, seed=3).batch(16).repeat()
    return _model(), dict(x=ds, steps_per_epoch=5), []


class FirstLabel(keras.metrics.Metric):
    """The class of the first example seen since the metric was reset: it tells which
    order the data came in (a mean loss often does not, to the last bit)."""

    def __init__(self, name="first_label", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")
        self.seen = self.add_variable(shape=(), initializer="zeros", name="seen")

    def update_state(self, y_true, y_pred, sample_weight=None):
        first = keras.ops.cast(keras.ops.argmax(y_true[0]), "float32")
        self.value.assign(keras.ops.where(self.seen > 0, self.value, first))
        self.seen.assign(1.0)

    def result(self):
        return self.value


@case(kill=14, save_freq=4)
def validation(work):
    """validation_data that reshuffles too, EarlyStopping and ReduceLROnPlateau on
    val_loss, ModelCheckpoint keeping the best."""
    val = tf.data.Dataset.from_tensor_slices(_data(48, seed=1)).shuffle(48, seed=5).batch(4)
    callbacks = [keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True),
                 keras.callbacks.ReduceLROnPlateau(patience=1, factor=0.5),
                 keras.callbacks.ModelCheckpoint(str(work / "best.weights.h5"),
                                                 save_best_only=True, save_weights_only=True)]
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy",
                  metrics=["accuracy", FirstLabel()])
    return model, dict(x=_ds().shuffle(96, seed=7).batch(16), validation_data=val), callbacks


@case(kill=14, save_freq=4)
def weights(work):
    """sample_weight with arrays."""
    x, y = _data()
    weight = np.linspace(0.5, 2.0, len(x)).astype("float32")
    return _model(), dict(x=x, y=y, sample_weight=weight, batch_size=16), []


@case(kill=14)
def class_weight(work):
    return _model(), dict(x=_ds().shuffle(96, seed=7).batch(16),
                          class_weight={i: 1.0 + i / 10 for i in range(10)}), []


@case(kill=15, save_freq=6)
def steps_per_execution(work):
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=3)
    return model, dict(x=_ds().shuffle(96, seed=7).batch(8)), []


@case(kill=14, save_freq=4)
def mixed_precision(work):
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = _model()
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    return model, dict(x=_ds().shuffle(96, seed=7).batch(16)), []


class Counter(keras.callbacks.Callback):
    """A user's callback with state, taking part through get_state/set_state."""

    def __init__(self):
        super().__init__()
        self.batches, self.losses = 0, []

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        self.losses.append(np.float32(logs["loss"]))

    def get_state(self):
        return {"batches": self.batches, "losses": np.array(self.losses, "float32")}

    def set_state(self, state):
        self.batches, self.losses = state["batches"], list(state["losses"])


@case(kill=15, save_freq=4, epochs=6)
def callbacks(work):
    """Every stateful built-in callback (TensorBoard where the tensorboard package is
    installed; OrbaxCheckpoint aside: it needs orbax, which pulls in JAX), and a user's:
    EarlyStopping stops the run."""
    model = _model(optimizer=keras.optimizers.SGD(0.05, momentum=0.5, use_ema=True))
    counter = Counter()
    checkpoints = work / "mc"
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="loss", min_delta=0.05, patience=1,
                                      restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="loss", min_delta=0.02, patience=0,
                                          factor=0.5),
        keras.callbacks.ModelCheckpoint(str(checkpoints / "{epoch:02d}-{batch:02d}.weights.h5"),
                                        save_weights_only=True, save_freq=5),
        keras.callbacks.SwapEMAWeights(swap_on_epoch=True),
        keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.9),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(str(work / "log.csv")),
        counter,
    ]
    board = None
    if importlib.util.find_spec("tensorboard") is not None:
        board = keras.callbacks.TensorBoard(str(work / "tb"), update_freq=2, write_graph=False,
                                            profile_batch=0)
        callbacks.append(board)

    def record():
        kept = {"counter": np.array([counter.batches], "int64"), "losses":
                np.array(counter.losses, "float32"),
                "stopped": np.array([callbacks[0].stopped_epoch], "int64"),
                "files": np.array(sorted(p.name for p in checkpoints.glob("*.h5"))),
                "csv": np.frombuffer((work / "log.csv").read_bytes(), np.uint8)}
        if board is not None:  # (the step of its batch summaries)
            kept["tensorboard"] = np.array([board._global_train_batch], "int64")
        return kept

    return model, dict(x=_ds().shuffle(96, seed=7).batch(16)), callbacks, record


@case(kill=14, fast_paths=False)
def public_api_epoch(work):
    """KERASAVE_FAST_PATHS=0: a resume that must skip finished epochs is refused."""
    return _model(), dict(x=_ds().shuffle(96, seed=7).batch(16)), []


@case(kill=4, save_freq=2, fast_paths=False)
def public_api_mid_epoch(work):
    """KERASAVE_FAST_PATHS=0, killed in the first epoch: exact on the public API."""
    return _model(), dict(x=_ds().shuffle(96, seed=7).batch(16)), []


@case(kill=14)
def unseeded(work):
    """A shuffle with no seed anywhere: it cannot resume exactly, and says so."""
    tf.random.set_seed(None)
    return _model(), dict(x=_ds().shuffle(96).batch(16)), []


# -- the checkpoint guide's custom loop ---------------------------------------------------

class Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.l1 = keras.layers.Dense(5)

    def call(self, x):
        return self.l1(x)


def guide(directory, kill, steps=30):
    """The guide's loop with a reshuffled tf.data iterator and a tf.random.Generator
    (noise on the inputs), both passed to the CheckpointManager."""
    net, opt, step = Net(), keras.optimizers.Adam(0.1), tf.Variable(1)
    inputs = tf.range(10.0)[:, None]
    labels = inputs * 5.0 + tf.range(5.0)[None, :]
    iterator = iter(tf.data.Dataset.from_tensor_slices(dict(x=inputs, y=labels))
                    .shuffle(10, seed=4).repeat().batch(3))
    rng = tf.random.Generator.from_seed(11)
    manager = None
    if directory is not None:
        manager = ks.CheckpointManager(directory, model=net, optimizer=opt, step=step,
                                       iterator=iterator, rng=rng, max_to_keep=2)
        manager.restore_or_initialize()
    losses = {}
    while int(step) <= steps:
        example = next(iterator)
        with tf.GradientTape() as tape:
            noisy = example["x"] + rng.normal(tf.shape(example["x"]), stddev=0.1)
            loss = tf.reduce_mean(tf.abs(net(noisy) - example["y"]))
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables))
        losses[int(step)] = np.float32(loss.numpy())
        if kill is not None and int(step) == kill:
            os.kill(os.getpid(), signal.SIGKILL)
        step.assign_add(1)
        if manager is not None and int(step) % 5 == 0:
            manager.save()
    if manager is not None:
        manager.close()
    out = {f"w{i}": np.asarray(v.numpy()) for i, v in
           enumerate(net.weights + opt.variables)}
    out.update({"x:step": step.numpy(), "x:rng": rng.state.numpy(),
                "x:steps": np.array(sorted(losses)),
                "x:losses": np.array([losses[k] for k in sorted(losses)])})
    return out


# -- running ------------------------------------------------------------------------------

class Kill(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def run(name, directory, kill):
    name, _, resumer = name.partition("@")
    spec = CASES.get(name)
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    if spec is None:  # the guide's loop
        return guide(directory, kill)
    if spec["fast_paths"] and not PUBLIC:
        os.environ.pop("KERASAVE_FAST_PATHS", None)
    else:
        os.environ["KERASAVE_FAST_PATHS"] = "0"
    work = Path(tempfile.mkdtemp(prefix=f"corpus-{name}-"))
    if directory is not None:  # files a case's own callbacks write live beside its checkpoints
        work = Path(directory).with_name(Path(directory).name + "-files")
        work.mkdir(parents=True, exist_ok=True)
    model, fit, callbacks, *record = spec["build"](work)
    callbacks = list(callbacks)
    if directory is not None:
        if resumer == "backup":
            callbacks.insert(0, keras.callbacks.BackupAndRestore(directory,
                                                                 save_freq=spec["save_freq"]))
        else:
            callbacks.insert(0, Checkpoint(directory, save_freq=spec["save_freq"]))
    if kill is not None:
        callbacks.append(Kill(kill))
    history = model.fit(epochs=spec["epochs"], verbose=0, callbacks=callbacks, **fit)
    out = {f"w{i}": np.asarray(keras.ops.convert_to_numpy(v))
           for i, v in enumerate(model.weights + model.optimizer.variables)}
    out["h:epoch"] = np.array(history.epoch, "int64")
    for key, series in history.history.items():
        out[f"h:{key}"] = np.array(series, "float64")
    for key, value in (record[0]() if record else {}).items():
        out[f"x:{key}"] = value
    return out


def main(argv):
    mode, *rest = argv
    if mode == "straight":
        out, names = Path(rest[0]), rest[1:]
        for name in names:
            np.savez(out / f"{name}.npz", **run(name, None, None))
    elif mode == "kill":
        root, name = Path(rest[0]), rest[1]
        spec = CASES.get(name.partition("@")[0])
        run(name, str(root / name), spec["kill"] if spec else 17)
        raise SystemExit(f"{name} was not killed")
    elif mode == "resume":
        root, out, names = Path(rest[0]), Path(rest[1]), rest[2:]
        for name in names:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ResumeWarning)
                try:
                    result = run(name, str(root / name), None)
                except ks.KerasaveError as exc:
                    print(f"REFUSED {name}: {exc}", flush=True)
                    continue
            for warning in caught:
                if issubclass(warning.category, ResumeWarning):
                    print(f"WARNING {name}: {warning.message}", flush=True)
            np.savez(out / f"{name}.npz", **result)
    print(json.dumps({"done": mode}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
