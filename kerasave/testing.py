"""Round-trip assertions for your own models, for CI (``kerasave.testing``).

::

    from kerasave.testing import assert_round_trip

    def test_my_model_survives_saving(tmp_path):
        reports = assert_round_trip(build_my_model(), tmp_path)

With pytest, the ``round_trip`` fixture (kerasave's pytest plugin, active once
kerasave is installed) does the same with pytest's ``tmp_path``::

    def test_my_model_survives_saving(round_trip):
        round_trip(build_my_model())

Every format is saved with kerasave's public API (each save verifies itself and
raises ``RoundTripError`` with the failed checks), then read back into fresh
objects and compared bit for bit:

============  ===============================================================
format        read back with                and compared
============  ===============================================================
checkpoint    ``load_weights`` into a twin  every variable, optimizer state
h5 weights    ``load_weights`` into a twin  every weight, optimizer state if saved
json, yaml    ``load_config``               variable shapes; predictions once the
                                            original's weights are copied in
keras         ``load_model``                weights, optimizer state, compile
h5 model                                    settings, predictions
savedmodel    ``load_model``                serving outputs against predictions
onnx, litert  ``load_model`` (its runtime)  outputs at two batch sizes, within the
                                            export tolerance (``docs/exports.md``)
============  ===============================================================

The exports are in ``FORMATS`` when ``kerasave[export]`` is installed.

A twin is a fresh model of the same architecture, compiled like the original
with its optimizer not built yet: made from the model's config, or, for a
subclassed model without one, by calling its class with no arguments (that twin
is not built either, so ``load_weights`` builds it). When no twin can be made,
the artifact is loaded into the model itself after every variable has been
changed, and every value is put back afterwards. See ``docs/testing.md``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerasave._runtime.quiet import import_tensorflow

import_tensorflow()  # (before keras: TensorFlow's load ignores TF_CPP_MIN_LOG_LEVEL in part)

import keras
import numpy as np

from kerasave import _registry
from kerasave._api import (
    load_config,
    load_model,
    load_weights,
    save_config,
    save_model,
    save_weights,
)
from kerasave._errors import RoundTripError
from kerasave._report import Check, Report
from kerasave.compare.state import compiled_twin, transfer_values, untouched
from kerasave.compare.tolerance import compare_within
from kerasave.compare.verify import (
    compare_arrays,
    compare_configs,
    compare_outputs,
    matched,
    optimizer_of,
    pair_variables,
    probe_inputs,
    to_numpy,
)
from kerasave.formats import formats
from kerasave.formats._export import SECOND_BATCH, ExportFormat, Served, available, serve_batch
from kerasave.formats.savedmodel import compare_serving

__all__ = ["FORMATS", "EXPORTS", "RoundTripFailure", "assert_round_trip"]

def _runnable(handler: object) -> bool:
    """An export handler whose writer and runtime modules are installed."""
    if not isinstance(handler, ExportFormat):
        raise TypeError(f"the format table's export row names {handler!r}, not an export")
    return not available(*handler.writes_with, *handler.runs_with)


#: The deployment exports, checked when ``kerasave[export]`` is installed.
EXPORTS: tuple[str, ...] = tuple(
    f.label for f in formats(lambda f: f.export) if _runnable(f.handler))

#: Every format ``assert_round_trip`` checks, in the order it checks them: the seven
#: classic ones, then each deployment export whose runtime is installed.
FORMATS: tuple[str, ...] = (*(f.label for f in formats(lambda f: f.classic)), *EXPORTS)
_KNOWN = (*FORMATS, *(f.label for f in formats(lambda f: f.export) if f.label not in EXPORTS))
# Names accepted in ``formats=`` beside the canonical ones ("h5" means both HDF5 formats).
_ALIASES: dict[str, tuple[str, ...]] = {
    "h5": tuple(f.label for f in formats(lambda f: f.classic and f.name == "h5")),
    "weights": tuple(f.label for f in formats(lambda f: f.classic and f.kind == "weights")),
    "config": tuple(f.label for f in formats(lambda f: f.classic and f.kind == "config")),
    "exports": EXPORTS,
}


@dataclass(frozen=True)
class _Plan:
    save: Callable[..., Report]
    file: str
    reload: Callable[[keras.Model, Path], list[Check]]


class RoundTripFailure(AssertionError):
    """``assert_round_trip`` failed; ``failures`` lists (format, check, detail)."""

    def __init__(self, message: str, failures: tuple[tuple[str, str, str], ...],
                 reports: dict[str, Report]) -> None:
        super().__init__(message)
        self.failures = failures
        self.reports = reports


def _selected(formats: Iterable[str] | str | None) -> tuple[str, ...]:
    if formats is None:
        return FORMATS
    names = [formats] if isinstance(formats, str) else list(formats)
    if not names:
        raise ValueError(f"formats names no format; expected some of: {', '.join(FORMATS)}")
    wanted: set[str] = set()
    for name in names:
        key = str(name).strip().lower().replace("_", " ").replace("-", " ")
        if key in _KNOWN:  # (an export asked for by name is tried, installed or not)
            wanted.add(key)
        elif key in _ALIASES:
            wanted.update(_ALIASES[key])
        else:
            raise ValueError(
                f"unknown format {name!r}; expected some of: {', '.join(FORMATS)} "
                f"(or {', '.join(_ALIASES)})")
    return tuple(f for f in _KNOWN if f in wanted)


# -- fresh objects ---------------------------------------------------------------------

def _shapes(variables: Iterable[Any]) -> list[tuple[tuple[int, ...], str]]:
    return [(tuple(v.shape), str(v.dtype)) for v in variables]


def _all_variables(model: keras.Model) -> list[Any]:
    optimizer = optimizer_of(model)
    return list(model.variables) + (list(optimizer.variables) if optimizer else [])


def _scramble(variables: Iterable[Any]) -> None:
    """Change every value, so that a load that does nothing cannot pass."""
    for v in variables:
        value = to_numpy(v)
        if value.dtype == bool:
            v.assign(~value)
        elif np.issubdtype(value.dtype, np.number):
            v.assign((value + 1).astype(value.dtype))


# -- reading each format back ----------------------------------------------------------

def _weights_back(which: str) -> Callable[[keras.Model, Path], list[Check]]:
    def reload(model: keras.Model, path: Path) -> list[Check]:
        # (what the handler reads from the file: load_weights checks its manifest, once)
        saved_optimizer = which == "checkpoint" or _registry.detect(
            path, "weights").contents(path).has_optimizer
        optimizer = optimizer_of(model)
        twin, how = compiled_twin(model)
        if twin is not None:
            report = load_weights(twin, path)
            checks = [Check("load_weights", report.ok, f"into {how}")]
            # Keras' HDF5 weights hold no RNG seed states; checkpoints do.
            mine = model.variables if which == "checkpoint" else model.weights
            theirs = twin.variables if which == "checkpoint" else twin.weights
            checks.append(_same_variables("model variables", mine, theirs))
            if optimizer is not None and saved_optimizer:
                checks.append(_same_variables("optimizer variables", optimizer.variables,
                                              _optimizer_variables(twin)))
            return checks
        # No fresh copy can be made: load into the model itself, then put it back.
        variables = _all_variables(model)
        before = [to_numpy(v) for v in variables]
        try:
            _scramble(variables)
            report = load_weights(model, path)
            after = [to_numpy(v) for v in variables]
        finally:
            for v, value in zip(variables, before):
                v.assign(value)
        checks = [Check("load_weights", report.ok,
                        "into the model itself, every variable changed first (no fresh copy "
                        "could be made); its values were put back afterwards")]
        n_model = len(model.variables)
        held = (range(n_model) if which == "checkpoint" else
                [i for i, v in enumerate(model.variables)
                 if any(v is w for w in model.weights)])
        checks.append(compare_arrays("model variables",
                                     [(_name(variables[i]), before[i], after[i]) for i in held]))
        if optimizer is not None and saved_optimizer:
            checks.append(compare_arrays(
                "optimizer variables",
                [(_name(v), b, a) for v, b, a in
                 zip(variables[n_model:], before[n_model:], after[n_model:])]))
        return checks

    return reload


def _name(variable: Any) -> str:
    return str(getattr(variable, "path", None) or getattr(variable, "name", "?"))


def _optimizer_variables(model: keras.Model) -> list[Any]:
    optimizer = optimizer_of(model)
    return list(optimizer.variables) if optimizer is not None else []


def _same_variables(name: str, expected: list[Any], actual: list[Any]) -> Check:
    if len(expected) != len(actual):
        return Check(name, False, f"{len(actual)} read back, expected {len(expected)}")
    return compare_arrays(name, pair_variables(expected, actual))


def _predictions(name: str, model: keras.Model, other: Callable[[Any], Any]) -> Check:
    probe = probe_inputs(model)
    if probe is None:
        return Check(name, True, "skipped: the model records no input shapes to probe with")
    with untouched(model):  # (a stateful RNN's states, a recurrent dropout's seeds)
        expected = model(probe, training=False)
    return compare_outputs(name, expected, lambda: other(probe))


def _config_back(model: keras.Model, path: Path) -> list[Check]:
    fresh = load_config(path)
    checks = [Check("load_config", True, f"a fresh {type(fresh).__name__}")]
    pairs = matched(model.weights, fresh.weights)  # (by path: float8 layers reorder)
    want, got = _shapes(e for e, _ in pairs), _shapes(a for _, a in pairs)
    if len(model.weights) != len(fresh.weights) or want != got:
        return checks + [Check("variable shapes", False,
                               f"rebuilt {_shapes(fresh.weights)}, expected "
                               f"{_shapes(model.weights)}")]
    checks.append(Check("variable shapes", True, f"{len(want)} variables, same shapes and dtypes"))
    if model.built:
        transfer_values(model, fresh)  # (as a weights file gives them: layer by layer)
    # Same architecture and same weights must compute the same function: this catches a
    # get_config() that forgets an argument which changes what a layer computes.
    checks.append(_predictions("predictions with the original weights", model,
                               lambda p: fresh(p, training=False)))
    return checks


def _model_back(model: keras.Model, path: Path) -> list[Check]:
    loaded = load_model(path)
    checks = [Check("load_model", True, f"a compiled {type(loaded).__name__}")]
    checks.append(_same_variables("model variables", model.weights, loaded.weights))
    optimizer = optimizer_of(model)
    if optimizer is not None:
        checks.append(_same_variables("optimizer variables", optimizer.variables,
                                      _optimizer_variables(loaded)))
        checks.append(compare_configs("compile settings", model.get_compile_config(),
                                      loaded.get_compile_config()))
    checks.append(_predictions("predictions", model, lambda p: loaded(p, training=False)))
    return checks


def _served_back(model: keras.Model, path: Path) -> list[Check]:
    served = load_model(path)
    checks = [Check("load_model", True, "the restored serving object")]
    probe = probe_inputs(model)
    if probe is None:
        return checks + [Check("serving outputs", False, "no input shapes to probe with")]
    return checks + [compare_serving(model, served, probe)]


def _export_back(model: keras.Model, path: Path) -> list[Check]:
    served = load_model(path)
    if not isinstance(served, Served):
        return [Check("load_model", False, f"gave a {type(served).__name__}, not a served export")]
    checks = [Check("load_model", True, f"the export, running in {served.runtime}")]
    probe = probe_inputs(model)
    if probe is None:
        return checks + [Check("serving outputs", False, "no input shapes to probe with")]
    pairs = []
    for batch in (probe, keras.tree.map_structure(lambda a: a[:SECOND_BATCH], probe)):
        expected = [to_numpy(x) for x in keras.tree.flatten(model(batch, training=False))]
        got = serve_batch(model, served, batch)
        if len(got) != len(expected):
            return checks + [Check("serving outputs", False,
                                   f"{len(got)} outputs, expected {len(expected)}")]
        rows = len(keras.tree.flatten(batch)[0])
        pairs += [(f"output {i} (batch of {rows})", e, a)
                  for i, (e, a) in enumerate(zip(expected, got))]
    return checks + [compare_within("serving outputs", pairs)]


_SAVES: dict[str, Callable[..., Report]] = {
    "weights": save_weights, "config": save_config, "model": save_model}
# How each format is read back, by what its load gives (the format table's ``loads``).
_RELOADS: dict[str, Callable[[keras.Model, Path], list[Check]]] = {
    "config": _config_back, "model": _model_back, "serving": _served_back,
    "export": _export_back}
_PLANS: dict[str, _Plan] = {
    f.label: _Plan(_SAVES[f.kind], f.named("model"),
                   _weights_back(f.name) if f.loads == "weights" else _RELOADS[f.loads])
    for f in formats() if f.label in _KNOWN}


# -- the assertion ---------------------------------------------------------------------

def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _one(model: keras.Model, name: str, where: Path,
         failures: list[tuple[str, str, str]]) -> Report | None:
    plan = _PLANS[name]
    path = where / plan.file
    try:
        saved = plan.save(model, path)
    except RoundTripError as exc:
        failures += [(name, f"save check {c.name!r}", c.detail) for c in exc.report.failed]
        return None
    except Exception as exc:  # NotSerializableError and the like: the format cannot hold it
        failures.append((name, "save", _error(exc)))
        return None
    start = time.perf_counter()
    try:
        checks = plan.reload(model, path)
    except Exception as exc:  # a load that raises is a failed check, reported by name
        checks = [Check("load", False, _error(exc))]
    failures += [(name, f"reload check {c.name!r}", c.detail) for c in checks if not c.ok]
    reloaded = tuple(Check(f"reload: {c.name}", c.ok, c.detail) for c in checks)
    return Report(saved.path, saved.format, saved.ok and all(c.ok for c in checks),
                  saved.checks + reloaded, saved.bytes,
                  saved.seconds + time.perf_counter() - start)


def assert_round_trip(model: keras.Model, tmp_path: str | os.PathLike[str],
                      formats: Iterable[str] | str | None = None) -> dict[str, Report]:
    """Save ``model`` in every format, read each back, and fail with what did not survive.

    Args:
        model: A built Keras model (compiled or not).
        tmp_path: A directory for the artifacts (pytest's ``tmp_path``); each call
            writes into a new subdirectory of it, kept for a look after a failure.
        formats: Some of ``FORMATS`` (``"checkpoint"``, ``"h5 weights"``, ``"json"``,
            ``"yaml"``, ``"keras"``, ``"h5 model"``, ``"savedmodel"``, and ``"onnx"``,
            ``"litert"`` with ``kerasave[export]``; ``_`` or ``-`` may stand for the
            space; ``"h5"`` means both HDF5 formats, ``"weights"`` and ``"config"``
            the two of each kind, ``"exports"`` the exports). Default: all of them.

    Returns:
        One ``Report`` per format: the save's checks, then the ``reload: ...`` checks.

    Raises:
        ValueError: ``formats`` names an unknown format (nothing is saved).
        RoundTripFailure: an ``AssertionError`` listing, for every format that
            failed, the check by name and what differed. A subclassed model
            whose class is not registered fails ``json``, ``yaml``, ``keras`` and
            ``h5 model`` this way (no load could rebuild its architecture).
    """
    selected = _selected(formats)
    base = Path(os.fspath(tmp_path))
    base.mkdir(parents=True, exist_ok=True)
    where = Path(tempfile.mkdtemp(prefix="round-trip-", dir=base))
    failures: list[tuple[str, str, str]] = []
    reports: dict[str, Report] = {}
    with untouched(model):  # (reading back runs the model: its states stay as they were)
        for name in selected:
            report = _one(model, name, where, failures)
            if report is not None:
                reports[name] = report
    if failures:
        failed = sorted({f for f, _, _ in failures}, key=_KNOWN.index)
        lines = [f"{type(model).__name__} did not survive {len(failed)} of {len(selected)} "
                 f"format(s): {', '.join(failed)} (artifacts in {where})"]
        lines += [f"  {fmt}: {check}: {detail}" for fmt, check, detail in failures]
        raise RoundTripFailure("\n".join(lines), tuple(failures), reports)
    return reports
