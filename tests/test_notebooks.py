"""The bilingual tutorials (docs/tutorial.ipynb, docs/tutorial.ko.ipynb) run top to bottom.

The notebooks are stored executed, so that the docs site shows their outputs and
figures without running TensorFlow at build time. Both languages have the same
code cells, and store the same outputs. Each test run executes the tutorial
again with nbclient in a Jupyter kernel running this very interpreter (the
venv's), so it tests the kerasave installed here: every cell must run without an
error, the notebook asserts its own claims (bit-exact restores, resumed ==
uninterrupted training), and what it prints and displays must be what both
notebooks store, numbers aside (timings, sizes and versions vary), images aside.

When the code or what kerasave prints changes, store the new outputs with:

    TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python tests/test_notebooks.py --write
"""

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

DOCS = Path(__file__).parents[1] / "docs"
NOTEBOOKS = ["tutorial.ipynb", "tutorial.ko.ipynb"]
HANGUL = re.compile("[\uac00-\ud7a3]")
REFRESH = "TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python tests/test_notebooks.py --write"
# What a stored output must never hold: TensorFlow's load lines, and paths of the
# machine that ran it.
NOISE = re.compile(r"absl::InitializeLog|^[IWE]\d{4} |cuda|oneDNN|/tmp/|/home/|/root/|/work/"
                   r"|kerasave-tutorial-", re.M | re.I)
# Lines that a first run on a fresh machine may print, and a stored notebook not.
_FIRST_RUN = re.compile(r"^Matplotlib is building the font cache.*\n?", re.M)


def _read(name):
    return nbformat.read(DOCS / name, as_version=4)


def execute(nb, workdir):
    """Run every cell of ``nb`` in place, in a ``python3`` kernel, from ``workdir``."""
    NotebookClient(nb, timeout=600, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def _kernelspec(directory):
    """A ``python3`` kernelspec under ``directory`` that runs ``sys.executable``."""
    spec_dir = Path(directory) / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(json.dumps(
        {"argv": argv, "display_name": "Python 3 (kerasave tests)", "language": "python"}))
    return str(Path(directory) / "jupyter"), argv


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch):
    """A ``python3`` kernelspec that runs ``sys.executable``, ahead of any other on the path."""
    jupyter_path, argv = _kernelspec(tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", jupyter_path)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    # The notebooks write into tempfile.mkdtemp(): keep that inside pytest's tmp_path.
    workdir = tmp_path / "tmp"
    workdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(workdir))
    assert KernelSpecManager().get_kernel_spec("python3").argv == argv
    return workdir


def _normalize(text):
    text = re.sub(r"0x[0-9a-f]+", "0x", text)
    return "\n".join(re.sub(r"\d+", "N", line).rstrip() for line in text.strip().splitlines())


def comparable(cell):
    """A code cell's outputs as stored and compared: streams joined, digits as N, no images."""
    streams: dict[str, str] = {}
    shown = []
    for out in cell.outputs:
        if out.output_type == "stream":
            streams[out.name] = streams.get(out.name, "") + out.text
        elif out.output_type == "error":
            shown.append(("error", f"{out.ename}: {out.evalue}"))
        else:
            shown.append((out.output_type, tuple(sorted(
                (mime, None if mime.startswith("image/") else _normalize(value))
                for mime, value in out.data.items()))))
    streams = {name: _FIRST_RUN.sub("", text) for name, text in streams.items()}
    return [(name, _normalize(text)) for name, text in sorted(streams.items()) if text] + shown


def _outputs(nb, kind):
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind == "stdout" and out.output_type == "stream" and out.name == "stdout":
                yield out.text
            elif kind == "stderr" and out.output_type == "stream" and out.name == "stderr":
                yield out.text
            elif kind == "html" and "data" in out and "text/html" in out.data:
                yield out.data["text/html"]
            elif kind == "png" and "data" in out and "image/png" in out.data:
                yield out.data["image/png"]
            elif kind == "error" and out.output_type == "error":
                yield f"{out.ename}: {out.evalue}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_executed_and_clean(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.metadata["kernelspec"]["language"] == "python"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 20
    # Run once, top to bottom, as a reader would.
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), REFRESH
    assert list(_outputs(nb, "error")) == []
    assert list(_outputs(nb, "stderr")) == [], "TensorFlow or a warning wrote to stderr"
    for cell in code:
        for out in cell.outputs:
            text = json.dumps({k: v for k, v in out.get("data", {}).items()
                               if not k.startswith("image/")}) + out.get("text", "")
            assert not NOISE.search(text), (cell.source[:60], NOISE.search(text).group())
        assert "execution" not in cell.metadata  # no timestamps
    assert len(list(_outputs(nb, "png"))) >= 3  # resume, fit with the two callbacks, timing
    assert sum("<table" in h for h in _outputs(nb, "html")) >= 9  # Reports and Inspections


def test_both_languages_run_the_same_code():
    en, ko = (_read(n) for n in NOTEBOOKS)
    assert [c.cell_type for c in en.cells] == [c.cell_type for c in ko.cells]
    assert [c.source for c in en.cells if c.cell_type == "code"] == [
        c.source for c in ko.cells if c.cell_type == "code"]
    for mine, theirs in zip(en.cells, ko.cells):
        if mine.cell_type == "markdown":
            assert not HANGUL.search(mine.source), mine.source[:60]
            assert HANGUL.search(theirs.source), theirs.source[:60]
    # And show the same: the stored outputs of each code cell match, figures included.
    for mine, theirs in zip(en.cells, ko.cells):
        if mine.cell_type == "code":
            assert comparable(mine) == comparable(theirs), mine.source[:60]


def test_tutorial_runs_and_prints_what_is_stored(venv_kernel):
    # Both languages run the same code (above): running the English one runs both.
    nb = execute(_read(NOTEBOOKS[0]), venv_kernel)  # raises CellExecutionError on failure
    assert list(_outputs(nb, "error")) == []
    stdout = "".join(_outputs(nb, "stdout"))
    assert "predictions equal, bit for bit: True" in stdout
    assert "Initializing from scratch." in stdout and "Restored from tf_ckpts/ckpt-5" in stdout
    assert "resumed == uninterrupted, weights: True optimizer: True" in stdout
    assert "same loss at every step: True" in stdout
    assert ("kerasave Checkpoint: resumed at step 56, ended at step 96, "
            "same weights as uninterrupted: True") in stdout
    # Keras' own callback, on the same crash, trains part of an epoch twice.
    assert ("Keras BackupAndRestore: resumed at step 56, ended at step 120, "
            "same weights as uninterrupted: False") in stdout
    assert "False" not in stdout.replace("same predictions before loading: False", "").replace(
        "same weights: False", "").replace("same weights as uninterrupted: False", "")
    # The Reports and Inspections render as HTML tables, every one of them verified.
    html = list(_outputs(nb, "html"))
    reports = [h for h in html if " verified: <code>" in h]
    assert len(reports) >= 9
    assert not any("FAILED" in h or "✘" in h for h in html)
    assert sum("optimizer state: yes" in h for h in html) >= 3  # the three inspect() calls
    # The artifacts went to the temporary directory, nowhere else.
    assert any(p.name.startswith("kerasave-tutorial-") for p in venv_kernel.iterdir())
    # What the docs site shows is what this code prints now, in both languages.
    for name in NOTEBOOKS:
        for ran, kept in zip(nb.cells, _read(name).cells):
            if ran.cell_type == "code":
                assert comparable(ran) == comparable(kept), (
                    f"{name}: the stored outputs of the cell starting {ran.source[:50]!r} are "
                    f"not what it shows now; store the new ones with: {REFRESH}")


def test_checkpoint_guide_as_a_notebook_with_its_manager_cell_run_again(venv_kernel):
    """docs/checkpoints.md's code as notebook cells, in a kernel; then the manager's
    cell again while the old manager lives on (a variable holds it, as Out[] would):
    the new one takes over, resumes and saves; the old one's next save is refused."""
    text = (DOCS / "checkpoints.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
              if "model.fit(x" not in b]
    manager_cell = next(b for b in blocks if "ks.CheckpointManager(\"./tf_ckpts\"" in b
                        and "def train_and_checkpoint" in b)
    cells = [*blocks, "old = manager", manager_cell,
             "try:\n    old.save()\nexcept ks.KerasaveError as exc:\n"
             "    print('refused:', exc)\n",
             "print([p.rsplit('/', 1)[-1] for p in manager.checkpoints])"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    execute(nb, venv_kernel)
    assert list(_outputs(nb, "error")) == []
    out = [c for c in nb.cells]
    rerun = "".join(o.text for o in out[len(blocks) + 1].outputs if o.output_type == "stream")
    assert "Restored from tf_ckpts/ckpt-5" in rerun and "step 100" in rerun, rerun
    refused = "".join(o.text for o in out[-2].outputs if o.output_type == "stream")
    assert "refused:" in refused and "superseded" in refused, refused
    listed = "".join(o.text for o in out[-1].outputs if o.output_type == "stream")
    assert listed.strip() == "['ckpt-8', 'ckpt-9', 'ckpt-10']", listed


def write():
    """Execute the tutorial and store both notebooks with its outputs (same code, same outputs)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    ran = _read(NOTEBOOKS[0])
    with tempfile.TemporaryDirectory() as workdir:
        os.environ["JUPYTER_PATH"], _ = _kernelspec(workdir)
        os.environ["TMPDIR"] = workdir
        execute(ran, workdir)
    for name in NOTEBOOKS:
        nb = _read(name)
        for cell, done in zip(nb.cells, ran.cells, strict=True):
            assert cell.cell_type == done.cell_type and cell.get("source") == (
                done.source if cell.cell_type == "code" else cell.source)
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = done.outputs, done.execution_count
        nb.metadata = {"kernelspec": ran.metadata["kernelspec"],
                       "language_info": {"name": "python"}}
        nbformat.validate(nb)
        nbformat.write(nb, DOCS / name)
        print(f"stored docs/{name}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: {REFRESH}")
    write()
