"""kerasave on object storage against plain fsspec, on a local S3 server, in one run.

    make bench-remote                                 # 8 and 128 MB, three formats
    .venv/bin/python bench/remote.py --sizes 8,128,512 --repeat 5

Starts moto's S3 server (``tests/s3server.py``) on a free localhost port. For each
size (the models of ``bench/perf.py``: Dense stacks with Adam's slots built) and
format, every round times, in an order that alternates:

- ``kerasave save``: ``save_*`` to ``s3://...`` (written and verified in a local
  staging folder, registered in its manifest, uploaded to the URL's own keys,
  committed by its manifest);
- ``fsspec put``: ``fs.put_file`` of the very files that save uploaded, to fresh
  keys: what the bytes cost to move, with no format and no checks;
- ``kerasave load``: ``load_weights`` into the built model / ``load_model`` from the
  URL (download, size and CRC32C checks, the format's load);
- ``fsspec get``: ``fs.get_file`` of the same objects into a local folder.

It prints the medians and the ratios ``fsspec / kerasave`` (1.0: kerasave costs what
moving the bytes costs; the target is >= 0.8), and, to show where the rest goes,
kerasave's local verified save and local load of the same model.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from kerasave.formats import formats  # noqa: E402  (light: no TensorFlow)

# The weight formats and .keras, from kerasave's format table (kerasave.formats).
FORMATS = {f.label: (f.kind, f.named(f.kind[0])) for f in formats(
    lambda f: f.classic and (f.kind == "weights" or f.label == "keras"))}


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(size: int, fmt: str, repeat: int, bucket: str, work: Path) -> dict[str, list[float]]:
    import fsspec
    from perf import build

    import kerasave as ks

    model = build(size)
    kind, name = FORMATS[fmt]
    save = ks.save_weights if kind == "weights" else ks.save_model
    url = f"{bucket}/{size}/{name}"
    local = work / "local" / name
    local.parent.mkdir(parents=True, exist_ok=True)
    fs, _ = fsspec.core.url_to_fs(bucket)
    times: dict[str, list[float]] = {k: [] for k in (
        "kerasave save", "fsspec put", "kerasave load", "fsspec get", "local save",
        "local load")}

    def load(path: Any) -> None:
        if kind == "weights":
            ks.load_weights(model, path)
        else:
            ks.load_model(path)

    save(model, url)  # warm: the connection pool, the first-call costs
    load(url)
    import json

    def committed() -> list[str]:
        """The objects the artifact's manifest commits (at the URL's own keys)."""
        manifest = json.loads(fs.cat_file(f"{url}.kerasave.json"))
        return [url if name == "." else url + name for name in manifest["files"]]

    now: list[list[str]] = []
    for r in range(repeat):
        objects = committed()
        sources = []
        stage = work / f"get-{r}"
        stage.mkdir()
        for i, obj in enumerate(objects):
            fs.get_file(obj, str(stage / str(i)))
            sources.append(stage / str(i))

        def put(r: int = r, sources: list[Path] = sources) -> None:
            for i, src in enumerate(sources):
                fs.put_file(str(src), f"{bucket}/plain/{size}-{fmt}-{r}-{i}")

        def get(r: int = r) -> None:
            for i, obj in enumerate(now[0]):
                fs.get_file(obj, str(work / f"got-{r}-{i}"))

        pairs = [("kerasave save", lambda: save(model, url)), ("fsspec put", put),
                 ("kerasave load", lambda: load(url)), ("fsspec get", get)]
        if r % 2:
            pairs = [pairs[1], pairs[0], pairs[3], pairs[2]]
        for label, fn in pairs:
            now[:] = [committed()]  # (the objects a save before replaced are gone)
            os.sync()
            times[label].append(_timed(fn))
        os.sync()
        times["local save"].append(_timed(lambda: save(model, local)))
        times["local load"].append(_timed(lambda: load(local)))
        shutil.rmtree(stage)
        for leftover in work.glob("got-*"):
            leftover.unlink()
        fs.rm(f"{bucket}/plain", recursive=True)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,128")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", default=",".join(FORMATS))
    args = parser.parse_args()
    from tests.s3server import S3Server

    server = S3Server()
    server.activate()
    rows = []
    try:
        bucket = server.new_bucket()
        for size in [int(s) for s in args.sizes.split(",")]:
            for fmt in args.formats.split(","):
                with tempfile.TemporaryDirectory(prefix="kerasave-bench-") as work:
                    t = bench(size, fmt, args.repeat, bucket, Path(work))
                med = {k: statistics.median(v) for k, v in t.items()}
                rows.append((size, fmt, med))
                print(f"{size:>5} MB {fmt:<11} save {med['kerasave save']:.3f}s vs put "
                      f"{med['fsspec put']:.3f}s  load {med['kerasave load']:.3f}s vs get "
                      f"{med['fsspec get']:.3f}s  (local: save {med['local save']:.3f}s, "
                      f"load {med['local load']:.3f}s)", flush=True)
    finally:
        server.stop()
    print("\nfsspec / kerasave on the local S3 server (medians; target >= 0.8):")
    for size, fmt, m in rows:
        save, load = m["kerasave save"], m["kerasave load"]
        print(f"  {size:>5} MB {fmt:<11} save {m['fsspec put'] / save:.2f}x"
              f"  load {m['fsspec get'] / load:.2f}x"
              f"   [local save + put: {(m['local save'] + m['fsspec put']) / save:.2f}x,"
              f" get + local load: {(m['fsspec get'] + m['local load']) / load:.2f}x]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
