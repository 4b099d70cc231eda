"""The tolerance policy: where kerasave compares outputs within a stated tolerance.

Everywhere else kerasave compares bit for bit (``kerasave.compare.verify``): every
variable, config and optimizer slot, and the predictions of a ``.keras`` or
``.h5`` model reloaded in the same Keras, which runs the same kernels on the
same values. Two kinds of artifact run the model some other way, so that float
operations may be reordered and results differ in their last bits:

- a deployment export (ONNX, LiteRT) runs in its own runtime, on its own
  kernels, from a graph a converter rewrote;
- a SavedModel's serving function is a graph TensorFlow's optimizer (Grappler)
  rewrites when it is loaded: it may regroup a chain of additions, for one.

Their outputs are compared element by element, per output tensor ``y``::

    |actual - y| <= atol * max(1, max|y|) + rtol * |y|

with ``rtol = atol = k * eps(dtype)`` (``eps``: the gap from 1.0 to the next
float of the output's dtype):

==========================  ===  ====================
dtype                        k    rtol = atol
==========================  ===  ====================
float64                     128  2.8e-14
float32                     128  1.5e-05
float16                       4  3.9e-03
bfloat16                      4  3.1e-02
integers, bool, strings       -  exact
==========================  ===  ====================

Why these: a float32 or float64 result is a sum of products whose order the
runtime chooses, with every layer adding its rounding: 128 units in the last
place leave room for that through a deep network (for float32 it is the 1e-5
that ONNX converters' own tests use) while a changed weight or a wrong kernel
misses by orders of magnitude. A 16-bit result is computed in float32 and
rounded once at the end (Keras' mixed precision), so a reordering shows only as
a rounding that goes the other way: a few units in the last place of the
16-bit type. The absolute term scales with the output's largest magnitude, so
that values near zero in an output of large values (where a reordered sum
cancels) are judged on that output's scale. A NaN must be a NaN on both sides,
an infinity the same infinity. Integer and boolean outputs must be equal.

A SavedModel gets the tolerance only when its stored variables are bit-exact
with the model's (``kerasave.formats.savedmodel``): the difference then comes
from how the graph computes, never from the values it computes with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kerasave._report import Check

__all__ = ["Tolerance", "Closeness", "tolerance_for", "closeness", "compare_within",
           "describe"]

# Units in the last place allowed, by the dtype's width in bytes.
_ULPS_FULL = 128  # float32, float64
_ULPS_HALF = 4  # float16, bfloat16 (and narrower): computed wider, rounded once


@dataclass(frozen=True)
class Tolerance:
    """What an output of one dtype may differ by: ``atol * max(1, max|y|) + rtol * |y|``."""

    dtype: str
    rtol: float
    atol: float

    def __str__(self) -> str:
        return (f"{self.dtype}: |Δ| ≤ {self.atol:.2g}·max(1, max|y|) + {self.rtol:.2g}·|y|")


def _float_eps(dtype: np.dtype) -> float | None:
    """The machine epsilon of a float dtype (NumPy's or ml_dtypes'), else None."""
    if np.issubdtype(dtype, np.floating):
        return float(np.finfo(dtype).eps)
    if dtype.kind == "V" and dtype.itemsize <= 2:  # bfloat16, float8: ml_dtypes
        try:
            import ml_dtypes

            return float(ml_dtypes.finfo(dtype).eps)
        except (ImportError, ValueError, TypeError):
            return None
    return None


def tolerance_for(dtype: np.dtype | str) -> Tolerance | None:
    """The tolerance of outputs of ``dtype``; None when they must be equal."""
    dtype = np.dtype(dtype)
    eps = _float_eps(dtype)
    if eps is None:
        return None
    k = _ULPS_FULL if dtype.itemsize >= 4 else _ULPS_HALF
    return Tolerance(str(dtype), k * eps, k * eps)


@dataclass(frozen=True)
class Closeness:
    """How one actual output compares with the expected one.

    ``exact``: bit for bit. ``within``: inside the dtype's tolerance (exact
    included). ``max_abs`` = max |actual - expected|, ``max_rel`` = max
    |actual - expected| / |expected| over the elements whose expected value is
    not 0, ``used`` the largest share of the tolerance one element takes (1.0:
    at the limit). ``reason`` says why two arrays cannot be compared at all
    (dtype, shape), or where NaNs and infinities disagree.
    """

    exact: bool
    within: bool
    differing: int = 0
    size: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    used: float = 0.0
    tolerance: Tolerance | None = None
    reason: str = ""


def closeness(expected: np.ndarray, actual: np.ndarray) -> Closeness:
    """``actual`` against ``expected`` under the policy of ``expected``'s dtype."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.dtype != actual.dtype:
        return Closeness(False, False, reason=f"dtype {actual.dtype}, expected {expected.dtype}")
    if expected.shape != actual.shape:
        return Closeness(False, False, reason=f"shape {actual.shape}, expected {expected.shape}")
    size = int(expected.size)
    if expected.tobytes() == actual.tobytes():
        return Closeness(True, True, size=size, tolerance=tolerance_for(expected.dtype))
    tolerance = tolerance_for(expected.dtype)
    if tolerance is None or expected.dtype.kind in "OSUb":
        differing = int(np.count_nonzero(expected != actual)) if expected.dtype.kind != "O" \
            else size
        return Closeness(False, False, differing, size, reason="values differ (must be equal)")
    with np.errstate(all="ignore"):
        y = expected.astype(np.float64)
        x = actual.astype(np.float64)
        nan_y, nan_x = np.isnan(y), np.isnan(x)
        inf_y, inf_x = np.isinf(y), np.isinf(x)
        special = nan_y | nan_x | inf_y | inf_x
        mismatched = (nan_y != nan_x) | ((inf_y | inf_x) & ~(nan_y | nan_x) & (y != x))
        finite = ~special
        diff = np.where(finite, np.abs(x - y), 0.0)
        magnitude = np.abs(np.where(np.isfinite(y), y, 0.0))
        scale = max(1.0, float(magnitude.max())) if magnitude.size else 1.0
        allowed = tolerance.atol * scale + tolerance.rtol * magnitude
        used = float(np.max(diff / allowed)) if diff.size else 0.0
        rel = np.where(finite & (y != 0), diff / np.abs(np.where(y == 0, 1.0, y)), 0.0)
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = float(rel.max()) if rel.size else 0.0
        # (differing: by value, so that 0.0 and -0.0 count as a bit difference only)
        differing = int(np.count_nonzero(finite & (x != y)) + np.count_nonzero(mismatched))
    bad = int(np.count_nonzero(mismatched))
    reason = (f"{bad} NaN or infinite values do not match" if bad else "")
    return Closeness(False, not bad and used <= 1.0, max(differing, 1), size, max_abs,
                     max_rel, used, tolerance, reason)


def describe(close: Closeness) -> str:
    """One output's comparison in words."""
    if close.exact:
        return "bit-exact"
    if close.tolerance is None or (close.reason and not close.max_abs and not close.used):
        return close.reason
    text = (f"{close.differing} of {close.size} values differ, max abs {close.max_abs:.3g}, "
            f"max rel {close.max_rel:.3g}")
    if close.reason:
        return f"{text}; {close.reason}"
    verdict = "within" if close.within else "beyond"
    return f"{text}, {verdict} the tolerance ({close.used:.1%} of it used)"


def compare_within(name: str, pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], *,
                   what: str = "outputs", where: str = "") -> Check:
    """One check over (label, expected, actual) outputs under the tolerance policy.

    The detail states the result either way: bit-exact, or the differences, the
    largest absolute and relative ones and the tolerance they met (or missed),
    per dtype. ``where`` says on what (``"at batch sizes 4 and 1"``).
    """
    results = [(label, closeness(e, a)) for label, e, a in pairs]
    suffix = f" {where}" if where else ""
    counted = f"{len(pairs)} {what[:-1] if len(pairs) == 1 and what.endswith('s') else what}"
    if all(c.exact for _, c in results):
        total = sum(int(np.asarray(e).nbytes) for _, e, _ in pairs)
        return Check(name, True, f"{counted} bit-exact{suffix} ({total:,} bytes)")
    bad = [(label, c) for label, c in results if not c.within]
    if bad:
        shown = "; ".join(f"{label}: {describe(c)}" for label, c in bad[:3])
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        tolerances = _tolerances(c for _, c in bad)
        return Check(name, False, f"{shown}{more}{suffix}" + (
            f"; tolerance {tolerances}" if tolerances else ""))
    differing = sum(c.differing for _, c in results)
    size = sum(c.size for _, c in results)
    max_abs = max(c.max_abs for _, c in results)
    max_rel = max(c.max_rel for _, c in results)
    used = max(c.used for _, c in results)
    return Check(name, True, (
        f"{counted} within tolerance{suffix}, not bit-exact: {differing} of {size} "
        f"values differ, max abs {max_abs:.3g}, max rel {max_rel:.3g}; tolerance "
        f"{_tolerances(c for _, c in results)} met ({used:.1%} of it used)"))


def _tolerances(results: object) -> str:
    seen: dict[str, Tolerance] = {}
    for c in results:  # type: ignore[attr-defined]
        if c.tolerance is not None:
            seen.setdefault(c.tolerance.dtype, c.tolerance)
    return "; ".join(str(t) for t in seen.values())
