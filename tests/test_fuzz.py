"""Property tests: random bytes and random damage to real artifacts, fed to every
reader. A reader either raises a KerasaveError or returns exactly what it returns
for the undamaged artifact; where a format cannot tell damage from data, what it
may return instead is spelled out per format (``UNCHECKED``), and ``verify``
against the original model must then say the artifact differs.

Each artifact is damaged twice over: with its ``.kerasave.json`` manifest beside
it ("sealed": the manifest CRCs every byte, so any change must be refused with
``CorruptArtifactError``) and without it ("bare", an artifact that arrived
without its sidecar: only the format's own checks stand).
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import kerasave as ks

# FUZZ_EXAMPLES=500 make test hunts harder (random seeds); CI replays fixed examples.
_EXAMPLES = os.environ.get("FUZZ_EXAMPLES")
SETTINGS = settings(max_examples=int(_EXAMPLES or 25), deadline=None, derandomize=not _EXAMPLES,
                    suppress_health_check=[HealthCheck.too_slow])

ARTIFACTS = {  # name: (save call, relative path, file to damage)
    "checkpoint-data": ("save_weights", "w/ckpt", "w/ckpt.data-00000-of-00001"),
    "checkpoint-index": ("save_weights", "w/ckpt", "w/ckpt.index"),
    "h5-weights": ("save_weights", "w.weights.h5", "w.weights.h5"),
    "h5-sharded-shard": ("save_weights", "s.weights.json", "s_00001.weights.h5"),
    "sharded-map": ("save_weights", "s.weights.json", "s.weights.json"),
    "json": ("save_config", "c.json", "c.json"),
    "yaml": ("save_config", "c.yaml", "c.yaml"),
    "keras": ("save_model", "m.keras", "m.keras"),
    "h5-model": ("save_model", "m.h5", "m.h5"),
}

# What a save call is given besides the model and the path.
OPTIONS = {"s.weights.json": {"max_shard_size": 24000 / 1024**3}}  # (two shards)

MANIFEST = ".kerasave.json"
MODES = ("sealed", "bare")

# What each format cannot detect by itself (a bare artifact); every other kind of
# damage, and all damage to a sealed artifact, must raise or change nothing.
#   checkpoint-*: not listed. The .index is a LevelDB table whose blocks carry a
#     CRC32C, and each entry records the CRC32C of its tensor's bytes in the data
#     file, which TensorFlow's reader checks.
#   keras: not listed. A .keras file is a zip: every member (config.json, the
#     weights' HDF5 file) carries a CRC-32 of its bytes.
UNCHECKED = {
    # HDF5 as h5py writes it (superblock version 0) checksums neither tensor bytes
    # nor metadata: a damaged file may load other values, but never other shapes
    # or dtypes than the model's (those kerasave compares).
    "h5-weights": "values",
    "h5-sharded-shard": "values",
    # (sharded-map: not listed. Damage to the map makes it unreadable, names a shard
    # that is not there, or places a group where its datasets are not: refused. The
    # build shapes and versions kerasave records in it are not read into a built model.)
    # The same, and the config is an HDF5 attribute: it may come back changed.
    "h5-model": "values and config",
    # Plain text: any edit that still parses is another config.
    "json": "config",
    "yaml": "config",
}

READERS = ("inspect", "verify", "load_weights", "load_model", "load_config")


class Raised:
    """A reader's KerasaveError, as an outcome to compare."""

    def __init__(self, error: ks.KerasaveError):
        self.error = error

    def __repr__(self):
        return f"Raised({type(self.error).__name__}: {self.error})"


def _state(model) -> list:
    """Every variable of the model and its optimizer: dtype, shape and bytes."""
    optimizer = getattr(model, "optimizer", None)
    variables = list(model.variables) + list(optimizer.variables if optimizer else [])
    arrays = [np.asarray(keras.ops.convert_to_numpy(v)) for v in variables]
    return [(a.dtype.str, a.shape, a.tobytes()) for a in arrays]


def _config(model) -> dict:
    """The model's config as JSON gives it (a loaded model's tuples are lists)."""
    return json.loads(json.dumps(model.get_config(), sort_keys=True, default=repr))


def _outcomes(original, path: Path) -> dict:
    """What each reader gives for ``path``: a comparable value or ``Raised``."""
    def inspect():
        found = ks.inspect(path)
        return found.format, found.variables, found.has_optimizer

    def verify():
        return ks.verify(original, path).ok

    def load_weights():
        target = ks.reference_model(seed=1)
        before = _state(target)
        try:
            ks.load_weights(target, path)
        except ks.KerasaveError:
            # All or nothing: a refused load leaves every variable as it was.
            assert _state(target) == before, f"a refused load_weights changed {path.name}"
            raise
        return _state(target)

    def load_model():
        model = ks.load_model(path)
        return _state(model), _config(model)

    def load_config():
        return _config(ks.load_config(path))

    found = {}
    for name, reader in zip(READERS, (inspect, verify, load_weights, load_model, load_config)):
        try:
            found[name] = reader()
        except ks.KerasaveError as exc:
            found[name] = Raised(exc)
    return found


def _copy(originals: Path, mode: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix="kerasave-fuzz-"))
    for item in originals.iterdir():
        dest = root / item.name
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, dest)
    if mode == "bare":
        for manifest in root.rglob("*" + MANIFEST):
            manifest.unlink()
    return root


def _data_spans(path: Path) -> list[tuple[int, int, str]]:
    """(start, end, dataset) of every HDF5 dataset's stored bytes in the file."""
    spans = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.id.get_offset() is not None:
                start = obj.id.get_offset()
                spans.append((start, start + obj.id.get_storage_size(), name))
        f.visititems(visit)
    return spans


def _datasets(path: Path) -> dict[str, tuple]:
    with h5py.File(path, "r") as f:
        found = {}
        f.visititems(lambda name, obj: found.__setitem__(name, _as_state(obj[()]))
                     if isinstance(obj, h5py.Dataset) else None)
    return found


def _as_state(value) -> tuple:
    a = np.asarray(value)
    return a.dtype.str, a.shape, a.tobytes()


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """The artifacts of a trained model (optimizer state not zero), what every
    reader gives for each undamaged, sealed and bare, and the model itself."""
    root = tmp_path_factory.mktemp("originals")
    model = ks.reference_model(seed=0)
    data, labels = ks.reference_data(64, seed=0)
    model.fit(data, labels, epochs=1, batch_size=32, verbose=0)
    for call, rel, _ in ARTIFACTS.values():
        getattr(ks, call)(model, root / rel, **OPTIONS.get(rel, {}))
    baselines = {}
    for mode in MODES:
        copy = _copy(root, mode)
        try:
            for _, rel, _ in ARTIFACTS.values():
                baselines[mode, rel] = _outcomes(model, copy / rel)
        finally:
            shutil.rmtree(copy, ignore_errors=True)
    # The baselines themselves: the original model, bit for bit, with or without
    # the manifest; each artifact readable by the readers of its kind.
    state, config = _state(model), _config(model)
    for (mode, rel), found in baselines.items():
        assert found["verify"] is True, (mode, rel, found["verify"])
        for reader, want in (("load_weights", state), ("load_model", (state, config)),
                             ("load_config", config)):
            if isinstance(found[reader], Raised):
                continue
            if (reader, rel) == ("load_weights", "m.h5"):
                # load_weights reads a whole-model .h5 as weights (Keras' legacy
                # layout): the model's variables only, the optimizer's stay as they were.
                n = len(model.variables)
                assert found[reader][:n] == state[:n], (mode, rel, reader)
            else:
                assert found[reader] == want, (mode, rel, reader)
        assert not isinstance(found["inspect"], Raised), (mode, rel)
        for reader in READERS:
            sealed = baselines["sealed", rel][reader]
            assert (isinstance(found[reader], Raised) and isinstance(sealed, Raised)
                    or found[reader] == sealed), (mode, rel, reader)
    return Originals(root, model, baselines)


class Originals(tuple):
    """(root, model, baselines), with a repr short enough for hypothesis' reports."""

    def __new__(cls, *items):
        return super().__new__(cls, items)

    def __repr__(self):
        return f"Originals({self[0]})"


def _changed(before: bytes, after: bytes) -> list[int]:
    """Offsets at which the damaged file differs (a length change: from there on)."""
    common = min(len(before), len(after))
    a = np.frombuffer(before, np.uint8, common)
    b = np.frombuffer(after, np.uint8, common)
    changed = np.flatnonzero(a != b).tolist()
    return changed + list(range(common, max(len(before), len(after))))


def _check_damaged(name, mode, found, want, changed, damaged: Path, original: Path):
    """The property, for one damaged artifact (``found``) and its original (``want``)."""
    if not changed:  # the damage changed no byte: every reader answers as before
        for reader in READERS:
            if isinstance(want[reader], Raised):
                assert isinstance(found[reader], Raised), (reader, found[reader])
            else:
                assert found[reader] == want[reader], reader
        return
    for reader in READERS:
        got, expected = found[reader], want[reader]
        if not isinstance(expected, Raised):  # (--hypothesis-show-statistics shows these)
            event(f"{reader}: " + ("raised" if isinstance(got, Raised) else
                                   "as the original" if got == expected else "other values"))
        if isinstance(expected, Raised):  # a reader of another kind: still refused
            assert isinstance(got, Raised), (
                f"{reader} refuses the original {name} but reads the damaged one")
        elif mode == "sealed":  # the manifest's CRC32C covers every byte
            assert isinstance(got, Raised) and isinstance(got.error, ks.CorruptArtifactError), (
                f"{reader} took damage to a sealed {name} for an artifact: {got!r:.300}")
        elif isinstance(got, Raised) or got == expected or reader == "verify":
            continue  # (verify may fail a bare artifact: what it must fail is below)
        elif name not in UNCHECKED:
            pytest.fail(f"{reader} read a damaged bare {name} as other values, but {name} "
                        f"detects damage: {got!r:.300} instead of {expected!r:.300}")
        elif reader in ("load_weights", "load_model"):
            # Values may differ; dtypes and shapes never.
            state = got if reader == "load_weights" else got[0]
            state_want = expected if reader == "load_weights" else expected[0]
            assert [s[:2] for s in state] == [s[:2] for s in state_want], (
                f"{reader} loaded a damaged {name} with other shapes or dtypes")
            if reader == "load_model" and UNCHECKED[name] == "values":
                assert got[1] == expected[1], f"{reader} loaded another config from {name}"
    # Whatever a format lets through, verify() against the original model sees it.
    differs = [r for r in ("load_weights", "load_model", "load_config")
               if not isinstance(found[r], Raised) and found[r] != want[r]]
    if differs:
        assert found["verify"] is not True, (
            f"verify(original, damaged {mode} {name}) passed, but {differs} read other "
            f"values than the original's")
    if mode == "bare" and name.startswith("h5"):
        _check_inside_tensors(name, found, want, changed, damaged, original)


def _check_inside_tensors(name, found, want, changed, damaged: Path, original: Path):
    """Damage that lies wholly inside tensors' stored bytes (HDF5 has no checksum
    of them) must load, and give exactly those damaged bytes: nothing else of the
    model changes, and each variable holds what its own dataset now holds."""
    if len(damaged.read_bytes()) != len(original.read_bytes()):
        return
    spans = _data_spans(original)
    if not all(any(start <= i < end for start, end, _ in spans) for i in changed):
        return
    before, after = _datasets(original), _datasets(damaged)
    for reader in ("load_weights", "load_model"):
        if isinstance(want[reader], Raised):
            continue
        got = found[reader]
        assert not isinstance(got, Raised), (
            f"{reader} refused {name} whose damage lies only in tensor bytes: {got!r}")
        state = got if reader == "load_weights" else got[0]
        state_want = want[reader] if reader == "load_weights" else want[reader][0]
        for i, (loaded, was) in enumerate(zip(state, state_want)):
            # The datasets this variable could have been read from (by their
            # original bytes); it must hold one of them as it is now. A variable the
            # file did not fill (load_weights of a whole-model .h5 leaves the
            # optimizer's) keeps what it held.
            now = [after[ds] for ds, value in before.items() if value == was] or [was]
            assert loaded in now, f"{reader}: variable {i} of {name} is in no dataset"
        if reader == "load_model":
            assert got[1] == want[reader][1], "load_model: damaged tensors changed the config"


mutations = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)),
                                        min_size=1, max_size=8)),
    st.tuples(st.just("splice"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    # One ASCII digit for another: in a config, mostly another valid config.
    st.tuples(st.just("digit"), st.floats(0, 1), st.integers(1, 9)),
)


def _apply(mutation):
    def damage(raw: bytearray) -> bytearray:
        kind = mutation[0]
        if kind == "truncate":
            return raw[: int(len(raw) * mutation[1])]
        if kind == "flip":
            for where, mask in mutation[1]:
                i = min(int(len(raw) * where), len(raw) - 1)
                raw[i] ^= mask
            return raw
        if kind == "digit":
            digits = [i for i, byte in enumerate(raw) if 48 <= byte <= 57]
            if digits:
                i = digits[min(int(len(digits) * mutation[1]), len(digits) - 1)]
                raw[i] = 48 + (raw[i] - 48 + mutation[2]) % 10
            return raw
        i = min(int(len(raw) * mutation[1]), len(raw))
        return raw[:i] + mutation[2] + raw[i + len(mutation[2]):]
    return damage


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(ARTIFACTS))
@SETTINGS
@given(mutation=mutations)
def test_damaged_artifacts_raise_or_read_as_the_original(originals, name, mode, mutation):
    source, model, baselines = originals
    _, rel, target = ARTIFACTS[name]
    root = _copy(source, mode)
    try:
        before = (root / target).read_bytes()
        after = bytes(_apply(mutation)(bytearray(before)))
        (root / target).write_bytes(after)
        found = _outcomes(model, root / rel)
        _check_damaged(name, mode, found, baselines[mode, rel], _changed(before, after),
                       root / target, source / target)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _load_everything(root: Path, rel: str) -> None:
    """Every reader kerasave has, on one artifact; each may fail only with KerasaveError."""
    _outcomes(ks.reference_model(seed=0), root / rel)


@pytest.mark.parametrize("suffix", [".h5", ".keras", ".json", ".yaml", ".weights.h5",
                                    ".weights.json", ""])
@SETTINGS
@given(content=st.binary(max_size=512))
def test_random_bytes_only_raise_kerasave_errors(suffix, content):
    root = Path(tempfile.mkdtemp(prefix="kerasave-fuzz-"))
    try:
        name = "artifact" + suffix
        (root / (name + (".index" if not suffix else ""))).write_bytes(content)
        _load_everything(root, name)
    finally:
        shutil.rmtree(root, ignore_errors=True)
