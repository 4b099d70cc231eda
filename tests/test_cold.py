"""The command line starts cold: ``kerasave inspect`` of every format, ``--help``
and ``doctor``'s versions import neither TensorFlow nor Keras, and say exactly
what they say when TensorFlow's own readers do the reading; so does
``kerasave.open``, which reads every array of a plain dtype as TensorFlow's
readers read it.

Behaviour, not time: the commands run in a subprocess whose import system
refuses ``tensorflow`` and ``keras``; ``bench/perf.py`` times them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import kerasave as ks
from kerasave.cli import main
from kerasave.formats import _pairing, checkpoint
from kerasave.formats._tf import protowire as _protowire
from kerasave.formats._tf import tfindex as _tfindex
from kerasave.testing import EXPORTS as _INSTALLED
from tests.conftest import FIXTURES

EXPORTS = {name: fmt for name, fmt in (("m.onnx", "onnx"), ("m.tflite", "litert"))
           if fmt in _INSTALLED}

# Runs the command line once per argument list given as JSON on stdin, in one
# process that cannot import TensorFlow or Keras; prints {"code", "out"} for each.
COLD = r"""
import contextlib, io, json, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ImportError(f"the cold start imported {name}")
        return None

sys.meta_path.insert(0, Refuse())
from kerasave.cli import main

results = []
for args in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


def cold(*commands: list[str]) -> list[dict]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", COLUMNS="200")
    proc = subprocess.run([sys.executable, "-c", COLD], input=json.dumps(list(commands)),
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def warm(args: list[str], monkeypatch) -> dict:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setenv("COLUMNS", "200")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> list[Path]:
    """The reference model in every format, and every kind of Keras 2 fixture."""
    root = tmp_path_factory.mktemp("cold")
    model = ks.reference_model(seed=3)
    model.train_on_batch(*ks.reference_data(32, seed=3))
    own = [root / "w" / "ckpt", root / "w.weights.h5", root / "m.keras", root / "m.h5",
           root / "serving", root / "c.json", root / "c.yaml", root / "s.weights.json"]
    for path in own[:2]:
        ks.save_weights(model, path)
    ks.save_weights(model, own[7], max_shard_size=24000 / 1024**3)
    for path in own[2:5]:
        ks.save_model(model, path)
    for path in own[5:7]:
        ks.save_config(model, path)
    for name in EXPORTS:  # (with kerasave[export]: ONNX and LiteRT files)
        own.append(root / name)
        ks.save_model(model, own[-1])
    keras2 = FIXTURES / "keras2"
    foreign = sorted({p.with_suffix("") for p in keras2.rglob("*.index")})
    foreign += sorted(p.parent for p in keras2.rglob("saved_model.pb"))
    foreign += sorted(p for p in keras2.rglob("*") if p.suffix in (".h5", ".json", ".yaml"))
    return own + foreign


def test_inspect_of_every_format_imports_neither_and_says_the_same(artifacts, monkeypatch):
    commands = [["inspect", *flag, str(p)] for p in artifacts for flag in ([], ["--json"])]
    got = cold(*commands)
    # The reference: TensorFlow's readers read every checkpoint and SavedModel.
    monkeypatch.setattr(_pairing, "listing", lambda *_: None)
    for args, result in zip(commands, got):
        assert result == warm(args, monkeypatch), args
    assert sum(r["code"] == 0 for r in got) >= len(got) - 2  # (hostile.yaml is refused)
    formats = {json.loads(r["out"])["format"] for r in got[1::2] if r["code"] == 0}
    assert formats == {"checkpoint", "h5", "keras", "savedmodel", "json", "yaml", "h5-sharded",
                       *EXPORTS.values()}


# Opens every artifact given as JSON on stdin through ``kerasave.open`` (the package's
# attribute, as users reach it) in a process that cannot import TensorFlow or Keras:
# format, variables, metadata and every array of a plain dtype, read.
COLD_OPEN = r"""
import hashlib, json, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
            raise ImportError(f"the cold start imported {name}")
        return None

sys.meta_path.insert(0, Refuse())
import kerasave

def opened(path):
    try:
        with kerasave.open(path) as artifact:
            arrays = {}
            for v in artifact.variables:
                if v.dtype in ("string", "variant", "resource"):
                    continue  # (no plain array: TensorFlow's reader reads a string)
                a = artifact.array(v.name)
                arrays[v.name] = [str(a.dtype), list(a.shape),
                                  hashlib.sha256(a.tobytes()).hexdigest()]
            return {"format": artifact.format, "kind": artifact.kind,
                    "variables": [[v.name, list(v.shape), v.dtype]
                                  for v in artifact.variables],
                    "metadata": json.loads(json.dumps(dict(artifact.metadata))),
                    "arrays": arrays, "repr": repr(artifact)}
    except kerasave.KerasaveError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}

print(json.dumps([opened(p) for p in json.load(sys.stdin)]))
"""
OPENED = COLD_OPEN.split("import kerasave\n", 1)[1].rsplit("print(", 1)[0]


def test_open_of_every_format_imports_neither_and_reads_what_tensorflow_reads(
        artifacts, monkeypatch):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", COLD_OPEN],
                          input=json.dumps([str(p) for p in artifacts]),
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    # The reference: TensorFlow's own readers list and read every checkpoint tensor.
    monkeypatch.setattr(_pairing, "listing", lambda *_: None)

    calls = []

    def nowhere(prefix):
        calls.append(prefix)
        raise ValueError("read by TensorFlow's reader")

    monkeypatch.setattr(_tfindex, "tensor_locations", nowhere)
    scope = {"kerasave": ks, "hashlib": __import__("hashlib"), "json": json}
    exec(OPENED, scope)
    for path, cold_result in zip(artifacts, got):
        assert cold_result == scope["opened"](str(path)), path
    assert sum("error" in r for r in got) == 1  # (hostile.yaml is refused)
    read = sum(len(r.get("arrays", ())) for r in got)
    assert calls  # (the reference went through TensorFlow's reader)
    assert read >= 200 and {r["format"] for r in got if "format" in r} == {
        "checkpoint", "h5", "keras", "savedmodel", "json", "yaml", "h5-sharded",
        *EXPORTS.values()}


def test_help_and_version_start_cold():
    top, sub, version = cold(["--help"], ["inspect", "--help"], ["--version"])
    for name in ("demo", "inspect", "verify", "diff", "convert", "doctor"):
        assert f"  {name} " in top["out"]
    assert "--json" in sub["out"]
    assert version["out"].strip() == f"kerasave {ks.__version__}"
    assert top["code"] == sub["code"] == version["code"] == 0


DOCTOR = r"""
import sys

class Mark:
    seen = False

    def find_spec(self, name, path=None, target=None):
        if not Mark.seen and name.split(".")[0] in ("tensorflow", "keras"):
            Mark.seen = True
            print("<TensorFlow imported>", flush=True)
        return None

sys.meta_path.insert(0, Mark())
from kerasave.cli import main
sys.exit(main(["doctor"]))
"""


def test_doctor_says_the_versions_before_it_imports_tensorflow():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", DOCTOR], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.index("tensorflow ") < out.index("supported:") < out.index(
        "<TensorFlow imported>") < out.index("fast path") < out.index("keras_reader")


def test_a_damaged_checkpoint_is_read_by_tensorflow_and_refused_alike(tmp_path, monkeypatch):
    """The index reader serves only what it checked: a graph whose bytes do not
    match their CRC32C goes to TensorFlow's reader, which refuses it in its words."""
    model = ks.reference_model(seed=4)
    prefix = tmp_path / "w" / "ckpt"
    ks.save_weights(model, prefix)
    (tmp_path / "w" / "ckpt.kerasave.json").unlink()  # (a plain checkpoint: no manifest)
    entries, shards = _tfindex._index(prefix)
    entry = entries[checkpoint._GRAPH_KEY]
    data = prefix.with_name(f"ckpt.data-00000-of-{shards:05d}")
    raw = bytearray(data.read_bytes())
    raw[entry.offset + entry.size - 3] ^= 0x20  # one bit of the graph's last bytes
    data.write_bytes(bytes(raw))
    assert _tfindex.listing(prefix, checkpoint._GRAPH_KEY) is None
    with pytest.raises(ks.CorruptArtifactError) as light:
        ks.inspect(prefix)
    monkeypatch.setattr(_pairing, "listing", lambda *_: None)
    with pytest.raises(ks.CorruptArtifactError) as heavy:
        ks.inspect(prefix)
    assert str(light.value) == str(heavy.value)
    assert "object graph" in str(light.value)


def test_the_index_listing_equals_tensorflows_reader(artifacts):
    for path in artifacts:
        prefix = path / "variables" / "variables" if (path / "saved_model.pb").exists() else path
        if not prefix.with_name(prefix.name + ".index").exists():
            continue
        found = _tfindex.listing(prefix, checkpoint._GRAPH_KEY)
        assert found is not None, path
        _assert_read_as_tensorflow_reads(found, prefix)


def _assert_read_as_tensorflow_reads(found, prefix, *where):
    reader = tf.train.load_checkpoint(str(prefix))
    assert found.shapes == {k: tuple(v) for k, v in
                            reader.get_variable_to_shape_map().items()}, where
    assert found.dtypes == {k: v.name for k, v in
                            reader.get_variable_to_dtype_map().items()}, where
    assert found.graph == reader.get_tensor(checkpoint._GRAPH_KEY), where


def test_a_string_tensor_is_served_only_when_its_crc32c_matches():
    import google_crc32c

    body = b"graph bytes"
    crc = google_crc32c.value(struct.pack("<I", len(body)))
    length_crc = struct.pack("<I", _tfindex.masked_crc32c(crc))
    whole = _tfindex.masked_crc32c(google_crc32c.extend(crc, length_crc + body))
    raw = bytes([len(body)]) + length_crc + body
    assert _tfindex._string_scalar(raw, whole) == body
    assert _tfindex._string_scalar(raw, whole ^ 1) is None
    assert _tfindex._string_scalar(raw[:-1], whole) is None  # (shorter than it says)
    assert _tfindex._string_scalar(raw[:1] + raw[1:5][::-1] + body, whole) is None


def test_dtype_names_are_tensorflows():
    for enum in range(1, 40):
        try:
            dtype = tf.dtypes.as_dtype(enum)
        except (TypeError, ValueError):
            continue
        assert _tfindex.dtype_name(enum) == dtype.name
        plain = (dtype.is_numpy_compatible and not dtype.is_quantized
                 and np.dtype(dtype.as_numpy_dtype).kind in "fiucb")
        expected = np.dtype(dtype.as_numpy_dtype) if plain else None
        assert _tfindex.numpy_dtype(enum) == expected, dtype.name
    assert _protowire.DT_BFLOAT16 not in _protowire.NUMPY_NAMES


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_damaged_byte_of_the_index_is_refused_or_read_as_tensorflow_reads_it(
        tmp_path, mask):
    """Each block of the table is served only when its CRC32C matches, as
    TensorFlow's ``table::ReadBlock`` demands: one changed byte anywhere in the
    ``.index`` leaves the listing None (TensorFlow then says what is wrong) or
    equal to what TensorFlow's reader reads from the same damaged file."""
    model = ks.reference_model(seed=5)
    prefix = tmp_path / "ckpt"
    ks.save_weights(model, prefix)
    index = prefix.with_name("ckpt.index")
    original = index.read_bytes()
    served = []
    for i in range(len(original)):
        raw = bytearray(original)
        raw[i] ^= mask
        index.write_bytes(bytes(raw))
        found = _tfindex.listing(prefix, checkpoint._GRAPH_KEY)
        if found is None:
            continue
        served.append(i)
        _assert_read_as_tensorflow_reads(found, prefix, i)
    # Only what neither reader reads may change unnoticed: the metaindex block
    # (the first handle of the 48-byte footer points at it) and the footer's rest.
    metaindex_at, _ = _tfindex._varint(original, len(original) - 48)
    assert served and min(served) >= metaindex_at, (served, metaindex_at)
