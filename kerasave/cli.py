"""The ``kerasave`` command line (also ``python -m kerasave``)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    import kerasave as ks

    out = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="kerasave-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"kerasave {ks.__version__} demo: artifacts in {out}")

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
    return 1 if failures else 0


def _same(a: object, b: object) -> bool:
    import numpy as np

    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(a.weights, b.weights))  # type: ignore[attr-defined]


def _fail(path: Path, what: str):  # type: ignore[no-untyped-def]
    import kerasave as ks

    return ks.Report(str(path), what, False, (ks.Check("restore", False, "values differ"),))


def build_parser() -> argparse.ArgumentParser:
    from kerasave._version import __version__

    parser = argparse.ArgumentParser(
        prog="kerasave",
        description="Save, restore and prove Keras models in every classic format.",
    )
    parser.add_argument("--version", action="version", version=f"kerasave {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="train the tutorial model, save it in every format, restore and verify each",
    )
    demo.add_argument("--dir", help="where the artifacts go (default: a new temporary directory)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
