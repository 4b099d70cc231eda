"""The ``.keras`` zip writer: Keras' archive, with the weights written in place.

``save_keras`` writes what ``model.save`` writes (``metadata.json``,
``config.json``, ``model.weights.h5`` stored uncompressed), but the HDF5 file is
the zip member itself: the weights go to disk once, straight from the
variables, and the zip's headers are written around them.
"""

from __future__ import annotations

import os
import struct
import time
import zipfile
import zlib
from pathlib import Path

from kerasave._fastpaths import Unsupported, require
from kerasave._fastpaths.h5read import LOCAL_HEADER, WEIGHTS, crc32_span
from kerasave._fastpaths.savinglib import write_weights
from kerasave._runtime.lazy import keras

__all__ = ["save_keras"]

_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_END = struct.Struct("<4sHHHHIIH")
_ZIP32_LIMIT = 0xFFFFFFFF


def _dos_time() -> tuple[int, int]:
    t = time.localtime()
    return (t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2,
            (max(t.tm_year, 1980) - 1980) << 9 | t.tm_mon << 5 | t.tm_mday)


def _local_header(name: bytes, crc: int, size: int, when: tuple[int, int]) -> bytes:
    return LOCAL_HEADER.pack(b"PK\x03\x04", 20, 0, zipfile.ZIP_STORED, when[0], when[1],
                             crc, size, size, len(name), 0) + name


def _has_assets(model: keras.Model) -> bool:
    if not hasattr(model, "_flatten_layers"):
        raise Unsupported("cannot list the layers to look for assets")
    return any(hasattr(layer, "save_assets") for layer in model._flatten_layers(include_self=True))


def save_keras(model: keras.Model, path: Path) -> None:
    """Write ``model`` as a ``.keras`` archive that Keras reads, at the disk's speed.

    The archive holds what ``model.save`` writes (``metadata.json``,
    ``config.json``, ``model.weights.h5`` stored uncompressed, written by Keras'
    own traversal), but the HDF5 file is written in place: h5py creates it with
    a *userblock* (space HDF5 leaves to the user at the start of a file) holding
    the zip's first two members and the weights member's header (config.json
    ends in whitespace up to the userblock's power-of-two size), so the weights
    go to disk once, straight from the variables, and the zip's central
    directory follows them.

    Raises:
        Unsupported: the model has assets, or the weights are past the 4 GiB a
            plain zip entry holds; the caller uses ``model.save`` instead.
    """
    from keras.src.saving import saving_lib

    require("keras_writer")
    if not all(hasattr(saving_lib, name) for name in (
            "_save_state", "_serialize_model_as_json", "H5IOStore")):
        raise Unsupported("this Keras' saving_lib differs")
    if _has_assets(model):
        raise Unsupported("the model has assets")
    config_json, metadata_json = saving_lib._serialize_model_as_json(model)
    when = _dos_time()
    weights_name = WEIGHTS.encode()
    metadata, config = metadata_json.encode(), config_json.encode()
    used = (2 * LOCAL_HEADER.size + len(b"metadata.json") + len(metadata)
            + len(b"config.json") + len(config) + LOCAL_HEADER.size + len(weights_name))
    userblock = 512
    while userblock < used:
        userblock *= 2
    # The weights' bytes must start exactly at the userblock's end: JSON allows
    # trailing whitespace, so config.json takes up the slack.
    config += b"\n" + b" " * (userblock - used - 1) if userblock > used else b""
    prefix = bytearray()
    entries = []  # (name, crc, size, offset of the local header): the central directory
    for name, data in ((b"metadata.json", metadata), (b"config.json", config)):
        crc = zlib.crc32(data)
        entries.append((name, crc, len(data), len(prefix)))
        prefix += _local_header(name, crc, len(data), when) + data
    weights_offset = len(prefix)

    write_weights(model, path, userblock=userblock)
    with open(path, "r+b") as f:
        end = os.fstat(f.fileno()).st_size
        if end >= _ZIP32_LIMIT:  # sizes and offsets must fit a plain zip's 32 bits
            raise Unsupported("weights past 4 GiB need zip64")
        size = end - userblock
        crc = crc32_span(f.fileno(), userblock, size, path)
        prefix += _local_header(weights_name, crc, size, when)
        assert len(prefix) == userblock
        f.seek(0)
        f.write(prefix)
        entries.append((weights_name, crc, size, weights_offset))
        central = bytearray()
        for name, entry_crc, entry_size, offset in entries:
            central += _CENTRAL.pack(
                b"PK\x01\x02", 20 | 3 << 8, 20, 0, zipfile.ZIP_STORED, when[0], when[1],
                entry_crc, entry_size, entry_size, len(name), 0, 0, 0, 0, 0o100644 << 16,
                offset) + name
        central += _END.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central),
                             end, 0)
        f.seek(end)
        f.write(central)  # (the facade fsyncs the file before renaming it into place)
