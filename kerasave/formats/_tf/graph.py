"""TensorFlow object graphs, walked one way.

A TensorFlow checkpoint (and a SavedModel's variables) stores a graph of the
objects that were saved: nodes with named children and saved attributes (a
variable's value is its ``VARIABLE_VALUE``). Every module that needs that graph
reads and walks it here:

- ``ObjectGraph.reach``: the saved nodes under one node, on the file alone;
- ``ObjectGraph.beside``: the saved graph walked beside live objects, pairing
  each saved node with the object at the same place (restoring, verifying);
- ``live_objects``: the live objects TensorFlow's own saver would reach.

Each walk visits a node once, depth first, children in their saved order, and
needs no recursion (object graphs of large models are deep).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from kerasave._errors import foreign_errors
from kerasave._runtime.lazy import tf
from kerasave.formats._tf import protowire as _protowire

__all__ = ["GRAPH_KEY", "VALUE", "ObjectGraph", "Visit", "read_graph", "live_children",
           "live_objects"]

GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"  # the tensor that holds the graph itself
VALUE = "VARIABLE_VALUE"  # the attribute a variable's value is saved as


def live_children(obj: Any) -> dict[str, Any]:
    """The children TensorFlow's saver gives a live object, by local name."""
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, list):
        return {str(i): v for i, v in enumerate(obj)}
    try:
        return dict(tf.train.TrackableView.children(obj))
    except Exception:
        return {}


def live_objects(root: Any) -> Iterator[Any]:
    """Every live object reachable from ``root`` through ``live_children``, once each."""
    seen: set[int] = set()
    stack: list[Any] = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        yield obj
        stack.extend(live_children(obj).values())


class Visit(NamedTuple):
    """One saved node reached beside a live object (``ObjectGraph.beside``)."""

    node_id: int
    node: Any  # a TrackableObject: .attributes, .children
    obj: Any  # the live object at the same place
    path: str  # "" for the root, then "/child/grandchild"
    unmatched: list[Any]  # saved children (ObjectReference) the live object lacks


class ObjectGraph:
    """A checkpoint's saved object graph (``TrackableObjectGraph``)."""

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.nodes = proto.nodes
        self._holds: dict[tuple[bool, int], bool] = {}
        count = len(self.nodes)
        for node in self.nodes:  # every reference names a node of the graph
            ids = [c.node_id for c in node.children] + [
                i for s in node.slot_variables
                for i in (s.original_variable_node_id, s.slot_variable_node_id)]
            if any(not 0 <= i < count for i in ids):
                raise ValueError(f"a reference to a node the graph ({count} nodes) lacks")

    def children(self, node_id: int) -> dict[str, int]:
        """A node's saved children: local name to node id."""
        return {c.local_name: c.node_id for c in self.nodes[node_id].children}

    def reach(self, start: int, *,
              skip: Callable[[int, str], bool] | None = None) -> list[int]:
        """The nodes under ``start`` (itself first), on the saved graph alone.

        ``skip(node_id, local_name)`` leaves out a child of a node and what only
        it leads to.
        """
        seen: set[int] = set()
        order: list[int] = []
        stack = [start]
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            order.append(node_id)
            children = [c for c in self.nodes[node_id].children
                        if skip is None or not skip(node_id, c.local_name)]
            stack.extend(c.node_id for c in reversed(children))
        return order

    def holds_values(self, node_id: int, *, any_state: bool = False) -> bool:
        """Whether anything under a node is a saved variable value (``any_state``:
        any saved attribute at all), remembered node by node (no recursion)."""
        key = (any_state, node_id)
        if key not in self._holds:
            self._holds[key] = any(
                any_state or a.name == VALUE
                for nid in self.reach(node_id) for a in self.nodes[nid].attributes)
        return self._holds[key]

    def beside(self, root: Any, *,
               skip: Callable[[str, Any], bool] | None = None) -> Iterator[Visit]:
        """The saved graph walked beside the live objects under ``root``.

        Yields each saved node that has a live counterpart, with the saved
        children that have none (``Visit.unmatched``). ``skip(path, child)``
        leaves a saved child out of the walk altogether (neither walked nor
        unmatched); it is asked once for every child of every visited node.
        """
        seen: set[int] = set()
        stack: list[tuple[int, Any, str]] = [(0, root, "")]
        while stack:
            node_id, obj, path = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            node = self.nodes[node_id]
            live = live_children(obj) if node.children else {}
            unmatched, matched = [], []
            for child in node.children:
                if skip is not None and skip(path, child):
                    continue
                found = live.get(child.local_name)
                if found is None:
                    unmatched.append(child)
                else:
                    matched.append((child.node_id, found, f"{path}/{child.local_name}"))
            yield Visit(node_id, node, obj, path, unmatched)
            stack.extend(reversed(matched))


def read_graph(reader: Any, prefix: Any) -> ObjectGraph:
    """The object graph of the checkpoint ``reader`` reads (at ``prefix``)."""
    with foreign_errors(prefix, "the checkpoint has no readable object graph (is it a TF1 "
                "name-based checkpoint?)", at="run"):
        return ObjectGraph(_protowire.trackable_object_graph(reader.get_tensor(GRAPH_KEY)))
