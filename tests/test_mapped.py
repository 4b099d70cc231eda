"""Verification reads the artifact where it lies (mapped pages), not through copies.

Each test saves without verification, changes bytes of the file on disk (or the
model in memory), and checks that the handler's comparison sees it: the mapped
views must be the file's bytes, at the right offsets, for the right variables.
"""

import h5py
import numpy as np
import pytest
import tensorflow as tf

import kerasave as ks
from kerasave import _registry
from kerasave._fastpaths import Unsupported, patches
from kerasave._fastpaths.h5read import member_span
from kerasave._fastpaths.twins import TWINS, _Replay
from kerasave.compare.state import keras_twin
from kerasave.formats._tf.tfindex import tensor_loader, tensor_locations, tensor_reader
from kerasave.store import local as _atomic
from kerasave.store import manifest as _manifest


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def _kernel_offset(path):
    """File offset of the first kernel of the model (not of the optimizer) in an HDF5 file."""
    found = []

    def visit(name, obj):
        model_part = name.startswith(("layers/", "model_weights/", "_layer_checkpoint"))
        if (isinstance(obj, h5py.Dataset) and model_part and obj.ndim == 2
                and obj.id.get_offset() is not None):
            found.append(obj.id.get_offset())

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    assert found, "no kernel found"
    return found[0]


def _checks(model, path, mapped=True):
    """The handler's checks, as a save runs them (mapped) or as ``verify`` does."""
    handler = _registry.detect(path)
    return {c.name: c for c in handler.check(model, path, own=mapped)}


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "read"])
@pytest.mark.parametrize("name", ["m.keras", "m.h5"])
def test_whole_model_check_sees_a_changed_byte_in_the_file(trained, tmp_path, name, mapped):
    path = tmp_path / name
    ks.save_model(trained, path, verify=False)
    assert all(c.ok for c in _checks(trained, path, mapped).values())
    if name.endswith(".keras"):
        import zipfile

        with zipfile.ZipFile(path) as zf:
            start, _ = member_span(path, zf, "model.weights.h5")
        with open(path, "rb") as f:
            f.seek(start)
            raw = f.read()
        tmp = tmp_path / "inner.h5"
        tmp.write_bytes(raw)
        offset = start + _kernel_offset(tmp)
    else:
        offset = _kernel_offset(path)
    _flip(path, offset + 5)
    checks = _checks(trained, path, mapped)
    assert not checks["model variables"].ok
    # The twin ran on the file's values, not on the live model's.
    assert not checks["predictions"].ok


@pytest.mark.parametrize("private", [True, False])
def test_the_twin_holds_views_of_the_file_only_for_kerasave_temporaries(trained, tmp_path,
                                                                        private):
    import json
    import zipfile

    path = tmp_path / "m.keras"
    ks.save_model(trained, path, verify=False)
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    with keras_twin(path, config, mapped=private) as (twin, recorded):
        n = len(trained.weights) + len(trained.optimizer.variables)
        assert len(recorded) == n
        assert all(a.flags.writeable != private for _, a in recorded.values())
        # Recorded, not assigned: the twin's weights hold no memory of their own.
        assert not any(v._value.is_initialized() for v in twin.weights)


@pytest.mark.parametrize("name", ["m.keras", "m.h5", "w.weights.h5"])
def test_twins_are_kept_for_the_next_save_and_still_see_changes(trained, tmp_path, name,
                                                                monkeypatch):
    TWINS.clear()
    built = []
    real = patches.uninitialized

    def counting():
        built.append(1)
        return real()

    monkeypatch.setattr(patches, "uninitialized", counting)
    save = ks.save_weights if "weights" in name else ks.save_model
    save(trained, tmp_path / name)
    first = len(built)
    assert first >= 1
    save(trained, tmp_path / name)
    assert len(built) == first  # the twin of the first save was reused
    kernel = trained.layers[0].kernel
    kernel.assign(kernel + 1.0)
    report = ks.verify(trained, tmp_path / name)  # a kept twin, a changed model
    assert not report.ok  # (judged again by a real load, as every failure is)
    assert "model variables" in {c.name for c in report.checks if not c.ok}


def _counting_replays(monkeypatch):
    replays = []
    real = _Replay.run

    def run(self, model, source):
        replays.append(real(self, model, source))
        return replays[-1]

    monkeypatch.setattr(_Replay, "run", run)
    return replays


def test_a_kept_twin_replays_exactly_the_reads_of_keras_traversal(trained, tmp_path,
                                                                   monkeypatch):
    import json
    import zipfile

    TWINS.clear()
    replays = _counting_replays(monkeypatch)
    path = tmp_path / "m.keras"
    ks.save_model(trained, path, verify=False)
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    seen = []
    for _ in range(2):
        with keras_twin(path, config, mapped=True) as (twin, recorded):
            seen.append({id(v): (v.path, a.shape, a.dtype, a.tobytes())
                         for v, a in recorded.values()})
    assert replays == [False, True]  # Keras' traversal, then its replay
    assert seen[0] == seen[1]  # every variable got the same dataset's bytes
    assert len(seen[0]) == len(trained.weights) + len(trained.optimizer.variables)


@pytest.mark.parametrize("name", ["m.keras", "w.weights.h5"])
def test_a_replayed_check_still_sees_a_changed_byte(trained, tmp_path, name, monkeypatch):
    TWINS.clear()
    replays = _counting_replays(monkeypatch)
    path = tmp_path / name
    save = ks.save_weights if "weights" in name else ks.save_model
    save(trained, path, verify=False)
    assert all(c.ok for c in _checks(trained, path).values())
    assert all(c.ok for c in _checks(trained, path).values())
    assert replays == [False, True]
    if name.endswith(".keras"):
        import zipfile

        with zipfile.ZipFile(path) as zf:
            start, _ = member_span(path, zf, "model.weights.h5")
        inner = tmp_path / "inner.h5"
        with open(path, "rb") as f:
            f.seek(start)
            inner.write_bytes(f.read())
        offset = start + _kernel_offset(inner)
    else:
        offset = _kernel_offset(path)
    _flip(path, offset + 5)
    checks = _checks(trained, path)
    assert replays[-1] is True  # (the file's names are unchanged)
    assert not checks["model variables"].ok


def test_a_layer_doing_more_with_what_it_reads_is_never_replayed(tmp_path, monkeypatch):
    """IntegerLookup (tf_idf) assigns its IDF weights to a variable of its own and
    derives state from them: a replay would skip that, so the traversal always runs."""
    import io
    import zipfile

    import keras

    inputs = keras.Input((3,), dtype="int64")
    x = keras.layers.IntegerLookup(vocabulary=[0, 1, 2], output_mode="tf_idf",
                                   idf_weights=[1.0, 1.5, 2.0])(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.compile("adam", "mse")
    TWINS.clear()
    replays = _counting_replays(monkeypatch)
    path = tmp_path / "m.keras"
    assert ks.save_model(model, path).ok
    assert ks.save_model(model, path).ok
    assert True not in replays
    # The IDF weights changed in the file: the kept twin's check must see it.
    with zipfile.ZipFile(path) as zf:
        start, size = member_span(path, zf, "model.weights.h5")
    with h5py.File(io.BytesIO(path.read_bytes()[start:start + size]), "r") as f:
        names = []
        f.visit(names.append)
        idf = next(n for n in names if "lookup" in n and isinstance(f[n], h5py.Dataset))
        offset = f[idf].id.get_offset()
    _flip(path, start + offset + 3)
    assert not all(c.ok for c in _checks(model, path).values())
    assert True not in replays


def test_a_file_with_other_names_is_traversed_again(trained, tmp_path, monkeypatch):
    TWINS.clear()
    replays = _counting_replays(monkeypatch)
    path = tmp_path / "w.weights.h5"
    ks.save_weights(trained, path, verify=False)
    assert all(c.ok for c in _checks(trained, path).values())
    with h5py.File(path, "r+") as f:  # one more name in the file: the plan no longer holds
        f.create_group("layers/extra")
    checks = _checks(trained, path)
    assert replays == [False, False]
    assert all(c.ok for c in checks.values()), checks  # Keras' traversal ignores it


def test_twins_of_custom_classes_are_not_kept(tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="kerasave_test_twins")
    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.w

    @keras.saving.register_keras_serializable(package="kerasave_test_twins")
    def double(x):
        return x * 2.0

    model = keras.Sequential([keras.Input((4,)), Scale()])
    model.compile(optimizer="adam", loss="mse")
    TWINS.clear()
    ks.save_model(model, tmp_path / "m.keras")
    assert not TWINS._kept
    # A Keras layer naming a registered function of the user's is not kept either:
    # the function could be registered again, with another body, under the same name.
    named = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation=double)])
    named.compile(optimizer="adam", loss="mse")
    ks.save_model(named, tmp_path / "n.keras")
    assert not TWINS._kept
    ks.save_model(ks.reference_model(), tmp_path / "r.keras")
    assert len(TWINS._kept) == 1


@pytest.mark.parametrize("name", ["m.keras", "m.h5"])
def test_a_layer_deriving_state_from_its_variables_saves_and_loads(tmp_path, name):
    import keras

    data = np.random.default_rng(0).random((64, 4)).astype("float32")
    norm = keras.layers.Normalization()
    norm.adapt(data)  # builds it from variables it reads: it cannot be built uninitialized
    model = keras.Sequential([keras.Input((4,)), norm, keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(data, np.zeros((64, 3)), verbose=0)
    path = tmp_path / name
    ks.save_model(model, path, verify=False)
    loaded = ks.load_model(path)
    assert np.array_equal(loaded.predict(data, verbose=0), model.predict(data, verbose=0))
    checks = _registry.detect(path).check(model, path, own=True)
    # Judged by a real load where the twin cannot show it: only the batch size the
    # layer was adapted with differs (its build config), never the values.
    assert {c.name for c in checks if not c.ok} <= {"config"}
    assert all(c.ok for c in checks if c.name in ("model variables", "predictions"))


def test_whole_model_check_sees_a_changed_model(trained, batch, tmp_path):
    path = tmp_path / "m.keras"
    ks.save_model(trained, path)
    trained.layers[0].kernel.assign(trained.layers[0].kernel + 1.0)
    report = ks.verify(trained, path)
    failed = {c.name for c in report.checks if not c.ok}
    assert {"model variables", "predictions"} <= failed


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "read"])
def test_h5_weights_check_sees_a_changed_byte(trained, tmp_path, mapped):
    path = tmp_path / "w.weights.h5"
    ks.save_weights(trained, path, verify=False)
    assert all(c.ok for c in _checks(trained, path, mapped).values())
    _flip(path, _kernel_offset(path) + 3)
    assert not _checks(trained, path, mapped)["model variables"].ok


def test_checkpoint_locations_agree_with_tensorflow(trained, tmp_path):
    prefix = tmp_path / "ckpt" / "p"
    ks.save_weights(trained, prefix, verify=False)
    reader = tf.train.load_checkpoint(str(prefix))
    where = tensor_locations(prefix)
    shapes = reader.get_variable_to_shape_map()
    plain = {k for k in shapes if k != "_CHECKPOINTABLE_OBJECT_GRAPH"}
    assert plain <= set(where)
    read = tensor_reader(prefix, reader, mapped=True)
    for key in plain:
        expected = np.asarray(reader.get_tensor(key))
        mapped = read(key)
        assert mapped.dtype == expected.dtype and mapped.shape == expected.shape
        assert mapped.tobytes() == expected.tobytes()
        assert not mapped.flags.writeable  # a view of the file, not a copy
    # Outside a save's own temporaries nothing is mapped (SIGBUS if truncated).
    assert all(tensor_reader(prefix, reader)(k).flags.writeable for k in plain)


def test_checkpoint_loads_read_each_tensor_once_when_the_manifest_checked_it(trained,
                                                                             tmp_path):
    prefix = tmp_path / "ckpt" / "p"
    ks.save_weights(trained, prefix)
    reader = tf.train.load_checkpoint(str(prefix))
    plain = [k for k in reader.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    fast = tensor_loader(prefix, reader, checksummed=True)
    for key in plain:
        expected = np.asarray(reader.get_tensor(key))
        got = fast(key)
        assert type(got) is not np.ndarray  # read by kerasave, for TensorFlow to adopt
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes()
    # Without a checked manifest, TensorFlow's reader (and its per-tensor CRC32C).
    assert tensor_loader(prefix, reader, checksummed=False) == reader.get_tensor


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "read"])
def test_checkpoint_check_sees_a_changed_byte(trained, tmp_path, mapped):
    prefix = tmp_path / "ckpt" / "p"
    ks.save_weights(trained, prefix, verify=False)
    assert all(c.ok for c in _checks(trained, prefix, mapped).values())
    where = tensor_locations(prefix)
    key = max(where, key=lambda k: np.prod(where[k].shape))  # a kernel or its slot
    _flip(where[key].shard, where[key].offset + 2)
    checks = _checks(trained, prefix, mapped)
    assert not all(c.ok for c in checks.values())


def test_a_damaged_checkpoint_index_falls_back_to_tensorflow(trained, tmp_path, monkeypatch):
    prefix = tmp_path / "ckpt" / "p"
    ks.save_weights(trained, prefix, verify=False)

    def broken(_):
        raise ValueError("not a table")

    monkeypatch.setattr("kerasave.formats._tf.tfindex.tensor_locations", broken)
    assert all(c.ok for c in _checks(trained, prefix).values())


def test_the_flush_thread_checksums_what_seal_would(trained, tmp_path):
    path = tmp_path / "m.keras"
    ks.save_model(trained, path)
    handler = _registry.detect(path)
    manifest = _manifest.read(handler, path)
    assert manifest["files"] == _manifest.checksums(handler, path)


def test_saves_work_without_sync_file_range(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(_atomic, "_SYNC_FILE_RANGE", None)
    assert ks.save_weights(trained, tmp_path / "ckpt" / "p").ok
    assert ks.save_model(trained, tmp_path / "m.keras").ok


def test_a_failed_flush_surfaces_and_commits_nothing(trained, tmp_path, monkeypatch):
    def full(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_atomic, "_fsync", full)
    with pytest.raises(OSError, match="No space"):
        ks.save_model(trained, tmp_path / "m.keras")
    assert list(tmp_path.iterdir()) == []


def test_patches_of_two_threads_leave_keras_as_it_was():
    import threading

    from keras.src.backend.common.variables import Variable
    from keras.src.backend.tensorflow.core import Variable as TFVariable

    assign, initialize = Variable.assign, TFVariable._initialize_with_initializer
    inside, release = threading.Event(), threading.Event()

    def first():
        with patches.recorded(None), patches.uninitialized():
            inside.set()
            release.wait(10)

    def second():
        inside.wait(10)
        with patches.recorded(None), patches.uninitialized():
            pass  # waits for the first thread's patches to be removed

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(10)
    release.set()
    for t in threads:
        t.join(10)
    assert Variable.assign is assign
    assert TFVariable._initialize_with_initializer is initialize


def _mapped_files():
    with open("/proc/self/maps") as f:
        return [line.split()[-1] for line in f if len(line.split()) >= 6]


def test_a_saves_own_export_is_served_from_its_mapped_pages(trained, batch, tmp_path,
                                                           monkeypatch):
    from kerasave.formats import savedmodel

    path = tmp_path / "serving"
    ks.save_model(trained, path, verify=False)
    probe = batch[0][:4]
    loaded = tf.saved_model.load(str(path))  # (held: its function needs its variables)
    native = loaded.serve(probe).numpy()
    served, variables = savedmodel._restored(path)  # the fast path, for a Keras export
    assert np.array_equal(served.serve(probe).numpy(), native)
    savedmodel._release(variables)
    data = str(path / "variables")
    assert not any(f.startswith(data) for f in _mapped_files())  # the pages are given back
    # Every copy of the last bias changed on disk: the tensors fail their CRC32C, and
    # TensorFlow's load then reports it.
    prefix = path / "variables" / "variables"
    for where in tensor_locations(prefix).values():
        if where.shape == (10,):
            _flip(where.shard, where.offset + 1)
    with pytest.raises(Unsupported, match="CRC32C"):  # (TensorFlow's load judges it)
        savedmodel._restored(path)
    checks = _checks(trained, path)
    assert not all(c.ok for c in checks.values())
    assert not any(f.startswith(data) for f in _mapped_files())
    # Past the CRC32C, the served outputs come from the file's pages, so they change.
    monkeypatch.setattr(savedmodel, "_intact", lambda array, found: True)
    served, variables = savedmodel._restored(path)
    assert not np.array_equal(served.serve(probe).numpy(), native)
    savedmodel._release(variables)


def test_damage_the_probe_batch_never_touches_fails_a_savedmodel_check(trained, tmp_path):
    """Keras' export writes every variable twice; serve() reads one copy."""
    path = tmp_path / "serving"
    ks.save_model(trained, path, verify=False)
    prefix = path / "variables" / "variables"
    unused = [w for k, w in tensor_locations(prefix).items() if k.startswith("_all_variables/")]
    assert unused
    _flip(unused[0].shard, unused[0].offset + 1)
    checks = _checks(trained, path)
    assert not all(c.ok for c in checks.values()), checks


def test_repeated_exports_trace_the_model_once_and_keep_nothing_alive(tmp_path, caplog):
    import gc
    import logging
    import weakref

    import keras

    from kerasave.formats import savedmodel

    model = ks.reference_model(seed=9)
    with caplog.at_level(logging.WARNING):
        for i in range(6):  # TensorFlow warns from the fifth trace of one function
            assert ks.save_model(model, tmp_path / f"serving{i}").ok
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
    assert savedmodel._graph_call(model).experimental_get_tracing_count() == 1
    # A change made in Python after the first trace: the export has it, the cached
    # trace does not. The save still verifies (against a fresh trace), and the
    # served outputs are the changed model's.
    first = savedmodel._graph_call(model)
    model.layers[-1].activation = keras.activations.linear
    assert ks.save_model(model, tmp_path / "changed").ok
    assert savedmodel._graph_call(model) is not first  # the stale trace failed: traced again
    del first
    probe = np.ones((2, 32), np.float32)
    served = tf.saved_model.load(str(tmp_path / "changed"))
    assert np.array_equal(served.serve(probe).numpy(),
                          savedmodel._graph_call(model)(probe).numpy())
    assert np.any(served.serve(probe).numpy() < 0)  # linear, not softmax
    gone = weakref.ref(model)
    del model, served
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("name", ["m.keras", "m.h5", "w.weights.h5", "ckpt/p", "serving"])
def test_a_save_maps_its_own_temporary_and_verify_maps_no_users_file(trained, tmp_path,
                                                                      monkeypatch, name):
    """Mapped or read is the caller's argument (``check(..., own=True)``): a save's
    check maps the temporary it just wrote; ``verify`` of the same path maps nothing
    (another process could truncate a user's file under the mapping: SIGBUS)."""
    import mmap

    maps = []
    real = mmap.mmap

    def counting(*args, **kwargs):
        maps.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(mmap, "mmap", counting)
    path = tmp_path / name
    save = ks.save_weights if name in ("w.weights.h5", "ckpt/p") else ks.save_model
    assert save(trained, path).ok
    assert maps  # the save's own check read its temporary's pages
    maps.clear()
    assert ks.verify(trained, path).ok
    assert maps == []
