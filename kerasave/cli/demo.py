"""``kerasave demo``: the tutorial model saved, restored and verified in every format."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

import kerasave as ks
from kerasave.cli._ui import NO, OK, status
from kerasave.formats import formats

__all__ = ["demo"]


@click.command()
@click.option("--dir", "directory", metavar="DIR",
              help="Where the artifacts go (default: a new temporary directory).")
def demo(directory: str | None) -> int:
    """Train the tutorial model, save it in every format, restore and verify each."""
    out = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="kerasave-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"kerasave {ks.__version__} demo: artifacts in {out}")

    with status("training the reference model"):
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

    restorers = {"weights": restore_weights, "config": restore_config, "model": restore_model,
               "serving": restore_served}  # (by what a load gives: the table's ``loads``)
    plan: list[tuple[str, Callable[..., ks.Report], Path, Callable[[Path], ks.Report]]] = [
        (f.label, getattr(ks, f.call), out / f.file, restorers[f.loads])
        for f in formats(lambda f: f.classic)
    ]
    rows = []
    failures = 0
    for label, save, path, restore in plan:
        start = time.perf_counter()
        try:
            with status(f"{label}: saving, restoring and verifying"):
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
