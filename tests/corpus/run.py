"""Run the whole corpus in one process: ``python -m tests.corpus.run [--json OUT] [NAME...]``."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kerasave._runtime.quiet import import_tensorflow  # noqa: E402

import_tensorflow()

import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.corpus.models import CASES  # noqa: E402
from tests.corpus.oracle import FORMATS, run_pair, verdict  # noqa: E402


def main(argv: list[str]) -> int:
    out = None
    if argv[:1] == ["--json"]:
        out, argv = argv[1], argv[2:]
    names = argv or list(CASES)
    results = []
    counts: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            case = CASES[name]
            reason = case.skip_reason()
            for fmt in FORMATS:
                if reason:
                    counts["skipped"] += 1
                    continue
                start = time.perf_counter()
                pair = run_pair(case, fmt, Path(tmp) / f"{name}-{fmt}".replace(" ", "_"))
                took = time.perf_counter() - start
                bad = verdict(pair)
                counts[pair.kerasave.status] += 1
                if bad:
                    counts["worse"] += 1
                    if pair.keras.status == "exact" and pair.kerasave.status == "refused":
                        counts["refused where Keras is exact"] += 1
                print(f"{'WORSE' if bad else 'ok   '} {name:32} {fmt:11} {took:5.2f}s "
                      f"kerasave={pair.kerasave} | keras={pair.keras}", flush=True)
                results.append(asdict(pair))
    print(dict(counts))
    if out:
        Path(out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
