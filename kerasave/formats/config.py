"""Architecture-only configs on disk: ``.json`` and ``.yaml``/``.yml``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kerasave._errors import foreign_errors
from kerasave._report import Check
from kerasave._runtime.lazy import keras
from kerasave.compare.lost import refuse_assets, refuse_rnn_states
from kerasave.compare.state import transfer_values
from kerasave.compare.verify import (
    compare_configs,
    compare_outputs,
    guarded,
    matched,
    model_config,
    probe_inputs,
)
from kerasave.formats._base import (
    ConfigFormat,
    Contents,
    ReadArray,
    no_arrays,
    require_config,
    versions_now,
)
from kerasave.formats.configtext import config_from_text, model_from_config, to_json, to_yaml
from kerasave.formats.h5sharded import is_json_object, is_shard_map

__all__ = ["JsonHandler", "YamlHandler"]


def _architecture(config: dict[str, Any]) -> dict[str, Any]:
    """What a config-only format promises to keep: everything but compile settings."""
    return {k: v for k, v in config.items() if k != "compile_config"}


def _stamped(config: dict[str, Any]) -> dict[str, Any]:
    """The config with the versions that wrote it, as Keras 2 files carried them."""
    versions = versions_now()
    return {**config, "keras_version": versions["keras"], "backend": keras.backend.backend()}


class _ConfigHandler(ConfigFormat):
    array_names = "no arrays"

    def preflight(self, model: keras.Model, path: Path) -> None:
        require_config(model, path)
        refuse_rnn_states(model, path, self.name)
        refuse_assets(model, path, self.name)

    def text(self, model: keras.Model) -> str:
        raise NotImplementedError

    def write(self, model: keras.Model, path: Path) -> None:
        path.write_text(self.text(model), encoding="utf-8")

    def read(self, path: Path) -> dict[str, Any]:
        with foreign_errors(path, "unreadable config file"):
            text = path.read_text(encoding="utf-8")
        return config_from_text(text, kind=self.name, source=str(path))

    def load(self, path: Path, *, custom_objects: Any = None,
             safe_mode: bool = True) -> keras.Model:
        return model_from_config(self.read(path), custom_objects=custom_objects,
                                 safe_mode=safe_mode, source=str(path))

    def check(self, model: keras.Model, path: Path, *, own: bool = False) -> list[Check]:
        # (``own`` changes nothing: a config is read the same way whoever wrote it.)
        try:
            fresh = self.load(path)
        except Exception as exc:  # any failure to rebuild is a failed check
            return [Check("rebuild", False, f"{type(exc).__name__}: {exc}")]
        checks = [Check("rebuild", True, f"a fresh {type(fresh).__name__} from the file")]
        checks.append(compare_configs("config", _architecture(model_config(model)),
                                      _architecture(model_config(fresh))))
        pairs = matched(model.weights, fresh.weights)  # (by path: float8 reorders)
        want = [(tuple(v.shape), str(v.dtype)) for v, _ in pairs]
        got = [(tuple(v.shape), str(v.dtype)) for _, v in pairs]
        if len(model.weights) == len(fresh.weights) and want == got:
            checks.append(Check("variable shapes", True,
                                f"{len(want)} variables with the same shapes and dtypes"))
        elif len(model.weights) != len(fresh.weights):
            checks.append(Check("variable shapes", False,
                                f"rebuilt {len(fresh.weights)} variables, expected "
                                f"{len(model.weights)}"))
            return checks
        else:
            checks.append(Check("variable shapes", False, f"rebuilt {got}, expected {want}"))
            return checks
        checks += guarded("predictions", lambda: [_same_function(model, fresh)])
        return checks

    def contents(self, path: Path) -> Contents:
        version = self.read(path).get("keras_version")
        return Contents((), False, {"keras": str(version)} if version else {})

    def arrays(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        return iter(())  # an architecture holds no arrays

    def reader(self, path: Path) -> contextlib.AbstractContextManager[ReadArray]:
        return no_arrays()

    def sniff(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in self.suffixes


def _same_function(model: keras.Model, fresh: keras.Model) -> Check:
    """The rebuilt model, given the model's values as a Keras weights file gives them
    (``transfer_values``), computes what the model computes on a probe batch: what
    its config would make of them is all a config-only format holds."""
    probe = probe_inputs(model) if model.built else None
    if probe is None:
        return Check("predictions", True, "skipped: no input shapes to probe with")
    transfer_values(model, fresh)
    return compare_outputs("predictions", model(probe, training=False),
                           lambda: fresh(probe, training=False))


class JsonHandler(_ConfigHandler):
    name = "json"
    suffixes = (".json",)
    temp_suffix = ".json"

    def sniff(self, path: Path) -> bool:
        # The map of sharded HDF5 weights is a .json file too: not a config. Under
        # that format's own name (.weights.json) only a JSON object that is no map is
        # a config; anything else there is a damaged map.
        if not super().sniff(path) or is_shard_map(path):
            return False
        return not path.name.lower().endswith(".weights.json") or is_json_object(path)

    def text(self, model: keras.Model) -> str:
        return json.dumps(_stamped(json.loads(to_json(model))), indent=2) + "\n"


class YamlHandler(_ConfigHandler):
    name = "yaml"
    suffixes = (".yaml", ".yml")
    temp_suffix = ".yaml"

    def text(self, model: keras.Model) -> str:
        return yaml.safe_dump(_stamped(yaml.safe_load(to_yaml(model))), sort_keys=False)
