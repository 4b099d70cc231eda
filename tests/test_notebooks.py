"""The bilingual tutorials (docs/tutorial.ipynb, docs/tutorial.ko.ipynb) run top to bottom.

Each notebook is executed with nbclient in a Jupyter kernel running this very
interpreter (the venv's), so it tests the kerasave installed here. Every cell
must run without an error; the notebooks assert their own claims (bit-exact
restores, resumed == uninterrupted training). The committed files carry no
outputs, and both languages run the same code.
"""

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

DOCS = Path(__file__).parents[1] / "docs"
NOTEBOOKS = ["tutorial.ipynb", "tutorial.ko.ipynb"]
HANGUL = re.compile("[\uac00-\ud7a3]")


def _read(name):
    return nbformat.read(DOCS / name, as_version=4)


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch):
    """A ``python3`` kernelspec that runs ``sys.executable``, ahead of any other on the path."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(json.dumps(
        {"argv": argv, "display_name": "Python 3 (kerasave tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # The notebooks write into tempfile.mkdtemp(): keep that inside pytest's tmp_path.
    workdir = tmp_path / "tmp"
    workdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(workdir))
    assert KernelSpecManager().get_kernel_spec("python3").argv == argv
    return workdir


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.metadata["kernelspec"]["language"] == "python"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 20
    for cell in code:
        assert cell.outputs == [], cell.source[:60]
        assert cell.execution_count is None, cell.source[:60]


def test_both_languages_run_the_same_code():
    en, ko = (_read(n) for n in NOTEBOOKS)
    assert [c.cell_type for c in en.cells] == [c.cell_type for c in ko.cells]
    assert [c.source for c in en.cells if c.cell_type == "code"] == [
        c.source for c in ko.cells if c.cell_type == "code"]
    for mine, theirs in zip(en.cells, ko.cells):
        if mine.cell_type == "markdown":
            assert not HANGUL.search(mine.source), mine.source[:60]
            assert HANGUL.search(theirs.source), theirs.source[:60]


def _outputs(nb, kind):
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind == "stdout" and out.output_type == "stream" and out.name == "stdout":
                yield out.text
            elif kind == "html" and "data" in out and "text/html" in out.data:
                yield out.data["text/html"]
            elif kind == "error" and out.output_type == "error":
                yield f"{out.ename}: {out.evalue}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_runs(name, venv_kernel):
    nb = _read(name)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(venv_kernel)}})
    client.execute()  # raises CellExecutionError at the first cell that fails
    assert list(_outputs(nb, "error")) == []
    stdout = "".join(_outputs(nb, "stdout"))
    assert "predictions equal, bit for bit: True" in stdout
    assert "Initializing from scratch." in stdout and "Restored from tf_ckpts/ckpt-5" in stdout
    assert "resumed == uninterrupted, weights: True optimizer: True" in stdout
    assert "False" not in stdout.replace("same predictions before loading: False", "").replace(
        "same weights: False", "")
    # The Reports and Inspections render as HTML tables, every one of them verified.
    html = list(_outputs(nb, "html"))
    reports = [h for h in html if " verified: <code>" in h]
    assert len(reports) >= 9
    assert not any("FAILED" in h or "✘" in h for h in html)
    assert sum("optimizer state: yes" in h for h in html) >= 3  # the three inspect() calls
    # The artifacts went to the temporary directory, nowhere else.
    assert any(p.name.startswith("kerasave-tutorial-") for p in venv_kernel.iterdir())
