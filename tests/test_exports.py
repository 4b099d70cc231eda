"""Deployment exports (ONNX, LiteRT): saved through Keras' own export, proven in their own
runtimes, read back as serving objects, inspected without TensorFlow, refused when the
exporters or runtimes cannot hold a model, and hostile files refused before a runtime
reads them. The tolerance policy they share with SavedModel serving outputs is in
tests/test_tolerance.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasave as ks
from kerasave.formats import _tflite
from kerasave.formats._export import Served, available

from .conftest import perturb

ONNX_MISSING = available("tf2onnx", "onnx", "onnxruntime")
LITERT_MISSING = available("ai_edge_litert")
EXPORTS = [
    pytest.param("onnx", "m.onnx", marks=pytest.mark.skipif(
        bool(ONNX_MISSING), reason=f"kerasave[export] is not installed: {ONNX_MISSING}")),
    pytest.param("litert", "m.tflite", marks=pytest.mark.skipif(
        bool(LITERT_MISSING), reason=f"kerasave[export] is not installed: {LITERT_MISSING}")),
]
needs_onnx = pytest.mark.skipif(bool(ONNX_MISSING), reason=f"not installed: {ONNX_MISSING}")
needs_litert = pytest.mark.skipif(bool(LITERT_MISSING), reason=f"not installed: {LITERT_MISSING}")


def native(fmt: str, model: keras.Model, path: Path, batch: np.ndarray) -> np.ndarray:
    """What Keras' own export gives, run in the runtime directly: the oracle."""
    if fmt == "onnx":
        import onnxruntime as ort

        model.export(str(path), format="onnx", verbose=False)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: batch})[0]
    from ai_edge_litert.interpreter import Interpreter

    model.export(str(path), format="litert", verbose=False)
    runner = Interpreter(model_path=str(path))
    runner.resize_tensor_input(runner.get_input_details()[0]["index"], list(batch.shape))
    runner.allocate_tensors()
    runner.set_tensor(runner.get_input_details()[0]["index"], batch)
    runner.invoke()
    return runner.get_tensor(runner.get_output_details()[0]["index"])


def keras_exports(fmt: str) -> bool:
    from kerasave.formats import litert

    return fmt == "onnx" or litert._keras_exports_litert(ks.reference_model(seed=0))


@pytest.mark.parametrize("fmt,name", EXPORTS)
def test_export_is_verified_served_and_matches_keras_own_export(trained, batch, tmp_path,
                                                                 fmt, name):
    path = tmp_path / name
    report = ks.save_model(trained, path)
    assert report.ok and report.format == fmt and report.bytes > 0
    checks = {c.name: c for c in report.checks}
    assert list(checks) == ["load", "inputs", "outputs", "serving outputs"]
    served_check = checks["serving outputs"].detail
    assert "at batch sizes 4 and 1" in served_check
    assert "bit-exact" in served_check or ("max abs" in served_check
                                           and "tolerance float32" in served_check)
    assert "(?, 32)" in checks["inputs"].detail and "(?, 10)" in checks["outputs"].detail
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, f"{name}.kerasave.json"]

    served = ks.load_model(path)
    assert isinstance(served, Served) and served.format == fmt
    assert [str(p) for p in served.inputs] == [f"{served.inputs[0].name} float32 (?, 32)"]
    data = batch[0][:7]  # a batch size the verification did not use: the batch is dynamic
    got = served.serve(data)
    assert got.dtype == np.float32 and got.shape == (7, 10)
    np.testing.assert_allclose(got, trained.predict(data, verbose=0), rtol=1e-5, atol=1e-6)
    assert served.serve(**{served.inputs[0].name: data}).tobytes() == got.tobytes()
    if keras_exports(fmt):  # the oracle: Keras' own export, in the same runtime
        theirs = native(fmt, trained, tmp_path / f"native{Path(name).suffix}", data)
        assert theirs.tobytes() == got.tobytes()

    assert ks.verify(trained, path).ok
    perturb(trained)  # another model: its outputs are far beyond the tolerance
    again = ks.verify(trained, path)
    assert not again.ok
    failed = {c.name: c.detail for c in again.failed}
    assert list(failed) == ["serving outputs"] and "beyond the tolerance" in failed[
        "serving outputs"]


@pytest.mark.parametrize("fmt,name", EXPORTS)
def test_inputs_and_outputs_are_paired_by_name_and_order(tmp_path, fmt, name):
    zeta = keras.Input((3,), name="zeta")
    alpha = keras.Input((2,), name="alpha")
    hidden = keras.layers.Concatenate()([zeta, alpha])
    model = keras.Model([zeta, alpha], {"zz": keras.layers.Dense(4, name="zz")(hidden),
                                        "aa": keras.layers.Dense(1, name="aa")(hidden)})
    report = ks.save_model(model, tmp_path / name)
    checks = {c.name: c.detail for c in report.checks}
    assert "zeta float32 (?, 3), alpha float32 (?, 2); matched by name" in checks["inputs"]
    assert checks["outputs"].startswith("aa float32 (?, 1), zz float32 (?, 4)")
    served = ks.load_model(tmp_path / name)
    rng = np.random.default_rng(0)
    z, a = rng.random((5, 3), dtype=np.float32), rng.random((5, 2), dtype=np.float32)
    by_position = served.serve(z, a)
    by_name = served.serve(alpha=a, zeta=z)
    as_structure = served.serve([z, a])
    expected = model.predict([z, a], verbose=0)
    for got in (by_name, as_structure):
        assert [g.tobytes() for g in got] == [g.tobytes() for g in by_position]
    for got, key in zip(by_position, ("aa", "zz")):  # keras.tree.flatten's order
        np.testing.assert_allclose(got, expected[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="takes the inputs"):
        served.serve(zeta=z)
    with pytest.raises(TypeError, match="takes float32; received complex64"):
        served.serve(z.astype(np.complex64), a)


class Lgamma(keras.layers.Layer):
    def call(self, x):
        import tensorflow as tf

        return tf.math.lgamma(x)


class Cumprod(keras.layers.Layer):
    def call(self, x):
        import tensorflow as tf

        return tf.math.cumprod(x, axis=1)


@pytest.mark.parametrize("fmt,name,layer,op,error", [
    # tf2onnx has no Lgamma: the exporter refuses it
    pytest.param("onnx", "m.onnx", Lgamma, "Lgamma", ks.NotSerializableError, marks=needs_onnx),
    # LiteRT's converter writes Cumprod as a TensorFlow (Flex) op its runtime cannot run
    pytest.param("litert", "m.tflite", Cumprod, "Cumprod", ks.NotSerializableError,
                 marks=needs_litert),
    # and lowers Lgamma into ops that fail at a batch of 4 (TensorFlow 2.21: found by
    # running it, the verification refuses the save naming the operator that failed, SUB,
    # and its layer), or refuses it (older converters)
    pytest.param("litert", "m.tflite", Lgamma, "", (ks.RoundTripError, ks.NotSerializableError),
                 marks=needs_litert),
])
def test_a_model_the_exporter_or_runtime_cannot_hold_is_refused_naming_op_and_layer(
        tmp_path, fmt, name, layer, op, error):
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(name="odd")(
        keras.layers.Dense(4)(inputs))))
    with pytest.raises(error) as info:
        ks.save_model(model, tmp_path / name)
    text = str(info.value)
    assert str(tmp_path / name) in text
    if isinstance(info.value, ks.RoundTripError):
        assert "could not run a batch" in text and "(layer 'odd')" in text, text
    elif op or "ConverterError" not in text:
        assert f"{op} (layer 'odd')" in text, text
    # (else TensorFlow 2.18's converter, which lowers Lgamma and then fails on a constant
    # without naming any op: its own words are all there is)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


@pytest.mark.parametrize("fmt,name", EXPORTS)
def test_without_the_extra_the_format_says_what_to_install(tmp_path, monkeypatch, fmt, name):
    from kerasave.formats import _export

    monkeypatch.setattr(_export, "available", lambda *modules: list(modules))
    with pytest.raises(ks.UnknownFormatError, match=r"pip install 'kerasave\[export\]'"):
        ks.save_model(ks.reference_model(seed=0), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt,name", EXPORTS)
def test_load_with_mmap_is_refused(trained, tmp_path, fmt, name):
    ks.save_model(trained, tmp_path / name)
    with pytest.raises(ks.UnknownFormatError, match="mmap=True"):
        ks.load_model(tmp_path / name, mmap=True)


@needs_litert
def test_litert_without_keras_exporter_converts_like_keras(trained, batch, tmp_path,
                                                           monkeypatch):
    """Keras 3.12 has no LiteRT exporter: kerasave converts Keras' SavedModel export with
    Keras 3.13's settings, and the result computes what Keras' own LiteRT export does."""
    from kerasave.formats import litert

    monkeypatch.setattr(litert, "_EXPORTS_LITERT", [False])
    report = ks.save_model(trained, tmp_path / "m.tflite")
    assert report.ok
    got = ks.load_model(tmp_path / "m.tflite").serve(batch[0])
    np.testing.assert_allclose(got, trained.predict(batch[0], verbose=0), rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(litert, "_EXPORTS_LITERT", [])
    if keras_exports("litert"):
        assert native("litert", trained, tmp_path / "n.tflite", batch[0]).tobytes() == \
            got.tobytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- reading without TensorFlow ---------------------------------------------------------

COLD = r"""
import json, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "onnx", "onnxruntime",
                                  "ai_edge_litert", "tf2onnx"):
            raise ImportError(f"inspect imported {name}")
        return None

sys.meta_path.insert(0, Refuse())
from kerasave.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cold_json(path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", COLD, "inspect", "--json", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@needs_onnx
def test_onnx_inspect_reads_without_any_runtime_as_onnx_does(trained, tmp_path):
    import onnx
    from onnx import numpy_helper

    path = tmp_path / "m.onnx"
    ks.save_model(trained, path)
    found = cold_json(path)
    reference = onnx.load(str(path))
    assert found["format"] == "onnx" and not found["has_optimizer"]
    assert [(v["name"], tuple(v["shape"])) for v in found["variables"]] == [
        (t.name, tuple(t.dims)) for t in reference.graph.initializer]
    assert found["versions"]["tf2onnx"] == reference.producer_version.removesuffix(" None")
    assert [i["name"] for i in found["inputs"]] == [i.name for i in reference.graph.input]
    assert found["inputs"][0]["shape"] == [None, 32]
    assert [o["name"] for o in found["outputs"]] == [o.name for o in reference.graph.output]
    handler = ks.inspect(path)
    assert handler.format == "onnx"
    from kerasave._registry import detect

    arrays = dict(detect(path).arrays(path))
    for tensor in reference.graph.initializer:
        theirs = numpy_helper.to_array(tensor)
        assert arrays[tensor.name].dtype == theirs.dtype
        assert arrays[tensor.name].tobytes() == theirs.tobytes()


@needs_litert
def test_litert_inspect_reads_without_any_runtime_as_litert_does(trained, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path = tmp_path / "m.tflite"
    ks.save_model(trained, path)
    found = cold_json(path)
    runner = Interpreter(model_path=str(path))
    details = {d["name"]: d for d in runner.get_tensor_details()}
    from kerasave._registry import detect

    arrays = dict(detect(path).arrays(path))
    assert found["format"] == "litert" and found["variables"]
    for variable in found["variables"]:
        theirs = details[variable["name"]]
        assert tuple(variable["shape"]) == tuple(theirs["shape"])
        assert variable["dtype"] == np.dtype(theirs["dtype"]).name
        assert arrays[variable["name"]].tobytes() == runner.get_tensor(
            theirs["index"]).tobytes()
    signature = runner.get_signature_list()["serving_default"]
    assert [i["name"] for i in found["inputs"]] == signature["inputs"]
    assert [o["name"] for o in found["outputs"]] == signature["outputs"]
    assert found["inputs"][0]["shape"] == [None, 32]
    assert found["versions"]["tensorflow"] == __import__("tensorflow").__version__


# -- hostile files -----------------------------------------------------------------------

def _external(path: Path, location: str, offset: int = 0) -> None:
    """Rewrite an ONNX file so that its first initializer keeps its bytes at ``location``."""
    import onnx

    model = onnx.load(str(path))
    tensor = model.graph.initializer[0]
    size = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)),
                       ("length", str(size))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    path.write_bytes(model.SerializeToString())


@needs_onnx
@pytest.mark.parametrize("where", ["../outside.bin", "ABSOLUTE", "link.bin",
                                   "sub/../../outside.bin"])
def test_onnx_external_data_outside_the_folder_is_refused_before_onnxruntime(
        trained, tmp_path, monkeypatch, where):
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    ks.save_model(trained, path, verify=False)
    (path.parent / "m.onnx.kerasave.json").unlink()  # (a foreign file: no manifest)
    secret = tmp_path / "outside.bin"
    secret.write_bytes(b"\0" * 100_000)
    if where == "ABSOLUTE":
        where = str(secret)
    if where == "link.bin":
        (folder / "link.bin").symlink_to(secret)
    _external(path, where)

    import onnxruntime

    def never(*args, **kwargs):
        raise AssertionError("onnxruntime was asked to read the model")

    monkeypatch.setattr(onnxruntime, "InferenceSession", never)
    with pytest.raises(ks.UnsafeArtifactError, match="outside the model|not a relative path"):
        ks.load_model(path)
    report = ks.verify(trained, path)
    assert not report.ok and "UnsafeArtifact" not in report.failed[0].detail
    assert "outside the model" in report.failed[0].detail
    with pytest.raises(ks.UnsafeArtifactError):
        list(__import__("kerasave._registry", fromlist=["detect"]).detect(path).arrays(path))


@needs_onnx
def test_onnx_external_data_inside_the_folder_is_read(trained, batch, tmp_path):
    path = tmp_path / "m.onnx"
    ks.save_model(trained, path, verify=False)
    (tmp_path / "m.onnx.kerasave.json").unlink()
    import onnx

    first = onnx.load(str(path)).graph.initializer[0]
    (tmp_path / "weights.bin").write_bytes(b"pad!" + first.raw_data)
    _external(path, "weights.bin", offset=4)
    assert ks.verify(trained, path).ok
    served = ks.load_model(path)
    np.testing.assert_allclose(served.serve(batch[0]), trained.predict(batch[0], verbose=0),
                               rtol=1e-5, atol=1e-6)
    # A length that reaches past the file is refused before anything reads it.
    _external(path, "weights.bin", offset=8)
    with pytest.raises(ks.UnsafeArtifactError, match="the file has"):
        ks.load_model(path)


@needs_onnx
def test_onnx_tensor_declaring_more_than_it_holds_is_refused(trained, tmp_path):
    import onnx

    path = tmp_path / "m.onnx"
    ks.save_model(trained, path, verify=False)
    (tmp_path / "m.onnx.kerasave.json").unlink()
    model = onnx.load(str(path))
    model.graph.initializer[0].dims[0] = 1 << 40  # a few KB that say "4 TB"
    path.write_bytes(model.SerializeToString())
    assert ks.inspect(path).variables[0].shape[0] == 1 << 40  # (listing allocates nothing)
    from kerasave._registry import detect

    with pytest.raises(ks.CorruptArtifactError, match="declares"):
        list(detect(path).arrays(path))


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    def varint(n: int) -> bytes:
        out = b""
        while True:
            out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return out
    return varint(number << 3 | 2) + varint(len(payload)) + payload


@pytest.mark.parametrize("depth", [40, 5000])
def test_onnx_graphs_nested_too_deep_are_refused(tmp_path, depth):
    """An If node whose branch holds an If node ... : refused, never a stack overflow."""
    graph = b""
    for _ in range(depth):  # GraphProto.node -> NodeProto.attribute -> AttributeProto.g
        attribute = _field(1, b"then_branch") + _field(6, graph)
        graph = _field(1, _field(4, b"If") + _field(5, attribute))
    path = tmp_path / "deep.onnx"
    path.write_bytes(b"\x08\x08" + _field(7, graph))  # ir_version 8, then the graph
    with pytest.raises(ks.CorruptArtifactError, match="nested more than"):
        ks.load_model(path)
    assert ks.inspect(path).format == "onnx"  # (the top graph lists, its branches unread)


@needs_litert
def test_litert_constant_declaring_more_than_its_buffer_is_refused(trained, tmp_path):
    path = tmp_path / "m.tflite"
    ks.save_model(trained, path, verify=False)
    (tmp_path / "m.tflite.kerasave.json").unlink()
    data = bytes(path.read_bytes())
    model = _tflite.read(data)
    index = max(range(len(model.tensors)), key=lambda i: len(model.tensors[i].shape) == 2 and
                model.tensors[i] in _tflite.constants(model))
    target = model.tensors[index]
    # The kernel's shape vector: each place it could be, until the kernel's shape changed.
    pattern = len(target.shape).to_bytes(4, "little") + np.array(target.shape, "<i4").tobytes()
    at = data.find(pattern)
    while at >= 0:
        tampered = data[:at + 4] + (1 << 30).to_bytes(4, "little") + data[at + 8:]
        if _tflite.read(tampered).tensors[index].shape[0] == 1 << 30:
            break
        at = data.find(pattern, at + 1)
    assert at >= 0
    path.write_bytes(tampered)
    with pytest.raises(ks.CorruptArtifactError, match="declares"):
        ks.load_model(path)
    from kerasave._registry import detect

    with pytest.raises(ks.CorruptArtifactError, match="declares"):
        list(detect(path).arrays(path))


@pytest.mark.parametrize("fmt,name", EXPORTS)
def test_every_truncation_is_refused_or_read(trained, tmp_path, fmt, name):
    """A damaged export (no manifest) is refused with kerasave's errors, never a crash."""
    path = tmp_path / name
    ks.save_model(trained, path, verify=False)
    (tmp_path / f"{name}.kerasave.json").unlink()
    whole = path.read_bytes()
    for cut in sorted({1, 8, 64, len(whole) // 3, len(whole) // 2, len(whole) - 1}):
        path.write_bytes(whole[:cut])
        try:
            ks.inspect(path)
            ks.verify(trained, path)
        except (ks.CorruptArtifactError, ks.UnknownFormatError):
            pass


@pytest.mark.parametrize("fmt,name", EXPORTS)
def test_random_damage_is_refused_or_read_never_a_foreign_error(trained, tmp_path, fmt, name):
    """A few bytes changed anywhere (no manifest to catch it): every reader raises a
    KerasaveError or reads the file; a load that succeeds serves or fails its check, and
    no damage reaches the runtime as an out-of-range tensor or a crash."""
    import random

    path = tmp_path / name
    ks.save_model(trained, path, verify=False)
    (tmp_path / f"{name}.kerasave.json").unlink()
    whole = path.read_bytes()
    for seed in range(30):
        rng = random.Random(seed)
        data = bytearray(whole)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        for read in (lambda: ks.inspect(path), lambda: ks.verify(trained, path),
                     lambda: ks.load_model(path)):
            try:
                read()
            except ks.KerasaveError:
                pass


@pytest.mark.parametrize("fmt,name", EXPORTS)
def test_round_trip_fixture_includes_the_export(round_trip, trained, fmt, name):
    from kerasave.testing import FORMATS

    assert fmt in FORMATS
    reports = round_trip(trained, formats=[fmt])
    checks = {c.name: c for c in reports[fmt].checks}
    assert checks["reload: serving outputs"].ok


# -- the command line ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt,name", EXPORTS)
def test_cli_convert_verify_diff(trained, tmp_path, fmt, name, capsys):
    from kerasave.cli import main

    ks.save_model(trained, tmp_path / "m.keras")
    assert main(["convert", str(tmp_path / "m.keras"), str(tmp_path / name)]) == 0
    out = capsys.readouterr().out
    assert f"-> {tmp_path / name}:" in out and ("tolerance" in out or "bit-exact" in out)
    assert main(["verify", str(tmp_path / name)]) == 0
    assert "serves batches of 1 and 3" in capsys.readouterr().out
    code = main(["diff", "--json", str(tmp_path / "m.keras"), str(tmp_path / name)])
    data = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in data["entries"]] == ["output 0 (batch of 4)",
                                                    "output 0 (batch of 1)"]
    assert code == (0 if data["identical"] else 1)
    assert any("within the export tolerance" in n for n in data["notes"])
    assert main(["convert", str(tmp_path / name), str(tmp_path / "back.keras")]) == 2
    assert "convert from the model it was exported from" in capsys.readouterr().err
