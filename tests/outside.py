"""Run test files against an installed kerasave, from outside the source tree.

``python tests/outside.py PYTHON test_a.py test_b.py ...`` copies ``tests/`` (with
its fixtures), ``pyproject.toml`` (pytest's settings), ``setup.cfg`` (the declared
range), the README and ``docs/`` (whose examples tests run) into a temporary
directory and runs pytest there with ``PYTHON``, so ``import kerasave`` can only
find the copy installed in that interpreter's environment;
``KERASAVE_EXPECT_INSTALLED=1`` makes tests/test_packaging.py assert that it did.
``make test-oldest`` uses it with the wheel on the oldest stack.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    python, tests = argv[0], argv[1:]
    with tempfile.TemporaryDirectory(prefix="kerasave-outside-") as tmp:
        shutil.copytree(ROOT / "tests", Path(tmp) / "tests",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "docs", Path(tmp) / "docs")  # (tests run the docs' examples)
        for name in ("pyproject.toml", "setup.cfg", "README.md"):
            shutil.copy(ROOT / name, Path(tmp) / name)
        env = dict(os.environ, KERASAVE_EXPECT_INSTALLED="1", TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("PYTHONPATH", None)
        command = [str(Path(python).absolute()), "-m", "pytest", "-n", "2", "--dist", "loadfile",
                   "-p", "no:cacheprovider", *[f"tests/{name}" for name in tests]]
        return subprocess.call(command, cwd=tmp, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
