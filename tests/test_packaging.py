"""What a user installs is the whole package, on the range setup.cfg declares.

The wheel and the sdist are built from this checkout and must hold every module;
the wheel, installed into a fresh venv (not editable), runs the seed tutorial's
round trips from a directory outside the source tree. ``make test-oldest`` goes
further: the wheel with its dependencies on the oldest stack (tests/outside.py).
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from kerasave._runtime import support as _support

ROOT = Path(__file__).parents[1]
INSTALLED = os.environ.get("KERASAVE_EXPECT_INSTALLED") == "1"
needs_source = pytest.mark.skipif(INSTALLED, reason="run against an installed kerasave")


def _requirements() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    found = {}
    for line in config["options"]["install_requires"].split("\n"):
        line = line.strip()
        if line:
            name = re.match(r"[A-Za-z0-9_.-]+", line).group(0)
            found[name.lower()] = line[len(name):]
    return found


def test_setup_cfg_declares_exactly_the_tested_range():
    requires = _requirements()
    for package in ("tensorflow", "keras", "h5py", "numpy"):
        low, high = _support.TESTED[package]
        major, minor = (int(p) for p in high.split(".")[:2])
        assert requires[package] == f">={low},<{major}.{minor + 1}", package
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    low, high = _support.TESTED["python"]
    assert config["options"]["python_requires"].strip() == f">={low}"
    classified = re.findall(r"Programming Language :: Python :: (3\.\d+)",
                            config["metadata"]["classifiers"])
    first, last = (int(v.split(".")[1]) for v in (low, high))
    assert classified == [f"3.{m}" for m in range(first, last + 1)]


@pytest.mark.parametrize(("package", "version", "expected"), [
    ("tensorflow", "2.18.1", True), ("tensorflow", "2.18.0", False),
    ("tensorflow", "2.21.4", True), ("tensorflow", "2.22.0", False),
    ("keras", "3.15.1", True), ("keras", "3.11.3", False), ("keras", "3.16.0rc0", False),
    ("h5py", "3.15.0", False), ("numpy", "2.4.6", True), ("python", "3.12.1", False),
    ("keras", None, False),
])
def test_the_tested_range_is_read_as_setup_cfg_reads_it(package, version, expected):
    assert _support.in_range(package, version) is expected


NIGHTLY = any(d in _support.NIGHTLIES for d in _support.distributions().values())


def test_this_process_runs_on_a_tested_stack():
    found = _support.versions()
    if NIGHTLY:  # make test-next: the pinned pre-releases, recognised, outside the range
        dists = _support.distributions()
        for package, (dist, version) in _support.NEXT.items():
            if dists[package] in _support.NIGHTLIES:
                assert (dists[package], found[package]) == (dist, version), package
        assert not _support.supported(found)
        return
    assert _support.supported(found), found


def test_the_makefile_pins_the_pre_releases_doctor_names():
    if INSTALLED and not (ROOT / "Makefile").is_file():
        pytest.skip("no Makefile beside the installed copy's tests")
    makefile = (ROOT / "Makefile").read_text()
    pins = re.search(r"^NEXT_PINS\s*:=\s*(.*)$", makefile, re.M).group(1).split()
    assert sorted(pins) == sorted(f"{d}=={v}" for d, v in _support.NEXT.values())


@pytest.mark.skipif(not INSTALLED, reason="only when run by tests/outside.py")
def test_the_installed_copy_is_what_runs():
    import kerasave

    where = Path(kerasave.__file__).resolve()
    assert Path(sysconfig.get_paths()["purelib"]).resolve() in where.parents, where


def _build(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = out.glob("kerasave-*.whl")
    (sdist,) = out.glob("kerasave-*.tar.gz")
    return wheel, sdist


def _modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "kerasave").rglob("*.py")}


@needs_source
@pytest.mark.slow
def test_the_wheel_installs_and_round_trips_outside_the_source_tree(tmp_path):
    wheel, sdist = _build(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        shipped = set(zf.namelist())
        metadata = zf.read(next(n for n in shipped if n.endswith(".dist-info/METADATA")))
    assert _modules() <= shipped, sorted(_modules() - shipped)
    assert "kerasave/py.typed" in shipped
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
               for n in shipped)
    text = metadata.decode()
    assert "Project-URL: Source," in text and "License" in text
    assert "Requires-Dist: tensorflow<2.22,>=2.18.1" in text
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert _modules() <= names and "LICENSE" in names and "setup.cfg" in names

    # A fresh venv holding only the wheel; its dependencies come from this
    # environment's site-packages through a .pth file (a path, not the editable
    # install's finder, which a .pth line does not run).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(purelib)
    (purelib / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (venv / "bin" / "kerasave").write_text(
        f"#!{python}\nimport sys\nfrom kerasave.cli import main\nsys.exit(main())\n")
    (venv / "bin" / "kerasave").chmod(0o755)

    away = tmp_path / "elsewhere"
    away.mkdir()
    script = f"""
import sys, pathlib
import kerasave as ks
where = pathlib.Path(ks.__file__).resolve()
assert pathlib.Path({str(purelib)!r}).resolve() in where.parents, where
from kerasave.testing import assert_round_trip
model = ks.reference_model(seed=0)
data, labels = ks.reference_data(64)
model.fit(data, labels, epochs=1, verbose=0)
reports = assert_round_trip(model, pathlib.Path("round-trips"))
print(len(reports), "formats")
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    run = subprocess.run([python, "-c", script], cwd=away, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    from kerasave.testing import FORMATS

    assert f"{len(FORMATS)} formats" in run.stdout  # (the exports, with kerasave[export])
    demo = subprocess.run([venv / "bin" / "kerasave", "demo", "--dir", str(away / "demo")],
                          cwd=away, env=env, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "7 of 7 formats verified" in demo.stdout
