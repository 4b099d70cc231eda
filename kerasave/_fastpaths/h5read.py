"""Raw reads of HDF5 files and of stored zip members: where the bytes lie, read once.

``member_span`` finds a stored (uncompressed) zip member's bytes; ``Window`` is
a file object over them for h5py; ``Source`` reads the contiguous datasets of
one HDF5 file by their byte offsets (one ``preadv`` into aligned memory, or a
read-only view of the mapped file when the caller says the file is kerasave's
own temporary: ``mapped=True``). ``crc32_span`` checks a member's zip CRC-32,
and ``check_sizes`` refuses, before anything is read, a file whose datasets
are larger than any variable of the model could take.
"""

from __future__ import annotations

import io
import math
import mmap
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kerasave._errors import ArchitectureMismatchError, CorruptArtifactError
from kerasave._fastpaths import Unsupported
from kerasave._fastpaths.dlpack import ALIGN, Loaded, aligned
from kerasave._runtime.lazy import keras

try:  # ISA-L's CRC-32 runs at ~10 GB/s, zlib's at ~1 GB/s; both give the zip's CRC-32
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover
    from zlib import crc32 as _crc32

__all__ = ["LOCAL_HEADER", "WEIGHTS", "Source", "Window", "check_sizes", "crc32_span",
           "member_span", "twin_variables"]

WEIGHTS = "model.weights.h5"  # the weights member of a .keras archive
LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip member's local file header


def member_span(path: Path, zf: zipfile.ZipFile, name: str) -> tuple[int, int]:
    """Where the bytes of a stored (uncompressed) zip member start, and how many."""
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        raise Unsupported(f"{name} is compressed")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(LOCAL_HEADER.size)
    if len(header) != LOCAL_HEADER.size:
        raise CorruptArtifactError(f"truncated zip header of {name}", path=path)
    fields = LOCAL_HEADER.unpack(header)
    if fields[0] != b"PK\x03\x04":
        raise CorruptArtifactError(f"bad zip header for {name}", path=path)
    start = info.header_offset + LOCAL_HEADER.size + fields[9] + fields[10]
    if start + info.file_size > path.stat().st_size:
        raise CorruptArtifactError(f"{name} runs past the end of the archive", path=path)
    return start, info.file_size


class Window(io.RawIOBase):
    """A read-only file object over ``size`` bytes of ``fd`` from ``start``."""

    def __init__(self, fd: int, start: int, size: int) -> None:
        self._fd, self._start, self._size, self._pos = fd, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = max(0, min(len(view), self._size - self._pos))
        if want == 0:
            return 0
        got = os.preadv(self._fd, [view[:want]], self._start + self._pos)
        self._pos += got
        return got


def _read_exact(fd: int, array: np.ndarray, offset: int, path: Path) -> None:
    """Fill ``array`` with the bytes of ``fd`` from ``offset``, or CorruptArtifactError."""
    view = memoryview(array.reshape(-1)).cast("B")  # type: ignore[arg-type]  # (NumPy types its buffer from Python 3.12 on)
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise CorruptArtifactError("the archive ended inside a weights dataset", path=path)
        done += got


class Source:
    """The contiguous, uncompressed HDF5 datasets of one file, by their byte offsets.

    ``array`` reads a dataset with one ``preadv`` into 64-byte-aligned memory that
    TensorFlow adopts (loads), or, when ``mapped``, returns a read-only view of the
    file's pages (verification of a save: nothing is copied or allocated; the page
    cache still holds what was written). ``mapped=True`` says the file is
    kerasave's own temporary, written by this process just now: a file another
    process truncates under a mapping kills the reader with SIGBUS, so a user's
    file is never mapped that way. ``private=True`` (``load_model(..., mmap=True)``)
    maps the file copy-on-write instead: each dataset that starts on ``ALIGN``
    bytes is returned as a ``Loaded`` view of the file's pages, which a variable
    adopts as its memory (one that does not is read into aligned memory); the
    caller asked for the mapping and its risk. ``begin``/``end`` bound the HDF5
    file inside the file at ``fd`` (a zip member), and HDF5 offsets count from
    ``begin``. Anything else
    (chunked, compressed, never written) returns None.
    """

    def __init__(self, fd: int, begin: int, end: int, path: Path, *, mapped: bool = False,
                 private: bool = False):
        self.fd, self.begin, self.end, self.path = fd, begin, end, path
        self.mapped, self.private = mapped, private and not mapped
        self.reads: list[tuple[Any, str]] | None = None  # (array, dataset), when asked
        self._map = None
        if mapped and end > begin:
            self._map = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        elif self.private and end > begin:
            self._map = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE,
                                  prot=mmap.PROT_READ | mmap.PROT_WRITE)

    def window(self) -> Window:
        """The HDF5 file, as a file object for h5py."""
        return Window(self.fd, self.begin, self.end - self.begin)

    def array(self, dataset: h5py.Dataset) -> np.ndarray | None:
        array = self._array(dataset)
        if self.reads is not None:  # (None: read some other way, by the caller)
            self.reads.append((array, dataset.name))
        return array

    def _array(self, dataset: h5py.Dataset) -> np.ndarray | None:
        dtype = dataset.dtype
        if (dataset.chunks is not None or dataset.compression or dataset.shape is None
                or not dtype.isnative or dtype.kind not in "fiucb"):
            return None
        shape = tuple(dataset.shape)
        if int(np.prod(shape, dtype=np.int64)) == 0:
            return aligned(shape, dtype)
        offset = dataset.id.get_offset()
        if offset is None:  # storage never written: the fill value, via h5py
            return None
        return self.raw(offset, shape, dtype, f"dataset {dataset.name}")

    def raw(self, offset: int, shape: tuple[int, ...], dtype: Any, what: str) -> np.ndarray:
        """``shape``/``dtype`` values stored as they are in memory at ``offset`` (from
        ``begin``): a view of the mapped file (``private``: where it is aligned), or
        one ``preadv`` into aligned memory."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:
            return aligned(shape, dtype)
        start = self.begin + offset
        if start + count * dtype.itemsize > self.end:
            raise CorruptArtifactError(f"{what} runs past the end of {self.path.name}",
                                       path=self.path)
        if self._map is not None:
            view = np.frombuffer(self._map, dtype, count, start).reshape(shape)
            if not self.private:
                return view
            if view.ctypes.data % ALIGN == 0:
                return view.view(Loaded)  # (a variable adopts the pages as its memory)
        array = aligned(shape, dtype)
        _read_exact(self.fd, array, start, self.path)
        return array


def crc32_span(fd: int, start: int, size: int, path: Path) -> int:
    """The zip CRC-32 of ``size`` bytes of ``fd`` from ``start``."""
    # (a buffer no larger than the span: zeroing 16 MB costs more than a small file's CRC)
    crc, done, chunk = 0, 0, bytearray(max(1, min(16 * 2**20, size)))
    view = memoryview(chunk)
    while done < size:
        got = os.preadv(fd, [view[: min(len(chunk), size - done)]], start + done)
        if got <= 0:
            raise CorruptArtifactError(f"{WEIGHTS} is truncated", path=path)
        crc = _crc32(view[:got], crc)
        done += got
    return crc


def twin_variables(model: keras.Model) -> list[Any]:
    """Every variable of a model and of its optimizer."""
    found = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and hasattr(optimizer, "variables"):
        found += list(optimizer.variables)
    return found


_SIZE_FLOOR = 16 * 2**20  # what any layer may keep beside its variables (IDF weights...)


def _itemsize(dtype: Any) -> int:
    try:
        return np.dtype(str(dtype)).itemsize
    except TypeError:
        return 8


def check_sizes(model: keras.Model, source: Source) -> None:
    """Shapes before bytes: ``ArchitectureMismatchError`` for a dataset in ``source``
    larger than any variable of ``model`` (or its optimizer, or metrics) could take,
    before Keras' traversal reads anything (it compares each value's shape with
    its variable only once it is read, into memory of the declared shape).

    A layer may keep arrays that are no variable yet (``IndexLookup``'s IDF
    weights): up to ``_SIZE_FLOOR`` bytes each are not refused.
    """
    targets = twin_variables(model) + list(getattr(model, "metrics_variables", None) or [])
    sizes = [(math.prod(v.shape) * _itemsize(v.dtype), v) for v in targets]
    largest = max(sizes, key=lambda item: item[0], default=(0, None))
    limit = max(largest[0], _SIZE_FLOOR)
    found: list[str] = []

    def visit(name: str, obj: Any) -> bool | None:
        if isinstance(obj, h5py.Dataset) and obj.shape is not None:
            declared = math.prod(obj.shape) * obj.dtype.itemsize
            if declared > limit:
                found.append(f"the dataset /{name} declares shape {tuple(obj.shape)} "
                             f"{obj.dtype} ({declared:,} bytes)")
                return True
        return None

    with h5py.File(source.window(), "r") as f:
        f.visititems(visit)
    if found:
        biggest = largest[1]
        what = ("the model has no variables" if biggest is None else
                f"its largest variable, {getattr(biggest, 'path', biggest.name)}, takes "
                f"{tuple(biggest.shape)} {biggest.dtype} ({largest[0]:,} bytes)")
        raise ArchitectureMismatchError(f"{found[0]}: more than any variable of the model can "
                                        f"take ({what})", path=source.path)
