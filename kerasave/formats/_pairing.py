"""A TensorFlow checkpoint's object graph paired with live objects: the engine every
reader of TensorFlow's checkpoint files shares.

The checkpoint handler (``formats/checkpoint.py``), Keras 2 SavedModels
(``formats/keras2_savedmodel.py``: their ``variables/`` is a checkpoint) and
SavedModel exports read checkpoints through it:

- ``reader`` and ``listed``: TensorFlow's reader, once the ``.index`` was checked
  (shapes before bytes), and what a checkpoint holds, without TensorFlow where
  everything is plain;
- ``pair_checkpoint``: the saved object graph walked beside the live objects (the
  model under its saved name, its optimizer, other trackables), every saved tensor
  paired with its variable, by Keras 3's layout or Keras 2's (``formats.keras2``);
- ``prepare``: an unbuilt model (and optimizer) built to receive the values;
- ``stage`` then assign: every pair checked and every value read before any
  variable changes (all or nothing); ``compare_pairing``: verification, bit for bit.

What is damage is said here, as ``CorruptArtifactError`` (a file TensorFlow cannot
read, a tensor the graph names and the files lack, a value that does not read);
what does not fit the live objects as ``ArchitectureMismatchError``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasave._errors import (
    ArchitectureMismatchError,
    CorruptArtifactError,
    first_line,
    foreign_errors,
)
from kerasave._report import Check
from kerasave._runtime.lazy import keras, tf
from kerasave.compare.verify import compare_arrays, optimizer_of, view
from kerasave.formats._base import build_if_needed
from kerasave.formats._tf import protowire as _protowire
from kerasave.formats._tf.graph import GRAPH_KEY, VALUE, ObjectGraph, live_objects, read_graph
from kerasave.formats._tf.tfindex import check_index, listing
from kerasave.keras2 import checkpoint as keras2

__all__ = [
    "UNTRACKED",
    "Pairing",
    "checked_reader",
    "listed",
    "untracked_variables",
    "checkpoint_roots",
    "pair_checkpoint",
    "model_key",
    "prepare",
    "stage",
    "stage_and_assign",
    "compare_pairing",
    "optimizer_keys",
]

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
    found = listing(prefix, GRAPH_KEY)
    if found is not None and found.graph is not None:
        check_index(prefix)
        try:
            return (ObjectGraph(_protowire.trackable_object_graph(found.graph)), found.shapes,
                    found.dtypes)
        except ValueError:
            pass  # (TensorFlow's reader and ``read_graph`` say how it is damaged)
    reader = checked_reader(prefix)
    shapes = {key: tuple(int(d) for d in shape)
              for key, shape in reader.get_variable_to_shape_map().items()}
    dtypes = {key: dtype.name for key, dtype in reader.get_variable_to_dtype_map().items()}
    return read_graph(reader, prefix), shapes, dtypes


def checked_reader(prefix: Path) -> Any:
    """TensorFlow's reader of the checkpoint, once its ``.index`` was checked
    (``check_index``)."""
    if prefix.with_name(prefix.name + ".index").is_file():
        # First: TensorFlow's reader aborts the process on some shapes and dtypes.
        check_index(prefix)
    with foreign_errors(prefix, "not a readable TensorFlow checkpoint", at="run"):
        reader = tf.train.load_checkpoint(str(prefix))
    return reader


UNTRACKED = "kerasave_untracked"


def untracked_variables(model: keras.Model) -> list[Any]:
    """Model variables TensorFlow's object graph does not reach (e.g. RNG seed states).

    Keras 3 seed generators are not TF trackables, so a plain checkpoint of the
    model drops their state; kerasave saves them beside it, in model order, then
    the states of stateful RNN layers.
    """
    from kerasave.compare.state import rnn_states

    seen = {id(obj) for obj in live_objects(model)}
    found = [v for v in model.variables if id(v) not in seen]
    taken = {id(v) for v in found}
    # Stateful RNN states are nobody's variables: no Keras format holds them; a
    # kerasave checkpoint does, so a restored model continues where it stopped.
    return found + [v for v in rnn_states(model) if id(v) not in seen and id(v) not in taken]


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
    reader = reader or checked_reader(prefix)
    graph = graph if graph is not None else read_graph(reader, prefix)
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
            if attr.name != VALUE:
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
    saved_opt = manifest.get("optimizer")
    saved_opt = saved_opt if isinstance(saved_opt, dict) else {}
    slots = saved_opt.get("built") if manifest or graph is None else (
        len(optimizer_keys(graph)) > 2)
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
    # Every value is read (and its CRC checked) before any variable changes.
    with foreign_errors(path, "could not read a saved tensor", at="run"):
        return [(var, read(key)) for key, var, _ in pairing.pairs]


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
            checks.append(Check(name, False, f"unreadable: {first_line(exc)}"))
            continue
        checks.append(compare_arrays(name, pairs))
    for root in pairing.other_state:
        checks.append(Check(f"{root} state", True, "saved (not a variable: not compared)"))
    return checks


def optimizer_keys(graph: ObjectGraph) -> set[str]:
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


