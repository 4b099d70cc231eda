"""The format handlers' typed contract: each kind's ``load``, what differs between
formats as properties, and ``arrays`` (every stored array, by the names ``inspect``
shows). And the command line, which reads through them: one CRC32C pass over each
file of an artifact per command."""

from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasave as ks
from kerasave import _registry, cli
from kerasave.formats import TABLE, formats
from kerasave.formats._base import ConfigFormat, Handler, ModelFormat, WeightsFormat
from kerasave.store import manifest as _manifest

from .conftest import FIXTURES, bfloat16_model

SAVES = {  # format: (save call, relative path, handler name): the table's classic formats
    f.label: (getattr(ks, f.call), f.named("model"), f.name) for f in formats(lambda f: f.classic)}


@pytest.fixture(scope="module")
def trained_model():
    model = ks.reference_model(seed=0)
    data, labels = ks.reference_data(64, seed=0)
    model.fit(data, labels, epochs=1, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def saved(trained_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("handlers")
    paths = {}
    for fmt, (save, rel, _) in SAVES.items():
        save(trained_model, out / rel)
        paths[fmt] = out / rel
    return paths


def _fingerprint(value):
    value = np.ascontiguousarray(value)
    return value.dtype.str, value.shape, value.tobytes()


def _live(variables):
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]


def _assert_arrays_are_the_models(handler, path, model):
    stored = list(handler.arrays(path))
    listed = ks.inspect(path).variables
    assert [name for name, _ in stored] == [v.name for v in listed]
    for (name, value), variable in zip(stored, listed):
        assert isinstance(value, np.ndarray), name
        assert tuple(value.shape) == variable.shape, name
    if handler.kind == "config":
        assert stored == []
        return
    expected = _live(model.variables if handler.name == "savedmodel" else model.weights)
    if handler.can_hold_optimizer:
        expected += _live(model.optimizer.variables)
    got = Counter(_fingerprint(v) for _, v in stored)
    if handler.name == "savedmodel":  # (an export lists its variables twice)
        assert set(got) == {_fingerprint(v) for v in expected}
    else:
        assert got == Counter(_fingerprint(v) for v in expected)


@pytest.mark.parametrize("fmt", list(SAVES))
def test_arrays_are_every_stored_array_by_inspects_names(saved, trained_model, fmt):
    path = saved[fmt]
    handler = _registry.detect(path)
    assert handler.name == SAVES[fmt][2]
    _assert_arrays_are_the_models(handler, path, trained_model)


@pytest.mark.parametrize("fmt", ["checkpoint", "h5 weights", "keras"])
def test_arrays_keep_bfloat16(tmp_path, fmt):
    model = bfloat16_model()
    save, rel, _ = SAVES[fmt]
    save(model, tmp_path / rel)
    handler = _registry.detect(tmp_path / rel)
    stored = dict(handler.arrays(tmp_path / rel))
    assert {str(v.dtype) for k, v in stored.items() if not k.startswith(
        ("optimizer", "adam"))} == {"bfloat16"}
    _assert_arrays_are_the_models(handler, tmp_path / rel, model)


def test_the_format_table_has_every_registered_format_and_nothing_else():
    """``kerasave.formats.TABLE``, which the round trip, the demo, the tests and the
    benchmarks read, holds one row per registered handler (a new format cannot be left
    out of them): the handler that ``format=`` names and that its canonical file's
    suffix picks, with the kind, save call, exactness and export flag it has."""
    assert len({(f.kind, f.name) for f in TABLE}) == len({f.label for f in TABLE}) == len(TABLE)
    assert {(f.kind, f.name) for f in TABLE} == {(h.kind, h.name) for h in _registry._HANDLERS}
    assert {kind: set(names) for kind, names in _registry.FORMATS.items()} == {
        kind: {f.name for f in TABLE if f.kind == kind} for kind in _registry.FORMATS}
    loads = {"weights": {"weights"}, "config": {"config"},
             "model": {"model", "serving", "export"}}
    for f in TABLE:
        handler = f.handler  # what format=f.name names (UnknownFormatError for none)
        assert (handler.kind, handler.name) == (f.kind, f.name)
        assert _registry.for_save(f.kind, Path(f.file), None) is handler, f.label
        assert _registry.for_save(f.kind, Path(f.named("x")), f.name) is handler, f.label
        assert f.suffix in handler.suffixes if handler.suffixes else f.suffix == "", f.label
        assert callable(getattr(ks, f.call)) and callable(getattr(ks, f.load))
        assert f.loads in loads[f.kind], f.label
        assert f.export == bool(getattr(handler, "runs_with", ())), f.label
        assert f.exact == (not f.export) and not (f.classic and f.export), f.label
    classic = [f.label for f in TABLE if f.classic]
    assert len(classic) == 7
    from kerasave.testing import EXPORTS, FORMATS
    assert FORMATS == (*classic, *EXPORTS)
    assert set(EXPORTS) <= {f.label for f in TABLE if f.export}


def test_arrays_of_a_keras2_file_are_named_as_inspect_names_them():
    path = FIXTURES / "keras2" / "reference_model.h5"
    handler = _registry.detect(path)
    stored = list(handler.arrays(path))
    assert [n for n, _ in stored] == [v.name for v in ks.inspect(path).variables]
    assert [(tuple(a.shape), str(a.dtype)) for _, a in stored] == [
        (v.shape, v.dtype) for v in ks.inspect(path).variables]
    weights = _registry.detect(path, "weights")  # (a legacy whole model is weights too)
    assert [n for n, _ in weights.arrays(path)] == [n for n, _ in stored]


def test_arrays_report_damage_as_a_typed_error(saved, tmp_path):
    import shutil

    for member in saved["checkpoint"].parent.iterdir():
        shutil.copy2(member, tmp_path / member.name)
    data = next(tmp_path.glob("model.data-*"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 1
    data.write_bytes(bytes(raw))
    handler = _registry.detect(tmp_path / "model")
    with pytest.raises(ks.CorruptArtifactError) as exc:
        list(handler.arrays(tmp_path / "model"))
    assert str(tmp_path / "model") in str(exc.value)


def test_each_kind_has_its_handler_type_and_properties(saved):
    kinds = {"weights": WeightsFormat, "config": ConfigFormat, "model": ModelFormat}
    for fmt, path in saved.items():
        handler = _registry.detect(path)
        assert isinstance(handler, Handler) and isinstance(handler, kinds[handler.kind])
        assert type(_registry.detect(path, handler.kind)) is type(handler)
        assert handler.description and handler.array_names
        whole = fmt in ("keras", "h5 model")
        assert handler.holds_architecture == (whole or handler.kind == "config"), fmt
        assert handler.can_hold_optimizer == (fmt in ("checkpoint", "h5 weights") or whole)
        assert handler.verifiable_config == handler.holds_architecture, fmt
    assert _registry.for_save("weights", Path("x"), None).kind == "weights"
    assert _registry.for_save("model", Path("x"), None).name == "savedmodel"


def test_checkpoint_contents_say_which_arrays_are_optimizer_state(saved, trained_model):
    handler = _registry.detect(saved["checkpoint"])
    contents = handler.contents(saved["checkpoint"])
    assert set(contents.optimizer_variables) == {v.path for v in
                                                 trained_model.optimizer.variables}
    assert contents.recorded_optimizer_variables == len(trained_model.optimizer.variables)


# -- one checksum pass per file per command -----------------------------------------------


@pytest.fixture
def checksums(monkeypatch):
    """Every file ``_manifest.crc32c`` checksums, counted."""
    counted: Counter[str] = Counter()
    real = _manifest.crc32c

    def counting(path, *args, **kwargs):
        counted[str(path)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(_manifest, "crc32c", counting)
    return counted


def _files(path):
    handler = _registry.detect(path)
    return set(map(str, _manifest._files(handler, path).values()))


def _run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


@pytest.mark.parametrize("fmt", list(SAVES))
@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_a_command_checksums_each_file_once(saved, checksums, capsys, fmt, command):
    _run(capsys, command, saved[fmt])
    assert set(checksums) == _files(saved[fmt]) and set(checksums.values()) == {1}, checksums


def test_verify_into_an_architecture_checksums_each_file_once(saved, checksums, capsys):
    _run(capsys, "verify", saved["checkpoint"], "--config", saved["keras"])
    assert set(checksums) == _files(saved["checkpoint"]) | _files(saved["keras"])
    assert set(checksums.values()) == {1}, checksums


@pytest.mark.parametrize("a,b,config", [
    ("keras", "checkpoint", None),
    ("checkpoint", "h5 model", None),
    ("checkpoint", "h5 weights", "keras"),
    ("checkpoint", "h5 weights", "json"),
    ("savedmodel", "keras", None),
    ("checkpoint", "checkpoint", None),
])
def test_diff_checksums_each_file_once(saved, checksums, capsys, a, b, config):
    extra = ("--config", saved[config]) if config else ()
    out = _run(capsys, "diff", saved[a], saved[b], *extra)
    assert out.splitlines()[-1].startswith("identical: ")
    expected = _files(saved[a]) | _files(saved[b]) | (_files(saved[config]) if config else set())
    assert set(checksums) == expected and set(checksums.values()) == {1}, checksums
