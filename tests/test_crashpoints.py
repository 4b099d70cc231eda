"""Crash points enumerated, not sampled: a saving child process is ended at each disk
step of the transaction in turn (each write, fsync, link, rename and unlink), for
every format, saving over nothing and over an old version; after each, the path
reads as exactly the old or exactly the new version (old before one step, new
from it on), and what the dead writer left is never taken for an artifact and is
gone after the next save.

The children come from one process that imported TensorFlow once
(tests/scripts/crash_saver.py) and forks one per crash point; the step hook is
``kerasave.store.local._hook``, through which every disk change of a save goes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasave as ks

from .scripts.crash_saver import CASES, OPTIONS, version  # CASES: case -> (save call, path)

SCRIPT = Path(__file__).parent / "scripts" / "crash_saver.py"
PROBE = np.linspace(-1, 1, 4 * 32, dtype=np.float32).reshape(4, 32)
KINDS = {"write", "fsync", "link", "rename", "unlink", "rmtree"}


class Saver:
    def __init__(self) -> None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        self.proc = subprocess.Popen([sys.executable, str(SCRIPT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env)

    def __call__(self, **request) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, "the crash saver died"
        result = json.loads(answer)
        assert result["code"] in (0, 77), result
        return result

    def close(self) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def saver():
    s = Saver()
    yield s
    s.close()


def _model(units: int = 64) -> keras.Model:
    """A target to load into: a version of its own (seed 0), neither old nor new."""
    return version(0, units)


def _same(expected: dict[str, np.ndarray], model: keras.Model, *, optimizer: bool) -> bool:
    got = {f"w{i}": np.asarray(v) for i, v in enumerate(model.weights)}
    if optimizer:
        got.update({f"o{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)})
    keys = [k for k in expected if optimizer or k.startswith("w")]
    return set(got) == set(keys) and all(
        got[k].dtype == expected[k].dtype and got[k].shape == expected[k].shape
        and got[k].tobytes() == expected[k].tobytes() for k in keys)


def _which(case: str, path: Path, versions: dict[str, dict[str, np.ndarray] | int]) -> str:
    """Which version ``path`` reads as: "old", "new" or "none" (nothing there).
    Anything else (a mix, damage, a temporary taken for the artifact) fails."""
    call, _ = CASES[case]
    try:
        if case == "manager":
            model = _model()
            step = tf.Variable(0, dtype=tf.int64)
            manager = ks.CheckpointManager(path, model=model, max_to_keep=2, step=step)
            restored = manager.restore_or_initialize()
            if restored is None:
                return "none"
            found = [name for name, v in versions.items() if _same(v, model, optimizer=True)]
            assert len(found) == 1, (restored, manager.checkpoints)
            for other in manager.checkpoints:  # every checkpoint listed is whole
                manager.restore(other)
            return found[0]
        if call == "save_config":
            units = ks.load_config(path).layers[0].units
            found = [name for name, v in versions.items() if v == units]
        elif case == "savedmodel":
            loaded = ks.load_model(path)  # (held: the serving function needs its variables)
            served = np.asarray(loaded.serve(PROBE))
            found = [name for name, v in versions.items()
                     if v["p"].tobytes() == served.tobytes()]
        elif call == "save_weights":
            model = _model()
            ks.load_weights(model, path)
            found = [name for name, v in versions.items()
                     if _same(v, model, optimizer=case in ("checkpoint", "h5-sharded"))]
        else:
            found = [name for name, v in versions.items()
                     if _same(v, ks.load_model(path), optimizer=True)]
    except ks.ArtifactNotFoundError:
        return "none"
    assert len(found) == 1, f"{path} reads as neither version ({found})"
    return found[0]


def _after_next_save(case: str, directory: Path) -> None:
    """The next save cleans up after the dead writer and lands normally."""
    call, rel = CASES[case]
    model = _model()
    if case == "manager":
        with ks.CheckpointManager(directory / rel, model=model, max_to_keep=2, verify=False,
                                  step=tf.Variable(0, dtype=tf.int64)) as manager:
            manager.save()
    else:  # (verification reads only: the same steps without it)
        getattr(ks, call)(model, directory / rel, verify=False, **OPTIONS.get(case, {}))
    left = [p.name for p in directory.rglob("*")
            if ".kerasave-tmp-" in p.name or ".kerasave-prev" in p.name]
    assert left == []


def _dumped(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.slow
@pytest.mark.parametrize("start", ["fresh", "overwrite"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_crash_point(saver, tmp_path, case, start):
    rel = CASES[case][1]
    units = {"old": 64, "new": 65} if case in ("json", "yaml") else {"old": 64, "new": 64}
    template = tmp_path / "template"
    template.mkdir()
    if start == "overwrite":
        for seed in ((10, 20) if case == "manager" else (10,)):  # the manager: retention too
            saver(case=case, dir=str(template), seed=seed, units=units["old"], crash_at=0,
                  log=str(tmp_path / "log"), dump=str(tmp_path / "old.npz"))
    request = dict(case=case, seed=2, units=units["new"], copy_from=str(template),
                   log=str(tmp_path / "log"))
    whole = saver(dir=str(tmp_path / "whole"), crash_at=0, dump=str(tmp_path / "new.npz"),
                  **request)
    steps = whole["steps"]
    assert not whole["crashed"] and {k for k, _ in steps} <= KINDS
    # Verification reads and never writes, so the crashing saves skip it (a second
    # each): their disk steps are the same.
    request["verify"] = False
    unverified = saver(dir=str(tmp_path / "unverified"), crash_at=0, **request)
    assert unverified["steps"] == steps
    assert {"write", "fsync", "rename"} <= {k for k, _ in steps}, steps
    if start == "overwrite" and case not in ("savedmodel", "manager"):
        assert "link" in {k for k, _ in steps}  # the old version's backup name
    versions: dict[str, object] = {}
    if case in ("json", "yaml"):
        versions = {"new": units["new"]}
        if start == "overwrite":
            versions["old"] = units["old"]
    else:
        versions = {"new": _dumped(tmp_path / "new.npz")}
        if start == "overwrite":
            versions["old"] = _dumped(tmp_path / "old.npz")
        if case == "savedmodel":
            for v in versions.values():
                model = _model()
                for variable, key in zip(model.weights, sorted(
                        (k for k in v if k.startswith("w")), key=lambda k: int(k[1:]))):
                    variable.assign(v[key])
                v["p"] = np.asarray(model(PROBE))
    assert _which(case, tmp_path / "whole" / rel, versions) == "new"
    seen = []
    for n in range(1, len(steps) + 1):
        directory = tmp_path / f"crash-{n}"
        result = saver(dir=str(directory), crash_at=n, **request)
        assert result["crashed"] and result["steps"] == steps[:n], (n, result["steps"])
        seen.append(_which(case, directory / rel, versions))
        _after_next_save(case, directory)
    before = "old" if start == "overwrite" else "none"
    # One commit point: the old version up to one step, the new one from it on.
    flip = seen.index("new") if "new" in seen else len(seen)
    assert seen == [before] * flip + ["new"] * (len(seen) - flip), list(zip(steps, seen))
