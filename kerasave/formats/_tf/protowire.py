"""A dependency-free decoder for the few TensorFlow protobuf messages kerasave reads.

Why not TensorFlow's generated ``*_pb2`` classes: those modules are private, generated code, and
importing any ``tensorflow.*`` module runs TensorFlow's whole ``__init__`` (seconds). kerasave
only needs a handful of fields from the checkpoint object graph, the tensor-bundle index and
``saved_model.pb``, so this module decodes exactly those from the wire format and skips the
rest. Field numbers follow tensorflow/core/protobuf/{trackable_object_graph,tensor_bundle,
saved_model,meta_graph}.proto and tensorflow/core/framework/{tensor_shape,types,versions}.proto.

Decoding follows protobuf's own rules, so the results equal what the ``_pb2`` classes give:
unknown fields (and known ones with an unexpected wire type) are skipped, the last value of a
scalar wins, a sub-message given twice merges, repeated scalars may be packed or not, and
int32/int64 are two's complement of the 64-bit varint. Anything malformed raises ``WireError``
(a ``ValueError``); no length field is trusted past the end of the buffer, and skipping a large
field (a SavedModel's ``graph_def``) is a memoryview slice, never a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

__all__ = [  # and the DT_* DataType numbers
    "BundleEntryProto", "BundleHeaderProto", "Data", "Dim", "MetaGraphDef", "MetaInfoDef",
    "NUMPY_NAMES", "ObjectReference", "SavedMetadata", "SavedModel", "SavedObject",
    "SerializedTensor", "SlotVariableReference",
    "TensorShapeProto", "TrackableObject", "TrackableObjectGraph", "VersionDef", "WireError",
    "bundle_entry", "bundle_header", "saved_metadata", "saved_model_info", "trackable_object_graph",
]

# tensorflow.DataType (types.proto): the numbers a BundleEntryProto's dtype holds.
DT_INVALID, DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = range(8)
DT_COMPLEX64, DT_INT64, DT_BOOL, DT_QINT8, DT_QUINT8, DT_QINT32, DT_BFLOAT16 = range(8, 15)
DT_QINT16, DT_QUINT16, DT_UINT16, DT_COMPLEX128, DT_HALF, DT_RESOURCE = range(15, 21)
DT_VARIANT, DT_UINT32, DT_UINT64 = range(21, 24)

#: NumPy dtype names of the plain numeric/bool DataTypes (what np.dtype(name) accepts).
NUMPY_NAMES: dict[int, str] = {
    DT_FLOAT: "float32", DT_DOUBLE: "float64", DT_INT32: "int32", DT_UINT8: "uint8",
    DT_INT16: "int16", DT_INT8: "int8", DT_COMPLEX64: "complex64", DT_INT64: "int64",
    DT_BOOL: "bool", DT_UINT16: "uint16", DT_COMPLEX128: "complex128", DT_HALF: "float16",
    DT_UINT32: "uint32", DT_UINT64: "uint64",
}

Data = bytes | bytearray | memoryview  # what the decoders accept

_MASK64 = (1 << 64) - 1
_MAX_GROUP_DEPTH = 100  # protobuf's own default recursion limit


class WireError(ValueError):
    """The bytes are not a valid encoding of the expected protobuf message."""


def _varint(buf: memoryview, at: int) -> tuple[int, int]:
    if at < len(buf) and buf[at] < 0x80:  # most varints (keys, lengths, ids) are one byte
        return buf[at], at + 1
    value = 0
    for shift in range(0, 70, 7):
        if at >= len(buf):
            raise WireError(f"truncated varint at byte {at}")
        byte = buf[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & _MASK64, at  # bits past 64 are dropped, as protobuf does
    raise WireError(f"varint longer than 10 bytes ending at byte {at}")


def _value(buf: memoryview, at: int, number: int, wire: int, depth: int = 0) -> tuple[Any, int]:
    """One field's payload after its key: an int (varint/fixed) or a memoryview slice."""
    if wire == 0:
        return _varint(buf, at)
    if wire in (1, 5):
        size = 8 if wire == 1 else 4
        if at + size > len(buf):
            raise WireError(f"truncated fixed{size * 8} field {number} at byte {at}")
        return int.from_bytes(buf[at: at + size], "little"), at + size
    if wire == 2:
        length, at = _varint(buf, at)
        if length > len(buf) - at:
            raise WireError(f"field {number} says {length} bytes at byte {at}; "
                            f"only {len(buf) - at} remain")
        return buf[at: at + length], at + length
    if wire == 3:  # a (deprecated) group: skip it through its matching end-group key
        if depth >= _MAX_GROUP_DEPTH:
            raise WireError("groups nested too deeply")
        while True:
            key, at = _key(buf, at)
            if key & 7 == 4:
                if key >> 3 != number:
                    raise WireError(f"group {number} closed by end-group {key >> 3}")
                return None, at
            _, at = _value(buf, at, key >> 3, key & 7, depth + 1)
    raise WireError(f"{'unexpected end-group' if wire == 4 else f'wire type {wire}'} "
                    f"for field {number} at byte {at}")


def _key(buf: memoryview, at: int) -> tuple[int, int]:
    key, after = _varint(buf, at)
    if key > 0xFFFFFFFF or key >> 3 == 0:
        raise WireError(f"invalid field key {key} at byte {at}")
    return key, after


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, payload) for each field of one message, in order."""
    at, end = 0, len(buf)
    while at < end:
        key = buf[at]
        if 8 <= key < 0x80:  # a one-byte key: fields 1-15, inline
            at += 1
        else:
            key, at = _key(buf, at)
        number, wire = key >> 3, key & 7
        if wire == 2:  # the common case, inline
            length, at = _varint(buf, at)
            if length > end - at:
                raise WireError(f"field {number} says {length} bytes at byte {at}; "
                                f"only {end - at} remain")
            at += length
            yield number, 2, buf[at - length: at]
        else:
            value, at = _value(buf, at, number, wire)
            yield number, wire, value


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def _int64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def _string(raw: memoryview) -> str:
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"string field is not valid UTF-8: {exc}") from None


def _view(data: Data) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


# Each scalar kind a field spec may name: its wire type, payload conversion and default.
_SCALARS: dict[str, tuple[int, Callable[[Any], Any], Any]] = {
    "int32": (0, _int32, 0), "int64": (0, _int64, 0), "bool": (0, bool, False),
    "fixed32": (5, int, 0), "string": (2, _string, ""), "bytes": (2, bytes, b""),
    "view": (2, memoryview, b""),  # bytes left where they lie (a tensor's data: no copy)
}


def _decode(cls: Any, buf: memoryview) -> Any:
    """An instance of ``cls`` from its wire bytes, per ``cls._SPEC`` (see ``_Message``)."""
    spec, values = cls._SPEC, dict[str, Any]()
    parts: dict[str, tuple[Any, list[memoryview]]] = {}  # singular sub-messages, to merge
    for number, wire, raw in _fields(buf):
        field = spec.get(number)
        if field is None:
            continue
        name, want, convert, repeated, message = field
        if wire != want:
            if repeated and want == 0 and wire == 2:  # packed scalars
                items, at = values.setdefault(name, []), 0
                while at < len(raw):
                    item, at = _varint(raw, at)
                    items.append(convert(item))
            continue  # protobuf treats a known field with another wire type as unknown
        if repeated:
            values.setdefault(name, []).append(convert(raw))
        elif message is not None:
            parts.setdefault(name, (message, []))[1].append(raw)
        else:
            values[name] = convert(raw)  # the last one wins
    for name, (message, chunks) in parts.items():  # concatenated messages decode as merged
        values[name] = _decode(message, chunks[0] if len(chunks) == 1
                               else memoryview(b"".join(chunks)))
    return cls(**{k: tuple(v) if type(v) is list else v for k, v in values.items()})


class _Message:
    """A decoded message: slotted, immutable, equal by value; absent fields read as defaults.

    Not a dataclass: building a dozen dataclasses costs ~20 ms at import, this costs nothing.
    ``_FIELDS`` maps a field number to (attribute, scalar kind or message class, repeated);
    repeated fields are tuples.
    """

    __slots__ = ()
    _FIELDS: ClassVar[dict[int, tuple[str, Any, bool]]] = {}
    _DEFAULTS: ClassVar[dict[str, Any]] = {}
    _SPEC: ClassVar[dict[int, tuple[str, int, Callable[[Any], Any], bool, Any]]] = {}

    if TYPE_CHECKING:  # (fields are slots made from ``_FIELDS``: not declared one by one)
        def __getattr__(self, name: str) -> Any: ...

    def __init_subclass__(cls) -> None:
        """Precompute, per field number: (attribute, wire type, conversion, repeated, class)."""
        cls._SPEC, cls._DEFAULTS = {}, {}
        for number, (name, kind, repeated) in cls._FIELDS.items():
            if isinstance(kind, str):
                want, convert, default = _SCALARS[kind]
                cls._SPEC[number] = (name, want, convert, repeated, None)
            else:
                convert, default = partial(_decode, kind), kind()
                cls._SPEC[number] = (name, 2, convert, repeated, kind)
            cls._DEFAULTS[name] = () if repeated else default

    def __init__(self, **values: Any) -> None:
        put = object.__setattr__
        for name, default in self._DEFAULTS.items():
            put(self, name, values.pop(name, default))
        if values:
            raise TypeError(f"{type(self).__name__} has no field {next(iter(values))!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._DEFAULTS)

    def __reduce__(self) -> tuple[Any, ...]:  # pickle and copy, despite __setattr__
        return _rebuild, (type(self), self._values())

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._DEFAULTS)
        return f"{type(self).__name__}({shown})"


def _rebuild(cls: Any, values: tuple[Any, ...]) -> Any:
    return cls(**dict(zip(cls._DEFAULTS, values)))


def _slots(fields: dict[int, tuple[str, Any, bool]]) -> tuple[str, ...]:
    return tuple(name for name, _, _ in fields.values())


class ObjectReference(_Message):
    _FIELDS = {1: ("node_id", "int32", False), 2: ("local_name", "string", False)}
    __slots__ = _slots(_FIELDS)


class SerializedTensor(_Message):
    _FIELDS = {1: ("name", "string", False), 2: ("full_name", "string", False),
               3: ("checkpoint_key", "string", False)}
    __slots__ = _slots(_FIELDS)


class SlotVariableReference(_Message):
    _FIELDS = {1: ("original_variable_node_id", "int32", False),
               2: ("slot_name", "string", False), 3: ("slot_variable_node_id", "int32", False)}
    __slots__ = _slots(_FIELDS)


class TrackableObject(_Message):
    _FIELDS = {1: ("children", ObjectReference, True), 2: ("attributes", SerializedTensor, True),
               3: ("slot_variables", SlotVariableReference, True)}  # 4, 5: skipped
    __slots__ = _slots(_FIELDS)


class TrackableObjectGraph(_Message):
    _FIELDS = {1: ("nodes", TrackableObject, True)}
    __slots__ = _slots(_FIELDS)


class VersionDef(_Message):
    _FIELDS = {1: ("producer", "int32", False), 2: ("min_consumer", "int32", False),
               3: ("bad_consumers", "int32", True)}
    __slots__ = _slots(_FIELDS)


class BundleHeaderProto(_Message):
    LITTLE: ClassVar[int] = 0  # the Endianness enum
    BIG: ClassVar[int] = 1
    _FIELDS = {1: ("num_shards", "int32", False), 2: ("endianness", "int32", False),
               3: ("version", VersionDef, False)}
    __slots__ = _slots(_FIELDS)


class Dim(_Message):
    _FIELDS = {1: ("size", "int64", False), 2: ("name", "string", False)}
    __slots__ = _slots(_FIELDS)


class TensorShapeProto(_Message):
    _FIELDS = {2: ("dim", Dim, True), 3: ("unknown_rank", "bool", False)}
    __slots__ = _slots(_FIELDS)


class BundleEntryProto(_Message):
    _FIELDS = {1: ("dtype", "int32", False), 2: ("shape", TensorShapeProto, False),
               3: ("shard_id", "int32", False), 4: ("offset", "int64", False),
               5: ("size", "int64", False), 6: ("crc32c", "fixed32", False),
               7: ("slices", "bytes", True)}  # raw TensorSliceProtos: only "any?" matters
    __slots__ = _slots(_FIELDS)


class MetaInfoDef(_Message):
    _FIELDS = {1: ("meta_graph_version", "string", False), 4: ("tags", "string", True),
               5: ("tensorflow_version", "string", False),
               6: ("tensorflow_git_version", "string", False)}
    __slots__ = _slots(_FIELDS)


class MetaGraphDef(_Message):
    _FIELDS = {1: ("meta_info_def", MetaInfoDef, False)}  # graph_def, signatures...: skipped
    __slots__ = _slots(_FIELDS)


class SavedModel(_Message):
    _FIELDS = {1: ("saved_model_schema_version", "int64", False),
               2: ("meta_graphs", MetaGraphDef, True)}
    __slots__ = _slots(_FIELDS)


class SavedObject(_Message):  # Keras 2's keras_metadata.pb (saved_metadata.proto)
    _FIELDS = {2: ("node_id", "int32", False), 3: ("node_path", "string", False),
               4: ("identifier", "string", False), 5: ("metadata", "string", False),
               6: ("version", VersionDef, False)}
    __slots__ = _slots(_FIELDS)


class SavedMetadata(_Message):
    _FIELDS = {1: ("nodes", SavedObject, True)}
    __slots__ = _slots(_FIELDS)


def trackable_object_graph(data: Data) -> TrackableObjectGraph:
    """A checkpoint's object graph (the ``_CHECKPOINTABLE_OBJECT_GRAPH`` tensor's bytes)."""
    return _decode(TrackableObjectGraph, _view(data))


def bundle_header(data: Data) -> BundleHeaderProto:
    """A tensor bundle's header (the value under the empty key of its ``.index``)."""
    return _decode(BundleHeaderProto, _view(data))


def bundle_entry(data: Data) -> BundleEntryProto:
    """One tensor's entry in a bundle's ``.index``: where its bytes lie and their CRC32C."""
    return _decode(BundleEntryProto, _view(data))


def saved_metadata(data: Data) -> SavedMetadata:
    """Keras 2's ``keras_metadata.pb``: each saved Keras object's JSON metadata."""
    return _decode(SavedMetadata, _view(data))


def saved_model_info(data: Data) -> SavedModel:
    """A ``saved_model.pb`` with only each MetaGraphDef's ``meta_info_def`` decoded."""
    return _decode(SavedModel, _view(data))
