"""Training checkpoints that resume exactly: ``CheckpointManager``.

A manager numbers its checkpoints, keeps some (``retention``), holds its
directory (``lease``) and saves in the background; what a checkpoint is, the
checkpoint handler knows (``formats/checkpoint.py``): every save is its
``write`` and ``check`` of the manager's ``Roots`` (model, optimizer, other
trackables) inside the store's transaction, every restore its ``restore``.

Each checkpoint is ``DIR/ckpt-N.index`` + ``ckpt-N.data-*`` (plain TensorFlow
files) and ``ckpt-N.kerasave.json`` (build shapes, time, step, metrics,
progress), on disk or at a URL alike (``kerasave.store``: one store per
directory, chosen once). The directory listing *is* the state; TensorFlow's
``checkpoint`` file is written from it after each commit, for TensorFlow's
readers (``tf.train.latest_checkpoint``; ``adopted``).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kerasave import store as stores
from kerasave._errors import (
    ArtifactNotFoundError,
    CorruptArtifactError,
    KerasaveError,
    RoundTripError,
)
from kerasave._fastpaths import attempt
from kerasave._fastpaths.trackables import snapshot
from kerasave._report import Report
from kerasave._runtime.lazy import keras, tf
from kerasave._runtime.public import public
from kerasave.checkpoints import adopted, retention
from kerasave.checkpoints.distributed import cluster_of
from kerasave.checkpoints.lease import Lease, give_back, next_number, take
from kerasave.compare.verify import optimizer_of
from kerasave.formats.checkpoint import CheckpointHandler, Roots

__all__ = ["CheckpointManager"]

_HANDLER = CheckpointHandler()


class CheckpointManager:
    """Numbered, verified training checkpoints with retention and exact resume.

    Args:
        directory: Where the checkpoints live (created when missing).
        model: The Keras model. It may be fresh and unbuilt at restore time:
            kerasave builds it (and its optimizer) from the saved shapes first.
        optimizer: The optimizer to save; defaults to ``model.optimizer``.
        max_to_keep: How many of the newest checkpoints to keep (None: all).
        keep_every_n_hours: Also keep one checkpoint per this many hours.
        verify: Read every checkpoint back after writing it and compare bit for bit.
        best_k: Also keep the ``best_k`` best checkpoints by ``metric``.
        metric: The name, in ``save(metrics=...)``, that ``best_k`` ranks by.
        mode: ``"min"`` or ``"max"``: which values of ``metric`` are best.
        checkpoint_name: The checkpoints' name before ``-N`` (``ckpt``, as
            TensorFlow's ``CheckpointManager``); checkpoints of other names in the
            directory are neither listed nor deleted.
        step_counter: With ``checkpoint_interval``: the training step, a
            ``tf.Variable`` (or anything with ``numpy()``) holding an integer, read
            at each ``save``. It is not saved (pass it as a trackable too for that)
            and does not number the checkpoints (``save(step=...)`` does).
        checkpoint_interval: ``save()`` writes only when ``step_counter`` moved at
            least this many steps since the last checkpoint this manager wrote or
            restored, and returns None otherwise (``tf.train.CheckpointManager``'s
            rule; ``save(check_interval=False)`` writes unless the step is the same).
        init_fn: Called by ``restore_or_initialize`` when the directory holds no
            checkpoint (e.g. to load pretrained weights).
        last_checkpoint_step: The step of the last checkpoint, for
            ``checkpoint_interval`` before this manager wrote or restored one.
        **trackables: Anything else ``tf.train.Checkpoint`` tracks, saved and
            restored too: a step counter ``tf.Variable``, a ``tf.data`` iterator...

    Examples:
        >>> manager = CheckpointManager(tmp / "ckpts", model=net, optimizer=opt,
        ...                             step=tf.Variable(1), iterator=iterator)
        >>> manager.restore_or_initialize()   # None the first time
        >>> path = manager.save()             # .../ckpt-1, verified
    """

    def __init__(self, directory: str | os.PathLike[str], *, model: keras.Model,
                 optimizer: Any = None, max_to_keep: int | None = 3,
                 keep_every_n_hours: float | None = None, verify: bool = True,
                 best_k: int | None = None, metric: str | None = None, mode: str = "min",
                 checkpoint_name: str = "ckpt", step_counter: Any = None,
                 checkpoint_interval: int | None = None,
                 init_fn: Callable[[], Any] | None = None,
                 last_checkpoint_step: int | None = None, **trackables: Any) -> None:
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None. Received: {max_to_keep}")
        if best_k is not None and (best_k < 1 or not metric):
            raise ValueError("best_k needs a metric name and must be >= 1. "
                             f"Received: best_k={best_k}, metric={metric!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'. Received: {mode!r}")
        reserved = Roots.RESERVED & set(trackables)
        if reserved:
            raise ValueError(f"these names are kerasave's own: {sorted(reserved)}")
        for name, value in trackables.items():
            _require_trackable(name, value)
        self.checkpoint_name = _checked_name(checkpoint_name)
        if checkpoint_interval is not None:
            if (isinstance(checkpoint_interval, bool)
                    or not isinstance(checkpoint_interval, (int, np.integer))):
                raise TypeError("checkpoint_interval must be an integer number of steps. "
                                f"Received: checkpoint_interval={checkpoint_interval!r}")
            if checkpoint_interval < 0:
                raise ValueError("checkpoint_interval must be >= 0. "
                                 f"Received: checkpoint_interval={checkpoint_interval}")
            if step_counter is None:
                raise ValueError("`step_counter` should be passed if `checkpoint_interval` "
                                 "is not None (it is the step the interval counts)")
        if step_counter is not None:
            _read_step(step_counter)  # (unreadable: refused now, not at the first save)
        if init_fn is not None and not callable(init_fn):
            raise TypeError(f"init_fn must be callable. Received: init_fn={init_fn!r}")
        self.step_counter = step_counter
        self.checkpoint_interval = (int(checkpoint_interval)
                                    if checkpoint_interval is not None else None)
        self.init_fn = init_fn
        self._last_checkpoint_step: int | float | None = last_checkpoint_step
        self._store = stores.at(directory)  # a local folder or a URL's (read and written
        # through private local copies)
        self.directory: Path | str = self._store.local_dir or self._store.shown
        self.model = model
        self._optimizer = optimizer
        self.max_to_keep = max_to_keep
        self.keep_every_n_hours = keep_every_n_hours
        self.verify = verify
        self.best_k, self.metric, self.mode = best_k, metric, mode
        self.trackables = dict(trackables)
        self._number = next_number()
        self._lease: Lease | None = None
        self._now = time.time  # tests move the clock
        self._pending: threading.Thread | None = None
        self._error: BaseException | None = None
        self._copies: Any = None
        self._saved_name: str | None = None  # the model's name in the files (_written)
        self._cluster: Any = False  # the model's multi-worker cluster (None: one process)

    # -- listing ---------------------------------------------------------------------

    @property
    def optimizer(self) -> Any:
        return self._optimizer if self._optimizer is not None else optimizer_of(self.model)

    def _entries(self) -> list[retention.Entry]:
        return retention.series(self._store, self.checkpoint_name, _HANDLER)

    @property
    def checkpoints(self) -> list[str]:
        """Every checkpoint kept, oldest first."""
        return [str(e.path) for e in self._entries()]

    @property
    def latest(self) -> str | None:
        """The newest checkpoint, or None."""
        entries = self._entries()
        return str(entries[-1].path) if entries else None

    def metadata(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """What ``save(metadata=...)`` recorded with a checkpoint (the latest by default)."""
        target = stores.at(path).shown if path is not None else None
        for entry in reversed(self._entries()):
            if target is None or entry.path == target:
                return dict(entry.metadata)
        raise ArtifactNotFoundError("no such checkpoint in the manager's directory",
                                    path=target or self.directory)

    # -- the directory's lease -------------------------------------------------------

    def _acquire(self) -> Lease:
        """The directory's lease, taken when this manager first writes
        (``kerasave.checkpoints.lease.take``).

        Raises:
            KerasaveError: a newer manager of this process took the directory over,
                or a manager of another process holds it.
        """
        self._lease = take(self._lease, self._number, self.directory)
        return self._lease

    def close(self) -> None:
        """Finish a background save, then release the directory's writer lock."""
        try:
            self.wait()
        finally:
            self._release()

    def _release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            give_back(lease, self._number)

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._pending is not None:
                self._pending.join()
            self._release()
        except Exception:
            pass

    # -- writing ---------------------------------------------------------------------

    def _roots(self) -> Roots:
        """What a checkpoint holds: the model, its optimizer, the trackables."""
        return Roots(self.model, self._optimizer, self.trackables)

    def _written(self) -> Roots:
        """What a save writes: the roots, the model under the name the directory's
        checkpoints give it (``model``; the checkpoint guide's ``net`` in a directory
        ``tf.train.CheckpointManager`` wrote, so that TensorFlow code reading the
        directory finds it in kerasave's checkpoints too)."""
        if self._saved_name is None and self._store.local_dir is None:
            self._saved_name = "model"  # (TensorFlow never adopted an object-store series)
        if self._saved_name is None:
            entries = self._entries()
            newest = self._store.child(entries[-1].name).target if entries else None
            name = _HANDLER.model_name(newest, self._roots())
            self._saved_name = "model" if name in self.trackables else name
        return replace(self._roots(), model_name=self._saved_name)

    def save(self, *, step: int | None = None, metrics: Mapping[str, float] | None = None,
             metadata: Mapping[str, Any] | None = None, blocking: bool = True,
             check_interval: bool = True) -> str | None:
        """Write, verify and keep a numbered checkpoint; returns its path, or None
        when ``checkpoint_interval`` says it is not time yet.

        Args:
            step: The checkpoint's number (``ckpt-<step>``); by default one more
                than the newest. A ``tf.Variable`` works too.
            metrics: Values to rank checkpoints by (``best_k``/``metric``).
            metadata: JSON data stored with the checkpoint (``metadata()`` reads it).
            blocking: When False, copy the state to host memory and return; the
                checkpoint is written, verified and committed in a background
                thread. The next ``save``, ``restore``, ``wait`` or ``close`` joins
                it, and raises what it raised. (Under ``MultiWorkerMirroredStrategy``
                saves block: every worker takes part in them.)
            check_interval: With ``checkpoint_interval``: False writes whenever
                ``step_counter`` differs from the last checkpoint's step.
        """
        current = None
        if self.checkpoint_interval is not None:
            current = _read_step(self.step_counter)
            last = self._last_checkpoint_step
            if last is not None and (current == last or (
                    check_interval and current < last + self.checkpoint_interval)):
                return None
        path = self._save(step, metrics, metadata, blocking)
        if current is not None:  # (after the save: one that failed is not skipped again)
            self._last_checkpoint_step = current
        return path

    def _save(self, step: Any, metrics: Mapping[str, float] | None,
              metadata: Mapping[str, Any] | None, blocking: bool) -> str:
        if self._cluster is False:  # (found once: the model's strategy stays)
            self._cluster = cluster_of(self.model, self.directory)
        cluster = self._cluster
        if cluster is not None:  # the chief writes; every worker takes part
            try:
                roots, path, manifest = self._planned(cluster, step, metrics, metadata)
            except BaseException:  # (the others wait for this worker's part)
                cluster.abort(replace(self._roots(), model_name=self._saved_name or "model")
                              .written(), self.directory)
                raise
            cluster.save(lambda checkpoint, values: self._write(
                roots.as_of(checkpoint, values), path, manifest), roots.written(), path)
            return path
        roots, path, manifest = self._planned(None, step, metrics, metadata)
        copied = None if blocking else self._snapshot(roots)
        if copied is None:
            self._write(roots, path, manifest)
            return path
        lease = self._lease
        assert lease is not None
        self._pending = lease.pending = threading.Thread(
            target=self._background, args=(copied, path, manifest),
            name=f"kerasave-save-{_name(path)}")
        self._pending.start()
        return path

    def _planned(self, cluster: Any, step: Any, metrics: Mapping[str, float] | None,
                 metadata: Mapping[str, Any] | None) -> tuple[Roots, str, dict[str, Any]]:
        """What a save writes: the roots, the checkpoint's path and its manifest.
        Takes this writer's lease (none on a worker that is not the chief)."""
        self.wait()
        lease = self._acquire() if cluster is None or cluster.chief else None
        before = lease.pending if lease is not None else None  # another manager's
        if before is not None:  # background write, superseded by this one
            before.join()
        entries = self._entries()
        if step is not None:  # (a variable under a strategy has no __int__ of its own)
            number = int(step.numpy() if hasattr(step, "numpy") else step)
        else:
            number = entries[-1].number + 1 if entries else 1
        path = self._store.child(f"{self.checkpoint_name}-{number}").shown
        roots = self._written()
        manifest = _HANDLER.describe(roots)  # (now: a background save writes copies)
        manifest.update(step=number, time=self._now(),
                        metrics={k: float(v) for k, v in (metrics or {}).items()},
                        metadata=dict(metadata or {}), trackables=sorted(self.trackables))
        if self.keep_every_n_hours:
            manifest["keep_every_n_hours"] = float(self.keep_every_n_hours)
        if roots.model_name != "model":
            manifest["model_name"] = roots.model_name
        return roots, path, manifest

    def wait(self) -> None:
        """Wait for a background save to finish; raise what it raised, if anything."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.join()
        error, self._error = self._error, None
        if error is not None:
            try:
                raise error
            finally:  # (no cycle through this frame: what the save held goes with it)
                del error

    def _snapshot(self, roots: Roots) -> Roots | None:
        """The roots as of now: a checkpoint object that writes copies of today's
        values, and the copies; None when this process cannot copy them (the save
        then blocks).

        The copies live in host memory and are reused from save to save; this is
        the only part of a background save that the training loop waits for.
        """
        made = attempt("background_copies",
                       lambda: snapshot(roots.written(), self._copies, self.directory),
                       lambda: None, passthrough=(KerasaveError,))  # (None: write blocking)
        if made is None:
            return None
        checkpoint, self._copies = made
        return roots.as_of(checkpoint, self._copies)

    def _background(self, roots: Roots, path: str, manifest: dict[str, Any]) -> None:
        try:
            self._write(roots, path, manifest)
        except BaseException as exc:  # surfaces on the next call
            self._error = exc

    def _write(self, roots: Roots, path: str, manifest: dict[str, Any]) -> None:
        """The handler writes and checks the checkpoint in the store's transaction;
        its commit keeps the retention (on disk under the directory's lock, after the
        rename; at a URL after the upload's commit: ``kerasave.store.objectstore``)."""
        start = time.perf_counter()
        lease = self._lease
        assert lease is not None
        with lease.writing, self._store.child(_name(path)) as store, \
                store.transaction(_HANDLER, suffix="") as txn:
            txn.write(lambda tmp: _HANDLER.write(roots, tmp, manifest=manifest))
            if self.verify:
                checks = txn.verify(lambda tmp: _HANDLER.check(roots, tmp, own=True))
                if not all(c.ok for c in checks):
                    raise RoundTripError(Report(path, _HANDLER.name, False, checks, 0,
                                                time.perf_counter() - start))
            txn.commit({}, then=self._retain)

    def _retain(self) -> None:
        entries = self._entries()
        kept = retention.kept(entries, max_to_keep=self.max_to_keep, best_k=self.best_k,
                              metric=self.metric, mode=self.mode,
                              keep_every_n_hours=self.keep_every_n_hours)
        # TensorFlow's own record first: a crash before the deletes leaves it naming
        # checkpoints that all exist.
        adopted.tell_tensorflow(self._store, [(e.name, e.time) for e in kept],
                                self.max_to_keep)
        keep = {e.number for e in kept}
        for e in entries:
            if e.number not in keep:
                self._store.child(e.name).delete(_HANDLER)  # what commits it first

    # -- reading ---------------------------------------------------------------------

    def restore(self, path: str | os.PathLike[str] | None = None, *,
                only: Collection[str] | None = None, strict: bool = True) -> Report:
        """Restore a checkpoint (the latest by default), all or nothing.

        Args:
            only: Restore just these objects, e.g. ``("model",)`` for transfer
                learning; the others stay as they are. Names are ``"model"``,
                ``"optimizer"`` and the keyword names of the extra trackables.
            strict: When False, restore what matches and report the rest
                (like ``expect_partial``) instead of raising.

        Returns:
            A ``Report`` whose checks say what was restored, what was left in the
            checkpoint, and (non-strict) what did not match.

        Raises:
            ArchitectureMismatchError: strict, and something does not fit; nothing
                was changed.
            CorruptArtifactError: the checkpoint is damaged; nothing was changed.
            ArtifactNotFoundError: there is no such checkpoint.
        """
        self.wait()
        roots = self._roots()
        known = roots.names()
        if only is not None and set(only) - known:
            raise ValueError(f"nothing named {sorted(set(only) - known)} to restore; "
                             f"known: {sorted(known)}")
        start = time.perf_counter()
        if path is None:
            path = self.latest
            if path is None:
                raise ArtifactNotFoundError(
                    f"no checkpoint to restore: the directory holds no "
                    f"{self.checkpoint_name}-N checkpoint", path=self.directory)
        # (a URL's: read from a local copy, every object's size and CRC32C checked)
        with stores.at(path) as store, store.resolve(_checkpoint_at) as found:
            checks = _HANDLER.restore(roots, found.actual, checksummed=found.checksummed,
                                      only=only, strict=strict)
            size = sum(p.stat().st_size for p in _HANDLER.members(found.actual))
            return found.naming.report(Report(str(found.actual), _HANDLER.name, True,
                                              tuple(checks), size,
                                              time.perf_counter() - start))

    def restore_or_initialize(self) -> str | None:
        """Restore the newest checkpoint that is intact; None when there is none
        (after calling ``init_fn``, when given).

        A damaged or incomplete newest checkpoint (``CorruptArtifactError``) is
        skipped with a warning, and the most recent intact one is restored instead;
        a broken one is never loaded. Anything else (a model the checkpoint does not
        fit, an interrupt, a bug) is raised as it is: no older checkpoint would fit
        better. With ``checkpoint_interval``, the interval counts from the
        ``step_counter`` as restored.
        """
        self.wait()
        damaged: list[str] = []
        for entry in reversed(self._entries()):
            try:
                self.restore(entry.path)
            except CorruptArtifactError as exc:
                damaged.append(f"{_name(entry.path)}: {exc}")
                continue
            if damaged:
                warnings.warn(
                    f"skipped damaged checkpoint(s) in {self.directory}: {'; '.join(damaged)}; "
                    f"restored {_name(entry.path)}", UserWarning, stacklevel=2)
            if self.checkpoint_interval is not None:
                self._last_checkpoint_step = _read_step(self.step_counter)
            return str(entry.path)
        if damaged:
            raise CorruptArtifactError("every checkpoint is damaged: " + "; ".join(damaged),
                                       path=self.directory)
        if self.init_fn is not None:
            self.init_fn()
        return None


def _name(path: Path | str) -> str:
    return os.path.basename(str(path))


# tf.train.CheckpointManager's arguments that kerasave names otherwise.
_SPELLED_OTHERWISE = {"keep_checkpoint_every_n_hours": "keep_every_n_hours"}


def _require_trackable(name: str, value: Any) -> None:
    """TypeError, now, for a keyword argument that is no object ``tf.train.Checkpoint``
    can track (the same test TensorFlow makes: trackables, tf.functions, and lists
    or dicts of them), instead of a ValueError from the first ``save``."""
    if name in _SPELLED_OTHERWISE:
        raise TypeError(f"CheckpointManager has no argument {name!r}: kerasave names it "
                        f"{_SPELLED_OTHERWISE[name]!r}. Received: {name}={value!r}")
    try:
        tf.train.Checkpoint(**{name: value})
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"CheckpointManager got {name}={value!r}, which is neither one of its "
            "arguments nor an object a checkpoint can hold: extra keyword arguments are "
            "saved and restored with the model, so each must be trackable (a tf.Variable, "
            "a tf.data iterator, a Keras object, a tf.train.Checkpoint...)") from exc


def _checked_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"checkpoint_name must be a string. Received: {name!r}")
    if not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise ValueError("checkpoint_name must be a plain file name, not empty, not hidden "
                         f"and without separators. Received: checkpoint_name={name!r}")
    return name


def _read_step(counter: Any) -> int | float:
    """The step counter's value now (``tf.train.CheckpointManager`` reads its
    ``numpy()``), as a Python number."""
    try:
        value = np.asarray(counter.numpy() if hasattr(counter, "numpy") else counter)
    except Exception as exc:
        raise TypeError(f"cannot read the step_counter {counter!r}: {exc}") from exc
    if value.shape != () or value.dtype.kind not in "iuf":
        raise TypeError("step_counter must hold one number (e.g. tf.Variable(0) or the "
                        f"optimizer's iterations). Received: {counter!r}")
    return value.item()


def _checkpoint_at(prefix: Path) -> CheckpointHandler:
    if not _HANDLER.exists(prefix):
        raise ArtifactNotFoundError(f"no checkpoint at {prefix}", path=prefix)
    return _HANDLER


public(CheckpointManager)
