"""Comparisons shared by every format: variables, configs, predictions.

Every comparison is bit for bit: same dtype, same shape, same bytes. Two NaNs
with the same bit pattern are equal; ``0.0`` and ``-0.0`` are not.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from kerasave._report import Check
from kerasave._runtime.lazy import keras

__all__ = [
    "to_numpy",
    "array_difference",
    "compare_arrays",
    "compare_configs",
    "normalize_config",
    "probe_inputs",
    "compare_outputs",
    "model_config",
    "fixed_config",
    "optimizer_of",
    "pair_variables",
    "matched",
    "recorded_reader",
    "compare_whole_models",
]



def to_numpy(value: Any) -> np.ndarray:
    """A NumPy copy of a Keras/TF variable or tensor."""
    if isinstance(value, np.ndarray):
        return value.copy()
    return np.asarray(keras.ops.convert_to_numpy(value))  # (already a copy)


def view(value: Any) -> np.ndarray:
    """A read-only NumPy view of a CPU variable's or tensor's memory (no copy).

    Verification compares whole models: views keep it from holding a copy of
    every array. Anything else (other devices, other types) is copied.
    """
    try:
        from kerasave._runtime.lazy import tf

        inner = value.value if isinstance(value, keras.Variable) else value
        if isinstance(inner, tf.Variable):
            tensor = inner.read_value()
        elif isinstance(inner, tf.Tensor) and not isinstance(inner, np.ndarray):
            tensor = inner
        else:
            return to_numpy(value)
        if "CPU" not in (tensor.device or "CPU"):
            return to_numpy(value)
        array = np.from_dlpack(tensor)
        if array.dtype != tensor.dtype.as_numpy_dtype:
            return to_numpy(value)
        return array
    except Exception:
        return to_numpy(value)


def _same_bytes(expected: np.ndarray, actual: np.ndarray) -> bool:
    """Bit-for-bit equality (NaNs and signed zeros included), a few MB at a time."""
    x = np.ascontiguousarray(expected).reshape(-1).view(np.uint8)
    y = np.ascontiguousarray(actual).reshape(-1).view(np.uint8)
    if x.size != y.size:
        return False
    width = next(w for w in (8, 4, 2, 1) if x.size % w == 0)  # wide words compare faster
    x, y = x.view(f"u{width}"), y.view(f"u{width}")
    step = (1 << 22) // width
    return all(np.array_equal(x[i: i + step], y[i: i + step]) for i in range(0, x.size, step))


def array_difference(expected: np.ndarray, actual: np.ndarray) -> str | None:
    """None when the arrays are identical bit for bit, else what differs."""
    if expected.dtype != actual.dtype:
        return f"dtype {actual.dtype}, expected {expected.dtype}"
    if expected.shape != actual.shape:
        return f"shape {actual.shape}, expected {expected.shape}"
    if _same_bytes(expected, actual):
        return None
    if np.issubdtype(expected.dtype, np.number):
        with np.errstate(all="ignore"):
            diff = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
            n = int(np.count_nonzero(expected != actual))
        compared = diff[~np.isnan(diff)]  # (a NaN on one side only has no difference)
        biggest = f"{compared.max():.3g}" if compared.size else "undefined (NaN)"
        return f"{n} of {expected.size} values differ, max abs difference {biggest}"
    return "values differ"


def compare_arrays(
    name: str, pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], *, what: str = "variables"
) -> Check:
    """One check over many (label, expected, actual) arrays."""
    bad = []
    for label, expected, actual in pairs:
        why = array_difference(expected, actual)
        if why is not None:
            bad.append(f"{label}: {why}")
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        return Check(name, False, "; ".join(bad[:3]) + more)
    total = sum(int(e.nbytes) for _, e, _ in pairs)
    return Check(name, True, f"{len(pairs)} {what} bit-exact ({total:,} bytes)")


def normalize_config(config: Any) -> Any:
    """A config as plain JSON data (tuples become lists, numpy scalars numbers)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        return repr(obj)

    return json.loads(json.dumps(config, default=default, sort_keys=True))


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a:
                return f"{where}/{key}: unexpected"
            if key not in b:
                return f"{where}/{key}: missing"
            found = _first_difference(a[key], b[key], f"{where}/{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(b)} items, expected {len(a)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    if a != b:
        return f"{where or '/'}: {b!r}, expected {a!r}"
    return None


def _is_policy_map(node: Any) -> bool:
    return (isinstance(node, dict) and node.get("class_name") == "DTypePolicyMap"
            and isinstance(node.get("config"), dict))


def _resolved(entry: Any, key: str) -> Any:
    """A ``DTypePolicyMap`` entry as the layer at ``key`` sees it: an entry that is a
    map itself (a sublayer given its parent's map) means that map's entry for the
    same path, or its default."""
    seen = 0
    while _is_policy_map(entry) and seen < 64:
        inner = entry["config"]
        entry = (inner.get("policy_map") or {}).get(key, inner.get("default_policy"))
        seen += 1
    return entry


def _meaning(node: Any) -> Any:
    """A config with what only its spelling tells apart made one: a registered
    function serialized as ``{"class_name": "function", "config": "pkg>name", ...}``
    is its name (the legacy ``.h5`` reader gives the string back), and a
    ``DTypePolicyMap`` entry that is a map itself is the policy it resolves to
    (``DTypePolicyMap`` configs nest again when a layer that passes its map on to
    its sublayers is rebuilt)."""
    if isinstance(node, list):
        return [_meaning(v) for v in node]
    if not isinstance(node, dict):
        return node
    if (node.get("class_name") == "function" and node.get("module") == "builtins"
            and isinstance(node.get("config"), str)):
        return node["config"]
    if _is_policy_map(node):
        inner = dict(node["config"])
        table = inner.get("policy_map")
        if isinstance(table, dict):
            inner["policy_map"] = {k: _meaning(_resolved(v, k)) for k, v in table.items()}
        return {**node, "config": {k: _meaning(v) for k, v in inner.items()}}
    return {k: _meaning(v) for k, v in node.items()}


def compare_configs(name: str, expected: Any, actual: Any) -> Check:
    """Configs equal once normalized to JSON data, compared by meaning (``_meaning``)."""
    where = _first_difference(_meaning(normalize_config(expected)),
                              _meaning(normalize_config(actual)))
    if where:
        return Check(name, False, where)
    return Check(name, True, "equal")


_FIXED: weakref.WeakKeyDictionary[Any, dict[str, Any] | None] = weakref.WeakKeyDictionary()


def fixed_config(model: keras.Model) -> None:
    """Say that nothing will change ``model``'s config (a twin kept for verification):
    ``model_config`` then serializes it once, not at every save it verifies."""
    _FIXED.setdefault(model, None)


# The config a save's preflight serialized, for the checks of the same save.
#
# The one context variable kerasave keeps, on purpose: a memo, not a mode. It
# changes no result, only how often one save serializes the same model's config
# (``to_json`` costs as much as a small save's write). Passing the config
# instead would thread it from ``Handler.preflight`` through the save pipeline
# into every handler's ``check`` and every comparison in this module, for
# nothing but speed; outside ``one_save`` (``verify()``, the manager, tests)
# every call serializes afresh, as it would without the memo. It is valid for
# exactly one save because nothing changes the model between that save's
# preflight and its checks, and a context variable keeps two threads' (or two
# tasks') saves apart.
_SAVING: contextvars.ContextVar[dict[int, tuple[Any, Any]] | None] = contextvars.ContextVar(
    "kerasave_saving_configs", default=None)


@contextlib.contextmanager
def one_save() -> Iterator[None]:
    """Inside, a model's config is serialized once (``serialized_config``), not again
    by the checks: nothing changes the model between its preflight and its checks."""
    token = _SAVING.set({})
    try:
        yield
    finally:
        _SAVING.reset(token)


def serialized_config(model: keras.Model) -> dict[str, Any]:
    """``json.loads(model.to_json())``, once per model inside ``one_save``."""
    seen = _SAVING.get()
    if seen is not None and id(model) in seen and seen[id(model)][0] is model:
        return seen[id(model)][1]
    config = json.loads(model.to_json())
    if seen is not None:
        seen[id(model)] = (model, config)
    return config


def model_config(model: keras.Model) -> dict[str, Any]:
    """The model's serialized config, as ``to_json`` writes it."""
    try:
        fixed = model in _FIXED
    except TypeError:  # a user's class that is not hashable
        fixed = False
    if fixed and _FIXED[model] is not None:
        return _FIXED[model]  # type: ignore[return-value]
    config = normalize_config(serialized_config(model))
    if fixed:
        _FIXED[model] = config
    return config


def optimizer_of(model: keras.Model) -> keras.optimizers.Optimizer | None:
    """The model's optimizer, or None when it was never compiled."""
    opt = getattr(model, "optimizer", None)
    return opt if isinstance(opt, keras.optimizers.Optimizer) else None


def probe_inputs(model: keras.Model, *, seed: int = 1234) -> Any:
    """A small deterministic batch that fits the model's inputs, or None
    (``kerasave.compare.probes.probe_inputs``)."""
    from kerasave.compare.probes import probe_inputs as probe

    return probe(model, seed=seed)


def guarded(name: str, check: Callable[[], Iterable[Check]]) -> list[Check]:
    """The checks ``check()`` makes; anything it raises that is not a
    ``KerasaveError`` (TensorFlow's, Keras' or NumPy's own exceptions, from a model
    the check ran) becomes one failed check named ``name``, saying what was raised."""
    from kerasave._errors import KerasaveError, first_line

    try:
        return list(check())
    except KerasaveError:
        raise
    except Exception as exc:
        return [Check(name, False, f"the check raised {first_line(exc, typed=True)}")]


def compare_outputs(
    name: str, expected: Any, actual_fn: Callable[[], Any]) -> Check:
    """Outputs of a restored model against the original's, bit for bit."""
    try:
        actual = actual_fn()
    except Exception as exc:  # a restored model that cannot run is a failed check
        return Check(name, False, f"could not run the restored model: {exc}")
    exp = [to_numpy(x) for x in keras.tree.flatten(expected)]
    act = [to_numpy(x) for x in keras.tree.flatten(actual)]
    if len(exp) != len(act):
        return Check(name, False, f"{len(act)} outputs, expected {len(exp)}")
    pairs = [(f"output {i}", e, a) for i, (e, a) in enumerate(zip(exp, act))]
    return compare_arrays(name, pairs, what="outputs")


def seed_states(model: keras.Model) -> list[Any]:
    """Variables that are not weights: the states of Keras' random seed generators."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def matched(expected: Iterable[Any], actual: Iterable[Any]) -> list[tuple[Any, Any]]:
    """Expected variables with their counterparts: by path when both sides name the
    same set of paths (a model rebuilt from a config keeps its layers' names; a
    quantized float8 layer creates its variables in another order when loaded), by
    position otherwise (a fresh model with other automatic layer names)."""
    expected, actual = list(expected), list(actual)
    paths = [getattr(v, "path", None) for v in expected]
    by_path = {getattr(v, "path", None): v for v in actual}
    if (len(expected) == len(actual) and None not in paths and len(set(paths)) == len(paths)
            and set(paths) == set(by_path)):
        return [(e, by_path[p]) for e, p in zip(expected, paths)]
    return list(zip(expected, actual))


def pair_variables(
    expected: Iterable[Any], actual: Iterable[Any],
    value: Callable[[Any], np.ndarray] = view,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Pairs of variables (``matched``), labelled by the expected one's path.

    ``value`` reads an ``actual`` variable (by default a view of its memory).
    """
    return [
        (getattr(e, "path", getattr(e, "name", "?")), view(e), value(a))
        for e, a in matched(expected, actual)
    ]


Recorded = Mapping[int, tuple[Any, np.ndarray]]


def recorded_reader(recorded: Recorded | None) -> Callable[[Any], np.ndarray]:
    """How to read a loaded variable: its recorded file value, else its memory."""
    if not recorded:
        return view

    def value(variable: Any) -> np.ndarray:
        found = recorded.get(id(variable))
        return found[1] if found is not None else view(variable)

    return value


def _predict(model: keras.Model, loaded: keras.Model, probe: Any,
             recorded: Recorded | None, equal: set[int]) -> Callable[[], Any]:
    """The loaded model's predictions; recorded variables read their file values.

    A recorded value is given as the original's variable when the two were found
    bit-equal (``equal`` holds their ids: no copy), else as a copy of the file's.
    """
    if not recorded:
        return lambda: loaded(probe, training=False)
    from kerasave._runtime.lazy import tf

    originals = {id(a): e for e, a in matched(model.weights, loaded.weights)}
    originals.update((id(a), e) for e, a in matched(seed_states(model), seed_states(loaded)))
    used = {id(v) for v in loaded.variables}

    def run() -> Any:
        mapping = [(variable, originals[key] if key in equal and key in originals
                    else tf.constant(array))
                   for key, (variable, array) in recorded.items() if key in used]
        with keras.StatelessScope(state_mapping=mapping):
            return loaded(probe, training=False)

    return run


def without_build_configs(config: Any) -> Any:
    """A model config without its layers' ``build_config`` entries."""
    if isinstance(config, dict):
        return {k: without_build_configs(v) for k, v in config.items() if k != "build_config"}
    if isinstance(config, list):
        return [without_build_configs(v) for v in config]
    return config


def compare_whole_models(model: keras.Model, loaded: keras.Model,
                         recorded: Recorded | None = None, *,
                         build_configs: bool = True) -> list[Check]:
    """Config, variables, optimizer, compile settings and predictions.

    ``recorded`` holds the file's values of loaded variables that were recorded
    instead of assigned (``kerasave._fastpaths.patches.recorded``): they are
    compared, and used for the predictions, in place of the variables' memory. ``build_configs``
    False: the format does not hold the layers' build configs (legacy h5), so
    the loaded ones are what the loader derived and are not compared; the
    variables' shapes still are.
    """
    value = recorded_reader(recorded)
    strip = (lambda c: c) if build_configs else without_build_configs
    checks = [compare_configs("config", strip(model_config(model)), strip(model_config(loaded)))]
    if checks[0].ok and not build_configs:
        checks[0] = Check("config", True,
                          "equal (layers' build configs aside: the format does not hold them)")
    checks.append(compare_arrays("model variables",
                                 pair_variables(model.weights, loaded.weights, value)))
    equal = {id(v) for v in loaded.weights} if checks[-1].ok else set()
    if len(model.weights) != len(loaded.weights):
        checks.append(Check("variable count", False,
                            f"{len(loaded.weights)} loaded, expected {len(model.weights)}"))
    seeds = seed_states(model)
    if seeds:
        same = compare_arrays("rng seed states",
                              pair_variables(seeds, seed_states(loaded), value))
        if same.ok:
            equal |= {id(v) for v in seed_states(loaded)}
        detail = same.detail if same.ok else (
            f"{len(seeds)} random-generator states are not held by this format: dropout and "
            "other randomness after loading differ from the original's")
        checks.append(Check("rng seed states", True, detail))
    opt, opt2 = optimizer_of(model), optimizer_of(loaded)
    if opt is None:
        checks.append(Check("optimizer", opt2 is None,
                            "not compiled" if opt2 is None else "loaded model has an optimizer"))
    elif opt2 is None:
        checks.append(Check("optimizer", False, "the loaded model has no optimizer"))
    else:
        checks.append(compare_configs("optimizer config", opt.get_config(), opt2.get_config()))
        if not opt.built and opt2.built:
            checks.append(_unbuilt_optimizer_check(opt, opt2, value))
        elif len(opt.variables) != len(opt2.variables):
            checks.append(Check("optimizer variables", False,
                                f"{len(opt2.variables)} loaded, expected {len(opt.variables)}"))
        else:
            checks.append(compare_arrays("optimizer variables",
                                         pair_variables(opt.variables, opt2.variables, value)))
        checks.append(compare_configs("compile settings", model.get_compile_config(),
                                      loaded.get_compile_config()))
    probe = probe_inputs(model)
    if probe is None:
        checks.append(Check("predictions", True, "skipped: no input shapes known"))
    else:
        expected = model(probe, training=False)
        checks.append(compare_outputs("predictions", expected,
                                      _predict(model, loaded, probe, recorded, equal)))
    return checks


def _unbuilt_optimizer_check(opt: Any, loaded: Any,
                             value: Callable[[Any], np.ndarray] = view) -> Check:
    """An optimizer saved before it was built has no slots; Keras builds fresh ones."""
    by_path = {v.path: v for v in loaded.variables}
    pairs = [(v.path, v, by_path.get(v.path)) for v in opt.variables]
    if any(other is None for _, _, other in pairs):
        return Check("optimizer variables", False,
                     "the loaded optimizer lacks " + ", ".join(p for p, _, o in pairs if o is None))
    check = compare_arrays("optimizer variables",
                           [(p, view(v), value(o)) for p, v, o in pairs])
    kept = {id(o) for _, _, o in pairs}
    fresh = [v for v in loaded.variables if id(v) not in kept]
    if not check.ok or any(np.any(value(v)) for v in fresh):
        return check if not check.ok else Check("optimizer variables", False,
                                                "new optimizer slots are not zero")
    return Check("optimizer variables", True,
                 f"not built when saved: {len(pairs)} variables bit-exact, "
                 f"{len(fresh)} fresh zero slots")
