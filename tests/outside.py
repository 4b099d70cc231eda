"""Run test files against an installed kerasave, from outside the source tree.

``python tests/outside.py PYTHON test_a.py test_b.py ...`` copies ``tests/`` (with
its fixtures), ``pyproject.toml`` (pytest's settings), ``setup.cfg`` and the
``Makefile`` (the declared range and pins), the README and ``docs/`` (whose examples
tests run) into a temporary
directory and runs pytest there with ``PYTHON``, so ``import kerasave`` can only
find the copy installed in that interpreter's environment;
``KERASAVE_EXPECT_INSTALLED=1`` makes tests/test_packaging.py assert that it did.
``make test-oldest`` uses it with the wheel on the oldest stack, ``make test-next``
on the next minor's pinned pre-releases.

``python tests/outside.py --requirements WHEEL EXTRA...`` prints the wheel's
requirements with those extras, less TensorFlow and Keras: what ``make test-next``
installs beside the nightlies (whose distributions, ``tf-nightly`` and
``keras-nightly``, pip cannot see as ``tensorflow`` and ``keras``: asking for the
wheel's own requirements would install the releases over them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirements(wheel: str, extras: list[str]) -> list[str]:
    """The wheel's Requires-Dist for ``extras``, TensorFlow and Keras left out."""
    import zipfile
    from email.parser import Parser

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(zf.read(name).decode())
    found = []
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if requirement.name.lower() in ("tensorflow", "keras"):
            continue
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": e}) for e in extras):
            requirement.marker = None
            if str(requirement) not in found:
                found.append(str(requirement))
    return found


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--requirements":
        print("\n".join(requirements(argv[1], argv[2:])))
        return 0
    python, tests = argv[0], argv[1:]
    with tempfile.TemporaryDirectory(prefix="kerasave-outside-") as tmp:
        shutil.copytree(ROOT / "tests", Path(tmp) / "tests",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "docs", Path(tmp) / "docs")  # (tests run the docs' examples)
        for name in ("pyproject.toml", "setup.cfg", "README.md", "Makefile"):
            shutil.copy(ROOT / name, Path(tmp) / name)
        env = dict(os.environ, KERASAVE_EXPECT_INSTALLED="1", TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("PYTHONPATH", None)
        command = [str(Path(python).absolute()), "-m", "pytest", "-n", "2", "--dist", "loadfile",
                   "-p", "no:cacheprovider", *[f"tests/{name}" for name in tests]]
        return subprocess.call(command, cwd=tmp, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
