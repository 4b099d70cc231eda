"""Manifests: every artifact's files carry CRC32Cs; damage is caught before a model
sees it; an interrupted save leaves a loadable version."""

import json
import os
import threading
from pathlib import Path

import pytest

import kerasave as ks
from kerasave.store import local as _atomic

from .conftest import all_vars, assert_bit_exact, values

CASES = [("save_weights", "w/ckpt", "w/ckpt.kerasave.json", "w/ckpt.data-00000-of-00001"),
         ("save_weights", "w.weights.h5", "w.weights.h5.kerasave.json", "w.weights.h5"),
         ("save_config", "c.json", "c.json.kerasave.json", "c.json"),
         ("save_config", "c.yaml", "c.yaml.kerasave.json", "c.yaml"),
         ("save_model", "m.keras", "m.keras.kerasave.json", "m.keras"),
         ("save_model", "m.h5", "m.h5.kerasave.json", "m.h5"),
         ("save_model", "sm", "sm/kerasave.json", "sm/saved_model.pb")]
IDS = [c[1] for c in CASES]


@pytest.mark.parametrize("call,rel,manifest,target", CASES, ids=IDS)
def test_manifest_records_every_file(trained, tmp_path, call, rel, manifest, target):
    getattr(ks, call)(trained, tmp_path / rel)
    data = json.loads((tmp_path / manifest).read_text())
    assert data["checksum"] == "crc32c" and data["versions"]["keras"]
    assert data["files"] and all(len(f["crc32c"]) == 8 for f in data["files"].values())
    files = ks.inspect(tmp_path / rel).files
    assert str(tmp_path / manifest) in files or str(tmp_path / rel) in files


@pytest.mark.parametrize("call,rel,manifest,target", CASES, ids=IDS)
def test_one_changed_byte_is_caught_everywhere(trained, tmp_path, call, rel, manifest, target):
    getattr(ks, call)(trained, tmp_path / rel)
    raw = bytearray((tmp_path / target).read_bytes())
    raw[len(raw) // 2] = (raw[len(raw) // 2] + 1) % 256
    (tmp_path / target).write_bytes(bytes(raw))
    model = ks.reference_model(seed=3)
    before = values(all_vars(model))
    readers = [lambda: ks.inspect(tmp_path / rel), lambda: ks.verify(trained, tmp_path / rel)]
    readers.append({"save_weights": lambda: ks.load_weights(model, tmp_path / rel),
                    "save_config": lambda: ks.load_config(tmp_path / rel),
                    "save_model": lambda: ks.load_model(tmp_path / rel)}[call])
    for read in readers:
        with pytest.raises(ks.CorruptArtifactError, match="manifest"):
            read()
    assert_bit_exact(before, all_vars(model))


def test_plain_keras_artifacts_have_no_manifest_and_still_load(trained, tmp_path):
    trained.save(tmp_path / "plain.keras")
    assert ks.load_model(tmp_path / "plain.keras")
    report = ks.verify(trained, tmp_path / "plain.keras")
    assert report.ok and "no manifest" in report.checks[0].detail


@pytest.mark.parametrize("call,rel", [(c[0], c[1]) for c in CASES if c[0] != "save_config"],
                         ids=[c[1] for c in CASES if c[0] != "save_config"])
@pytest.mark.parametrize("stop_after", [0, 1, 2])
def test_interrupted_commit_leaves_old_or_new(trained, tmp_path, monkeypatch, call, rel,
                                              stop_after):
    """A save killed between its renames: the path still loads, as one version."""
    old_model = ks.reference_model(seed=7)
    getattr(ks, call)(old_model, tmp_path / rel)
    calls = {"n": 0}
    real_replace = os.replace

    def dying_replace(src, dst):
        if calls["n"] == stop_after:
            raise KeyboardInterrupt("killed mid-commit")
        calls["n"] += 1
        return real_replace(src, dst)

    monkeypatch.setattr(_atomic.os, "replace", dying_replace)
    try:
        getattr(ks, call)(trained, tmp_path / rel)
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    monkeypatch.setattr(_atomic.os, "replace", real_replace)
    report_old = ks.verify(old_model, tmp_path / rel)
    report_new = ks.verify(trained, tmp_path / rel)
    assert report_old.ok != report_new.ok, (str(report_old), str(report_new))
    assert report_new.ok or interrupted
    # The next save cleans up and lands normally.
    assert getattr(ks, call)(trained, tmp_path / rel).ok
    assert ks.verify(trained, tmp_path / rel).ok
    leftovers = [p.name for p in tmp_path.rglob("*") if "kerasave-" in p.name
                 and not p.name.endswith(".kerasave.json")]
    assert leftovers == []


def test_a_large_file_checksummed_in_parts_gives_the_same_crc32c(tmp_path, monkeypatch):
    import google_crc32c

    from kerasave.store import crc as _manifest

    data = os.urandom(3 * 2**20 + 12345)
    path = tmp_path / "blob"
    path.write_bytes(data)
    monkeypatch.setattr(_manifest, "_SPLIT", 2**20)  # split a 3 MB file, not only 64 MB ones
    monkeypatch.setattr(_manifest, "_MAPPED_CHUNK", 2**20 + 3)  # windows off the page grid
    expected = f"{google_crc32c.value(data):08x}"
    assert _manifest._EXTEND is not None  # the fast path is there to be tested
    for extend in (_manifest._EXTEND, None):  # through ctypes, and the package's own API
        monkeypatch.setattr(_manifest, "_EXTEND", extend)
        for mapped in (False, True):
            assert _manifest.crc32c(path, mapped=mapped) == expected
            for threads in (2, 3, 4):
                assert _manifest.crc32c(path, threads=threads, mapped=mapped) == expected
    (tmp_path / "empty").write_bytes(b"")
    assert _manifest.crc32c(tmp_path / "empty", mapped=True) == "00000000"
    for cut in (0, 1, 4096, len(data) - 1, len(data)):
        a, b = data[:cut], data[cut:]
        combined = _manifest.crc32c_combine(google_crc32c.value(a), google_crc32c.value(b),
                                            len(b))
        assert combined == google_crc32c.value(data)


def _deleted_fds(under):
    """Descriptors of this process that point at removed files under ``under``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(under)) and target.endswith(" (deleted)"):
            found.append(target)
    return found


def test_removed_files_go_at_once_and_their_space_is_freed_in_the_background(
        tmp_path, monkeypatch):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\1" * (_atomic._FREE_LATER + 1))
    small = tmp_path / "small.bin"
    small.write_bytes(b"\1" * 10)
    tree = tmp_path / "tree"
    (tree / "variables").mkdir(parents=True)
    (tree / "variables" / "data").write_bytes(b"\2" * _atomic._FREE_LATER)
    gate = threading.Event()

    def held_close(fd):
        gate.wait(10)  # the thread frees nothing until the names are checked
        os.close(fd)

    monkeypatch.setattr(_atomic, "_close", held_close)
    for path in (big, small, tree):
        _atomic.remove(path)
    assert sorted(os.listdir(tmp_path)) == []  # every name is gone at once
    held = _deleted_fds(tmp_path)
    assert sorted(held) == sorted([f"{big} (deleted)", f"{tree}/variables/data (deleted)"])
    gate.set()
    _atomic.settle()
    assert _deleted_fds(tmp_path) == []


def test_a_forked_child_does_not_hold_removed_files(tmp_path, monkeypatch):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\1" * _atomic._FREE_LATER)
    gate = threading.Event()
    monkeypatch.setattr(_atomic, "_close", lambda fd: (gate.wait(10), os.close(fd)))
    _atomic.remove(big)
    assert _deleted_fds(tmp_path)
    pid = os.fork()
    if pid == 0:  # the child: its copies are closed by the at-fork hook
        os._exit(0 if not _deleted_fds(tmp_path) else 1)
    _, status = os.waitpid(pid, 0)
    gate.set()
    _atomic.settle()
    assert os.waitstatus_to_exitcode(status) == 0
    assert _deleted_fds(tmp_path) == []


def test_a_fork_while_a_removal_is_still_being_gathered_holds_nothing(tmp_path):
    """A commit keeps the removed files' descriptors until its end; a child forked
    before then (another thread forking) must not inherit them."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"\1" * _atomic._FREE_LATER)
    held = []
    _atomic._unlink(big, held)  # open, name gone, not yet handed to the thread
    assert held and _deleted_fds(tmp_path)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if not _deleted_fds(tmp_path) else 1)
    _, status = os.waitpid(pid, 0)
    _atomic._free_later(held)
    _atomic.settle()
    assert os.waitstatus_to_exitcode(status) == 0
    assert _deleted_fds(tmp_path) == []


def test_removal_frees_inline_where_an_open_file_would_linger(tmp_path, monkeypatch):
    """On a network filesystem an unlinked open file stays in the directory (.nfsXXXX);
    too many kept-open files would eat the process' descriptors."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"\1" * _atomic._FREE_LATER)
    with open(big, "rb") as f:
        assert _atomic._is_local(f.fileno())  # (this machine's disk is local)
    monkeypatch.setattr(_atomic, "_LOCAL_FILESYSTEMS", frozenset())
    held = []
    _atomic._unlink(big, held)
    assert held == [] and not big.exists() and _deleted_fds(tmp_path) == []
    monkeypatch.undo()
    monkeypatch.setattr(_atomic, "_MAX_HELD", 0)
    big.write_bytes(b"\1" * _atomic._FREE_LATER)
    _atomic._unlink(big, held)
    assert held == [] and not big.exists()


def test_the_speed_up_never_fails_a_removal(tmp_path, monkeypatch):
    """Whatever goes wrong deciding to keep a file open (an odd mount table), or
    starting the thread that closes it, the file is still removed and freed."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"\1" * _atomic._FREE_LATER)

    def odd(fd):
        raise UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "a mount path that is not UTF-8")

    monkeypatch.setattr(_atomic, "_is_local", odd)
    held = []
    _atomic._unlink(big, held)
    assert held == [] and not big.exists() and _deleted_fds(tmp_path) == []
    monkeypatch.undo()

    def no_thread(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_atomic, "_to_close", None)
    monkeypatch.setattr(threading.Thread, "start", no_thread)
    big.write_bytes(b"\1" * _atomic._FREE_LATER)
    _atomic.remove(big)  # no thread: freed here
    assert not big.exists() and _deleted_fds(tmp_path) == []
    assert _atomic._to_close is None
    _atomic.settle()  # returns: nothing is left waiting for a thread


def test_removing_a_tree_does_not_raise_for_one_stuck_file(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    (tree / "variables").mkdir(parents=True)
    (tree / "variables" / "stuck").write_bytes(b"\2" * _atomic._FREE_LATER)
    real = Path.unlink

    def unlink(self, missing_ok=False):
        if self.name == "stuck":
            raise PermissionError(1, "Operation not permitted", str(self))
        return real(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    _atomic.remove(tree)  # rmtree still removes what it can, as before
    assert not tree.exists()
    _atomic.settle()


def test_overwriting_a_save_leaves_only_the_artifact(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(_atomic, "_FREE_LATER", 1)  # the tutorial's model is small
    for _ in range(2):
        ks.save_weights(trained, tmp_path / "w" / "ckpt")
        ks.save_model(trained, tmp_path / "sm")
    assert sorted(os.listdir(tmp_path / "w")) == [
        "ckpt.data-00000-of-00001", "ckpt.index", "ckpt.kerasave.json"]
    manager = ks.CheckpointManager(tmp_path / "run", model=trained, max_to_keep=1)
    for _ in range(3):
        manager.save()
    kept = sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("ckpt-"))
    assert kept == ["ckpt-3.data-00000-of-00001", "ckpt-3.index", "ckpt-3.kerasave.json"]
    assert sorted(os.listdir(tmp_path)) == ["run", "sm", "w"]
    _atomic.settle()
    assert _deleted_fds(tmp_path) == []
    assert ks.verify(trained, tmp_path / "w" / "ckpt").ok and ks.verify(trained, tmp_path / "sm").ok


@pytest.mark.parametrize("call,rel", [("save_weights", "w/ckpt"), ("save_model", "w/sm")])
def test_a_save_syncs_its_own_files_not_its_neighbours(trained, tmp_path, monkeypatch, call,
                                                      rel):
    """The directory's entries are synced, not every file in it (a checkpoint directory
    can hold hundreds)."""
    getattr(ks, call)(trained, tmp_path / rel)
    synced = []
    real = os.fsync

    def counting(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    getattr(ks, call)(trained, tmp_path / rel)
    alone = len(synced)
    for i in range(20):
        (tmp_path / "w" / f"neighbour-{i}.bin").write_bytes(b"x")
    synced.clear()
    getattr(ks, call)(trained, tmp_path / rel)
    assert not [p for p in synced if "neighbour" in p]
    assert len(synced) == alone
    # What the save does sync: its files (and, for a directory, what is in it), and
    # the directory's entries before and after the renames.
    assert any(p.endswith("kerasave.json") for p in synced)
    assert synced.count(str(tmp_path / "w")) >= 2
    if rel == "w/sm":
        assert any(p.endswith("/variables") for p in synced)


def test_a_manifest_without_sizes_is_reported_not_a_crash(trained, tmp_path):
    ks.save_model(trained, tmp_path / "m.keras")
    manifest = tmp_path / "m.keras.kerasave.json"
    data = json.loads(manifest.read_text())
    for entry in data["files"].values():
        entry["bytes"] = None
    manifest.write_text(json.dumps(data))
    with pytest.raises(ks.CorruptArtifactError, match="'bytes': None.*not a size"):
        ks.load_model(tmp_path / "m.keras")
