"""A saver that dies at a given disk step: the crash-point test's child processes.

Reads one JSON request per line on stdin (``case``, ``dir``, ``seed``, ``crash_at``,
``log``, and optionally ``copy_from``, ``units``, ``dump``, ``verify``) and for each forks a
child that copies ``copy_from`` (the old version) into ``dir`` and saves the model
of ``seed`` there with ``kerasave.store.local._hook`` counting the disk steps of
the transaction, ending the process with ``os._exit`` just before step
``crash_at`` (1-based; 0: never). ``dump`` gets the saved model's values (.npz).
Answers one JSON line per request: ``{"crashed": bool, "steps": [...]}`` (the
kinds and names of the steps taken, the crash's last).

TensorFlow is imported once, here, before any op runs, so forking is safe; each
child builds its models itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasave as ks  # noqa: E402
from kerasave.formats import formats  # noqa: E402
from kerasave.store import local  # noqa: E402

CRASHED = 77

# case: (save call, relative path): every format of the format table but the exports
# (a save whose only writer is Keras' model.export), then the manager
CASES = {f.label.replace(" ", "-"): (f.call, f.named(f.kind[0]))
         for f in formats(lambda f: not f.export)}
CASES["manager"] = (None, "ckpts")

# case: what the save call is given besides the model and the path
OPTIONS = {"h5-sharded": {"max_shard_size": 24000 / 1024**3}}  # (two shards)


def version(seed: int, units: int = 64) -> keras.Model:
    """The model of one version (the reference model's layout, ``units`` wide), its
    optimizer state drawn from ``seed`` too, so versions differ everywhere."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(units, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(seed)
    for variable in model.optimizer.variables:
        variable.assign(rng.random(variable.shape).astype(variable.dtype) * 1e-3
                        if variable.dtype != "int64" else seed)
    return model


def save(case: str, model: keras.Model, directory: Path, verify: bool) -> None:
    call, rel = CASES[case]
    if call is None:
        with ks.CheckpointManager(directory / rel, model=model, max_to_keep=2, verify=verify,
                                  step=tf.Variable(int(model.optimizer.iterations), dtype=tf.int64),
                                  ) as manager:
            manager.save()
        return
    getattr(ks, call)(model, directory / rel, verify=verify, **OPTIONS.get(case, {}))


def values(model: keras.Model) -> dict[str, np.ndarray]:
    """What a version holds: every model and optimizer variable, by position."""
    found = {f"w{i}": np.asarray(v) for i, v in enumerate(model.weights)}
    found.update({f"o{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)})
    return found


def child(request: dict) -> None:
    case, directory, crash_at = request["case"], Path(request["dir"]), request["crash_at"]
    if request.get("copy_from"):
        shutil.copytree(request["copy_from"], directory, symlinks=True, dirs_exist_ok=True)
    model = version(request["seed"], request.get("units", 64))
    if request.get("dump"):
        np.savez(request["dump"], **values(model))
    steps: list[list[str]] = []
    lock = threading.Lock()
    log = Path(request["log"])

    def hook(kind: str, path: Path) -> None:
        with lock:
            name = re.sub(r"kerasave-tmp-[0-9a-f]{12}", "kerasave-tmp-T",
                          os.path.relpath(path, directory))
            steps.append([kind, name])
            if len(steps) == crash_at:
                log.write_text(json.dumps(steps))
                os._exit(CRASHED)

    local._hook = hook
    save(case, model, directory, request.get("verify", True))
    local._hook = None
    log.write_text(json.dumps(steps))
    os._exit(0)


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                child(request)
            except BaseException as exc:  # report, never fall back into the loop
                Path(request["log"]).write_text(json.dumps({"error": repr(exc)}))
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        steps = json.loads(Path(request["log"]).read_text())
        print(json.dumps({"code": code, "crashed": code == CRASHED, "steps": steps}),
              flush=True)


if __name__ == "__main__":
    main()
