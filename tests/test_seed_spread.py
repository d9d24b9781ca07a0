"""The spread over training runs: averaged only across runs of one recipe, and equal to the runs' own rates.

Checked on committed Perov-5 results (five training runs of the few-shot-heavy curriculum; two at 2,400 s).
"""

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import seed_spread  # noqa: E402

FS3 = [f"paper_tables_p5_fs3_seed{i}" for i in range(5)]


def test_the_spread_is_over_each_runs_own_rates():
    runs = {n: seed_spread.load(n) for n in FS3}
    out = seed_spread.spread(runs)["P5"]
    row = "CrystalICL+curriculum (SGS) 3-shot"
    rates = [r["conditional_success_rate"]["P5"][row]["formula"] for r in runs.values()]
    cell = out["conditional_success_rate"][row]["formula"]
    assert cell["runs"] == rates and len(set(rates)) > 1
    assert cell["mean"] == pytest.approx(statistics.fmean(rates), abs=1e-4)
    assert cell["std"] == pytest.approx(statistics.stdev(rates), abs=1e-4) and cell["std"] > 0
    assert cell["min"] == min(rates) and cell["max"] == max(rates)
    assert out["recipe"]["few_shot"] == 3 and "train_seed" not in out["recipe"]
    assert [r["train_seed"] for r in out["runs"].values()] == [None, 1, 2, 3, 4]  # seed 0 is the default
    assert [bool(r["stage1_from"]) for r in out["runs"].values()] == [True, True, True, False, False]


def test_runs_of_different_recipes_are_refused_with_what_differs():
    with pytest.raises(seed_spread.SetupMismatch, match="budget_s"):  # 1,200 s against 2,400 s
        seed_spread.spread({n: seed_spread.load(n) for n in ("paper_tables_p5_full", "paper_tables_p5_2400_seed1")})
    with pytest.raises(seed_spread.SetupMismatch, match="few_shot"):
        seed_spread.spread({n: seed_spread.load(n) for n in ("paper_tables_p5_seed1", "paper_tables_p5_fs3_seed3")})
    with pytest.raises(ValueError, match="two results files"):
        seed_spread.spread({FS3[0]: seed_spread.load(FS3[0])})
