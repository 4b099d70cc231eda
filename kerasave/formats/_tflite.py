"""LiteRT (TFLite) models read without LiteRT or TensorFlow: the flatbuffer's few tables
kerasave needs.

``kerasave inspect`` lists a ``.tflite`` file's constant tensors, signature and
writer from the flatbuffer itself (tensorflow/compiler/mlir/lite/schema/schema.fbs,
file identifier ``TFL3``). Every offset is checked against the buffer before it
is followed, and every vector's length against the bytes it would span, so a
damaged or hostile file raises ``FlatbufferError`` (a ``ValueError``) instead of
reading out of bounds or allocating what it declares.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

from kerasave.formats._onnxproto import Port

__all__ = ["FlatbufferError", "Model", "Tensor", "read", "IDENTIFIER", "TYPES", "ports",
           "buffer_array"]

IDENTIFIER = b"TFL3"

# schema.fbs' TensorType, as NumPy dtype names (None: no plain NumPy equivalent).
TYPES: dict[int, str] = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16",
}
_SIZES = {"float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "bool": 1,
          "int16": 2, "complex64": 8, "int8": 1, "float64": 8, "complex128": 16, "uint64": 8,
          "uint32": 4, "uint16": 2, "bfloat16": 2}
_CUSTOM = 32  # BuiltinOperator.CUSTOM


class FlatbufferError(ValueError):
    """The bytes are not a valid LiteRT flatbuffer."""


class _Table:
    """One flatbuffer table: its fields read through its vtable, every offset checked."""

    __slots__ = ("buf", "pos", "vtable", "vsize")

    def __init__(self, buf: memoryview, pos: int) -> None:
        if pos < 0 or pos + 4 > len(buf):
            raise FlatbufferError(f"table at {pos} outside the {len(buf)} bytes")
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        if vtable < 0 or vtable + 4 > len(buf):
            raise FlatbufferError(f"vtable at {vtable} outside the buffer")
        vsize = struct.unpack_from("<H", buf, vtable)[0]
        if vsize < 4 or vsize % 2 or vtable + vsize > len(buf):
            raise FlatbufferError(f"vtable at {vtable} has size {vsize}")
        self.buf, self.pos, self.vtable, self.vsize = buf, pos, vtable, vsize

    def _field(self, index: int, size: int) -> int | None:
        slot = 4 + 2 * index
        if slot + 2 > self.vsize:
            return None
        offset = struct.unpack_from("<H", self.buf, self.vtable + slot)[0]
        if offset == 0:
            return None
        at = self.pos + offset
        if at + size > len(self.buf):
            raise FlatbufferError(f"field {index} of the table at {self.pos} outside the buffer")
        return at

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        at = self._field(index, struct.calcsize(fmt))
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def _target(self, index: int) -> int | None:
        at = self._field(index, 4)
        if at is None:
            return None
        target = at + struct.unpack_from("<I", self.buf, at)[0]
        if target + 4 > len(self.buf):
            raise FlatbufferError(f"field {index} of the table at {self.pos} points outside "
                                  "the buffer")
        return target

    def table(self, index: int) -> _Table | None:
        target = self._target(index)
        return None if target is None else _Table(self.buf, target)

    def vector(self, index: int, item: int) -> tuple[int, int]:
        """(start, length) of a vector field of items of ``item`` bytes; (0, 0) if absent."""
        target = self._target(index)
        if target is None:
            return 0, 0
        length = struct.unpack_from("<I", self.buf, target)[0]
        if length * item > len(self.buf) - target - 4:
            raise FlatbufferError(f"a vector at {target} says {length} items of {item} bytes; "
                                  f"only {len(self.buf) - target - 4} bytes remain")
        return target + 4, length

    def string(self, index: int) -> str:
        start, length = self.vector(index, 1)
        try:
            return str(self.buf[start: start + length], "utf-8")
        except UnicodeDecodeError as exc:
            raise FlatbufferError(f"a string at {start} is not UTF-8: {exc}") from None

    def ints(self, index: int, fmt: str = "i") -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        start, length = self.vector(index, size)
        return struct.unpack_from(f"<{length}{fmt}", self.buf, start) if length else ()

    def tables(self, index: int) -> list[_Table]:
        start, length = self.vector(index, 4)
        found = []
        for i in range(length):
            at = start + 4 * i
            found.append(_Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0]))
        return found

    def bytes_view(self, index: int) -> memoryview:
        start, length = self.vector(index, 1)
        return self.buf[start: start + length]


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    signature: tuple[int, ...] | None  # shape_signature: -1 for a dynamic dimension
    buffer: int


@dataclass(frozen=True)
class Buffer:
    data: memoryview  # inline data (may be empty)
    offset: int  # data kept after the flatbuffer (models over 2 GB): its file offset
    size: int


@dataclass(frozen=True)
class Signature:
    key: str
    subgraph: int
    inputs: tuple[tuple[str, int], ...]  # (name, tensor index)
    outputs: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Model:
    version: int
    description: str
    tensors: tuple[Tensor, ...]  # the first subgraph's
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: int
    buffers: tuple[Buffer, ...]
    operators: tuple[str, ...]  # each distinct operator, by code or custom name
    custom: tuple[str, ...]  # custom operators' names (Flex ops: "Flex" + the TF op)
    ops: tuple[tuple[str, tuple[int, ...]], ...]  # the first subgraph's: (operator, outputs)
    signatures: tuple[Signature, ...]
    metadata: dict[str, int]  # name: buffer index


def read(data: bytes | bytearray | memoryview) -> Model:
    """The parts of a LiteRT model kerasave uses. Raises FlatbufferError."""
    buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    if len(buf) < 8 or bytes(buf[4:8]) != IDENTIFIER:
        raise FlatbufferError("not a LiteRT flatbuffer (no TFL3 identifier)")
    try:
        root = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
        subgraphs = root.tables(2)
        if not subgraphs:
            raise FlatbufferError("the model has no subgraph")
        first = subgraphs[0]
        tensors = []
        for t in first.tables(0):
            code = t.scalar(1, "b")
            signature = t.ints(7) or None
            tensors.append(Tensor(t.string(3), TYPES.get(code, f"type {code}"), t.ints(0),
                                  signature, t.scalar(2, "I")))
        n = len(tensors)
        inputs, outputs = first.ints(1), first.ints(2)
        if any(not 0 <= i < n for i in (*inputs, *outputs)):
            raise FlatbufferError("an input or output names no tensor")
        buffers = []
        for b in root.tables(4):
            buffers.append(Buffer(b.bytes_view(0), b.scalar(1, "Q"), b.scalar(2, "Q")))
        codes, custom = [], []
        for c in root.tables(1):
            builtin = max(c.scalar(0, "b"), c.scalar(3, "i"))
            if builtin == _CUSTOM:
                name = c.string(1)
                custom.append(name)
                codes.append(name)
            else:
                codes.append(f"builtin {builtin}")
        ops = []
        for op in first.tables(3):
            code = op.scalar(0, "I")
            outs = op.ints(2)
            if code >= len(codes) or any(not -1 <= i < n for i in (*op.ints(1), *outs)):
                raise FlatbufferError("an operator names no operator code or tensor")
            ops.append((codes[code], outs))
        signatures = []
        for s in root.tables(7):
            maps = []
            for index in (0, 1):
                maps.append(tuple((m.string(0), m.scalar(1, "I")) for m in s.tables(index)))
            signatures.append(Signature(s.string(2), s.scalar(4, "I"), maps[0], maps[1]))
        metadata = {m.string(0): m.scalar(1, "I") for m in root.tables(6)}
        return Model(root.scalar(0, "I"), root.string(3), tuple(tensors), inputs, outputs,
                     len(subgraphs), tuple(buffers), tuple(codes), tuple(custom),
                     tuple(ops), tuple(signatures), metadata)
    except struct.error as exc:
        raise FlatbufferError(f"truncated flatbuffer: {exc}") from None


def _serving(model: Model) -> Signature | None:
    mine = [s for s in model.signatures if s.subgraph == 0]
    return next((s for s in mine if s.key == "serving_default"), mine[0] if mine else None)


def _output_order(names: list[str]) -> list[str]:
    """Keras' order of outputs a signature names: ``output_0, output_1, ...`` by number
    (a list), else sorted (a dict's keys, as ``keras.tree.flatten`` orders them)."""
    if all(re.fullmatch(r"output_\d+", n) for n in names):
        return sorted(names, key=lambda n: int(n.rsplit("_", 1)[1]))
    return sorted(names)


def ports(model: Model) -> tuple[tuple[Port, ...], tuple[Port, ...], dict[str, int]]:
    """The model's inputs and outputs in Keras' order, named by its serving signature
    (else by tensor), and each port's tensor index."""
    signature = _serving(model)
    index: dict[str, int] = {}

    def port(name: str, i: int) -> Port:
        t = model.tensors[i]
        dims = t.signature if t.signature is not None else t.shape
        index[name] = i
        return Port(name, t.dtype, tuple(None if d < 0 else d for d in dims))

    if signature is None:
        return (tuple(port(model.tensors[i].name, i) for i in model.inputs),
                tuple(port(model.tensors[i].name, i) for i in model.outputs), index)
    by_tensor = {i: name for name, i in signature.inputs}
    inputs = tuple(port(by_tensor.get(i, model.tensors[i].name), i) for i in model.inputs)
    named = dict(signature.outputs)
    outputs = tuple(port(name, named[name]) for name in _output_order(list(named)))
    if any(not 0 <= i < len(model.tensors) for i in named.values()):
        raise FlatbufferError("a signature output names no tensor")
    return inputs, outputs, index


def buffer_array(model: Model, tensor: Tensor, data: memoryview) -> np.ndarray | None:
    """A constant tensor's values (None: the tensor holds no data, or no plain dtype),
    after its shape and dtype are checked against its buffer's size."""
    if not 0 < tensor.buffer < len(model.buffers):
        return None
    buffer = model.buffers[tensor.buffer]
    raw = buffer.data
    if buffer.offset > 1:
        if buffer.offset + buffer.size > len(data):
            raise FlatbufferError(f"tensor {tensor.name!r}: its data lies past the file's end")
        raw = data[buffer.offset: buffer.offset + buffer.size]
    if not len(raw):
        return None
    size = _SIZES.get(tensor.dtype)
    if size is None:
        return None
    if any(d < 0 for d in tensor.shape):
        raise FlatbufferError(f"tensor {tensor.name!r} has a negative dimension")
    count = int(np.prod(tensor.shape, dtype=np.int64)) if tensor.shape else 1
    if count * size != len(raw):
        raise FlatbufferError(f"tensor {tensor.name!r} declares {count * size} bytes "
                              f"{list(tensor.shape)}, its buffer holds {len(raw)}")
    if tensor.dtype == "bfloat16":
        import ml_dtypes

        dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        dtype = np.dtype(tensor.dtype).newbyteorder("<")
    return np.frombuffer(raw, dtype).reshape(tensor.shape).astype(dtype.newbyteorder("="))


def constants(model: Model) -> list[Tensor]:
    """The tensors whose values the file holds (weights and folded constants)."""
    found = []
    for t in model.tensors:
        if 0 < t.buffer < len(model.buffers):
            b = model.buffers[t.buffer]
            if len(b.data) or b.offset > 1:
                found.append(t)
    return found


def metadata_text(model: Model, name: str) -> str | None:
    """A metadata buffer as text (``min_runtime_version``), None when absent."""
    index = model.metadata.get(name)
    if index is None or not 0 <= index < len(model.buffers):
        return None
    try:
        return bytes(model.buffers[index].data).rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        return None


def conversion_tensorflow(model: Model) -> str | None:
    """The TensorFlow version that converted the model, from its CONVERSION_METADATA
    (conversion_metadata.fbs: ConversionMetadata.environment.tensorflow_version)."""
    index = model.metadata.get("CONVERSION_METADATA")
    if index is None or not 0 <= index < len(model.buffers):
        return None
    raw = model.buffers[index].data
    try:
        root = _Table(raw, struct.unpack_from("<I", raw, 0)[0])
        environment = root.table(0)
        return (environment.string(0) or None) if environment is not None else None
    except (FlatbufferError, struct.error):
        return None
