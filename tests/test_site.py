"""The documentation site builds without warnings, and its pages tell the truth.

``mkdocs build --strict`` must succeed with no WARNING line. Both tutorials are
pages of the site with their outputs and figures (tests/test_notebooks.py checks
that those outputs are current), and the API reference documents every public
name, examples as code. The Python code on
the home page, the format pages and the errors page runs as written, page by
page, in a fresh directory; a ```text block right after a Python block is what
that block prints, and must match it (numbers aside: sizes, timings, versions
and process ids vary from machine to machine).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kerasave

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"

# Pages whose Python blocks run (docs/checkpoints.md runs in tests/test_docs.py).
RUN_PAGES = [
    "index.md",
    "formats.md",
    "formats/checkpoint.md",
    "formats/h5-weights.md",
    "formats/h5-sharded.md",
    "formats/config.md",
    "formats/keras.md",
    "formats/h5-model.md",
    "formats/savedmodel.md",
    "exports.md",
    "errors.md",
    "keras2.md",
    "scaling.md",
]

# The tutorials' pages: (page, a line its outputs print).
TUTORIALS = [("tutorial/index.html", "resumed == uninterrupted, weights: True optimizer: True"),
             ("tutorial.ko/index.html", "resumed == uninterrupted, weights: True optimizer: True")]
# Every public name, and where the API reference documents it.
PUBLIC = [f"kerasave.{name}" for name in kerasave.__all__] + [
    "kerasave.callbacks.Checkpoint", "kerasave.testing.assert_round_trip"]

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.S | re.M)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as ``make docs`` builds it, and what the build printed."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return out, output


def test_site_builds_strict_without_warnings(site):
    out, output = site
    warning_lines = [line for line in output.splitlines() if "WARNING" in line]
    assert warning_lines == [], output
    assert (out / "index.html").is_file()
    for page in RUN_PAGES:
        built = page[: -len(".md")] + "/index.html" if page != "index.md" else "index.html"
        assert (out / built).is_file(), built


def test_site_needs_nothing_from_the_network(site):
    out, _ = site
    for page in out.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert "fonts.googleapis" not in html and "fonts.gstatic" not in html, page
        assert not re.search(r"<(script|link)[^>]+(src|href)=\"(https?:)?//", html), page


@pytest.mark.parametrize("page, printed", TUTORIALS)
def test_tutorials_are_pages_with_outputs_and_figures(site, page, printed):
    out, _ = site
    html = (out / page).read_text(encoding="utf-8")
    assert printed in html
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', html)) >= 3
    # Reports and Inspections as tables (their _repr_html_), every one verified.
    assert html.count(" verified: <code>") >= 9 and "optimizer state: yes" in html
    assert "FAILED" not in html
    # Every code cell ran (no empty prompt), and the notebook is there to download.
    assert "In&nbsp;[&nbsp;]" not in html and "In [ ]" not in html
    assert (out / page).with_name(Path(page).parent.name + ".ipynb").is_file()
    assert f'<a href="{Path(page).parent.name}.ipynb" download' in html
    nav = (out / "index.html").read_text(encoding="utf-8")
    assert f'href="{Path(page).parent.name}/"' in nav


def test_korean_tutorial_is_in_korean(site):
    out, _ = site
    html = (out / "tutorial.ko" / "index.html").read_text(encoding="utf-8")
    assert len(re.findall("[\uac00-\ud7a3]", html)) > 2000


def test_api_reference_documents_every_public_name(site):
    out, _ = site
    html = (out / "api" / "index.html").read_text(encoding="utf-8")
    missing = [name for name in PUBLIC if f'id="{name}"' not in html]
    assert missing == []
    # The docstrings' examples render as code, not as nested quotes.
    assert html.count("&gt;&gt;&gt;") >= 5
    assert not re.search(r"<blockquote>\s*(<blockquote>\s*)*<p>\s*(model|report) =", html)


def blocks(page: str) -> list[tuple[str, str, str | None]]:
    """The page's Python blocks, each with the ```text block that follows it, if any."""
    text = (DOCS / page).read_text(encoding="utf-8")
    fences = list(_FENCE.finditer(text))
    found = []
    for i, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        output = None
        if i + 1 < len(fences):
            nxt = fences[i + 1]
            between = text[fence.end():nxt.start()]
            if nxt.group(1) == "text" and between.strip() == "":
                output = nxt.group(2)
        found.append((f"{page}, block {len(found) + 1}", fence.group(2), output))
    return found


def normalize(text: str) -> str:
    """Output with every run of digits as N and no trailing spaces."""
    lines = [re.sub(r"\d+", "N", line).rstrip() for line in text.strip().splitlines()]
    return "\n".join(lines)


def _keras2_samples() -> None:
    """docs/keras2.md reads tf-keras artifacts by the names the classic guides gave them."""
    import shutil

    keras2 = ROOT / "tests" / "fixtures" / "keras2"
    Path("weights").mkdir()
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(keras2 / "ckpt" / f"reference{suffix}", Path("weights") / f"my_model{suffix}")
    shutil.copytree(keras2 / "artifacts" / "savedmodel" / "sequential-tf211-adam",
                    Path("saved_model") / "my_model")
    shutil.copytree(keras2 / "artifacts" / "tf_ckpts-tf211", "tf_ckpts")


# What a page's examples need in the directory they run in.
SETUP = {"keras2.md": _keras2_samples}


def run_page(page: str) -> list[tuple[str, str | None, str]]:
    """Run a page's Python blocks in order in the current directory.

    Returns (label, expected output or None, printed output) per block.
    """
    import keras

    keras.backend.clear_session()  # layer names as in a fresh process
    if page in SETUP:
        SETUP[page]()
    namespace: dict = {"__name__": "__docs__"}
    results = []
    for label, code, expected in blocks(page):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            # Under pytest an unexpected warning is an error: a page that means to
            # show one catches it itself.
            exec(compile(code, label, "exec"), namespace)  # noqa: S102
        results.append((label, expected, out.getvalue()))
    return results


@pytest.mark.parametrize("page", RUN_PAGES)
def test_page_code_runs_and_prints_what_the_page_shows(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = run_page(page)
    if page != "formats.md":
        assert results, f"{page} has no Python block to run"
    for label, expected, printed in results:
        if expected is not None:
            assert normalize(printed) == normalize(expected), (
                f"{label} printed:\n{printed}\nthe page shows:\n{expected}")


if __name__ == "__main__":
    # Print what each block of a page prints, to paste into the page:
    #   cd "$(mktemp -d)" && python /path/to/tests/test_site.py formats/keras.md
    for name in sys.argv[1:]:
        for label, expected, printed in run_page(name):
            status = "" if expected is None else (
                "  (matches)" if normalize(printed) == normalize(expected) else "  (DIFFERS)")
            print(f"--- {label}{status}\n{printed}", end="")
