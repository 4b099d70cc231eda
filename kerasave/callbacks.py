"""Keras callbacks: ``Checkpoint``, crash-safe training that resumes exactly."""

from __future__ import annotations

import os
import warnings
from typing import Any

from kerasave._quiet import import_tensorflow

import_tensorflow()  # (before keras: TensorFlow's load ignores TF_CPP_MIN_LOG_LEVEL in part)

import keras

from kerasave._internals.fit import start_at
from kerasave._manager import CheckpointManager

__all__ = ["Checkpoint"]


class Checkpoint(keras.callbacks.Callback):
    """Save verified checkpoints during ``fit`` and resume from them after a crash.

    Re-running the same ``model.fit(...)`` after an exception or a SIGKILL
    restores the newest intact checkpoint (weights, optimizer state, RNG seed
    states), starts at the epoch *and batch* where it was taken, and ends with the
    same weights as an uninterrupted run, provided the data order is
    deterministic (e.g. ``shuffle=False`` or a seeded ``tf.data`` pipeline).

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

    A run that finished leaves a final checkpoint marked complete; running the
    same ``fit`` again restores it and trains no further. Use a new directory
    to train again from scratch.

    Examples:
        >>> model.fit(x, y, epochs=5, shuffle=False,
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
        self._options = dict(max_to_keep=max_to_keep, keep_every_n_hours=keep_every_n_hours,
                             best_k=best_k, metric=monitor, mode=mode, verify=verify)
        self.manager: CheckpointManager | None = None
        self._epoch = 0
        self._global_step = 0
        self._skip = 0
        self._skipping = False
        self._original_train_function: Any = None

    # -- resuming --------------------------------------------------------------------

    def on_train_begin(self, logs: Any = None) -> None:
        self.manager = CheckpointManager(self.directory, model=self.model, **self._options)
        self._epoch, self._global_step, self._skip, self._skipping = 0, 0, 0, False
        path = self.manager.restore_or_initialize()
        if path is None:
            return
        progress = self.manager.metadata(path).get("progress") or {}
        epoch, batch = int(progress.get("epoch", 0)), int(progress.get("batch", -1))
        self._global_step = int(progress.get("global_step", 0))
        if progress.get("complete"):
            start_at(self.model, int(progress.get("epochs", epoch + 1)), self.directory)
            return
        if batch < 0:  # the epoch had finished
            start_at(self.model, epoch + 1, self.directory)
            return
        start_at(self.model, epoch, self.directory)
        if getattr(self.model, "steps_per_execution", 1) != 1:
            warnings.warn("kerasave.callbacks.Checkpoint resumes mid-epoch only with "
                          "steps_per_execution=1; restarting the interrupted epoch instead",
                          UserWarning, stacklevel=2)
            return
        # Batches 0..batch of this epoch are in the restored weights already: let fit
        # draw them from its iterator without training on them.
        self._skip = batch + 1
        self._skipping = True
        self._original_train_function = self.model.train_function
        self.model.train_function = self._skip_one

    def _skip_one(self, iterator: Any) -> dict[str, Any]:
        next(iterator)
        self._skip -= 1
        if self._skip == 0:
            self.model.train_function = self._original_train_function
        return {}

    # -- saving ----------------------------------------------------------------------

    def _save(self, batch: int, metrics: Any = None, **extra: Any) -> None:
        assert self.manager is not None
        numeric = {k: float(v) for k, v in (metrics or {}).items()
                   if isinstance(v, (int, float)) or hasattr(v, "__float__")}
        self.manager.save(metrics=numeric, blocking=self.blocking, metadata={"progress": {
            "epoch": self._epoch, "batch": batch, "global_step": self._global_step, **extra}})

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self._skipping:  # a batch that was only drawn, not trained on
            self._skipping = self._skip > 0
            return
        self._global_step += 1
        if isinstance(self.save_freq, int) and self._global_step % self.save_freq == 0:
            self._save(batch, logs)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.save_freq == "epoch":
            self._save(-1, logs)

    def on_train_end(self, logs: Any = None) -> None:
        if self.manager is None:
            return
        epochs = self.params.get("epochs") if self.params else None
        if epochs is not None and self._epoch + 1 >= epochs and not self.model.stop_training:
            self._save(-1, logs, complete=True, epochs=epochs)
        self.manager.close()
