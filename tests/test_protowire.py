"""kerasave.formats._tf.protowire decodes what TensorFlow's own ``_pb2`` classes decode.

Every check is differential: the same bytes go to the decoder and to TensorFlow's generated
protobuf classes, from real artifacts TensorFlow wrote, from random messages TensorFlow
serialized (with unknown fields mixed in), and from damaged bytes. Malformed input must raise
``WireError`` and nothing else.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_slice_pb2, types_pb2
from tensorflow.core.protobuf import saved_model_pb2, tensor_bundle_pb2
from tensorflow.core.protobuf import trackable_object_graph_pb2 as graph_pb2

from kerasave.formats._tf import protowire as pw
from kerasave.formats._tf.tfindex import _table_block, _varint

ROOT = Path(__file__).resolve().parents[1]
_EXAMPLES = os.environ.get("FUZZ_EXAMPLES")
SETTINGS = settings(max_examples=int(_EXAMPLES or 100), deadline=None, derandomize=not _EXAMPLES,
                    suppress_health_check=[HealthCheck.too_slow])

TheirGraph = graph_pb2.TrackableObjectGraph
TheirObject = TheirGraph.TrackableObject
TheirHeader = tensor_bundle_pb2.BundleHeaderProto
TheirEntry = tensor_bundle_pb2.BundleEntryProto
TheirSavedModel = saved_model_pb2.SavedModel

# Ours and theirs, decoder and class, for each top-level message.
PAIRS = {
    "graph": (pw.trackable_object_graph, TheirGraph),
    "header": (pw.bundle_header, TheirHeader),
    "entry": (pw.bundle_entry, TheirEntry),
    "saved_model": (pw.saved_model_info, TheirSavedModel),
}
# Every field kerasave reads: a decoder that drops one fails here, not in kerasave.
REQUIRED = {
    pw.TrackableObjectGraph: {"nodes"},
    pw.TrackableObject: {"children", "attributes", "slot_variables"},
    pw.ObjectReference: {"node_id", "local_name"},
    pw.SerializedTensor: {"name", "full_name", "checkpoint_key"},
    pw.SlotVariableReference: {"original_variable_node_id", "slot_name", "slot_variable_node_id"},
    pw.BundleHeaderProto: {"num_shards", "endianness", "version"},
    pw.VersionDef: {"producer", "min_consumer", "bad_consumers"},
    pw.BundleEntryProto: {"dtype", "shape", "shard_id", "offset", "size", "crc32c", "slices"},
    pw.TensorShapeProto: {"dim", "unknown_rank"},
    pw.Dim: {"size", "name"},
    pw.SavedModel: {"saved_model_schema_version", "meta_graphs"},
    pw.MetaGraphDef: {"meta_info_def"},
    pw.MetaInfoDef: {"meta_graph_version", "tags", "tensorflow_version",
                     "tensorflow_git_version"},
}


def assert_same(mine: Any, theirs: Any, where: str = "") -> None:
    """Every field ``mine`` decodes equals TensorFlow's decoding, recursively."""
    for name, kind, repeated in type(mine)._FIELDS.values():
        a, b, at = getattr(mine, name), getattr(theirs, name), f"{where}.{name}"
        if name == "slices":
            assert [tensor_slice_pb2.TensorSliceProto.FromString(s) for s in a] == list(b), at
        elif isinstance(kind, str) and repeated:
            assert type(a) is tuple and list(a) == list(b), at
        elif isinstance(kind, str):
            assert a == b and type(a) is type(b), at
        elif repeated:
            assert len(a) == len(b), at
            for i, (x, y) in enumerate(zip(a, b)):
                assert_same(x, y, f"{at}[{i}]")
        else:
            assert_same(a, b, at)


def outcome(decode: Any, their_cls: Any, data: bytes) -> None:
    """The decoder raises only WireError; never where TensorFlow parses; equal where both do.

    (TensorFlow may reject bytes the decoder accepts: damage inside fields it skips.)"""
    try:
        mine = decode(data)
    except pw.WireError:
        with pytest.raises(DecodeError):
            their_cls.FromString(data)
        return
    try:
        theirs = their_cls.FromString(data)
    except DecodeError:
        return
    assert_same(mine, theirs)


# -- raw encoding, independent of the module under test --------------------------------------

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


# -- real artifacts ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A trained model's checkpoint, the same sharded 12 ways, its export, and a checkpoint with
    slot variables (Keras 3 optimizers keep theirs as plain children; TF's v1 Adam does not)."""
    root = tmp_path_factory.mktemp("protowire")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(8)(inputs)))
    model.compile("adam", "mse")
    x = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    model.fit(x, x[:, :2], verbose=0)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    checkpoint.write(str(root / "small"))
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=64)
    checkpoint.write(str(root / "sharded"), options=tf.train.CheckpointOptions(
        experimental_sharding_callback=policy))
    model.export(str(root / "exported"), verbose=False)
    variable = tf.Variable([1.0, 2.0])
    adam = tf.compat.v1.train.AdamOptimizer(0.1)
    adam.minimize(lambda: tf.reduce_sum(variable**2), var_list=[variable])
    tf.train.Checkpoint(v=variable, optimizer=adam).write(str(root / "slots"))
    return root


def table(index: Path) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a bundle's ``.index``, through kerasave's own table reader."""
    data = index.read_bytes()
    footer = data[-48:]
    _, at = _varint(footer, 0)
    _, at = _varint(footer, at)
    index_at, at = _varint(footer, at)
    index_size, _ = _varint(footer, at)
    rows = []
    for _, handle in _table_block(data, index_at, index_size):
        block_at, i = _varint(handle, 0)
        block_size, _ = _varint(handle, i)
        rows.extend(_table_block(data, block_at, block_size))
    return rows


def graph_bytes(prefix: Path) -> bytes:
    return tf.train.load_checkpoint(str(prefix)).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")


@pytest.mark.parametrize("name", ["small", "sharded", "slots"])
def test_real_checkpoint_object_graph(artifacts, name):
    data = graph_bytes(artifacts / name)
    graph = pw.trackable_object_graph(data)
    assert_same(graph, TheirGraph.FromString(data))
    assert {c.local_name for c in graph.nodes[0].children} >= {"optimizer"}
    assert any(n.slot_variables for n in graph.nodes) == (name == "slots")
    assert any(a.checkpoint_key.endswith("VARIABLE_VALUE") for n in graph.nodes
               for a in n.attributes)


@pytest.mark.parametrize("name, shards", [("small", 1), ("sharded", 12)])
def test_real_checkpoint_index(artifacts, name, shards):
    rows = table(artifacts / f"{name}.index")
    assert rows[0][0] == b"" and len(rows) > 10
    header = pw.bundle_header(rows[0][1])
    assert_same(header, TheirHeader.FromString(rows[0][1]))
    assert (header.num_shards, header.endianness) == (shards, pw.BundleHeaderProto.LITTLE)
    entries = [pw.bundle_entry(value) for _, value in rows[1:]]
    for (_, value), entry in zip(rows[1:], entries):
        assert_same(entry, TheirEntry.FromString(value))
    assert {e.shard_id for e in entries} == set(range(shards))
    assert any(e.offset for e in entries) and any(len(e.shape.dim) == 2 for e in entries)
    assert any(e.slices for e in entries) == (name == "sharded")  # 64-byte shards slice tensors


def test_real_saved_model(artifacts):
    data = (artifacts / "exported" / "saved_model.pb").read_bytes()
    mine = pw.saved_model_info(data)
    assert_same(mine, TheirSavedModel.FromString(data))
    info = mine.meta_graphs[0].meta_info_def
    assert info.tags == ("serve",) and info.tensorflow_version == tf.__version__
    graph = pw.trackable_object_graph(graph_bytes(artifacts / "exported/variables/variables"))
    assert graph.nodes and graph.nodes[0].children


# -- the specs are TensorFlow's ----------------------------------------------------------------

THEIRS = {
    pw.TrackableObjectGraph: TheirGraph, pw.TrackableObject: TheirObject,
    pw.ObjectReference: TheirObject.ObjectReference,
    pw.SerializedTensor: TheirObject.SerializedTensor,
    pw.SlotVariableReference: TheirObject.SlotVariableReference,
    pw.BundleHeaderProto: TheirHeader, pw.VersionDef: TheirHeader().version.__class__,
    pw.BundleEntryProto: TheirEntry, pw.TensorShapeProto: TheirEntry().shape.__class__,
    pw.Dim: TheirEntry().shape.Dim, pw.SavedModel: TheirSavedModel,
    pw.MetaGraphDef: TheirSavedModel().meta_graphs.add().__class__,
    pw.MetaInfoDef: TheirSavedModel().meta_graphs.add().meta_info_def.__class__,
}
KINDS = {"int32": {5, 14}, "int64": {3}, "bool": {8}, "fixed32": {7}, "string": {9}}


@pytest.mark.parametrize("cls", list(THEIRS), ids=lambda c: c.__name__)
def test_field_numbers_and_types_match_the_protos(cls):
    fields = THEIRS[cls].DESCRIPTOR.fields_by_name
    assert REQUIRED[cls] <= {name for name, _, _ in cls._FIELDS.values()}
    for number, (name, kind, repeated) in cls._FIELDS.items():
        theirs = fields[name]
        theirs_repeated = getattr(theirs, "is_repeated", None)
        if theirs_repeated is None:  # (protobuf before 6 has only the label)
            theirs_repeated = theirs.label == theirs.LABEL_REPEATED
        assert (theirs.number, theirs_repeated) == (number, repeated), name
        if isinstance(kind, str) and kind != "bytes":
            assert theirs.type in KINDS[kind], name
        else:  # sub-messages, and slices kept as raw bytes
            assert theirs.message_type is not None, name
            assert kind == "bytes" or THEIRS[kind].DESCRIPTOR is theirs.message_type, name


def test_data_types_and_endianness_match_the_protos():
    names = [n for n in dir(pw) if n.startswith("DT_")]
    assert len(names) >= 24 and {"DT_RESOURCE", "DT_VARIANT", "DT_BFLOAT16"} <= set(names)
    for name in names:
        assert getattr(pw, name) == types_pb2.DataType.Value(name), name
    for number, numpy_name in pw.NUMPY_NAMES.items():
        assert np.dtype(numpy_name) == tf.dtypes.as_dtype(number).as_numpy_dtype
    assert (pw.BundleHeaderProto.LITTLE, pw.BundleHeaderProto.BIG) == (
        TheirHeader.LITTLE, TheirHeader.BIG)


# -- random messages, serialized by TensorFlow ---------------------------------------------

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=12)
UNUSED = st.integers(9, 2**29 - 2)  # above every field number here (n + 1 too)
UNKNOWN_FIELD = st.one_of(
    st.builds(lambda n, v: key(n, 0) + varint(v), UNUSED, st.integers(0, 2**64 - 1)),
    st.builds(lambda n, v: key(n, 1) + v, UNUSED, st.binary(min_size=8, max_size=8)),
    st.builds(lambda n, v: key(n, 5) + v, UNUSED, st.binary(min_size=4, max_size=4)),
    st.builds(ld, UNUSED, st.binary(max_size=20)),
    st.builds(lambda n, v: key(n, 3) + key(n + 1, 0) + varint(v) + key(n, 4), UNUSED, INT64),
)
UNKNOWN = st.lists(UNKNOWN_FIELD, max_size=2).map(b"".join)


def built(cls: Any, **fields: Any) -> Any:
    """A TF message from field values, plus unknown fields it keeps when serialized."""
    unknown = fields.pop("unknown", b"")
    msg = cls(**fields)
    msg.MergeFromString(unknown)
    return msg


REFERENCE = st.builds(built, st.just(TheirObject.ObjectReference), node_id=INT32,
                      local_name=TEXT, unknown=UNKNOWN)
TENSOR = st.builds(built, st.just(TheirObject.SerializedTensor), name=TEXT, full_name=TEXT,
                   checkpoint_key=TEXT, unknown=UNKNOWN)
SLOT = st.builds(built, st.just(TheirObject.SlotVariableReference),
                 original_variable_node_id=INT32, slot_name=TEXT, slot_variable_node_id=INT32)
OBJECT = st.builds(
    built, st.just(TheirObject), children=st.lists(REFERENCE, max_size=3),
    attributes=st.lists(TENSOR, max_size=2), slot_variables=st.lists(SLOT, max_size=2),
    registered_saver=st.builds(built, st.just(graph_pb2.RegisteredSaver), name=TEXT,
                               object_name=TEXT),
    unknown=UNKNOWN)
GRAPH = st.builds(built, st.just(TheirGraph), nodes=st.lists(OBJECT, max_size=4),
                  unknown=UNKNOWN)
VERSION = st.builds(built, st.just(TheirHeader().version.__class__), producer=INT32,
                    min_consumer=INT32, bad_consumers=st.lists(INT32, max_size=4))
HEADER = st.builds(built, st.just(TheirHeader), num_shards=INT32,
                   endianness=st.sampled_from([0, 1]), version=VERSION, unknown=UNKNOWN)
DIM = st.builds(built, st.just(TheirEntry().shape.Dim), size=INT64, name=TEXT, unknown=UNKNOWN)
SLICE = st.builds(lambda extents: tensor_slice_pb2.TensorSliceProto(extent=[
    tensor_slice_pb2.TensorSliceProto.Extent(start=s, length=n) for s, n in extents]),
    st.lists(st.tuples(INT64, INT64), max_size=2))
ENTRY = st.builds(
    built, st.just(TheirEntry), dtype=st.sampled_from(sorted(types_pb2.DataType.values())),
    shape=st.builds(built, st.just(TheirEntry().shape.__class__), dim=st.lists(DIM, max_size=4),
                    unknown_rank=st.booleans()),
    shard_id=INT32, offset=INT64 | st.integers(2**32, 2**40), size=INT64,
    crc32c=st.integers(0, 2**32 - 1), slices=st.lists(SLICE, max_size=2), unknown=UNKNOWN)
INFO = st.builds(
    built, st.just(TheirSavedModel().meta_graphs.add().meta_info_def.__class__),
    meta_graph_version=TEXT, tags=st.lists(TEXT, max_size=3), tensorflow_version=TEXT,
    tensorflow_git_version=TEXT, stripped_default_attrs=st.booleans(), unknown=UNKNOWN)


@st.composite
def saved_models(draw: Any) -> Any:
    msg = TheirSavedModel(saved_model_schema_version=draw(INT64))
    for _ in range(draw(st.integers(0, 2))):
        meta = msg.meta_graphs.add()
        meta.meta_info_def.CopyFrom(draw(INFO))
        meta.graph_def.node.add(name=draw(TEXT), op="Const")  # skipped, never decoded
        meta.signature_def["serving_default"].method_name = draw(TEXT)
    msg.MergeFromString(draw(UNKNOWN))
    return msg


MESSAGES = {"graph": GRAPH, "header": HEADER, "entry": ENTRY, "saved_model": saved_models()}


@pytest.mark.parametrize("name", list(PAIRS))
def test_random_messages_decode_as_tensorflow_does(name):
    decode, their_cls = PAIRS[name]

    @SETTINGS
    @given(MESSAGES[name], MESSAGES[name])
    def check(msg, other):
        data = msg.SerializeToString()
        assert_same(decode(data), msg)
        # Concatenation is protobuf's merge: the last scalar wins, sub-messages merge.
        both = data + other.SerializeToString()
        assert_same(decode(both), their_cls.FromString(both))

    check()


@pytest.mark.parametrize("name", list(PAIRS))
def test_random_damage_is_a_wire_error_or_tensorflows_reading(name):
    decode, their_cls = PAIRS[name]

    @SETTINGS
    @given(MESSAGES[name], st.data())
    def check(msg, data):
        raw = bytearray(msg.SerializeToString())
        for _ in range(data.draw(st.integers(1, 3))):
            if raw:
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        outcome(decode, their_cls, bytes(raw))

    check()


def test_negative_and_wide_integers():
    entry = pw.bundle_entry(TheirEntry(shard_id=-1, offset=2**40 + 3, size=-(2**63),
                                       crc32c=2**32 - 1).SerializeToString())
    assert (entry.shard_id, entry.offset, entry.size, entry.crc32c) == (
        -1, 2**40 + 3, -(2**63), 2**32 - 1)
    graph = TheirGraph()
    graph.nodes.add().children.add(node_id=-(2**31), local_name="é")
    assert pw.trackable_object_graph(graph.SerializeToString()).nodes[0].children[0] == (
        pw.ObjectReference(node_id=-(2**31), local_name="é"))
    # A varint's bits past 64, and an int32's past 32, are dropped as protobuf drops them.
    ten = b"\xff" * 9 + b"\x7f"  # 10 bytes: 70 bits
    data = key(3, 0) + ten + key(4, 0) + ten + key(5, 0) + b"\x80" * 9 + b"\x7e"
    entry = pw.bundle_entry(data)
    assert (entry.shard_id, entry.offset, entry.size) == (-1, -1, 0)
    assert_same(entry, TheirEntry.FromString(data))


def test_packed_and_unpacked_repeated_scalars_mix():
    data = ld(3, key(3, 0) + varint(1) + ld(3, varint(2) + varint(-3)) + key(3, 0) + varint(4))
    assert pw.bundle_header(data).version.bad_consumers == (1, 2, -3, 4)
    assert list(TheirHeader.FromString(data).version.bad_consumers) == [1, 2, -3, 4]


def test_accepts_bytearray_and_memoryview():
    data = TheirEntry(dtype=1, offset=7).SerializeToString()
    assert pw.bundle_entry(bytearray(data)) == pw.bundle_entry(memoryview(data)) == (
        pw.bundle_entry(data))


def test_large_skipped_fields_are_not_copied():
    graph_def = ld(2, bytes(20_000_000))  # a 20 MB MetaGraphDef.graph_def
    data = key(1, 0) + varint(1) + ld(2, ld(1, ld(5, b"2.21.0")) + graph_def)
    tracemalloc.start()
    try:
        info = pw.saved_model_info(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.meta_graphs[0].meta_info_def.tensorflow_version == "2.21.0"
    assert peak < 1_000_000


# -- malformed input ----------------------------------------------------------------------------

MALFORMED = {
    "length past the end": ld(1, b"abc")[:-1],
    "huge length": key(1, 2) + varint(2**62) + b"x",
    "varint of 11 bytes": key(3, 0) + b"\xff" * 10 + b"\x01",
    "truncated varint": key(3, 0) + b"\x80\x80",
    "truncated key": b"\x80",
    "truncated fixed32": key(6, 5) + b"\x01\x02",
    "truncated fixed64": key(9, 1) + b"\x01\x02\x03",
    "field number 0": key(0, 0) + b"\x01",
    "key past 32 bits": varint(2**32 | 8) + b"\x01",
    "wire type 6": key(1, 6) + b"\x01",
    "wire type 7": key(1, 7) + b"\x01",
    "lone end-group": key(9, 4),
    "unterminated group": key(9, 3) + key(10, 0) + b"\x01",
    "mismatched end-group": key(9, 3) + key(10, 4),
    "length past the end in a group": key(9, 3) + key(10, 2) + varint(50) + b"x" + key(9, 4),
    "deeply nested groups": key(9, 3) * 100_000,
    "bad packed payload": ld(3, ld(3, b"\x83")),  # header.version.bad_consumers
}
UTF8 = ld(1, ld(1, ld(2, b"\xc3")))  # graph.nodes[0].children[0].local_name


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_raises_wire_error_quickly(name):
    data = MALFORMED[name]
    decoders = {"header": pw.bundle_header} if name == "bad packed payload" else PAIRS
    for which in decoders:
        decode, their_cls = PAIRS[which]
        start = time.perf_counter()
        with pytest.raises(pw.WireError):
            decode(data)
        assert time.perf_counter() - start < 1.0
        with pytest.raises(DecodeError):  # the case is malformed for TensorFlow too
            their_cls.FromString(data)


def test_errors_say_what_is_wrong():
    with pytest.raises(pw.WireError, match="field 10 says 50 bytes"):
        pw.bundle_entry(MALFORMED["length past the end in a group"])
    with pytest.raises(pw.WireError, match=f"field 1 says {2**62} bytes"):
        pw.trackable_object_graph(MALFORMED["huge length"])
    with pytest.raises(pw.WireError, match="longer than 10 bytes"):
        pw.bundle_entry(MALFORMED["varint of 11 bytes"])
    with pytest.raises(pw.WireError, match="wire type 7"):
        pw.bundle_entry(MALFORMED["wire type 7"])


def test_invalid_utf8_in_a_decoded_string():
    with pytest.raises(pw.WireError, match="UTF-8"):
        pw.trackable_object_graph(UTF8)
    with pytest.raises(DecodeError):
        TheirGraph.FromString(UTF8)


def test_every_truncation_of_real_bytes(artifacts):
    rows = table(artifacts / "sharded.index")
    cases = [("header", rows[0][1])] + [("entry", value) for _, value in rows[1:]]
    graph = graph_bytes(artifacts / "small")
    cases.append(("graph", graph[: 1500]))  # every cut in the first nodes, not all 3 KB twice
    cases.append(("saved_model",
                  (artifacts / "exported" / "saved_model.pb").read_bytes()[:400]))
    raised = 0
    start = time.perf_counter()
    for which, data in cases:
        decode, their_cls = PAIRS[which]
        for cut in range(len(data)):
            try:
                decode(data[:cut])
            except pw.WireError:
                raised += 1
            outcome(decode, their_cls, data[:cut])
    assert raised > sum(len(d) for _, d in cases) // 2
    assert time.perf_counter() - start < 60


def test_decoded_messages_are_immutable_values():
    a = pw.ObjectReference(node_id=1, local_name="x")
    assert a == pw.ObjectReference(node_id=1, local_name="x") and hash(a) == hash(
        pw.ObjectReference(node_id=1, local_name="x"))
    assert a != pw.ObjectReference(node_id=2, local_name="x")
    with pytest.raises(AttributeError):
        a.node_id = 2
    assert pw.BundleEntryProto().shape.dim == () and not pw.BundleEntryProto().slices
    assert "local_name='x'" in repr(a)
    graph = pw.TrackableObjectGraph(nodes=(pw.TrackableObject(children=(a,)),))
    assert pickle.loads(pickle.dumps(graph)) == copy.deepcopy(graph) == graph


def test_imports_no_tensorflow_keras_numpy_or_protobuf():
    code = ("import sys, kerasave.formats._tf.protowire as m; print(m.__file__); "
            "print(sorted(n for n in sys.modules "
            "if n.split('.')[0] in ('tensorflow', 'keras', 'numpy', 'google')))")
    mine = Path(pw.__file__).resolve()  # (the source tree's, or an installed copy's)
    env = {**os.environ, "PYTHONPATH": str(mine.parents[1])}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert Path(out[0]).resolve() == mine
    assert out[1] == "[]"
