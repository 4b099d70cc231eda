"""Architecture-only configs: JSON and YAML, Keras 3 and Keras 2.

``to_json`` is Keras' own ``model.to_json()``. ``to_yaml`` writes the same data as
plain YAML that ``yaml.safe_load`` reads. Reading accepts configs written by
Keras 2 (module-less class names, ``batch_input_shape``, YAML ``!!python/tuple``)
and refuses, without running anything, every other ``!!python/...`` tag and, in
safe mode, Lambda layers (their code would run when the model is built).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from kerasave._errors import CorruptArtifactError, UnsafeArtifactError, foreign_errors
from kerasave._runtime.lazy import keras
from kerasave._runtime.public import public
from kerasave._safety import (
    MAX_DEPTH,
    check_nesting,
    model_budget,
    refuse_code,
    refuse_oversized,
)
from kerasave.formats._base import require_config

__all__ = [
    "to_json",
    "model_from_json",
    "to_yaml",
    "model_from_yaml",
    "config_from_text",
    "model_from_config",
]

_PY_TAG = "tag:yaml.org,2002:python/"


_MAX_ALIASED = 100_000  # nodes aliases may add to a YAML document beyond its own


class _SafeKerasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus Keras 2's harmless ``!!python/tuple``, with budgets.

    PyYAML composes recursively and an alias is the anchored node itself, so a
    document of a few hundred bytes may nest past the stack (``[[[[...``) or, by
    aliases of aliases, stand for billions of nodes that every later walk visits
    (the "billion laughs"), or for a cycle (``&a [*a]``). Nesting is bounded while
    composing; the nodes aliases add are counted, without recursion, before
    anything is constructed.
    """

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._depth >= MAX_DEPTH:
            raise CorruptArtifactError(
                f"the YAML nests deeper than {MAX_DEPTH} levels")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """CorruptArtifactError for a YAML graph whose aliases expand it past the budget
    or make it cyclic (counted over the node graph, each node's expansion once)."""
    size: dict[int, int] = {}
    distinct = 0
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            continue
        if key in size:
            continue
        if key in on_path:
            raise CorruptArtifactError("the YAML refers to itself through an alias (a cycle)")
        on_path.add(key)
        distinct += 1
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise CorruptArtifactError("the YAML refers to itself through an alias "
                                           "(a cycle)")
            if id(child) not in size:
                stack.append((child, False))
    if size[id(root)] > distinct + max(_MAX_ALIASED, distinct):
        raise CorruptArtifactError(
            f"the YAML's aliases expand its {distinct:,} nodes to {size[id(root)]:,} (an alias "
            "bomb?)")


def _tuple(loader: yaml.SafeLoader, node: yaml.Node) -> list[Any]:
    return list(loader.construct_sequence(node, deep=True))  # type: ignore[arg-type]


def _refuse(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    raise UnsafeArtifactError(
        f"refusing the YAML tag !!python/{suffix} (line {node.start_mark.line + 1}): loading "
        "it would run Python code; only !!python/tuple is accepted"
    )


_SafeKerasLoader.add_constructor(_PY_TAG + "tuple", _tuple)
_SafeKerasLoader.add_multi_constructor(_PY_TAG, _refuse)
_SafeKerasLoader.add_multi_constructor("!python/", _refuse)


def to_json(model: keras.Model) -> str:
    """The model's architecture as JSON (Keras' ``model.to_json()``).

    Raises:
        NotSerializableError: a subclassed model without ``get_config``.
    """
    require_config(model)
    return model.to_json()


def to_yaml(model: keras.Model) -> str:
    """The model's architecture as YAML that ``yaml.safe_load`` reads (no python tags).

    Raises:
        NotSerializableError: a subclassed model without ``get_config``.
    """
    return yaml.safe_dump(require_config(model), sort_keys=False)


def config_from_text(text: str | bytes, *, kind: str, source: str | None = None) -> dict[str, Any]:
    """Parse JSON or YAML config text into a dict, refusing python tags."""
    with foreign_errors(source, f"not valid {kind.upper()}"):  # (an unknown YAML tag: refused)
        if kind == "json":
            config = json.loads(text)
        else:
            config = yaml.load(text, Loader=_SafeKerasLoader)  # noqa: S506 - our safe loader
    check_nesting(config, source)
    if not isinstance(config, dict) or "class_name" not in config or "config" not in config:
        raise CorruptArtifactError(
            f"expected a Keras model config (a mapping with 'class_name' and 'config'), "
            f"received {type(config).__name__}",
            path=source,
        )
    return config


def is_keras2(config: Mapping[str, Any]) -> bool:
    """A config written by Keras 2 (tf.keras): no module paths, or a 2.x version."""
    version = str(config.get("keras_version", ""))
    return version.startswith("2.") or "module" not in config


_RNN_CLASSES = frozenset({"LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D",
                          "ConvLSTM3D"})


def _upgrade_layer(layer: dict[str, Any]) -> Any:
    """Keras 2 layer config to what Keras 3 accepts; returns a dropped input shape."""
    inner = layer.get("config")
    if not isinstance(inner, dict):
        return None
    shape = inner.pop("batch_input_shape", None)
    if layer.get("class_name") in _RNN_CLASSES:
        inner.pop("time_major", None)  # Keras 2 only (always False from Keras itself)
    axis = inner.get("axis")
    if layer.get("class_name") == "BatchNormalization" and isinstance(axis, list) \
            and len(axis) == 1:
        inner["axis"] = int(axis[0])  # Keras 2 wrote [1]; Keras 3 takes an int
    if layer.get("class_name") == "InputLayer":
        if shape is not None:
            inner.setdefault("batch_shape", shape)
        if not inner.get("ragged"):
            inner.pop("ragged", None)
        return None
    return shape


def upgrade_keras2(node: Any) -> Any:
    """Rewrite a Keras 2 config in place: ``batch_input_shape`` becomes an input layer."""
    if isinstance(node, list):
        for item in node:
            upgrade_keras2(item)
        return node
    if not isinstance(node, dict):
        return node
    if "class_name" in node and isinstance(node.get("config"), (dict, list)):
        inner = node["config"]
        layers = inner.get("layers") if isinstance(inner, dict) else inner
        if node["class_name"] == "Sequential" and isinstance(layers, list):
            upgraded = []
            for i, layer in enumerate(layers):
                shape = _upgrade_layer(layer) if isinstance(layer, dict) else None
                if shape is not None and i == 0:
                    upgraded.append({"class_name": "InputLayer", "config": {
                        "batch_shape": shape,
                        "dtype": layer["config"].get("dtype", "float32"),
                        "name": f"{layer['config'].get('name', 'layer')}_input"}})
                upgraded.append(layer)
            if isinstance(inner, dict):
                inner["layers"] = upgraded
            else:
                node["config"] = {"name": node.get("name", "sequential"), "layers": upgraded}
        else:
            _upgrade_layer(node)
    for value in node.values():
        upgrade_keras2(value)
    return node


def _deserialize(config: dict[str, Any], custom_objects: Mapping[str, Any] | None, *,
                 safe_mode: bool = True) -> Any:
    if is_keras2(config):
        from kerasave._fastpaths.legacy import keras2_model

        return keras2_model(upgrade_keras2(json.loads(json.dumps(config))), custom_objects,
                            safe_mode=safe_mode)
    return keras.saving.deserialize_keras_object(
        config, custom_objects=dict(custom_objects or {}), safe_mode=safe_mode)


def model_from_config(
    config: dict[str, Any],
    *,
    custom_objects: Mapping[str, Any] | None = None,
    safe_mode: bool = True,
    source: str | None = None,
    backed: int | None = None,
) -> keras.Model:
    """A freshly initialized, uncompiled model from a Keras 3 or Keras 2 config dict.

    ``backed``: the bytes of weights the file holding the config declares (its
    variables must come from them); None for a config alone. Either way the bytes of
    variables the config declares are counted before any is created
    (``_safety.refuse_oversized``).
    """
    check_nesting(config, source)
    if safe_mode:
        refuse_code(config, source, compiled=False)  # (its compile settings are dropped)
    config = dict(config)
    config.pop("compile_config", None)
    with foreign_errors(source, "not a loadable Keras config", at="config"):
        refuse_oversized(lambda dry: _deserialize(dry, custom_objects, safe_mode=safe_mode),
                         config, model_budget(backed), source)
        model = _deserialize(config, custom_objects, safe_mode=safe_mode)
    if not isinstance(model, keras.Model):
        raise CorruptArtifactError(
            f"the config describes a {type(model).__name__}, not a model", path=source
        )
    return model


def model_from_json(
    text: str | bytes,
    *,
    custom_objects: Mapping[str, Any] | None = None,
    safe_mode: bool = True,
) -> keras.Model:
    """A freshly initialized, uncompiled model from JSON (Keras 3 or Keras 2).

    Examples:
        >>> from kerasave import reference_model
        >>> model = reference_model()
        >>> fresh = model_from_json(to_json(model))
        >>> [w.shape for w in fresh.weights] == [w.shape for w in model.weights]
        True
    """
    config = config_from_text(text, kind="json")
    return model_from_config(config, custom_objects=custom_objects, safe_mode=safe_mode)


def model_from_yaml(
    text: str | bytes,
    *,
    custom_objects: Mapping[str, Any] | None = None,
    safe_mode: bool = True,
) -> keras.Model:
    """A freshly initialized, uncompiled model from YAML (kerasave's, or Keras 2's).

    Raises:
        UnsafeArtifactError: a ``!!python/...`` tag other than ``tuple``; nothing runs.
    """
    config = config_from_text(text, kind="yaml")
    return model_from_config(config, custom_objects=custom_objects, safe_mode=safe_mode)


public(model_from_json, model_from_yaml, to_json, to_yaml)
