"""The docs' code runs as written."""

import re
from pathlib import Path

DOCS = Path(__file__).parents[1] / "docs"


def _blocks(name):
    text = (DOCS / name).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_checkpoint_guide_runs_twice_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = [b for b in _blocks("checkpoints.md") if "model.fit(x" not in b]
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/checkpoints.md", "exec"), namespace)  # noqa: S102
    first = capsys.readouterr().out
    assert "Initializing from scratch." in first and "step 50" in first
    namespace["train_and_checkpoint"]()
    second = capsys.readouterr().out
    assert "Restored from tf_ckpts/ckpt-5" in second and "step 100" in second
    assert [Path(p).name for p in namespace["manager"].checkpoints] == [
        "ckpt-8", "ckpt-9", "ckpt-10"]
