"""Keras callbacks: ``Checkpoint``, crash-safe training that resumes exactly."""

from __future__ import annotations

import os
import warnings
from typing import Any

from kerasave._runtime.quiet import import_tensorflow

import_tensorflow()  # (before keras: TensorFlow's load ignores TF_CPP_MIN_LOG_LEVEL in part)

import keras

from kerasave._api import inspect
from kerasave._errors import CorruptArtifactError, KerasaveError
from kerasave._fastpaths.fit import (
    KNOWN_STATELESS,
    builtin_state,
    callback_list,
    hook_callback_list,
    must_start,
    set_builtin_state,
    start_at,
)
from kerasave.checkpoints.fitfeed import Feed, ValidationFeed
from kerasave.checkpoints.fitstate import Holders, decode, encode, metric_values
from kerasave.checkpoints.manager import CheckpointManager

__all__ = ["Checkpoint", "ResumeWarning"]


class ResumeWarning(UserWarning):
    """A resumed ``fit`` cannot be exactly the uninterrupted one; the message says why."""


class Checkpoint(keras.callbacks.Callback):
    """Save verified checkpoints during ``fit`` and resume from them after a crash.

    Re-running the same ``model.fit(...)`` after an exception or a SIGKILL
    restores the newest intact checkpoint and ends with the same weights, the same
    ``History`` and the same callbacks' decisions as an uninterrupted run. A
    checkpoint holds the model, its optimizer and random-generator states, the
    running metrics, where the training and validation data stand (a ``tf.data``
    pipeline that reshuffles each epoch included: the next epoch's order is kept),
    and the state of the other callbacks of the ``fit``: Keras' ``EarlyStopping``,
    ``ReduceLROnPlateau``, ``ModelCheckpoint``, ``OrbaxCheckpoint``, ``History``,
    ``TensorBoard``'s step counters, ``SwapEMAWeights``, ``CSVLogger``'s file, and
    any callback of yours that defines ``get_state() -> dict`` and
    ``set_state(state)``. Any other callback, and a pipeline that cannot resume
    exactly (an unseeded shuffle, non-deterministic parallelism, Python generators),
    is named in a ``ResumeWarning`` at resume.

    With ``KERASAVE_FAST_PATHS=0`` a resume that must skip finished epochs needs
    ``fit(initial_epoch=N)`` (a ``fit`` that begins elsewhere is refused, asking
    for it), and the other callbacks' states are not restored (a warning says so).

    Args:
        directory: Where the checkpoints go (a ``CheckpointManager`` directory).
        save_freq: ``"epoch"``, or an int: save every that many batches.
        max_to_keep: How many of the newest checkpoints to keep.
        keep_every_n_hours: Also keep one checkpoint per this many hours.
        monitor: A metric in the epoch logs (e.g. ``"val_loss"``) to rank by;
            with ``best_k``, the best checkpoints are kept as well.
        best_k: How many best checkpoints by ``monitor`` to keep.
        mode: ``"min"`` or ``"max"`` for ``monitor``.
        verify: Verify every checkpoint after writing it.
        blocking: When False, each save copies the state to host memory and
            writes, verifies and commits it in a background thread while
            training goes on (``CheckpointManager.save(blocking=False)``); the
            last one is joined when ``fit`` ends.

    A run that finished (all its epochs, or stopped by a callback such as
    ``EarlyStopping``) leaves a final checkpoint marked complete; running the same
    ``fit`` again restores it and trains no further. Use a new directory to train
    again from scratch.

    Examples:
        >>> model.fit(dataset, epochs=5,
        ...           callbacks=[kerasave.callbacks.Checkpoint("ckpts", save_freq=100)])
    """

    def __init__(self, directory: str | os.PathLike[str], *, save_freq: str | int = "epoch",
                 max_to_keep: int | None = 3, keep_every_n_hours: float | None = None,
                 monitor: str | None = None, best_k: int | None = None, mode: str = "min",
                 verify: bool = True, blocking: bool = True) -> None:
        super().__init__()
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ValueError(
                f"save_freq must be 'epoch' or a positive int. Received: {save_freq!r}")
        self.directory = directory
        self.save_freq = save_freq
        self.blocking = blocking
        self._options: dict[str, Any] = dict(
            max_to_keep=max_to_keep, keep_every_n_hours=keep_every_n_hours,
            best_k=best_k, metric=monitor, mode=mode, verify=verify)
        self.manager: CheckpointManager | None = None
        self._holders = Holders()
        self._list: Any = None  # fit's CallbackList, when reachable (fast path)
        self._feed: Feed | None = None
        self._validation: ValidationFeed | None = None
        self._epoch = 0
        self._batches = 0  # batches trained since the run began
        self._calls = 0  # train_function calls in this epoch (skipped ones included)
        self._to_skip = 0  # calls still to pass over on resume
        self._epoch_done = False
        self._pending: dict[str, Any] | None = None  # callbacks' states to restore
        self._start: int | None = None  # the epoch fit must begin with (public twin)

    # -- resuming --------------------------------------------------------------------

    def on_train_begin(self, logs: Any = None) -> None:
        self.manager = CheckpointManager(self.directory, model=self.model, **self._options)
        self._epoch = self._batches = self._calls = self._to_skip = 0
        self._epoch_done, self._pending, self._start = False, None, None
        self.manager.trackables.pop("fit", None)
        self._list = callback_list(self)
        if self._list is not None:
            hook_callback_list(self._list, before_first_epoch=self._restore_callbacks,
                               skipping=lambda: self._to_skip > 0,
                               after_batch=self._after_batch, after_epoch=self._after_epoch,
                               after_train=self._after_train)
        self._feed = Feed(self.model, lambda: self._epoch, lambda: self._to_skip > 0,
                          self.directory, self._most_drawn)
        self._validation = ValidationFeed(self.model)
        path = self.manager.restore_or_initialize()
        if path is not None:
            self._resume(path)
        self.manager.trackables["fit"] = self._holders.root

    def _resume(self, path: str) -> None:
        assert self.manager is not None and self._feed is not None
        metadata = self.manager.metadata(path)
        progress = metadata.get("progress") or {}
        state = self._read(path, metadata.get("fit"))
        epoch, batch = int(progress.get("epoch", 0)), int(progress.get("batch", -1))
        self._batches = int(progress.get("global_step", 0))
        self._pending = state.get("callbacks") or {}
        assert self._validation is not None
        self._validation.resume(state.get("validation"))
        if self._list is None:
            warnings.warn(
                "kerasave.callbacks.Checkpoint cannot reach fit's other callbacks here (the "
                "fast path 'fit_callbacks' is off): their state is not restored",
                ResumeWarning, stacklevel=3)
        if progress.get("complete"):
            self._start_at(int(progress.get("epochs", epoch + 1)))
            return
        if batch < 0:  # the epoch had finished
            self._start_at(epoch + 1)
            self._feed.resume(state.get("data"), mid_epoch=False)
            return
        self._start_at(epoch)
        # The calls of this epoch before the checkpoint are in the restored state
        # already: fit makes them, and they neither train nor reach other callbacks.
        self._to_skip = int(progress.get("calls", batch + 1))
        steps = (self.params or {}).get("steps")
        execution = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if self._to_skip < 1 or (steps and self._to_skip > -(-int(steps) // execution)):
            raise CorruptArtifactError(
                f"the checkpoint was taken after {self._to_skip} steps of an epoch, and this "
                f"fit's epochs have {steps} batches ({execution} a step): is this the same "
                "fit?", path=path)
        self._feed.resume(state.get("data"), mid_epoch=True, metrics=state.get("metrics"),
                          skipped=self._to_skip)

    def _start_at(self, epoch: int) -> None:
        if not start_at(self.model, epoch):
            self._start = epoch  # (checked when fit begins its first epoch)

    def _read(self, path: str, fit: Any) -> dict[str, Any]:
        """The callbacks', metrics' and data's state a checkpoint holds."""
        assert self.manager is not None
        if not isinstance(fit, dict) or "state" not in fit:
            return {}  # (written before kerasave kept them)
        # The arrays are made as the checkpoint's own index says (checked against its
        # data), never as large as its JSON would have them.
        saved = {v.name: v for v in inspect(path).variables}
        specs = []
        for i, spec in enumerate(fit.get("arrays") or []):
            found = saved.get(f"fit/arrays/{i}")
            if found is None or list(found.shape) != list(spec[0]):
                raise CorruptArtifactError(
                    f"the checkpoint's metadata describes array {i} of the fit state as "
                    f"{spec}, its tensors as {found}", path=path)
            specs.append([list(found.shape), found.dtype])
        self._holders.expect(specs)
        self.manager.trackables["fit"] = self._holders.root
        try:
            self.manager.restore(path, only=("fit",))
        finally:
            self.manager.trackables.pop("fit", None)
        try:
            state = decode(fit["state"], self._holders.values())
            if not isinstance(state, dict):
                raise TypeError(type(state).__name__)
        except (IndexError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptArtifactError(f"the fit state in the checkpoint's metadata does not "
                                       f"read ({type(exc).__name__}: {exc})", path=path) from exc
        return state

    def _most_drawn(self) -> int | None:
        """The most batches an iterator can have given since this run began, by the
        time the epoch being resumed ends (a checkpoint that says more is damaged)."""
        steps = (self.params or {}).get("steps")
        return None if not steps else (self._epoch + 1) * int(steps)

    def _others(self) -> list[tuple[str, Any]]:
        """The fit's other callbacks, each under a name that survives a re-run: its
        class name, and ``#2``, ``#3``... for further ones of the same class."""
        if self._list is None:
            return []
        seen: dict[str, int] = {}
        named = []
        for callback in self._list.callbacks:
            if callback is self or isinstance(callback, Checkpoint):
                continue
            name = type(callback).__name__
            seen[name] = seen.get(name, 0) + 1
            named.append((name if seen[name] == 1 else f"{name}#{seen[name]}", callback))
        return named

    def _restore_callbacks(self) -> list[Any]:
        """Give the other callbacks their saved states; returns those that already saw
        the epoch a run resumes in the middle of (not to be told it begins again)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return []
        lost, seen = [], []
        for name, callback in self._others():
            kind = _kind(callback)
            if kind == "unknown" or (kind != "stateless" and name not in pending):
                lost.append(name)
                continue
            if kind == "protocol":
                callback.set_state(pending[name])
            elif kind == "builtin":
                try:
                    set_builtin_state(callback, pending[name])
                except (KeyError, TypeError, AttributeError) as exc:
                    raise CorruptArtifactError(
                        f"the checkpoint's state of {name} does not restore "
                        f"({type(exc).__name__}: {exc})", path=self.directory) from exc
            if self._to_skip and type(callback).__name__ != "ProgbarLogger":
                seen.append(callback)
        if lost:
            warnings.warn(
                f"kerasave.callbacks.Checkpoint cannot restore the state of {', '.join(lost)} "
                "(a callback takes part by defining get_state() and set_state(state)); if it "
                "keeps state across epochs or batches, the resumed run may differ from an "
                "uninterrupted one", ResumeWarning, stacklevel=2)
        return seen

    def _callback_states(self, arrays: list[Any]) -> dict[str, Any]:
        states = {}
        for name, callback in self._others():
            kind = _kind(callback)
            if kind == "protocol":
                state = callback.get_state()
                if not isinstance(state, dict):
                    raise KerasaveError(f"{name}.get_state() must return a dict; received "
                                        f"{type(state).__name__}", path=self.directory)
            elif kind == "builtin":
                state = builtin_state(callback)
            else:
                continue
            states[name] = encode(state, arrays, f"{name}.get_state()")
        return states

    # -- saving ----------------------------------------------------------------------

    def _save(self, batch: int, logs: Any = None, **extra: Any) -> None:
        assert self.manager is not None and self._feed is not None
        numeric = {k: float(v) for k, v in (logs or {}).items()
                   if isinstance(v, (int, float)) or hasattr(v, "__float__")}
        arrays: list[Any] = []
        state = {"callbacks": self._callback_states(arrays)}
        if not extra.get("complete"):
            state["data"] = encode(self._feed.state(epoch_end=batch < 0), arrays, "data")
            if self._validation is not None:
                state["validation"] = encode(self._validation.state(), arrays, "validation")
            if batch >= 0:
                state["metrics"] = encode(metric_values(self.model), arrays, "metrics")
        specs = self._holders.put(arrays, before_change=self.manager.wait)
        self.manager.save(metrics=numeric, blocking=self.blocking, metadata={
            "progress": {"epoch": self._epoch, "batch": batch, "calls": self._calls,
                         "global_step": self._batches, **extra},
            "fit": {"state": state, "arrays": specs}})

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if self._start is not None:
            start, self._start = self._start, None
            must_start(start, epoch, self.directory)
        self._epoch, self._calls, self._epoch_done = epoch, 0, False
        if self._list is None:
            self._restore_callbacks()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self._list is None:
            self._after_batch(batch, logs)

    def _after_batch(self, batch: int, logs: Any) -> None:
        self._calls += 1
        if self._to_skip:  # a call that only passed over a batch trained before
            self._to_skip -= 1
            return
        before = self._batches
        self._batches += int(getattr(self.model, "steps_per_execution", 1) or 1)
        if isinstance(self.save_freq, int) and \
                self._batches // self.save_freq > before // self.save_freq:
            self._save(batch, logs)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self._list is None:
            self._after_epoch(epoch, logs)

    def _after_epoch(self, epoch: int, logs: Any) -> None:
        self._epoch_done = True
        if self.save_freq == "epoch":
            self._save(-1, logs)

    def on_train_end(self, logs: Any = None) -> None:
        if self._list is None:
            self._after_train(logs)

    def _after_train(self, logs: Any) -> None:
        if self.manager is None:
            return
        try:
            epochs = self.params.get("epochs") if self.params else None
            finished = self._epoch_done and epochs is not None and self._epoch + 1 >= epochs
            if finished or self.model.stop_training:
                self._save(-1, logs, complete=True, epochs=epochs)
        finally:
            for feed in (self._feed, self._validation):
                if feed is not None:
                    feed.release()
            self.manager.close()


def _kind(callback: Any) -> str:
    """How a callback's state is kept: ``protocol`` (its own ``get_state``/
    ``set_state``), ``builtin`` (a Keras callback kerasave knows), ``stateless``,
    or ``unknown``."""
    if callable(getattr(callback, "get_state", None)) and \
            callable(getattr(callback, "set_state", None)):
        return "protocol"
    if builtin_state(callback) is not None:
        return "builtin"
    klass = type(callback)
    if klass.__module__.startswith("keras.") and klass.__name__ in KNOWN_STATELESS:
        return "stateless"
    return "unknown"

