"""CRC32C: of files (in parts, on several cores, or through a mapping), of memory,
and of two parts combined.

The manifests (``kerasave.store.manifest``) record a CRC32C of every file of an
artifact; loads check them before a model sees a byte.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import mmap
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import numpy as np

__all__ = ["crc32c", "crc32c_of", "crc32c_combine"]

_SPLIT = 64 * 2**20  # smaller files are not worth a second thread
_CHUNK = 2**20  # read at a time: small enough to stay in the CPU's caches
_MAPPED_CHUNK = 16 * 2**20


def crc32c(path: Path, *, threads: int = 1, mapped: bool = False) -> str:
    """The CRC32C of a file, as 8 hex digits; large files in ``threads`` parts at once.

    ``mapped`` reads the file through a memory mapping instead of copies: only for
    kerasave's own temporaries, since another program truncating a mapped file
    would kill the process with SIGBUS.
    """
    size = path.stat().st_size
    parts = max(1, min(threads, size // _SPLIT))
    if parts == 1:
        return f"{_crc32c_range(path, 0, size, mapped):08x}"
    bounds = [size * i // parts for i in range(parts + 1)]
    with concurrent.futures.ThreadPoolExecutor(parts, "kerasave-crc32c") as pool:
        crcs = list(pool.map(lambda i: _crc32c_range(path, bounds[i], bounds[i + 1], mapped),
                             range(parts)))
    crc = crcs[0]
    for i in range(1, parts):
        crc = crc32c_combine(crc, crcs[i], bounds[i + 1] - bounds[i])
    return f"{crc:08x}"


def _extend_function() -> Callable[[int, int, int], int] | None:
    """``crc32c_extend`` of the library google-crc32c bundles, called through ctypes, or
    None. The package's own functions take only ``bytes`` (a copy of every chunk) and
    hold the GIL for anything else; through ctypes the CRC reads any memory, mapped
    pages included, with the GIL released, so it runs beside verification."""
    try:
        from google_crc32c import _crc32c  # the C extension, linked to the library

        function = ctypes.CDLL(_crc32c.__file__).crc32c_extend
        function.restype = ctypes.c_uint32
        function.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
        check = np.frombuffer(b"123456789", np.uint8)
        if function(0, check.ctypes.data, check.size) != 0xE3069283:  # the standard check value
            return None
        extend: Callable[[int, int, int], int] = function  # (ctypes: c_uint32 → int)
        return extend
    except (ImportError, OSError, AttributeError, TypeError):
        return None


_EXTEND = _extend_function()


def crc32c_of(memory: np.ndarray) -> int:
    """The CRC32C of an array's bytes (C-contiguous), as an int."""
    flat = np.ascontiguousarray(memory).reshape(-1).view(np.uint8)
    if _EXTEND is None:
        return int(google_crc32c.value(flat.tobytes()))
    return _EXTEND(0, flat.ctypes.data, flat.size) if flat.size else 0


def _crc32c_range(path: Path, start: int, end: int, mapped: bool = False) -> int:
    if end <= start:
        return 0
    if _EXTEND is None:
        checksum = google_crc32c.Checksum()
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0 and (chunk := f.read(min(_CHUNK, left))):
                checksum.update(chunk)
                left -= len(chunk)
        return int.from_bytes(checksum.digest(), "big")
    crc = 0
    with open(path, "rb", buffering=0) as f:
        if mapped:  # a window at a time, so the mapped pages never add up in memory
            for at in range(start, end, _MAPPED_CHUNK):
                low = at - at % mmap.ALLOCATIONGRANULARITY
                length = min(_MAPPED_CHUNK, end - at)
                with mmap.mmap(f.fileno(), at + length - low, access=mmap.ACCESS_READ,
                               offset=low) as pages:
                    window = np.frombuffer(pages, np.uint8)
                    try:
                        crc = _EXTEND(crc, window.ctypes.data + at - low, length)
                    finally:
                        del window  # the mapping closes only once nothing points into it
            return crc
        buffer = np.empty(_CHUNK, np.uint8)
        f.seek(start)
        left = end - start
        while left > 0 and (got := f.readinto(buffer[:min(_CHUNK, left)].data)):
            crc = _EXTEND(crc, buffer.ctypes.data, got)
            left -= got
    return crc


_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC32C of A+B from those of A and B and the length of B (zlib's method)."""
    if len2 <= 0:
        return crc1
    zeros = [_CRC32C_POLY] + [1 << n for n in range(31)]  # appends one zero bit
    for _ in range(3):
        zeros = _gf2_square(zeros)  # 2, 4, then 8 zero bits: one zero byte
    while True:  # append len2 zero bytes to crc1, a power of two at a time
        if len2 & 1:
            crc1 = _gf2_times(zeros, crc1)
        len2 >>= 1
        if not len2:
            return crc1 ^ crc2
        zeros = _gf2_square(zeros)
