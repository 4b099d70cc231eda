"""Reproduce docs/checkpoints.md's resume table on this machine.

    .venv/bin/python bench/resume.py [CASE...]

Runs every case of the resume corpus (tests/scripts/resume_corpus.py) uninterrupted,
then killed by SIGKILL at the same batch and run again, once resumed by kerasave's
``Checkpoint`` and once by Keras' ``BackupAndRestore`` (same save frequency), and
prints, per case, whether the re-run ended bit for bit where the uninterrupted run
ended (every variable, the History, what the callbacks recorded), and if not, what
differed, or what was refused or warned about.
"""

from __future__ import annotations

import ast
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_resume import Corpus, run_corpus  # noqa: E402

SCRIPT = ROOT / "tests" / "scripts" / "resume_corpus.py"


def cases() -> list[str]:
    """The corpus' cases, in the order the script defines them (read, not imported:
    importing it would import TensorFlow here for nothing)."""
    tree = ast.parse(SCRIPT.read_text())
    found = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)
             and any(isinstance(d, ast.Call) and getattr(d.func, "id", "") == "case"
                     for d in node.decorator_list)]
    return found + ["guide"]


def verdict(corpus: Corpus, name: str) -> str:
    if name in corpus.refused:
        return "refused: " + corpus.refused[name].split(": ")[-1].split(" (path")[0]
    warned = corpus.warnings.get(name, [])
    if name.startswith("unseeded"):  # (its straight run is not reproducible either)
        return "warned" if any("unseeded" in w for w in warned) else "silent"
    keys = None
    if name == "guide":
        import numpy as np

        straight = np.load(corpus.straight / "guide.npz")
        keys = [k for k in straight.files if k.startswith("w")] + ["x:step", "x:rng"]
    differ = corpus.same(name, keys)
    if not differ:
        return "exact" + (" (warned)" if warned else "")
    weights = [k for k in differ if k.startswith("w")]
    history = [k for k in differ if k.startswith("h:")]
    other = [k[2:] for k in differ if k.startswith("x:")]
    parts = ([f"{len(weights)} variables differ"] if weights else ["variables exact"]) + (
        ["History differs"] if history else []) + [f"{k} differs" for k in other]
    return "; ".join(parts)


def main(argv: list[str]) -> None:
    names = argv or cases()
    runs = [n for n in names] + [f"{n}@backup" for n in names if n != "guide"]
    with tempfile.TemporaryDirectory(prefix="kerasave-bench-resume-") as tmp:
        corpus = run_corpus(Path(tmp), runs)
        width = max(map(len, names)) + 2
        print(f"{'case':<{width}}{'kerasave Checkpoint':<32}BackupAndRestore")
        for name in names:
            theirs = "(no fit)" if name == "guide" else verdict(corpus, f"{name}@backup")
            print(f"{name:<{width}}{verdict(corpus, name):<32}{theirs}")


if __name__ == "__main__":
    main(sys.argv[1:])
