"""Keras' sharded HDF5 weights (``m.weights.json`` + ``m_00000.weights.h5``...): written
and read by kerasave, verified bit for bit, every shard in the manifest, all or
nothing, hostile maps refused; with plain Keras' ``save_weights``/``load_weights``
beside it in each test as the oracle (files either writes load in the other)."""

import json
import os
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kerasave as ks
from kerasave.cli import main as cli

from .conftest import all_vars, assert_bit_exact, bfloat16_model, perturb, values

GB = 1024**3
SMALL = 9000 / GB  # the reference model's variables then need several shards


@pytest.fixture(scope="module")
def trained():
    model = ks.reference_model(seed=0)
    data, labels = ks.reference_data(64, seed=0)
    model.fit(data, labels, epochs=1, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def target():
    """A model to load into (each test checks it is unchanged where a load is refused)."""
    return _fresh()


def _shards(directory: Path, stem="m"):
    return sorted(p.name for p in directory.glob(f"{stem}_*.weights.h5"))


def _dataset_names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


def _fresh(seed=1):
    return ks.reference_model(seed=seed)


def test_kerasave_files_load_in_plain_keras_as_keras_own(trained, tmp_path):
    ours, theirs = tmp_path / "ks" / "m.weights.json", tmp_path / "keras" / "m.weights.json"
    theirs.parent.mkdir()
    report = ks.save_weights(trained, ours, max_shard_size=SMALL)
    trained.save_weights(str(theirs), max_shard_size=SMALL)  # the oracle: Keras' own
    assert report.ok and report.format == "h5-sharded" and report.path == str(ours)
    assert [c.name for c in report.checks] == ["load", "model variables", "optimizer variables"]
    # Keras' own names and layout: the same shards, each group in the same one.
    assert _shards(ours.parent) == _shards(theirs.parent) and len(_shards(ours.parent)) >= 3
    ours_map, keras_map = (json.loads(p.read_text())["weight_map"] for p in (ours, theirs))
    assert ours_map == keras_map
    for shard in _shards(ours.parent):
        with h5py.File(ours.parent / shard) as a, h5py.File(theirs.parent / shard) as b:
            names = _dataset_names(a)
            assert names == _dataset_names(b) and names
            assert all(np.array_equal(a[n][()], b[n][()]) for n in names)
    # Every shard in the manifest with its size and CRC32C.
    manifest = json.loads((ours.parent / "m.weights.json.kerasave.json").read_text())
    assert manifest["format"] == "h5-sharded"
    assert set(manifest["files"]) == {"."} | {s[1:] for s in _shards(ours.parent)}
    for name, entry in manifest["files"].items():
        member = ours if name == "." else ours.parent / ("m" + name)
        assert entry["bytes"] == member.stat().st_size and entry["crc32c"]
    # Plain Keras reads kerasave's files exactly as its own.
    for path in (ours, theirs):
        fresh = _fresh()
        fresh.load_weights(str(path))
        assert_bit_exact(values(all_vars(trained)), all_vars(fresh))
    assert not [p for p in tmp_path.rglob("*") if ".kerasave-" in p.name]


@pytest.mark.parametrize("kind", ["reference", "bfloat16", "no optimizer"])
def test_keras_files_load_in_kerasave_as_in_keras(trained, tmp_path, kind):
    model = {"reference": lambda: trained, "bfloat16": bfloat16_model,
             "no optimizer": lambda: keras.Sequential([keras.Input((3,)),
                                                       keras.layers.Dense(4)])}[kind]()
    path = tmp_path / "m.weights.json"
    model.save_weights(str(path), max_shard_size=SMALL)  # written by plain Keras
    assert ks.verify(model, path).ok
    by_keras, by_us = keras.models.clone_model(model), keras.models.clone_model(model)
    for twin in (by_keras, by_us):
        if getattr(model, "optimizer", None) is not None:
            twin.compile(optimizer=type(model.optimizer).from_config(
                model.optimizer.get_config()), loss="mse")
            twin.optimizer.build(twin.trainable_variables)
        perturb(twin)
    by_keras.load_weights(str(path))  # the oracle
    report = ks.load_weights(by_us, path)
    assert report.format == "h5-sharded"
    assert_bit_exact(values(all_vars(by_keras)), all_vars(by_us))
    assert_bit_exact(values(all_vars(model)), all_vars(by_us))
    found = ks.inspect(path)
    assert found.format == "h5-sharded" and found.has_optimizer == (kind != "no optimizer")
    assert set(found.files) == {str(path)} | {str(tmp_path / s) for s in _shards(tmp_path)}


def test_round_trip_into_an_unbuilt_model_and_verify(trained, tmp_path):
    path = tmp_path / "m.weights.json"
    ks.save_weights(trained, path, max_shard_size=SMALL)
    fresh = keras.Sequential([keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    fresh.compile(optimizer=keras.optimizers.Adam(0.001), loss="categorical_crossentropy")
    with pytest.raises(ValueError):  # plain Keras: "not built yet"
        keras.models.clone_model(fresh).load_weights(str(path))
    report = ks.load_weights(fresh, path)
    assert [c.name for c in report.checks][:2] == ["integrity", "build"]
    assert_bit_exact(values(all_vars(trained)), all_vars(fresh))
    assert ks.verify(fresh, path).ok
    other = ks.verify(_fresh(seed=42), path)
    assert not other.ok and any("differ" in c.detail for c in other.failed)


def _damage(path: Path, at: float = 0.5) -> None:
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * at)] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_loads_are_all_or_nothing(trained, tmp_path, monkeypatch):
    path = tmp_path / "m.weights.json"
    ks.save_weights(trained, path, max_shard_size=SMALL)
    target = _fresh()
    before = values(all_vars(target))
    wide = keras.Sequential([keras.Input((32,)), keras.layers.Dense(65),
                             keras.layers.Dense(10)])
    with pytest.raises(ks.ArchitectureMismatchError, match="only in the"):
        ks.load_weights(wide, path)
    last = tmp_path / _shards(tmp_path)[-1]
    _damage(last)
    with pytest.raises(ks.CorruptArtifactError, match=last.name):
        ks.load_weights(target, path)
    assert_bit_exact(before, all_vars(target))
    last.unlink()
    with pytest.raises(ks.CorruptArtifactError):
        ks.load_weights(target, path)
    (tmp_path / "m.weights.json.kerasave.json").unlink()  # no manifest: the map's own checks
    with pytest.raises(ks.CorruptArtifactError, match="missing"):
        ks.load_weights(target, path)
    assert_bit_exact(before, all_vars(target))
    # Keras' reader failing half way: what it assigned is put back.
    ks.save_weights(trained, path, max_shard_size=SMALL)
    native = keras.Model.load_weights

    def half_way(self, filepath, *args, **kwargs):
        native(self, filepath, *args, **kwargs)
        raise OSError("the disk went away")

    monkeypatch.setattr(keras.Model, "load_weights", half_way)
    with pytest.raises(ks.CorruptArtifactError, match="the disk went away"):
        ks.load_weights(target, path)
    assert_bit_exact(before, all_vars(target))


def test_a_save_replaces_every_shard(trained, tmp_path):
    path = tmp_path / "m.weights.json"
    trained.save_weights(str(path), max_shard_size=SMALL)  # plain Keras' many shards
    many = _shards(tmp_path)
    ks.save_weights(trained, path)  # one shard of at most 5 GB
    assert _shards(tmp_path) == ["m_00000.weights.h5"] and len(many) > 1
    model = _fresh()
    ks.load_weights(model, path)
    assert_bit_exact(values(all_vars(trained)), all_vars(model))
    ks.save_weights(_fresh(seed=3), path, max_shard_size=SMALL)
    assert _shards(tmp_path) == many
    assert ks.verify(_fresh(seed=3), path).ok and not ks.verify(trained, path).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m.weights.json", "m.weights.json.kerasave.json", *many])


def test_format_choice_and_arguments(trained, tmp_path):
    with pytest.raises(ks.UnknownFormatError, match="max_shard_size"):
        ks.save_weights(trained, tmp_path / "w.weights.h5", max_shard_size=1)
    with pytest.raises(ks.UnknownFormatError, match="max_shard_size"):
        ks.save_weights(trained, tmp_path / "ckpt", max_shard_size=1)
    with pytest.raises(ks.UnknownFormatError, match=r"\.weights\.json"):
        ks.save_weights(trained, tmp_path / "w.h5", format="h5-sharded")
    with pytest.raises(ks.UnknownFormatError, match=r"a\.b_00000"):
        ks.save_weights(trained, tmp_path / "a.weights.b.weights.json")
    for bad, error in ((0, ValueError), (-1, ValueError), ("1", TypeError),
                       (float("nan"), ValueError)):
        with pytest.raises(error, match="max_shard_size"):
            ks.save_weights(trained, tmp_path / "w.weights.json", max_shard_size=bad)
    with pytest.raises(ValueError, match="exceeds"):  # plain Keras
        trained.save_weights(str(tmp_path / "k.weights.json"), max_shard_size=1000 / GB)
    with pytest.raises(ks.NotSerializableError, match=r"dense(_\d+)?/kernel.*max_shard_size"):
        ks.save_weights(trained, tmp_path / "w.weights.json", max_shard_size=1000 / GB)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("w", ".w"))]
    # .weights.json is sharded weights by name, and by content whatever the name.
    path = tmp_path / "w.weights.json"
    assert ks.save_weights(trained, path).format == "h5-sharded"
    assert ks.save_config(trained, tmp_path / "c.json").format == "json"
    with pytest.raises(ks.UnknownFormatError, match="load_weights"):
        ks.load_config(path)
    os.rename(path, tmp_path / "renamed.json")
    os.rename(tmp_path / "w.weights.json.kerasave.json",
              tmp_path / "renamed.json.kerasave.json")
    with pytest.raises(ks.CorruptArtifactError):  # the manifest names other shards
        ks.load_weights(_fresh(), tmp_path / "renamed.json")
    (tmp_path / "renamed.json.kerasave.json").unlink()
    model = _fresh()
    assert ks.load_weights(model, tmp_path / "renamed.json").format == "h5-sharded"
    assert_bit_exact(values(all_vars(trained)), all_vars(model))


def _hostile(tmp_path: Path, trained, edit) -> Path:
    """A Keras-written sharded artifact, its map then edited by ``edit(map, directory)``."""
    path = tmp_path / "m.weights.json"
    trained.save_weights(str(path), max_shard_size=SMALL)
    data = json.loads(path.read_text())
    edit(data, tmp_path)
    path.write_text(json.dumps(data))
    return path


def _first(data):
    return next(iter(data["weight_map"]))


def _huge(data, directory):
    """A shard whose dataset declares 2**40 floats in a few KB."""
    with h5py.File(directory / "huge.weights.h5", "w") as f:
        f.create_dataset("layers/dense/vars/0", shape=(2**20, 2**20), dtype="float32")
        f.create_dataset("layers/dense/vars/1", shape=(64,), dtype="float32")
    data["weight_map"]["/layers/dense/vars"] = ["huge.weights.h5"]
    for shard in _shards(directory):
        with h5py.File(directory / shard, "a") as f:
            if "layers/dense" in f:
                del f["layers/dense"]


def _outside(data, directory):
    outside = directory.parent / f"{directory.name}-outside.weights.h5"
    os.replace(directory / "m_00001.weights.h5", outside)
    os.symlink(outside, directory / "m_00001.weights.h5")


HOSTILE = {  # what the map says: the error kerasave raises
    "parent": (lambda d, _: d["weight_map"].__setitem__(_first(d), ["../m_00000.weights.h5"]),
               ks.UnsafeArtifactError),
    "absolute": (lambda d, _: d["weight_map"].__setitem__(_first(d), ["/etc/passwd"]),
                 ks.UnsafeArtifactError),
    "subfolder": (lambda d, _: d["weight_map"].__setitem__(_first(d), ["x/m_00000.weights.h5"]),
                  ks.UnsafeArtifactError),
    "link out": (_outside, ks.UnsafeArtifactError),
    "missing": (lambda d, _: d["weight_map"].__setitem__(_first(d), ["gone.weights.h5"]),
                ks.CorruptArtifactError),
    "itself": (lambda d, _: d["weight_map"].__setitem__(_first(d), ["m.weights.json"]),
               ks.CorruptArtifactError),
    "not a map": (lambda d, _: d.__setitem__("weight_map", ["m_00000.weights.h5"]),
                  ks.CorruptArtifactError),
    "wrong shard": (lambda d, _: d["weight_map"].__setitem__(_first(d), ["m_00002.weights.h5"]),
                    ks.CorruptArtifactError),
    "group nowhere": (lambda d, _: d["weight_map"].__setitem__("/layers/ghost/vars",
                                                               ["m_00000.weights.h5"]),
                      ks.CorruptArtifactError),
    "huge shape": (_huge, ks.CorruptArtifactError),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_maps_are_refused_before_any_byte(trained, tmp_path, case):
    edit, error = HOSTILE[case]
    directory = tmp_path / "a"
    directory.mkdir()
    path = _hostile(directory, trained, edit)
    target = _fresh()
    before = values(all_vars(target))
    for reader in (lambda: ks.load_weights(target, path), lambda: ks.inspect(path)):
        with pytest.raises(error):
            reader()
    if error is ks.UnsafeArtifactError:
        with pytest.raises(error):
            ks.verify(trained, path)
    else:  # (verify reports damage as a failed check)
        report = ks.verify(trained, path)
        assert not report.ok and "Corrupt" not in str(report)
    assert_bit_exact(before, all_vars(target))


_names = st.one_of(st.sampled_from(["m_00000.weights.h5", "m_00001.weights.h5", "..", "",
                                    "/etc/passwd", "m.weights.json", "a/b", "\x00"]),
                   st.text(max_size=12))
_maps = st.one_of(
    st.dictionaries(st.text(max_size=20) | st.sampled_from(["/layers/dense/vars", "/vars",
                                                            "/optimizer/vars"]),
                    _names | st.lists(_names, max_size=3) | st.integers() | st.none(),
                    max_size=4),
    st.lists(st.integers(), max_size=2), st.none(), st.text(max_size=8))


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(weight_map=_maps, extra=st.dictionaries(st.sampled_from(["kerasave", "metadata"]),
                                               st.none() | st.integers() | st.dictionaries(
                                                   st.sampled_from(["stem", "build_config"]),
                                                   st.text(max_size=5) | st.none(),
                                                   max_size=2), max_size=2))
def test_random_maps_only_raise_kerasave_errors(trained, target, tmp_path_factory, weight_map,
                                               extra):
    directory = tmp_path_factory.mktemp("fuzz")
    for index in range(2):
        with h5py.File(directory / f"m_{index:05d}.weights.h5", "w") as f:
            f.create_dataset(f"layers/dense{'_1' * index}/vars/0", data=np.zeros(3, "f4"))
    path = directory / "m.weights.json"
    path.write_text(json.dumps({"weight_map": weight_map, **extra}))
    before = values(all_vars(target))
    for reader in (lambda: ks.load_weights(target, path), lambda: ks.verify(trained, path),
                   lambda: ks.inspect(path)):
        try:
            reader()
        except ks.KerasaveError:
            pass
    assert_bit_exact(before, all_vars(target))


def test_command_line(trained, tmp_path, capsys):
    ks.save_weights(trained, tmp_path / "m.weights.h5")
    ks.save_config(trained, tmp_path / "model.json")
    assert cli(["convert", str(tmp_path / "m.weights.h5"), str(tmp_path / "s.weights.json"),
                "--config", str(tmp_path / "model.json"), "--max-shard-size",
                str(SMALL)]) == 0
    assert len(_shards(tmp_path, "s")) >= 2
    assert cli(["inspect", str(tmp_path / "s.weights.json")]) == 0
    out = capsys.readouterr().out
    assert "h5-sharded" in out and "s_00001.weights.h5" in out
    assert cli(["verify", str(tmp_path / "s.weights.json"), "--config",
                str(tmp_path / "model.json")]) == 0
    assert cli(["diff", str(tmp_path / "m.weights.h5"), str(tmp_path / "s.weights.json")]) == 0
    assert "bit-exact" in capsys.readouterr().out
    _damage(tmp_path / "s_00001.weights.h5")
    assert cli(["verify", str(tmp_path / "s.weights.json")]) == 1
    assert "s_00001.weights.h5" in capsys.readouterr().err


def test_at_a_url(trained):
    url = "memory://kerasave-test/sharded/m.weights.json"
    report = ks.save_weights(trained, url, max_shard_size=SMALL)
    assert report.ok and report.path == url
    model = _fresh()
    ks.load_weights(model, url)
    assert_bit_exact(values(all_vars(trained)), all_vars(model))
    assert ks.verify(trained, url).ok
    assert ks.inspect(url).format == "h5-sharded"


def test_a_keras_without_sharded_weights_says_so(trained, tmp_path, monkeypatch):
    """Keras before 3.10 has no max_shard_size (kerasave's oldest, 3.12, has it):
    kerasave then refuses the format with a typed error, writing nothing."""
    path = tmp_path / "m.weights.json"
    ks.save_weights(trained, path, max_shard_size=SMALL)
    native = keras.Model.save_weights

    def save_weights(self, filepath, overwrite=True):  # (Keras 3.9's signature)
        return native(self, filepath, overwrite=overwrite)

    monkeypatch.setattr(keras.Model, "save_weights", save_weights)
    with pytest.raises(ks.UnknownFormatError, match="3.10"):
        ks.save_weights(trained, tmp_path / "n.weights.json")
    with pytest.raises(ks.UnknownFormatError, match="3.10"):
        ks.load_weights(_fresh(), path)
    assert not list(tmp_path.glob("n*")) and not list(tmp_path.glob(".n*"))
