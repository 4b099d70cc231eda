"""Keras 2 (tf.keras) TensorFlow-format checkpoints, paired with Keras 3 models.

Keras 2 wrote a model's object graph under its own names, which Keras 3 does not
track (it tracks ``_functional``, ``_tracked``, ``_kernel``...), so neither
TensorFlow's restore nor kerasave's own walk finds anything there:

- a Sequential or functional model names its N-th layer with weights
  ``layer_with_weights-N`` (and every layer ``layer-N``, the same node again);
- everything else is named by attribute: ``kernel``, ``cell`` (an RNN's cell),
  ``blocks/0`` (a list), ``encoder/layer_with_weights-0`` (a nested model);
- the optimizer is one of two generations: TF 2.11+'s (``_iterations``, slots in
  ``_variables`` named ``<optimizer>/<slot>/<variable>``) or TF 2.0-2.10's
  OptimizerV2 (``iter``, hyperparameters as variables, and slots the graph links
  to their variables: ``.../.OPTIMIZER_SLOT/optimizer/m``).

This module pairs such a graph with a Keras 3 model by structure: the N-th saved
layer with weights with the N-th Keras 3 layer with weights, attributes with
attributes, and each slot with the Keras 3 optimizer variable that Keras 3
creates for the same model variable (``<variable path>_<slot>``). Layer names
play no part (Keras 3 names them differently). It only reads; the caller checks
shapes and assigns all or nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kerasave.formats._tf.graph import VALUE, ObjectGraph

__all__ = ["TF211", "OPTIMIZER_V2", "Keras2Pairing", "pair", "generation", "written_by_keras2",
           "written_by_keras3", "model_nodes", "describe", "optimizer_node", "named_slots"]

TF211 = "Keras 2 optimizer (TF 2.11+)"
OPTIMIZER_V2 = "Keras 2 OptimizerV2 (TF 2.0-2.10)"

# Keras 2 slot names -> Keras 3's, where they differ (Adam's m/v, RMSprop's rms/mg,
# SGD's TF 2.11+ "m"); the rest (momentum, velocity, accumulator...) are the same.
SLOTS = {"m": "momentum", "v": "velocity", "vhat": "velocity_hat", "rms": "velocity",
         "mg": "average_gradient"}

# Children that are never walked for model state: the optimizer (paired on its own),
# Keras 2's SavedModel bookkeeping (metrics, lists that alias the variables), functions.
_SKIP = frozenset({
    "optimizer", "save_counter", "keras_api", "variables", "trainable_variables",
    "non_trainable_variables", "trainable_weights", "non_trainable_weights", "weights",
    "regularization_losses", "layers", "metrics", "signatures", "_default_save_signature",
    "__call__", "call_and_return_all_conditional_losses", "call_and_return_conditional_losses",
    "train_function", "train_tf_function", "predict_function", "test_function", "root",
})
_REACH_SKIP = frozenset({"optimizer", "save_counter", "keras_api"})
_INDEX = re.compile(r"[0-9]+")
# Names only Keras 3 (or kerasave) gives objects in a graph: such a graph is paired
# Keras 3's way only.
_KERAS3 = frozenset({"_trainable_variables", "_functional", "_tracked", "_kernel",
                     "_compiled_trainable_state", "_inbound_nodes", "kerasave_untracked"})


@dataclass
class Keras2Pairing:
    """A Keras 2 graph paired with a Keras 3 model (and optimizer)."""

    pairs: list[tuple[str, Any, str]] = field(default_factory=list)  # key, variable, group
    missing: list[str] = field(default_factory=list)  # saved, with no counterpart (shape)
    not_saved: list[str] = field(default_factory=list)  # live, nothing saved for (shape)
    optimizer_saved: bool = False
    generation: str | None = None
    kept: list[str] = field(default_factory=list)  # saved hyperparameters left as configured
    model_node: int = 0

    @property
    def clean(self) -> bool:
        return not self.missing and not self.not_saved


def _value_attr(graph: ObjectGraph, node_id: int) -> Any:
    for attr in graph.nodes[node_id].attributes:
        if attr.name == VALUE:
            return attr
    return None


def _is_variable(obj: Any) -> bool:
    return hasattr(obj, "assign") and hasattr(obj, "shape") and hasattr(obj, "dtype")


def _attribute(live: Any, name: str) -> Any:
    if isinstance(live, (list, tuple)):
        return live[int(name)] if _INDEX.fullmatch(name) and int(name) < len(live) else None
    if isinstance(live, Mapping):
        return live.get(name)
    try:
        return getattr(live, name, None)
    except Exception:  # a property that cannot answer (an unbuilt layer's)
        return None


def _own_weight(layer: Any, name: str) -> Any:
    """The layer's variable of that name, when its attribute of the name is not one."""
    found = [w for w in getattr(layer, "weights", ()) or ()
             if getattr(w, "name", None) == name
             and (not hasattr(layer, "path")
                  or (getattr(w, "path", "") or "").rpartition("/")[0] == layer.path)]
    return found[0] if len(found) == 1 else None


def _weighted_layers(live: Any) -> list[Any]:
    """Keras 2's ``layer_with_weights-N`` order: the layers that have weights."""
    layers = _attribute(live, "layers")
    if not isinstance(layers, (list, tuple)):
        return []
    return [layer for layer in layers if getattr(layer, "weights", None)]


def _shape(shapes: Mapping[str, Any], key: str) -> str:
    return str(tuple(int(d) for d in shapes[key])) if key in shapes else "?"


def _live_name(var: Any) -> str:
    return getattr(var, "path", None) or var.name


def _saved_name(attr: Any) -> str:
    return attr.full_name or attr.checkpoint_key


def model_nodes(graph: ObjectGraph, roots: Mapping[str, Any]) -> list[int]:
    """Where the model may sit in a Keras 2 graph, likeliest first: under ``model``
    (``tf.train.Checkpoint(model=...)``); under the one saved object (not a bare
    variable) nobody else claims (the checkpoint guide's ``net``); at the root
    (``save_weights``)."""
    children = graph.children(0)
    if "model" in children:  # (or a Keras 2 model with an attribute named model)
        return [children["model"], 0]
    free = [node for name, node in children.items()
            if name not in roots and name not in _SKIP and not name.startswith("layer")
            and graph.nodes[node].children and graph.holds_values(node)]
    return free + [0] if len(free) == 1 else [0]


def _pair_model(graph: ObjectGraph, node_id: int, model: Any) -> dict[int, Any]:
    """Saved variable nodes under ``node_id``, each with the live variable at its place."""
    paired: dict[int, Any] = {}
    taken: set[int] = set()
    seen: set[int] = set()
    stack: list[tuple[int, Any]] = [(node_id, model)]
    while stack:
        nid, live = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        children = graph.nodes[nid].children
        saved_weighted = sum(c.local_name.startswith("layer_with_weights-") for c in children)
        weighted = _weighted_layers(live) if saved_weighted else []
        for child in children:
            name = child.local_name
            if name in _SKIP or name.startswith("layer-"):
                continue
            if name.startswith("layer_with_weights-"):
                # By position, only when both sides count the same layers with weights
                # (Keras 2 counted some Keras 3 has no weights for: lookup layers).
                index = name.rpartition("-")[2]
                counterpart = (weighted[int(index)] if saved_weighted == len(weighted)
                               and _INDEX.fullmatch(index) and int(index) < len(weighted)
                               else None)
            else:
                counterpart = _attribute(live, name)
            if counterpart is None:
                continue
            if _value_attr(graph, child.node_id) is not None:
                var = counterpart if _is_variable(counterpart) else _own_weight(live, name)
                if var is not None and id(var) not in taken and child.node_id not in paired:
                    paired[child.node_id] = var
                    taken.add(id(var))
            else:
                stack.append((child.node_id, counterpart))
    return paired


def generation(graph: ObjectGraph, optimizer_node: int | None) -> str | None:
    """Which Keras 2 optimizer wrote the state under ``optimizer_node``, if either."""
    if optimizer_node is None:
        return None
    names = graph.children(optimizer_node)
    if "_index_dict" in names or ("_variables" in names and "_iterations" in names
                                  and "_trainable_variables" not in names):
        return TF211
    if "iter" in names or graph.nodes[optimizer_node].slot_variables:
        return OPTIMIZER_V2
    return None


def optimizer_node(graph: ObjectGraph, model_node: int) -> int | None:
    return graph.children(model_node).get("optimizer", graph.children(0).get("optimizer"))


def written_by_keras3(graph: ObjectGraph) -> bool:
    """Whether the graph has names only Keras 3 or kerasave give (``_kernel``,
    ``_functional``, a Keras 3 optimizer's ``_trainable_variables``...)."""
    return any(c.local_name in _KERAS3 for node in graph.nodes for c in node.children)


def written_by_keras2(graph: ObjectGraph) -> bool:
    """Whether the graph has Keras 2's marks: ``layer_with_weights-N`` (Sequential and
    functional models) or a Keras 2 optimizer. (A subclassed Keras 2 model saved
    without its optimizer has neither: it is still paired, when Keras 3's layout
    does not fit, but ``inspect`` cannot say who wrote it.)"""
    for node in graph.nodes:
        if any(c.local_name == "layer_with_weights-0" for c in node.children):
            return True
    root = graph.children(0)
    start = root.get("model", 0)
    return generation(graph, optimizer_node(graph, start)) is not None


def describe(graph: ObjectGraph) -> dict[str, str]:
    """What ``inspect`` says of a graph Keras 2 wrote: ``{"keras": "2.x (tf.keras)",
    "optimizer": <generation>}``; empty for any other graph."""
    if not written_by_keras2(graph):
        return {}
    root = graph.children(0)
    found = {"keras": "2.x (tf.keras)"}
    for start in (root.get("model", 0), *root.values()):
        gen = generation(graph, optimizer_node(graph, start))
        if gen:
            found["optimizer"] = gen
            break
    return found


def _live_slots(optimizer: Any) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for var in optimizer.variables:
        found.setdefault(var.name, []).append(var)
    return found


def _slot_refs(graph: ObjectGraph, opt_node: int, gen: str,
               names: Mapping[str, int]) -> tuple[list[tuple[str, int | None, int]], set[int]]:
    """Each saved slot as (slot name, the model variable's node or None, slot node), and
    the slot nodes (OptimizerV2 links them; TF 2.11+ names them)."""
    refs: list[tuple[str, int | None, int]] = []
    if gen == OPTIMIZER_V2:
        for ref in graph.nodes[opt_node].slot_variables:
            original = ref.original_variable_node_id
            refs.append((ref.slot_name, original if _value_attr(graph, original) else None,
                         ref.slot_variable_node_id))
        return refs, {r[2] for r in refs}
    listed = graph.children(opt_node).get("_variables")
    iterations = graph.children(opt_node).get("_iterations")
    for node in graph.children(listed).values() if listed is not None else ():
        attr = _value_attr(graph, node)
        if node == iterations or attr is None:
            continue
        full, found = attr.full_name, None
        at = full.find("/")
        while at >= 0 and found is None:  # "<optimizer>/<slot>/<variable name>"
            slot, _, ref = full[at + 1:].partition("/")
            if ref in names:
                found = (slot, names[ref], node)
            at = full.find("/", at + 1)
        refs.append(found or ("", None, node))
    return refs, {r[2] for r in refs}


def named_slots(names: list[str], variables: Mapping[str, Any],
                optimizer: Any) -> list[Any] | None:
    """The Keras 3 optimizer variable for each of Keras 2's optimizer weight names
    in a legacy ``.h5`` file (``iteration``, ``Adam/iter``; TF 2.11+'s
    ``Adam/m/dense/kernel``, OptimizerV2's ``Adam/dense/kernel/m``), given the
    model variables by their Keras 2 names; None unless every name has exactly one
    counterpart and every Keras 3 optimizer variable but the learning rate has one."""
    live = _live_slots(optimizer)
    found: list[Any] = []
    for raw in names:
        name = raw[:-2] if raw.endswith(":0") else raw
        rest = name.partition("/")[2]
        if name == "iteration" or name.rpartition("/")[2] == "iter":
            found.append(optimizer.iterations)
            continue
        slot, _, ref = rest.partition("/")
        if ref not in variables:  # OptimizerV2: <optimizer>/<variable>/<slot>
            ref, _, slot = rest.rpartition("/")
        var = variables.get(ref)
        target = live.get(f"{_live_name(var).replace('/', '_')}_{SLOTS.get(slot, slot)}", []) \
            if var is not None else []
        if len(target) != 1:
            return None
        found.append(target[0])
    rate = getattr(optimizer, "learning_rate", None)
    covered = {id(v) for v in found}
    if len(covered) != len(found) or any(
            id(v) not in covered and v is not rate for v in optimizer.variables):
        return None
    return found


def _pair_optimizer(graph: ObjectGraph, opt_node: int, gen: str, paired: Mapping[int, Any],
                    optimizer: Any, shapes: Mapping[str, Any], out: Keras2Pairing) -> None:
    children = graph.children(opt_node)
    names: dict[str, int] = {}
    duplicate: set[str] = set()
    for node in paired:
        full = _value_attr(graph, node).full_name
        if full in names:
            duplicate.add(full)
        names[full] = node
    for full in duplicate:
        del names[full]
    opt_nodes = set(graph.reach(opt_node))
    everywhere = Counter(attr.full_name for nid, node in enumerate(graph.nodes)
                         if nid not in opt_nodes for attr in node.attributes
                         if attr.name == VALUE)
    for full in [f for f in names if everywhere[f] > 1]:
        del names[full]  # two saved variables of one name: which slot is whose is unknown
    refs, slot_nodes = _slot_refs(graph, opt_node, gen, names)
    live = _live_slots(optimizer)
    done: set[int] = set()

    def add(node: int, var: Any) -> bool:
        if id(var) in done:
            return False  # (a second saved slot for one live slot: neither is trusted)
        out.pairs.append((_value_attr(graph, node).checkpoint_key, var, "optimizer"))
        done.add(id(var))
        return True

    counter = children.get("_iterations", children.get("iter"))
    if counter is not None and _value_attr(graph, counter) is not None:
        add(counter, optimizer.iterations)
    rate = children.get("_learning_rate", children.get("learning_rate"))
    live_rate = getattr(optimizer, "learning_rate", None)
    if rate is not None and _value_attr(graph, rate) is not None:
        if _is_variable(live_rate):
            add(rate, live_rate)
        else:
            out.kept.append("learning_rate")
    for slot, original, node in refs:
        attr = _value_attr(graph, node)
        if attr is None:
            out.missing.append(f"an optimizer slot ({slot!r}) that is not a variable")
            continue
        saved = f"{_saved_name(attr)} {_shape(shapes, attr.checkpoint_key)}"
        var = paired.get(original) if original is not None else None
        if var is None:
            out.missing.append(saved)
            continue
        wanted = f"{_live_name(var).replace('/', '_')}_{SLOTS.get(slot, slot)}"
        found = live.get(wanted, [])
        if len(found) != 1:
            out.missing.append(f"{saved} (no {SLOTS.get(slot, slot)!r} slot for "
                               f"{_live_name(var)} in {type(optimizer).__name__})")
            continue
        if not add(node, found[0]):
            out.missing.append(f"{saved} (a second saved slot for {wanted})")
    for name, node in children.items():  # OptimizerV2's hyperparameters (beta_1, decay...)
        if node in slot_nodes or node in (counter, rate) or name.startswith("_"):
            continue
        if _value_attr(graph, node) is not None:
            out.kept.append(name)
    rate_id = id(live_rate) if _is_variable(live_rate) else None
    out.not_saved += [f"{_live_name(v)} {tuple(v.shape)}" for v in optimizer.variables
                      if id(v) not in done and id(v) != rate_id]


def pair(graph: ObjectGraph, model: Any, optimizer: Any, shapes: Mapping[str, Any],
         node_id: int, *, with_optimizer: bool = True, with_model: bool = True) -> Keras2Pairing:
    """The Keras 2 model (and optimizer) state under ``node_id`` paired with ``model``
    (and ``optimizer``), by structure. ``shapes``: the saved tensors' shapes, by key,
    for the messages. ``with_model=False``: the model is paired only to find the
    optimizer's slots; its own state is left out of the result."""
    out = Keras2Pairing(model_node=node_id)
    paired = _pair_model(graph, node_id, model)
    for node, var in paired.items():
        out.pairs.append((_value_attr(graph, node).checkpoint_key, var, "model"))
    opt_node = optimizer_node(graph, node_id)
    out.generation = generation(graph, opt_node)
    out.optimizer_saved = out.generation is not None
    skip = {opt_node} if opt_node is not None else set()
    reached = graph.reach(node_id, skip=lambda nid, name: name in _REACH_SKIP)
    for nid in reached:
        attr = _value_attr(graph, nid)
        if attr is not None and nid not in paired and nid not in skip:
            out.missing.append(f"{_saved_name(attr)} {_shape(shapes, attr.checkpoint_key)}")
    pairs_of = {id(v) for v in paired.values()}
    out.not_saved += [f"{_live_name(v)} {tuple(v.shape)}" for v in model.weights
                      if id(v) not in pairs_of]
    if not with_model:
        out.pairs.clear()
        out.missing.clear()
        out.not_saved.clear()
    if not (with_optimizer and optimizer is not None and opt_node is not None):
        return out
    if out.generation:
        _pair_optimizer(graph, opt_node, out.generation, paired, optimizer, shapes, out)
    else:  # optimizer state kerasave cannot place: said, never dropped
        out.optimizer_saved = graph.holds_values(opt_node)
        out.missing += [f"{_saved_name(a)} (optimizer state of an unknown layout)"
                        for nid in graph.reach(opt_node) for a in graph.nodes[nid].attributes
                        if a.name == VALUE]
    return out
