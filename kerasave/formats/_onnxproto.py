"""ONNX models read without ONNX or TensorFlow: the few ``onnx.proto`` fields kerasave needs.

``kerasave inspect`` lists an ``.onnx`` file's initializers, inputs, outputs and
producer from the protobuf wire format (``kerasave.formats._tf.protowire``), and every
reader checks, before onnxruntime sees the file, that no tensor keeps its data
outside the model's folder. Field numbers follow onnx/onnx.proto (IR version
10); unknown fields are skipped, as protobuf does.

Graphs nest (an ``If`` node's branches are graphs in its attributes): those are
kept as bytes and decoded by ``graphs`` one level at a time, at most
``MAX_DEPTH`` deep, so a hostile file cannot exhaust the stack.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerasave.formats._tf.protowire import (
    Data,
    WireError,
    _decode,
    _Message,
    _slots,
    _varint,
    _view,
)

__all__ = ["ModelProto", "GraphProto", "TensorProto", "ValueInfoProto", "WireError",
           "model", "graphs", "tensors", "external_data", "Port", "ports", "NUMPY",
           "MAX_DEPTH", "tensor_array", "External"]

MAX_DEPTH = 32  # nested graphs (a branch of a loop of a branch...) any real model needs

# TensorProto.DataType numbers and the NumPy dtypes they hold.
NUMPY: dict[int, str] = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64",
    15: "complex128", 16: "bfloat16",
}
_NAMES = {8: "string", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2",
          20: "float8e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4e2m1"}
EXTERNAL = 1  # TensorProto.DataLocation


class StringStringEntryProto(_Message):
    _FIELDS = {1: ("key", "string", False), 2: ("value", "string", False)}
    __slots__ = _slots(_FIELDS)


class OperatorSetIdProto(_Message):
    _FIELDS = {1: ("domain", "string", False), 2: ("version", "int64", False)}
    __slots__ = _slots(_FIELDS)


class Dimension(_Message):
    _FIELDS = {1: ("dim_value", "int64", False), 2: ("dim_param", "string", False)}
    __slots__ = _slots(_FIELDS)

    @property
    def size(self) -> int | None:
        """The dimension's size; None when it is symbolic or unknown (dynamic)."""
        return None if self.dim_param or self.dim_value <= 0 else self.dim_value


class TensorShapeProto(_Message):
    _FIELDS = {1: ("dim", Dimension, True)}
    __slots__ = _slots(_FIELDS)


class TensorType(_Message):  # TypeProto.Tensor
    _FIELDS = {1: ("elem_type", "int32", False), 2: ("shape", TensorShapeProto, False)}
    __slots__ = _slots(_FIELDS)


class TypeProto(_Message):
    _FIELDS = {1: ("tensor_type", TensorType, False), 4: ("sequence_type", "view", False),
               5: ("map_type", "view", False), 8: ("sparse_tensor_type", "view", False),
               9: ("optional_type", "view", False)}
    __slots__ = _slots(_FIELDS)


class ValueInfoProto(_Message):
    _FIELDS = {1: ("name", "string", False), 2: ("type", TypeProto, False)}
    __slots__ = _slots(_FIELDS)


class TensorProto(_Message):
    _FIELDS = {1: ("dims", "int64", True), 2: ("data_type", "int32", False),
               3: ("segment", "view", False), 4: ("float_data", "view", False),
               5: ("int32_data", "view", False), 6: ("string_data", "view", True),
               7: ("int64_data", "view", False), 8: ("name", "string", False),
               9: ("raw_data", "view", False), 10: ("double_data", "view", False),
               11: ("uint64_data", "view", False),
               13: ("external_data", StringStringEntryProto, True),
               14: ("data_location", "int32", False)}
    __slots__ = _slots(_FIELDS)


class SparseTensorProto(_Message):
    _FIELDS = {1: ("values", TensorProto, False), 2: ("indices", TensorProto, False),
               3: ("dims", "int64", True)}
    __slots__ = _slots(_FIELDS)


class AttributeProto(_Message):
    _FIELDS = {1: ("name", "string", False), 5: ("t", TensorProto, False),
               6: ("g", "view", False), 10: ("tensors", TensorProto, True),
               11: ("graphs", "view", True), 22: ("sparse_tensor", SparseTensorProto, False),
               23: ("sparse_tensors", SparseTensorProto, True)}
    __slots__ = _slots(_FIELDS)


class NodeProto(_Message):
    _FIELDS = {1: ("input", "string", True), 2: ("output", "string", True),
               3: ("name", "string", False), 4: ("op_type", "string", False),
               5: ("attribute", AttributeProto, True), 7: ("domain", "string", False)}
    __slots__ = _slots(_FIELDS)


class GraphProto(_Message):
    _FIELDS = {1: ("node", NodeProto, True), 2: ("name", "string", False),
               5: ("initializer", TensorProto, True), 11: ("input", ValueInfoProto, True),
               12: ("output", ValueInfoProto, True),
               15: ("sparse_initializer", SparseTensorProto, True)}
    __slots__ = _slots(_FIELDS)


class FunctionProto(_Message):
    _FIELDS = {1: ("name", "string", False), 7: ("node", NodeProto, True),
               10: ("domain", "string", False)}
    __slots__ = _slots(_FIELDS)


class TrainingInfoProto(_Message):
    _FIELDS = {1: ("initialization", "view", False), 2: ("algorithm", "view", False)}
    __slots__ = _slots(_FIELDS)


class ModelProto(_Message):
    _FIELDS = {1: ("ir_version", "int64", False), 2: ("producer_name", "string", False),
               3: ("producer_version", "string", False), 4: ("domain", "string", False),
               5: ("model_version", "int64", False), 7: ("graph", GraphProto, False),
               8: ("opset_import", OperatorSetIdProto, True),
               14: ("metadata_props", StringStringEntryProto, True),
               20: ("training_info", TrainingInfoProto, True),
               25: ("functions", FunctionProto, True)}
    __slots__ = _slots(_FIELDS)


def model(data: Data) -> ModelProto:
    """A ModelProto from its bytes (a file's mapping: tensor data stays a view of it)."""
    try:
        return _decode(ModelProto, _view(data))
    except RecursionError:
        raise WireError("messages nested too deeply") from None


def _graph(raw: memoryview) -> GraphProto:
    try:
        return _decode(GraphProto, raw)
    except RecursionError:
        raise WireError("messages nested too deeply") from None


def graphs(proto: ModelProto) -> Iterator[tuple[GraphProto | FunctionProto, int]]:
    """Every graph of the model (main, nested in attributes, functions, training),
    with its depth; deeper than ``MAX_DEPTH`` raises WireError."""
    stack: list[tuple[GraphProto | FunctionProto, int]] = [(proto.graph, 0)]
    stack += [(f, 0) for f in proto.functions]
    for info in proto.training_info:
        stack += [(_graph(raw), 1) for raw in (info.initialization, info.algorithm) if len(raw)]
    while stack:
        graph, depth = stack.pop()
        yield graph, depth
        for node in graph.node:
            for attr in node.attribute:
                for raw in (attr.g, *attr.graphs):
                    if len(raw):
                        if depth + 1 > MAX_DEPTH:
                            raise WireError(f"graphs nested more than {MAX_DEPTH} deep "
                                            f"(node {node.name!r})")
                        stack.append((_graph(memoryview(raw)), depth + 1))


def tensors(proto: ModelProto) -> Iterator[tuple[str, TensorProto]]:
    """Every tensor the model stores, wherever it lies, with where in words."""
    for graph, _ in graphs(proto):
        if isinstance(graph, GraphProto):
            for t in graph.initializer:
                yield f"initializer {t.name!r}", t
            for s in graph.sparse_initializer:
                yield f"sparse initializer {s.values.name!r}", s.values
                yield f"sparse initializer {s.values.name!r} (indices)", s.indices
        for node in graph.node:
            for attr in node.attribute:
                where = f"attribute {attr.name!r} of node {node.name!r} ({node.op_type})"
                for t in (attr.t, *attr.tensors):
                    yield where, t
                for s in (attr.sparse_tensor, *attr.sparse_tensors):
                    yield where, s.values
                    yield where, s.indices


@dataclass(frozen=True)
class External:
    """Where an external tensor's bytes lie: a file in the model's folder, a span of it."""

    file: Path
    offset: int
    length: int | None


def external_data(tensor: TensorProto, folder: Path) -> External | None:
    """Where the tensor's data lies when it is stored outside the model file (None:
    inside). Raises ValueError for a location that is not a file inside ``folder``
    (absolute, ``..``, a link leading out), before anything reads it."""
    if tensor.data_location != EXTERNAL:
        return None
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    if not location:
        raise ValueError("an external tensor names no location")
    if "\x00" in location or os.path.isabs(location) or location.startswith(("/", "\\")) \
            or (len(location) > 1 and location[1] == ":"):
        raise ValueError(f"external data location {location!r} is not a relative path")
    if ".." in Path(location.replace("\\", "/")).parts:
        raise ValueError(f"external data location {location!r} leads out of the model's folder")
    root = folder.resolve()
    target = (root / location).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"external data location {location!r} leads out of the model's "
                         f"folder (to {target})")
    if not target.is_file():
        raise ValueError(f"external data location {location!r} is not a file in the model's "
                         "folder")
    try:
        offset = int(entries.get("offset", "0") or 0)
        length = int(entries["length"]) if entries.get("length") else None
    except ValueError:
        raise ValueError(f"external data of {location!r}: offset or length is not a number")\
            from None
    size = target.stat().st_size
    if offset < 0 or (length is not None and length < 0) or offset > size or (
            length is not None and offset + length > size):
        raise ValueError(f"external data of {location!r} says {length} bytes at {offset}; "
                         f"the file has {size}")
    return External(target, offset, length)


@dataclass(frozen=True)
class Port:
    """One input or output of an export: its name, dtype and shape (None: dynamic)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None  # None: unknown rank

    def __str__(self) -> str:
        dims = "?" if self.shape is None else "(" + ", ".join(
            "?" if d is None else str(d) for d in self.shape) + ("," if len(self.shape) == 1
                                                                  else "") + ")"
        return f"{self.name} {self.dtype} {dims}"


def dtype_name(data_type: int) -> str:
    return NUMPY.get(data_type) or _NAMES.get(data_type) or f"onnx type {data_type}"


def ports(values: tuple[ValueInfoProto, ...], initializers: set[str]) -> tuple[Port, ...]:
    """The graph's inputs or outputs as ports (inputs that are initializers left out,
    as onnxruntime leaves them out)."""
    found = []
    for v in values:
        if v.name in initializers:
            continue
        tensor = v.type.tensor_type
        if not v.type.tensor_type.elem_type:
            found.append(Port(v.name, "not a tensor", None))
            continue
        shape = tuple(d.size for d in tensor.shape.dim)
        found.append(Port(v.name, dtype_name(tensor.elem_type), shape))
    return tuple(found)


def _count(dims: tuple[int, ...]) -> int:
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimension in {list(dims)}")
    return int(np.prod(dims, dtype=np.int64)) if dims else 1


def tensor_array(tensor: TensorProto, folder: Path) -> np.ndarray:
    """The tensor's values, after its declared shape and dtype are checked against the
    bytes that hold them (shapes before bytes: nothing is allocated because a
    declaration says so). Raises ValueError for anything that does not add up."""
    name = NUMPY.get(tensor.data_type)
    if name is None:
        raise ValueError(f"tensor {tensor.name!r} has type {dtype_name(tensor.data_type)}, "
                         "which kerasave does not read")
    if name == "bfloat16":
        import ml_dtypes

        dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        dtype = np.dtype(name).newbyteorder("<")
    if len(tensor.segment):
        raise ValueError(f"tensor {tensor.name!r} is segmented, which kerasave does not read")
    count = _count(tensor.dims)
    want = count * dtype.itemsize
    where = external_data(tensor, folder)
    if where is not None:
        length = where.length if where.length is not None else \
            where.file.stat().st_size - where.offset
        if length != want:
            raise ValueError(f"tensor {tensor.name!r} declares {want} bytes "
                             f"{list(tensor.dims)}, its external data holds {length}")
        with open(where.file, "rb") as f:
            f.seek(where.offset)
            raw = f.read(length)
        return np.frombuffer(raw, dtype).reshape(tensor.dims).astype(dtype.newbyteorder("="))
    if len(tensor.raw_data):
        if len(tensor.raw_data) != want:
            raise ValueError(f"tensor {tensor.name!r} declares {want} bytes "
                             f"{list(tensor.dims)}, holds {len(tensor.raw_data)}")
        return np.frombuffer(tensor.raw_data, dtype).reshape(tensor.dims).astype(
            dtype.newbyteorder("="))
    typed = {1: ("float_data", "<f4"), 14: ("float_data", "<f4"), 11: ("double_data", "<f8"),
             15: ("double_data", "<f8")}
    if tensor.data_type in typed:
        field, wire = typed[tensor.data_type]
        raw = getattr(tensor, field)
        values = np.frombuffer(raw, wire) if len(raw) % 4 == 0 else None
        per = 2 if tensor.data_type in (14, 15) else 1
        if values is None or values.size != count * per:
            raise ValueError(f"tensor {tensor.name!r} declares {count} values, holds "
                             f"{0 if values is None else values.size // per}")
        return values.view(dtype.newbyteorder("<")).reshape(tensor.dims).astype(
            dtype.newbyteorder("="))
    field = "int64_data" if tensor.data_type == 7 else (
        "uint64_data" if tensor.data_type in (12, 13) else "int32_data")
    packed = memoryview(getattr(tensor, field))
    if count > len(packed):  # every varint takes a byte at least
        raise ValueError(f"tensor {tensor.name!r} declares {count} values, holds fewer")
    items, at = [], 0
    while at < len(packed):
        item, at = _varint(packed, at)
        items.append(item)
    if len(items) != count:
        raise ValueError(f"tensor {tensor.name!r} declares {count} values, holds {len(items)}")
    if name in ("float16", "bfloat16"):  # (their bits, as int32_data holds them)
        return np.array(items, np.uint16).view(dtype).reshape(tensor.dims)
    wide = np.array(items, np.uint64)
    if name.startswith("int"):
        wide = wide.view(np.int64)
    return wide.astype(dtype).reshape(tensor.dims)
