"""CheckpointManager under MultiWorkerMirroredStrategy: two worker processes on
localhost share one checkpoint directory and both call ``save``; the library decides
who writes. A run stopped and resumed (a fresh cluster) ends bit for bit where a
straight run ends, and the directory holds the checkpoints a single-process manager
would leave, and nothing else."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasave as ks

from .scripts.mw_worker import build, state

SCRIPT = Path(__file__).parent / "scripts" / "mw_worker.py"
WORKERS = 2
TIMEOUT = 240  # seconds for one cluster, start to exit
SAVE_EVERY = 2
NOISE = re.compile(r"oneDNN|cudart_stub|absl::InitializeLog|CollectiveAllReduceStrategy eagerly")


def _free_ports(n):
    """``n`` distinct free localhost ports (bound to 0, read, closed)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tail(path, lines=40):
    text = [line for line in Path(path).read_text(errors="replace").splitlines()
            if not NOISE.search(line)]
    return "\n".join(text[-lines:])


def _cluster(tmp_path, name, directory, steps, save_every=SAVE_EVERY, *extra,
             failing=False):
    """Train on a fresh two-worker cluster until the step is ``steps``; returns the
    workers' final states (one dict of arrays each) and the wall time."""
    run = tmp_path / "runs" / name
    scratch = run / "tmp"  # the workers' TMPDIR: whatever they leave there is a leftover
    scratch.mkdir(parents=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(scratch))
    env.pop("TF_CONFIG", None)
    ports = ",".join(map(str, _free_ports(WORKERS)))
    procs, logs = [], []
    start = time.perf_counter()
    try:
        for index in range(WORKERS):
            out, err = run / f"worker{index}.out", run / f"worker{index}.err"
            logs.append((out, err))
            with open(out, "w") as stdout, open(err, "w") as stderr:
                procs.append(subprocess.Popen(
                    [sys.executable, str(SCRIPT), "--index", str(index), "--ports", ports,
                     "--directory", str(directory), "--steps", str(steps),
                     "--save-every", str(save_every), "--out", str(run / f"worker{index}.npz"),
                     *extra],
                    stdout=stdout, stderr=stderr, env=env, start_new_session=True))
        deadline = start + TIMEOUT
        while any(p.poll() is None for p in procs) and time.perf_counter() < deadline:
            time.sleep(0.2)
        hung = [i for i, p in enumerate(procs) if p.poll() is None]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # the worker's own session: only it
                p.wait(timeout=60)
    seconds = time.perf_counter() - start
    report = "\n".join(f"--- worker {i} (exit {p.returncode}) stderr:\n{_tail(logs[i][1])}"
                       for i, p in enumerate(procs))
    if hung:
        pytest.fail(f"cluster {name!r} hung past {TIMEOUT}s (workers {hung} killed)\n{report}")
    if failing:
        return [p.returncode for p in procs], [_tail(err) for _, err in logs]
    if any(p.returncode != 0 for p in procs):
        pytest.fail(f"cluster {name!r} failed after {seconds:.1f}s\n{report}")
    leftovers = sorted(p.relative_to(scratch).as_posix() for p in scratch.rglob("*"))
    assert leftovers == [], f"worker temporaries left in TMPDIR: {leftovers}"
    print(f"cluster {name}: {seconds:.1f}s")
    finals = []
    for index in range(WORKERS):
        with np.load(run / f"worker{index}.npz") as npz:
            finals.append({k: npz[k] for k in npz.files})
    return finals, seconds


def _assert_same(expected, actual, what):
    assert list(expected) == list(actual), what
    for key in expected:
        e, a = expected[key], actual[key]
        assert e.dtype == a.dtype and e.shape == a.shape, (what, key, e.dtype, a.dtype)
        assert np.array_equal(e, a), (what, key)
        assert e.tobytes() == a.tobytes(), (what, key)  # bit for bit (-0.0, NaN bits)


def _single_process_listing(directory, numbers):
    """What one plain process' manager (max_to_keep=2) leaves after saving ``numbers``."""
    model, optimizer = build()
    step = tf.Variable(0, dtype=tf.int64)
    manager = ks.CheckpointManager(directory, model=model, optimizer=optimizer, step=step,
                                   max_to_keep=2)
    for n in numbers:
        step.assign(n)
        manager.save(step=n)
    manager.close()
    return _listing(directory)


def _listing(directory):
    return sorted(p.relative_to(directory).as_posix() for p in Path(directory).rglob("*"))


def _assert_series(names, numbers, reference):
    """A directory listing ``names`` holds exactly checkpoints ``numbers`` and what a
    single-process manager leaves with them (``reference``), and nothing else."""
    assert not [n for n in names if "kerasave-tmp" in n or "kerasave-prev" in n], names
    allowed = {"checkpoint", ".kerasave-writer.lock"}
    patterns = [re.compile(rf"ckpt-{n}\.(index|kerasave\.json|data-\d{{5}}-of-\d{{5}})")
                for n in numbers]
    extra = [n for n in names if n not in allowed and not any(p.fullmatch(n) for p in patterns)]
    assert extra == [], f"unexpected entries: {extra} (all: {names})"
    for n in numbers:
        assert f"ckpt-{n}.index" in names and f"ckpt-{n}.kerasave.json" in names, names
        assert any(re.fullmatch(rf"ckpt-{n}\.data-\d{{5}}-of-\d{{5}}", x) for x in names), names
    assert names == reference, (names, reference)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A straight run to step 6 (dir A); a run to 4 then resumed to 6 (dir B)."""
    tmp_path = tmp_path_factory.mktemp("multiworker")
    a, b = tmp_path / "A", tmp_path / "B"
    straight, t_a = _cluster(tmp_path, "straight", a, 6)
    first, t_b1 = _cluster(tmp_path, "first", b, 4)
    listing_b4 = _listing(b)
    resumed, t_b2 = _cluster(tmp_path, "resumed", b, 6)
    return {"tmp": tmp_path, "A": a, "B": b, "straight": straight, "first": first,
            "resumed": resumed, "listing_b4": listing_b4, "seconds": (t_a, t_b1, t_b2)}


@pytest.mark.slow
def test_resumed_run_equals_straight_run_bit_for_bit(runs):
    straight, first, resumed = runs["straight"], runs["first"], runs["resumed"]
    for name, finals in (("straight", straight), ("first", first), ("resumed", resumed)):
        _assert_same(finals[0], finals[1], f"{name}: worker 0 vs worker 1")
    assert int(first[0]["step"]) == 4
    assert int(straight[0]["step"]) == int(resumed[0]["step"]) == 6
    for index in range(WORKERS):
        _assert_same(straight[index], resumed[index], f"worker {index}: straight vs resumed")
    # What the directory's newest checkpoint holds is the final state, read by a plain
    # single-process manager.
    model, optimizer = build()
    step = tf.Variable(0, dtype=tf.int64)
    mean_loss = keras.metrics.Mean(name="mean_loss")  # (synchronized on read in the runs)
    manager = ks.CheckpointManager(runs["B"], model=model, optimizer=optimizer, step=step,
                                   loss_total=mean_loss.variables[0],
                                   loss_count=mean_loss.variables[1])
    assert manager.restore_or_initialize() == str(runs["B"] / "ckpt-6")
    restored = state(model, optimizer, step)
    restored.update({f"mean_loss/{v.name}": v.numpy() for v in mean_loss.variables})
    assert float(mean_loss.result()) > 0
    expected = resumed[0]
    assert len(restored) == len(expected)
    for (k, e), r in zip(expected.items(), restored.values()):  # in order (names may differ)
        assert e.dtype == r.dtype and e.shape == r.shape and e.tobytes() == r.tobytes(), k


@pytest.mark.slow
def test_shared_directory_holds_exactly_the_kept_series(runs, tmp_path):
    reference_4 = _single_process_listing(tmp_path / "one4", [2, 4])
    reference_6 = _single_process_listing(tmp_path / "one6", [2, 4, 6])
    _assert_series(_listing(runs["A"]), [4, 6], reference_6)
    _assert_series(runs["listing_b4"], [2, 4], reference_4)  # B after its first cluster
    _assert_series(_listing(runs["B"]), [4, 6], reference_6)


@pytest.mark.slow
def test_two_workers_on_s3_resume_like_a_straight_run(runs, s3_server, tmp_path):
    """The same clusters with the directory on the local S3 server (the workers
    inherit its settings from the environment)."""
    import fsspec

    url = f"{s3_server.new_bucket()}/mw"
    _single_process_listing(tmp_path / "local-reference", [2, 4, 6])
    _cluster(tmp_path, "s3-first", url, 4)
    resumed, _ = _cluster(tmp_path, "s3-resumed", url, 6)
    for index in range(WORKERS):
        _assert_same(runs["straight"][index], resumed[index], f"worker {index}: on S3")
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    names = sorted(p[len(path) + 1:] for p in fs.find(path))
    # TensorFlow's layout, as on disk: the kept checkpoints and the state file.
    _assert_series(names, [4, 6], [n for n in _listing(tmp_path / "local-reference")
                                   if n != ".kerasave-writer.lock"])


@pytest.mark.slow
def test_a_chief_whose_save_fails_before_it_begins_stops_every_worker(tmp_path):
    """No worker waits forever in a collective the chief never joins."""
    codes, errors = _cluster(tmp_path, "failing", tmp_path / "C", 4, SAVE_EVERY,
                             "--chief-fails-at", "4", failing=True)
    assert codes == [1, 1], errors
    assert "the listing failed (on purpose)" in errors[0]
    assert "the chief could not write, verify or commit" in errors[1]
    assert [p.name for p in (tmp_path / "C").iterdir() if "ckpt-4" in p.name] == []
