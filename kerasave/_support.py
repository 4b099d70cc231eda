"""The versions kerasave is tested on, and how to tell whether this process runs on them.

``.ci/run`` proves two corners of this range on every change: the newest stack
(``make test``, the whole suite) and the oldest (``make test-oldest``: the wheel
installed into its own venv, the round-trip, hostile-input and checkpoint tests).
``setup.cfg`` declares the same bounds; ``tests/test_packaging.py`` holds the two
to each other. Nothing here imports TensorFlow or Keras: ``kerasave doctor``
reads the installed versions from the packages' metadata.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata

from kerasave._version import __version__

__all__ = ["TESTED", "versions", "in_range", "supported"]

# package: (oldest tested, newest tested minor). The oldest is tested exactly;
# every release of the newest minor is admitted (setup.cfg: < the next minor).
TESTED: dict[str, tuple[str, str]] = {
    "python": ("3.10", "3.11"),
    "tensorflow": ("2.18.1", "2.21"),
    "keras": ("3.12.0", "3.15"),
    "h5py": ("3.11.0", "3.14"),
    "numpy": ("1.26.4", "2.4"),
}


# The distributions that install each package's module.
_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos"),
    "keras": ("keras",),
    "h5py": ("h5py",),
    "numpy": ("numpy",),
}


def _parts(version: str) -> tuple[int, ...]:
    """``"2.18.1"`` -> (2, 18, 1); a suffix such as ``rc0`` or ``.post1`` is dropped."""
    found = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(p) for p in found.group(0).split(".")) if found else ()


def in_range(package: str, version: str | None) -> bool:
    """Whether ``version`` of ``package`` lies in the tested range."""
    if version is None or package not in TESTED:
        return False
    low, high = TESTED[package]
    have = _parts(version)
    return _parts(low) <= have and have[: len(_parts(high))] <= _parts(high)


def versions() -> dict[str, str | None]:
    """kerasave's, Python's and each dependency's installed version (None: missing)."""
    found: dict[str, str | None] = {"kerasave": __version__,
                                    "python": platform.python_version()}
    for package, dists in _DISTRIBUTIONS.items():
        found[package] = None
        for dist in dists:
            try:
                found[package] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def supported(found: dict[str, str | None] | None = None) -> bool:
    """Whether every version in ``found`` (default: this process's) is in the tested range."""
    found = versions() if found is None else found
    return all(in_range(package, found.get(package)) for package in TESTED)
