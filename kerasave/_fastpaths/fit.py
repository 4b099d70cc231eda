"""What kerasave's ``fit`` callback needs from inside Keras and TensorFlow.

Five fast paths, each with its public twin (``kerasave.callbacks`` says which
twin runs when one is off):

- ``fit_initial_epoch``: a resumed ``fit`` starts at a later epoch. Keras' own
  ``BackupAndRestore`` sets the model's private ``_initial_epoch`` in
  ``on_train_begin``; no public call does this from inside ``fit``. Off: a
  resume that must skip finished epochs needs ``fit(initial_epoch=N)`` from the
  caller, and a ``fit`` whose first epoch is another is refused, asking for it.
- ``fit_callbacks``: the other callbacks of the ``fit`` (the ``CallbackList``
  that calls ours, found in the caller's frame), and hooks around that list's
  ``on_epoch_begin``/``on_train_batch_*``/``on_epoch_end``/``on_train_end`` so
  that a checkpoint is taken after *every* callback has seen the epoch or batch,
  and their states are restored after every ``on_train_begin`` and before any
  ``on_epoch_begin``. Off: the callback saves where it stands in the list and
  restores no other callback (it says so at resume).
- ``callback_state``: which attributes of Keras' built-in callbacks are their
  state across epochs and batches (some are private). Off: those callbacks are
  named in a warning at resume; users' callbacks with ``get_state``/``set_state``
  take part either way.
- ``fit_dataset``: the ``tf.data.Dataset`` behind the iterator ``fit`` trains
  from (``OwnedIterator._dataset``), to prepare the state the next epoch's
  iterator starts from and to read the pipeline's graph. Off: a resume that
  needs the next epoch's pipeline state refuses.
- ``fit_live_state``: which saved iterator states restore without disturbing
  the pipeline's later iterations (``live_state_is_whole``). Off: an iterator
  that lives across epochs is replayed from its start on resume (slower, exact).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from kerasave._errors import KerasaveError
from kerasave._fastpaths import attempt

__all__ = ["KNOWN_STATELESS", "builtin_state", "callback_list", "dataset_of",
           "fit_epoch_iterator", "hook_callback_list", "live_state_is_whole",
           "must_start", "renews", "set_builtin_state", "start_at"]


def start_at(model: Any, epoch: int) -> bool:
    """Make the ``fit`` that is beginning start at ``epoch``; False when only the
    caller's ``fit(initial_epoch=epoch)`` can (the fast path is off: the public twin
    is to check the first epoch ``fit`` begins, ``must_start``)."""
    if epoch == 0:
        return True

    def fast() -> bool:
        model._initial_epoch = epoch
        return True

    return attempt("fit_initial_epoch", fast, lambda: False)


def must_start(epoch: int, begun: int, directory: Any) -> None:
    """Refuse a ``fit`` whose first epoch (``begun``) is not the one a resume needs."""
    if begun != epoch:
        raise KerasaveError(
            f"resuming from {directory} needs fit to start at epoch {epoch}, which this "
            "Keras does not let a callback set (kerasave's fast path 'fit_initial_epoch' "
            f"is off): pass initial_epoch={epoch} to fit", path=directory)


# -- the fit's other callbacks -------------------------------------------------------

def callback_list(callback: Any) -> Any:
    """The ``keras.callbacks.CallbackList`` whose ``on_train_begin`` is calling
    ``callback.on_train_begin`` (call it from there), or None."""
    caller = sys._getframe(1)

    def fast() -> Any:
        import keras

        frame = caller
        for _ in range(4):  # (our on_train_begin, the list's; a subclass may add a level)
            frame = frame.f_back  # type: ignore[assignment]
            if frame is None:
                return None
            owner = frame.f_locals.get("self")
            if isinstance(owner, keras.callbacks.CallbackList):
                return owner if any(c is callback for c in owner.callbacks) else None
        return None

    return attempt("fit_callbacks", fast, lambda: None)


def hook_callback_list(callbacks: Any, *, before_first_epoch: Callable[[], Any],
                       skipping: Callable[[], bool], after_batch: Callable[[int, Any], None],
                       after_epoch: Callable[[int, Any], None],
                       after_train: Callable[[Any], None]) -> None:
    """Wrap the list's dispatch (on this instance only, for this ``fit``).

    ``before_first_epoch()`` returns the callbacks that must not see the first
    ``on_epoch_begin`` (they saw it before the checkpoint a run resumes mid-epoch
    from). ``skipping()`` true: a batch being passed over on resume; no callback
    sees it.
    """
    epoch_begin, batch_begin = callbacks.on_epoch_begin, callbacks.on_train_batch_begin
    batch_end, epoch_end = callbacks.on_train_batch_end, callbacks.on_epoch_end
    train_end = callbacks.on_train_end
    first = [True]

    def on_epoch_begin(epoch: int, logs: Any = None) -> None:
        if first[0]:
            first[0] = False
            seen = before_first_epoch() or ()
            if seen:
                for callback in callbacks.callbacks:
                    if not any(callback is s for s in seen):
                        callback.on_epoch_begin(epoch, dict(logs or {}))
                return
        epoch_begin(epoch, logs)

    def on_train_batch_begin(batch: int, logs: Any = None) -> None:
        if not skipping():
            batch_begin(batch, logs)

    def on_train_batch_end(batch: int, logs: Any = None) -> None:
        if skipping():
            after_batch(batch, None)
            return
        batch_end(batch, logs)  # (synchronous: our callback defines on_train_batch_end)
        after_batch(batch, logs)

    def on_epoch_end(epoch: int, logs: Any = None) -> None:
        epoch_end(epoch, logs)
        after_epoch(epoch, logs)

    def on_train_end(logs: Any = None) -> None:
        if first[0]:  # (no epoch ran: a finished run's checkpoint was restored)
            first[0] = False
            before_first_epoch()
        train_end(logs)
        after_train(logs)

    callbacks.on_epoch_begin = on_epoch_begin
    callbacks.on_train_batch_begin = on_train_batch_begin
    callbacks.on_train_batch_end = on_train_batch_end
    callbacks.on_epoch_end = on_epoch_end
    callbacks.on_train_end = on_train_end


# -- Keras' built-in callbacks -------------------------------------------------------

# What each built-in callback carries from epoch to epoch (and batch to batch).
_STATE = {
    "EarlyStopping": ("wait", "stopped_epoch", "best", "best_weights", "best_epoch"),
    "ReduceLROnPlateau": ("wait", "cooldown_counter", "best"),
    "ModelCheckpoint": ("best", "_batches_seen_since_last_saving", "_last_batch_seen",
                        "_current_epoch"),
    "History": ("history", "epoch"),
    "TensorBoard": ("_global_train_batch", "_global_test_batch"),
    "SwapEMAWeights": ("_ema_weights_in_model",),
    "OrbaxCheckpoint": ("best", "_batches_seen_since_last_saving", "_last_batch_seen",
                        "_total_batches_seen"),  # (Keras 3.13 on)
    "CSVLogger": ("content",),  # (its file as it stood: _csv_content, _csv_restore)
}
# Those that carry nothing that changes what training does or records.
KNOWN_STATELESS = ("ProgbarLogger", "LearningRateScheduler", "TerminateOnNaN",
                   "RemoteMonitor")
_MISSING = object()


def _builtin_class(callback: Any) -> str | None:
    import keras

    for klass in type(callback).__mro__:
        if klass.__name__ in _STATE and getattr(keras.callbacks, klass.__name__, None) is klass:
            return klass.__name__
    return None


def builtin_state(callback: Any) -> dict[str, Any] | None:
    """The state of a Keras built-in callback (subclasses included), or None when it
    is not one this Keras' built-ins are known for (or the fast path is off)."""
    name = _builtin_class(callback)
    if name is None:
        return None

    def fast() -> dict[str, Any] | None:
        if name == "CSVLogger":
            return {"content": _csv_content(callback)}
        state = {}
        for attribute in _STATE[name]:
            value = getattr(callback, attribute, _MISSING)
            if value is not _MISSING:
                state[attribute] = value
        return state

    return attempt("callback_state", fast, lambda: None)


def set_builtin_state(callback: Any, state: dict[str, Any]) -> None:
    name = _builtin_class(callback)
    assert name is not None
    if name == "CSVLogger":
        _csv_restore(callback, state["content"])
        return
    for attribute in _STATE[name]:
        if attribute in state:
            setattr(callback, attribute, state[attribute])


def _csv_content(callback: Any) -> bytes:
    """What a ``CSVLogger``'s file holds now (every row it wrote is flushed)."""
    from keras.src.utils import file_utils

    if callback.csv_file is not None and not callback.csv_file.closed:
        callback.csv_file.flush()
    if not file_utils.exists(callback.filename):
        return b""
    with file_utils.File(callback.filename, "rb") as f:
        return bytes(f.read())


def _csv_restore(callback: Any, content: Any) -> None:
    """Put a ``CSVLogger``'s file back as it stood at the checkpoint (its
    ``on_train_begin`` has emptied it, or appended to rows written after the
    checkpoint): the resumed run's rows follow the checkpoint's, once each."""
    from keras.src.utils import file_utils

    if not isinstance(content, bytes):
        raise TypeError(f"a CSVLogger's state holds bytes, not {type(content).__name__}")
    if callback.csv_file is not None and not callback.csv_file.closed:
        callback.csv_file.close()
    with file_utils.File(callback.filename, "wb") as f:
        f.write(content)
    callback.csv_file = file_utils.File(callback.filename, "a")
    callback.writer, callback.keys = None, None
    callback.append_header = not content


# -- the dataset fit iterates ----------------------------------------------------------

def fit_epoch_iterator() -> Any:
    """The object through which the ``fit`` calling our train function iterates its
    data (Keras' ``EpochIterator``: its ``steps_per_epoch`` and ``num_batches`` say
    whether the next epoch iterates the dataset again), or None. Call it from the
    train function."""
    caller = sys._getframe(1)

    def fast() -> Any:
        frame = caller
        for _ in range(4):
            frame = frame.f_back  # type: ignore[assignment]
            if frame is None:
                return None
            found = frame.f_locals.get("epoch_iterator")
            if found is not None and hasattr(found, "steps_per_epoch") and \
                    hasattr(found, "num_batches"):
                return found
        return None

    return attempt("fit_dataset", fast, lambda: None)


def renews(epoch_iterator: Any, drawn: int) -> bool:
    """Whether ``fit`` makes a new iterator for its next epoch, having drawn ``drawn``
    batches from its current one (Keras' ``EpochIterator`` rule)."""
    if epoch_iterator.steps_per_epoch is None:
        return True
    count = epoch_iterator._num_batches  # (None: unknown until the data runs out)
    return count is not None and drawn >= count


def dataset_of(iterator: Any) -> Any:
    """The ``tf.data.Dataset`` a ``tf.data`` iterator was made from, or None."""
    def fast() -> Any:
        import tensorflow as tf

        dataset = getattr(iterator, "_dataset", None) \
            if isinstance(iterator, tf.data.Iterator) else None
        return dataset if isinstance(dataset, tf.data.Dataset) else None

    return attempt("fit_dataset", fast, lambda: None)


def live_state_is_whole(live: bytes, fresh: bytes) -> bool:
    """Whether a serialized iterator (``live``) still holds the state of every shuffle
    it held when it was made (``fresh``).

    A shuffle iterator that ran out and was let go by the op above it is made again
    when the state is restored, and that draws from the dataset's seed generator:
    the iterator then continues exactly, but the pipeline's later iterations would
    see other orders. Such a state is not restored; the iterator is replayed instead
    (fast path ``fit_live_state``, probed on both kinds; off: always replayed).
    """
    marker = b"epoch_num_random_samples"  # (the seed generator's count, in a shuffle's state)
    return attempt("fit_live_state", lambda: live.count(marker) >= fresh.count(marker),
                   lambda: False)
