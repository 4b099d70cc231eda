"""Model names: variables named by the model's structure, so they line up across formats.

Formats name variables differently, and some names depend on the Python objects
that wrote them (``sequential_1/dense_2/kernel`` for the second model of a
process). When an architecture is at hand, variables get *model names* that
depend only on the model's structure, the way Keras' own weights files address
layers (class name in snake case, numbered in order)::

    dense/kernel, dense/bias, dense_1/kernel, ...
    optimizer/iteration, optimizer/learning_rate, optimizer/dense/kernel/momentum, ...
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

from kerasave._runtime.lazy import keras
from kerasave.compare.verify import optimizer_of, to_numpy

__all__ = ["model_names", "optimizer_arrays", "unique"]


def _snake(name: str) -> str:
    """Keras' ``to_snake_case``: the name its weights files give a layer of this class."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _layers(obj: Any) -> list[Any]:
    try:
        found = obj.layers
    except Exception:  # some layers raise when asked for sublayers
        return []
    return list(found) if isinstance(found, (list, tuple)) else []


def model_names(model: keras.Model) -> list[tuple[str, Any]]:
    """``(name, variable)`` for every weight of the model, in ``model.weights`` order.

    A weight is named by the path of its layer in the model, each layer being its
    class in snake case numbered among its siblings (``dense``, ``dense_1``; nested
    models recurse), then its path inside that layer (``kernel``). Layer names
    chosen by Keras at run time (``dense_7``) play no part.
    """
    named: dict[int, str] = {}

    def visit(container: Any, prefix: str) -> None:
        counts: Counter[str] = Counter()
        for layer in _layers(container):
            base = _snake(type(layer).__name__)
            key = prefix + (base if counts[base] == 0 else f"{base}_{counts[base]}")
            counts[base] += 1
            if isinstance(layer, keras.Model):
                visit(layer, key + "/")
            own = getattr(layer, "path", None) or layer.name
            for v in layer.weights:
                if id(v) in named:
                    continue
                path = getattr(v, "path", None) or v.name
                inner = path[len(own) + 1:] if path.startswith(own + "/") else v.name
                named[id(v)] = f"{key}/{inner}"

    visit(model, "")
    result: list[tuple[str, Any]] = []
    taken: set[str] = set()
    for v in model.weights:
        name = named.get(id(v)) or getattr(v, "path", None) or v.name
        result.append((unique(name, taken), v))
    return result


def unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}#{n}"
    taken.add(candidate)
    return candidate


def _optimizer_name(full: str, model_paths: dict[str, str]) -> str:
    """``optimizer/<model name>/<slot>`` for a slot variable, else ``optimizer/<name>``.

    ``model_paths`` maps the model variables' paths to their names. Keras 3 names
    a slot ``<optimizer>/<variable path with _ for />_<slot>``; Keras 2
    ``<Optimizer>/<slot>/<variable path>``.
    """
    rest = full.split("/", 1)[1] if "/" in full else full
    flat = sorted(((p.replace("/", "_"), n) for p, n in model_paths.items()),
                  key=lambda item: -len(item[0]))
    for key, name in flat:
        if rest.startswith(key + "_"):
            return f"optimizer/{name}/{rest[len(key) + 1:]}"
    for path, name in model_paths.items():
        if rest.endswith("/" + path):
            return f"optimizer/{name}/{rest[:-len(path) - 1]}"
    return f"optimizer/{rest}"


def optimizer_arrays(model: keras.Model, named: list[tuple[str, Any]]) -> dict[str, np.ndarray]:
    optimizer = optimizer_of(model)
    if optimizer is None:
        return {}
    paths = {getattr(v, "path", None) or v.name: n for n, v in named}
    taken: set[str] = set()
    return {unique(_optimizer_name(getattr(v, "path", None) or v.name, paths), taken): to_numpy(v)
            for v in optimizer.variables}
