"""Probes of the ``fit`` callback's fast paths (``kerasave._fastpaths.fit``): each runs
the fast path on a tiny case and checks it does what the callback relies on."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kerasave._fastpaths import register
from kerasave._runtime.lazy import keras, tf

__all__: list[str] = []


def _tiny() -> Any:
    from kerasave._fastpaths.probes import _tiny as tiny

    return tiny()


@register("fit_callbacks", "fit's other callbacks: saved after they see each step, restored",
          "none in Keras: the callback saves where it stands and restores no other")
def _probe_callbacks() -> None:
    from kerasave._fastpaths.fit import callback_list, hook_callback_list

    events: list[str] = []

    class Other(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            events.append("other train begin")

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            events.append("other epoch begin")

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            events.append(f"other batch {batch}")

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            events.append("other epoch end")

    other = Other()

    class Ours(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            found = callback_list(self)
            if found is None or other not in found.callbacks:
                raise AssertionError("fit's CallbackList was not found")
            hook_callback_list(
                found, before_first_epoch=lambda: events.append("restore"),
                skipping=lambda: len([e for e in events if e.startswith("after")]) == 0,
                after_batch=lambda b, logs: events.append(f"after batch {b}"),
                after_epoch=lambda e, logs: events.append("after epoch"),
                after_train=lambda logs: events.append("after train"))

    model = _tiny()
    model.fit(np.ones((4, 3), "float32"), np.ones((4, 2), "float32"), batch_size=2,
              epochs=1, verbose=0, callbacks=[Ours(), other])
    expected = ["other train begin", "restore", "other epoch begin", "after batch 0",
                "other batch 1", "after batch 1", "other epoch end", "after epoch",
                "after train"]
    if events != expected:
        raise AssertionError(f"the hooks ran as {events}")


@register("callback_state", "Keras' built-in callbacks' states are saved and restored",
          "get_state/set_state of users' callbacks; built-ins named in a warning")
def _probe_callback_state() -> None:
    from kerasave._fastpaths.fit import builtin_state, set_builtin_state

    model = _tiny()
    losses = [3.0, 2.0, 2.5, 2.6, 2.7]

    def check(make: Any, first: Any, then: Any, effect: Any = lambda cb: None) -> None:
        a, b, c = make(), make(), make()
        for cb in (a, b, c):
            cb.set_model(model)
            cb.on_train_begin()
            cb.on_epoch_begin(0)
        first(a)
        state = builtin_state(a)
        set_builtin_state(b, _copied(state))
        model.stop_training = False
        outcomes = []
        for cb in (a, b, c):
            model.stop_training = False
            then(cb)
            outcomes.append((_plain(builtin_state(cb)), effect(cb), model.stop_training))
        if outcomes[0] != outcomes[1] or outcomes[0] == outcomes[2]:
            raise AssertionError(f"{type(a).__name__}: the state does not carry over")

    def epochs(at: int, to: int) -> Any:
        return lambda cb: [cb.on_epoch_end(e, {"loss": losses[e], "val_loss": losses[e]})
                           for e in range(at, to)]

    lr = model.optimizer.learning_rate
    check(lambda: keras.callbacks.EarlyStopping(monitor="loss", patience=2,
                                                restore_best_weights=True),
          epochs(0, 2), epochs(2, 5))
    check(lambda: keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5),
          epochs(0, 2), lambda cb: (lr.assign(0.01), epochs(2, 4)(cb)),
          lambda cb: float(lr.numpy()))
    check(keras.callbacks.History, epochs(0, 2), epochs(2, 3))
    with tempfile.TemporaryDirectory(prefix="kerasave-probe-") as tmp:
        path = str(Path(tmp) / "probe.weights.h5")

        def batches(at: int, to: int) -> Any:
            return lambda cb: [cb.on_train_batch_end(b) for b in range(at, to)]

        saved: dict[int, list[int]] = {}

        def make() -> Any:
            callback = keras.callbacks.ModelCheckpoint(path, save_weights_only=True,
                                                       save_freq=4)
            mine = saved.setdefault(id(callback), [])
            callback._save_model = lambda epoch, batch, logs: mine.append(batch)
            return callback

        check(make, batches(0, 2), batches(0, 2), lambda cb: tuple(saved[id(cb)]))  # (next epoch)

        # CSVLogger: the run killed after a row the checkpoint does not hold, the re-run
        # on the same file, against a straight run on another.
        def rows(callback: Any, epochs: range) -> None:
            for epoch in epochs:
                callback.on_epoch_end(epoch, {"loss": losses[epoch]})

        def logger(name: str) -> Any:
            callback = keras.callbacks.CSVLogger(str(Path(tmp) / name))
            callback.set_model(model)
            callback.on_train_begin()
            return callback

        killed, straight = logger("run.csv"), logger("straight.csv")
        rows(killed, range(2))
        rows(straight, range(2))
        state = builtin_state(killed)
        rows(killed, range(2, 3))
        killed.on_train_end()
        resumed = logger("run.csv")
        set_builtin_state(resumed, _copied(state))
        for callback in (resumed, straight):
            rows(callback, range(2, 4))
            callback.on_train_end()
        if not state["content"] or (  # type: ignore[index]  # (a CSVLogger has one)
                (Path(tmp) / "run.csv").read_bytes() != (Path(tmp) / "straight.csv").read_bytes()):
            raise AssertionError("CSVLogger: the file does not carry over")


def _copied(state: Any) -> Any:
    return {k: (list(map(np.copy, v)) if isinstance(v, list) and v and
                isinstance(v[0], np.ndarray) else
                {a: list(b) for a, b in v.items()} if isinstance(v, dict) else
                list(v) if isinstance(v, list) else v) for k, v in state.items()}


def _plain(state: Any) -> Any:
    def one(v: Any) -> Any:
        if isinstance(v, list):
            return tuple(one(x) for x in v)
        if isinstance(v, dict):
            return tuple(sorted((k, one(x)) for k, x in v.items()))
        if isinstance(v, np.ndarray):
            return (v.dtype.str, v.shape, v.tobytes())
        return v if v is None or isinstance(v, (int, str)) else float(v)

    return one(state)


def _order(iterator: Any, count: int) -> list[list[int]]:
    return [next(iterator).numpy().tolist() for _ in range(count)]


@register("fit_dataset", "a reshuffled pipeline's next epoch is prepared from fit's dataset",
          "none in Keras: a resume that needs the next epoch's state refuses")
def _probe_dataset() -> None:
    from kerasave._fastpaths.fit import dataset_of, fit_epoch_iterator, renews

    def pipeline() -> Any:
        return tf.data.Dataset.range(8).shuffle(8, seed=5).batch(4)

    dataset = pipeline()
    straight = [_order(iter(dataset), 2) for _ in range(3)]
    dataset = pipeline()
    found = dataset_of(iter(dataset))
    if found is None or [_order(iter(found), 2) for _ in range(2)] != straight[1:]:
        raise AssertionError("the iterator's dataset does not continue the reshuffling")
    # fit's rule for a new iterator, against what fit does: two batches an epoch,
    # one drawn per epoch (steps_per_epoch=1), so every other epoch iterates again.
    model = _tiny()
    model.make_train_function()
    original, seen = model.train_function, list[Any]()

    def train_function(iterator: Any) -> Any:
        epochs = fit_epoch_iterator()
        logs = original(iterator)
        seen.append((iterator, renews(epochs, 1 + len([s for s in seen
                                                      if s[0] is iterator]))))
        return logs

    model.train_function = train_function
    data = tf.data.Dataset.from_tensor_slices((np.ones((4, 3), "float32"),
                                               np.ones((4, 2), "float32"))).batch(2)
    model.fit(data, epochs=4, steps_per_epoch=1, verbose=0)
    if len(seen) != 4 or [s[1] for s in seen] != [False, True, False, True] or \
            seen[0][0] is not seen[1][0] or seen[1][0] is seen[2][0]:
        raise AssertionError(f"fit's iterators: {[(id(i), r) for i, r in seen]}")


@register("fit_live_state", "an iterator across epochs resumes from its state, not by replay",
          "the iterator is replayed from its start (slower, exact)")
def _probe_live_state() -> None:
    from kerasave._fastpaths.fit import live_state_is_whole
    from kerasave.checkpoints.fitstate import iterator_state, restore_iterator

    def pipeline() -> Any:
        return tf.data.Dataset.range(12).shuffle(12, seed=3).batch(5).repeat().prefetch(2)

    straight = _order(iter(pipeline()), 9)
    whole = []
    for drawn in range(1, 6):
        iterator = iter(pipeline())
        fresh = iterator_state(iterator)
        _order(iterator, drawn)
        state = iterator_state(iterator)
        if not live_state_is_whole(state, fresh):
            continue
        whole.append(drawn)
        resumed = iter(pipeline())
        restore_iterator(resumed, state)
        if _order(resumed, 9 - drawn) != straight[drawn:]:  # (three passes: 9 batches)
            raise AssertionError(f"a state judged whole ({drawn} drawn) restores otherwise")
    if not whole or len(whole) == 5:
        raise AssertionError(f"states judged whole after {whole} batches of 1-5")
