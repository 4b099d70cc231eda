"""TensorFlow object-based checkpoints (``prefix.index`` + ``prefix.data-*``).

The files are the ones ``tf.train.Checkpoint(model=..., optimizer=...)`` writes,
so plain TensorFlow reads them. Beside them kerasave keeps ``prefix.kerasave.json``
with the model's build shapes: restoring into a fresh, unbuilt model builds it
(and its optimizer) first, which TensorFlow's deferred restore gets wrong on Keras 3.

Restoring does not use TensorFlow's restore machinery. It walks the checkpoint's
object graph beside the live objects, pairs every saved tensor with its variable,
checks all of them, and only then assigns: all or nothing (the engine:
``formats/_pairing.py``).

The handler writes, checks and restores a model (``save_weights``,
``load_weights``, ``verify``) or a ``Roots``: what a ``CheckpointManager``'s
checkpoints hold, a model, its optimizer and other trackables. The manager
numbers, keeps and locks; every checkpoint it writes is this handler's
``write`` and ``check`` inside the store's transaction, every restore its
``restore``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from kerasave._errors import (
    CorruptArtifactError,
    KerasaveError,
    UnknownFormatError,
    foreign_errors,
)
from kerasave._report import Check, Variable
from kerasave._runtime.lazy import keras, tf
from kerasave.compare.verify import optimizer_of
from kerasave.formats._base import (
    Contents,
    ReadArray,
    WeightsFormat,
    require_model,
    versions_now,
)
from kerasave.formats._pairing import (
    UNTRACKED,
    Pairing,
    checked_reader,
    checkpoint_roots,
    compare_pairing,
    listed,
    model_key,
    optimizer_keys,
    pair_checkpoint,
    prepare,
    stage,
)
from kerasave.formats._tf.graph import GRAPH_KEY as _GRAPH_KEY
from kerasave.formats._tf.graph import VALUE as _VALUE
from kerasave.formats._tf.graph import ObjectGraph, read_graph
from kerasave.formats._tf.tfindex import checked_tensors, tensor_loader, tensor_reader
from kerasave.keras2 import checkpoint as keras2

__all__ = ["CheckpointHandler", "Roots", "manifest_path", "read_manifest", "tensors"]

_DATA = re.compile(r"\.data-\d{5}-of-\d{5}$")


def manifest_path(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".kerasave.json")


def read_manifest(prefix: Path) -> dict[str, Any]:
    """The checkpoint's kerasave manifest; ``{}`` when it has none (plain TensorFlow's)."""
    path = manifest_path(prefix)
    if not path.exists():
        return {}
    with foreign_errors(path, "unreadable kerasave manifest"):
        found = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(found, dict):
        raise CorruptArtifactError("the kerasave manifest is not a JSON object", path=path)
    return found


@dataclass(frozen=True, eq=False)
class Roots:
    """What a checkpoint is written from and read into: a model, its optimizer
    (None: the model's own) and other trackables by name (a step counter, a
    ``tf.data`` iterator...): a ``CheckpointManager``'s objects.

    ``model_name`` is the name the model is written under: ``model``, or the
    checkpoint guide's ``net`` in a directory ``tf.train.CheckpointManager``
    wrote (``CheckpointHandler.model_name``); reads find it under either.

    A save whose values were copied when it began (a background save's copies in
    host memory, the values a cluster's workers read together) carries them
    (``as_of``): ``saver.write(prefix)`` writes the copies, and ``values`` maps
    each variable to its copy, which ``check`` compares the files with.
    """

    model: Any
    optimizer: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    model_name: str = "model"
    saver: Any = None
    values: Any = None

    # Names the files or kerasave give objects of their own: no extra trackable's.
    RESERVED: ClassVar[frozenset[str]] = frozenset(
        {"model", "optimizer", UNTRACKED, "save_counter", "root"})

    def __post_init__(self) -> None:
        reserved = self.RESERVED & set(self.extra)
        if reserved:
            raise ValueError(f"these names are kerasave's own: {sorted(reserved)}")

    def objects(self) -> dict[str, Any]:
        """Every object by the name a read pairs it under (the model as ``model``),
        the model's untracked variables (random seeds, RNN states) included."""
        return checkpoint_roots(self.model, self.optimizer, self.extra)

    def written(self) -> dict[str, Any]:
        """Every object by the name the files give it (the model as ``model_name``)."""
        objects = self.objects()
        if self.model_name == "model":
            return objects
        return {(self.model_name if k == "model" else k): v for k, v in objects.items()}

    def names(self) -> set[str]:
        """What a restore's ``only`` may name: ``model``, ``optimizer`` (when there is
        one) and the extra trackables' names."""
        return set(self.objects()) - {UNTRACKED}

    def as_of(self, saver: Any, values: Any) -> Roots:
        """These roots as copied when a save began (see the class)."""
        return replace(self, saver=saver, values=values)


def _roots(model: Any) -> Roots:
    return model if isinstance(model, Roots) else Roots(model)


class _Staged(NamedTuple):
    """A restore read and checked, not yet assigned (``_stage``)."""

    checks: list[Check]  # what was built to receive the values
    pairing: Pairing
    values: list[tuple[Any, Any]]  # (variable, value)
    unmatched: list[str] | None  # not strict: what did not fit and was left alone


def _stage(roots: Roots, path: Path, *, checksummed: bool,
           only: Collection[str] | None = None, strict: bool = True) -> _Staged:
    """Read the checkpoint at ``path``, build what is unbuilt, pair it with ``roots``
    (``only`` some of them) and read every value; nothing is assigned yet."""
    reader = checked_reader(path)
    manifest = read_manifest(path)
    graph = read_graph(reader, path)  # (read once, for prepare and the pairing)
    checks = []
    if only is None or "model" in only:
        checks += prepare(roots.model,
                          roots.optimizer if only is None or "optimizer" in only else None,
                          manifest, path, None if manifest else graph, reader,
                          extra=roots.extra)
    pairing = pair_checkpoint(roots.model, path, reader, optimizer=roots.optimizer,
                              extra=roots.extra, only=only, graph=graph)
    unmatched = None
    if not strict:  # what does not fit is reported, and left as it is
        unmatched = pairing.missing_in_model + pairing.not_in_checkpoint
        shapes = reader.get_variable_to_shape_map()
        fits = [tuple(shapes[k]) == tuple(v.shape) for k, v, _ in pairing.pairs]
        unmatched += [getattr(v, "path", None) or k
                      for (k, v, _), ok in zip(pairing.pairs, fits) if not ok]
        pairing.pairs[:] = [p for p, ok in zip(pairing.pairs, fits) if ok]
        pairing.missing_in_model.clear()
        pairing.not_in_checkpoint.clear()
    values = stage(pairing, reader, path, tensor_loader(path, reader, checksummed=checksummed))
    return _Staged(checks, pairing, values, unmatched)


def _assign(values: list[tuple[Any, Any]]) -> None:
    for var, value in values:
        var.assign(value)


def restored_checks(pairing: Pairing, has_optimizer: bool) -> list[Check]:
    """What a load restored, group by group (and what Keras 2's layout left out)."""
    n_model = sum(g == "model" for _, _, g in pairing.pairs)
    n_opt = sum(g == "optimizer" for _, _, g in pairing.pairs)
    layout = " (Keras 2 layout)" if pairing.keras2 else ""
    checks = [Check("model variables", True, f"{n_model} restored{layout}")]
    if pairing.optimizer_saved and has_optimizer:
        generation = (f" ({pairing.keras2})" if pairing.keras2 not in (None, "model") else "")
        kept = (f"; saved hyperparameters {', '.join(pairing.kept)} left as the optimizer "
                "is configured" if pairing.kept else "")
        checks.append(Check("optimizer variables", True, f"{n_opt} restored{generation}{kept}"))
    elif pairing.optimizer_saved:
        checks.append(Check("optimizer variables", True,
                            "saved, but the model has no optimizer: not restored"))
    else:
        checks.append(Check("optimizer variables", True, "none saved"))
    if pairing.extra_roots:
        checks.append(Check("other objects", True,
                            "left for the caller: " + ", ".join(pairing.extra_roots)))
    return checks


class CheckpointHandler(WeightsFormat):
    name = "checkpoint"
    can_hold_optimizer = True
    array_names = "variable paths as saved"

    def members(self, path: Path) -> list[Path]:
        if not path.parent.is_dir():
            return []
        data = sorted(
            p for p in path.parent.iterdir()
            if p.name.startswith(path.name + ".data-") and _DATA.search(p.name)
        )
        # The index goes last: it is what makes the data files a checkpoint.
        found = data + [p for p in (manifest_path(path), path.with_name(path.name + ".index"))
                        if p.exists()]
        return found

    def exists(self, path: Path) -> bool:
        return path.with_name(path.name + ".index").is_file()

    def sniff(self, path: Path) -> bool:
        return self.exists(path)

    def preflight(self, model: keras.Model, path: Path) -> None:
        # An unbuilt model too, as tf.train.Checkpoint writes it: its optimizer's
        # step counter and nothing else, restored into an unbuilt model.
        require_model(model, path)

    # -- writing -------------------------------------------------------------------

    def describe(self, roots: keras.Model | Roots) -> dict[str, Any]:
        """The manifest fields every kerasave checkpoint carries, as the roots are now:
        the build shapes (a fresh model is built from them) and the optimizer's state."""
        roots = _roots(roots)
        model, optimizer = roots.model, roots.optimizer
        optimizer = optimizer if optimizer is not None else optimizer_of(model)
        return {
            "kerasave_manifest": 1,
            "format": self.name,
            "versions": versions_now(),
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "built": bool(model.built),
            "build_config": model.get_build_config(),
            "optimizer": None if optimizer is None else {
                "class": type(optimizer).__name__,
                "built": bool(optimizer.built),
                "variables": len(optimizer.variables),
            },
        }

    def write(self, model: keras.Model | Roots, path: Path, *,
              manifest: Mapping[str, Any] | None = None) -> None:
        """Write the TensorFlow checkpoint files of ``model`` (or of ``Roots``, the
        copies they were taken ``as_of`` when they were) and the manifest beside them:
        ``manifest`` (``describe`` and the caller's fields, taken when the save
        began), by default ``describe`` now."""
        roots = _roots(model)
        saver = roots.saver if roots.saver is not None else tf.train.Checkpoint(
            **roots.written())
        saver.write(str(path))
        fields = dict(manifest) if manifest is not None else self.describe(roots)
        manifest_path(path).write_text(json.dumps(fields, indent=1, default=str) + "\n")

    # -- loading -------------------------------------------------------------------

    def load(self, model: keras.Model, path: Path, *, checksummed: bool = False) -> list[Check]:
        staged = _stage(Roots(model), path, checksummed=checksummed)
        _assign(staged.values)
        return staged.checks + restored_checks(staged.pairing, optimizer_of(model) is not None)

    def restore(self, roots: Roots, path: Path, *, checksummed: bool = False,
                only: Collection[str] | None = None, strict: bool = True) -> list[Check]:
        """Restore the checkpoint at ``path`` into ``roots``, all or nothing: what
        ``CheckpointManager.restore`` does (its ``only`` and ``strict``), between
        the store's checks of the files and its report.

        Raises:
            ArchitectureMismatchError: strict, and something does not fit.
            CorruptArtifactError: the files are damaged (unreadable, a value that
                does not read, state TensorFlow cannot restore).
        """
        staged = _stage(roots, path, checksummed=checksummed, only=only, strict=strict)
        pairing = staged.pairing
        # Non-variable state (tf.data iterators) goes through TensorFlow, first: if it
        # fails, no variable has been touched yet.
        objects = roots.objects()
        for root in pairing.other_state:  # (by its saved name: the model's may differ)
            with foreign_errors(path, f"could not restore {root!r}", at="run"):
                tf.train.Checkpoint(**{root: objects.get(root, roots.model)}).read(
                    str(path)).expect_partial()
        _assign(staged.values)
        groups: dict[str, int] = {}
        for _, _, g in pairing.pairs:
            groups[g] = groups.get(g, 0) + 1
        restored = ", ".join(f"{g} ({n} variables)" for g, n in groups.items() if g != UNTRACKED)
        restored += "".join(f", {r} (state)" for r in pairing.other_state)
        checks = [*staged.checks, Check("restored", True, restored or "nothing")]
        left = list(pairing.extra_roots)
        if pairing.optimizer_saved and "optimizer" not in groups and (
                only is not None and "optimizer" not in only):
            left.append("optimizer")
        checks.append(Check("left in checkpoint", True, ", ".join(sorted(set(left))) or "none"))
        if staged.unmatched is not None:
            checks.append(Check("not matched", True, ", ".join(staged.unmatched) or "none"))
        return checks

    def model_name(self, path: Path | None, roots: Roots) -> str:
        """The name the model has in the checkpoint at ``path``: what its manifest
        records, or (a checkpoint TensorFlow wrote, e.g. the guide's
        ``tf.train.Checkpoint(net=...)``) the name its graph gives the model;
        ``model`` when there is no checkpoint, or it is damaged."""
        if path is None:
            return "model"
        try:
            manifest = json.loads(manifest_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = None
        if isinstance(manifest, dict):
            return str(manifest.get("model_name") or "model")
        try:
            return model_key(read_graph(checked_reader(path), path), roots.objects())
        except KerasaveError:
            return "model"  # (a damaged newest checkpoint: kerasave's own name)

    # -- verification and inspection -----------------------------------------------

    def check(self, model: keras.Model | Roots, path: Path, *,
              own: bool = False) -> list[Check]:
        """Compare the checkpoint at ``path`` with ``model`` (or ``Roots``: with the
        values they were copied ``as_of``, when they were), bit for bit.

        ``own``: ``path`` is kerasave's own temporary, written by this process just
        now, and may be read as mapped pages."""
        roots = _roots(model)
        reader = checked_reader(path)
        pairing = pair_checkpoint(roots.model, path, reader, optimizer=roots.optimizer,
                                  extra=roots.extra)
        if roots.values is not None:  # compare with the values as they were when saved
            pairing.pairs[:] = [(k, roots.values.get(v, v), g) for k, v, g in pairing.pairs]
        return compare_pairing(pairing, reader, tensor_reader(path, reader, mapped=own))

    def contents(self, path: Path) -> Contents:
        graph, shapes, dtypes = listed(path)
        names = _saved_names(graph)
        keys = _keys(shapes, names)
        variables = tuple(Variable(names.get(k, k), shapes[k], dtypes[k]) for k in keys)
        has_opt = any(k.startswith(("optimizer/", "model/optimizer/")) for k in shapes)
        optimizer = optimizer_keys(graph)
        manifest = read_manifest(path)
        recorded = manifest.get("optimizer")
        recorded = recorded if isinstance(recorded, dict) else {}
        versions = dict(manifest.get("versions", {})) if manifest else keras2.describe(graph)
        return Contents(variables, has_opt or bool(optimizer), versions,
                        tuple(names.get(k, k) for k in keys if k in optimizer),
                        recorded.get("variables") if recorded.get("built") else None)

    def arrays(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        reader = checked_reader(path)
        names = _saved_names(read_graph(reader, path))
        for key in _keys(reader.get_variable_to_shape_map(), names):
            # (TensorFlow's reader checks each tensor's CRC32C)
            with foreign_errors(path, f"could not read the saved tensor {key}", at="run"):
                value = np.asarray(reader.get_tensor(key))
            yield names.get(key, key), value

    @contextlib.contextmanager
    def reader(self, path: Path) -> Iterator[ReadArray]:
        graph, shapes, dtypes = listed(path)
        names = _saved_names(graph)
        keys = {names.get(k, k): k for k in _keys(shapes, names)}
        read = tensors(path, dtypes)
        yield lambda name: read(keys[name])


def tensors(prefix: Path, dtypes: Mapping[str, str]) -> Callable[[str], np.ndarray]:
    """The checkpoint's saved tensors by key, one at a time (``_tfindex.checked_tensors``:
    each CRC32C checked; TensorFlow's reader only for what its index does not say
    plainly). Damage raises ``CorruptArtifactError``; a tensor that is no array
    (``dtypes``: a dataset iterator's variant state, a resource),
    ``UnknownFormatError``."""
    made: list[Any] = []

    def tensorflow() -> Any:
        if not made:
            made.append(checked_reader(prefix))
        return made[0]

    read = checked_tensors(prefix, tensorflow)

    def tensor(key: str) -> np.ndarray:
        if dtypes.get(key) in ("variant", "resource"):
            raise UnknownFormatError(
                f"the saved tensor {key} holds TensorFlow {dtypes[key]} state (a dataset "
                "iterator's, say), which has no NumPy form", path=prefix)
        # (TensorFlow's reader raises several types)
        with foreign_errors(prefix, f"could not read the saved tensor {key}", at="run"):
            return read(key)

    return tensor


def _keys(shapes: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    """The saved tensors' keys, in the order of their names (the graph left out)."""
    return sorted((k for k in shapes if k != _GRAPH_KEY), key=lambda k: names.get(k, k))


def _saved_names(graph: ObjectGraph) -> dict[str, str]:
    """Every saved tensor's name, by key: what ``inspect`` lists, one name per tensor."""
    names, plain = {}, {}
    for node in graph.nodes:
        for attr in node.attributes:
            key = attr.checkpoint_key
            plain[key] = key.replace(f"/.ATTRIBUTES/{_VALUE}", "").replace("/.ATTRIBUTES/", ":")
            # Keras variables carry their path; a bare tf.Variable is named by its key.
            names[key] = attr.full_name if "/" in attr.full_name else plain[key]
    # A path two tensors share (Keras 2 named two layers alike) names neither: each
    # is named by its key, which is unique, so every name reads one tensor.
    shared = {name for name, count in Counter(names.values()).items() if count > 1}
    return {key: plain[key] if name in shared else name for key, name in names.items()}


