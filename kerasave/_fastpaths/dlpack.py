"""Memory NumPy and TensorFlow share without copying it (DLPack, both ways).

- Reading: ``aligned`` gives 64-byte-aligned NumPy memory, as ``Loaded``, which
  ``variable.assign`` hands to TensorFlow through DLPack: the variable adopts it
  (one copy from the page cache, none after).
- Writing: ``variable_view`` gives a read-only NumPy view of a CPU variable's
  memory, for a writer to take instead of a copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerasave._fastpaths import attempt

__all__ = ["ALIGN", "Loaded", "aligned", "variable_view"]

ALIGN = 64  # what TensorFlow's CPU kernels expect (EIGEN_MAX_ALIGN_BYTES)


class Loaded(np.ndarray):
    """An array read from a file that TensorFlow may adopt without copying it.

    ``variable.assign(loaded)`` hands TensorFlow this memory through DLPack, and
    the variable keeps it: one copy from the page cache, none after. Nothing else
    holds a reference to it.
    """

    def __tf_tensor__(self, dtype: Any = None, name: Any = None) -> Any:
        from kerasave._runtime.lazy import tf

        base = self.view(np.ndarray)

        def public() -> Any:
            return tf.convert_to_tensor(base, dtype=dtype, name=name)

        if ((dtype is not None and tf.as_dtype(dtype) != tf.as_dtype(base.dtype))
                or not base.flags.c_contiguous or base.ctypes.data % ALIGN
                or base.dtype.kind not in "fiu"):
            return public()
        return attempt("dlpack_adopt",
                       lambda: tf.experimental.dlpack.from_dlpack(base.__dlpack__()), public)


def aligned(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Uninitialized ``Loaded`` memory of ``shape``/``dtype``, starting on ``ALIGN`` bytes."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, np.uint8)
    skip = -raw.ctypes.data % ALIGN
    return raw[skip: skip + nbytes].view(dtype).reshape(shape).view(Loaded)


def variable_view(variable: Any) -> np.ndarray | None:
    """A read-only view of a CPU variable's memory (fast path ``dlpack_views``), or
    None (bfloat16, other devices, or the fast path off): the caller copies it, the
    public twin."""
    if variable.dtype == "bfloat16":
        return None

    def fast() -> np.ndarray | None:
        tensor = variable.value.read_value()
        if "CPU" not in (tensor.device or "CPU"):
            return None
        return np.from_dlpack(_Exported(tensor))

    return attempt("dlpack_views", fast, lambda: None)


class _Exported:
    """A tensor as NumPy's ``from_dlpack`` takes it, through TensorFlow's public
    ``tf.experimental.dlpack`` (an ``EagerTensor`` has no ``__dlpack__`` of its own
    before TensorFlow 2.19)."""

    def __init__(self, tensor: Any) -> None:
        self._tensor = tensor

    def __dlpack__(self, **_: Any) -> Any:
        from kerasave._runtime.lazy import tf

        return tf.experimental.dlpack.to_dlpack(self._tensor)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU, device 0 (variable_view takes CPU tensors only)
