"""``kerasave.open``: reading an artifact without a model (issue 28, item 3).

For every format: the arrays ``open`` reads are the model's variables bit for bit,
and the same arrays the format's own native reader reads (TensorFlow's checkpoint
reader, h5py, onnx); hostile files are refused when opened, as every other reader
refuses them; nothing is allocated because a file declares it until ``array()`` is
asked for that array; loads take the open artifact.
"""

from __future__ import annotations

import gc
import hashlib
import secrets
import zipfile
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

import kerasave as ks
from kerasave.testing import EXPORTS
from tests import hostile as H
from tests.conftest import FIXTURES, all_vars, values
from tests.test_shapes import (
    _edit_index,
    _huge,
    _keras,
    _kernel_key,
    _legacy,
    _past_the_end,
    _unmanifested,
    _weights,
    address_space,
    allocates_at_most,
)

# What each format is saved as here, and the format name ``open`` gives it.
SAVED = {
    "checkpoint": ("w/ckpt", "checkpoint"),
    "h5 weights": ("w.weights.h5", "h5"),
    "h5-sharded": ("s.weights.json", "h5-sharded"),
    "json": ("c.json", "json"),
    "yaml": ("c.yaml", "yaml"),
    "keras": ("m.keras", "keras"),
    "h5 model": ("m.h5", "h5"),
    "savedmodel": ("serving", "savedmodel"),
    **{name: (f"m.{'onnx' if name == 'onnx' else 'tflite'}", name) for name in EXPORTS},
}
# What the format holds of the model: its variables and its optimizer's, the model's
# only (exports), or nothing (configs).
HOLDS = {"json": "nothing", "yaml": "nothing", "savedmodel": "model", "onnx": "model",
         "litert": "model"}


def fingerprint(array: np.ndarray) -> tuple[str, tuple[int, ...], str]:
    array = np.asarray(array)
    return str(array.dtype), array.shape, hashlib.sha256(array.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The reference model, trained a step (its optimizer state built), in every format."""
    root = tmp_path_factory.mktemp("open")
    model = ks.reference_model(seed=7)
    model.train_on_batch(*ks.reference_data(32, seed=7))
    paths = {}
    for fmt, (name, _) in SAVED.items():
        path = paths[fmt] = root / name
        if fmt in ("checkpoint", "h5 weights"):
            ks.save_weights(model, path)
        elif fmt == "h5-sharded":
            ks.save_weights(model, path, max_shard_size=24000 / 1024**3)  # (three shards)
        elif fmt in ("json", "yaml"):
            ks.save_config(model, path)
        else:
            ks.save_model(model, path)
    return model, paths


def _native(path: Path, fmt: str) -> list[np.ndarray]:
    """Every stored array, as the format's own reader reads it."""
    if fmt in ("checkpoint", "savedmodel"):
        import tensorflow as tf

        prefix = path / "variables" / "variables" if fmt == "savedmodel" else path
        reader = tf.train.load_checkpoint(str(prefix))
        return [reader.get_tensor(k) for k, dtype in reader.get_variable_to_dtype_map().items()
                if k != "_CHECKPOINTABLE_OBJECT_GRAPH" and dtype != tf.variant]
    if fmt in ("h5 weights", "h5 model", "h5-sharded", "keras"):
        files = [path]
        if fmt == "h5-sharded":
            files = sorted(path.parent.glob("s_*.weights.h5"))
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                (path.parent / "inner.h5").write_bytes(zf.read("model.weights.h5"))
            files = [path.parent / "inner.h5"]
        found = []
        for file in files:
            with h5py.File(file, "r") as f:
                f.visititems(lambda _, obj: found.append(obj[()])
                             if isinstance(obj, h5py.Dataset) else None)
        return found
    if fmt == "onnx":
        import onnx
        from onnx import numpy_helper

        return [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    if fmt == "litert":  # (LiteRT's interpreter reads constants only once allocated)
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(path))
        runner.allocate_tensors()
        names = {t.name for t in ks.inspect(path).variables}
        return [runner.get_tensor(d["index"]) for d in runner.get_tensor_details()
                if d["name"] in names]
    return []


@pytest.mark.parametrize("fmt", list(SAVED))
def test_every_array_is_the_models_bit_for_bit(saved, fmt):
    model, paths = saved
    path = paths[fmt]
    with ks.open(path) as artifact:
        assert artifact.format == SAVED[fmt][1] and artifact.path == str(path)
        assert artifact.variables == ks.inspect(path).variables
        assert artifact.keys() == list(artifact) == [v.name for v in artifact.variables]
        assert len(artifact) == len(artifact.variables)
        read = {name: artifact.array(name) for name in artifact}
        assert all(name in artifact for name in read) and "nonesuch" not in artifact
        with pytest.raises(KeyError, match="nonesuch"):
            artifact.array("nonesuch")
    for v in artifact.variables:  # exactly what is listed: shape and dtype
        assert (read[v.name].shape, str(read[v.name].dtype)) == (v.shape, v.dtype), v
        assert type(read[v.name]) is np.ndarray
    got = Counter(fingerprint(a) for a in read.values())
    assert got == Counter(fingerprint(a) for a in _native(path, fmt))
    holds = HOLDS.get(fmt, "all")
    if holds == "nothing":
        assert not read
        return
    variables = list(model.weights) + (list(model.optimizer.variables) if holds == "all"
                                       else [])
    want = {fingerprint(v.numpy()) for v in variables}
    if fmt == "litert":  # (LiteRT keeps a Dense kernel transposed, as its op reads it)
        want = {fingerprint(v.numpy().T) for v in variables}
    assert set(got) == want
    if holds == "all":
        assert sum(got.values()) == len(variables)


@pytest.mark.parametrize("fmt", list(SAVED))
def test_metadata_and_repr(saved, fmt):
    _, paths = saved
    path = paths[fmt]
    found = ks.inspect(path)
    with ks.open(path) as artifact:
        meta = artifact.metadata
        text = repr(artifact)
    assert meta["versions"] == dict(found.versions) and meta["versions"]
    assert meta["bytes"] == found.bytes == sum(meta["files"].values())
    assert tuple(meta["files"]) == found.files
    assert meta["has_optimizer"] == found.has_optimizer == (HOLDS.get(fmt, "all") == "all")
    manifest = meta["manifest"]
    assert manifest["checksummed"] and Path(manifest["path"]).is_file()
    assert "match their CRC32C" in manifest["detail"]
    assert meta["architecture"] == (fmt in ("json", "yaml", "keras", "h5 model"))
    assert ("inputs" in meta) == (fmt in EXPORTS)
    with pytest.raises(TypeError):
        meta["versions"] = {}  # type: ignore[index]
    assert text.startswith(f"<kerasave.Artifact {SAVED[fmt][1]} {str(path)!r}: ")
    assert repr(artifact).endswith("(closed)>")
    with pytest.raises(ks.KerasaveError, match="closed"):
        artifact.array("anything")


KERAS2 = sorted({p.with_suffix("") for p in (FIXTURES / "keras2").rglob("*.index")}
                | {p.parent for p in (FIXTURES / "keras2").rglob("saved_model.pb")}
                | {p for p in (FIXTURES / "keras2").rglob("*.h5")})


@pytest.mark.parametrize("path", KERAS2, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_keras2_artifacts_read_as_their_native_readers_read_them(path):
    with ks.open(path) as artifact:
        state = [v.name for v in artifact.variables if v.dtype == "variant"]
        for name in state:  # (a tf.data iterator's state: no array, not even natively)
            with pytest.raises(ks.UnknownFormatError, match="no NumPy form"):
                artifact.array(name)
        read = [artifact.array(name) for name in artifact if name not in state]
        fmt = {"h5": "h5 weights", "checkpoint": "checkpoint",
               "savedmodel": "savedmodel"}[artifact.format]
    assert read and Counter(map(fingerprint, read)) == Counter(
        map(fingerprint, _native(path, fmt)))


def test_configs_hold_no_arrays(saved):
    for path in (FIXTURES / "keras2" / "functional.json", saved[1]["yaml"]):
        with ks.open(path) as artifact:
            assert artifact.kind == "config" and artifact.keys() == [] and len(artifact) == 0
            assert artifact.metadata["architecture"]
            assert "architecture only" in repr(artifact)


# -- hostile files: refused when opened, as every reader refuses them --------------------


def _checkpoint_bomb(tmp_path, model):
    prefix = tmp_path / "ckpt"
    ks.save_weights(model, prefix)
    _unmanifested(prefix)
    _edit_index(prefix, _kernel_key(prefix), _huge)
    return prefix


def _checkpoint_past_the_end(tmp_path, model):
    prefix = _checkpoint_bomb(tmp_path, model)
    ks.save_weights(model, prefix)
    _unmanifested(prefix)
    _edit_index(prefix, _kernel_key(prefix), _past_the_end)
    return prefix


def _savedmodel_bomb(tmp_path, model):
    path = tmp_path / "served"
    ks.save_model(model, path, format="savedmodel")
    _unmanifested(path)
    prefix = path / "variables" / "variables"
    _edit_index(prefix, _kernel_key(prefix), _huge)
    return path


def _external_link(tmp_path, model):
    path = tmp_path / "w.weights.h5"
    ks.save_weights(model, path)
    _unmanifested(path)
    with h5py.File(tmp_path / "elsewhere.h5", "w") as f:
        f["x"] = np.arange(4.0)
    with h5py.File(path, "r+") as f:
        f["sneaky"] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "/x")
    return path


def _zip_slip(tmp_path, model):
    src = tmp_path / "good.keras"
    ks.save_model(model, src)
    return H.rewrite_keras(src, tmp_path / "bad.keras", members={"../evil.txt": b"x"})


HOSTILE = {
    "h5 weights shape bomb": (lambda d, m: _weights(d, m), ks.CorruptArtifactError,
                              "declares shape (200000, 200000)"),
    "legacy h5 shape bomb": (lambda d, m: _legacy(d, m), ks.CorruptArtifactError,
                             "declares shape (200000, 200000)"),
    "keras shape bomb": (lambda d, m: _keras(d, m), ks.CorruptArtifactError,
                         "declares shape (200000, 200000)"),
    "keras shape bomb, deflated": (
        lambda d, m: _keras(d, m, compression=zipfile.ZIP_DEFLATED),
        ks.CorruptArtifactError, "declares shape (200000, 200000)"),
    "checkpoint index bomb": (_checkpoint_bomb, ks.CorruptArtifactError,
                              "declares 160,000,000,000 bytes"),
    "checkpoint past the data file": (_checkpoint_past_the_end, ks.CorruptArtifactError,
                                      "past the end"),
    "savedmodel index bomb": (_savedmodel_bomb, ks.CorruptArtifactError,
                              "declares 160,000,000,000 bytes"),
    "variable-length strings": (lambda d, m: H.vlen_weights(d / "w.weights.h5"),
                                ks.CorruptArtifactError, "variable-length"),
    "HDF5 external link": (_external_link, ks.UnsafeArtifactError, "external link"),
    "zip member outside the archive": (_zip_slip, ks.UnsafeArtifactError, "outside the archive"),
    "YAML python tag": (lambda d, m: FIXTURES / "keras2" / "hostile.yaml",
                        ks.UnsafeArtifactError, "!!python/object/apply:os.system"),
}


@pytest.fixture(scope="module")
def model():
    return ks.reference_model(seed=0)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_files_are_refused_when_opened(tmp_path, model, case):
    make, error, words = HOSTILE[case]
    path = make(tmp_path, model)
    with address_space(), pytest.raises(error) as refused:
        ks.open(path)
    assert words in str(refused.value)
    # Every other reader of kerasave refuses it alike: the command line's inspect, and
    # a load (or, where a load takes a model, a verify that reports the refusal).
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        ks.inspect(path)
    try:
        report = ks.verify(model, path)
    except ks.KerasaveError as exc:
        assert isinstance(exc, error) and words in str(exc)
    else:
        assert not report.ok and words in str(report)


def test_a_tensor_that_does_not_match_its_crc32c_is_refused_when_read(tmp_path, model):
    """A checkpoint without a manifest: its index is sound, one tensor's bytes are not.
    Opening reads no tensor; reading that one compares its CRC32C as TensorFlow does."""
    import tensorflow as tf

    prefix = tmp_path / "ckpt"
    ks.save_weights(model, prefix)
    _unmanifested(prefix)
    key = _kernel_key(prefix)
    location = __import__("kerasave.formats._tf.tfindex", fromlist=["x"]).tensor_locations(
        prefix)[key]
    data = bytearray(location.shard.read_bytes())
    data[location.offset + 5] ^= 0x01
    location.shard.write_bytes(bytes(data))
    with pytest.raises(tf.errors.OpError, match="Checksum does not match"):  # (natively)
        tf.train.load_checkpoint(str(prefix)).get_tensor(key)
    refused = []
    with ks.open(prefix) as artifact:
        for name in artifact:
            try:
                artifact.array(name)
            except ks.CorruptArtifactError as exc:
                refused.append(str(exc))
    assert len(refused) == 1 and f"{key} does not match its CRC32C" in refused[0]


def test_a_manifest_that_does_not_match_is_refused_when_opened(saved, tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(saved[1]["keras"].read_bytes())
    (tmp_path / "m.keras.kerasave.json").write_bytes(
        saved[1]["keras"].with_name("m.keras.kerasave.json").read_bytes())
    data = bytearray(path.read_bytes())
    data[len(data) - 200] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ks.CorruptArtifactError, match="does not match its manifest"):
        ks.open(path)


def test_nothing_there_and_no_format(tmp_path):
    with pytest.raises(ks.ArtifactNotFoundError):
        ks.open(tmp_path / "missing.keras")
    (tmp_path / "notes.txt").write_text("not a model\n")
    with pytest.raises(ks.UnknownFormatError):
        ks.open(tmp_path / "notes.txt")


# -- lazy: a file that declares a gigabyte ------------------------------------------------

GIB = (16384, 16384)  # float32: 1 GiB


def _big_h5(path: Path) -> Path:
    """An HDF5 weights file holding a 1 GiB dataset (a sparse file: its storage is
    allocated, its values never written) beside a small one."""
    with h5py.File(path, "w") as f:
        big = f.create_dataset("layers/big/vars/0", shape=GIB, dtype="float32")
        big[-1, -1] = 7.0  # (allocates the dataset's storage, writes one value)
        f["layers/small/vars/0"] = np.arange(12, dtype=np.float32).reshape(3, 4)
    return path


def _big_checkpoint(tmp_path: Path, model) -> Path:
    """A checkpoint whose kernel entry declares 1 GiB of zeros, appended to its data file
    as a hole, the entry's CRC32C theirs (so a read of it succeeds)."""
    import google_crc32c

    from kerasave.formats._tf import tfindex as tfi

    prefix = tmp_path / "ckpt"
    ks.save_weights(model, prefix)
    _unmanifested(prefix)
    key = _kernel_key(prefix)
    shard = tfi.tensor_locations(prefix)[key].shard
    offset = shard.stat().st_size
    size = int(np.prod(GIB)) * 4
    with open(shard, "r+b") as f:
        f.truncate(offset + size)
    crc, chunk = 0, bytes(64 << 20)
    for _ in range(size // len(chunk)):
        crc = google_crc32c.extend(crc, chunk)

    def edit(entry):
        del entry.shape.dim[:]
        for d in GIB:
            entry.shape.dim.add(size=d)
        entry.offset, entry.size, entry.crc32c = offset, size, tfi.masked_crc32c(crc)

    _edit_index(prefix, key, edit)
    return prefix


def _small_name(artifact):
    return next(v.name for v in artifact.variables if v.shape != GIB)


@pytest.mark.parametrize("fmt", ["h5 weights", "checkpoint"])
def test_opening_a_gigabyte_allocates_nothing_until_it_is_read(tmp_path, model, fmt):
    path = (_big_h5(tmp_path / "big.weights.h5") if fmt == "h5 weights"
            else _big_checkpoint(tmp_path, model))
    gc.collect()
    with address_space(headroom=256 << 20), allocates_at_most(8 << 20):
        artifact = ks.open(path)
        assert any(v.shape == GIB for v in artifact.variables)
        assert artifact.metadata["bytes"] > np.prod(GIB) * 4
        small = artifact.array(_small_name(artifact))
        repr(artifact)
    artifact.close()
    assert small.nbytes < 1 << 20


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["h5 weights", "checkpoint"])
def test_the_gigabyte_is_read_when_asked_for(tmp_path, model, fmt):
    path = (_big_h5(tmp_path / "big.weights.h5") if fmt == "h5 weights"
            else _big_checkpoint(tmp_path, model))
    with ks.open(path) as artifact:
        name = next(v.name for v in artifact.variables if v.shape == GIB)
        big = artifact.array(name)
    assert big.shape == GIB and big.dtype == np.float32
    assert big[-1, -1] == (7.0 if fmt == "h5 weights" else 0.0)
    assert not big[:-1].any()
    del big


# -- loads take the open artifact --------------------------------------------------------


def test_loads_take_the_open_artifact(saved, tmp_path):
    model, paths = saved
    want = values(all_vars(model))
    with ks.open(paths["keras"]) as artifact:
        loaded = ks.load_model(artifact)
        assert ks.verify(model, artifact).ok
        assert ks.inspect(artifact).variables == artifact.variables
    assert all(a.tobytes() == b.tobytes() for a, b in zip(want, values(all_vars(loaded))))
    target = ks.reference_model(seed=99)
    with ks.open(paths["checkpoint"]) as artifact:
        report = ks.load_weights(target, artifact)
    assert report.ok and report.path == str(paths["checkpoint"])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(want, values(all_vars(target))))
    with ks.open(paths["json"]) as artifact:
        assert ks.load_config(artifact).count_params() == model.count_params()
    with pytest.raises(ks.KerasaveError, match="closed"):
        ks.load_model(artifact)


def test_a_load_from_an_artifact_checks_what_it_reads_again(saved, tmp_path):
    """What changed on disk since it was opened is refused, not trusted."""
    path = tmp_path / "m.keras"
    path.write_bytes(saved[1]["keras"].read_bytes())
    (tmp_path / "m.keras.kerasave.json").write_bytes(
        saved[1]["keras"].with_name("m.keras.kerasave.json").read_bytes())
    with ks.open(path) as artifact:
        data = bytearray(path.read_bytes())
        data[len(data) - 200] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(ks.CorruptArtifactError, match="does not match its manifest"):
            ks.load_model(artifact)


def test_a_url_is_opened_as_its_copy_and_said_as_the_url(saved):
    model, paths = saved
    url = f"memory://kerasave-{secrets.token_hex(4)}/m.keras"
    ks.save_model(model, url)
    with ks.open(url) as artifact:
        assert artifact.path == url and artifact.format == "keras"
        assert list(artifact.metadata["files"]) == [f"{url}.kerasave.json", url]
        assert artifact.metadata["manifest"]["checksummed"]
        read = Counter(fingerprint(artifact.array(n)) for n in artifact)
        loaded = ks.load_model(artifact)
        local = artifact._opened.local
        assert local is not None and local.exists()
    assert not local.exists()  # (the local copy goes with the artifact)
    with ks.open(paths["keras"]) as artifact:
        assert read == Counter(fingerprint(artifact.array(n)) for n in artifact)
    want = values(all_vars(model))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(want, values(all_vars(loaded))))


def test_an_unclosed_artifact_lets_go_of_its_files(saved):
    artifact = ks.open(saved[1]["h5 weights"])
    assert artifact.array(artifact.keys()[0]).size
    del artifact
    gc.collect()
    with h5py.File(saved[1]["h5 weights"], "r+"):  # (no other handle holds it open)
        pass


@pytest.mark.skipif("onnx" not in EXPORTS, reason="needs kerasave[export]")
def test_onnx_data_outside_the_model_is_refused_before_any_array_is_read(saved, tmp_path):
    """The top graph lists as inspect lists it; the first read walks every tensor's data
    location first, as a load does before onnxruntime sees the file."""
    from tests.test_exports import _external

    path = tmp_path / "m.onnx"
    path.write_bytes(saved[1]["onnx"].read_bytes())
    (tmp_path.parent / "outside.bin").write_bytes(b"\0" * 100_000)
    _external(path, "../outside.bin")
    with ks.open(path) as artifact:
        assert len(artifact) == 4
        for name in artifact:
            with pytest.raises(ks.UnsafeArtifactError, match="outside the model"):
                artifact.array(name)
