import os
import subprocess
import sys

import kerasave as ks


def _run(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "kerasave", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def test_demo_verifies_every_format(tmp_path):
    result = _run("demo", "--dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.split()[:1] and line.split()[0] in {
        "checkpoint", "h5", "json", "yaml", "keras", "savedmodel"}]
    assert len(rows) == 7, result.stdout
    assert all(" ok " in row for row in rows), result.stdout
    assert "7 of 7 formats verified" in result.stdout
    # The artifacts are real and readable afterwards.
    assert ks.inspect(tmp_path / "out" / "my_model.keras").format == "keras"
    assert (tmp_path / "out" / "weights" / "my_model.index").exists()


def test_the_command_line_keeps_tensorflows_load_lines_off_stderr(saved):
    """TF_CPP_MIN_LOG_LEVEL=3, which the command line sets, does not hide the absl
    lines TensorFlow 2.21 prints at load; the command line drops them itself."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "kerasave", "inspect",
                             str(saved["paths"]["keras"])], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "absl::InitializeLog" not in result.stderr and "I0000" not in result.stderr, \
        result.stderr
    # Asked for everything, everything is shown.
    loud = subprocess.run([sys.executable, "-c", "from kerasave._runtime.quiet import "
                           "import_tensorflow; import_tensorflow()"], capture_output=True,
                          text=True, env=dict(env, TF_CPP_MIN_LOG_LEVEL="0"), timeout=300)
    quiet = subprocess.run([sys.executable, "-c", "from kerasave._runtime.quiet import "
                            "import_tensorflow; import_tensorflow()"], capture_output=True,
                           text=True, env=dict(env, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert loud.returncode == quiet.returncode == 0
    assert "absl::InitializeLog" not in quiet.stderr and "I0000" not in quiet.stderr
    assert len(loud.stderr) >= len(quiet.stderr)


def test_quiet_import_hides_only_what_the_level_says():
    from kerasave._runtime.quiet import _shown

    info = "I0000 00:00:1795789709.365741    5872 port.cc:153] oneDNN custom operations"
    warning = "W0000 00:00:1795789709.365741    5872 x.cc:1] something to know"
    prelude = "WARNING: All log messages before absl::InitializeLog() is called are written"
    other = "Traceback (most recent call last):"
    assert [_shown(x, 0) for x in (info, warning, prelude, other)] == [True] * 4
    assert [_shown(x, 1) for x in (info, warning, prelude, other)] == [False, True, False, True]
    assert [_shown(x, 3) for x in (info, warning, prelude, other)] == [False, False, False, True]


def test_importing_kerasave_does_not_import_tensorflow():
    code = ("import sys, kerasave; assert 'tensorflow' not in sys.modules; "
            "assert callable(kerasave.save_model) and 'tensorflow' in sys.modules; "
            "assert 'save_model' in dir(kerasave); kerasave.callbacks.Checkpoint")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr


def test_version():
    result = _run("--version")
    assert result.returncode == 0 and ks.__version__ in result.stdout


def test_demo_fails_loudly_when_a_round_trip_fails(tmp_path, monkeypatch, capsys):
    from kerasave import cli
    from kerasave.formats.config import YamlHandler

    monkeypatch.setattr(YamlHandler, "check",
                        lambda self, model, path, **_: [ks.Check("config", False, "injected")])
    assert cli.main(["demo", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "6 of 7 formats verified; 1 FAILED" in out
    assert "injected" in out
    assert not (tmp_path / "model.yaml").exists()


# -- the commands, as a user runs them --------------------------------------------------
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kerasave import cli  # noqa: E402
from kerasave.formats import by_label, formats  # noqa: E402


def _values(variables):
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]


def _assert_equal(expected, actual):
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        a = np.asarray(keras.ops.convert_to_numpy(a))
        assert e.dtype == a.dtype and np.array_equal(e, a)


# The classic formats of the format table but YAML (json's twin for the commands).
SAVED = formats(lambda f: f.classic and f.label != "yaml")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The trained reference model saved once in every format (read-only for tests)."""
    out = tmp_path_factory.mktemp("artifacts")
    model = ks.reference_model(seed=0)
    data, labels = ks.reference_data(64, seed=0)
    model.fit(data, labels, epochs=1, batch_size=32, verbose=0)
    paths = {f.label: out / f.named("model") for f in SAVED}
    for f in SAVED:
        getattr(ks, f.call)(model, paths[f.label])
    return {"paths": {k: str(v) for k, v in paths.items()},
            "weights": _values(model.weights),
            "optimizer": _values(model.optimizer.variables)}


def _main(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kerasave: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_help_lists_every_command(capsys):
    code, out, _ = _main(capsys, "--help")
    assert code == 0
    for command in ["demo", "inspect", "verify", "diff", "convert", "--debug", "--version"]:
        assert command in out


@pytest.mark.parametrize("fmt", [f.label for f in SAVED])
def test_inspect_json_matches_the_api(saved, capsys, fmt):
    path = saved["paths"][fmt]
    code, out, err = _main(capsys, "inspect", path, "--json")
    assert code == 0, err
    data = json.loads(out)
    info = ks.inspect(path)
    assert data["path"] == info.path and data["format"] == info.format
    assert data["files"] == list(info.files)
    assert data["bytes"] == info.bytes == sum(data["file_bytes"].values())
    assert data["has_optimizer"] == info.has_optimizer
    assert data["versions"] == dict(info.versions)
    assert [(v["name"], tuple(v["shape"]), v["dtype"]) for v in data["variables"]] == \
        [(v.name, v.shape, v.dtype) for v in info.variables]
    assert data["kind"] == by_label(fmt).kind
    assert data["manifest"]["present"] and data["manifest"]["ok"]
    assert Path(data["manifest"]["manifest"]).is_file()


def test_inspect_prints_a_readable_table(saved, capsys):
    path = saved["paths"]["checkpoint"]
    code, out, err = _main(capsys, "inspect", path)
    assert code == 0 and err == ""
    assert "checkpoint (weights only)" in out
    assert "optimizer  yes" in out
    assert "manifest   model.kerasave.json: 2 file(s) match their CRC32C" in out
    lines = out.splitlines()
    for v in ks.inspect(path).variables:
        assert any(line.split()[:1] == [v.name] and str(v.shape) in line and v.dtype in line
                   for line in lines), v
    assert all(line == line.rstrip() for line in lines)
    assert lines[-1] == "14 variable(s), 8,288 values"


def test_inspect_says_when_there_is_no_manifest(tmp_path, capsys):
    model = ks.reference_model(seed=0)
    model.save(tmp_path / "plain.keras")  # plain Keras: no kerasave manifest
    code, out, _ = _main(capsys, "inspect", tmp_path / "plain.keras", "--json")
    assert code == 0
    assert json.loads(out)["manifest"] == {
        "present": False, "manifest": None, "ok": True,
        "detail": "no manifest (not written by kerasave): format checks only"}
    code, out, _ = _main(capsys, "inspect", tmp_path / "plain.keras")
    assert "manifest   none (not written by kerasave)" in out


@pytest.mark.parametrize("fmt", [f.label for f in SAVED])
def test_verify_passes_good_artifacts(saved, capsys, fmt):
    code, out, err = _main(capsys, "verify", saved["paths"][fmt])
    assert code == 0, err
    assert err == ""
    assert len(out.splitlines()) == 1 and out.startswith(f"ok: {saved['paths'][fmt]} (")
    assert "manifest: " in out


def _copy(src, dst_dir):
    """Copy an artifact (and its manifest, data files, ...) into dst_dir."""
    src = Path(src)
    for member in src.parent.iterdir():
        if member.name == src.name or member.name.startswith(src.name + "."):
            target = dst_dir / member.name
            if member.is_dir():
                shutil.copytree(member, target)
            else:
                shutil.copy2(member, target)
    return dst_dir / src.name


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated keras", "bit-flipped h5 weights",
                                    "bit-flipped checkpoint", "truncated h5 model"])
def test_verify_fails_on_damage_with_one_line(saved, tmp_path, capsys, damage):
    fmt = {"truncated keras": "keras", "bit-flipped h5 weights": "h5 weights",
           "bit-flipped checkpoint": "checkpoint", "truncated h5 model": "h5 model"}[damage]
    path = _copy(saved["paths"][fmt], tmp_path)
    if damage.startswith("truncated"):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif fmt == "checkpoint":
        data = next(tmp_path.glob("model.data-*"))
        _flip(data, data.stat().st_size // 2)
    else:
        _flip(path, path.stat().st_size - 100)
    assert _main(capsys, "verify", saved["paths"][fmt])[0] == 0  # the original is fine
    code, out, err = _main(capsys, "verify", path)
    assert code == 1 and out == ""
    line = _one_error_line(err)
    assert str(path) in line and "failed verification" in line
    if damage.startswith("bit-flipped"):  # the file still parses: its CRC32C tells
        assert "does not match its manifest" in line
        code, out, err = _main(capsys, "inspect", path)  # inspect cannot read it: an error
        assert code == 2 and out == ""
        assert "does not match its manifest" in _one_error_line(err)


def test_verify_reads_every_tensor_of_a_checkpoint_without_manifest(saved, tmp_path, capsys):
    path = _copy(saved["paths"]["checkpoint"], tmp_path)
    (tmp_path / "model.kerasave.json").unlink()  # as plain TensorFlow writes it
    assert _main(capsys, "verify", path)[0] == 0
    data = next(tmp_path.glob("model.data-*"))
    _flip(data, data.stat().st_size // 2)  # caught by TensorFlow's per-tensor checksums
    code, _, err = _main(capsys, "verify", path)
    assert code == 1
    assert "failed verification" in _one_error_line(err)


def test_verify_refuses_a_hostile_config(capsys):
    from tests.conftest import FIXTURES

    code, _, err = _main(capsys, "verify", FIXTURES / "keras2" / "hostile.yaml")
    assert code == 1
    assert "!!python/object/apply:os.system" in _one_error_line(err)


def test_verify_reports_optimizer_state_that_does_not_load(capsys, tmp_path):
    """A whole model that loads, but with a fresh optimizer: not as saved (here a
    Keras 2 file whose first slot names a variable the model does not have)."""
    import h5py

    from tests.conftest import FIXTURES

    code, out, _ = _main(capsys, "verify", FIXTURES / "keras2" / "reference_model.h5")
    assert code == 0 and out.startswith("ok: ")  # Keras 2's Adam state loads
    path = tmp_path / "renamed.h5"
    shutil.copy(FIXTURES / "keras2" / "reference_model.h5", path)
    with h5py.File(path, "r+") as f:
        group = f["optimizer_weights"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        group.move(names[1], "Adam/m/nonesuch/kernel:0")
        names[1] = "Adam/m/nonesuch/kernel:0"
        group.attrs["weight_names"] = [n.encode() for n in names]
    code, _, err = _main(capsys, "verify", path)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith("kerasave: warning: ") and "optimizer state" in lines[0]
    assert lines[-1].startswith("kerasave: error: ") and "optimizer state (9 of" in lines[-1]


@pytest.mark.parametrize("a,b,extra,count", [
    ("keras", "checkpoint", (), "14 variables bit-exact (4 model, 10 optimizer)"),
    ("keras", "h5 weights", (), "14 variables bit-exact (4 model, 10 optimizer)"),
    ("h5 model", "keras", (), "14 variables bit-exact (4 model, 10 optimizer)"),
    ("checkpoint", "h5 model", (), "14 variables bit-exact (4 model, 10 optimizer)"),
    ("savedmodel", "keras", (), "4 variables bit-exact (4 model, 0 optimizer)"),
    ("checkpoint", "h5 weights", ("--config", "json"),
     "4 variables bit-exact (4 model, 0 optimizer)"),
    ("checkpoint", "h5 weights", ("--config", "keras"),
     "14 variables bit-exact (4 model, 10 optimizer)"),
    ("checkpoint", "checkpoint", (), "14 variables bit-exact (4 model, 10 optimizer)"),
])
def test_diff_is_identical_across_formats(saved, capsys, a, b, extra, count):
    paths = saved["paths"]
    extra = tuple(paths.get(x, x) for x in extra)
    code, out, err = _main(capsys, "diff", paths[a], paths[b], *extra)
    assert code == 0, out + err
    assert out.splitlines()[-1] == f"identical: {count}"
    assert "changed" not in out


def test_diff_lists_every_variable_by_model_names(saved, capsys):
    code, out, _ = _main(capsys, "diff", saved["paths"]["keras"], saved["paths"]["checkpoint"],
                         "--all")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines() if " same " in line]
    assert names == ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias",
                     "optimizer/iteration", "optimizer/learning_rate",
                     "optimizer/dense/kernel/momentum", "optimizer/dense/kernel/velocity",
                     "optimizer/dense/bias/momentum", "optimizer/dense/bias/velocity",
                     "optimizer/dense_1/kernel/momentum", "optimizer/dense_1/kernel/velocity",
                     "optimizer/dense_1/bias/momentum", "optimizer/dense_1/bias/velocity"]


def test_diff_reports_a_changed_weight(saved, tmp_path, capsys):
    model = ks.load_model(saved["paths"]["keras"])
    kernel = model.layers[0].kernel
    before = np.array(keras.ops.convert_to_numpy(kernel), copy=True)
    after = before.copy()
    after[3, 5] += 0.25
    kernel.assign(after)
    ks.save_weights(model, tmp_path / "changed.weights.h5")
    expected_abs = np.max(np.abs(after.astype(np.float64) - before.astype(np.float64)))
    expected_rel = np.max(np.abs(after.astype(np.float64) - before) / np.abs(before))

    code, out, err = _main(capsys, "diff", saved["paths"]["checkpoint"],
                           tmp_path / "changed.weights.h5", "--config", saved["paths"]["keras"])
    assert code == 1, err
    rows = [re.split(r"\s{2,}", line) for line in out.splitlines() if " changed " in line]
    assert rows == [["dense/kernel", "changed", "(32, 64) float32", f"{expected_abs:.6g}",
                     f"{expected_rel:.6g}"]]
    assert out.splitlines()[-1] == "different: 1 changed; 13 of 14 identical"


def test_diff_json_reports_every_variable(saved, tmp_path, capsys):
    model = ks.load_model(saved["paths"]["keras"])
    kernel = model.layers[0].kernel
    before = np.array(keras.ops.convert_to_numpy(kernel), copy=True)
    after = before.copy()
    after[0, 0] = 0.0 if before[0, 0] != 0 else 1.0
    after[2, 2] += 0.5
    kernel.assign(after)
    ks.save_model(model, tmp_path / "changed.keras")
    code, out, err = _main(capsys, "diff", saved["paths"]["keras"], tmp_path / "changed.keras",
                           "--json")
    assert code == 1, err
    data = json.loads(out)  # strict JSON: no Infinity or NaN literals
    assert data["identical"] is False and data["fits"] is True
    assert data["a"]["format"] == data["b"]["format"] == "keras"
    assert data["a"]["naming"] == "model" and data["a"]["optimizer_state"] is True
    assert data["counts"]["changed"] == 1 and data["counts"]["same"] == 13
    assert len(data["entries"]) == 14  # identical ones too
    (changed,) = [e for e in data["entries"] if e["status"] != "same"]
    diff = np.abs(after.astype(np.float64) - before.astype(np.float64))
    assert changed["name"] == "dense/kernel" and changed["status"] == "changed"
    assert changed["a"] == changed["b"] == {"shape": [32, 64], "dtype": "float32"}
    assert changed["max_abs"] == float(np.max(diff))
    rel = np.where(diff == 0, 0.0, diff / np.abs(before.astype(np.float64)))
    assert changed["max_rel"] == (float(np.max(rel)) if np.isfinite(np.max(rel)) else "inf")
    same = [e for e in data["entries"] if e["status"] == "same"]
    assert all(e["max_abs"] == 0.0 for e in same)
    # Identical artifacts: exit 0; an artifact that does not fit: exit 1, with the reason.
    code, out, _ = _main(capsys, "diff", saved["paths"]["keras"], saved["paths"]["checkpoint"],
                         "--json")
    assert code == 0 and json.loads(out)["identical"] is True
    bigger = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64),
                               keras.layers.Dense(10), keras.layers.Dense(3)])
    ks.save_weights(bigger, tmp_path / "bigger" / "ckpt")
    code, out, _ = _main(capsys, "diff", saved["paths"]["keras"], tmp_path / "bigger" / "ckpt",
                         "--json")
    data = json.loads(out)
    assert code == 1 and data["fits"] is False and "architecture of" in data["reason"]


def test_diff_json_numbers_stay_json():
    from kerasave.cli.diff import _json_number

    assert _json_number(None) is None and _json_number(0.5) == 0.5
    assert [_json_number(x) for x in (np.inf, -np.inf, np.nan)] == ["inf", "-inf", "nan"]


def test_diff_reports_missing_and_extra_variables(saved, tmp_path, capsys):
    bigger = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64),
                               keras.layers.Dense(10), keras.layers.Dense(3)])
    bigger.set_weights(saved["weights"] + _values(bigger.weights[4:]))  # same first layers
    ks.save_weights(bigger, tmp_path / "bigger.weights.h5")
    code, out, _ = _main(capsys, "diff", saved["paths"]["h5 weights"],
                         tmp_path / "bigger.weights.h5")
    assert code == 1
    rows = [re.split(r"\s{2,}", line) for line in out.splitlines() if line.startswith("layers/")]
    assert rows == [["layers/dense_2/vars/0", "only in B", "(10, 3) float32", "-", "-"],
                    ["layers/dense_2/vars/1", "only in B", "(3,) float32", "-", "-"]]
    assert "note: optimizer state is only in A: not compared" in out
    assert out.splitlines()[-1] == "different: 2 only in B; 4 of 6 identical"
    # Against a whole model, the weights do not fit its architecture at all.
    ks.save_weights(bigger, tmp_path / "bigger" / "ckpt")
    code, out, _ = _main(capsys, "diff", saved["paths"]["keras"], tmp_path / "bigger" / "ckpt")
    assert code == 1
    assert out.startswith("different: ") and "does not fit the architecture of" in out


def test_diff_needs_an_architecture_to_line_up_different_namings(saved, capsys):
    code, out, err = _main(capsys, "diff", saved["paths"]["checkpoint"],
                           saved["paths"]["h5 weights"])
    assert code == 2 and out == ""
    assert "--config" in _one_error_line(err)


def test_convert_h5_model_to_keras(saved, tmp_path, capsys):
    dst = tmp_path / "converted.keras"
    code, out, err = _main(capsys, "convert", saved["paths"]["h5 model"], dst)
    assert code == 0, err
    assert out.startswith(f"keras verified: {dst}")
    assert out.splitlines()[-1].endswith("14 variables bit-exact")
    loaded = ks.load_model(dst)
    _assert_equal(saved["weights"], loaded.weights)
    _assert_equal(saved["optimizer"], loaded.optimizer.variables)


def test_convert_checkpoint_to_h5_weights_with_a_config(saved, tmp_path, capsys):
    dst = tmp_path / "converted.weights.h5"
    code, out, err = _main(capsys, "convert", saved["paths"]["checkpoint"], dst,
                           "--config", saved["paths"]["json"])
    assert code == 0, err
    assert out.startswith(f"h5 verified: {dst}")
    assert "optimizer state" in err and "not converted" in err  # the config has no optimizer
    assert not ks.inspect(dst).has_optimizer
    fresh = ks.load_config(saved["paths"]["json"])
    ks.load_weights(fresh, dst)
    _assert_equal(saved["weights"], fresh.weights)
    # Weights without optimizer state diff as identical to the whole model, and
    # convert with a compiled architecture (whose optimizer then keeps its state).
    code, out, _ = _main(capsys, "diff", saved["paths"]["keras"], dst)
    assert code == 0 and "optimizer state is only in A" in out
    code, _, err = _main(capsys, "convert", dst, tmp_path / "again.keras",
                         "--config", saved["paths"]["keras"])
    assert code == 0, err
    _assert_equal(saved["weights"], ks.load_model(tmp_path / "again.keras").weights)

    # A whole model as the architecture keeps the optimizer state too.
    dst = tmp_path / "with_optimizer.weights.h5"
    code, _, err = _main(capsys, "convert", saved["paths"]["checkpoint"], dst,
                         "--config", saved["paths"]["keras"])
    assert code == 0 and err == ""
    fresh = ks.reference_model(seed=1)
    ks.load_weights(fresh, dst)
    _assert_equal(saved["weights"], fresh.weights)
    _assert_equal(saved["optimizer"], fresh.optimizer.variables)


def test_convert_keras_to_checkpoint_and_savedmodel(saved, tmp_path, capsys):
    code, _, err = _main(capsys, "convert", saved["paths"]["keras"], tmp_path / "ckpt",
                         "--as", "weights")
    assert code == 0, err
    fresh = ks.reference_model(seed=1)
    ks.load_weights(fresh, tmp_path / "ckpt")
    _assert_equal(saved["weights"], fresh.weights)
    _assert_equal(saved["optimizer"], fresh.optimizer.variables)
    code, out, err = _main(capsys, "convert", saved["paths"]["keras"], tmp_path / "export",
                           "--as", "model")
    assert code == 0, err
    assert out.startswith("savedmodel verified") and out.splitlines()[-1].endswith(
        "4 variables bit-exact")


def test_convert_a_savedmodel_back_with_a_config(saved, tmp_path, capsys):
    dst = tmp_path / "recovered.keras"
    code, out, err = _main(capsys, "convert", saved["paths"]["savedmodel"], dst,
                           "--config", saved["paths"]["json"])
    assert code == 0, err
    assert out.splitlines()[-1].endswith("4 variables bit-exact")
    _assert_equal(saved["weights"], ks.load_model(dst).weights)


def test_verify_loads_weights_into_a_given_architecture(saved, tmp_path, capsys):
    for fmt in ["checkpoint", "h5 weights", "savedmodel"]:
        code, out, err = _main(capsys, "verify", saved["paths"][fmt],
                               "--config", saved["paths"]["json"])
        assert code == 0, err
        assert out.strip().endswith(f"loads into the architecture of {saved['paths']['json']}")
    other = keras.Sequential([keras.Input((32,)), keras.layers.Dense(8)])
    ks.save_config(other, tmp_path / "other.json")
    code, out, err = _main(capsys, "verify", saved["paths"]["checkpoint"],
                           "--config", tmp_path / "other.json")
    assert code == 1 and out == ""
    assert "failed verification" in _one_error_line(err)


def test_convert_refuses_what_it_cannot_do(saved, tmp_path, capsys):
    paths = saved["paths"]
    cases = [
        (["convert", paths["checkpoint"], tmp_path / "a.keras"], "--config"),
        (["convert", paths["keras"], paths["h5 model"]], "--force"),
        (["convert", paths["keras"], tmp_path / "noext"], "--as"),
        (["convert", paths["json"], tmp_path / "b.keras"], "no weights"),
    ]
    for args, word in cases:
        code, out, err = _main(capsys, *args)
        assert code == 2 and out == "", args
        assert word in _one_error_line(err), args
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [
    ["inspect", "{tmp}/missing.keras"],
    ["verify", "{tmp}/missing"],
    ["diff", "{tmp}/missing.h5", "{tmp}/other.h5"],
    ["convert", "{tmp}/missing.h5", "{tmp}/out.keras"],
    ["inspect", "{tmp}/notes.txt"],
    ["verify", "{tmp}/notes.txt"],
    ["frobnicate"],
    ["inspect"],
])
def test_errors_are_one_line_without_traceback(tmp_path, capsys, args):
    (tmp_path / "notes.txt").write_text("not a model\n")
    code, out, err = _main(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and out == ""
    line = _one_error_line(err)
    if "missing" in " ".join(args):
        assert "no artifact at" in line and "missing" in line
    if "notes.txt" in " ".join(args):
        assert "cannot tell the format" in line


def test_debug_shows_the_traceback(tmp_path, capsys):
    code, _, err = _main(capsys, "--debug", "inspect", tmp_path / "missing.keras")
    assert code == 2
    assert "Traceback (most recent call last)" in err and "ArtifactNotFoundError" in err
    assert err.strip().splitlines()[-1].startswith("kerasave: error: no artifact at")


def test_console_script_verifies_and_fails_in_one_line(saved, tmp_path):
    """The installed `kerasave` script, in a fresh process, as CI would call it."""
    script = Path(sys.executable).with_name("kerasave")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    good = subprocess.run([str(script), "verify", saved["paths"]["keras"]], capture_output=True,
                          text=True, env=env, timeout=300)
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("ok: ")
    path = _copy(saved["paths"]["keras"], tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    bad = subprocess.run([str(script), "verify", str(path)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert bad.returncode == 1 and bad.stdout == ""
    ours = [line for line in bad.stderr.splitlines() if line.startswith("kerasave:")]
    assert len(ours) == 1 and ours[0].startswith("kerasave: error: ")
    assert "Traceback" not in bad.stderr


def test_a_level_the_user_set_holds_when_kerasave_imports_tensorflow():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for code in ("import kerasave; kerasave.reference_model()", "import kerasave.testing",
                 "import kerasave.callbacks"):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "absl::InitializeLog" not in result.stderr and "I0000" not in result.stderr, \
            (code, result.stderr)
