"""A victim process for hostile files: ``python victim.py CASES.json``.

Each case (``{"id", "call", "path", "kwargs", "env"}``) is one call of kerasave's
public API on one hostile file, made under limits: the address space this process
maps once TensorFlow is up plus ``HEADROOM`` (RLIMIT_AS: a huge allocation fails
instead of swapping the machine), files of at most ``FILE_LIMIT`` bytes
(RLIMIT_FSIZE) and ``CPU_SECONDS`` of CPU time (RLIMIT_CPU). Before each call it
prints ``start <id>`` and after it one JSON line: the error's type and message, how
long it took, and for ``load_weights`` whether the target model is unchanged. A
case that ends the process (a crash, the CPU limit) is the last ``start`` line.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HEADROOM = 2 * 2**30
FILE_LIMIT = 8 * 2**20
CPU_SECONDS = 240


def _mapped() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_mapped() + HEADROOM, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, resource.RLIM_INFINITY))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (a write past the limit fails instead)


def run(case: dict, ks, np) -> dict:
    call, path, kwargs = case["call"], case.get("path"), case.get("kwargs", {})
    saved = {k: os.environ.get(k) for k in case.get("env", {})}
    os.environ.update(case.get("env", {}))
    out: dict = {"id": case["id"]}
    start = time.perf_counter()
    try:
        if call == "load_weights":
            model = ks.reference_model(seed=1)
            before = [np.array(v.numpy(), copy=True) for v in model.weights]
            try:
                ks.load_weights(model, path, **kwargs)
            finally:
                out["unchanged"] = all(a.tobytes() == np.asarray(b.numpy()).tobytes()
                                       for a, b in zip(before, model.weights))
        elif call == "verify":  # (a check that fails is a report, not an error)
            report = ks.verify(ks.reference_model(seed=1), path, **kwargs)
            out["ok"], out["message"] = report.ok, str(report)
        elif call in ("model_from_json", "model_from_yaml"):
            with open(path, encoding="utf-8") as f:
                getattr(ks, call)(f.read(), **kwargs)
        else:
            getattr(ks, call)(path, **kwargs)
        out["raised"] = None
    except ks.KerasaveError as exc:
        out["raised"], out["message"] = type(exc).__name__, str(exc)
    except BaseException as exc:  # (what must never happen: a foreign error)
        out["raised"], out["message"] = f"foreign {type(exc).__name__}", str(exc)[:500]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out["seconds"] = time.perf_counter() - start
    return out


def main(cases_file: str) -> None:
    import numpy as np

    import kerasave as ks
    from kerasave._runtime.quiet import import_tensorflow

    import_tensorflow()
    ks.reference_model()  # (Keras and TensorFlow warmed up before the limits)
    with open(cases_file) as f:
        cases = json.load(f)
    limit()
    for case in cases:
        print(f"start {case['id']}", flush=True)
        print(json.dumps(run(case, ks, np)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
