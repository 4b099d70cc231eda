"""Object storage: every format, the manager and the command line on ``s3://``,
against moto's S3 server started on a free localhost port (``tests/s3server.py``);
``memory://`` for what needs no network.

What users expect is the oracle: the object is at the URL, fetched with plain
fsspec and read by plain Keras and TensorFlow; a manager's directory is read by
``tf.train.latest_checkpoint``/``tf.train.load_checkpoint``.
"""

import json
import os
import secrets
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
import yaml

import kerasave as ks
from kerasave.formats import formats
from kerasave.store import objectstore
from kerasave.store.paths import safe_join

from .conftest import all_vars, assert_bit_exact, perturb, values
from .test_manager import _net, _train, fit_callback_resumes

SCRIPTS = Path(__file__).parent / "scripts"

# The classic formats of the format table, each at a name of its own at the bucket's top.
FORMATS = [pytest.param(f.kind, name, id=f"{f.kind}-{name}") for f in formats(lambda f: f.classic)
           for name in [f.named(f.kind[0]).rpartition("/")[2]]]
SAVE = {"weights": ks.save_weights, "model": ks.save_model, "config": ks.save_config}


def _fs(url):
    fs, _ = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return fs


def _objects(url):
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return sorted(p[len(path.rstrip("/")) + 1:] for p in fs.find(path))


def _download(url, into):
    """What plain fsspec fetches at ``url``: the object, a prefix's files, a folder."""
    fs = _fs(url)
    name = url.rsplit("/", 1)[1]
    if fs.isfile(url):
        fs.get_file(url, str(into / name))
    elif fs.isdir(url):
        fs.get(url + "/", str(into / name), recursive=True)
    else:
        for p in fs.glob(url + ".*"):
            if not p.endswith(".kerasave.json"):
                fs.get_file(p, str(into / p.rsplit("/", 1)[1]))
    return into / name


def _row(kind, name):
    """The format table's row for an artifact ``name`` of ``kind``: by its suffix, else
    the kind's format without one (a checkpoint prefix, a SavedModel folder)."""
    rows = formats(lambda f: f.classic and f.kind == kind)
    return max(rows, key=lambda f: (name.endswith(f.suffix), len(f.suffix)))


def _plain_reads(kind, name, local, model):
    """``local`` (downloaded with fsspec) read by Keras and TensorFlow alone equals ``model``."""
    want = values(all_vars(model))
    label = _row(kind, name).label
    if label == "checkpoint":  # kerasave's checkpoint roots: the model and its optimizer
        fresh = ks.reference_model(seed=7)
        tf.train.Checkpoint(model=fresh, optimizer=fresh.optimizer).read(
            str(local)).assert_existing_objects_matched()
        assert_bit_exact(want, all_vars(fresh))
    elif label == "h5 weights":
        fresh = ks.reference_model(seed=7)
        fresh.load_weights(str(local))
        assert_bit_exact(values(model.variables), fresh.variables)
    elif label in ("keras", "h5 model"):
        loaded = keras.saving.load_model(str(local))
        assert_bit_exact(values(model.variables), loaded.variables)
    elif kind == "config":
        text = local.read_text()
        config = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
        rebuilt = keras.models.model_from_json(json.dumps(config))
        assert [(v.shape, v.dtype) for v in rebuilt.weights] == [
            (v.shape, v.dtype) for v in model.weights]
    else:
        served = tf.saved_model.load(str(local))
        x = np.ones((2, 32), np.float32)
        assert np.array_equal(np.asarray(served.serve(x)), np.asarray(model(x)))


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
    elif _row(kind, url.rpartition("/")[2]).loads == "serving":
        served = ks.load_model(url)
        x = np.ones((2, 32), np.float32)
        assert np.array_equal(np.asarray(served.serve(x)), np.asarray(model(x)))
    else:
        loaded = ks.load_model(url)
        assert_bit_exact(want, all_vars(loaded))


@pytest.mark.parametrize("kind,name", FORMATS)
def test_the_object_is_at_the_url(bucket, trained, tmp_path, kind, name):
    url = f"{bucket}/dir/{name}"
    report = SAVE[kind](trained, url)
    assert report.ok and report.path == url
    assert not any("kerasave-stage" in c.detail for c in report.checks)
    # What other tools see: the artifact's own names, the manifest beside (inside a
    # SavedModel), nothing else.
    label = _row(kind, name).label
    names = {"checkpoint": [f"{name}.data-00000-of-00001", f"{name}.index",
                            f"{name}.kerasave.json"],
             "savedmodel": [f"{name}/fingerprint.pb", f"{name}/kerasave.json",
                            f"{name}/saved_model.pb",
                            f"{name}/variables/variables.data-00000-of-00001",
                            f"{name}/variables/variables.index"]}
    assert _objects(f"{bucket}/dir") == names.get(label, [name, f"{name}.kerasave.json"])
    _plain_reads(kind, name, _download(url, tmp_path), trained)
    want = values(all_vars(trained))
    if kind == "weights":  # a restore test changes the model first
        perturb(trained)
    _restored(kind, trained, url, want)
    # Saved again over itself: the same names, nothing left beside them.
    SAVE[kind](trained, url)
    assert _objects(f"{bucket}/dir") == names.get(label, [name, f"{name}.kerasave.json"])
    assert ks.verify(trained, url).ok
    inspected = ks.inspect(url)
    assert inspected.path == url and all(f.startswith(f"{bucket}/dir/") for f in inspected.files)


def test_the_manifest_records_size_crc32c_and_etag(bucket, trained):
    url = f"{bucket}/m.keras"
    ks.save_model(trained, url)
    fs = _fs(url)
    manifest = json.loads(fs.cat_file(f"{url}.kerasave.json"))
    (entry,) = manifest["files"].values()
    info = fs.info(url)
    assert entry["bytes"] == info["size"] and entry["etag"] == info["ETag"]
    import google_crc32c

    assert entry["crc32c"] == f"{google_crc32c.value(fs.cat_file(url)):08x}"
    assert manifest["format"] == "keras" and manifest["store"]["pending"] == []


def test_memory_urls_and_file_urls(tmp_path, trained):
    want = values(all_vars(trained))
    url = f"memory://kerasave-{secrets.token_hex(4)}/m.keras"
    ks.save_model(trained, url)
    assert_bit_exact(want, all_vars(ks.load_model(url)))
    assert _fs(url).isfile(url)
    ks.save_model(trained, f"file://{tmp_path}/m.keras")  # file:// is a local path
    assert (tmp_path / "m.keras").is_file() and (tmp_path / "m.keras.kerasave.json").is_file()


def _flip_one_byte(url):
    fs = _fs(url)
    data = bytearray(fs.cat_file(url))
    data[len(data) // 2] ^= 0x01
    fs.pipe_file(url, bytes(data))


@pytest.mark.parametrize("kind,name", [("weights", "ckpt"), ("model", "m.keras")])
def test_damage_is_detected_on_every_read(bucket, trained, kind, name):
    url = f"{bucket}/{name}"
    SAVE[kind](trained, url)
    before = values(all_vars(trained))
    biggest = max((f"{bucket}/{o}" for o in _objects(bucket) if "kerasave" not in o),
                  key=lambda u: _fs(u).size(u))
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
    _fs(url).rm_file(f"{url}.data-00000-of-00001")
    with pytest.raises(ks.CorruptArtifactError, match="missing") as info:
        ks.load_weights(trained, url)
    assert url in str(info.value)
    with pytest.raises(ks.ArtifactNotFoundError) as info:
        ks.load_model(f"{bucket}/nothing.keras")
    assert f"{bucket}/nothing.keras" in str(info.value)


def test_an_object_larger_than_its_manifest_says_is_refused_before_download(
        bucket, trained, monkeypatch):
    url = f"{bucket}/m.keras"
    ks.save_model(trained, url)
    _fs(url).pipe_file(url, _fs(url).cat_file(url) + b"\0" * 4096)
    fetched = []
    monkeypatch.setattr(objectstore.ObjectStore, "_download",
                        lambda self, objects, into, listing=None: fetched.append(objects))
    with pytest.raises(ks.CorruptArtifactError, match="bytes, the manifest says"):
        ks.load_model(url)
    assert fetched == []


def test_a_damaged_manifest_is_refused(bucket, trained):
    url = f"{bucket}/m.keras"
    ks.save_model(trained, url)
    fs = _fs(url)
    fs.pipe_file(f"{url}.kerasave.json", b'{"files": {".": {"bytes": "many"}}}')
    with pytest.raises(ks.CorruptArtifactError, match="not a kerasave manifest"):
        ks.load_model(url)
    ks.save_model(trained, url)  # a save replaces a damaged manifest
    assert_bit_exact(values(all_vars(trained)), all_vars(ks.load_model(url)))


def test_a_plain_artifact_uploaded_by_other_tools_loads_and_is_replaced_whole(
        bucket, trained, tmp_path):
    trained.save(tmp_path / "plain.keras")
    fs = _fs(bucket)
    fs.put_file(str(tmp_path / "plain.keras"), f"{bucket}/plain.keras")
    loaded = ks.load_model(f"{bucket}/plain.keras")
    assert_bit_exact(values(all_vars(trained)), all_vars(loaded))
    assert "no manifest" in ks.verify(trained, f"{bucket}/plain.keras").checks[0].detail
    other = ks.reference_model(seed=3)
    ks.save_model(other, f"{bucket}/plain.keras")
    assert _objects(bucket) == ["plain.keras", "plain.keras.kerasave.json"]
    assert_bit_exact(values(all_vars(other)), all_vars(ks.load_model(f"{bucket}/plain.keras")))


class _Killed(BaseException):
    """A process ending at an object-store step: nothing after it reaches the store
    (the publish path has no cleanup of the store on the way out)."""


@pytest.mark.parametrize("kind,name", [("model", "m.keras"), ("weights", "ckpt"),
                                       ("model", "served")])
def test_a_save_killed_at_each_step_leaves_the_old_or_the_new_version(bucket, monkeypatch,
                                                                       kind, name):
    """Killed at every object-store step of a save that replaces an artifact in place
    (for a checkpoint prefix and a SavedModel: several objects overwritten one by one),
    a read gets the old version up to the last upload, the new one after it, never a
    mix; and the next save cleans up after the killed one."""
    url = f"{bucket}/{name}"
    old, new = ks.reference_model(seed=1), ks.reference_model(seed=2)
    old_values, new_values = values(all_vars(old)), values(all_vars(new))
    SAVE[kind](old, url)
    steps = []
    monkeypatch.setattr(objectstore, "_hook", lambda k, u: steps.append((k, u)))
    SAVE[kind](new, url)
    complete = [k for k, _ in steps]
    SAVE[kind](old, url)
    monkeypatch.setattr(objectstore, "_hook", None)
    last_put = max(i for i, k in enumerate(complete) if k == "put")
    assert complete.index("pending") < complete.index("put") < complete.index("commit")
    if name != "m.keras":  # several objects replaced in place: a copy first
        assert complete[0] == "copy"
    for at in range(len(complete)):
        seen = []

        def hook(k, u, at=at, seen=seen):
            if len(seen) == at:
                raise _Killed(k)
            seen.append(k)

        monkeypatch.setattr(objectstore, "_hook", hook)
        with pytest.raises(_Killed):
            SAVE[kind](new, url)
        monkeypatch.setattr(objectstore, "_hook", None)
        model = ks.reference_model(seed=3)
        want = old_values if at <= last_put else new_values
        if kind == "weights":
            ks.load_weights(model, url)
            assert_bit_exact(want, all_vars(model))
        elif name == "served":
            x = np.ones((2, 32), np.float32)
            source = old if at <= last_put else new
            assert np.array_equal(np.asarray(ks.load_model(url).serve(x)),
                                  np.asarray(source(x)))
        else:
            assert_bit_exact(want, all_vars(ks.load_model(url)))
        SAVE[kind](old, url)  # back to the old version for the next crash point
    # Every crash left copies or uploads behind; the saves since removed what no version
    # needs once it was older than the grace period, and the reads never saw it.
    monkeypatch.setattr(objectstore, "GRACE", 0.0)
    SAVE[kind](old, url)
    parent = url.rsplit("/", 1)[0]
    assert not [o for o in _objects(parent) if o.startswith(".")]
    manifest = json.loads(_fs(url).cat_file(
        f"{url}/kerasave.json" if name == "served" else f"{url}.kerasave.json"))
    assert manifest["store"] == {"layout": 2, "pending": [], "previous": []}


def test_a_save_killed_mid_upload_by_sigkill(bucket, s3_server, tmp_path):
    """A real SIGKILL while a large object is being uploaded."""
    url = f"{bucket}/big.keras"
    env = dict(os.environ, **s3_server.env(), TF_CPP_MIN_LOG_LEVEL="3")
    code = (
        "import sys, keras, numpy as np, kerasave as ks\n"
        "from kerasave.store import objectstore\n"
        "seed = int(sys.argv[2])\n"
        "m = keras.Sequential([keras.Input((1024,)), keras.layers.Dense(8192)])\n"
        "m.layers[0].kernel.assign(np.random.RandomState(seed).standard_normal(\n"
        "    (1024, 8192)).astype('float32'))\n"
        "def hook(kind, url):\n"
        "    if kind == 'put' and sys.argv[3] == 'stall':\n"
        "        print('uploading', flush=True)\n"
        "objectstore._hook = hook\n"
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


# -- racing writers --------------------------------------------------------------------

def _racing(monkeypatch, at, other):
    """Run ``other()`` (another writer's whole save) when this save reaches its step
    ``at`` (a kind), once."""
    done = []

    def hook(kind, url):
        if kind == at and not done:
            done.append(True)
            monkeypatch.setattr(objectstore, "_hook", None)
            other()
            monkeypatch.setattr(objectstore, "_hook", hook)

    monkeypatch.setattr(objectstore, "_hook", hook)
    return done


@pytest.mark.parametrize("name", ["m.keras", "ckpt"])
@pytest.mark.parametrize("at", ["put", "commit"])
def test_racing_writers_one_commits_the_other_raises(bucket, monkeypatch, name, at):
    """A save that another save overtakes while it uploads (S3's conditional writes:
    its PUTs or its commit find the objects changed) raises and commits nothing; what
    a reader gets is the other save's version, whole."""
    kind = "model" if name == "m.keras" else "weights"
    url = f"{bucket}/{name}"
    first, mine, theirs = (ks.reference_model(seed=s) for s in (1, 2, 3))
    SAVE[kind](first, url)
    raced = _racing(monkeypatch, at, lambda: SAVE[kind](theirs, url))
    with pytest.raises(ks.KerasaveError, match="another save") as info:
        SAVE[kind](mine, url)
    assert raced and url in str(info.value)
    monkeypatch.setattr(objectstore, "_hook", None)
    model = ks.reference_model(seed=4)
    if kind == "weights":
        ks.load_weights(model, url)
    else:
        model = ks.load_model(url)
    assert_bit_exact(values(all_vars(theirs)), all_vars(model))
    SAVE[kind](mine, url)  # the next save replaces it as usual
    assert ks.verify(mine, url).ok


def test_a_writer_that_loses_the_registration_reads_again_and_commits(bucket, monkeypatch):
    """Two saves registering at once: the manifest's conditional PUT makes the later one
    read it again; both commit in turn, the last one stands."""
    url = f"{bucket}/m.keras"
    first, mine, theirs = (ks.reference_model(seed=s) for s in (1, 2, 3))
    ks.save_model(first, url)
    raced = _racing(monkeypatch, "pending", lambda: ks.save_model(theirs, url))
    ks.save_model(mine, url)
    assert raced
    monkeypatch.setattr(objectstore, "_hook", None)
    assert_bit_exact(values(all_vars(mine)), all_vars(ks.load_model(url)))


def test_a_load_racing_a_save_reads_one_whole_version(bucket, monkeypatch):
    """A save that replaces the objects a load is about to download makes the load read
    the new version (checked against the manifest read again), not report damage."""
    url = f"{bucket}/m.keras"
    old, new = ks.reference_model(seed=1), ks.reference_model(seed=2)
    ks.save_model(old, url)
    original, raced = objectstore.ObjectStore._download, []

    def racing(self, objects, into, listing=None):
        if not raced:
            raced.append(True)
            ks.save_model(new, url)  # while this load is about to download the old one
        return original(self, objects, into, listing)

    monkeypatch.setattr(objectstore.ObjectStore, "_download", racing)
    assert_bit_exact(values(all_vars(new)), all_vars(ks.load_model(url)))
    assert raced


def test_no_backend_names_the_extra(trained):
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    with pytest.raises(ks.KerasaveError, match=r"kerasave\[remote\]"):
        ks.save_model(trained, "gs://some-bucket/m.keras")


# -- staging copies ---------------------------------------------------------------------

def test_safe_join_refuses_every_escape(tmp_path):
    assert safe_join(tmp_path, "a/b.index") == tmp_path / "a" / "b.index"
    for name in ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a\\..\\x", "", "C:x",
                 "a/\0"]:
        with pytest.raises(ks.UnsafeArtifactError):
            safe_join(tmp_path, name)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(ks.UnsafeArtifactError):
        safe_join(tmp_path, "link/x")


def test_a_key_holding_dotdot_writes_nothing_outside_the_staging_folder(
        bucket, trained, tmp_path, monkeypatch):
    """A folder on the object store whose keys climb out (``served/../../x``: S3 keys
    are arbitrary strings), and a manifest naming such files: refused, nothing written
    outside the staging folder."""
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setenv("KERASAVE_STAGING", str(staging))
    ks.save_model(trained, f"{bucket}/served")
    fs = _fs(bucket)
    _, prefix = fsspec.core.url_to_fs(bucket)
    fs.call_s3("put_object", Bucket=prefix, Key="plain/saved_model.pb", Body=b"x")
    fs.call_s3("put_object", Bucket=prefix, Key="plain/../../../escaped.txt", Body=b"gotcha")
    with pytest.raises(ks.UnsafeArtifactError, match="only inside its own folder"):
        ks.inspect(f"{bucket}/plain")
    manifest = json.loads(fs.cat_file(f"{bucket}/served/kerasave.json"))
    manifest["files"]["../../../escaped.txt"] = manifest["files"].pop("saved_model.pb")
    fs.pipe_file(f"{bucket}/served/kerasave.json", json.dumps(manifest).encode())
    fs.call_s3("put_object", Bucket=prefix, Key="served/../../../escaped.txt",
               Body=fs.cat_file(f"{bucket}/served/saved_model.pb"))
    with pytest.raises(ks.KerasaveError):
        ks.load_model(f"{bucket}/served")
    assert not list(tmp_path.rglob("escaped.txt"))
    assert list(staging.iterdir()) == []  # and every staging copy is gone


def test_a_manifest_naming_another_folder_is_refused_and_deletes_nothing(bucket, trained):
    url = f"{bucket}/ckpt"
    ks.save_weights(trained, url)
    fs = _fs(url)
    fs.pipe_file(f"{bucket}/data/keep.txt", b"someone else's")
    manifest = json.loads(fs.cat_file(f"{url}.kerasave.json"))
    own = {k: v for k, v in manifest.items() if k != "store"}
    manifest["store"]["previous"] = [{"at": "data", "manifest": own, "writer": None}]
    fs.pipe_file(f"{url}.kerasave.json", json.dumps(manifest).encode())
    with pytest.raises(ks.CorruptArtifactError, match="not a folder of this artifact"):
        ks.load_weights(trained, url)
    ks.save_weights(trained, url)  # replaces the damaged manifest: deletes no sibling
    assert fs.cat_file(f"{bucket}/data/keep.txt") == b"someone else's"
    ks.load_weights(trained, url)


def test_a_url_must_name_an_object_inside_a_bucket(bucket, trained):
    with pytest.raises(ks.KerasaveError, match="names no object"):
        ks.save_model(trained, bucket)


# -- the layout kerasave wrote before ---------------------------------------------------

def _legacy_save(save, model, url, tmp_path):
    """What kerasave 0.x wrote at ``url``: the version's files under
    ``.<name>.kerasave-v/<token>/``, the manifest beside, naming it."""
    name = url.rsplit("/", 1)[1]
    stage = tmp_path / f"legacy-{secrets.token_hex(3)}"
    stage.mkdir()
    save(model, stage / name)
    inside = (stage / name).is_dir()
    local_manifest = (stage / name / "kerasave.json" if inside
                      else stage / f"{name}.kerasave.json")
    manifest = json.loads(local_manifest.read_text())
    token = f"{int(time.time()) - 7200:010d}-{secrets.token_hex(6)}"
    folder = f".{name}.kerasave-v/{token}"
    paths = {}
    for file in manifest["files"]:
        paths[file] = f"{name}/{file}" if inside else name + ("" if file == "." else file)
    fs = _fs(url)
    parent = url.rsplit("/", 1)[0]
    for rel in paths.values():
        fs.put_file(str(stage / rel), f"{parent}/{folder}/{rel}")
    manifest["remote"] = {"objects": folder, "paths": paths,
                          "manifest": str(local_manifest.relative_to(stage))}
    fs.pipe_file(f"{url}.kerasave.json", json.dumps(manifest).encode())


@pytest.mark.parametrize("kind,name", [("model", "m.keras"), ("weights", "ckpt"),
                                       ("model", "served")])
def test_the_versioned_layout_still_loads_and_a_save_replaces_it(bucket, tmp_path, kind, name):
    url = f"{bucket}/{name}"
    old, new = ks.reference_model(seed=1), ks.reference_model(seed=2)
    _legacy_save(SAVE[kind], old, url, tmp_path)
    assert any(o.startswith(f".{name}.kerasave-v/") for o in _objects(bucket))
    def into(source):  # (weights load into a third model; a SavedModel is compared)
        return ks.reference_model(seed=3) if kind == "weights" else source

    _restored(kind, into(old), url, values(all_vars(old)))
    SAVE[kind](new, url)
    assert not any(o.startswith(".") for o in _objects(bucket))
    _restored(kind, into(new), url, values(all_vars(new)))
    _plain_reads(kind, name, _download(url, tmp_path), new)


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "kerasave", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_convert_rewrites_the_versioned_layout_in_place(bucket, s3_server, tmp_path):
    env = dict(os.environ, **s3_server.env(), TF_CPP_MIN_LOG_LEVEL="3")
    model = ks.reference_model(seed=1)
    _legacy_save(ks.save_model, model, f"{bucket}/m.keras", tmp_path)
    run = f"{bucket}/run"
    for n in (1, 2):
        _legacy_save(ks.save_weights, ks.reference_model(seed=n), f"{run}/ckpt-{n}", tmp_path)
    done = _cli(env, "convert", f"{bucket}/m.keras", f"{bucket}/m.keras")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rewritten" in done.stdout
    assert _objects(bucket) == ["m.keras", "m.keras.kerasave.json"] + [
        o for o in _objects(bucket) if o.startswith("run/")]
    assert_bit_exact(values(all_vars(model)), all_vars(ks.load_model(f"{bucket}/m.keras")))
    done = _cli(env, "convert", run, run)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _objects(run) == ["checkpoint"] + [f"ckpt-{n}.{ext}" for n in (1, 2) for ext in (
        "data-00000-of-00001", "index", "kerasave.json")]
    fresh = ks.reference_model(seed=5)
    assert ks.CheckpointManager(run, model=fresh).restore_or_initialize() == f"{run}/ckpt-2"
    assert_bit_exact(values(all_vars(ks.reference_model(seed=2))), all_vars(fresh))
    again = _cli(env, "convert", f"{bucket}/m.keras", f"{bucket}/m.keras")
    assert again.returncode != 0 and "same path" in again.stdout + again.stderr


# -- CheckpointManager --------------------------------------------------------------

def _tensorflow_reads(directory, tmp_path, want_newest):
    """``directory`` downloaded with plain fsspec: TensorFlow's own readers find the
    newest checkpoint and read it."""
    local = tmp_path / f"download-{secrets.token_hex(3)}"
    _fs(directory).get(directory + "/", str(local), recursive=True)
    newest = tf.train.latest_checkpoint(str(local))
    assert newest == str(local / want_newest)
    reader = tf.train.load_checkpoint(str(local))
    return reader


@pytest.mark.parametrize("blocking", [True, False])
def test_manager_on_s3_numbers_retains_and_restores_exactly(bucket, tmp_path, blocking):
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
    # TensorFlow's layout: the same names as on disk, retention deleted 1 and 2 remotely.
    assert _objects(directory) == ["checkpoint"] + [
        f"ckpt-{n}.{ext}" for n in (3, 4) for ext in
        ("data-00000-of-00001", "index", "kerasave.json")]
    reader = _tensorflow_reads(directory, tmp_path, "ckpt-4")
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 4
    tensors = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()]
    for value in saved[4]:  # every variable of the model and its optimizer, bit for bit
        assert any(np.asarray(t).dtype == value.dtype and np.asarray(t).tobytes() ==
                   value.tobytes() for t in tensors)

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


def test_manager_state_file_on_disk_is_tensorflows(tmp_path):
    """On disk too: TensorFlow's ``checkpoint`` file, in its text format, names what the
    manager keeps, and TensorFlow's own manager reads the directory."""
    model = _net()
    _train(model)
    manager = ks.CheckpointManager(tmp_path, model=model, max_to_keep=2)
    for n in range(3):
        _train(model, 1, seed=n)
        manager.save()
    manager.close()
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert state.model_checkpoint_path == str(tmp_path / "ckpt-3")
    assert list(state.all_model_checkpoint_paths) == [str(tmp_path / f"ckpt-{n}")
                                                      for n in (2, 3)]
    assert len(state.all_model_checkpoint_timestamps) == 2
    theirs = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(tmp_path),
                                        max_to_keep=2)
    assert theirs.latest_checkpoint == str(tmp_path / "ckpt-3")
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-3")


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
    _flip_one_byte(f"{directory}/ckpt-2.data-00000-of-00001")
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
    _tensorflow_reads(f"{bucket}/ckpts", tmp_path, "ckpt-2")
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
    shown = _cli(env, "inspect", url)
    assert shown.returncode == 0, shown.stderr
    assert url in shown.stdout and "kerasave-stage" not in shown.stdout
    checked = _cli(env, "verify", url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    converted = _cli(env, "convert", url, f"{bucket}/w/ckpt", "--as", "weights")
    assert converted.returncode == 0, converted.stdout + converted.stderr
    model = ks.reference_model(seed=5)
    ks.load_weights(model, f"{bucket}/w/ckpt")
    assert_bit_exact(values(trained.variables), model.variables)
    down = _cli(env, "convert", url, str(tmp_path / "local.h5"))
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
    monkeypatch.setattr(objectstore, "progress", bar)
    ks.save_weights(model, f"{bucket}/big.weights.h5")
    ks.load_weights(model, f"{bucket}/big.weights.h5")
    assert [w for w, _, _ in seen] == ["upload", "download"]
    for _, total, counted in seen:
        assert total > 2 * 2**20 and counted == total


# -- sharded weights: a map and shards that are not named after it -------------------------

SHARDS = {5: 9000 / 1024**3, 2: 20000 / 1024**3}  # shards of the reference model at that size


def _save_sharded(model, url, shards):
    return ks.save_weights(model, url, max_shard_size=SHARDS[shards])


def _sharded_names(shards, name="m"):
    return sorted([f"{name}.weights.json", f"{name}.weights.json.kerasave.json"]
                  + [f"{name}_{i:05d}.weights.h5" for i in range(shards)])


def _plain_keras_reads_sharded(url, into, model):
    """The map and its shards fetched with plain fsspec, read by Keras alone."""
    fs = _fs(url)
    parent, name = url.rsplit("/", 1)
    stem = name[: -len(".weights.json")]
    into.mkdir()
    fs.get_file(url, str(into / name))
    for shard in fs.glob(f"{parent}/{stem}_*.weights.h5"):
        fs.get_file(shard, str(into / shard.rsplit("/", 1)[1]))
    fresh = ks.reference_model(seed=7)
    fresh.load_weights(str(into / name))
    assert_bit_exact(values(all_vars(model)), all_vars(fresh))


def test_sharded_weights_are_at_the_url_beside_their_map(bucket, tmp_path):
    """Each shard is one plain object at its Keras name beside the map; the manifest
    records every shard's size, CRC32C and ETag; plain fsspec and Keras read them; a
    save with fewer or more shards leaves exactly its own objects."""
    import google_crc32c

    url = f"{bucket}/dir/m.weights.json"
    model = ks.reference_model(seed=1)
    report = _save_sharded(model, url, 5)
    assert report.ok and report.path == url
    assert _objects(f"{bucket}/dir") == _sharded_names(5)
    fs = _fs(url)
    manifest = json.loads(fs.cat_file(f"{url}.kerasave.json"))
    assert manifest["format"] == "h5-sharded" and len(manifest["files"]) == 6
    for name, entry in manifest["files"].items():
        key = url if name == "." else f"{bucket}/dir/m{name}"
        assert entry.get("object") == (None if name == "." else f"m{name}")
        info = fs.info(key)
        assert entry["bytes"] == info["size"] and entry["etag"] == info["ETag"]
        assert entry["crc32c"] == f"{google_crc32c.value(fs.cat_file(key)):08x}"
    _plain_keras_reads_sharded(url, tmp_path / "five", model)
    into = ks.reference_model(seed=3)
    ks.load_weights(into, url)
    assert_bit_exact(values(all_vars(model)), all_vars(into))
    assert ks.verify(model, url).ok
    inspected = ks.inspect(url)
    assert inspected.format == "h5-sharded"
    assert sorted(f.rsplit("/", 1)[1] for f in inspected.files) == _sharded_names(5)
    for shards, seed in ((2, 2), (5, 4)):  # fewer shards, then more again
        other = ks.reference_model(seed=seed)
        _save_sharded(other, url, shards)
        assert _objects(f"{bucket}/dir") == _sharded_names(shards)
        perturb(into)
        ks.load_weights(into, url)
        assert_bit_exact(values(all_vars(other)), all_vars(into))
        _plain_keras_reads_sharded(url, tmp_path / f"{shards}-{seed}", other)
    from kerasave import store
    from kerasave.formats.h5sharded import ShardedWeightsHandler

    fs.pipe_file(f"{bucket}/dir/m_00000.weights.h5.bak", b"a sibling")
    with store.at(url) as at:  # (what a manager's retention calls)
        at.delete(ShardedWeightsHandler())
    assert _objects(f"{bucket}/dir") == ["m_00000.weights.h5.bak"]


def test_a_plain_sharded_artifact_uploaded_by_other_tools_loads_and_is_replaced_whole(
        bucket, tmp_path):
    model = ks.reference_model(seed=1)
    model.save_weights(str(tmp_path / "p.weights.json"), max_shard_size=SHARDS[5])
    fs = _fs(bucket)
    for file in tmp_path.iterdir():
        fs.put_file(str(file), f"{bucket}/{file.name}")
    fs.pipe_file(f"{bucket}/p_extra.weights.h5", b"not a shard of p")  # (nor named so)
    url = f"{bucket}/p.weights.json"
    into = ks.reference_model(seed=3)
    ks.load_weights(into, url)
    assert_bit_exact(values(all_vars(model)), all_vars(into))
    assert "no manifest" in ks.verify(model, url).checks[0].detail
    from kerasave.cli._artifacts import local_copy  # (the command line's copy of a URL)

    with local_copy(url) as local:
        assert sorted(p.name for p in Path(local).parent.iterdir()) == [
            n for n in _sharded_names(5, "p") if not n.endswith(".kerasave.json")]
    other = ks.reference_model(seed=2)
    _save_sharded(other, url, 2)
    assert _objects(bucket) == sorted(_sharded_names(2, "p") + ["p_extra.weights.h5"])
    perturb(into)
    ks.load_weights(into, url)
    assert_bit_exact(values(all_vars(other)), all_vars(into))


@pytest.mark.parametrize("old_shards,new_shards", [(5, 2), (2, 5)])
def test_a_sharded_save_killed_at_each_step_leaves_the_old_or_the_new_version(
        bucket, monkeypatch, old_shards, new_shards):
    """As for the other formats: killed at every object-store step of a save replacing
    sharded weights with fewer or more shards, a read gets the old version up to the
    last upload (the map), the new one after it; old shards the new map does not name
    go only after the commit, and every leftover at last."""
    url = f"{bucket}/m.weights.json"
    old, new = ks.reference_model(seed=1), ks.reference_model(seed=2)
    old_values, new_values = values(all_vars(old)), values(all_vars(new))
    _save_sharded(old, url, old_shards)
    steps = []
    monkeypatch.setattr(objectstore, "_hook", lambda k, u: steps.append((k, u)))
    _save_sharded(new, url, new_shards)
    monkeypatch.setattr(objectstore, "_hook", None)
    kinds = [k for k, _ in steps]
    last_put = max(i for i, k in enumerate(kinds) if k == "put")
    assert kinds[0] == "copy" and kinds.count("copy") == old_shards + 1
    assert kinds.count("put") == new_shards + 1 and steps[last_put][1] == url  # the map last
    assert kinds.index("pending") < kinds.index("put") and last_put < kinds.index("commit")
    assert "delete" not in kinds[:kinds.index("commit")]
    _save_sharded(old, url, old_shards)
    for at in range(len(steps)):
        seen = []

        def hook(k, u, at=at, seen=seen):
            if len(seen) == at:
                raise _Killed(k)
            seen.append(k)

        monkeypatch.setattr(objectstore, "_hook", hook)
        with pytest.raises(_Killed):
            _save_sharded(new, url, new_shards)
        monkeypatch.setattr(objectstore, "_hook", None)
        model = ks.reference_model(seed=3)
        ks.load_weights(model, url)
        assert_bit_exact(old_values if at <= last_put else new_values, all_vars(model))
        _save_sharded(old, url, old_shards)  # back to the old version for the next one
    monkeypatch.setattr(objectstore, "GRACE", 0.0)
    _save_sharded(old, url, old_shards)
    assert _objects(bucket) == _sharded_names(old_shards)
    manifest = json.loads(_fs(url).cat_file(f"{url}.kerasave.json"))
    assert manifest["store"] == {"layout": 2, "pending": [], "previous": []}


@pytest.mark.parametrize("at", ["put", "commit"])
def test_racing_sharded_writers_one_commits_the_other_raises(bucket, monkeypatch, at):
    url = f"{bucket}/m.weights.json"
    first, mine, theirs = (ks.reference_model(seed=s) for s in (1, 2, 3))
    _save_sharded(first, url, 2)
    raced = _racing(monkeypatch, at, lambda: _save_sharded(theirs, url, 2))
    with pytest.raises(ks.KerasaveError, match="another save") as info:
        _save_sharded(mine, url, 5)
    assert raced and url in str(info.value)
    monkeypatch.setattr(objectstore, "_hook", None)
    model = ks.reference_model(seed=4)
    ks.load_weights(model, url)
    assert_bit_exact(values(all_vars(theirs)), all_vars(model))
    _save_sharded(mine, url, 5)  # the next save replaces it as usual
    assert ks.verify(mine, url).ok
    monkeypatch.setattr(objectstore, "GRACE", 0.0)
    _save_sharded(mine, url, 2)
    assert _objects(bucket) == _sharded_names(2)


def test_a_sharded_manifest_naming_other_objects_is_refused_and_deletes_nothing(bucket):
    """A manifest whose ``object`` names leave the folder are refused; one naming a
    sibling reads it as nothing but the shard it claims (the CRC32C says no), and the
    next save removes only the artifact's own objects."""
    url = f"{bucket}/m.weights.json"
    model = ks.reference_model(seed=1)
    _save_sharded(model, url, 2)
    fs = _fs(url)
    fs.pipe_file(f"{bucket}/m_keep.txt", b"someone else's")
    fs.pipe_file(f"{bucket}/sub/m_00001.weights.h5", b"someone else's")
    good = fs.cat_file(f"{url}.kerasave.json")
    for name, expect in [("../m_00001.weights.h5", "not a plain relative path"),
                         ("sub/m_00001.weights.h5", "not an object beside"),
                         ("m.weights.json.kerasave.json", "not an object beside")]:
        manifest = json.loads(good)
        manifest["files"]["_00001.weights.h5"]["object"] = name
        fs.pipe_file(f"{url}.kerasave.json", json.dumps(manifest).encode())
        with pytest.raises(ks.CorruptArtifactError, match=expect):
            ks.load_weights(model, url)
    manifest = json.loads(good)
    manifest["files"]["_00001.weights.h5"]["object"] = "m_keep.txt"
    fs.pipe_file(f"{url}.kerasave.json", json.dumps(manifest).encode())
    with pytest.raises(ks.CorruptArtifactError):
        ks.load_weights(model, url)
    _save_sharded(model, url, 5)
    assert fs.cat_file(f"{bucket}/m_keep.txt") == b"someone else's"
    assert fs.cat_file(f"{bucket}/sub/m_00001.weights.h5") == b"someone else's"
    _save_sharded(model, url, 2)
    assert _objects(bucket) == sorted(_sharded_names(2) + ["m_keep.txt",
                                                           "sub/m_00001.weights.h5"])
