"""Public names report ``__module__ == "kerasave"``: tracebacks, reprs, ``help()`` and
pickles show the path users import them by, not the private module that defines them."""

from __future__ import annotations

from typing import Any


def public(*objects: Any) -> None:
    for obj in objects:
        obj.__module__ = "kerasave"
