"""TensorFlow object-based checkpoints (``prefix.index`` + ``prefix.data-*``).

The files are the ones ``tf.train.Checkpoint(model=..., optimizer=...)`` writes,
so plain TensorFlow reads them. Beside them kerasave keeps ``prefix.kerasave.json``
with the model's build shapes: restoring into a fresh, unbuilt model builds it
(and its optimizer) first, which TensorFlow's deferred restore gets wrong on Keras 3.

Restoring does not use TensorFlow's restore machinery. It walks the checkpoint's
object graph beside the live objects, pairs every saved tensor with its variable,
checks all of them, and only then assigns: all or nothing.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasave import _protowire
from kerasave._errors import ArchitectureMismatchError, CorruptArtifactError, UnknownFormatError
from kerasave._lazy import keras, tf
from kerasave._report import Check, Variable
from kerasave._verify import compare_arrays, optimizer_of, view
from kerasave.formats import keras2
from kerasave.formats._base import (
    Contents,
    ReadArray,
    WeightsFormat,
    build_if_needed,
    require_model,
    versions_now,
)
from kerasave.formats._graph import GRAPH_KEY as _GRAPH_KEY
from kerasave.formats._graph import VALUE as _VALUE
from kerasave.formats._graph import ObjectGraph, live_objects
from kerasave.formats._graph import read_graph as _graph
from kerasave.formats._tfindex import (
    check_index,
    checked_tensors,
    listing,
    tensor_loader,
    tensor_locations,
    tensor_reader,
)

__all__ = [
    "CheckpointHandler",
    "listed",
    "model_key",
    "Pairing",
    "pair_checkpoint",
    "read_manifest",
    "checkpoint_roots",
    "stage_and_assign",
    "stage",
    "compare_pairing",
    "tensor_loader",
    "tensor_locations",
    "check_index",
    "tensor_reader",
    "tensors",
    "prepare",
    "write_checkpoint",
    "describe",
]

_DATA = re.compile(r"\.data-\d{5}-of-\d{5}$")


def manifest_path(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".kerasave.json")


def read_manifest(prefix: Path) -> dict[str, Any]:
    path = manifest_path(prefix)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptArtifactError(f"unreadable kerasave manifest: {exc}", path=path) from exc


@dataclass
class Pairing:
    """Saved tensors paired with live variables by walking the object graph."""

    pairs: list[tuple[str, Any, str]]  # (checkpoint key, variable, group)
    missing_in_model: list[str]  # saved, but the live objects have nothing there
    not_in_checkpoint: list[str]  # live variables nothing was saved for
    optimizer_saved: bool
    extra_roots: list[str]  # saved top-level objects nobody asked for: left as saved
    other_state: list[str]  # roots holding non-variable state (e.g. tf.data iterators)
    keras2: str | None = None  # paired by Keras 2's layout: its optimizer generation, or "model"
    kept: list[str] = field(default_factory=list)  # Keras 2 hyperparameters not restored

    @property
    def clean(self) -> bool:
        return not self.missing_in_model and not self.not_in_checkpoint


def listed(prefix: Path) -> tuple[ObjectGraph, dict[str, tuple[int, ...]], dict[str, str]]:
    """The checkpoint's object graph, and every saved tensor's shape and dtype name
    by key: read from its ``.index`` without TensorFlow where everything in it is
    plain (``_tfindex.listing``), else by TensorFlow's reader, which names what is
    wrong. Either way the index is checked first (``check_index``)."""
    found = listing(prefix, _GRAPH_KEY)
    if found is not None and found.graph is not None:
        check_index(prefix)
        try:
            return (ObjectGraph(_protowire.trackable_object_graph(found.graph)), found.shapes,
                    found.dtypes)
        except ValueError:
            pass  # (TensorFlow's reader and ``read_graph`` say how it is damaged)
    reader = _reader(prefix)
    shapes = {key: tuple(int(d) for d in shape)
              for key, shape in reader.get_variable_to_shape_map().items()}
    dtypes = {key: dtype.name for key, dtype in reader.get_variable_to_dtype_map().items()}
    return _graph(reader, prefix), shapes, dtypes


def _reader(prefix: Path) -> Any:
    """TensorFlow's reader of the checkpoint, once its ``.index`` was checked
    (``check_index``)."""
    if prefix.with_name(prefix.name + ".index").is_file():
        # First: TensorFlow's reader aborts the process on some shapes and dtypes.
        check_index(prefix)
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except Exception as exc:  # TF raises several types (NotFound, DataLoss, ...)
        raise CorruptArtifactError(
            f"not a readable TensorFlow checkpoint: {str(exc).splitlines()[0]}", path=prefix
        ) from exc
    return reader


UNTRACKED = "kerasave_untracked"


def untracked_variables(model: keras.Model) -> list[Any]:
    """Model variables TensorFlow's object graph does not reach (e.g. RNG seed states).

    Keras 3 seed generators are not TF trackables, so a plain checkpoint of the
    model drops their state; kerasave saves them beside it, in model order, then
    the states of stateful RNN layers.
    """
    from kerasave._state import rnn_states

    seen = {id(obj) for obj in live_objects(model)}
    found = [v for v in model.variables if id(v) not in seen]
    listed = {id(v) for v in found}
    # Stateful RNN states are nobody's variables: no Keras format holds them; a
    # kerasave checkpoint does, so a restored model continues where it stopped.
    return found + [v for v in rnn_states(model) if id(v) not in seen and id(v) not in listed]


def checkpoint_roots(model: keras.Model, optimizer: Any = None,
                     extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The objects a kerasave checkpoint is written from and read into."""
    roots: dict[str, Any] = {"model": model}
    optimizer = optimizer if optimizer is not None else optimizer_of(model)
    if optimizer is not None:
        roots["optimizer"] = optimizer
    seeds = untracked_variables(model)
    if seeds:
        roots[UNTRACKED] = seeds
    for name, obj in (extra or {}).items():
        if name in roots:
            raise ValueError(f"{name!r} is reserved for kerasave's own checkpoint objects")
        roots[name] = obj
    return roots


def pair_checkpoint(model: keras.Model, prefix: Path, reader: Any = None, *,
                    optimizer: Any = None, extra: Mapping[str, Any] | None = None,
                    only: Collection[str] | None = None,
                    graph: ObjectGraph | None = None) -> Pairing:
    """Pair every tensor in the checkpoint with the live variable it belongs to.

    ``only`` limits the walk to some top-level objects (``"model"``,
    ``"optimizer"`` or names of ``extra``); the others are left as saved.
    ``graph``: the checkpoint's object graph, when the caller has read it already.

    A graph with Keras 2's marks (``formats.keras2.written_by_keras2``) is paired
    by Keras 2's layout only; one with Keras 3's or kerasave's marks by Keras 3's
    only; one with neither (a subclassed Keras 2 model saved without its
    optimizer, or a Keras 3 model of layers that track their own names) by Keras
    3's, then by Keras 2's when that one pairs everything.
    """
    reader = reader or _reader(prefix)
    graph = graph if graph is not None else _graph(reader, prefix)
    full = roots = checkpoint_roots(model, optimizer, extra)
    if only is not None:
        wanted = set(only) | ({UNTRACKED} if "model" in only else set())
        unknown = set(only) - set(roots)
        if unknown:
            raise ValueError(f"nothing named {sorted(unknown)} to restore; "
                             f"known: {sorted(n for n in roots if n != UNTRACKED)}")
        roots = {k: v for k, v in roots.items() if k in wanted}
    keras3 = keras2.written_by_keras3(graph)
    if not keras3 and keras2.written_by_keras2(graph):
        return _pair_keras2(graph, reader, full, roots)
    native = _pair_native(graph, roots, model_key(graph, full))
    if native.clean or keras3 or "model" not in roots:
        return native
    foreign = _pair_keras2(graph, reader, full, roots)
    return foreign if foreign.clean else native


def model_key(graph: ObjectGraph, roots: Mapping[str, Any]) -> str:
    """The saved name the model sits under: ``model``, or the one top-level name that
    nothing else claims (the checkpoint guide's ``tf.train.Checkpoint(net=...)``)."""
    saved = graph.children(0)
    if "model" in saved or "model" not in roots:
        return "model"
    free = [name for name, node in saved.items()
            if name not in roots and name not in ("save_counter", "optimizer", UNTRACKED)
            and graph.nodes[node].children and graph.holds_values(node)]
    return free[0] if len(free) == 1 else "model"


def _pair_native(graph: ObjectGraph, roots: Mapping[str, Any], key: str = "model") -> Pairing:
    """The saved graph walked beside ``roots`` (Keras 3's layout), the model under
    the saved name ``key``."""
    model = roots.get("model")
    optimizer = roots.get("optimizer")
    walk = {(key if name == "model" else name): obj for name, obj in roots.items()}
    root_names = {c.local_name for c in graph.nodes[0].children}
    extra_roots = sorted(root_names - set(walk) - {"save_counter", UNTRACKED})

    pairs: list[tuple[str, Any, str]] = []
    missing: list[str] = []
    other_state: set[str] = set()
    saw_optimizer: list[bool] = []
    model_vars = {id(v) for v in model.variables} if model is not None else set()
    opt_vars = {id(v) for v in optimizer.variables} if optimizer is not None else set()

    def skip(path: str, child: Any) -> bool:
        if child.local_name == "optimizer" and path in ("", f"/{key}"):
            saw_optimizer.append(True)
            return "optimizer" not in roots  # saved optimizer state nobody asked for
        return False

    for visit in graph.beside(walk, skip=skip):
        path, obj = visit.path, visit.obj
        root = path.split("/")[1] if path.count("/") else ""
        for attr in visit.node.attributes:
            if attr.name != _VALUE:
                other_state.add(root)
                continue
            if not hasattr(obj, "assign"):
                missing.append(f"{path} ({attr.full_name or attr.checkpoint_key})")
                continue
            group = ("model" if id(obj) in model_vars else
                     "optimizer" if id(obj) in opt_vars else root)
            pairs.append((attr.checkpoint_key, obj, group))
        for child in visit.unmatched:
            if path == "" and child.local_name not in walk:
                continue  # save_counter or an object the caller did not pass
            if graph.holds_values(child.node_id):  # bookkeeping without values is no loss
                missing.append(f"{path}/{child.local_name}".lstrip("/"))
    paired = {id(v) for _, v, _ in pairs}
    optimizer_saved = bool(saw_optimizer)
    expected: list[Any] = list(model.variables) if model is not None else []
    if optimizer is not None and optimizer_saved:
        expected += list(optimizer.variables)
    for name, obj in roots.items():
        if name not in ("model", "optimizer", UNTRACKED) and hasattr(obj, "assign"):
            expected.append(obj)
    not_saved = [getattr(v, "path", None) or v.name for v in expected if id(v) not in paired]
    return Pairing(pairs, missing, not_saved, optimizer_saved, extra_roots,
                   sorted(other_state - {""}))


def _pair_keras2(graph: ObjectGraph, reader: Any, full: Mapping[str, Any],
                 roots: Mapping[str, Any]) -> Pairing:
    """The model and optimizer paired by Keras 2's layout; other roots as saved.
    ``full``: every object there is; ``roots``: those asked for (``only``)."""
    model, optimizer = full["model"], full.get("optimizer")
    shapes = reader.get_variable_to_shape_map()
    tried = [keras2.pair(graph, model, optimizer, shapes, node,
                         with_optimizer="optimizer" in roots, with_model="model" in roots)
             for node in keras2.model_nodes(graph, full)]
    best = next((t for t in tried if t.clean), max(tried, key=lambda t: len(t.pairs)))
    rest = {name: obj for name, obj in roots.items()
            if name not in ("model", "optimizer", UNTRACKED)}
    others = _pair_native(graph, rest) if rest else Pairing([], [], [], False, [], [])
    extra: list[str] = []
    if best.model_node:  # the model under a name: the other saved names are left as saved
        saved = graph.children(0)
        extra = sorted(name for name, node in saved.items() if node != best.model_node
                       and name not in set(rest) | {"optimizer", "save_counter", UNTRACKED})
    return Pairing(best.pairs + others.pairs, best.missing + others.missing_in_model,
                   best.not_saved + others.not_in_checkpoint, best.optimizer_saved,
                   extra, others.other_state, keras2=best.generation or "model",
                   kept=best.kept)


def _listing(names: list[str], limit: int = 5) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _mismatch_message(pairing: Pairing) -> str | None:
    parts = []
    if pairing.missing_in_model:
        parts.append("saved objects the model does not have: "
                     + _listing(pairing.missing_in_model))
    if pairing.not_in_checkpoint:
        parts.append("variables of the model the checkpoint does not hold: "
                     + _listing(pairing.not_in_checkpoint))
    return "; ".join(parts) or None


def prepare(model: keras.Model, optimizer: Any, manifest: Mapping[str, Any],
            path: Path, graph: ObjectGraph | None = None, reader: Any = None,
            prefix: Path | None = None, extra: Mapping[str, Any] | None = None) -> list[Check]:
    """Build an unbuilt model (and its optimizer) from the saved shapes.

    A checkpoint kerasave did not write (Keras 2's, plain TensorFlow's: ``graph``
    and ``reader`` given, read at ``prefix``) records no shapes: the model must be
    built already, and its optimizer is built when the checkpoint holds slots for
    it (more than a step counter and a learning rate), once the model's own
    variables are known to fit (a checkpoint that fits no part leaves the
    optimizer unbuilt).
    """
    # A model saved before it was built holds no variables of its own: nothing to build.
    saved_unbuilt = manifest.get("built") is False and not manifest.get("build_config")
    notes = [] if saved_unbuilt and not model.built else build_if_needed(
        model, manifest.get("build_config"), path)
    optimizer = optimizer if optimizer is not None else optimizer_of(model)
    saved_opt = manifest.get("optimizer") or {}
    slots = saved_opt.get("built") if manifest or graph is None else (
        len(_optimizer_keys(graph)) > 2)
    if optimizer is not None and not optimizer.built and slots:
        if graph is not None and reader is not None:
            where = prefix if prefix is not None else path
            probe = pair_checkpoint(model, where, reader, extra=extra, only=("model",),
                                    graph=graph)
            problem = _mismatch_message(probe) or _layout_message(probe, reader, where)
            if problem:
                raise ArchitectureMismatchError(problem, path=path)
        optimizer.build(model.trainable_variables)
        notes.append(Check("build optimizer", True, "built the optimizer to receive its state"))
    return notes


def _layout_message(pairing: Pairing, reader: Any, path: Path | None = None) -> str | None:
    """Which saved tensors' declared shapes and dtypes (from the index) differ from
    their variables'; None when none do. A tensor the graph names and the files do
    not hold is damage (``CorruptArtifactError``)."""
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    absent = [key for key, _, _ in pairing.pairs if key not in shapes or key not in dtypes]
    if absent:
        raise CorruptArtifactError(f"the object graph names tensors the checkpoint does not "
                                   f"hold: {_listing(absent)}", path=path)
    bad = []
    for key, var, _ in pairing.pairs:
        want = (tuple(var.shape), np.dtype(var.dtype.as_numpy_dtype
                                           if hasattr(var.dtype, "as_numpy_dtype") else var.dtype))
        got = (tuple(shapes[key]), np.dtype(dtypes[key].as_numpy_dtype))
        if want != got:
            bad.append(f"{getattr(var, 'path', None) or key}: saved {got[0]} {got[1]}, "
                       f"live {want[0]} {want[1]}")
    return "; ".join(bad[:5]) or None


def stage_and_assign(pairing: Pairing, reader: Any, path: Path,
                     read: Callable[[str], Any] | None = None) -> None:
    """Check every pair, read every value, and only then assign: all or nothing."""
    for var, value in stage(pairing, reader, path, read):
        var.assign(value)


def stage(pairing: Pairing, reader: Any, path: Path,
          read: Callable[[str], Any] | None = None) -> list[tuple[Any, Any]]:
    """Check every pair and read every value (``read``: see ``tensor_loader``);
    assigns nothing."""
    read = read or reader.get_tensor
    problem = _mismatch_message(pairing) or _layout_message(pairing, reader, path)
    if problem:
        raise ArchitectureMismatchError(problem, path=path)
    try:  # every value is read (and its CRC checked) before any variable changes
        return [(var, read(key)) for key, var, _ in pairing.pairs]
    except Exception as exc:
        raise CorruptArtifactError(f"could not read a saved tensor: {exc}", path=path) from exc


def write_checkpoint(roots: Mapping[str, Any], path: Path, manifest: Mapping[str, Any]) -> None:
    """Write the TF checkpoint files and the kerasave manifest beside them."""
    tf.train.Checkpoint(**roots).write(str(path))
    manifest_path(path).write_text(json.dumps(manifest, indent=1, default=str) + "\n")


def describe(model: keras.Model, optimizer: Any, fmt: str) -> dict[str, Any]:
    """The manifest fields every kerasave checkpoint carries."""
    return {
        "kerasave_manifest": 1,
        "format": fmt,
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


def compare_pairing(pairing: Pairing, reader: Any,
                    read: Callable[[str], np.ndarray] | None = None) -> list[Check]:
    """Verification: the structure, then every group of variables bit for bit.

    ``read`` gives a saved tensor by key (``tensor_reader``); by default
    TensorFlow's reader copies it out.
    """
    read = read or (lambda key: np.asarray(reader.get_tensor(key)))
    layouts = _layout_message(pairing, reader)
    problem = "; ".join(p for p in (_mismatch_message(pairing), layouts) if p) or None
    checks = [Check("structure", problem is None, problem or
                    f"{len(pairing.pairs)} saved tensors match the live variables")]
    if layouts:
        return checks  # shapes before bytes: nothing is read that fits no variable
    groups = ["model", "optimizer"] + sorted(
        {g for _, _, g in pairing.pairs} - {"model", "optimizer", UNTRACKED})
    if any(g == UNTRACKED for _, _, g in pairing.pairs):
        groups.append(UNTRACKED)
    for group in groups:
        if group == "optimizer" and not pairing.optimizer_saved:
            checks.append(Check("optimizer variables", True, "none saved"))
            continue
        if group == "optimizer" and not any(g == "optimizer" for _, _, g in pairing.pairs):
            checks.append(Check("optimizer variables", True,
                                "saved, but the model has no optimizer: not compared"))
            continue
        name = "rng seed states" if group == UNTRACKED else f"{group} variables"
        try:
            pairs = [(getattr(v, "path", None) or k, read(k), view(v))
                     for k, v, g in pairing.pairs if g == group]
        except Exception as exc:  # TF reports damage as several error types
            checks.append(Check(name, False, f"unreadable: {str(exc).splitlines()[0]}"))
            continue
        checks.append(compare_arrays(name, pairs))
    for root in pairing.other_state:
        checks.append(Check(f"{root} state", True, "saved (not a variable: not compared)"))
    return checks


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


def _optimizer_keys(graph: ObjectGraph) -> set[str]:
    """The keys of the saved optimizer state: what ``tf.train.Checkpoint(optimizer=...)``
    saved, or the optimizer of a model saved at the root (Keras 2 ``save_weights``),
    less what the model itself holds."""
    root = graph.children(0)
    model_root = root.get("model", 0)
    model_nodes = set(graph.reach(model_root, skip=lambda node_id, name: (
        node_id in (0, model_root) and name in ("optimizer", "save_counter"))))
    starts = [root.get("optimizer"), graph.children(model_root).get("optimizer")]
    return {attr.checkpoint_key for start in starts if start is not None
            for node_id in graph.reach(start) if node_id not in model_nodes
            for attr in graph.nodes[node_id].attributes}


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

    def write(self, model: keras.Model, path: Path) -> None:
        write_checkpoint(checkpoint_roots(model), path,
                         describe(model, optimizer_of(model), self.name))

    # -- loading -------------------------------------------------------------------

    def load(self, model: keras.Model, path: Path, *, checksummed: bool = False) -> list[Check]:
        reader = _reader(path)
        manifest = read_manifest(path)
        graph = _graph(reader, path)  # (read once, for prepare and the pairing)
        checks = prepare(model, None, manifest, path, None if manifest else graph, reader)
        pairing = pair_checkpoint(model, path, reader, graph=graph)
        stage_and_assign(pairing, reader, path,
                         tensor_loader(path, reader, checksummed=checksummed))
        return checks + restored_checks(pairing, optimizer_of(model) is not None)

    # -- verification and inspection -----------------------------------------------

    def check(self, model: keras.Model, path: Path, *, own: bool = False) -> list[Check]:
        """``own``: ``path`` is kerasave's own temporary, written by this process just
        now, and may be read as mapped pages."""
        reader = _reader(path)
        return compare_pairing(pair_checkpoint(model, path, reader), reader,
                               tensor_reader(path, reader, mapped=own))

    def contents(self, path: Path) -> Contents:
        graph, shapes, dtypes = listed(path)
        names = _saved_names(graph)
        keys = _keys(shapes, names)
        variables = tuple(Variable(names.get(k, k), shapes[k], dtypes[k]) for k in keys)
        has_opt = any(k.startswith(("optimizer/", "model/optimizer/")) for k in shapes)
        optimizer = _optimizer_keys(graph)
        manifest = read_manifest(path)
        recorded = manifest.get("optimizer") or {}
        versions = dict(manifest.get("versions", {})) if manifest else keras2.describe(graph)
        return Contents(variables, has_opt or bool(optimizer), versions,
                        tuple(names.get(k, k) for k in keys if k in optimizer),
                        recorded.get("variables") if recorded.get("built") else None)

    def arrays(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        reader = _reader(path)
        names = _saved_names(_graph(reader, path))
        for key in _keys(reader.get_variable_to_shape_map(), names):
            try:  # TensorFlow's reader checks each tensor's CRC32C
                value = np.asarray(reader.get_tensor(key))
            except Exception as exc:
                raise CorruptArtifactError(
                    f"could not read the saved tensor {key}: {_first_line(exc)}",
                    path=path) from exc
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
            made.append(_reader(prefix))
        return made[0]

    read = checked_tensors(prefix, tensorflow)

    def tensor(key: str) -> np.ndarray:
        if dtypes.get(key) in ("variant", "resource"):
            raise UnknownFormatError(
                f"the saved tensor {key} holds TensorFlow {dtypes[key]} state (a dataset "
                "iterator's, say), which has no NumPy form", path=prefix)
        try:
            return read(key)
        except CorruptArtifactError:
            raise
        except Exception as exc:  # (TensorFlow's reader raises several types)
            raise CorruptArtifactError(
                f"could not read the saved tensor {key}: {_first_line(exc)}",
                path=prefix) from exc

    return tensor


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _keys(shapes: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    """The saved tensors' keys, in the order of their names (the graph left out)."""
    return sorted((k for k in shapes if k != _GRAPH_KEY), key=lambda k: names.get(k, k))

