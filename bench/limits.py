"""What a user feels beyond one save or load, and this machine's limits, in one run.

- Cold start: the wall time of ``kerasave inspect --json`` of the reference model
  in every format, of ``kerasave --help``, and of ``kerasave doctor`` until its
  versions are printed, each a fresh process (median of ``--cold-runs``).
- Fresh-process loads of one large ``.keras`` (``--mmap-size`` MB of variables,
  Adam's slots included): kerasave's copying load, ``mmap=True`` and
  ``keras.saving.load_model``, each followed by its first ``predict`` or by its
  first training step, in a process of its own (imports timed apart).
- The machine's limits for that file, measured in the same run: reading its
  bytes from the page cache into memory touched before, and first-touching as
  much new memory.

``bench/perf.py`` runs this after its sizes (``make bench``); alone:
``.venv/bin/python bench/limits.py --mmap-size 3072``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # (this checkout's kerasave)

from kerasave.formats import formats  # noqa: E402  (light: no TensorFlow)

# The classic formats of kerasave's format table, each at its name in WRITE_SMALL's folder.
ARTIFACTS = {f.label: f.named(f.kind[0]) for f in formats(lambda f: f.classic)}

WRITE_SMALL = """
import json, sys
from pathlib import Path
import kerasave as ks
root = Path(sys.argv[1])
model = ks.reference_model(seed=0)
model.train_on_batch(*ks.reference_data(64, seed=0))
for call, rel in json.loads(sys.argv[2]):
    getattr(ks, call)(model, root / rel)
"""

WRITE_LARGE = """
import sys
import keras, numpy as np
import kerasave as ks
width, depth = int(sys.argv[2]), int(sys.argv[3])
keras.utils.set_random_seed(0)
inputs = keras.Input((width,))
x = inputs
for _ in range(depth):
    x = keras.layers.Dense(width, activation="relu")(x)
model = keras.Model(inputs, x)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
batch = np.random.default_rng(0).random((8, width), dtype=np.float32)
model.train_on_batch(batch, batch)
ks.save_model(model, sys.argv[1])
"""

# A fresh process: import, load (how: argv[2]), then one predict or one training step.
LOAD = """
import json, sys, time
start = time.perf_counter()
import keras, numpy as np
import kerasave as ks
imported = time.perf_counter()
path, how, then = sys.argv[1:4]
if how == "keras":
    model = keras.saving.load_model(path)
else:
    model = ks.load_model(path, mmap=how == "mmap")
loaded = time.perf_counter()
width = model.inputs[0].shape[-1]
batch = np.random.default_rng(1).random((8, width), dtype=np.float32)
if then == "predict":
    model.predict(batch, verbose=0)
else:
    model.train_on_batch(batch, batch)
done = time.perf_counter()
print("RESULT " + json.dumps({"import": imported - start, "load": loaded - imported,
                              "then": done - loaded, "total": done - imported}))
"""

# The machine's limits for a file: its bytes read from the page cache into memory
# touched before, the first touch (one write per page) of as much new memory, and
# the read of its bytes into new memory (the least a copying load does).
LIMITS = """
import json, os, sys, time
import numpy as np
path = sys.argv[1]
size = os.path.getsize(path)
# First, before this process has freed anything (memory it freed comes back cheap):
start = time.perf_counter()
touched = np.empty(size, np.uint8)
touched[::4096] = 1  # one write per page: the first touch alone
touch = time.perf_counter() - start
fresh = np.empty(size, np.uint8)  # new memory too, not touched yet
with open(path, "rb") as f:
    start = time.perf_counter()
    view, done = memoryview(fresh), 0
    while done < size:  # the least a copying load does: read the file into new memory
        done += os.preadv(f.fileno(), [view[done:]], done)
    fresh_read = time.perf_counter() - start
    start = time.perf_counter()
    view, done = memoryview(touched), 0
    while done < size:  # the file from the page cache into memory touched before
        done += os.preadv(f.fileno(), [view[done:]], done)
    read = time.perf_counter() - start
print("RESULT " + json.dumps({"bytes": size, "page_cache_read": read, "first_touch": touch,
                              "fresh_read": fresh_read}))
"""


def _python(code: str, *args: str, timeout: float = 1800) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    if proc.returncode:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["?"])[-1])
    return {}


def _wall(args: list[str], until: str | None = None) -> float:
    """Seconds from starting ``kerasave ARGS`` to its end (or to the first line
    holding ``until``)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "kerasave", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stdout is not None
    seconds = None
    for line in proc.stdout:
        if until is not None and seconds is None and until in line:
            seconds = time.perf_counter() - start
    proc.wait()
    return seconds if seconds is not None else time.perf_counter() - start


def cold_start(runs: int, work: Path) -> dict[str, float]:
    """Median wall seconds of each command, each run a fresh process."""
    _python(WRITE_SMALL, str(work), json.dumps(
        [(f.call, ARTIFACTS[f.label]) for f in formats(lambda f: f.classic)]))
    commands: dict[str, tuple[list[str], str | None]] = {
        f"inspect --json {fmt}": (["inspect", "--json", str(work / rel)], None)
        for fmt, rel in ARTIFACTS.items()}
    commands["inspect keras (table)"] = (["inspect", str(work / ARTIFACTS["keras"])], None)
    commands["--help"] = (["--help"], None)
    commands["doctor (to its versions)"] = (["doctor"], "supported:")
    _wall(["--help"])  # (warms the page cache of the interpreter and packages)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (args, until) in commands.items():
            times[name].append(_wall(args, until))
    return {name: statistics.median(values) for name, values in times.items()}


def fresh_loads(mb: int, work: Path) -> dict[str, Any]:
    """The large ``.keras``: written once, then loaded by fresh processes."""
    width = 8192
    depth = max(1, round(mb * 2**20 / (3 * 4 * width * width)))  # weights + 2 Adam slots
    path = work / "large.keras"
    _python(WRITE_LARGE, str(path), str(width), str(depth))
    out: dict[str, Any] = {"width": width, "depth": depth, "bytes": path.stat().st_size}
    # mmap, three times (the median); the copying loads once each
    for key, how, then, rounds in (("mmap predict", "mmap", "predict", 3),
                                   ("copy predict", "copy", "predict", 1),
                                   ("mmap step", "mmap", "step", 1),
                                   ("copy step", "copy", "step", 1),
                                   ("keras predict", "keras", "predict", 1)):
        found = [_python(LOAD, str(path), how, then) for _ in range(rounds)]
        found.sort(key=lambda r: r["total"])
        out[key] = found[len(found) // 2]
    out["limits"] = _python(LIMITS, str(path))
    return out


def measure(cold_runs: int, mmap_mb: int, where: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kerasave-limits-", dir=where) as work:
        small, large = Path(work) / "small", Path(work) / "large"
        small.mkdir()
        large.mkdir()
        cold = cold_start(cold_runs, small)
        loads = fresh_loads(mmap_mb, large) if mmap_mb else {}
    return {"cold": cold, "loads": loads}


def report(found: dict[str, Any]) -> list[str]:
    """The tables, and the headline lines of targets 3, 4 and 5 (returned)."""
    cold, loads = found["cold"], found["loads"]
    print("\n## Cold start: wall seconds of a fresh `kerasave` process (median)\n")
    for name, seconds in cold.items():
        print(f"  {name:<28} {seconds:6.3f}")
    inspects = {k: v for k, v in cold.items() if k.startswith("inspect")}
    worst = max(inspects.items(), key=lambda kv: kv[1])
    others = max(cold["--help"], cold["doctor (to its versions)"])
    heads = [f"- cold start: `kerasave inspect` of every format, worst {worst[1]:.2f} s "
             f"({worst[0]}); --help and doctor's versions {others:.2f} s [<= 0.5 s]"]
    if loads:
        nbytes, limits = loads["bytes"], loads["limits"]
        print(f"\n## Fresh-process loads of a {nbytes / 2**30:.2f} GiB .keras "
              f"({loads['depth']} x Dense {loads['width']}, Adam's slots included; "
              "seconds, imports apart)\n")
        print(f"  {'load':<15} {'import':>7} {'load':>7} {'then':>7} {'load+then':>10}")
        for key in ("mmap predict", "copy predict", "keras predict", "mmap step", "copy step"):
            r = loads[key]
            print(f"  {key:<15} {r['import']:7.3f} {r['load']:7.3f} {r['then']:7.3f} "
                  f"{r['total']:10.3f}")
        print(f"\n  this machine, for {nbytes / 2**30:.2f} GiB: reading it from the page cache "
              f"{limits['page_cache_read']:.3f} s; first-touching as much new memory "
              f"{limits['first_touch']:.3f} s; reading it into new memory "
              f"{limits['fresh_read']:.3f} s")
        mmap, copy = loads["mmap predict"], loads["copy predict"]
        heads.append(f"- mmap=True: fresh-process load + first predict of the "
                     f"{nbytes / 2**30:.2f} GiB .keras {mmap['total']:.2f} s (copying load "
                     f"{copy['total']:.2f} s, Keras {loads['keras predict']['total']:.2f} s; "
                     f"+ first training step: mmap {loads['mmap step']['total']:.2f} s, "
                     f"copy {loads['copy step']['total']:.2f} s) [<= 1.5 s]")
        heads.append(f"- loads against this machine's limits: the copying load "
                     f"{copy['load']:.2f} s = {copy['load'] / limits['fresh_read']:.2f}x "
                     f"reading the file into new memory ({limits['fresh_read']:.2f} s; the "
                     f"first touch of that memory alone {limits['first_touch']:.2f} s); the "
                     f"mmap load {mmap['load']:.2f} s = "
                     f"{mmap['load'] / limits['page_cache_read']:.2f}x reading the file from "
                     f"the page cache ({limits['page_cache_read']:.2f} s) [printed]")
    return heads


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--mmap-size", type=int, default=3072,
                        help="MB of variables of the large .keras (0: skip)")
    parser.add_argument("--dir")
    args = parser.parse_args()
    for line in report(measure(args.cold_runs, args.mmap_size, args.dir)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
