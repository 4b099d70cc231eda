"""Probe inputs: a small deterministic batch that fits a model's inputs.

Every verification that runs a model (predictions of a whole model, a SavedModel's
serving function) feeds it a probe batch. The batch follows each input's dtype and
shape (strings, integers, booleans, floats), and, where a layer that consumes the
input says what it accepts, its vocabulary or range: a ``StringLookup``'s or
``TextVectorization``'s words, an ``IntegerLookup``'s values, an ``Embedding``'s
``input_dim``, a ``CategoryEncoding``'s ``num_tokens``. A probe that hits only
out-of-vocabulary tokens or zeros would prove little about the tables behind them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasave._runtime.lazy import keras

__all__ = ["PROBE_BATCH", "probe_inputs", "sublayers"]

PROBE_BATCH = 4
_SEQUENCE = 4  # an unknown dimension other than the batch's


class _Spec:
    """A leaf for keras.tree: one input's shape, dtype and (when known) its tensor."""

    def __init__(self, shape: Sequence[int | None], dtype: str, tensor: Any = None) -> None:
        self.shape = tuple(shape)
        self.dtype = dtype
        self.tensor = tensor


def _is_shape(s: Any) -> bool:
    return isinstance(s, (list, tuple)) and all(d is None or isinstance(d, int) for d in s)


def _input_specs(model: keras.Model) -> Any:
    try:  # a functional or Sequential model's symbolic inputs, in their structure
        inputs = model.input
    except Exception:  # (a Sequential never called has only ``inputs``; subclassed: none)
        try:
            inputs = model.inputs
        except Exception:
            inputs = None
        if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
            inputs = inputs[0]
    leaves = keras.tree.flatten(inputs) if inputs is not None else []
    if leaves and all(isinstance(t, keras.KerasTensor) for t in leaves):
        return keras.tree.map_structure(lambda t: _Spec(t.shape, str(t.dtype), t), inputs)
    shape = (model.get_build_config() or {}).get("input_shape")
    if shape is None:
        return None
    if _is_shape(shape):
        return _Spec(shape, "float32")
    return keras.tree.map_shape_structure(lambda s: _Spec(s, "float32"), shape)


def sublayers(model: Any) -> list[Any]:
    """Every layer inside ``model`` (not itself), found by walking its attributes,
    lists, tuples and dicts the way Keras' own saving walks them."""
    found: list[Any] = []
    seen = {id(model)}
    stack = [model]
    while stack:
        obj = stack.pop()
        try:
            children = (list(vars(obj).values()) if isinstance(obj, keras.layers.Layer)
                        else list(obj.values()) if isinstance(obj, dict) else list(obj))
        except Exception:
            continue
        for child in reversed(children):
            if id(child) in seen:
                continue
            if isinstance(child, keras.layers.Layer):
                seen.add(id(child))
                found.append(child)
                stack.append(child)
            elif isinstance(child, (list, tuple, dict)) and not isinstance(child, str):
                seen.add(id(child))
                stack.append(child)
    return found


def _consumers(model: keras.Model, tensor: Any) -> list[Any]:
    """The layers that take ``tensor`` (a model input) as their input."""
    out = []
    for layer in getattr(model, "layers", []):
        try:
            given = keras.tree.flatten(layer.input)
        except Exception:  # (no single inbound node, or not called symbolically)
            continue
        if any(t is tensor for t in given):
            out.append(layer)
    return out


def _readers(model: keras.Model, tensor: Any) -> list[Any]:
    """The layers that read the model input ``tensor`` first (inside a nested model
    that takes it: the nested model's own first readers)."""
    found = []
    for layer in _consumers(model, tensor):
        inner = getattr(layer, "inputs", None) if isinstance(layer, keras.Model) else None
        leaves = keras.tree.flatten(inner) if inner else []
        if len(leaves) == 1 and isinstance(leaves[0], keras.KerasTensor):
            found += _readers(layer, leaves[0]) or [layer]
        else:
            found.append(layer)
    return found


def _vocabulary(layer: Any) -> list[Any]:
    try:
        words = list(layer.get_vocabulary())
    except Exception:
        return []
    special = {getattr(layer, "mask_token", None), getattr(layer, "oov_token", None)}
    return [w for w in words if w not in special and w not in ("", "[UNK]")]


def _strings(layers: list[Any], size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    words: list[str] = []
    sentences = False
    for layer in layers:
        if isinstance(layer, (keras.layers.StringLookup, keras.layers.TextVectorization)):
            words += [str(w) for w in _vocabulary(layer)]
            sentences |= isinstance(layer, keras.layers.TextVectorization)
    words = [w for w in dict.fromkeys(words) if w] or ["a", "b", "c"]
    picks = rng.integers(0, len(words), size=size + ((2,) if sentences else ()))
    chosen = np.asarray(words, dtype=object)[picks]
    if sentences:
        chosen = np.vectorize(lambda a, b: f"{a} {b}", otypes=[object])(chosen[..., 0],
                                                                         chosen[..., 1])
    return chosen.astype(str)


def _integers(layers: list[Any], size: tuple[int, ...], dtype: str,
              rng: np.random.Generator) -> np.ndarray:
    values: list[int] = []
    bound = None
    for layer in layers:
        if isinstance(layer, keras.layers.IntegerLookup):
            values += [int(v) for v in _vocabulary(layer)]
        limit = (getattr(layer, "input_dim", None) if isinstance(layer, keras.layers.Embedding)
                 else getattr(layer, "num_tokens", None)
                 if isinstance(layer, keras.layers.CategoryEncoding) else None)
        if isinstance(limit, int) and limit > 0:
            bound = limit if bound is None else min(bound, limit)
    if values:
        return np.asarray(values, dtype=dtype)[rng.integers(0, len(values), size=size)]
    return rng.integers(0, bound or 2, size=size).astype(dtype)


def probe_inputs(model: keras.Model, *, seed: int = 1234) -> Any:
    """A small deterministic batch that fits the model's inputs, or None when the
    model says nothing about them (a subclassed model never built)."""
    specs = _input_specs(model)
    if specs is None:
        return None
    rng = np.random.default_rng(seed)

    def make(spec: _Spec) -> np.ndarray:
        size = tuple(PROBE_BATCH if d is None and i == 0 else _SEQUENCE if d is None else d
                     for i, d in enumerate(spec.shape))
        layers = _readers(model, spec.tensor) if spec.tensor is not None else []
        layers = layers or sublayers(model)
        dtype = spec.dtype
        if dtype == "string":
            return _strings(layers, size, rng)
        if dtype == "bool":
            return rng.integers(0, 2, size=size).astype(bool)
        if "int" in dtype:
            return _integers(layers, size, dtype, rng)
        return rng.random(size, dtype=np.float32).astype(dtype)

    return keras.tree.map_structure(make, specs)
