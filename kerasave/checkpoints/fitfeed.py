"""Where ``fit``'s input pipeline stands, saved and restored (``kerasave.callbacks``).

``fit`` draws its batches from a ``tf.data`` iterator: a new one each epoch (the
dataset is iterated again), or one that lives across epochs (``repeat()`` with
``steps_per_epoch``). A ``shuffle`` draws the seeds of each new iteration from a
seed generator the dataset owns (``reshuffle_each_iteration``), so a re-run
script's fresh dataset would replay epoch 0's order. The ``Feed`` stands in for
``model.train_function``, sees every iterator ``fit`` trains from, and keeps:

- ``fresh``: the iterator's state when it was made (a few KB: its seeds and the
  generator's count). Restored into the resumed run's iterator, then the batches
  already trained on are drawn again (without training): the position, and every
  seed drawn inside the epoch (``repeat``, interleaved datasets), are exact.
- ``next``: at an epoch's end, when ``fit`` will make a new iterator, the state
  that new iterator starts from: a scratch iterator made from the dataset (fast
  path ``fit_dataset``) draws exactly the seeds ``fit``'s next one would; the
  next iterator, in this run or a resumed one, is set to it. Finished epochs'
  data is never iterated again.
- ``live``: for an iterator that lives across epochs, its state now (buffers
  included), so a resume does not replay every epoch since it began, when the
  state restores whole (fast path ``fit_live_state``).

A pipeline whose state TensorFlow cannot save (Python generators, stateful
random operations in its functions) starts afresh each time it is iterated, as
in the uninterrupted run; the batches of an interrupted epoch are drawn again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from kerasave._errors import CorruptArtifactError, KerasaveError
from kerasave._fastpaths.fit import dataset_of, fit_epoch_iterator, live_state_is_whole, renews
from kerasave._runtime.lazy import keras, tf
from kerasave.checkpoints.fitstate import (
    iterator_state,
    pipeline_concerns,
    restore_iterator,
    restore_metrics,
)

__all__ = ["Feed"]


class Feed:
    """Calls the model's train function, recording and restoring the data's state."""

    def __init__(self, model: Any, epoch: Callable[[], int], skipping: Callable[[], bool],
                 directory: Any, most_drawn: Callable[[], int | None] = lambda: None) -> None:
        original = model.train_function
        self.kerasave_original = getattr(original, "kerasave_original", original)
        self.model, self.epoch, self.skipping = model, epoch, skipping
        self.most_drawn = most_drawn
        self.directory = directory
        self.history = getattr(model, "history", None)  # (this fit's; see __call__)
        self.steps = int(getattr(model, "steps_per_execution", 1) or 1)
        self.current: Any = None  # the iterator training draws from
        self.fresh: bytes | None = None
        self.unsaved: str | None = None  # why the pipeline's state cannot be saved
        self.drawn = 0  # batches drawn from `current`
        self.since = 0  # the epoch `current` was first used in
        self.ended = False  # `current` ran out of data
        self.next: tuple[int, bytes] | None = None  # (epoch, state) for the next iterator
        self.plan: dict[str, Any] | None = None
        self.epochs: Any = None  # how fit iterates (fast path fit_dataset)
        model.train_function = self

    def release(self) -> None:
        if self.model.train_function is self:
            self.model.train_function = self.kerasave_original

    # -- training --------------------------------------------------------------------

    def __call__(self, iterator: Any) -> Any:
        if getattr(self.model, "history", None) is not self.history:
            return self.kerasave_original(iterator)  # (left behind by a crashed fit)
        if self.epochs is None:
            self.epochs = fit_epoch_iterator()
        if self.plan is not None:
            plan, self.plan = self.plan, None
            self._resume(iterator, plan)
        if iterator is not self.current:
            self._meet(iterator)
        self.next = None
        if self.skipping():
            return self.model.get_metrics_result()
        try:
            logs = self.kerasave_original(iterator)
        except (StopIteration, tf.errors.OutOfRangeError):
            self.ended = True
            raise
        self.drawn += self.steps
        return logs

    def _meet(self, iterator: Any) -> None:
        """A new iterator: ``fit`` iterates the dataset again."""
        self.current, self.drawn, self.ended, self.since = iterator, 0, False, self.epoch()
        if self.next is not None and self.next[0] == self.epoch():
            self.fresh = self.next[1]
            restore_iterator(iterator, self.fresh)
            return
        self.fresh = None
        if self.unsaved is None and isinstance(iterator, tf.data.Iterator):
            try:
                self.fresh = iterator_state(iterator)
            except (KerasaveError, tf.errors.OpError) as exc:
                self.unsaved = _first(exc)
        elif self.unsaved is None:
            self.unsaved = f"fit draws from a {type(iterator).__name__}"

    # -- saving ----------------------------------------------------------------------

    def state(self, *, epoch_end: bool) -> dict[str, Any] | None:
        """What a checkpoint keeps of the data (bytes are iterator states)."""
        if self.current is None:
            return None
        # Will fit iterate the dataset again for the next epoch? (None: cannot tell)
        ended: bool | None = True if self.ended else (
            renews(self.epochs, self.drawn) if self.epochs is not None else None)
        dataset = dataset_of(self.current) if self.fresh is not None else None
        saved: dict[str, Any] = {"since": self.since, "drawn": self.drawn, "ended": ended,
                                 "fresh": self.fresh, "unsaved": self.unsaved}
        if epoch_end and ended and dataset is not None:
            # fit makes a new iterator for the next epoch: make one the same way now,
            # which draws the seeds fit's would draw, and keep its state.
            scratch = iter(dataset)
            self.next = (self.epoch() + 1, iterator_state(scratch))
            del scratch
            saved["next"] = self.next[1]
        elif self.fresh is not None and (ended is False or self.since < self.epoch()):
            live = iterator_state(self.current)
            if live_state_is_whole(live, self.fresh):
                saved["live"] = live
        return saved

    # -- resuming --------------------------------------------------------------------

    def resume(self, data: dict[str, Any] | None, *, mid_epoch: bool,
               metrics: list[np.ndarray] | None = None, skipped: int = 0) -> None:
        """Restore ``data`` at the first call of the resumed ``fit``."""
        self.plan = {"data": data, "mid": mid_epoch, "metrics": metrics, "skipped": skipped}

    def _resume(self, iterator: Any, plan: dict[str, Any]) -> None:
        data, epoch = plan["data"], self.epoch()
        self.current, self.since, self.ended, self.drawn = iterator, epoch, False, 0
        if data is None:  # (a checkpoint of an older kerasave: the calls made, drawn again)
            self.fresh = self._fresh(iterator)
            self._draw(iterator, plan["skipped"] * self.steps if plan["mid"] else 0)
        else:
            try:
                self._position(iterator, data, plan["mid"], epoch)
            except (KeyError, TypeError, ValueError, tf.errors.OpError) as exc:
                raise CorruptArtifactError(
                    f"the checkpoint's state of fit's input pipeline does not restore "
                    f"({type(exc).__name__}: {_first(exc)})", path=self.directory) from exc
        self._say_concerns(iterator)
        if plan["mid"] and plan["metrics"] is not None:
            try:
                restored = restore_metrics(self.model, plan["metrics"],
                                           _zeros(iterator.element_spec))
            except Exception as exc:  # (a model whose metrics cannot be built this way)
                restored, why = False, f": {_first(exc)}"
            else:
                why = ""
            if not restored:
                _warn("the running metrics of the interrupted epoch could not be restored"
                      f"{why}; this epoch's logged metrics cover only the batches after "
                      "the resume")

    def _position(self, iterator: Any, data: dict[str, Any], mid: bool, epoch: int) -> None:
        self.unsaved, self.fresh = data.get("unsaved"), data.get("fresh")
        going_on = mid or data.get("ended") is False
        if self.fresh is None:  # not saved: the pipeline restarts as it did then
            self.fresh = None
            if going_on:
                self.since = int(data["since"])
                self._draw(iterator, int(data["drawn"]))
            return
        if going_on:  # the saved iterator goes on
            self.since = int(data["since"])
            if data.get("live") is not None:
                restore_iterator(iterator, data["live"])
                self.drawn = int(data["drawn"])
            else:
                restore_iterator(iterator, self.fresh)
                self._draw(iterator, int(data["drawn"]))
            return
        if data.get("next") is None:
            raise KerasaveError(
                f"cannot resume fit's input pipeline exactly at epoch {epoch}: the checkpoint "
                "does not hold the state its next iteration starts from (it was written "
                "while kerasave's fast path 'fit_dataset' was off, or from a strategy's "
                "iterator; checkpoints taken in the middle of an epoch, save_freq=N "
                "batches, resume without it): start anew in another directory",
                path=self.directory)
        self.fresh = data["next"]
        restore_iterator(iterator, self.fresh)

    def _fresh(self, iterator: Any) -> bytes | None:
        try:
            return iterator_state(iterator)
        except (KerasaveError, tf.errors.OpError) as exc:
            self.unsaved = _first(exc)
            return None

    def _draw(self, iterator: Any, count: int) -> None:
        """Draw ``count`` batches again, training on none of them."""
        most = self.most_drawn()
        if count < 0 or (most is not None and count > most):
            raise CorruptArtifactError(
                f"the checkpoint says fit's input had given {count} batches, more than the "
                f"{most} this fit gives by the end of epoch {self.epoch() + 1}",
                path=self.directory)
        for _ in range(count):
            try:
                iterator.get_next()
            except (tf.errors.OutOfRangeError, StopIteration) as exc:
                raise KerasaveError(
                    f"fit's input ran out after {self.drawn} of the {count} batches the "
                    "checkpoint had drawn: is this the same data?",
                    path=self.directory) from exc
            self.drawn += 1

    def _say_concerns(self, iterator: Any) -> None:
        dataset = dataset_of(iterator)
        concerns, why = None, "the fast path 'fit_dataset' is off"
        if dataset is not None:
            try:
                concerns = pipeline_concerns(dataset)
            except Exception as exc:  # (a graph TensorFlow cannot serialize, or over 2 GB)
                why = _first(exc)
        elif not isinstance(iterator, tf.data.Iterator):
            why = "it is not a tf.data iterator"
        if concerns is not None:
            if concerns:
                _warn("fit's input pipeline cannot resume exactly: it holds "
                      + "; ".join(concerns) + ". The resumed run may train on other "
                      "batches, or in another order, than an uninterrupted run")
        elif self.unsaved is not None:
            _warn(f"kerasave could not save the state of fit's input pipeline "
                  f"({self.unsaved}) nor inspect it ({why}): the resumed run iterates it "
                  "afresh, which is exact only if it yields the same batches every time")
        else:
            _warn(f"kerasave could not inspect fit's input pipeline ({why}): the resumed "
                  "run is exact only if the pipeline is seeded and deterministic (an "
                  "unseeded shuffle, for one, would give other orders)" + (
                      "; validation data that reshuffles every epoch is evaluated in other "
                      "orders than in an uninterrupted run" if dataset is None else ""))


def _zeros(spec: Any) -> Any:
    return tf.nest.map_structure(
        lambda s: keras.ops.zeros([1 if d is None else d for d in s.shape], s.dtype), spec)


def _warn(text: str) -> None:
    import warnings

    from kerasave.callbacks import ResumeWarning

    warnings.warn(text, ResumeWarning, stacklevel=4)


def _first(exc: BaseException) -> str:
    text = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:.*", "", str(exc)).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


class ValidationFeed:
    """Stands in for ``model.test_function`` during ``fit``: validation data that
    reshuffles every epoch starts each evaluation where the uninterrupted run's did.

    As for training: when ``fit`` will iterate the validation data again, the state
    its next iterator starts from is made from the dataset at a save (once per
    evaluation), and set into that iterator, in this run or a resumed one; an
    iterator that lives across evaluations (``validation_steps`` over repeated
    data) is saved as it stands.
    """

    def __init__(self, model: Any) -> None:
        if getattr(model, "test_function", None) is None:
            model.make_test_function()
        original = model.test_function
        self.kerasave_original = getattr(original, "kerasave_original", original)
        self.model, self.history = model, getattr(model, "history", None)
        self.steps = int(getattr(model, "steps_per_execution", 1) or 1)
        self.current: Any = None
        self.fresh: bytes | None = None
        self.drawn, self.ended = 0, False
        self.epochs: Any = None
        self.next: bytes | None = None  # for the next iterator
        self.live: bytes | None = None  # for the next call, on resume
        model.test_function = self

    def release(self) -> None:
        if self.model.test_function is self:
            self.model.test_function = self.kerasave_original

    def __call__(self, iterator: Any) -> Any:
        if getattr(self.model, "history", None) is not self.history:
            return self.kerasave_original(iterator)
        if self.epochs is None:
            self.epochs = fit_epoch_iterator()
        if self.live is not None:
            live, self.live, self.next = self.live, None, None
            restore_iterator(iterator, live)
            self.current = iterator
        elif iterator is not self.current:
            self.current, self.drawn, self.ended = iterator, 0, False
            state, self.next = self.next, None
            if state is not None:
                restore_iterator(iterator, state)
                self.fresh = state
            else:
                try:
                    self.fresh = iterator_state(iterator)
                except (KerasaveError, tf.errors.OpError):
                    self.fresh = None
        try:
            logs = self.kerasave_original(iterator)
        except (StopIteration, tf.errors.OutOfRangeError):
            self.ended = True
            raise
        self.drawn += self.steps
        return logs

    def state(self) -> dict[str, Any] | None:
        if self.current is None or self.fresh is None:
            return None
        renew = self.ended or (renews(self.epochs, self.drawn) if self.epochs is not None
                               else None)
        dataset = dataset_of(self.current)
        if renew and dataset is not None:
            if self.next is None:  # (made once per evaluation: each draws seeds)
                self.next = iterator_state(iter(dataset))
            return {"next": self.next}
        if renew is False:
            live = iterator_state(self.current)
            if live_state_is_whole(live, self.fresh):
                return {"live": live}
        return None

    def resume(self, data: dict[str, Any] | None) -> None:
        self.next = (data or {}).get("next")
        self.live = (data or {}).get("live")
