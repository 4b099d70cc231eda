"""What every corpus test asserts about one (model, format) pair."""

from __future__ import annotations

import functools
from pathlib import Path

import keras
import pytest

from tests.corpus import table
from tests.corpus.models import CASES
from tests.corpus.oracle import run_pair, verdict


def params(formats: tuple[str, ...]) -> list:
    """Every (case, format) pair of ``formats``, the slow cases marked."""
    return [pytest.param(name, fmt, id=f"{name}-{fmt.replace(' ', '_')}",
                         marks=[pytest.mark.slow] if case.slow else [])
            for name, case in CASES.items() for fmt in formats]


@functools.cache
def _page() -> tuple[str | None, dict]:
    return table.documented()


def check_pair(name: str, fmt: str, tmp_path: Path) -> None:
    """Never worse than plain Keras, and as ``docs/compatibility.md`` says."""
    case = CASES[name]
    reason = case.skip_reason()
    if reason:
        pytest.skip(reason)
    pair = run_pair(case, fmt, tmp_path / "pair")
    bad = verdict(pair)
    assert bad is None, f"{name} / {fmt}: {bad} (Keras: {pair.keras})"
    version, cells = _page()
    if version == keras.__version__:
        observed = (pair.kerasave.status, pair.keras.status)
        assert cells.get((name, fmt)) == observed, (
            f"docs/compatibility.md says {cells.get((name, fmt))} for {name} / {fmt}, the "
            f"corpus observes {observed} (kerasave {pair.kerasave}; Keras {pair.keras}): "
            "run `python -m tests.corpus.table` to write the page again")
