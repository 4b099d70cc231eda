"""Reproduce docs/reliability.md's figures on this machine.

    .venv/bin/python bench/reliability.py [--kills N] [--damages N]

Counts, per format: SIGKILLs at random moments during saves of a 25 MB model
after which the path still loaded as one complete version; random damages
(truncations, flipped bytes, spliced garbage) of real artifacts that every
reader refused with CorruptArtifactError (or, when the damage missed the data,
read correctly); and the hostile inputs refused with UnsafeArtifactError.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import h5py  # noqa: E402
import keras  # noqa: E402

import kerasave as ks  # noqa: E402
from kerasave.formats import formats  # noqa: E402
from tests.scripts.kill_saver import big_model  # noqa: E402

SAVER = ROOT / "tests" / "scripts" / "kill_saver.py"
# The classic formats from kerasave's format table, but YAML (json's save, other text).
FORMATS = [(f.label, f.call, f.named(f.kind[0])) for f in formats(
    lambda f: f.classic and f.label != "yaml")]


def kills(call: str, rel: str, n: int, rng: random.Random) -> int:
    survived = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / rel
        for _ in range(n):
            proc = subprocess.Popen([sys.executable, str(SAVER), call, str(path)],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            proc.stdout.readline()
            start = time.perf_counter()
            proc.stdout.readline()
            time.sleep(rng.uniform(0, 2 * (time.perf_counter() - start)))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            try:
                if call == "save_config":
                    ks.load_config(path)
                elif call == "save_weights":
                    ks.load_weights(big_model(), path)
                else:
                    ks.load_model(path)
                survived += 1
            except ks.KerasaveError as exc:
                print(f"  not loadable after a kill: {exc}")
    return survived


def damages(call: str, rel: str, n: int, rng: random.Random) -> tuple[int, int]:
    refused = read_ok = 0
    model = ks.reference_model(seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        original = Path(tmp) / "original"
        getattr(ks, call)(model, original / rel)
        for _ in range(n):
            work = Path(tmp) / "work"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(original, work)
            files = [p for p in (work / rel).parent.rglob("*") if p.is_file()]
            target = rng.choice(files)
            raw = bytearray(target.read_bytes())
            kind = rng.choice(["truncate", "flip", "splice"])
            if kind == "truncate":
                raw = raw[: rng.randrange(len(raw))]
            elif kind == "flip":
                raw[rng.randrange(len(raw))] ^= rng.randrange(1, 256)
            else:
                i = rng.randrange(len(raw))
                raw[i:i + 16] = os.urandom(16)
            target.write_bytes(bytes(raw))
            try:
                if call == "save_config":
                    ks.load_config(work / rel)
                elif call == "save_weights":
                    ks.load_weights(ks.reference_model(seed=1), work / rel)
                else:
                    ks.load_model(work / rel)
                read_ok += 1
            except ks.KerasaveError:
                refused += 1
    return refused, read_ok


def hostile() -> tuple[int, int]:
    cases = []
    tmp = Path(tempfile.mkdtemp())
    lam = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x)])
    lam.compile(optimizer="adam", loss="mse")
    lam.save(tmp / "lambda.keras")
    cases.append(lambda: ks.load_model(tmp / "lambda.keras"))
    (tmp / "evil.yaml").write_text("class_name: Sequential\nconfig: !!python/object/apply:"
                                   "os.system ['true']\n")
    cases.append(lambda: ks.load_config(tmp / "evil.yaml"))
    model = ks.reference_model()
    ks.save_model(model, tmp / "good.keras")
    with zipfile.ZipFile(tmp / "good.keras") as zin, \
            zipfile.ZipFile(tmp / "escape.keras", "w") as z:
        for item in zin.infolist():
            z.writestr(item, zin.read(item.filename))
        z.writestr("../escape", b"x")
    cases.append(lambda: ks.load_model(tmp / "escape.keras"))
    ks.save_weights(model, tmp / "link.weights.h5")
    (tmp / "link.weights.h5.kerasave.json").unlink()
    with h5py.File(tmp / "link.weights.h5", "r+") as f:
        f["layers/x"] = h5py.ExternalLink("/etc/hostname", "/")
    cases.append(lambda: ks.load_weights(ks.reference_model(), tmp / "link.weights.h5"))
    refused = 0
    for case in cases:
        try:
            case()
        except ks.UnsafeArtifactError:
            refused += 1
    shutil.rmtree(tmp, ignore_errors=True)
    return refused, len(cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--damages", type=int, default=50)
    args = parser.parse_args()
    rng = random.Random(0)
    print(f"{'format':<12} {'kills survived':>15} {'damages refused':>16} {'read correctly':>15}")
    for name, call, rel in FORMATS:
        survived = kills(call, rel, args.kills, rng)
        refused, read_ok = damages(call, rel, args.damages, rng)
        print(f"{name:<12} {f'{survived}/{args.kills}':>15} {f'{refused}/{args.damages}':>16} "
              f"{read_ok:>15}", flush=True)
    refused, total = hostile()
    print(f"hostile inputs refused: {refused}/{total}")


if __name__ == "__main__":
    main()
