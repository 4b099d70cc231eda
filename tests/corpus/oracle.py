"""The native oracle: one model through one format, by kerasave and by Keras itself.

For a (model, format) pair, ``run_pair`` saves the model with kerasave and reads
it back into a fresh model, then does the same with Keras' (and TensorFlow's) own
calls for that format, and judges both the same way:

- **exact**: a fresh model after the load has every variable bit-equal to the
  original's (paired by path, by position where a fresh model's automatic layer
  names differ) and gives bit-equal predictions on the case's inputs; formats
  that hold optimizer state (checkpoint, HDF5 weights, ``.keras``, legacy
  ``.h5``) must give the optimizer's back too, and a config-only format a
  model that, given the original's values, predicts the same (and is built
  exactly when the original was); a SavedModel's serving function must give the
  original's (graph-mode) outputs.
- Keras: **lossy** (it loads, but something differs: said how) or **fails**
  (its save or load raises).
- kerasave: **refused** (a ``KerasaveError``, nothing left at the path, the
  model unchanged) or **broken** (anything else: a raw error, a save that
  changed the model, a save reported ok that does not load exactly).

Random-generator states (Dropout's, recurrent dropout's) are not compared for
exactness: no Keras format holds them (a loaded model has new seeds) and they
change nothing a model predicts; a kerasave save must still leave them as they
were, like every other piece of state (``state_of``).

The same pair's Keras and kerasave runs share the model: kerasave runs first on
the untouched model (and must leave it so); Keras' own calls run last (its
legacy ``.h5`` writer changes the caller's compile settings).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import yaml

import kerasave as ks
from kerasave._errors import first_line
from kerasave.formats import by_label, formats
from tests.corpus.models import Case

__all__ = ["FORMATS", "Outcome", "Pair", "run_pair", "state_of", "verdict"]

#: The classic formats of the format table (``kerasave.testing.FORMATS``' first seven).
FORMATS = tuple(f.label for f in formats(lambda f: f.classic))
_NAMES = {f.label: f.named("model") for f in formats(lambda f: f.classic)}

@dataclass(frozen=True)
class Outcome:
    status: str  # kerasave: exact | refused | broken; Keras: exact | lossy | fails
    detail: str = ""

    def __str__(self) -> str:
        return self.status + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Pair:
    case: str
    format: str
    kerasave: Outcome
    keras: Outcome


def verdict(pair: Pair) -> str | None:
    """None when kerasave is never worse than Keras for the pair, else why it is."""
    if pair.kerasave.status == "broken":
        return f"kerasave is broken: {pair.kerasave.detail}"
    if pair.keras.status == "exact" and pair.kerasave.status != "exact":
        return f"Keras round-trips exactly, kerasave {pair.kerasave}"
    return None


# -- state, values, predictions ------------------------------------------------------------

def _value(variable: Any) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable), copy=True)


def _sublayers(model: keras.Model) -> list[Any]:
    return list(model._flatten_layers(include_self=False, recursive=True))


def _rnn_states(model: keras.Model) -> list[Any]:
    states = []
    for layer in _sublayers(model):
        if isinstance(layer, keras.layers.RNN) and layer.stateful and layer.states is not None:
            states += list(keras.tree.flatten(layer.states))
    return states


def _optimizer(model: keras.Model) -> Any:
    opt = getattr(model, "optimizer", None)
    return opt if isinstance(opt, keras.optimizers.Optimizer) else None


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def state_of(model: keras.Model) -> dict[str, Any]:
    """Everything a save could change about a model, by name: every variable
    (random-generator states included), the optimizer's, the metrics', stateful
    RNN states, whether things are built, the compile settings and the config."""
    found: dict[str, Any] = {"built": model.built}
    for i, v in enumerate(model.variables):
        found[f"variable {v.path} #{i}"] = _value(v)
    opt = _optimizer(model)
    if opt is not None:
        found["optimizer built"] = opt.built
        for i, v in enumerate(opt.variables):
            found[f"optimizer variable {v.path} #{i}"] = _value(v)
    with contextlib.suppress(Exception):
        for i, v in enumerate(model.metrics_variables):
            found[f"metric variable {v.path} #{i}"] = _value(v)
    for i, v in enumerate(_rnn_states(model)):
        found[f"rnn state #{i}"] = _value(v)
    with contextlib.suppress(Exception):
        found["compile config"] = _dump(model.get_compile_config())
    with contextlib.suppress(Exception):
        found["config"] = _dump(model.get_config())
    for layer in _sublayers(model):
        found[f"layer {layer.path} built"] = layer.built
        found[f"layer {layer.path} policy"] = repr(layer.dtype_policy)
    return found


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            out.append(f"{key} gone")
        elif key not in before:
            out.append(f"{key} new")
        else:
            a, b = before[key], after[key]
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                same = (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                        and a.dtype == b.dtype and a.shape == b.shape
                        and a.tobytes() == b.tobytes())
            else:
                same = a == b
            if not same:
                out.append(f"{key} changed")
    return out


def _outputs(result: Any) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(t), copy=True)
            for t in keras.tree.flatten(result)]


def predict(model: keras.Model, x: Any, *, graph: bool = False) -> list[np.ndarray]:
    """``model(x, training=False)`` (``graph``: traced), stateful RNN states put back."""
    states = [(v, _value(v)) for v in _rnn_states(model)]
    try:
        if graph:
            return _outputs(tf.function(lambda p: model(p, training=False))(x))
        return _outputs(model(x, training=False))
    finally:
        for v, value in states:
            v.assign(value)


def _difference(label: str, expected: np.ndarray, actual: np.ndarray) -> str | None:
    if expected.dtype != actual.dtype or expected.shape != actual.shape:
        return f"{label}: {actual.dtype}{list(actual.shape)}, expected " \
               f"{expected.dtype}{list(expected.shape)}"
    if expected.tobytes() != actual.tobytes():
        return f"{label} differs"
    return None


def _pairs(expected: list[tuple[str, np.ndarray]], actual: list[Any]) -> \
        list[tuple[str, np.ndarray, Any]] | str:
    """Expected values with the variables they belong to: by path when both sides
    have the same paths, else by position."""
    if len(expected) != len(actual):
        return f"{len(actual)} variables, expected {len(expected)}"
    paths = [p for p, _ in expected]
    by_path = {v.path: v for v in actual}
    if len(set(paths)) == len(paths) and set(paths) == set(by_path):
        return [(p, e, by_path[p]) for p, e in expected]
    return [(p, e, v) for (p, e), v in zip(expected, actual)]


def _compare_variables(what: str, expected: list[tuple[str, np.ndarray]],
                       actual: list[Any]) -> list[str]:
    pairs = _pairs(expected, actual)
    if isinstance(pairs, str):
        return [f"{what}: {pairs}"]
    found = [d for p, e, v in pairs if (d := _difference(p, e, _value(v)))]
    return [f"{what}: " + "; ".join(found[:2]) + (" ..." if len(found) > 2 else "")] \
        if found else []


class Reference:
    """The model as it was before anything saved it."""

    def __init__(self, case: Case, model: keras.Model, fmt: str, tmp: Path) -> None:
        self.built = model.built
        # What a config-only artifact is given its values from: the model's own
        # weights file, as a user of model_from_json would load it (Keras' load runs
        # each layer's load_own_variables, e.g. Normalization's finalize_state).
        self.weights_file = None
        if fmt in ("json", "yaml") and model.built:
            tmp.mkdir(parents=True, exist_ok=True)
            self.weights_file = tmp / "reference.weights.h5"
            try:
                model.save_weights(str(self.weights_file))
            except Exception:
                self.weights_file = None
        self.weights = [(v.path, _value(v)) for v in model.weights]
        opt = _optimizer(model)
        self.optimizer = None if opt is None else [(v.path, _value(v)) for v in opt.variables]
        self.optimizer_config = None if opt is None else _dump(opt.get_config())
        self.x = case.inputs() if case.inputs is not None and model.built else None
        self.predictions = None if self.x is None else predict(model, self.x,
                                                               graph=fmt == "savedmodel")
        self.state = state_of(model)
        try:
            self.config = json.loads(model.to_json())
        except Exception:
            self.config = None


def _judge_predictions(ref: Reference, actual: list[np.ndarray] | None) -> list[str]:
    if ref.predictions is None:
        return []
    if actual is None or len(actual) != len(ref.predictions):
        return ["predictions: a different number of outputs"]
    found = [d for i, (e, a) in enumerate(zip(ref.predictions, actual))
             if (d := _difference(f"output {i}", e, a))]
    return [f"predictions: {found[0]}"] if found else []


def _judge_optimizer(ref: Reference, loaded: keras.Model, whole: bool) -> list[str]:
    """``whole``: the optimizer came from the artifact too (not only its values)."""
    if ref.optimizer is None:
        return []
    opt = _optimizer(loaded)
    if opt is None:
        return ["optimizer: none after loading"]
    if whole and _dump(opt.get_config()) != ref.optimizer_config:
        return ["optimizer: another configuration"]
    variables = list(opt.variables)
    if len(variables) > len(ref.optimizer):  # saved unbuilt: fresh slots must be zero
        by_path = {v.path: v for v in variables}
        if not all(p in by_path for p, _ in ref.optimizer):
            return [f"optimizer: {len(variables)} variables, expected {len(ref.optimizer)}"]
        kept = {p for p, _ in ref.optimizer}
        if any(np.any(_value(v)) for v in variables if v.path not in kept):
            return ["optimizer: new slots are not zero"]
        variables = [by_path[p] for p, _ in ref.optimizer]
    return _compare_variables("optimizer", ref.optimizer, variables)


def judge_model(ref: Reference, loaded: keras.Model, *, whole: bool) -> list[str]:
    """A model loaded from a whole-model (``whole``) or weights artifact, against the
    reference."""
    if bool(loaded.built) != ref.built:
        return [f"built={loaded.built}, expected {ref.built}"]
    found = _compare_variables("variables", ref.weights, list(loaded.weights))
    found += _judge_optimizer(ref, loaded, whole)
    if ref.x is not None and not found:
        found += _judge_predictions(ref, predict(loaded, ref.x))
    return found


def judge_config(ref: Reference, rebuilt: keras.Model) -> list[str]:
    """A model rebuilt from a config-only artifact: given the original's values (its
    weights file, through Keras' ``load_weights``), it must predict what the original
    predicts (an unbuilt one: have the same config)."""
    if bool(rebuilt.built) != ref.built:
        return [f"built={rebuilt.built}, expected {ref.built}"]
    if not ref.built:  # (the architecture: a config-only format has no compile settings)
        again = json.loads(rebuilt.to_json())
        again.pop("compile_config", None)
        original = dict(ref.config or {})
        original.pop("compile_config", None)
        return [] if _dump(again) == _dump(original) else ["config differs"]
    pairs = _pairs(ref.weights, list(rebuilt.weights))
    if isinstance(pairs, str):
        return [f"variables: {pairs}"]
    bad = [p for p, e, v in pairs if (tuple(v.shape), np.dtype(v.dtype)) != (e.shape, e.dtype)]
    if bad:
        return [f"variables: {bad[0]} has another shape or dtype"]
    if ref.weights_file is not None:
        rebuilt.load_weights(str(ref.weights_file))
    else:
        for _, e, v in pairs:
            v.assign(e)
    return _judge_predictions(ref, predict(rebuilt, ref.x)) if ref.x is not None else []


def judge_served(ref: Reference, served: Any) -> list[str]:
    if ref.x is None:
        return ["nothing to call it with"]
    return _judge_predictions(ref, _outputs(served.serve(ref.x)))


def perturb(model: keras.Model) -> None:
    """Change every variable (and the optimizer's), so that a load that does nothing
    cannot pass."""
    opt = _optimizer(model)
    for v in list(model.variables) + (list(opt.variables) if opt is not None else []):
        value = _value(v)
        if value.dtype == bool:
            v.assign(~value)
        else:
            v.assign((value + 1).astype(value.dtype))


# -- the two sides -------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet(case: Case) -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught, \
            keras.saving.custom_object_scope(case.custom_objects):
        warnings.simplefilter("always")
        yield caught


class _Fresh:
    """The fresh model a weights format is loaded into: built once per pair (another
    seed), every variable changed before each load."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.model: keras.Model | None = None

    def __call__(self) -> keras.Model:
        if self.model is None:
            self.model = self.case.build(1)
        perturb(self.model)
        return self.model


def _kerasave_save(fmt: str, model: keras.Model, path: Path) -> None:
    row = by_label(fmt)
    getattr(ks, row.call)(model, path, format=row.name)


def _kerasave_judge(case: Case, fmt: str, ref: Reference, path: Path,
                    _fresh: _Fresh) -> list[str]:
    loads = by_label(fmt).loads
    if loads == "weights":
        fresh = _fresh()
        ks.load_weights(fresh, path)
        return judge_model(ref, fresh, whole=False)
    if loads == "config":
        return judge_config(ref, ks.load_config(path))
    loaded = ks.load_model(path)
    if loads == "serving":
        return judge_served(ref, loaded)
    return judge_model(ref, loaded, whole=True)


def run_kerasave(case: Case, fmt: str, model: keras.Model, ref: Reference,
                 where: Path, fresh: _Fresh) -> Outcome:
    where.mkdir(parents=True)
    path = where / _NAMES[fmt]
    path.parent.mkdir(exist_ok=True)
    try:
        with _quiet(case):
            _kerasave_save(fmt, model, path)
    except ks.KerasaveError as exc:
        problems = changes(ref.state, state_of(model))
        left = sorted(str(p.relative_to(where)) for p in where.rglob("*") if p.is_file())
        message = first_line(exc).replace(str(where) + "/", "").replace(str(where), ".")
        if left:
            return Outcome("broken", f"refused ({message}) but left {left}")
        if problems:
            return Outcome("broken", f"refused ({message}) but changed the model: "
                           + ", ".join(problems[:3]))
        return Outcome("refused", f"{type(exc).__name__}: {message}")
    except Exception as exc:
        return Outcome("broken", f"raw {type(exc).__name__} from the save: {first_line(exc)}")
    problems = changes(ref.state, state_of(model))
    if problems:
        return Outcome("broken", "the save changed the model: " + ", ".join(problems[:3]))
    try:
        with _quiet(case):
            found = _kerasave_judge(case, fmt, ref, path, fresh)
    except Exception as exc:
        return Outcome("broken", f"saved, but the load raised {type(exc).__name__}: "
                                 f"{first_line(exc)}")
    if found:
        return Outcome("broken", "saved, but not exact: " + "; ".join(found))
    return Outcome("exact")


def _keras_save(fmt: str, model: keras.Model, path: Path) -> Any:
    if fmt == "checkpoint":
        roots = {"model": model}
        if _optimizer(model) is not None:
            roots["optimizer"] = model.optimizer
        tf.train.Checkpoint(**roots).write(str(path))
    elif fmt == "h5 weights":
        model.save_weights(str(path))
    elif fmt in ("json", "yaml"):
        text = model.to_json()
        if fmt == "yaml":  # Keras has no YAML: the same config through yaml.safe_dump
            text = yaml.safe_dump(json.loads(text))
        path.write_text(text)
    elif fmt == "savedmodel":
        model.export(str(path), format="tf_saved_model", verbose=False)
    else:
        model.save(str(path))


def _keras_judge(case: Case, fmt: str, ref: Reference, path: Path,
                 _fresh: _Fresh) -> list[str]:
    if fmt == "checkpoint":
        fresh = _fresh()
        roots = {"model": fresh}
        if _optimizer(fresh) is not None:
            roots["optimizer"] = fresh.optimizer
        tf.train.Checkpoint(**roots).read(str(path))
        return judge_model(ref, fresh, whole=False)
    if fmt == "h5 weights":
        fresh = _fresh()
        fresh.load_weights(str(path))
        return judge_model(ref, fresh, whole=False)
    if fmt in ("json", "yaml"):
        text = path.read_text()
        if fmt == "yaml":
            text = json.dumps(yaml.safe_load(text))
        return judge_config(ref, keras.models.model_from_json(text))
    if fmt == "savedmodel":
        return judge_served(ref, tf.saved_model.load(str(path)))
    return judge_model(ref, keras.saving.load_model(str(path)), whole=True)


def run_keras(case: Case, fmt: str, model: keras.Model, ref: Reference, where: Path,
              fresh: _Fresh) -> Outcome:
    where.mkdir(parents=True)
    path = where / _NAMES[fmt]
    path.parent.mkdir(exist_ok=True)
    try:
        with _quiet(case):
            _keras_save(fmt, model, path)
    except Exception as exc:
        return Outcome("fails", f"save: {type(exc).__name__}: {first_line(exc)}")
    try:
        with _quiet(case):
            found = _keras_judge(case, fmt, ref, path, fresh)
    except Exception as exc:
        return Outcome("fails", f"load: {type(exc).__name__}: {first_line(exc)}")
    return Outcome("lossy", "; ".join(found)) if found else Outcome("exact")


def run_pair(case: Case, fmt: str, tmp: Path) -> Pair:
    """Both sides of one pair, on one model built for it."""
    with _quiet(case):
        model = case.build(0)
        ref = Reference(case, model, fmt, tmp / "reference")
    try:
        fresh = _Fresh(case)
        ours = run_kerasave(case, fmt, model, ref, tmp / "kerasave", fresh)
        theirs = run_keras(case, fmt, model, ref, tmp / "keras", fresh)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Pair(case.name, fmt, ours, theirs)
