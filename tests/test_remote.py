"""Object storage: every format, the manager and the command line on ``s3://``,
against moto's S3 server started on a free localhost port (``tests/s3server.py``);
``memory://`` for what needs no network."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasave as ks
from kerasave.store import remote

from .conftest import all_vars, assert_bit_exact, perturb, values
from .test_manager import _net, _train, fit_callback_resumes

SCRIPTS = Path(__file__).parent / "scripts"

FORMATS = [("weights", "ckpt"), ("weights", "w.weights.h5"), ("model", "m.keras"),
           ("model", "m.h5"), ("config", "c.json"), ("config", "c.yaml"),
           ("model", "served")]
SAVE = {"weights": ks.save_weights, "model": ks.save_model, "config": ks.save_config}


def _fs(url):
    fs, _ = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return fs


def _objects(url):
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return sorted(p[len(path.rstrip("/")) + 1:] for p in fs.find(path))


def _restored(kind, model, url, want):
    """Load what ``url`` holds back (into ``model`` for weights) and check it is ``want``."""
    if kind == "weights":
        report = ks.load_weights(model, url)
        assert report.path == url
        assert_bit_exact(want, all_vars(model))
    elif kind == "config":
        fresh = ks.load_config(url)
        assert [(v.shape, v.dtype) for v in fresh.weights] == [
            (v.shape, v.dtype) for v in model.weights]
        assert ks.verify(model, url).ok
    elif url.endswith("served"):
        served = ks.load_model(url)
        x = np.ones((2, 32), np.float32)
        assert np.array_equal(np.asarray(served.serve(x)), np.asarray(model(x)))
    else:
        loaded = ks.load_model(url)
        assert_bit_exact(want, all_vars(loaded))


@pytest.mark.parametrize("kind,name", FORMATS)
def test_round_trip_on_s3(bucket, trained, kind, name):
    url = f"{bucket}/dir/{name}"
    report = SAVE[kind](trained, url)
    assert report.ok and report.path == url
    assert not any("kerasave-stage" in c.detail for c in report.checks)
    want = values(all_vars(trained))
    if kind == "weights":  # a restore test changes the model first
        perturb(trained)
    _restored(kind, trained, url, want)
    # Saved again over itself: one committed version, the old one's objects gone.
    SAVE[kind](trained, url)
    versions = {o.split("/")[1] for o in _objects(f"{bucket}/dir") if o.startswith(".")}
    assert len(versions) == 1, _objects(f"{bucket}/dir")
    assert ks.verify(trained, url).ok
    inspected = ks.inspect(url)
    assert inspected.path == url and all(f.startswith(f"{bucket}/dir/") for f in inspected.files)


def test_memory_urls_and_file_urls(tmp_path, trained):
    want = values(all_vars(trained))
    ks.save_model(trained, "memory://kerasave-test/m.keras")
    assert_bit_exact(want, all_vars(ks.load_model("memory://kerasave-test/m.keras")))
    ks.save_model(trained, f"file://{tmp_path}/m.keras")  # file:// is a local path
    assert (tmp_path / "m.keras").is_file() and (tmp_path / "m.keras.kerasave.json").is_file()


def _flip_one_byte(url):
    fs = _fs(url)
    data = bytearray(fs.cat_file(url))
    data[len(data) // 2] ^= 0x01
    fs.pipe_file(url, bytes(data))


def _version_objects(url):
    """The object paths (as URLs) of the committed version at ``url``."""
    version = remote.Remote(url).committed()
    fs = _fs(url)
    return [fs.unstrip_protocol(f"{version.prefix}/{rel}") for rel in version.paths.values()]


@pytest.mark.parametrize("kind,name", [("weights", "ckpt"), ("model", "m.keras")])
def test_damage_is_detected_on_every_read(bucket, trained, kind, name):
    url = f"{bucket}/{name}"
    SAVE[kind](trained, url)
    before = values(all_vars(trained))
    biggest = max(_version_objects(url), key=lambda u: _fs(u).size(u))
    _flip_one_byte(biggest)
    with pytest.raises(ks.CorruptArtifactError, match="CRC32C") as info:
        ks.inspect(url)
    assert url in str(info.value) and "kerasave-stage" not in str(info.value)
    with pytest.raises(ks.CorruptArtifactError, match="CRC32C"):
        (ks.load_weights(trained, url) if kind == "weights" else ks.load_model(url))
    assert_bit_exact(before, all_vars(trained))  # nothing half-restored
    with pytest.raises(ks.CorruptArtifactError):
        ks.verify(trained, url)


def test_a_missing_object_and_a_missing_artifact(bucket, trained):
    url = f"{bucket}/ckpt"
    ks.save_weights(trained, url)
    data = [u for u in _version_objects(url) if ".data-" in u][0]
    _fs(data).rm_file(data)
    with pytest.raises(ks.CorruptArtifactError, match="missing") as info:
        ks.load_weights(trained, url)
    assert url in str(info.value)
    with pytest.raises(ks.ArtifactNotFoundError) as info:
        ks.load_model(f"{bucket}/nothing.keras")
    assert f"{bucket}/nothing.keras" in str(info.value)


def test_an_object_larger_than_its_manifest_says_is_refused_before_download(bucket, trained):
    url = f"{bucket}/m.keras"
    ks.save_model(trained, url)
    (obj,) = _version_objects(url)
    _fs(obj).pipe_file(obj, _fs(obj).cat_file(obj) + b"\0" * 4096)
    with pytest.raises(ks.CorruptArtifactError, match="bytes, the manifest says"):
        ks.load_model(url)


def test_a_damaged_manifest_is_refused(bucket, trained):
    url = f"{bucket}/m.keras"
    ks.save_model(trained, url)
    fs = _fs(url)
    manifest = json.loads(fs.cat_file(f"{url}.kerasave.json"))
    manifest["remote"]["paths"]["."] = "../../elsewhere"
    fs.pipe_file(f"{url}.kerasave.json", json.dumps(manifest).encode())
    with pytest.raises(ks.CorruptArtifactError, match="not a kerasave manifest"):
        ks.load_model(url)


def test_a_plain_artifact_uploaded_by_other_tools_loads(bucket, trained, tmp_path):
    trained.save(tmp_path / "plain.keras")
    fs = _fs(bucket)
    fs.put_file(str(tmp_path / "plain.keras"), f"{bucket}/plain.keras")
    loaded = ks.load_model(f"{bucket}/plain.keras")
    assert_bit_exact(values(all_vars(trained)), all_vars(loaded))
    assert "no manifest" in ks.verify(trained, f"{bucket}/plain.keras").checks[0].detail


class _Killed(BaseException):
    """A process ending at an object-store step: nothing after it reaches the store
    (the publish path has no cleanup of the store on the way out)."""


@pytest.mark.parametrize("kind,name", [("model", "m.keras"), ("weights", "ckpt"),
                                       ("model", "served")])
def test_a_save_killed_at_each_step_leaves_one_complete_version(bucket, monkeypatch,
                                                                 kind, name):
    url = f"{bucket}/{name}"
    old, new = ks.reference_model(seed=1), ks.reference_model(seed=2)
    old_values, new_values = values(all_vars(old)), values(all_vars(new))
    SAVE[kind](old, url)
    steps = []
    monkeypatch.setattr(remote, "_hook", lambda k, u: steps.append((k, u)))
    SAVE[kind](new, url)
    complete = list(steps)
    SAVE[kind](old, url)
    commit = [k for k, _ in complete].index("commit")
    assert commit >= 1 and complete[commit + 1][0] == "delete"
    for at in range(len(complete)):
        seen = []

        def hook(k, u, at=at, seen=seen):
            if len(seen) == at:
                raise _Killed(k)
            seen.append(k)

        monkeypatch.setattr(remote, "_hook", hook)
        with pytest.raises(_Killed):
            SAVE[kind](new, url)
        monkeypatch.setattr(remote, "_hook", None)
        model = ks.reference_model(seed=3)
        want = old_values if at <= commit else new_values
        if kind == "weights":
            ks.load_weights(model, url)
            assert_bit_exact(want, all_vars(model))
        elif name == "served":
            x = np.ones((2, 32), np.float32)
            source = old if at <= commit else new
            assert np.array_equal(np.asarray(ks.load_model(url).serve(x)),
                                  np.asarray(source(x)))
        else:
            assert_bit_exact(want, all_vars(ks.load_model(url)))
        SAVE[kind](old, url)  # back to the old version for the next crash point
    # Every crash left its uploads behind under fresh names; the next saves removed
    # none that was younger than the grace period, and the reads never saw them.
    monkeypatch.setattr(remote, "GRACE", 0.0)
    SAVE[kind](old, url)
    parent = url.rsplit("/", 1)[0]
    versions = {o.split("/")[1] for o in _objects(parent) if o.startswith(f".{name}.")}
    assert len(versions) == 1


def test_a_save_killed_mid_upload_by_sigkill(bucket, s3_server, tmp_path):
    """A real SIGKILL while a large object is being uploaded."""
    url = f"{bucket}/big.keras"
    env = dict(os.environ, **s3_server.env(), TF_CPP_MIN_LOG_LEVEL="3")
    code = (
        "import sys, keras, numpy as np, kerasave as ks\n"
        "from kerasave.store import remote\n"
        "seed = int(sys.argv[2])\n"
        "m = keras.Sequential([keras.Input((1024,)), keras.layers.Dense(8192)])\n"
        "m.layers[0].kernel.assign(np.random.RandomState(seed).standard_normal(\n"
        "    (1024, 8192)).astype('float32'))\n"
        "def hook(kind, url):\n"
        "    if kind == 'put' and sys.argv[3] == 'stall':\n"
        "        print('uploading', flush=True)\n"
        "remote._hook = hook\n"
        "ks.save_model(m, sys.argv[1])\n"
        "print('saved', flush=True)\n")
    subprocess.run([sys.executable, "-c", code, url, "1", "-"], env=env, check=True,
                   capture_output=True, timeout=300)
    child = subprocess.Popen([sys.executable, "-c", code, url, "2", "stall"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert child.stdout.readline().strip() == "uploading"
    time.sleep(0.1)  # 32 MB on its way (moto takes about 0.4 s for them here)
    child.send_signal(signal.SIGKILL)
    child.wait(60)
    child.stdout.close()
    kernel = keras.ops.convert_to_numpy(ks.load_model(url).layers[0].kernel)
    versions = [np.random.RandomState(s).standard_normal((1024, 8192)).astype("float32")
                for s in (1, 2)]
    # One whole version: the old one unless the upload and its commit beat the kill.
    assert any(np.array_equal(kernel, v) for v in versions)


def test_no_backend_names_the_extra(trained):
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    with pytest.raises(ks.KerasaveError, match=r"kerasave\[remote\]"):
        ks.save_model(trained, "gs://some-bucket/m.keras")


# -- CheckpointManager --------------------------------------------------------------

@pytest.mark.parametrize("blocking", [True, False])
def test_manager_on_s3_numbers_retains_and_restores_exactly(bucket, blocking):
    directory = f"{bucket}/run/ckpts"
    model, step = _net(), tf.Variable(0)
    manager = ks.CheckpointManager(directory, model=model, step=step, max_to_keep=2)
    assert manager.restore_or_initialize() is None
    saved = {}
    for n in range(1, 5):
        _train(model, 1, seed=n)
        step.assign(n)
        path = manager.save(metrics={"loss": float(n)}, metadata={"n": n}, blocking=blocking)
        assert path == f"{directory}/ckpt-{n}"
        manager.wait()
        saved[n] = values(all_vars(model))
    manager.close()
    assert manager.checkpoints == [f"{directory}/ckpt-3", f"{directory}/ckpt-4"]
    left = _objects(directory)
    assert {o for o in left if not o.startswith(".")} == {
        "ckpt-3.kerasave.json", "ckpt-4.kerasave.json"}
    assert {o.split("/")[0] for o in left if o.startswith(".")} == {
        ".ckpt-3.kerasave-v", ".ckpt-4.kerasave-v"}  # retention deleted 1 and 2 remotely

    fresh, fresh_step = _net(), tf.Variable(0)
    again = ks.CheckpointManager(directory, model=fresh, step=fresh_step)
    assert again.restore_or_initialize() == f"{directory}/ckpt-4"
    assert_bit_exact(saved[4], all_vars(fresh))
    assert int(fresh_step) == 4 and again.metadata() == {"n": 4}
    report = again.restore(f"{directory}/ckpt-3")
    assert report.path == f"{directory}/ckpt-3"
    assert_bit_exact(saved[3], all_vars(fresh))
    _train(model, 1, seed=9)  # training goes on from the restored state identically
    again.restore()
    _train(fresh, 1, seed=9)
    assert_bit_exact(values(all_vars(model)), all_vars(fresh))


def test_manager_on_s3_skips_a_damaged_newest(bucket):
    directory = f"{bucket}/ckpts"
    model = _net()
    _train(model)
    manager = ks.CheckpointManager(directory, model=model)
    manager.save()
    first = values(all_vars(model))
    _train(model, 1, seed=4)
    manager.save()
    manager.close()
    data = [u for u in _version_objects(f"{directory}/ckpt-2") if ".data-" in u][0]
    _flip_one_byte(data)
    fresh = _net()
    with pytest.warns(UserWarning, match="ckpt-2"):
        assert ks.CheckpointManager(directory, model=fresh).restore_or_initialize() \
            == f"{directory}/ckpt-1"
    assert_bit_exact(first, all_vars(fresh))


def _run(script, *args, env, expect_kill=False):
    result = subprocess.run([sys.executable, str(SCRIPTS / script), *map(str, args)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == (-9 if expect_kill else 0), result.stderr[-2000:]
    return result


def test_guide_loop_on_s3_killed_and_resumed_equals_uninterrupted(bucket, s3_server,
                                                                  tmp_path):
    env = dict(os.environ, **s3_server.env(), TF_CPP_MIN_LOG_LEVEL="3")
    _run("guide_loop.py", tmp_path / "full", tmp_path / "full.npz", 20, env=env)
    _run("guide_loop.py", f"{bucket}/ckpts", tmp_path / "first.npz", 20, 12, env=env,
         expect_kill=True)
    out = _run("guide_loop.py", f"{bucket}/ckpts", tmp_path / "resumed.npz", 20, env=env)
    assert f"{bucket}/ckpts/ckpt-2" in out.stdout  # step 10: the newest save
    full, resumed = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    for k in [k for k in full.files if k.startswith("w")] + ["iterations", "step"]:
        assert full[k].dtype == resumed[k].dtype and full[k].tobytes() == resumed[k].tobytes()


# -- the command line ---------------------------------------------------------------

def test_command_line_on_s3(bucket, s3_server, trained, tmp_path):
    url = f"{bucket}/m.keras"
    ks.save_model(trained, url)
    env = dict(os.environ, **s3_server.env(), TF_CPP_MIN_LOG_LEVEL="3")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "kerasave", *args], capture_output=True,
                              text=True, env=env, timeout=300)

    shown = cli("inspect", url)
    assert shown.returncode == 0, shown.stderr
    assert url in shown.stdout and "kerasave-stage" not in shown.stdout
    checked = cli("verify", url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    converted = cli("convert", url, f"{bucket}/w/ckpt", "--as", "weights")
    assert converted.returncode == 0, converted.stdout + converted.stderr
    model = ks.reference_model(seed=5)
    ks.load_weights(model, f"{bucket}/w/ckpt")
    assert_bit_exact(values(trained.variables), model.variables)
    down = cli("convert", url, str(tmp_path / "local.h5"))
    assert down.returncode == 0, down.stdout + down.stderr
    assert_bit_exact(values(trained.variables), ks.load_model(tmp_path / "local.h5").variables)


def test_fit_callback_on_s3_resumes_exactly(bucket):
    fit_callback_resumes(f"{bucket}/fit")


def test_transfers_report_progress_when_asked(bucket, monkeypatch):
    import contextlib

    seen = []

    @contextlib.contextmanager
    def bar(what, total):
        counted = []
        yield counted.append
        seen.append((what, total, sum(counted)))

    model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(1024)])  # 2 MB
    monkeypatch.setattr(remote, "progress", bar)
    ks.save_weights(model, f"{bucket}/big.weights.h5")
    ks.load_weights(model, f"{bucket}/big.weights.h5")
    assert [w for w, _, _ in seen] == ["upload", "download"]
    for _, total, counted in seen:
        assert total > 2 * 2**20 and counted == total


def test_a_load_racing_a_save_reads_one_whole_version(bucket, monkeypatch):
    """A save that replaces the version a load is downloading (and deletes its
    objects) makes the load start again on the new version, not report damage."""
    url = f"{bucket}/m.keras"
    old, new = ks.reference_model(seed=1), ks.reference_model(seed=2)
    ks.save_model(old, url)
    original, raced = remote.Remote._get, []

    def racing(self, objects, into, sizes):
        if not raced:
            raced.append(True)
            ks.save_model(new, url)  # while this load is about to download the old one
        return original(self, objects, into, sizes)

    monkeypatch.setattr(remote.Remote, "_get", racing)
    assert_bit_exact(values(all_vars(new)), all_vars(ks.load_model(url)))
    assert raced


def test_a_manifest_naming_another_folder_is_refused_and_deletes_nothing(bucket, trained):
    url = f"{bucket}/m.keras"
    ks.save_model(trained, url)
    fs = _fs(url)
    fs.pipe_file(f"{bucket}/data/keep.txt", b"someone else's")
    manifest = json.loads(fs.cat_file(f"{url}.kerasave.json"))
    manifest["remote"]["objects"] = "data"
    fs.pipe_file(f"{url}.kerasave.json", json.dumps(manifest).encode())
    with pytest.raises(ks.CorruptArtifactError, match="not a version folder"):
        ks.load_model(url)
    ks.save_model(trained, url)  # replaces the damaged manifest: deletes no sibling
    assert fs.cat_file(f"{bucket}/data/keep.txt") == b"someone else's"
    assert_bit_exact(values(all_vars(trained)), all_vars(ks.load_model(url)))


def test_a_url_must_name_an_object_inside_a_bucket(bucket, trained):
    with pytest.raises(ks.KerasaveError, match="names no object"):
        ks.save_model(trained, bucket)
