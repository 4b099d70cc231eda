"""The benchmark's own code runs: every implementation it compares, at the reference
size (``make bench`` is not part of the suite; a broken case would show only there)."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "perf.py"


@pytest.fixture(scope="module")
def perf():
    spec = importlib.util.spec_from_file_location("kerasave_bench_perf", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = [(f, "native") for f in ("checkpoint", "h5 weights", "keras", "h5 model", "savedmodel")]
CASES += [("keras", "verified"), ("checkpoint", "unverified"), ("numpy", "numpy"),
          ("checkpoint", "async")]


@pytest.mark.parametrize("fmt,impl", CASES, ids=[f"{f}-{i}" for f, i in CASES])
def test_every_bench_case_measures(perf, tmp_path, fmt, impl):
    result = perf.child({"size": 0, "format": fmt, "impl": impl, "repeat": 1,
                         "dir": str(tmp_path)})
    assert "error" not in result and "load_error" not in result, result
    keys = ("blocking", "stall") if impl == "async" else ("save", "load")
    assert all(result[k] > 0 for k in keys), result
    assert result["state_bytes"] > 0


def test_the_interleaved_timing_measures_every_case(perf, tmp_path):
    formats = ["checkpoint", "keras"]
    result = perf.interleaved({"size": 0, "formats": formats, "repeat": 2,
                               "dir": str(tmp_path)})
    expected = {"numpy|numpy"} | {f"{f}|{i}" for f in formats for i in perf.IMPLS}
    assert set(result["times"]) == expected
    for times in result["times"].values():
        assert 0 < times["save"] <= times["save_median"]
        assert 0 < times["load"] <= times["load_median"]
    assert list(tmp_path.iterdir()) == []  # its artifacts are removed


def test_the_export_timing_measures_both_exports(perf, tmp_path):
    from kerasave.testing import EXPORTS

    result = perf.exports({"size": 0, "repeat": 1, "dir": str(tmp_path)})
    for fmt in perf.EXPORTS:
        if fmt not in EXPORTS:
            continue
        assert "error" not in result[fmt], result[fmt]
        assert result[fmt]["native"]["median"] > 0 and result[fmt]["verified"]["median"] > 0
        verdict = result[fmt]["verdict"]
        assert "bit-exact" in verdict or "within tolerance" in verdict
        assert result[fmt]["bytes"] > 0
    lines = perf.export_report([result])
    assert lines and lines[0].startswith("- exports: verified save / Keras' export alone")
