"""TensorFlow's tensor-bundle index (a checkpoint's ``.index``), read without TensorFlow.

The index is a LevelDB-format table of ``BundleEntryProto``: for every saved
tensor, its dtype, shape, data file, offset, size and masked CRC32C. kerasave
reads it to check declared shapes before TensorFlow allocates them
(``check_index``) and to read tensors where they lie (``tensor_locations``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from google.protobuf.message import DecodeError

from kerasave._errors import CorruptArtifactError, foreign_errors
from kerasave._fastpaths.h5read import Source
from kerasave._runtime.lazy import tf
from kerasave.formats._tf import protowire as _protowire

__all__ = ["Location", "Listing", "masked_crc32c", "check_index", "listing", "tensor_locations",
           "tensor_reader", "tensor_loader", "checked_tensors", "dtype_name", "numpy_dtype"]


_TABLE_MAGIC = 0xDB4775248B80FB57  # TensorFlow's (LevelDB's) table footer


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _table_block(data: bytes, at: int, size: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one uncompressed block of a LevelDB-format table,
    once the masked CRC32C of its trailer matches (TensorFlow's reader always checks
    it: ``table::ReadBlock``)."""
    import google_crc32c

    if at + size + 5 > len(data) or data[at + size] != 0:  # trailer: type 0 is stored
        raise ValueError("compressed or truncated index block")
    stored = struct.unpack_from("<I", data, at + size + 1)[0]
    if masked_crc32c(google_crc32c.value(data[at: at + size + 1])) != stored:
        raise ValueError("an index block whose checksum does not match")
    block = data[at: at + size]
    restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 - 4 * restarts
    entries, key, i = [], b"", 0
    while i < end:
        shared, i = _varint(block, i)
        fresh, i = _varint(block, i)
        length, i = _varint(block, i)
        key = key[:shared] + block[i: i + fresh]
        i += fresh
        entries.append((key, block[i: i + length]))
        i += length
    return entries


class Location(NamedTuple):
    """Where a saved tensor's bytes lie, and their CRC32C as TensorFlow masks it."""

    dtype: np.dtype
    shape: tuple[int, ...]
    shard: Path
    offset: int
    masked_crc32c: int


# The names TensorFlow gives the DataTypes that are not plain NumPy ones (types.proto).
_OTHER_NAMES = {
    _protowire.DT_STRING: "string", _protowire.DT_QINT8: "qint8", _protowire.DT_QUINT8: "quint8",
    _protowire.DT_QINT32: "qint32", _protowire.DT_BFLOAT16: "bfloat16",
    _protowire.DT_QINT16: "qint16", _protowire.DT_QUINT16: "quint16",
    _protowire.DT_RESOURCE: "resource", _protowire.DT_VARIANT: "variant",
    **dict(enumerate(("float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz",
                      "float8_e5m2fnuz", "int4", "uint4", "int2", "uint2", "float4_e2m1fn"),
                     start=24)),
}
_FLOAT8_E5M2 = 24  # (the one ml_dtypes type NumPy counts as a float: kind "f")


def dtype_name(enum: int) -> str:
    """TensorFlow's name of a ``DataType`` number (``tf.dtypes.as_dtype(enum).name``);
    TensorFlow itself is asked only for a number kerasave does not know."""
    name = _protowire.NUMPY_NAMES.get(enum) or _OTHER_NAMES.get(enum)
    return name if name is not None else tf.dtypes.as_dtype(enum).name


def numpy_dtype(enum: int) -> np.dtype | None:
    """The NumPy dtype of a plain numeric or bool ``DataType``; None for any other."""
    if enum == _FLOAT8_E5M2:
        import ml_dtypes  # (a second to import: only for a file that holds one)

        return np.dtype(ml_dtypes.float8_e5m2)
    name = _protowire.NUMPY_NAMES.get(enum)
    return None if name is None else np.dtype(name)


def masked_crc32c(crc: int) -> int:
    """TensorFlow's masking of a stored CRC32C (``crc32c::Mask``)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _index(prefix: Path, *, any_endianness: bool = False) -> tuple[dict[str, Any], int]:
    """The checkpoint's ``.index`` (a LevelDB-format table of ``BundleEntryProto``):
    every entry by key, and how many data files there are. Any surprise in the
    table raises ``ValueError``."""
    data = prefix.with_name(prefix.name + ".index").read_bytes()
    if len(data) < 48 or struct.unpack_from("<Q", data, len(data) - 8)[0] != _TABLE_MAGIC:
        raise ValueError("not a TensorFlow table")
    footer = data[-48:]
    _, at = _varint(footer, 0)  # the metaindex handle: unused
    _, at = _varint(footer, at)
    index_at, at = _varint(footer, at)
    index_size, _ = _varint(footer, at)
    entries: dict[str, Any] = {}
    shards = None
    for _, handle in _table_block(data, index_at, index_size):
        block_at, i = _varint(handle, 0)
        block_size, _ = _varint(handle, i)
        for key, value in _table_block(data, block_at, block_size):
            if key == b"":
                header = _protowire.bundle_header(value)
                if (header.endianness != _protowire.BundleHeaderProto.LITTLE
                        and not any_endianness):
                    raise ValueError("big-endian checkpoint")
                shards = header.num_shards
                continue
            entries[key.decode()] = _protowire.bundle_entry(value)
    if not shards:
        raise ValueError("no bundle header")
    return entries, shards


def _shard(prefix: Path, entry: Any, shards: int) -> Path:
    return prefix.with_name(f"{prefix.name}.data-{entry.shard_id:05d}-of-{shards:05d}")


# The fixed-size DataTypes TensorFlow's reader knows, by their size; strings and
# variants are read element by element; float8 and 4-bit types are judged by count.
_FIXED = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 8: 8, 9: 8, 10: 1, 11: 1, 12: 1, 13: 4, 14: 2,
          15: 2, 16: 2, 17: 2, 18: 16, 19: 2, 22: 4, 23: 8, 24: 1}
_READABLE = frozenset(_FIXED) | {_protowire.DT_STRING, _protowire.DT_VARIANT,
                                 *range(25, 34)}
_MAX_RANK = 254  # TensorShape's own bound
_MAX_ELEMENTS = 2**63 - 1


def _declaration_problem(entry: Any) -> str | None:
    """What in an entry's dtype or shape TensorFlow's reader cannot take (it fails a
    CHECK and aborts the process on a negative or overflowing shape, too many
    dimensions, or a dtype it does not know); None when nothing."""
    shape = [int(d.size) for d in entry.shape.dim]
    if len(shape) > _MAX_RANK:
        return f"declares {len(shape)} dimensions (at most {_MAX_RANK})"
    if any(d < 0 for d in shape):
        return f"declares shape {tuple(shape)}"
    if int(np.prod(shape, dtype=object)) > _MAX_ELEMENTS:
        return f"declares shape {tuple(shape)}, more elements than a tensor can hold"
    if entry.dtype not in _READABLE:
        return f"declares dtype number {entry.dtype}, not one a checkpoint can hold"
    return None


def check_index(prefix: Path) -> None:
    """Shapes before bytes: ``CorruptArtifactError`` for a tensor whose ``.index``
    entry declares a size other than its shape's, or bytes past the end of its
    data file. TensorFlow's reader allocates a tensor of the declared shape
    before it reads a byte; each shape is compared with its variable's later,
    and must then be what the data files can hold. Nothing but the index is read.
    """
    with foreign_errors(prefix, "an index kerasave cannot check"):
        entries, shards = _index(prefix, any_endianness=True)
    sizes: dict[Path, int] = {}
    for key, entry in entries.items():
        if entry.slices:
            continue  # (a partitioned variable: its slices are entries of their own)
        shard = _shard(prefix, entry, shards)
        if shard not in sizes:
            try:
                sizes[shard] = shard.stat().st_size
            except OSError as exc:
                raise CorruptArtifactError(f"the data file of {key} is missing: {exc}",
                                           path=prefix) from exc
        problem = _declaration_problem(entry)
        if problem:  # (TensorFlow's reader ends the process on these: a CHECK fails)
            raise CorruptArtifactError(f"{key} {problem}", path=prefix)
        dtype = numpy_dtype(entry.dtype)
        shape = tuple(int(d.size) for d in entry.shape.dim)
        count = int(np.prod(shape, dtype=object))
        if entry.dtype in _FIXED and dtype is None and count * _FIXED[entry.dtype] != entry.size:
            raise CorruptArtifactError(
                f"{key} declares shape {shape} {dtype_name(entry.dtype)} "
                f"({count * _FIXED[entry.dtype]:,} bytes) but {entry.size:,} stored bytes",
                path=prefix)
        if entry.dtype not in _FIXED and count > 2 * entry.size + 8:
            # A string (a variant, a packed 4-bit type) takes at least a byte per
            # element, or half of one: TensorFlow allocates the elements first.
            raise CorruptArtifactError(
                f"{key} declares {count:,} {dtype_name(entry.dtype)} elements in "
                f"{entry.size:,} stored bytes", path=prefix)
        if dtype is not None:
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if declared != entry.size:
                raise CorruptArtifactError(
                    f"{key} declares shape {shape} {dtype_name(entry.dtype)} "
                    f"({declared:,} bytes) but "
                    f"{entry.size:,} stored bytes", path=prefix)
        if entry.offset + entry.size > sizes[shard]:
            raise CorruptArtifactError(
                f"{key} declares {entry.size:,} bytes at offset {entry.offset:,}, past the "
                f"end of {shard.name} ({sizes[shard]:,} bytes)", path=prefix)


def tensor_locations(prefix: Path) -> dict[str, Location]:
    """Where each plain tensor's bytes lie (``Location``), by key.

    Read from the checkpoint's ``.index`` (``_index``). Tensors stored another way
    (strings, slices) are left out; any surprise in the table raises ``ValueError``.
    """
    entries, shards = _index(prefix)
    found = {}
    for key, entry in entries.items():
        dtype = numpy_dtype(entry.dtype)
        if entry.slices or dtype is None:
            continue
        shape = tuple(int(d.size) for d in entry.shape.dim)
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != entry.size:
            continue
        shard = _shard(prefix, entry, shards)
        found[key] = Location(dtype, shape, shard, int(entry.offset), int(entry.crc32c))
    return found


class Listing(NamedTuple):
    """What a checkpoint holds, read from its ``.index`` alone (``listing``)."""

    shapes: dict[str, tuple[int, ...]]  # every saved tensor's shape, by key
    dtypes: dict[str, str]  # and its dtype, by TensorFlow's name
    graph: bytes | None  # the object graph's serialized bytes (None: there is none)


def listing(prefix: Path, graph_key: str) -> Listing | None:
    """Every saved tensor's shape and dtype, and the object graph's bytes (the
    string tensor under ``graph_key``, its CRC32C checked), without TensorFlow.

    None when anything is not plain: a table or header kerasave cannot read, a
    partitioned tensor, a graph that is not one string or whose bytes do not
    match their CRC32C, a data file too short. The caller then asks TensorFlow's
    reader, which says what is wrong in its own words.
    """
    try:
        entries, shards = _index(prefix)
        if any(entry.slices for entry in entries.values()):
            return None
        shapes = {key: tuple(int(d.size) for d in entry.shape.dim)
                  for key, entry in entries.items()}
        dtypes = {key: dtype_name(entry.dtype) for key, entry in entries.items()}
        entry = entries.get(graph_key)
        if entry is None:
            return Listing(shapes, dtypes, None)
        if entry.dtype != _protowire.DT_STRING or entry.shape.dim:
            return None
        with open(_shard(prefix, entry, shards), "rb") as f:
            raw = os.pread(f.fileno(), entry.size, entry.offset)
        graph = _string_scalar(raw, entry.crc32c)
    except (OSError, ValueError, IndexError, struct.error, DecodeError):
        return None
    return None if graph is None else Listing(shapes, dtypes, graph)


def _string_scalar(raw: bytes, masked: int) -> bytes | None:
    """A scalar string tensor as a bundle stores it (``WriteStringTensor``: the
    varint length, the masked CRC32C of the length as 4 bytes, the bytes), or None
    when it is not one or its CRC32C does not match the entry's."""
    import google_crc32c

    length, at = _varint(raw, 0)
    if at + 4 + length != len(raw) or length > 0xFFFFFFFF:
        return None
    crc = google_crc32c.value(struct.pack("<I", length))
    if struct.unpack_from("<I", raw, at)[0] != masked_crc32c(crc):
        return None
    crc = google_crc32c.extend(crc, raw[at: at + 4 + length])
    return raw[at + 4:] if masked_crc32c(crc) == masked else None


def tensor_reader(prefix: Path, reader: Any, *,
                  mapped: bool = False) -> Callable[[str], np.ndarray]:
    """Saved tensors by key, for verification.

    ``mapped``: the checkpoint is kerasave's own temporary, written by this process
    just now, so the tensors are read-only views of the data files' pages where it
    can, compared with the live variables where they lie: no copy and no
    allocation (the page cache holds what was just written). Otherwise (a user's
    files, which another process could truncate under a mapping) TensorFlow's
    reader reads them.
    """
    return _located(prefix, reader, mapped=True) if mapped else (
        lambda key: np.asarray(reader.get_tensor(key)))


def tensor_loader(prefix: Path, reader: Any, *, checksummed: bool) -> Callable[[str], Any]:
    """Saved tensors by key, for loading.

    When every byte of the files was just checked against kerasave's manifest
    (``checksummed``), each tensor is read with one ``preadv`` into memory that
    TensorFlow adopts on ``assign``: one copy instead of TensorFlow's reader's
    two. Otherwise (plain TensorFlow checkpoints, strings, slices) TensorFlow's
    reader reads it and checks the tensor's own CRC32C.
    """
    return _located(prefix, reader, mapped=False) if checksummed else reader.get_tensor


def _located(prefix: Path, reader: Any, *, mapped: bool) -> Callable[[str], Any]:
    """Tensors read where the ``.index`` says they lie (``Source``: mapped
    views or aligned reads); TensorFlow's reader for the rest, or for all of them
    when the index holds a surprise."""
    try:
        where = tensor_locations(prefix)
    except (OSError, ValueError, IndexError, struct.error, DecodeError):
        where = {}
    maps = {}
    try:
        for shard in {found.shard for found in where.values()} if mapped else ():
            with open(shard, "rb") as f:  # a mapping outlives its descriptor
                maps[shard] = Source(f.fileno(), 0, os.fstat(f.fileno()).st_size, shard,
                                     mapped=True)
    except OSError:  # a shard gone: TensorFlow's reader reports it, in the check
        where, maps = {}, {}

    def read(key: str) -> Any:
        found = where.get(key)
        if found is None:
            return np.asarray(reader.get_tensor(key))
        dtype, shape, shard, offset, _ = found
        if mapped:
            return maps[shard].raw(offset, shape, dtype, key)
        with open(shard, "rb") as f:
            return Source(f.fileno(), 0, os.fstat(f.fileno()).st_size,
                          shard).raw(offset, shape, dtype, key)

    return read


def checked_tensors(prefix: Path, reader: Callable[[], Any]) -> Callable[[str], np.ndarray]:
    """Saved tensors by key, one at a time, for reading without a model.

    Where the ``.index`` says plainly where a tensor lies (``tensor_locations``:
    a plain dtype whose declared size is the stored size, which ``check_index``
    compared with the data file), it is read with one ``preadv`` into memory of
    that size and its CRC32C compared with the entry's, as TensorFlow's reader
    compares it: without TensorFlow. The rest (strings, slices, an index with a
    surprise) come from TensorFlow's reader (``reader()``, asked at first need),
    which checks the same CRC32C.
    """
    from kerasave.store.crc import crc32c_of

    try:
        where = tensor_locations(prefix)
    except (OSError, ValueError, IndexError, struct.error, DecodeError):
        where = {}

    def read(key: str) -> np.ndarray:
        found = where.get(key)
        if found is None:
            return np.asarray(reader().get_tensor(key))
        dtype, shape, shard, offset, masked = found
        with open(shard, "rb") as f:
            array = Source(f.fileno(), 0, os.fstat(f.fileno()).st_size,
                           shard).raw(offset, shape, dtype, key)
        if masked_crc32c(crc32c_of(array)) != masked:
            raise CorruptArtifactError(
                f"the saved tensor {key} does not match its CRC32C (in {shard.name})",
                path=prefix)
        return np.asarray(array)  # (plain memory: no longer one TensorFlow adopts)

    return read
