"""The ``kerasave`` command line (also ``python -m kerasave``).

Commands: ``demo``, ``inspect``, ``verify``, ``diff``, ``convert`` and ``doctor``; see
``docs/cli.md``. Exit codes: 0 yes / done, 1 the answer is no (verification
failed, artifacts differ, a round trip failed), 2 the command could not run
(usage, missing or unreadable input). Errors are one line on stderr,
``kerasave: error: ...``; ``--debug`` adds the traceback.

Only kerasave's public API is used here, plus ``kerasave._arrays``, which reads
the arrays of any artifact by names that line up across formats.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kerasave._quiet import import_tensorflow  # noqa: E402

import_tensorflow()  # before anything imports it: TensorFlow 2.21 logs at load

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402
from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

import kerasave as ks  # noqa: E402
from kerasave import _arrays  # noqa: E402

__all__ = ["main", "cli"]

OK, NO, ERROR = 0, 1, 2
KINDS = {"weights": "weights only", "config": "architecture only", "model": "whole model"}


@dataclasses.dataclass
class _State:
    debug: bool = False


class _No(Exception):
    """A negative answer (exit 1) with a one-line reason for stderr."""


# -- output ---------------------------------------------------------------------------


def _tty() -> bool:
    return sys.stdout.isatty()


def _console() -> Console:
    """Rich output on stdout: colours on a terminal, plain and unwrapped otherwise."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=True,
                   width=None if _tty() else 10_000)


@contextlib.contextmanager
def _status(message: str) -> Iterator[None]:
    """A spinner on stderr while a long step runs, on a terminal only."""
    if _tty() and sys.stderr.isatty():
        with Console(stderr=True).status(message):
            yield
    else:
        yield


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _note(message: str) -> None:
    click.echo(f"kerasave: note: {_one_line(message)}", err=True)


def _table(*columns: str, right: Sequence[str] = (), names: Sequence[str] = ()) -> Table:
    """A plain table; on a narrow terminal the first column (``names``) folds last."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, highlight=False)
    for i, name in enumerate(columns):
        table.add_column(name, justify="right" if name in right else "left",
                         overflow="fold" if i == 0 else "ellipsis", no_wrap=i != 0,
                         min_width=min(40, max(map(len, names), default=0)) if i == 0 else None)
    return table


def _print_table(console: Console, table: Table) -> None:
    """A table; off a terminal, without the padding rich leaves at the ends of lines."""
    if _tty():
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _shape(shape: Sequence[int] | None) -> str:
    return "-" if shape is None else str(tuple(shape))


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _size_of(path: str) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size if p.exists() else 0


def _kind_word(fmt: str, kind: str) -> str:
    return "serving export" if fmt == "savedmodel" else KINDS[kind]


# -- the command group ---------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ks.__version__, "--version", prog_name="kerasave",
                      message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="On an error, show the full traceback.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Save, restore and prove Keras models in every classic TensorFlow format.

    Exit codes: 0 yes/done, 1 no (verification failed, artifacts differ), 2 error.
    """
    if isinstance(ctx.obj, _State):
        ctx.obj.debug = debug


# -- demo ------------------------------------------------------------------------------


@cli.command()
@click.option("--dir", "directory", metavar="DIR",
              help="Where the artifacts go (default: a new temporary directory).")
def demo(directory: str | None) -> int:
    """Train the tutorial model, save it in every format, restore and verify each."""
    out = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="kerasave-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"kerasave {ks.__version__} demo: artifacts in {out}")

    with _status("training the reference model"):
        model = ks.reference_model(seed=0)
        data, labels = ks.reference_data(1000, seed=0)
        model.fit(data, labels, epochs=2, batch_size=32, verbose=0)
    probe = data[:8]
    expected = np.asarray(model(probe, training=False))

    def restore_weights(path: Path) -> ks.Report:
        fresh = ks.reference_model(seed=1)  # other weights, same architecture
        ks.load_weights(fresh, path)
        return ks.verify(model, path) if _same(model, fresh) else _fail(path, "weights")

    def restore_config(path: Path) -> ks.Report:
        fresh = ks.load_config(path)
        ok = [tuple(w.shape) for w in fresh.weights] == [tuple(w.shape) for w in model.weights]
        return ks.verify(model, path) if ok else _fail(path, "config")

    def restore_model(path: Path) -> ks.Report:
        loaded = ks.load_model(path)
        ok = np.array_equal(np.asarray(loaded(probe, training=False)), expected)
        return ks.verify(model, path) if ok else _fail(path, "model")

    def restore_served(path: Path) -> ks.Report:
        served = ks.load_model(path)
        ok = np.array_equal(np.asarray(served.serve(probe)), expected)
        return ks.verify(model, path) if ok else _fail(path, "savedmodel")

    plan: list[tuple[str, Callable[..., ks.Report], Path, Callable[[Path], ks.Report]]] = [
        ("checkpoint", ks.save_weights, out / "weights" / "my_model", restore_weights),
        ("h5 weights", ks.save_weights, out / "my_model.weights.h5", restore_weights),
        ("json", ks.save_config, out / "model.json", restore_config),
        ("yaml", ks.save_config, out / "model.yaml", restore_config),
        ("keras", ks.save_model, out / "my_model.keras", restore_model),
        ("h5 model", ks.save_model, out / "my_model.h5", restore_model),
        ("savedmodel", ks.save_model, out / "serving", restore_served),
    ]
    rows = []
    failures = 0
    for label, save, path, restore in plan:
        start = time.perf_counter()
        try:
            with _status(f"{label}: saving, restoring and verifying"):
                saved = save(model, path)
                restored = restore(path)
            ok = saved.ok and restored.ok
            checks = f"{sum(c.ok for c in saved.checks)}/{len(saved.checks)} saved, " \
                     f"{sum(c.ok for c in restored.checks)}/{len(restored.checks)} restored"
            size = saved.bytes
        except ks.KerasaveError as exc:
            ok, checks, size = False, f"error: {exc}", 0
        failures += not ok
        rows.append((label, str(path.relative_to(out)), f"{size:,}",
                     f"{time.perf_counter() - start:.2f}", ("ok   " if ok else "FAIL ") + checks))

    header = ("format", "path", "bytes", "seconds", "checks passed")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) if i != 2 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    print(f"{len(rows) - failures} of {len(rows)} formats verified" +
          ("" if not failures else f"; {failures} FAILED"))
    return NO if failures else OK


def _same(a: Any, b: Any) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.weights, b.weights))


def _fail(path: Path, what: str) -> ks.Report:
    return ks.Report(str(path), what, False, (ks.Check("restore", False, "values differ"),))


# -- inspect ---------------------------------------------------------------------------


def _inspection(path: str) -> dict[str, Any]:
    """What ``inspect --json`` prints: ``kerasave.inspect`` plus kind, sizes and manifest."""
    with _status(f"reading {path}"):
        found = ks.inspect(path)
        _, kind = _arrays.describe(path)
        status = _arrays.integrity(path)
    data = dataclasses.asdict(found)
    data["variables"] = [{"name": v.name, "shape": list(v.shape), "dtype": v.dtype}
                         for v in found.variables]
    data["files"] = list(found.files)
    data["versions"] = dict(found.versions)
    data["kind"] = kind
    data["file_bytes"] = {f: _size_of(f) for f in found.files}
    data["manifest"] = dataclasses.asdict(status)
    return data


@cli.command("inspect")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (the fields of kerasave.inspect, plus kind, file_bytes, "
                   "manifest).")
def inspect_command(path: str, as_json: bool) -> int:
    """What the artifact at PATH holds: files, variables, optimizer, versions, manifest."""
    data = _inspection(path)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return OK
    console = _console()
    manifest = data["manifest"]
    if not manifest["present"]:
        integrity = "none (not written by kerasave): " + manifest["detail"]
    else:
        state = "" if manifest["ok"] else "DOES NOT MATCH: "
        integrity = f"{Path(manifest['manifest']).name}: {state}{manifest['detail']}"
    versions = ", ".join(f"{k} {v}" for k, v in data["versions"].items()) or "unknown"
    facts = [
        ("format", f"{data['format']} ({_kind_word(data['format'], data['kind'])})"),
        ("size", f"{data['bytes']:,} bytes in {len(data['files'])} file(s)"),
        ("written by", versions),
        ("optimizer", "yes" if data["has_optimizer"] else "no"),
        ("manifest", integrity),
    ]
    console.print(Text(data["path"], style="bold"))
    for key, value in facts:
        console.print(Text(f"  {key:<11}{value}"))
    files = _table("file", "bytes", right=("bytes",), names=list(data["file_bytes"]))
    for name, size in data["file_bytes"].items():
        files.add_row(Text(name), f"{size:,}")
    console.print()
    _print_table(console, files)
    if data["variables"]:
        table = _table("variable", "shape", "dtype",
                       names=[v["name"] for v in data["variables"]])
        for v in data["variables"]:
            table.add_row(Text(v["name"]), _shape(v["shape"]), v["dtype"])
        console.print()
        _print_table(console, table)
    values = sum(int(np.prod(v["shape"], dtype=np.int64)) for v in data["variables"])
    console.print(Text(f"{len(data['variables'])} variable(s), {values:,} values"))
    return OK


# -- doctor ----------------------------------------------------------------------------


def _doctor_data() -> dict[str, Any]:
    from kerasave import _internals, _support

    found = _support.versions()
    paths = _internals.status()
    return {
        "versions": found,
        "tested": {name: {"oldest": low, "newest": high}
                   for name, (low, high) in _support.TESTED.items()},
        "in_range": {name: _support.in_range(name, found.get(name)) for name in _support.TESTED},
        "supported": _support.supported(found),
        "fast_paths_enabled": _internals.enabled(),
        "fast_paths": {name: entry["on"] for name, entry in paths.items()},
        "fast_path_notes": {name: entry["reason"] for name, entry in paths.items()
                            if not entry["on"]},
    }


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for bug reports and scripts.")
def doctor_command(as_json: bool) -> int:
    """The versions kerasave runs on, whether they are tested, and each fast path.

    Exit code 0 when every version is in the tested range, 1 when one is not.
    KERASAVE_FAST_PATHS=0 turns every fast path off.
    """
    from kerasave import _internals

    with warnings.catch_warnings():  # (a fast path that is off is in the report)
        warnings.simplefilter("ignore", _internals.FastPathWarning)
        data = _doctor_data()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return OK if data["supported"] else NO
    console = _console()
    versions = _table("package", "version", "tested", "in range")
    for name, version in data["versions"].items():
        tested = data["tested"].get(name)
        span = f"{tested['oldest']} - {tested['newest']}" if tested else ""
        mark = "" if tested is None else ("ok" if data["in_range"][name] else "NOT TESTED")
        versions.add_row(Text(name), Text(version or "missing"), Text(span), Text(mark))
    _print_table(console, versions)
    console.print(Text("supported: " + ("yes, every version is in the tested range"
                                        if data["supported"] else
                                        "no: kerasave is not tested on this combination")))
    console.print()
    summaries = _internals.fast_paths()
    paths = _table("fast path", "state", "what it does", names=list(data["fast_paths"]))
    for name, state in data["fast_paths"].items():
        note = data["fast_path_notes"].get(name, "")
        paths.add_row(Text(name), Text("on" if state else "off"),
                      Text(summaries[name] + (f" (off: {note})" if note else "")))
    _print_table(console, paths)
    if not data["fast_paths_enabled"]:
        console.print(Text(f"{_internals.ENV}=0: every operation uses Keras' and "
                           "TensorFlow's public API only"))
    return OK if data["supported"] else NO


# -- verify ----------------------------------------------------------------------------


def _loaded_fingerprints(model: Any) -> set[Any]:
    variables = list(getattr(model, "variables", []))
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += list(optimizer.variables)
    variables += list(getattr(model, "metrics_variables", []) or [])
    return {_arrays.fingerprint(np.asarray(v.numpy())) for v in variables}


def _probe_model(model: Any) -> str:
    try:
        ran = _arrays.run_probe(model)
    except Exception as exc:  # loads, but cannot run: the artifact is not usable
        raise _No(f"the loaded model does not run on a probe batch: {exc}") from exc
    return "runs on a probe batch" if ran else "no input shapes known: not run"


def _probe_served(served: Any) -> str:
    signature = getattr(served, "signatures", {}).get("serving_default")
    if signature is None:
        return "no serving_default signature: not run"
    _, specs = signature.structured_input_signature
    if any(spec.shape.rank is None for spec in specs.values()):
        return "inputs of unknown rank: not run"
    feed = {name: np.zeros([1 if d is None else d for d in spec.shape],
                           dtype=spec.dtype.as_numpy_dtype) for name, spec in specs.items()}
    try:
        signature(**feed)
    except Exception as exc:
        raise _No(f"the restored object does not serve a probe batch: {exc}") from exc
    return "serves a probe batch"


def _verify_artifact(path: str, fmt: str, kind: str, into: Any, config: str | None) -> list[str]:
    """The facts that make the artifact good; raises _No (or KerasaveError) otherwise."""
    facts = []
    status = _arrays.integrity(path)
    if not status.ok:
        raise _No(status.detail)
    facts.append(f"manifest: {status.detail}" if status.present else status.detail)
    ks.inspect(path)
    stored: dict[Any, str] = {}
    count = 0
    for name, value in _arrays.stored_arrays(path):
        stored.setdefault(_arrays.fingerprint(value), name)
        count += 1
    if kind != "config":
        facts.append(f"{count} arrays read")

    if kind == "config":
        model = ks.load_config(path)
        facts.append(f"rebuilds a {type(model).__name__} with {len(model.weights)} weights")
    elif kind == "model" and fmt in _arrays.WHOLE:
        if config:
            _note(f"--config is not used: {path} holds its own architecture")
        model = ks.load_model(path)
        loaded = _loaded_fingerprints(model)
        missing = [n for fp, n in stored.items() if fp not in loaded]
        if missing and all("optimizer" in n.split("/")[0] for n in missing):
            raise _No(f"its optimizer state ({len(missing)} of the {len(stored)} distinct "
                      "stored arrays) does not load: the model comes back with a fresh "
                      "optimizer, so resumed training would not match")
        if missing:
            raise _No(f"{len(missing)} of the {len(stored)} distinct stored arrays are not in "
                      f"the loaded model (e.g. {missing[0]}): it does not load as saved")
        facts.append(f"loads with all {count} arrays")
        facts.append(_probe_model(model))
    elif fmt == "savedmodel":
        served = ks.load_model(path)
        loaded = {_arrays.fingerprint(np.asarray(v.numpy())) for v in served.variables}
        missing = [n for fp, n in stored.items() if fp not in loaded]
        if missing:
            raise _No(f"{len(missing)} stored arrays are not in the restored object "
                      f"(e.g. {missing[0]})")
        facts.append("loads")
        facts.append(_probe_served(served))
    elif fmt == "checkpoint":
        recorded = (_arrays.checkpoint_manifest(path).get("optimizer") or {})
        if recorded.get("built"):
            saved = _arrays.read(path).optimizer or {}
            if len(saved) != recorded.get("variables"):
                raise _No(f"kerasave recorded {recorded.get('variables')} optimizer "
                          f"variables, the checkpoint holds {len(saved)}")
    if into is not None and (kind == "weights" or fmt == "savedmodel"):
        # All or nothing, so every saved array fits a variable of the architecture.
        _arrays.read(path, into=into, architecture_name=config)
        facts.append(f"loads into the architecture of {config}")
    return facts


@cli.command("verify")
@click.argument("path")
@click.option("--config", metavar="CONFIG",
              help="An architecture (.json/.yaml config, .keras or .h5 model) to load weights "
                   "into, for weights-only artifacts.")
def verify_command(path: str, config: str | None) -> int:
    """Check the artifact at PATH on its own: manifest, every array, loading.

    Prints one "ok" line and exits 0 when it is good; exits 1 with the reason
    on stderr when it is not.
    """
    bad = (_No, ks.CorruptArtifactError, ks.UnsafeArtifactError, ks.NotSerializableError,
           ks.ArchitectureMismatchError)
    try:  # nothing there or no format at all is an error (2); damage is a "no" (1)
        fmt, kind = _arrays.describe(path)
    except bad as exc:
        raise _No(f"{path} failed verification: {exc}") from exc
    into = _arrays.architecture(config) if config else None
    try:
        with _status(f"verifying {path}"):
            facts = _verify_artifact(path, fmt, kind, into, config)
    except bad as exc:
        raise _No(f"{path} ({fmt} {_kind_word(fmt, kind)}) failed verification: {exc}") from exc
    click.echo(f"ok: {path} ({fmt} {_kind_word(fmt, kind)}): " + "; ".join(facts))
    return OK


# -- diff ------------------------------------------------------------------------------


def _layout(entry: _arrays.Entry) -> str:
    """``(64, 10) float32``, or ``A -> B`` when the sides differ in shape or dtype."""
    a = None if entry.a_shape is None else f"{_shape(entry.a_shape)} {entry.a_dtype}"
    b = None if entry.b_shape is None else f"{_shape(entry.b_shape)} {entry.b_dtype}"
    if a is None or b is None or a == b:
        return a or b or "-"
    return f"{a} -> {b}"


def _json_number(value: float | None) -> float | str | None:
    """A difference as JSON holds it: infinities and NaN (no JSON numbers) as strings."""
    if value is None or np.isfinite(value):
        return value
    return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")


def _diff_data(left: _arrays.Arrays, right: _arrays.Arrays,
               result: _arrays.Comparison) -> dict[str, Any]:
    """What ``diff --json`` prints."""
    def side(arrays: _arrays.Arrays) -> dict[str, Any]:
        return {"path": str(arrays.path), "format": arrays.format, "kind": arrays.kind,
                "naming": arrays.naming, "names": arrays.names,
                "optimizer_state": arrays.optimizer is not None}

    def entry(e: _arrays.Entry) -> dict[str, Any]:
        return {"name": e.name, "status": e.status,
                "a": None if e.a_shape is None else {"shape": list(e.a_shape),
                                                     "dtype": e.a_dtype},
                "b": None if e.b_shape is None else {"shape": list(e.b_shape),
                                                     "dtype": e.b_dtype},
                "max_abs": _json_number(e.max_abs), "max_rel": _json_number(e.max_rel)}

    counts = {s: result.count(s) for s in _STATUS}
    return {"identical": result.identical, "fits": True, "a": side(left), "b": side(right),
            "counts": counts, "entries": [entry(e) for e in result.entries],
            "notes": list(result.notes)}


_STATUS = {"same": "same", "changed": "changed", "shape": "shape", "dtype": "dtype",
           "missing": "only in A", "extra": "only in B"}


@cli.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--config", metavar="CONFIG",
              help="An architecture (.json/.yaml config, .keras or .h5 model) to read "
                   "weights-only artifacts into, so their names line up.")
@click.option("--all", "show_all", is_flag=True, help="List identical variables too.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: both sides, every variable (identical ones too), notes.")
def diff_command(a: str, b: str, config: str | None, show_all: bool, as_json: bool) -> int:
    """Compare the variables of two artifacts, of any formats that hold weights.

    Exit 0 when every variable is identical bit for bit, 1 when anything
    differs, 2 on an error.
    """
    console = _console()
    try:
        with _status(f"reading {a} and {b}"):
            left, right = _arrays.read_pair(a, b, config=config)
    except _arrays.DoesNotFit as exc:
        if as_json:
            click.echo(json.dumps({"identical": False, "fits": False,
                                   "reason": _one_line(str(exc))}, indent=2))
        else:
            console.print(Text(f"different: {_one_line(str(exc))}"))
        return NO
    except _arrays.NeedsArchitecture as exc:
        raise _arrays.NeedsArchitecture(
            f"{exc}; pass --config MODEL.json (or a .keras file) to read both into one "
            "architecture") from exc
    result = _arrays.compare(left, right)
    if as_json:
        click.echo(json.dumps(_diff_data(left, right, result), indent=2, allow_nan=False))
        return OK if result.identical else NO
    console.print(Text(f"A  {left.path}  ({left.format}, {left.names})"))
    console.print(Text(f"B  {right.path}  ({right.format}, {right.names})"))
    shown = [e for e in result.entries if show_all or e.status != "same"]
    if shown:
        table = _table("variable", "status", "shape and dtype", "max abs diff",
                       "max rel diff", right=("max abs diff", "max rel diff"),
                       names=[e.name for e in shown])
        for e in shown:
            table.add_row(Text(e.name), _STATUS[e.status], _layout(e), _number(e.max_abs),
                          _number(e.max_rel))
        console.print()
        _print_table(console, table)
        console.print()
    for note in result.notes:
        console.print(Text(f"note: {note}"))
    n = len(result.entries)
    n_opt = sum(e.name.startswith("optimizer/") for e in result.entries)
    if result.identical:
        console.print(Text(f"identical: {n} variables bit-exact ({n - n_opt} model, "
                           f"{n_opt} optimizer)"))
        return OK
    parts = [f"{result.count(s)} {word}" for s, word in (
        ("changed", "changed"), ("shape", "with another shape"), ("dtype", "with another dtype"),
        ("missing", "only in A"), ("extra", "only in B")) if result.count(s)]
    console.print(Text(f"different: {', '.join(parts)}; {result.count('same')} of {n} "
                       "identical"))
    return NO


# -- convert ---------------------------------------------------------------------------


def _destination_kind(dst: str, as_: str | None) -> str:
    if as_:
        return as_
    name = Path(dst).name.lower()
    if name.endswith(".weights.h5"):
        return "weights"
    if name.endswith((".keras", ".h5", ".hdf5")):
        return "model"
    if name.endswith((".json", ".yaml", ".yml")):
        return "config"
    raise click.UsageError(
        f"cannot tell what to write at {dst!r} from its name: add --as weights (a TF "
        "checkpoint prefix) or --as model (a SavedModel directory)")


def _exists(path: str) -> bool:
    p = Path(path)
    return p.exists() or p.with_name(p.name + ".index").exists()


@cli.command("convert")
@click.argument("src")
@click.argument("dst")
@click.option("--config", metavar="CONFIG",
              help="The architecture (.json/.yaml config, .keras or .h5 model) for a source "
                   "that holds weights only (checkpoint, .weights.h5, SavedModel).")
@click.option("--as", "as_", type=click.Choice(["weights", "model", "config"]),
              help="What to write at DST (default: from its suffix: .weights.h5 weights; "
                   ".keras, .h5, .hdf5 model; .json, .yaml, .yml config).")
@click.option("--force", is_flag=True, help="Replace an artifact already at DST.")
def convert_command(src: str, dst: str, config: str | None, as_: str | None,
                    force: bool) -> int:
    """Convert the artifact SRC into another format at DST, verified.

    The result is written with kerasave's save functions (verified by a round
    trip), then compared with SRC variable by variable.
    """
    fmt, kind = _arrays.describe(src)
    target = _destination_kind(dst, as_)
    if Path(src).resolve() == Path(dst).resolve():
        raise click.UsageError("SRC and DST are the same path")
    if _exists(dst) and not force:
        raise click.UsageError(f"{dst} already exists; pass --force to replace it")
    with _status(f"reading {src}"):
        if kind == "config":
            if target != "config":
                raise click.UsageError(
                    f"{src} is a {fmt} config: it holds no weights, so it converts to a "
                    ".json/.yaml config only")
            model = ks.load_config(src)
        elif fmt in _arrays.WHOLE and kind == "model":
            if config:
                _note(f"--config is not used: {src} holds its own architecture")
            model = ks.load_model(src)
        else:
            if not config:
                raise click.UsageError(
                    f"{src} ({fmt}) holds weights only: pass --config MODEL.json (or a .keras "
                    "or .h5 model) for its architecture")
            model = _arrays.load_weights_into(_arrays.architecture(config), src)
            if fmt != "savedmodel" and ks.inspect(src).has_optimizer and \
                    getattr(model, "optimizer", None) is None:
                _note(f"the optimizer state in {src} is not converted: the architecture "
                      f"from {config} has no optimizer (a .keras or .h5 model as --config "
                      "keeps it)")
    save = {"weights": ks.save_weights, "model": ks.save_model, "config": ks.save_config}[target]
    try:
        with _status(f"writing and verifying {dst}"):
            report = save(model, dst)
    except ks.RoundTripError as exc:
        click.echo(str(exc.report))
        raise _No(str(exc)) from exc
    click.echo(str(report))
    if target == "config":
        return OK
    with _status(f"comparing {dst} with {src}"):
        left, right = _arrays.read_pair(src, dst, config=config)
        result = _arrays.compare(left, right)
    if not result.identical:
        bad = [e for e in result.entries if e.status != "same"]
        raise _No(f"{dst} differs from {src}: {len(bad)} variables, e.g. {bad[0].name} "
                  f"({_STATUS[bad[0].status]})")
    click.echo(f"{src} -> {dst}: {len(result.entries)} variables bit-exact")
    return OK


# -- entry point -----------------------------------------------------------------------


def _show_warnings(caught: list[warnings.WarningMessage]) -> None:
    seen = Counter[str]()
    for w in caught:
        if not issubclass(w.category, UserWarning):
            continue
        text = _one_line(str(w.message))
        if not seen[text]:
            click.echo(f"kerasave: warning: {text}", err=True)
        seen[text] += 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    state = _State()
    args = list(sys.argv[1:] if argv is None else argv)
    message, code, error = None, OK, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = cli.main(args, prog_name="kerasave", standalone_mode=False, obj=state)
            code = int(result) if isinstance(result, int) else OK
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help(), err=True)
            code = ERROR
        except click.ClickException as exc:
            message, code = exc.format_message(), exc.exit_code
            if isinstance(exc, click.UsageError):
                message += " (see kerasave --help)"
        except click.exceptions.Abort:
            message, code = "aborted", 130
        except KeyboardInterrupt as exc:
            message, code, error = "interrupted", 130, exc
        except _No as exc:
            message, code, error = str(exc), NO, exc
        except ks.KerasaveError as exc:
            message, code, error = str(exc), ERROR, exc
        except Exception as exc:
            message, code, error = f"{type(exc).__name__}: {exc}", ERROR, exc
    _show_warnings(caught)
    if error is not None and state.debug:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    if message is not None:
        hint = "" if state.debug or error is None or isinstance(error, (_No, ks.KerasaveError)) \
            else " (run with --debug for the traceback)"
        click.echo(f"kerasave: error: {_one_line(message)}{hint}", err=True)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
