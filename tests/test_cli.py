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


def test_version():
    result = _run("--version")
    assert result.returncode == 0 and ks.__version__ in result.stdout


def test_demo_fails_loudly_when_a_round_trip_fails(tmp_path, monkeypatch, capsys):
    from kerasave import cli
    from kerasave.formats.config import YamlHandler

    monkeypatch.setattr(YamlHandler, "check",
                        lambda self, model, path: [ks.Check("config", False, "injected")])
    assert cli.main(["demo", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "6 of 7 formats verified; 1 FAILED" in out
    assert "injected" in out
    assert not (tmp_path / "model.yaml").exists()
