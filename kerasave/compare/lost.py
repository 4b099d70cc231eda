"""What a format would lose of a model, said before anything is written.

Keras keeps a layer's state in four places: its config, its variables, what its
``save_own_variables`` stores, and what its ``save_assets`` writes (a lookup
layer's vocabulary). Stateful RNN layers keep a fifth, their states, which no
Keras format holds. A format that cannot hold a piece of state the model has
would give back a different model: kerasave refuses the save and names the layer
(``NotSerializableError``), where Keras would save and lose it silently.
"""

from __future__ import annotations

import filecmp
import os
import tempfile
from pathlib import Path
from typing import Any

from kerasave._errors import NotSerializableError
from kerasave._runtime.lazy import keras
from kerasave.compare.probes import sublayers
from kerasave.compare.verify import to_numpy

__all__ = ["refuse_rnn_states", "refuse_assets"]


def _name(layer: Any) -> str:
    return f"{type(layer).__name__} {getattr(layer, 'path', None) or layer.name!r}"


def live_rnn_states(model: keras.Model) -> list[Any]:
    """The stateful RNN layers whose states are not all zero (what a fresh model
    starts from)."""
    found = []
    for layer in sublayers(model):
        if not (isinstance(layer, keras.layers.RNN) and getattr(layer, "stateful", False)):
            continue
        states = getattr(layer, "states", None)
        if states is not None and any(to_numpy(v).any() for v in keras.tree.flatten(states)):
            found.append(layer)
    return found


def refuse_rnn_states(model: keras.Model, path: Path, fmt: str) -> None:
    """NotSerializableError when a stateful RNN layer holds states (a format that does
    not hold them would load with zeros, and predict something else)."""
    layers = live_rnn_states(model)
    if layers:
        names = ", ".join(_name(layer) for layer in layers[:3])
        raise NotSerializableError(
            f"the stateful {names} holds RNN states (its last batch's) that the {fmt} format "
            "cannot hold: the loaded model would start from zeros and predict something "
            "else; reset them first (the layer's reset_state()), or save a checkpoint "
            "(save_weights to a prefix), which holds them",
            path=path)


def _writes_assets(layer: Any) -> bool:
    return getattr(type(layer), "save_assets", None) is not getattr(
        keras.layers.Layer, "save_assets", None)


def _assets(layer: Any, where: str) -> None:
    os.makedirs(where, exist_ok=True)
    layer.save_assets(where)


def _same_tree(a: str, b: str) -> bool:
    names = sorted(os.listdir(a)), sorted(os.listdir(b))
    if names[0] != names[1]:
        return False
    for name in names[0]:
        x, y = os.path.join(a, name), os.path.join(b, name)
        if os.path.isdir(x) != os.path.isdir(y):
            return False
        if os.path.isdir(x) and not _same_tree(x, y):
            return False
        if os.path.isfile(x) and not filecmp.cmp(x, y, shallow=False):
            return False
    return True


def config_losses(model: keras.Model) -> list[Any]:
    """The layers whose assets (``save_assets``: a lookup layer's vocabulary from
    ``adapt``) a layer rebuilt from their config does not write alike."""
    lost: list[Any] = []
    inside: set[int] = set()
    for layer in sublayers(model):
        if id(layer) in inside or not _writes_assets(layer):
            continue
        try:
            twin = type(layer).from_config(layer.get_config())
            build = layer.get_build_config() if layer.built else None
            if build:  # (built as the layer is: a layer may make its assets in build())
                twin.build_from_config(build)
        except Exception:  # (the round trip of the whole config says why)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                _assets(layer, os.path.join(tmp, "a"))
            except Exception:
                continue  # (nothing it can write: nothing to lose)
            try:
                _assets(twin, os.path.join(tmp, "b"))
                same = _same_tree(os.path.join(tmp, "a"), os.path.join(tmp, "b"))
            except Exception:
                same = False
        if not same:
            lost.append(layer)
            inside |= {id(sub) for sub in sublayers(layer)}
    return lost


def refuse_assets(model: keras.Model, path: Path, fmt: str) -> None:
    """NotSerializableError when a layer keeps state its config does not hold and a
    format without assets would lose (see ``config_losses``)."""
    layers = config_losses(model)
    if layers:
        names = ", ".join(_name(layer) for layer in layers[:3])
        raise NotSerializableError(
            f"{names} keeps state its config does not hold (what it saves as assets, such "
            f"as a vocabulary from adapt()), and the {fmt} format has no place for it: the "
            "loaded model would not have it; save as .keras, which holds it",
            path=path)
