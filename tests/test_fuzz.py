"""Property tests: random bytes and random damage to real artifacts, fed to every
loader, give a model or a KerasaveError, never anything else."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
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
    "json": ("save_config", "c.json", "c.json"),
    "yaml": ("save_config", "c.yaml", "c.yaml"),
    "keras": ("save_model", "m.keras", "m.keras"),
    "h5-model": ("save_model", "m.h5", "m.h5"),
}


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("originals")
    model = ks.reference_model(seed=0)
    for call, rel, _ in ARTIFACTS.values():
        getattr(ks, call)(model, root / rel)
    return root


def _load_everything(root: Path, rel: str) -> None:
    """Every reader kerasave has, on one artifact; each may fail only with KerasaveError."""
    path = root / rel
    for attempt in (
        lambda: ks.inspect(path),
        lambda: ks.verify(ks.reference_model(seed=0), path),
        lambda: ks.load_weights(ks.reference_model(seed=1), path),
        lambda: ks.load_model(path),
        lambda: ks.load_config(path),
    ):
        try:
            attempt()
        except ks.KerasaveError:
            pass


def _damaged_copy(originals: Path, name: str, damage) -> tuple[Path, str]:
    call, rel, target = ARTIFACTS[name]
    root = Path(tempfile.mkdtemp(prefix="kerasave-fuzz-"))
    for item in originals.iterdir():
        dest = root / item.name
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, dest)
    raw = bytearray((root / target).read_bytes())
    (root / target).write_bytes(bytes(damage(raw)))
    return root, rel


mutations = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)),
                                        min_size=1, max_size=8)),
    st.tuples(st.just("splice"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
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
        i = min(int(len(raw) * mutation[1]), len(raw))
        return raw[:i] + mutation[2] + raw[i + len(mutation[2]):]
    return damage


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ARTIFACTS))
@SETTINGS
@given(mutation=mutations)
def test_damaged_artifacts_only_raise_kerasave_errors(originals, name, mutation):
    root, rel = _damaged_copy(originals, name, _apply(mutation))
    try:
        _load_everything(root, rel)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("suffix", [".h5", ".keras", ".json", ".yaml", ".weights.h5", ""])
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
