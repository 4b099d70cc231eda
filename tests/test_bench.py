"""The benchmark's own code runs: every implementation it compares, at the reference
size (``make bench`` is not part of the suite; a broken case would show only there)."""

import importlib.util
from pathlib import Path

import pytest

from kerasave.formats import formats

BENCH = Path(__file__).resolve().parents[1] / "bench" / "perf.py"


@pytest.fixture(scope="module")
def perf():
    spec = importlib.util.spec_from_file_location("kerasave_bench_perf", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Every format the bench times natively: the format table's classic ones but the configs.
CASES = [(f.label, "native") for f in formats(lambda f: f.classic and f.kind != "config")]
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
    for key, times in result["times"].items():
        assert 0 < times["save"] <= times["save_median"]
        assert 0 < times["load"] <= times["load_median"]
        if key.endswith(("|verified", "|unverified")):  # one kerasave / native ratio a round
            native = result["times"][key.split("|")[0] + "|native"]
            for what in ("save", "load"):
                expected_ratios = [ours / theirs for ours, theirs
                                   in zip(times[what + "_rounds"], native[what + "_rounds"])]
                assert times[what + "_ratios"] == expected_ratios
                assert len(times[what + "_ratios"]) == 2
    assert result["state_bytes"] > 0
    assert list(tmp_path.iterdir()) == []  # its artifacts are removed


def test_kerasave_runs_beside_native_first_in_one_round_second_in_the_next(perf):
    group = [("keras", i) for i in perf.IMPLS]
    orders = [[impl for _, impl in perf.paired(group, n)] for n in range(4)]
    assert orders[0] == orders[2] == ["unverified", "native", "verified"]
    assert orders[1] == orders[3] == ["verified", "native", "unverified"]
    assert perf.paired([("numpy", "numpy")], 1) == [("numpy", "numpy")]


def test_the_report_states_each_target_on_the_per_round_ratios(perf, capsys):
    def row(fmt, impl, save, load):
        r = {"size": 256, "format": fmt, "impl": impl, "state_bytes": 2**28,
             "save_median": 1.0, "load_median": 1.0}
        if impl != "native":
            r.update(save_ratio=save, save_ratios=[save], load_ratio=load, load_ratios=[load],
                     load_speedup=1 / load)
        return r

    results = [{"size": 256, "format": "numpy", "impl": "numpy", "state_bytes": 2**28,
                "save_median": 1.0, "load_median": 1.0},
               row("keras", "verified", 0.9, 0.25), row("keras", "native", 0, 0),
               row("h5 weights", "verified", 1.3, 1.1), row("h5 weights", "native", 0, 0)]
    heads = perf.report(results, [256], ["keras", "h5 weights"])
    assert heads[0].startswith("- verified save / native save, median of the per-round ratios, "
                               "worst 1.30x (h5 weights, 256 MB")
    assert heads[1].startswith("- .keras load: keras.saving.load_model / kerasave, median of "
                               "the per-round ratios, worst 4.0x")
    assert heads[2].startswith("- load / native load, median of the per-round ratios, worst "
                               "1.10x (h5 weights, 256 MB")
    assert "1.30x (1.30-1.30)" in capsys.readouterr().out


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
