"""Two sets of arrays compared variable by variable, bit for bit (``diff``, ``convert``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Entry", "Comparison", "compare", "fingerprint"]


@dataclass(frozen=True)
class Entry:
    """One variable of a comparison.

    ``status`` is ``same`` (bit for bit), ``changed`` (values), ``shape``, ``dtype``,
    ``missing`` (only in A) or ``extra`` (only in B). The differences are over the
    elements, in float64: ``max_abs`` = max |a - b|, ``max_rel`` = max |a - b| / |a|
    (infinite where a is 0 and b is not), as numpy.testing reports them.
    ``optimizer``: the variable is optimizer state.
    """

    name: str
    status: str
    a_shape: tuple[int, ...] | None = None
    a_dtype: str | None = None
    b_shape: tuple[int, ...] | None = None
    b_dtype: str | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    optimizer: bool = False


@dataclass(frozen=True)
class Comparison:
    entries: tuple[Entry, ...]
    notes: tuple[str, ...]

    @property
    def identical(self) -> bool:
        return all(e.status == "same" for e in self.entries)

    def count(self, status: str) -> int:
        return sum(e.status == status for e in self.entries)


def _numeric(a: np.ndarray) -> bool:
    if np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_:
        return True
    try:  # (bfloat16 and the other ml_dtypes cast to float64 too)
        np.zeros((), a.dtype).astype(np.float64)
    except (TypeError, ValueError):
        return False
    return a.dtype.kind not in "OSUV"


def _differences(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    if not (_numeric(a) and _numeric(b)):
        return None, None
    with np.errstate(all="ignore"):
        x, y = a.astype(np.float64), b.astype(np.float64)
        diff = np.abs(x - y)
        if diff.size == 0:
            return 0.0, 0.0
        rel = np.where(diff == 0, 0.0, diff / np.abs(x))
        return float(np.max(diff)), float(np.max(rel))


def _entry(name: str, a: np.ndarray, b: np.ndarray, optimizer: bool) -> Entry:
    shapes: dict[str, Any] = dict(a_shape=tuple(a.shape), a_dtype=str(a.dtype),
                  b_shape=tuple(b.shape), b_dtype=str(b.dtype), optimizer=optimizer)
    if a.shape != b.shape:
        return Entry(name, "shape", **shapes)
    if a.dtype == b.dtype and a.tobytes() == b.tobytes():
        return Entry(name, "same", **shapes, max_abs=0.0, max_rel=0.0)
    max_abs, max_rel = _differences(a, b)
    return Entry(name, "dtype" if a.dtype != b.dtype else "changed", **shapes,
                 max_abs=max_abs, max_rel=max_rel)


def _compare_group(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray],
                   optimizer: bool) -> list[Entry]:
    entries = []
    for name, value in a.items():
        if name in b:
            entries.append(_entry(name, value, b[name], optimizer))
        else:
            entries.append(Entry(name, "missing", a_shape=tuple(value.shape),
                                 a_dtype=str(value.dtype), optimizer=optimizer))
    for name, value in b.items():
        if name not in a:
            entries.append(Entry(name, "extra", b_shape=tuple(value.shape),
                                 b_dtype=str(value.dtype), optimizer=optimizer))
    return entries


def compare(a_model: Mapping[str, np.ndarray], a_optimizer: Mapping[str, np.ndarray] | None,
            b_model: Mapping[str, np.ndarray], b_optimizer: Mapping[str, np.ndarray] | None,
            notes: tuple[str, ...] = ()) -> Comparison:
    """Every model variable; optimizer variables when both sides hold them (None: a
    side holds no optimizer state)."""
    entries = _compare_group(a_model, b_model, False)
    found = list(notes)
    if a_optimizer is not None and b_optimizer is not None:
        entries += _compare_group(a_optimizer, b_optimizer, True)
    elif a_optimizer is not None or b_optimizer is not None:
        only = "A" if a_optimizer is not None else "B"
        found.append(f"optimizer state is only in {only}: not compared")
    if entries and not any(e.status not in ("missing", "extra") for e in entries):
        found.append("no variable name is on both sides; if these are the same model saved "
                     "by different objects, compare them through an architecture")
    return Comparison(tuple(entries), tuple(found))


def fingerprint(value: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """Dtype, shape and a digest of the bytes: equal exactly when the arrays are."""
    data = np.ascontiguousarray(value)
    return data.dtype.str, tuple(data.shape), hashlib.blake2b(data.tobytes(),
                                                               digest_size=20).digest()
