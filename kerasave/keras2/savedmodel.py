"""Keras 2 SavedModel directories (tf.keras ``model.save('dir')``), loaded as Keras 3 models.

Keras 2's default whole-model format is a SavedModel with a ``keras_metadata.pb``
beside ``saved_model.pb``: for every saved Keras object, a JSON record of its
class, config, build shapes and (for the model) ``training_config``. Keras 3 only
offers ``TFSMLayer`` on it, inference only. kerasave rebuilds the model from the
recorded config (upgraded from Keras 2 as for ``.h5``), compiles it from the
training config, and reads the weights and the optimizer state from the
directory's ``variables/variables`` checkpoint, paired by Keras 2's layout
(``formats.keras2``), all or nothing. No code in the directory is run: the traced
functions in ``saved_model.pb`` are never loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kerasave._errors import CorruptArtifactError, NotSerializableError, foreign_errors
from kerasave._report import Check
from kerasave._runtime.lazy import keras
from kerasave.formats import _pairing
from kerasave.formats._tf import protowire as _protowire
from kerasave.formats._tf.graph import read_graph
from kerasave.formats._tf.tfindex import tensor_loader
from kerasave.formats.configtext import model_from_config
from kerasave.formats.h5model import compile_from_training
from kerasave.keras2 import checkpoint as keras2

__all__ = ["METADATA", "is_keras2", "root_metadata", "load", "check", "describe", "left_out"]

METADATA = "keras_metadata.pb"


def is_keras2(path: Path) -> bool:
    """Whether a SavedModel directory was written by Keras 2 (has ``keras_metadata.pb``)."""
    return (path / METADATA).is_file()


def root_metadata(path: Path) -> dict[str, Any]:
    """The JSON Keras 2 recorded for the saved model itself (the node at ``root``)."""
    with foreign_errors(path, f"unreadable {METADATA}"):
        saved = _protowire.saved_metadata((path / METADATA).read_bytes())
    for node in saved.nodes:
        if node.node_path == "root":
            with foreign_errors(path, f"{METADATA}: the model's record is not JSON"):
                found = json.loads(node.metadata)
            if isinstance(found, dict):
                return found
    raise CorruptArtifactError(f"{METADATA} records no model (no node at 'root')", path=path)


def _plain(node: Any) -> Any:
    """The metadata's JSON with Keras 2's tagged tuples and shapes as plain lists
    (``{"class_name": "__tuple__", "items": [...]}``, the same for ``TensorShape``)."""
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if isinstance(node, dict):
        if node.get("class_name") in ("__tuple__", "TensorShape") and set(node) <= {
                "class_name", "items"}:
            return [_plain(item) for item in node.get("items") or []]
        return {key: _plain(value) for key, value in node.items()}
    return node


def _config(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    config = meta.get("model_config")
    if not isinstance(config, dict) and isinstance(meta.get("config"), dict):
        config = {"class_name": meta.get("class_name"), "config": meta["config"]}
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict) or (
            not meta.get("is_graph_network", True) and not config["config"].get("layers")):
        raise NotSerializableError(
            f"Keras 2 saved a subclassed model ({meta.get('class_name')}) without a config "
            "Keras 3 can rebuild it from: build the model in code, then "
            f"kerasave.load_weights(model, '{path / 'variables' / 'variables'}')", path=path)
    return dict(_plain(config), keras_version=str(meta.get("keras_version") or "2"))


def _variables(path: Path) -> Path:
    prefix = path / "variables" / "variables"
    if not prefix.with_name("variables.index").is_file():
        raise CorruptArtifactError("a SavedModel without variables/variables.index", path=path)
    return prefix


def load(path: Path, *, compile: bool = True, safe_mode: bool = True,
         custom_objects: Any = None, checksummed: bool = False) -> keras.Model:
    """The Keras 3 model a Keras 2 SavedModel describes, compiled as it was saved,
    with every weight and (where saved) the optimizer state."""
    meta = root_metadata(path)
    backed = sum(p.stat().st_size for p in (path / "variables").glob("variables.data-*"))
    model = model_from_config(_config(meta, path), custom_objects=custom_objects,
                              safe_mode=safe_mode, source=str(path), backed=backed)
    training = _plain(meta.get("training_config")) if compile else None
    if isinstance(training, dict) and training.get("optimizer_config"):
        compile_from_training(model, training, path, custom_objects)
    prefix = _variables(path)
    reader = _pairing.checked_reader(prefix)
    graph = read_graph(reader, prefix)
    _pairing.prepare(model, None, {}, path, graph, reader, prefix)
    pairing = _pairing.pair_checkpoint(model, prefix, reader, graph=graph)
    _pairing.stage_and_assign(pairing, reader, path, tensor_loader(
        prefix, reader, checksummed=checksummed))
    return model


def check(model: keras.Model, path: Path) -> list[Check]:
    """Verification: the directory's variables against ``model``'s, bit for bit."""
    prefix = _variables(path)
    reader = _pairing.checked_reader(prefix)
    return _pairing.compare_pairing(_pairing.pair_checkpoint(model, prefix, reader), reader)


def left_out(path: Path) -> dict[str, str]:
    """The directory's stored tensors a load leaves out on purpose, by key: the
    metric totals Keras 2 kept under ``keras_api`` (the last epoch's running
    sums, not model state) and OptimizerV2's hyperparameters (``beta_1``,
    ``decay``...: the Keras 3 optimizer's config holds them)."""
    prefix = _variables(path)
    graph, _, _ = _pairing.listed(prefix)
    found: dict[str, str] = {}
    for node in graph.nodes:
        for child in node.children:
            if child.local_name != "keras_api":
                continue
            for name, start in graph.children(child.node_id).items():
                if name not in ("metrics", "layer_metrics"):
                    continue
                for nid in graph.reach(start):
                    for attr in graph.nodes[nid].attributes:
                        found.setdefault(attr.checkpoint_key, "Keras 2 metric totals")
    opt = keras2.optimizer_node(graph, 0)
    if keras2.generation(graph, opt) == keras2.OPTIMIZER_V2:
        slots = {s.slot_variable_node_id for s in graph.nodes[opt].slot_variables}
        for name, nid in graph.children(opt).items():  # type: ignore[arg-type]  # (a V2 optimizer)
            if nid not in slots and name not in ("iter", "learning_rate"):
                for attr in graph.nodes[nid].attributes:
                    found[attr.checkpoint_key] = "OptimizerV2 hyperparameters"
    return found


def describe(path: Path) -> tuple[dict[str, str], bool]:
    """``inspect``'s versions (Keras 2's and the optimizer generation) and whether the
    directory holds optimizer state."""
    meta = root_metadata(path)
    prefix = _variables(path)
    graph, _, _ = _pairing.listed(prefix)
    versions = {"keras": str(meta.get("keras_version") or "2.x") + " (tf.keras)"}
    gen = keras2.generation(graph, keras2.optimizer_node(graph, 0))
    if gen:
        versions["optimizer"] = gen
    return versions, gen is not None
