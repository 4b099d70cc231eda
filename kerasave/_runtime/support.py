"""The versions kerasave is tested on, and how to tell whether this process runs on them.

``.ci/run`` proves two corners of this range on every change: the newest stack
(``make test``, the whole suite) and the oldest (``make test-oldest``: the wheel
installed into its own venv, the round-trip, hostile-input and checkpoint tests).
``setup.cfg`` declares the same bounds; ``tests/test_packaging.py`` holds the two
to each other. ``make test-next`` runs the core tests on the next minor's pinned
pre-releases (``NEXT``), outside that range. Nothing here imports TensorFlow or
Keras: ``kerasave doctor`` reads the installed versions from the packages' metadata.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata

from kerasave._runtime.version import __version__

__all__ = ["TESTED", "NEXT", "NIGHTLIES", "versions", "distributions", "prerelease",
           "in_range", "supported"]

# package: (oldest tested, newest tested minor). The oldest is tested exactly;
# every release of the newest minor is admitted (setup.cfg: < the next minor).
TESTED: dict[str, tuple[str, str]] = {
    "python": ("3.10", "3.11"),
    "tensorflow": ("2.18.1", "2.21"),
    "keras": ("3.12.0", "3.15"),
    "h5py": ("3.11.0", "3.14"),
    "numpy": ("1.26.4", "2.4"),
}


# The next minor's pre-releases ``make test-next`` runs kerasave's core tests on, on
# every change (the Makefile's NEXT_PINS; tests/test_packaging.py holds the two to each
# other). Outside the tested range: an early warning, not a promise.
NEXT: dict[str, tuple[str, str]] = {
    "tensorflow": ("tf-nightly", "2.23.0.dev20261026"),
    "keras": ("keras-nightly", "3.16.0.dev2026102704"),
}

# The distributions that install each package's module (the nightlies install the
# same module under another distribution name).
_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos",
                   "tf-nightly", "tf-nightly-cpu"),
    "keras": ("keras", "keras-nightly"),
    "h5py": ("h5py",),
    "numpy": ("numpy",),
}
NIGHTLIES = ("tf-nightly", "tf-nightly-cpu", "keras-nightly")


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


def distributions() -> dict[str, str | None]:
    """The distribution that installed each dependency's module (``keras-nightly`` for
    Keras' nightly builds, say); None: missing. Where two are installed, the one named
    first in ``_DISTRIBUTIONS`` is reported, as pip's last install wins the files."""
    found: dict[str, str | None] = {}
    for package, dists in _DISTRIBUTIONS.items():
        found[package] = None
        for dist in dists:
            try:
                metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
            found[package] = dist
            break
    return found


def versions() -> dict[str, str | None]:
    """kerasave's, Python's and each dependency's installed version (None: missing),
    whichever distribution installed it (a nightly's too)."""
    found: dict[str, str | None] = {"kerasave": __version__,
                                    "python": platform.python_version()}
    for package, dist in distributions().items():
        found[package] = metadata.version(dist) if dist is not None else None
    return found


def prerelease(package: str, dist: str | None, version: str | None) -> bool:
    """Whether ``dist`` ``version`` is the pre-release ``make test-next`` tests."""
    return package in NEXT and NEXT[package] == (dist, version)


def supported(found: dict[str, str | None] | None = None) -> bool:
    """Whether every version in ``found`` (default: this process's) is in the tested range."""
    found = versions() if found is None else found
    return all(in_range(package, found.get(package)) for package in TESTED)
