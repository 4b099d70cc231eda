"""Shapes before bytes: a stored array is compared with its target, and its declared
size with what the file stores, before it is read (issue 13).

Every bomb here is a file of a few KB that declares an array of gigabytes. Each
read runs under an address-space limit a little above what the process maps
already, so a reader that allocates the declared array fails with MemoryError
instead of succeeding lazily: the test then sees the wrong error, and fails.
"""

import contextlib
import resource
import struct
import time
import tracemalloc
import zipfile
import zlib

import google_crc32c
import h5py
import numpy as np
import pytest
from tensorflow.core.protobuf import tensor_bundle_pb2

import kerasave as ks
from kerasave import cli
from kerasave.formats import _pairing
from kerasave.formats._tf import tfindex as tfi

from .conftest import all_vars, values

TYPED = (ks.CorruptArtifactError, ks.ArchitectureMismatchError)
BOMB = (200000, 200000)  # float32: 149 GiB
UNDER_KERAS = (30000, 25000)  # float32: 2.8 GiB, below Keras' own 4 GiB floor


@contextlib.contextmanager
def address_space(headroom=1 << 30):
    """RLIMIT_AS at what this process maps now plus ``headroom``, and the read must
    end within 5 s (a sanity bound: the limit is what catches an allocation)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = mapped + headroom if hard == resource.RLIM_INFINITY else min(hard,
                                                                       mapped + headroom)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    start = time.monotonic()
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert time.monotonic() - start < 5


@contextlib.contextmanager
def allocates_at_most(limit):
    """The NumPy memory allocated inside stays under ``limit`` bytes at its peak."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, f"{peak:,} bytes allocated"


def _unmanifested(path):
    """A file from elsewhere carries no kerasave manifest: the readers themselves must
    refuse it."""
    manifest = (path / "kerasave.json") if path.is_dir() else path.with_name(
        path.name + ".kerasave.json")
    manifest.unlink()
    return path


def _names(f):
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset)
                 else None)
    return found


def _replace(group, name, shape=BOMB, data=None):
    """The dataset ``name`` replaced: by a chunked, gzip-compressed one of ``shape`` that
    stores nothing (a shape bomb), or by ``data`` stored contiguously."""
    attrs = dict(group[name].attrs)
    del group[name]
    if data is None:
        group.create_dataset(name, shape=shape, dtype="float32", chunks=(1000, 1000),
                             compression="gzip")
    else:
        group.create_dataset(name, data=data)
    for key, value in attrs.items():
        group[name].attrs[key] = value


def _kernel(f, under=""):
    """The first dataset of shape (32, 64): the first Dense kernel."""
    group = f[under] if under else f
    return next(n for n in _names(group) if group[n].shape == (32, 64))


def _saved_h5(tmp_path, model):
    path = tmp_path / "m.h5"
    ks.save_model(model, path)
    return _unmanifested(path)


def _optimizer_slot(group):
    """The first optimizer slot of shape (32, 64) in a legacy file's optimizer_weights."""
    names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
    return next(n for n in names if group[n].shape == (32, 64))


def _legacy(tmp_path, model, **replace):
    path = _saved_h5(tmp_path, model)
    with h5py.File(path, "r+") as f:
        _replace(f["model_weights"], _kernel(f, "model_weights"), **replace)
    return path


def _weights(tmp_path, model, **replace):
    path = tmp_path / "w.weights.h5"
    ks.save_weights(model, path)
    _unmanifested(path)
    with h5py.File(path, "r+") as f:
        _replace(f, _kernel(f), **replace)
    return path


def _keras(tmp_path, model, *, compression=zipfile.ZIP_STORED, **replace):
    """A ``.keras`` archive whose ``model.weights.h5`` holds the replaced kernel."""
    saved = tmp_path / "saved.keras"
    ks.save_model(model, saved)
    inner = tmp_path / "model.weights.h5"
    with zipfile.ZipFile(saved) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    inner.write_bytes(members["model.weights.h5"])
    with h5py.File(inner, "r+") as f:
        _replace(f, _kernel(f), **replace)
    members["model.weights.h5"] = inner.read_bytes()
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _refused(exc_info, path, *words):
    text = str(exc_info.value)
    assert str(path) in text, text
    assert "allocate" not in text, text
    for word in words:
        assert word in text, text


def _verify_refuses(model, path, words):
    """``verify`` raises the typed error (the format cannot even be told: legacy .h5) or
    reports the failed load."""
    with address_space():
        try:
            report = ks.verify(model, path)
        except ks.CorruptArtifactError as exc:
            text = str(exc)
        else:
            assert not report.ok
            text = str(report)
    assert words in text and "allocate" not in text, text


def _stored_arrays(path):
    """Every stored array, read through ``kerasave.open`` as the command line reads them."""
    with ks.open(path) as artifact:
        return [artifact.array(name) for name in artifact]


@pytest.fixture(scope="module")
def model():
    return ks.reference_model(seed=0)


# -- legacy HDF5 whole model -----------------------------------------------------------


def test_legacy_h5_shape_bomb_is_refused_by_every_reader(tmp_path, model, capsys):
    path = _legacy(tmp_path, model)
    for read in (ks.load_model, _stored_arrays):
        with address_space(), pytest.raises(ks.CorruptArtifactError) as exc:
            read(path)
        _refused(exc, path, "declares shape (200000, 200000)", "model_weights")
    _verify_refuses(model, path, "declares shape (200000, 200000)")
    for command in (["verify", path], ["diff", path, path], ["inspect", path]):
        with address_space():
            code = cli.main([str(a) for a in command])
        err = capsys.readouterr().err
        assert code != 0 and "declares shape (200000, 200000)" in err, (command, err)


def test_legacy_h5_optimizer_shape_bomb_is_refused(tmp_path, model):
    path = _saved_h5(tmp_path, model)
    with h5py.File(path, "r+") as f:
        group = f["optimizer_weights"]
        _replace(group, _optimizer_slot(group))
    with address_space(), pytest.raises(ks.CorruptArtifactError) as exc:
        ks.load_model(path)
    _refused(exc, path, "declares shape (200000, 200000)", "optimizer_weights")


def test_legacy_h5_kernel_of_another_shape_is_compared_before_it_is_read(tmp_path, model):
    big = np.ones((3000, 3000), np.float32)  # 36 MB, stored as it is: no bomb, no fit
    path = _legacy(tmp_path, model, data=big)
    del big
    with allocates_at_most(20 << 20), pytest.raises(ks.ArchitectureMismatchError) as exc:
        ks.load_model(path)
    _refused(exc, path, "(3000, 3000) float32")


def test_legacy_h5_optimizer_slot_of_another_shape_is_not_read(tmp_path, model):
    path = _saved_h5(tmp_path, model)
    with h5py.File(path, "r+") as f:
        group = f["optimizer_weights"]
        _replace(group, _optimizer_slot(group),
                 data=np.ones((3000, 3000), np.float32))
    with allocates_at_most(20 << 20), pytest.warns(UserWarning, match="does not fit"):
        ks.load_model(path)


# -- HDF5 weights ------------------------------------------------------------------------


@pytest.mark.parametrize("built", [True, False], ids=["built", "unbuilt"])
def test_h5_weights_shape_bomb_leaves_the_model_as_it_was(tmp_path, model, built):
    path = _weights(tmp_path, model)
    target = ks.reference_model(seed=1) if built else None
    if target is None:
        import keras

        target = keras.Sequential([keras.layers.Dense(64, activation="relu"),
                                   keras.layers.Dense(10, activation="softmax")])
    before = values(all_vars(target))
    # (Already refused before issue 13, by the comparison of every dataset's layout
    # with the model's variables; now the file's own sizes refuse it first.)
    with address_space(), pytest.raises(TYPED) as exc:
        ks.load_weights(target, path)
    _refused(exc, path, "(200000, 200000)")
    after = values(all_vars(target))
    assert len(before) == len(after)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, after))


def test_h5_weights_shape_bomb_is_refused_by_verify_and_the_arrays_reader(tmp_path, model):
    path = _weights(tmp_path, model)
    _verify_refuses(model, path, "(200000, 200000)")
    with address_space(), pytest.raises(ks.CorruptArtifactError) as exc:
        _stored_arrays(path)
    _refused(exc, path, "declares shape (200000, 200000)")


def test_h5_chunk_that_inflates_past_its_dataset_is_refused(tmp_path, model):
    """The declared shape fits the variable; its one chunk inflates to 4 MB."""
    path = tmp_path / "w.weights.h5"
    ks.save_weights(model, path)
    _unmanifested(path)
    with h5py.File(path, "r+") as f:
        name = _kernel(f)
        del f[name]
        dataset = f.create_dataset(name, shape=(32, 64), dtype="float32", chunks=(32, 64),
                                   compression="gzip")
        dataset.id.write_direct_chunk((0, 0), zlib.compress(bytes(4 << 20), 9))
    target = ks.reference_model(seed=1)
    before = values(all_vars(target))
    with allocates_at_most(2 << 20), pytest.raises(ks.CorruptArtifactError) as exc:
        ks.load_weights(target, path)
    _refused(exc, path, "inflates past")
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, values(all_vars(target))))


# -- .keras ------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED],
                         ids=["stored", "deflated (Keras' own reader)"])
def test_keras_archive_shape_bomb_is_refused(tmp_path, model, compression):
    path = _keras(tmp_path, model, compression=compression, shape=UNDER_KERAS)
    with address_space(), pytest.raises(ks.CorruptArtifactError) as exc:
        ks.load_model(path)
    _refused(exc, path, "declares shape (30000, 25000)")
    _verify_refuses(model, path, "declares shape (30000, 25000)")
    with address_space(), pytest.raises(ks.CorruptArtifactError) as exc:
        _stored_arrays(path)
    _refused(exc, path, "declares shape (30000, 25000)")


def test_keras_archive_array_larger_than_any_variable_is_not_read(tmp_path, model):
    path = _keras(tmp_path, model, data=np.ones((3000, 3000), np.float32))
    with allocates_at_most(20 << 20), pytest.raises(ks.ArchitectureMismatchError) as exc:
        ks.load_model(path)
    _refused(exc, path, "(3000, 3000) float32", "more than any variable")


# -- TF checkpoints and SavedModel -------------------------------------------------------


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _block(entries):
    body = bytearray()
    restarts = []
    for key, value in entries:
        restarts.append(len(body))
        body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
    restarts = restarts or [0]
    return bytes(body + b"".join(struct.pack("<I", r) for r in restarts)
                 + struct.pack("<I", len(restarts)))


def _edit_index(prefix, key, edit):
    """Rewrite the checkpoint's ``.index`` (a LevelDB table) with ``edit`` applied to the
    ``BundleEntryProto`` of ``key``."""
    index = prefix.with_name(prefix.name + ".index")
    data = index.read_bytes()
    footer = data[-48:]
    _, at = tfi._varint(footer, 0)
    _, at = tfi._varint(footer, at)
    index_at, at = tfi._varint(footer, at)
    index_size, _ = tfi._varint(footer, at)
    entries = []
    for _, handle in tfi._table_block(data, index_at, index_size):
        block_at, i = tfi._varint(handle, 0)
        block_size, _ = tfi._varint(handle, i)
        for name, value in tfi._table_block(data, block_at, block_size):
            if name == key.encode():
                entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
                edit(entry)
                value = entry.SerializeToString()
            entries.append((name, value))
    out = bytearray()

    def put(block):
        at = len(out)
        crc = tfi.masked_crc32c(google_crc32c.value(block + b"\x00"))
        out.extend(block + b"\x00" + struct.pack("<I", crc))
        return _varint(at) + _varint(len(block))

    handles = put(_block(entries))
    meta = put(_block([]))
    handles = meta + put(_block([(entries[-1][0], handles)]))
    index.write_bytes(bytes(out + handles + b"\x00" * (40 - len(handles))
                            + struct.pack("<Q", tfi._TABLE_MAGIC)))


def _kernel_key(prefix):
    reader = _pairing.checked_reader(prefix)
    return next(k for k, s in reader.get_variable_to_shape_map().items() if s == [32, 64])


def _huge(entry):
    del entry.shape.dim[:]
    for size in BOMB:
        entry.shape.dim.add(size=size)
    entry.size = int(np.prod(BOMB)) * 4


def _wrong_size(entry):
    entry.size = int(np.prod(BOMB)) * 4


def _past_the_end(entry):
    entry.offset = 10**9


@pytest.mark.parametrize("edit, words", [
    (_huge, ("declares 160,000,000,000 bytes", "past the end")),
    (_wrong_size, ("declares shape (32, 64) float32 (8,192 bytes)",)),
    (_past_the_end, ("at offset 1,000,000,000", "past the end")),
], ids=["huge shape", "size not the shape's", "past the data file"])
def test_checkpoint_index_is_checked_before_a_tensor_is_read(tmp_path, model, edit, words):
    """(Loads refused all three before issue 13 too: the shape by kerasave's comparison
    with the variable, the others by TensorFlow's reader, once it had allocated the
    declared shape; verification and the arrays' reader allocated a huge shape.)"""
    prefix = tmp_path / "ckpt"
    ks.save_weights(model, prefix)
    _unmanifested(prefix)
    _edit_index(prefix, _kernel_key(prefix), edit)
    target = ks.reference_model(seed=1)
    before = values(all_vars(target))
    with address_space(), pytest.raises(TYPED) as exc:
        ks.load_weights(target, prefix)
    _refused(exc, prefix)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, values(all_vars(target))))
    _verify_refuses(model, prefix, words[0])
    with address_space(), pytest.raises(ks.CorruptArtifactError) as exc:
        _stored_arrays(prefix)
    _refused(exc, prefix, *words)


def test_savedmodel_index_shape_bomb_is_refused(tmp_path, model):
    path = tmp_path / "served"
    ks.save_model(model, path, format="savedmodel")
    _unmanifested(path)
    prefix = path / "variables" / "variables"
    _edit_index(prefix, _kernel_key(prefix), _huge)
    for read in (ks.load_model, _stored_arrays):
        with address_space(), pytest.raises(ks.CorruptArtifactError) as exc:
            read(path)
        _refused(exc, prefix, "declares 160,000,000,000 bytes")


def test_the_checks_do_not_refuse_good_files(tmp_path, model):
    """The same files with nothing replaced, and no manifest: every reader reads them."""
    paths = [tmp_path / "m.h5", tmp_path / "m.keras", tmp_path / "w.weights.h5",
             tmp_path / "ckpt"]
    ks.save_model(model, paths[0])
    ks.save_model(model, paths[1])
    ks.save_weights(model, paths[2])
    ks.save_weights(model, paths[3])
    _edit_index(paths[3], _kernel_key(paths[3]), lambda entry: None)  # rewritten as it was
    for path in paths:
        _unmanifested(path)
        assert ks.verify(model, path).ok, path
        assert len(_stored_arrays(path)) > 0
