"""Training checkpoints that resume exactly: ``CheckpointManager``.

Built on the checkpoint format (``kerasave/formats/checkpoint.py``): each
checkpoint is ``DIR/ckpt-N.index`` + ``ckpt-N.data-*`` (plain TensorFlow files)
and ``ckpt-N.kerasave.json`` (build shapes, time, step, metrics, progress), on
disk or at a URL alike (``kerasave.store``: one store per directory, chosen
once). The directory listing *is* the state; TensorFlow's ``checkpoint`` file is
written from it after each commit, for TensorFlow's readers
(``tf.train.latest_checkpoint``).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasave import _adopted as adopted
from kerasave import store as stores
from kerasave._distributed import cluster_of
from kerasave._errors import (
    ArchitectureMismatchError,
    ArtifactNotFoundError,
    CorruptArtifactError,
    KerasaveError,
    RoundTripError,
)
from kerasave._internals import attempt
from kerasave._internals.trackables import snapshot
from kerasave._lazy import keras, tf
from kerasave._lease import Lease, give_back, next_number, take
from kerasave._public import public
from kerasave._report import Check, Report
from kerasave._verify import optimizer_of
from kerasave.formats._graph import read_graph
from kerasave.formats.checkpoint import (
    UNTRACKED,
    CheckpointHandler,
    _reader,
    checkpoint_roots,
    compare_pairing,
    describe,
    manifest_path,
    pair_checkpoint,
    prepare,
    stage,
    tensor_loader,
    tensor_reader,
)
from kerasave.store import local

__all__ = ["CheckpointManager"]

_HANDLER = CheckpointHandler()

@dataclass(frozen=True)
class _Entry:
    number: int
    path: str  # as shown: a path, or a URL's checkpoints by their URLs
    name: str
    time: float
    metrics: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # The keep_every_n_hours of the manager that wrote it: what it preserves stays
    # preserved under any later manager, as with tf.train.CheckpointManager.
    every: float | None = None


def _every(manifest: Mapping[str, Any]) -> float | None:
    value = manifest.get("keep_every_n_hours")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


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
        reserved = {"model", "optimizer", UNTRACKED, "save_counter", "root"} & set(trackables)
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
        self._last_checkpoint_step = last_checkpoint_step
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
        self._saved_name: str | None = None  # the model's name in the files (_model_name)
        self._cluster: Any = False  # the model's multi-worker cluster (None: one process)

    # -- listing ---------------------------------------------------------------------

    @property
    def optimizer(self) -> Any:
        return self._optimizer if self._optimizer is not None else optimizer_of(self.model)

    def _entries(self) -> list[_Entry]:
        found = []
        for e in self._store.list(re.escape(self.checkpoint_name) + r"-(\d+)", _HANDLER):
            m = e.manifest
            try:
                when = float(m.get("time") or 0)
            except (TypeError, ValueError):
                when = 0.0
            found.append(_Entry(e.number, e.shown, e.name, when,
                                dict(m.get("metrics") or {}) if isinstance(
                                    m.get("metrics"), dict) else {},
                                dict(m.get("metadata") or {}) if isinstance(
                                    m.get("metadata"), dict) else {}, _every(m)))
        return found

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
        target = self._where(path) if path is not None else None
        for entry in reversed(self._entries()):
            if target is None or entry.path == target:
                return dict(entry.metadata)
        raise ArtifactNotFoundError("no such checkpoint in the manager's directory",
                                    path=target or self.directory)

    def _where(self, path: str | os.PathLike[str]) -> str:
        """A checkpoint's path as the listing names it."""
        return stores.at(path).shown

    # -- writing ---------------------------------------------------------------------

    def _acquire(self) -> Lease:
        """The directory's lease, taken when this manager first writes
        (``kerasave._lease.take``).

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

    def _roots(self) -> dict[str, Any]:
        return checkpoint_roots(self.model, self.optimizer, self.trackables)

    def _written_roots(self) -> dict[str, Any]:
        """What a save writes: the model under the name the directory's checkpoints
        give it (``model``; the checkpoint guide's ``net`` in a directory
        ``tf.train.CheckpointManager`` wrote, so that TensorFlow code reading the
        directory finds it in kerasave's checkpoints too)."""
        roots = self._roots()
        name = self._model_name()
        if name != "model":
            roots = {(name if k == "model" else k): v for k, v in roots.items()}
        return roots

    def _model_name(self) -> str:
        if self._saved_name is None and self._store.local_dir is None:
            self._saved_name = "model"  # (TensorFlow never adopted an object-store series)
        if self._saved_name is None:
            entries = self._entries()
            newest = self._store.child(entries[-1].name).target if entries else None
            name = adopted.model_name(newest, self._roots())
            self._saved_name = "model" if name in self.trackables else name
        return self._saved_name

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
            self._cluster = cluster_of(self.model)
        cluster = self._cluster
        if cluster is None:
            lease, path, manifest = self._planned(None, step, metrics, metadata)
        else:  # the chief writes; every worker takes part
            try:
                lease, path, manifest = self._planned(cluster, step, metrics, metadata)
            except BaseException:
                cluster.abort(self._written_roots(), self.directory)  # (the others wait)
                raise
            cluster.save(lambda checkpoint, values: self._write(checkpoint, values, path,
                                                                manifest),
                         self._written_roots(), path)
            return str(path)
        assert lease is not None
        snapshot = None if blocking else self._snapshot()
        if snapshot is None:
            self._write(tf.train.Checkpoint(**self._written_roots()), None, path, manifest)
            return str(path)
        checkpoint, copies = snapshot
        self._pending = lease.pending = threading.Thread(
            target=self._background, args=(checkpoint, copies, path, manifest),
            name=f"kerasave-save-{_name(path)}")
        self._pending.start()
        return str(path)

    def _planned(self, cluster: Any, step: Any, metrics: Mapping[str, float] | None,
                 metadata: Mapping[str, Any] | None
                 ) -> tuple[Lease | None, str, dict[str, Any]]:
        """What a save writes: this writer's lease (none on a worker that is not the
        chief), the checkpoint's path and its manifest."""
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
        manifest = describe(self.model, self.optimizer, "checkpoint")
        manifest.update(step=number, time=self._now(),
                        metrics={k: float(v) for k, v in (metrics or {}).items()},
                        metadata=dict(metadata or {}), trackables=sorted(self.trackables))
        if self.keep_every_n_hours:
            manifest["keep_every_n_hours"] = float(self.keep_every_n_hours)
        if self._model_name() != "model":
            manifest["model_name"] = self._model_name()
        return lease, path, manifest

    def wait(self) -> None:
        """Wait for a background save to finish; raise what it raised, if anything."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.join()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _snapshot(self) -> tuple[Any, Any] | None:
        """A checkpoint object that writes copies of today's values, and the copies;
        None when this process cannot copy them (the save then blocks).

        The copies live in host memory and are reused from save to save; this is
        the only part of a background save that the training loop waits for.
        """
        made = attempt("background_copies",
                       lambda: snapshot(self._written_roots(), self._copies, self.directory),
                       lambda: None, passthrough=(KerasaveError,))  # (None: write blocking)
        if made is None:
            return None
        checkpoint, self._copies = made
        return checkpoint, self._copies

    def _background(self, checkpoint: Any, copies: Any, path: str,
                    manifest: dict[str, Any]) -> None:
        try:
            self._write(checkpoint, copies, path, manifest)
        except BaseException as exc:  # surfaces on the next call
            self._error = exc

    def _write(self, checkpoint: Any, copies: Any, path: str,
               manifest: dict[str, Any]) -> None:
        start = time.perf_counter()
        lease = self._lease
        assert lease is not None

        def write(tmp: Path) -> None:
            checkpoint.write(str(tmp))
            local.write_text(manifest_path(tmp),
                             json.dumps(manifest, indent=1, default=str) + "\n")

        # On disk the retention runs under the directory's lock, after the rename; at
        # a URL after the upload's commit (kerasave.store.objectstore).
        with lease.writing, self._store.child(_name(path)) as store, \
                store.transaction(_HANDLER, suffix="") as txn:
            txn.write(write)
            self._check(txn.tmp, path, copies, start)
            txn.commit({}, then=self._retain)

    def _check(self, tmp: Path, path: str, copies: Any, start: float) -> None:
        if not self.verify:
            return
        reader = _reader(tmp)
        pairing = pair_checkpoint(self.model, tmp, reader, optimizer=self.optimizer,
                                  extra=self.trackables)
        if copies is not None:  # compare with the values as they were when saved
            pairing.pairs[:] = [(k, copies.get(v, v), g) for k, v, g in pairing.pairs]
        checks = compare_pairing(pairing, reader, tensor_reader(tmp, reader, mapped=True))
        if not all(c.ok for c in checks):
            raise RoundTripError(Report(str(path), "checkpoint", False, tuple(checks),
                                        0, time.perf_counter() - start))

    def _retain(self) -> None:
        entries = self._entries()
        keep = {e.number for e in entries} if self.max_to_keep is None else {
            e.number for e in entries[-self.max_to_keep:]}
        if self.best_k and self.metric:
            ranked = [e for e in entries if self.metric in e.metrics
                      and not math.isnan(e.metrics[self.metric])]
            ranked.sort(key=lambda e: e.metrics[self.metric], reverse=self.mode == "max")
            keep |= {e.number for e in ranked[: self.best_k]}
        # One checkpoint per N hours, the first included: this manager's N over every
        # checkpoint, and the N each earlier manager recorded over the checkpoints it
        # wrote (what it preserved stays, as TensorFlow's preserved checkpoints do).
        chains = {e.every for e in entries if e.every} - {self.keep_every_n_hours}
        for hours, chain in [(self.keep_every_n_hours, entries)] + [
                (h, [e for e in entries if e.every == h]) for h in sorted(chains)]:
            anchor = None
            for e in sorted(chain, key=lambda e: e.time) if hours else ():
                if anchor is None or e.time - anchor >= hours * 3600:
                    keep.add(e.number)
                    anchor = e.time
        # TensorFlow's own record first: a crash before the deletes leaves it naming
        # checkpoints that all exist.
        kept = [e for e in entries if e.number in keep]
        adopted.tell_tensorflow(self._store, [(e.name, e.time) for e in kept],
                                self.max_to_keep)
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
        """
        self.wait()
        known = set(self._roots()) - {UNTRACKED}
        if only is not None and set(only) - known:
            raise ValueError(f"nothing named {sorted(set(only) - known)} to restore; "
                             f"known: {sorted(known)}")
        try:
            return self._restore(path, only, strict)
        except KerasaveError:
            raise
        except Exception as exc:  # whatever a damaged file makes a reader raise
            text = str(exc).strip().splitlines()
            raise CorruptArtifactError(
                f"could not read the checkpoint ({type(exc).__name__}: "
                f"{text[0] if text else ''})", path=path or self.directory) from exc

    def _restore(self, path: str | os.PathLike[str] | None, only: Collection[str] | None,
                 strict: bool) -> Report:
        start = time.perf_counter()
        if path is None:
            path = self.latest
            if path is None:
                raise ArtifactNotFoundError(
                    f"no checkpoint to restore: the directory holds no "
                    f"{self.checkpoint_name}-N checkpoint", path=self.directory)
        # (a URL's: read from a local copy, every object's size and CRC32C checked)
        with stores.at(path) as store, store.resolve(_checkpoint_at) as found:
            return found.naming.report(
                self._restore_from(found.actual, found.checksummed, only, strict, start))

    def _restore_from(self, prefix: Path, checksummed: bool, only: Collection[str] | None,
                      strict: bool, start: float) -> Report:
        reader = _reader(prefix)
        try:
            manifest = json.loads(manifest_path(prefix).read_text(encoding="utf-8"))
        except FileNotFoundError:
            manifest = {}
        except (OSError, ValueError) as exc:
            raise CorruptArtifactError(f"unreadable manifest: {exc}", path=prefix) from exc
        checks = []
        graph = read_graph(reader, prefix)  # (read once, for prepare and the pairing)
        if only is None or "model" in only:
            checks += prepare(self.model, self.optimizer if (only is None or "optimizer" in only)
                              else None, manifest, prefix, None if manifest else graph, reader,
                              extra=self.trackables)
        pairing = pair_checkpoint(self.model, prefix, reader, optimizer=self.optimizer,
                                  extra=self.trackables, only=only, graph=graph)
        if not strict:
            unmatched = pairing.missing_in_model + pairing.not_in_checkpoint
            shapes = reader.get_variable_to_shape_map()
            fits = [tuple(shapes[k]) == tuple(v.shape) for k, v, _ in pairing.pairs]
            unmatched += [getattr(v, "path", None) or k
                          for (k, v, _), ok in zip(pairing.pairs, fits) if not ok]
            pairing.pairs[:] = [p for p, ok in zip(pairing.pairs, fits) if ok]
            pairing.missing_in_model.clear()
            pairing.not_in_checkpoint.clear()
        # Non-variable state (tf.data iterators) goes through TensorFlow, first: if it
        # fails, no variable has been touched yet.
        staged = stage(pairing, reader, prefix,
                       tensor_loader(prefix, reader, checksummed=checksummed))
        for root in pairing.other_state:
            try:
                tf.train.Checkpoint(**{root: self.trackables[root]}).read(
                    str(prefix)).expect_partial()
            except Exception as exc:
                raise CorruptArtifactError(f"could not restore {root!r}: {exc}",
                                           path=prefix) from exc
        for var, value in staged:
            var.assign(value)
        groups: dict[str, int] = {}
        for _, _, g in pairing.pairs:
            groups[g] = groups.get(g, 0) + 1
        restored = ", ".join(f"{g} ({n} variables)" for g, n in groups.items() if g != UNTRACKED)
        restored += "".join(f", {r} (state)" for r in pairing.other_state)
        checks.append(Check("restored", True, restored or "nothing"))
        left = list(pairing.extra_roots)
        if pairing.optimizer_saved and "optimizer" not in groups and (
                only is not None and "optimizer" not in only):
            left.append("optimizer")
        checks.append(Check("left in checkpoint", True, ", ".join(sorted(set(left))) or "none"))
        if not strict:
            checks.append(Check("not matched", True, ", ".join(unmatched) or "none"))
        return Report(str(prefix), "checkpoint", True, tuple(checks),
                      sum(p.stat().st_size for p in _HANDLER.members(prefix)),
                      time.perf_counter() - start)

    def restore_or_initialize(self) -> str | None:
        """Restore the newest checkpoint that is intact; None when there is none
        (after calling ``init_fn``, when given).

        A damaged or incomplete newest checkpoint is skipped with a warning, and
        the most recent intact one is restored instead; a broken one is never
        loaded. With ``checkpoint_interval``, the interval counts from the
        ``step_counter`` as restored.
        """
        self.wait()
        entries = self._entries()
        damaged: list[str] = []
        for entry in reversed(entries):
            try:
                self.restore(entry.path)
            except CorruptArtifactError as exc:
                damaged.append(f"{_name(entry.path)}: {exc}")
                continue
            except ArchitectureMismatchError:
                raise
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
