"""``load_model(path, mmap=True)``: variables whose memory is the file's pages.

Behaviour, not time (``bench/perf.py`` times it): the variables lie inside the
process' mapping of the file, the values and predictions are the copying
load's, a training step works and leaves the file as it was, and a damaged
file is refused before anything is mapped into a model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasave as ks
from kerasave._fastpaths.dlpack import variable_view
from tests.conftest import all_vars, assert_bit_exact, values


def _model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((48,))
    x = keras.layers.Dense(64, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    rng = np.random.default_rng(seed)
    model.train_on_batch(rng.random((16, 48), dtype=np.float32),
                         np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)])
    return model


def _mappings(path: Path) -> list[tuple[int, int]]:
    """The address ranges of this process' mappings of ``path``."""
    found = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == str(path.resolve()):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                found.append((start, end))
    return found


def _mapped(variable, ranges: list[tuple[int, int]]) -> bool:
    view = variable_view(variable)
    assert view is not None
    return any(start <= view.ctypes.data < end for start, end in ranges)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(params=["m.keras", "m.h5"])
def saved(request, tmp_path):
    model = _model()
    path = tmp_path / request.param
    ks.save_model(model, path)
    return model, path


def test_variables_are_the_files_pages_and_equal_a_copying_load(saved):
    model, path = saved
    copied = ks.load_model(path)
    mapped = ks.load_model(path, mmap=True)
    ranges = _mappings(path)
    assert ranges, "the file is not mapped"
    large = [v for v in all_vars(mapped) if np.prod(v.shape) * 4 >= 64]
    assert large and all(_mapped(v, ranges) for v in large)
    assert not any(_mapped(v, ranges) for v in all_vars(copied))
    assert_bit_exact(values(all_vars(model)), all_vars(mapped))
    assert_bit_exact(values(all_vars(copied)), all_vars(mapped))
    probe = np.random.default_rng(5).random((7, 48), dtype=np.float32)
    np.testing.assert_array_equal(mapped.predict(probe, verbose=0),
                                  copied.predict(probe, verbose=0))


def test_training_a_mapped_model_continues_exactly_and_leaves_the_file(saved):
    _, path = saved
    before = _digest(path)
    rng = np.random.default_rng(6)
    batch = (rng.random((16, 48), dtype=np.float32),
             np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)])
    copied, mapped = ks.load_model(path), ks.load_model(path, mmap=True)
    for _ in range(2):
        copied.train_on_batch(*batch)
        mapped.train_on_batch(*batch)
    assert_bit_exact(values(all_vars(copied)), all_vars(mapped))
    assert _digest(path) == before  # copy-on-write: the file never changes
    again = ks.load_model(path, mmap=True)
    assert_bit_exact(values(all_vars(ks.load_model(path))), all_vars(again))


def test_the_mapping_outlives_every_reference_but_the_models(saved):
    _, path = saved
    mapped = ks.load_model(path, mmap=True)
    expected = values(all_vars(ks.load_model(path)))
    import gc

    gc.collect()
    assert _mappings(path)
    assert_bit_exact(expected, all_vars(mapped))


def test_a_damaged_file_is_refused_before_it_is_mapped(saved, tmp_path):
    _, path = saved
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ks.CorruptArtifactError):
        ks.load_model(path, mmap=True)
    assert not _mappings(path)


def test_a_file_keras_wrote_loads_mapped_where_aligned_and_copied_elsewhere(tmp_path):
    model = _model(1)
    path = tmp_path / "native.keras"
    model.save(path)  # (Keras' own writer does not align its datasets)
    mapped = ks.load_model(path, mmap=True)
    assert_bit_exact(values(all_vars(model)), all_vars(mapped))


def test_mmap_of_a_savedmodel_is_refused(tmp_path):
    path = tmp_path / "serving"
    ks.save_model(_model(2), path)
    with pytest.raises(ks.UnknownFormatError, match="mmap"):
        ks.load_model(path, mmap=True)


def test_kerasaves_writers_align_every_dataset(saved):
    import h5py

    from kerasave._fastpaths.h5read import WEIGHTS, member_span

    _, path = saved
    begin = 0
    if path.suffix == ".keras":
        import zipfile

        with zipfile.ZipFile(path) as zf:
            begin, _ = member_span(path, zf, WEIGHTS)
    offsets = []
    with open(path, "rb") as raw:
        raw.seek(begin)
        with h5py.File(raw, "r") as f:
            f.visititems(lambda name, obj: offsets.append((name, obj.id.get_offset(), obj.nbytes))
                         if isinstance(obj, h5py.Dataset) and obj.nbytes >= 64 else None)
    assert offsets
    assert all((begin + off) % 64 == 0 for _, off, _ in offsets), offsets

