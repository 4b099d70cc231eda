"""``docs/compatibility.md``: the corpus as a table, written from a run of it.

``python -m tests.corpus.table`` runs every pair of the corpus in this process
(a few minutes) and writes the page; ``tests/test_corpus*.py`` check, pair by
pair, that what they observe is what the page says (on the Keras version the page
was written with), so the page stays true.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"
_CELL = re.compile(r"^(exact|refused)(?: \[(\d+)\])?(?: \(Keras: (exact|lossy|fails)\))?$")


def _plain(text: str) -> str:
    """A detail without what changes from run to run (automatic layer-name numbers,
    object ids), and without characters a table cell cannot hold."""
    text = re.sub(r"([A-Za-z])_\d+\b", r"\1", text)
    text = re.sub(r"\b0x[0-9a-f]+\b", "0x…", text)
    text = re.sub(r"__inference_\S+", "__inference_…", text)
    return text.replace("|", "/").replace("\n", " ").strip()


def reason(detail: str) -> str:
    """A refusal's message as the page lists it: what would be lost, without the
    path, the save's own wording around it, or which config format it was."""
    text = _plain(detail)
    text = re.sub(r" \(path: [^)]*\)", "", text)
    text = re.sub(r"round trip of the '[^']+' artifact failed: ", "", text)
    text = re.sub(r"cannot verify the '[^']+' save", "cannot verify the save", text)
    text = re.sub(r"the (json|yaml|keras|h5|legacy HDF5|HDF5 weights) format", "this format",
                  text)
    return text if len(text) <= 240 else text[:239] + "…"


def cell(kerasave: str, keras: str, note: int | None = None) -> str:
    """A table cell: kerasave's outcome, then Keras' where it differs from exact."""
    text = kerasave + (f" [{note}]" if note is not None else "")
    return text if keras == "exact" else f"{text} (Keras: {keras})"


def documented() -> tuple[str | None, dict[tuple[str, str], tuple[str, str]]]:
    """The Keras version the page was written with, and its cells:
    ``(case, format) -> (kerasave, Keras)``."""
    from tests.corpus.oracle import FORMATS

    if not PAGE.is_file():
        return None, {}
    text = PAGE.read_text(encoding="utf-8")
    found = re.search(r"written with Keras ([0-9][^ ,]*)", text)
    cells: dict[tuple[str, str], tuple[str, str]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) != len(FORMATS) + 1 or not parts[0].startswith("`"):
            continue
        name = parts[0].strip("`")
        for fmt, value in zip(FORMATS, parts[1:]):
            match = _CELL.match(value)
            if match:
                cells[(name, fmt)] = (match.group(1), match.group(3) or "exact")
    return (found.group(1) if found else None), cells


def render(pairs: list, versions: dict[str, str]) -> str:
    """The page, from the ``Pair`` of every (case, format)."""
    from tests.corpus.models import CASES
    from tests.corpus.oracle import FORMATS

    reasons: list[str] = []
    keras_notes: dict[str, int] = {}
    by = {(p.case, p.format): p for p in pairs}
    rows = []
    counts = {"exact": 0, "refused": 0}
    keras_counts = {"exact": 0, "lossy": 0, "fails": 0}
    for name in CASES:
        cells = []
        for fmt in FORMATS:
            pair = by.get((name, fmt))
            if pair is None:
                cells.append("skipped")
                continue
            counts[pair.kerasave.status] = counts.get(pair.kerasave.status, 0) + 1
            keras_counts[pair.keras.status] = keras_counts.get(pair.keras.status, 0) + 1
            note = None
            if pair.kerasave.status == "refused":
                why = reason(pair.kerasave.detail)
                if why not in reasons:
                    reasons.append(why)
                note = reasons.index(why) + 1
            if pair.keras.status != "exact":
                detail = _plain(pair.keras.detail)
                detail = detail if len(detail) <= 200 else detail[:199] + "…"
                keras_notes.setdefault(f"`{name}` / {fmt}: {pair.keras.status}, {detail}", 0)
            cells.append(cell(pair.kerasave.status, pair.keras.status, note))
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    sources = [f"| `{name}` | {case.source}{' — ' + case.note if case.note else ''} |"
               for name, case in CASES.items()]
    total = sum(counts.values())
    lines = [
        "# Compatibility: kerasave against plain Keras",
        "",
        f"Every model of kerasave's test corpus ({len(CASES)} models re-expressed from Keras' "
        f"own tests) through every format: {total} pairs, each saved and read back by "
        "kerasave and by Keras' own calls for the same format "
        "(`tests/test_corpus.py`, `tests/test_corpus_whole.py`; the harness is "
        "`tests/corpus/oracle.py`).",
        "",
        f"This page was written with Keras {versions['keras']}, TensorFlow "
        f"{versions['tensorflow']} by `python -m tests.corpus.table`; the corpus tests "
        "check every cell against what they observe on that version.",
        "",
        "- **exact**: a fresh model after the load has every variable (and the optimizer's, "
        "where the format holds it) bit-equal to the original's and predicts bit-equal "
        "outputs; a config-only format's model does so once given the original's values "
        "(its weights file); a SavedModel's serving function gives the original's outputs.",
        "- **refused [n]**: kerasave raised a `KerasaveError` (reason *n* below), left nothing "
        "at the path and the model as it was.",
        "- **(Keras: lossy)**: Keras' own save and load of the same model in that format "
        "gives something else back, silently; **(Keras: fails)**: its save or its load "
        "raises. No mark: Keras is exact too.",
        "",
        "What plain Keras does, per format: `tf.train.Checkpoint(model=..., optimizer=...)` "
        "for `checkpoint`; `model.save_weights`/`load_weights` (`.weights.h5`); "
        "`model.to_json()`/`keras.models.model_from_json` for `json` and for `yaml` (Keras "
        "has no YAML: the same config through `yaml.safe_dump`); `model.save`/"
        "`keras.saving.load_model` for `.keras` and legacy `.h5`; `model.export` and "
        "`tf.saved_model.load` for `savedmodel`. Random-generator states (Dropout's seeds) "
        "are not compared: no Keras format holds them (kerasave's checkpoints do).",
        "",
        f"kerasave: {counts.get('exact', 0)} exact, {counts.get('refused', 0)} refused, "
        f"none worse than Keras. Keras: {keras_counts['exact']} exact, "
        f"{keras_counts['lossy']} lossy, {keras_counts['fails']} failing.",
        "",
        "| model | " + " | ".join(FORMATS) + " |",
        "| --- | " + " | ".join("---" for _ in FORMATS) + " |",
        *rows,
        "",
        "## Why kerasave refused",
        "",
        *[f"{i}. {reason}" for i, reason in enumerate(reasons, 1)],
        "",
        "## Where plain Keras is not exact",
        "",
        *[f"- {note}" for note in keras_notes],
        "",
        "## Where each model comes from",
        "",
        "| model | Keras test (`keras/src/...`) |",
        "| --- | --- |",
        *sources,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from kerasave._runtime.quiet import import_tensorflow

    import_tensorflow()
    import tempfile

    import keras
    import tensorflow as tf

    from tests.corpus.models import CASES
    from tests.corpus.oracle import FORMATS, run_pair, verdict

    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in CASES.items():
            if case.skip_reason():
                continue
            for fmt in FORMATS:
                pair = run_pair(case, fmt, Path(tmp) / f"{name}-{fmt}".replace(" ", "_"))
                bad = verdict(pair)
                print(f"{'WORSE' if bad else 'ok   '} {name:32} {fmt:11} "
                      f"kerasave={pair.kerasave} | keras={pair.keras}", flush=True)
                pairs.append(pair)
    PAGE.write_text(render(pairs, {"keras": keras.__version__,
                                   "tensorflow": tf.__version__}), encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
