"""The paper-tables benchmark's bookkeeping: a run replaces only the cells its own setup measured.

Runs of this benchmark take hours and are made dataset by dataset across sessions, so merging a new run
into the committed results must neither drop another dataset's cells nor keep cells of a changed setup.
Checked on the committed results file itself.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from crystalicl.errors import ConfigError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _common  # noqa: E402
import paper_tables  # noqa: E402


def _fresh() -> dict:
    return {k: {} for k in ("setup_by_dataset", "protocol", *paper_tables.PER_DATASET, *paper_tables.MP20_ONLY)}


@pytest.fixture
def committed(tmp_path, monkeypatch):
    shutil.copy(BENCHMARKS / "results" / "paper_tables.json", tmp_path / "paper_tables.json")
    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    return json.loads((tmp_path / "paper_tables.json").read_text())


def _bench(keys: set[str]) -> paper_tables.Bench:
    b = paper_tables.Bench(argparse.Namespace(name="paper_tables", work="unused", arms=[]))
    b.keys = keys
    return b


def test_a_new_setup_replaces_its_own_dataset_and_keeps_the_others(committed):
    setups = paper_tables._setup_of(committed)
    assert {"MP20", "P5"} <= set(setups) and all("epochs" in s for s in setups.values())
    res = _fresh()
    res["setup_by_dataset"]["P5"] = {k: v for k, v in setups["P5"].items() if k != "provenance"} | {"budget_s": 1.0}
    paper_tables._merge_previous(_bench({"P5"}), res)
    assert "P5" not in res["conditional_success_rate"] and "P5" not in res["unconditional"]
    for table in paper_tables.PER_DATASET:
        for key, cells in committed.get(table, {}).items():
            if key != "P5":
                assert res[table][key] == cells, (table, key)
    for table in paper_tables.MP20_ONLY:
        assert res[table] == committed.get(table, {})
    assert res["setup_by_dataset"]["MP20"] == setups["MP20"]


def test_the_same_setup_keeps_its_cells_for_a_resumed_run(committed):
    setups = paper_tables._setup_of(committed)
    res = _fresh()
    res["setup_by_dataset"]["MP20"] = {k: v for k, v in setups["MP20"].items() if k != "provenance"}
    paper_tables._merge_previous(_bench({"MP20"}), res)
    assert res["conditional_success_rate"]["MP20"] == committed["conditional_success_rate"]["MP20"]
    assert res["ablation_k"] == committed["ablation_k"]


def test_curriculum_with_a_pretrained_base_model_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["paper_tables.py", "--base-model", "HuggingFaceTB/SmolLM2-135M-Instruct",
                                      "--curriculum", "0.5"])
    with pytest.raises(SystemExit) as e:
        paper_tables.main()
    assert e.value.code == 2 and "already can" in capsys.readouterr().err


def test_enforcing_conditions_needs_the_grammar(monkeypatch, capsys):
    """A LoRA model samples unconstrained unless --lora-grammar: it has no grammar to enforce the conditions with."""
    monkeypatch.setattr(sys, "argv", ["paper_tables.py", "--base-model", "HuggingFaceTB/SmolLM2-135M-Instruct",
                                      "--enforce-conditions"])
    with pytest.raises(SystemExit) as e:
        paper_tables.main()
    assert e.value.code == 2 and "needs --lora-grammar" in capsys.readouterr().err


def test_timings_follow_their_dataset_cells(committed):
    setups = paper_tables._setup_of(committed)
    res = _fresh()
    res["setup_by_dataset"]["P5"] = {k: v for k, v in setups["P5"].items() if k != "provenance"} | {"budget_s": 1.0}
    b = _bench({"P5"})
    paper_tables._merge_previous(b, res)
    old = committed["timings_seconds"]
    assert not any(k.startswith(("perov5/", "train perov5 ")) for k in b.timings)
    assert {k: v for k, v in old.items() if k.startswith(("mp20_biternary/", "train mp20_biternary "))}.items() \
        <= b.timings.items()


@pytest.mark.parametrize("tables", [["conditional", "unconditional"], ["cross-domain"], ["ablations"]])
def test_train_only_trains_exactly_the_models_the_tables_sample_from(monkeypatch, tables):
    """``--train-only`` on a GPU, then the same command on a CPU: the second run must find every model it needs
    and the first must train none it does not."""
    a = argparse.Namespace(datasets=["perov5", "mp20_biternary"], formats=["sgs", "xyz"], curriculum=0.5,
                           arms=["CrystalLLM", "CrystalICL+curriculum"], icl_arm="CrystalICL+curriculum",
                           ablations=["inference", "mixtures"], name="unused", work="unused", n=1000, runs=5)
    b = paper_tables.Bench(a)
    calls = []
    monkeypatch.setattr(b, "model", lambda ds, arm, fmt: calls.append((ds, arm, fmt)) or Path(ds, arm, fmt))
    monkeypatch.setattr(paper_tables, "mp20_name", lambda: "mp20_biternary")
    paper_tables.train_models(b, tables)
    trained, calls[:] = set(calls), []
    monkeypatch.setattr(b, "conditional", lambda *args, **kw: {"overlap": 0.0, "negative_formation_energy": 0.0})
    monkeypatch.setattr(b, "unconditional", lambda *args, **kw: {})
    monkeypatch.setattr(b, "stage1", lambda *args: {})
    monkeypatch.setattr(paper_tables, "_save", lambda *args: None)
    monkeypatch.setattr(paper_tables, "_row", lambda *args: {})
    monkeypatch.setattr(paper_tables, "_protocol", lambda ds: "reduced")
    res = _fresh() | {"conditional_success_rate_std": {}, "conditional_extra": {}}
    steps = {"conditional": paper_tables.run_conditional, "unconditional": paper_tables.run_unconditional,
             "cross-domain": paper_tables.run_cross_domain, "ablations": paper_tables.run_ablations}
    for t in tables:
        steps[t](b, res)
    assert trained == set(calls) and trained



def test_mixture_arms_trains_and_samples_only_the_mixtures_asked_for(monkeypatch):
    """``--mixture-arms C``: Table 3's C model alone (trained the way the ICL arm is), at 0 and 3 shots."""
    a = argparse.Namespace(datasets=["mp20_biternary"], formats=["sgs-wyckoff"], curriculum=1.0, arms=[],
                           icl_arm="CrystalICL+curriculum", ablations=["mixtures"], mixture_arms="C", name="unused",
                           work="unused", n=1000, runs=1)
    b = paper_tables.Bench(a)
    monkeypatch.setattr(paper_tables, "mp20_name", lambda: "mp20_biternary")
    assert paper_tables.needed_models(b, ["ablations"]) == [("mp20_biternary", "C+curriculum", "sgs-wyckoff")]
    sampled = []
    monkeypatch.setattr(b, "model", lambda ds, arm, fmt: Path(ds, arm, fmt))
    monkeypatch.setattr(b, "conditional", lambda model, ds, shots, **kw: sampled.append((str(model), shots)) or {
        "formula": 0.5})
    monkeypatch.setattr(paper_tables, "_save", lambda *args: None)
    monkeypatch.setattr(paper_tables, "_protocol", lambda ds: "reduced")
    res = _fresh()
    paper_tables.run_ablations(b, res)
    model = str(Path("mp20_biternary", "C+curriculum", "sgs-wyckoff"))
    assert sampled == [(model, 0), (model, 3)]
    assert set(res["ablation_instruction_types"]) == {"0-shot", "3-shot"}
    assert all(list(rows) == ["C"] for rows in res["ablation_instruction_types"].values())


def test_ablation_rows_keep_their_spread_over_runs(monkeypatch, committed):
    """The ablation tables' rows are means over ``--runs``; their std goes beside them (the paper's layout keeps
    the means) and into the report once there is more than one run."""
    from crystalicl.evaluate import aggregate_runs

    a = argparse.Namespace(datasets=["mp20_biternary"], formats=["sgs-wyckoff"], curriculum=1.0, arms=[],
                           icl_arm="CrystalICL+curriculum", ablations=["inference", "mixtures"], mixture_arms="TA",
                           name="unused", work="unused", n=1000, runs=2)
    b = paper_tables.Bench(a)
    runs = [{"formula": 0.5, "space_group": 0.9, "formation_energy": 0.8, "band_gap": 0.6},
            {"formula": 0.6, "space_group": 0.9, "formation_energy": 0.7, "band_gap": 0.6}]
    monkeypatch.setattr(paper_tables, "mp20_name", lambda: "mp20_biternary")
    monkeypatch.setattr(b, "model", lambda ds, arm, fmt: Path(ds, arm, fmt))
    monkeypatch.setattr(b, "conditional", lambda *args, **kw: aggregate_runs(runs))
    monkeypatch.setattr(paper_tables, "_save", lambda *args: None)
    monkeypatch.setattr(paper_tables, "_protocol", lambda ds: "reduced")
    res = _fresh()
    paper_tables.run_ablations(b, res)
    assert res["ablation_instruction_types"]["3-shot"]["TA"] == [0.55, 0.9, 0.75, 0.6]
    assert res["ablation_instruction_types_std"]["3-shot"]["TA"] == [0.0707, 0.0, 0.0707, 0.0]
    assert set(res["ablation_inference_selection_std"]) == set(res["ablation_inference_selection"]) == {
        "C", "CF", "F", "R", "C shuffled"}
    assert set(res["ablation_k_std"]) == {"K=1", "K=2", "K=3"}
    report = committed | {t: res[t] for t in paper_tables.MP20_ONLY if t.startswith("ablation")}
    for n_runs, shown in ((2, True), (1, False)):
        report["setup_by_dataset"]["MP20"] |= {"runs": n_runs}
        md = paper_tables.markdown(report)
        assert ("| TA | 0.550 ± 0.071 | 0.900 ± 0.000 | 0.750 ± 0.071 | 0.600 ± 0.000 |" in md) is shown
        assert ("| K=2 | 0.550 ± 0.071" in md) is shown and ("| K=2 | 0.550 [" in md) is not shown


def test_the_template_mixture_is_trained_only_when_named():
    """T (ours) is not one of Table 3's models: all of them by default, T alone or beside C when named."""
    a = argparse.Namespace(mixture_arms=None)
    assert paper_tables.mixture_arms(a) == paper_tables.MIXTURE_ARMS and "T" not in paper_tables.MIXTURE_ARMS
    a.mixture_arms = "T,C"
    assert paper_tables.mixture_arms(a) == ("C", "T")
    assert paper_tables.MIXTURES["T"].strategies == ("T",)


def test_an_unknown_mixture_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["paper_tables.py", "--mixture-arms", "C,Cx"])
    with pytest.raises(SystemExit) as e:
        paper_tables.main()
    assert e.value.code == 2 and "no mixture Cx" in capsys.readouterr().err

def test_few_shot_sets_the_k_shot_instructions_per_target_of_the_icl_arms_only(monkeypatch, tmp_path):
    """``--few-shot 3`` is a mixture ablation: the ICL arms get three K-shot instructions per target, while the
    CrystalLLM baseline stays zero-shot only (its mixture has none to multiply)."""
    import crystalicl.instructions

    built = {}
    monkeypatch.setattr(crystalicl.instructions, "build_dataset",
                        lambda ds, split, fmt, mix, **kw: built.setdefault((kw["out"].parent.name, split), mix))
    b = paper_tables.Bench(argparse.Namespace(name="unused", work=str(tmp_path), arms=[], uncond_share=0.0, workers=1,
                                              few_shot=3))
    for arm in ("CrystalLLM", "CrystalICL", "noAux", "copy"):
        b.data("perov5", arm, "sgs")
    assert built[("CrystalICL-sgs", "train")].few_shot == built[("noAux-sgs", "val")].few_shot == 3
    assert built[("noAux-sgs", "train")].aux == 0.0
    assert built[("CrystalLLM-sgs", "train")].few_shot == 0
    copy = built[("copy-sgs", "train")]  # a target has one copy record: --few-shot would repeat it
    assert (copy.zero_shot, copy.few_shot, copy.shots, copy.strategies, copy.aux) == (False, 1, (1,), ("A",), 0.0)


def test_copy_stage_trains_between_the_curriculum_stages_on_its_share_of_the_tokens(monkeypatch, tmp_path):
    """``--copy-stage 0.3``: after the first stage (which stopped early), 30 % of the whole token budget on copy
    instructions from the first stage's weights, then the mixture from the copy stage's on what both left."""
    import crystalicl.train

    configs, spent = [], iter([300_000, 290_000, 410_000])

    def fake_train(cfg):
        configs.append(cfg)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "crystalicl.json").write_text(json.dumps({"metrics": {"tokens": next(spent)}}))

    monkeypatch.setattr(crystalicl.train, "train", fake_train)
    a = argparse.Namespace(name="unused", work=str(tmp_path), arms=[], preset="tiny", base_model=None, epochs=100.0,
                           train_batch_size=16, train_seed=0, keep_best=True, best_by="val_loss", budget=1200.0,
                           token_budget=1_000_000, curriculum=1.0, switch_at=0.8, stage1_patience=None,
                           stage1_from=None, copy_stage=0.3)
    b = paper_tables.Bench(a)
    monkeypatch.setattr(b, "data", lambda ds, arm, fmt: (Path(f"{arm}.jsonl"), Path("val.jsonl")))
    stage1, copy = b.work / "mp20" / "curriculum-stage1-sgs", b.work / "mp20" / "curriculum-copy-sgs"
    b._train("mp20", "TA", "sgs", b.work / "mp20" / "TA+curriculum-sgs" / "model", stage1, copy)
    first, copying, mixture = configs
    assert first.full_loss and first.data == "CrystalLLM.jsonl" and first.token_budget == 1_000_000
    assert (copying.data, copying.init_from, copying.full_loss, copying.token_budget) == (
        "copy.jsonl", str(stage1), False, 300_000)
    assert (mixture.data, mixture.init_from, mixture.token_budget) == ("TA.jsonl", str(copy), 410_000)


def test_stage1_from_reuses_another_runs_first_stage_and_trains_only_the_second(monkeypatch, tmp_path):
    """Two runs that share a first stage differ only in what ``--stage1-from`` leaves them to train: the copied
    stage is not retrained, and the second stage gets the budget that stage's recorded seconds left."""
    import crystalicl.train

    src = tmp_path / "earlier" / "perov5" / "curriculum-stage1-sgs"
    src.mkdir(parents=True)
    (src / "crystalicl.json").write_text(json.dumps({"metrics": {"seconds": 100.0}}))
    configs = []
    monkeypatch.setattr(crystalicl.train, "train", lambda cfg: configs.append(cfg))
    a = argparse.Namespace(name="unused", work=str(tmp_path / "now"), arms=[], preset="tiny", base_model=None,
                           epochs=100.0, train_batch_size=16, train_seed=0, keep_best=True, best_by="val_loss",
                           budget=1200.0, curriculum=0.5, switch_at=0.95, stage1_patience=None,
                           stage1_from=str(tmp_path / "earlier"))
    b = paper_tables.Bench(a)
    monkeypatch.setattr(b, "data", lambda ds, arm, fmt: (Path("train.jsonl"), Path("val.jsonl")))
    init = b.work / "perov5" / "curriculum-stage1-sgs"
    b._train("perov5", "CrystalICL", "sgs", b.work / "perov5" / "CrystalICL+curriculum-sgs" / "model", init)
    assert (init / "crystalicl.json").exists()
    assert len(configs) == 1 and configs[0].init_from == str(init) and configs[0].time_budget == 1100.0
    a.stage1_from = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="stage1-from"):
        b._train("carbon24", "CrystalICL", "sgs", b.work / "carbon24" / "m", b.work / "carbon24" / "stage1")


def test_stage1_patience_ends_the_first_stage_early_and_gives_the_mixture_what_it_left(monkeypatch, tmp_path):
    """On reduced MP-20 the first stage's copying plateaus below ``--switch-at`` while its validation loss rises
    (``paper_tables_mp20_2400``): ``--stage1-patience`` stops that stage, and the mixture gets the seconds it left,
    not the fixed ``--curriculum`` share."""
    import crystalicl.train

    configs = []

    def fake_train(cfg):
        configs.append(cfg)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "crystalicl.json").write_text(json.dumps({"metrics": {"seconds": 300.0}}))

    monkeypatch.setattr(crystalicl.train, "train", fake_train)
    a = argparse.Namespace(name="unused", work=str(tmp_path), arms=[], preset="tiny", base_model=None, epochs=100.0,
                           train_batch_size=16, train_seed=0, keep_best=True, best_by="val_loss", budget=1200.0,
                           curriculum=0.5, switch_at=None, stage1_patience=3, stage1_from=None)
    b = paper_tables.Bench(a)
    monkeypatch.setattr(b, "data", lambda ds, arm, fmt: (Path("train.jsonl"), Path("val.jsonl")))
    init = b.work / "mp20" / "curriculum-stage1-sgs"
    b._train("mp20", "CrystalICL", "sgs", b.work / "mp20" / "CrystalICL+curriculum-sgs" / "model", init)
    stage1, mixture = configs
    assert stage1.patience == 3 and stage1.full_loss and stage1.time_budget == 600.0
    assert mixture.patience is None and mixture.time_budget == 900.0 and mixture.init_from == str(init)
    text = paper_tables._curriculum({"curriculum": 0.5, "switch_at": 0.95, "stage1_patience": 3})
    assert text == "≤ 0.5, until copying ≥ 0.95 or 3 checks without a lower val loss"
    assert paper_tables._curriculum({"curriculum": 0.5}) == "0.5"
    assert paper_tables._curriculum({"curriculum": 1.0, "copy_stage": 0.3}) == "1; then 0.3 on a copy stage"


def test_sample_only_draws_every_sample_the_tables_score_and_scores_none(monkeypatch, tmp_path):
    """``--sample-only`` on a GPU without the scoring stack, then the same command on a CPU: the first run must draw
    the samples of every cell the second scores, evaluate none of them, and say where it drew them."""
    import pandas as pd

    import crystalicl.data.prepare
    import crystalicl.evaluate
    import crystalicl.generate
    import crystalicl.instructions

    a = argparse.Namespace(datasets=["perov5"], formats=["sgs", "xyz"], curriculum=0.0, arms=["CrystalICL"],
                           work=str(tmp_path), name="unused", runs=2, n=3, batch_size=4, max_tokens=8, workers=1,
                           sample_only=True, processes=1, temperature=0.9, filler_floor=None)
    b = paper_tables.Bench(a)
    monkeypatch.setattr(b, "model", lambda ds, arm, fmt: tmp_path / ds / f"{arm}-{fmt}" / "model")
    monkeypatch.setattr(b, "generator", lambda model: argparse.Namespace(constrained=None))
    monkeypatch.setattr(crystalicl.data.prepare, "load_prepared", lambda ds, split: pd.DataFrame({"x": range(5)}))
    monkeypatch.setattr(crystalicl.instructions, "load_pool", lambda *args, **kw: None)
    monkeypatch.setattr(crystalicl.generate, "conditional_jobs", lambda *args, **kw: [])
    drawn, scored = [], []

    def draw(gen, jobs, out, **kw):
        out.mkdir(parents=True)
        (out / "samples.jsonl").write_text(json.dumps({"id": "0", "seconds": 0.5}) + "\n")
        drawn.append(out.relative_to(tmp_path).as_posix())

    monkeypatch.setattr(crystalicl.generate, "generate_to_file", draw)
    monkeypatch.setattr(crystalicl.evaluate, "evaluate_conditional", lambda *args, **kw: scored.append(1) or {})
    paper_tables.sample_models(b, ["conditional"])
    assert scored == []
    assert sorted(drawn) == sorted(f"perov5/CrystalICL-{fmt}/cond-perov5-{k}shot-C-run{r}"
                                   for fmt in ("sgs", "xyz") for k in (0, 3) for r in (0, 1))
    assert json.loads((tmp_path / paper_tables.SAMPLED_ON).read_text())["hardware"]["cpus"] == os.cpu_count()
    setup = {"training_hardware": "NVIDIA H200", "sampling_hardware": "1 × NVIDIA H200"}
    assert paper_tables._hardware({"hardware": {"cpus": 2}}, setup) == (
        "trained on NVIDIA H200, sampled on 1 × NVIDIA H200, scored on 2 CPUs")


def test_selection_chooses_the_demonstrations_of_few_shot_rows_in_their_own_directories(monkeypatch, tmp_path):
    """``--selection CL``: the 3-shot rows select with CL into directories named for it; 0-shot rows keep C's name
    (they show nothing), so their samples are shared with a run at the default selection."""
    import pandas as pd

    import crystalicl.data.prepare
    import crystalicl.generate
    import crystalicl.instructions

    a = argparse.Namespace(datasets=["perov5"], formats=["sgs"], curriculum=0.0, arms=["CrystalICL"],
                           work=str(tmp_path), name="unused", runs=1, n=3, batch_size=4, max_tokens=8, workers=1,
                           sample_only=True, processes=1, temperature=0.9, filler_floor=None, selection="CL")
    b = paper_tables.Bench(a)
    monkeypatch.setattr(b, "model", lambda ds, arm, fmt: tmp_path / ds / f"{arm}-{fmt}" / "model")
    monkeypatch.setattr(b, "generator", lambda model: argparse.Namespace(constrained=None))
    monkeypatch.setattr(crystalicl.data.prepare, "load_prepared", lambda ds, split: pd.DataFrame({"x": range(5)}))
    monkeypatch.setattr(crystalicl.instructions, "load_pool", lambda *args, **kw: None)
    asked = []
    monkeypatch.setattr(crystalicl.generate, "conditional_jobs",
                        lambda gen, targets, pool, names, shots, strategy, **kw: asked.append((shots, strategy)) or [])

    def draw(gen, jobs, out, **kw):
        out.mkdir(parents=True)
        (out / "samples.jsonl").write_text(json.dumps({"id": "0", "seconds": 0.5}) + "\n")

    monkeypatch.setattr(crystalicl.generate, "generate_to_file", draw)
    paper_tables.sample_models(b, ["conditional"])
    assert sorted(asked) == [(0, "C"), (3, "CL")]
    assert sorted(p.name for p in (tmp_path / "perov5" / "CrystalICL-sgs").iterdir()) == [
        "cond-perov5-0shot-C-run0", "cond-perov5-3shot-CL-run0"]


def test_side_tables_sample_their_subset_into_their_own_directories(monkeypatch, tmp_path):
    """``--side-n``/``--side-runs`` shrink the cross-domain and ablation jobs only, and a job at another prompt
    count samples into its own directory: a directory is resumed prompt by prompt, so a 200-prompt job sharing
    the 1,000-prompt job's directory would score all 1,000 of its samples."""
    import pandas as pd

    import crystalicl.data.prepare
    import crystalicl.evaluate
    import crystalicl.generate
    import crystalicl.instructions

    a = argparse.Namespace(formats=["sgs"], icl_arm="CrystalICL", work=str(tmp_path), name="unused", runs=5, n=4,
                           side_n=2, side_runs=1, batch_size=4, max_tokens=8, workers=1, processes=1,
                           temperature=0.9, ablations=["inference"], datasets=["perov5"], arms=[], curriculum=0.0)
    b = paper_tables.Bench(a)
    monkeypatch.setattr(b, "model", lambda ds, arm, fmt: tmp_path / ds / f"{arm}-{fmt}" / "model")
    monkeypatch.setattr(b, "generator", lambda model: argparse.Namespace(constrained=None))
    monkeypatch.setattr(paper_tables, "mp20_name", lambda: "mp20_biternary")
    monkeypatch.setattr(paper_tables, "_protocol", lambda ds: "reduced (mp20_biternary)")
    monkeypatch.setattr(paper_tables, "_save", lambda *args: None)
    monkeypatch.setattr(crystalicl.data.prepare, "load_prepared", lambda ds, split: pd.DataFrame({"x": range(9)}))
    monkeypatch.setattr(crystalicl.instructions, "load_pool", lambda *args, **kw: None)
    monkeypatch.setattr(crystalicl.generate, "conditional_jobs", lambda gen, targets, *args, **kw: list(targets.x))
    drawn = {}

    def draw(gen, jobs, out, **kw):
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples.jsonl").write_text(json.dumps({"id": "0"}) + "\n")
        drawn[out.relative_to(tmp_path).as_posix()] = len(jobs)

    monkeypatch.setattr(crystalicl.generate, "generate_to_file", draw)
    monkeypatch.setattr(crystalicl.evaluate, "evaluate_conditional", lambda *args, **kw: {})
    monkeypatch.setattr(crystalicl.evaluate, "aggregate_runs", lambda runs: {"runs": len(runs)})
    res = _fresh()
    paper_tables.run_cross_domain(b, res)
    paper_tables.run_ablations(b, res)
    assert drawn and all(k == 2 and "-n2-run0" in d for d, k in drawn.items())
    assert "mp20_biternary/CrystalICL-sgs/cond-perov5-3shot-C-cross-n2-run0" in drawn
    assert "mp20_biternary/CrystalICL-sgs/cond-mp20_biternary-3shot-C-shuffled-n2-run0" in drawn
    b.conditional(b.model("perov5", "CrystalICL", "sgs"), "perov5", 0)  # a main-table job keeps --n and --runs
    assert [drawn[f"perov5/CrystalICL-sgs/cond-perov5-0shot-C-run{r}"] for r in range(5)] == [4] * 5
    setup = {"n": 4, "runs": 5, "side_n": 2, "side_runs": 1}
    assert paper_tables._side(setup) == ", 1 × 2 prompts (a subset)" and paper_tables._side({"n": 4}) == ""


def test_the_training_tables_show_the_tokens_a_budget_bought(committed):
    """A budget in seconds buys fewer tokens when the shared machine slows down; the tables say how many, and rows
    from before tokens were recorded still render."""
    stage = {"steps": 3698, "seconds": 2400.7, "tokens": 11214807, "stopped_by": "time_budget", "val_loss": 0.3052,
             "history": [{"step": 3400, "val_loss": 0.3044}, {"step": 3600, "val_loss": 0.3052}]}
    summary = paper_tables._training_summary(stage)
    assert summary["tokens"] == 11214807 and summary["lowest_at_step"] == 3400
    committed["training"].setdefault("MP20", {})["CrystalLLM (test)"] = summary
    md = paper_tables.markdown(committed)
    assert "| MP20 | CrystalLLM (test) | 3698 | 11.2 M | 2401 | time_budget |" in md  # what stopped it, too
    assert "| – |" in md.split("## Training")[1]  # a committed row without tokens


def _bench_with_fake_training(monkeypatch, tmp_path, metrics: dict, fake_data: bool = True, **args) -> tuple:
    """A Bench whose training only records its configs and writes a model directory with these metrics (and, with
    ``fake_data``, whose instruction sets are names that need no building)."""
    import crystalicl.train

    configs = []

    def fake_train(cfg):
        configs.append(cfg)
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "crystalicl.json").write_text(json.dumps({"metrics": metrics}))

    monkeypatch.setattr(crystalicl.train, "train", fake_train)
    a = argparse.Namespace(name="unused", work=str(tmp_path), arms=[], preset="tiny", base_model=None, epochs=100.0,
                           train_batch_size=16, train_seed=0, keep_best=True, best_by="val_loss",
                           stage1_patience=None, stage1_from=None, **args)
    b = paper_tables.Bench(a)
    if fake_data:
        monkeypatch.setattr(b, "data", lambda ds, arm, fmt: (Path("train.jsonl"), Path("val.jsonl")))
    return b, configs


def test_a_token_budget_splits_the_curriculum_by_tokens_and_names_itself(monkeypatch, tmp_path):
    """``--token-budget``: the first stage gets its share of the tokens and the mixture the tokens it left, so two
    arms trained in sessions of different machine speed get the same compute."""
    b, configs = _bench_with_fake_training(monkeypatch, tmp_path, {"seconds": 9.0, "tokens": 4_000_000},
                                           budget=1200.0, curriculum=0.5, switch_at=0.95, token_budget=20_000_000)
    init = b.work / "mp20" / "curriculum-stage1-sgs"
    b._train("mp20", "CrystalICL", "sgs", b.work / "mp20" / "CrystalICL+curriculum-sgs" / "model", init)
    b._train("mp20", "CrystalLLM", "sgs", b.work / "mp20" / "CrystalLLM-sgs" / "model", None)
    stage1, mixture, baseline = configs
    assert stage1.token_budget == 10_000_000 and stage1.time_budget is None
    assert mixture.token_budget == 16_000_000 and baseline.token_budget == 20_000_000  # stage 1 stopped at 4 M
    assert paper_tables._budget({"budget_s": 1200.0, "token_budget": 20_000_000}) == "20 M tokens"
    assert paper_tables._budget({"budget_s": 1200.0}) == "1200 s"


def test_a_first_stage_that_spends_the_whole_budget_leaves_no_mixture_to_train(monkeypatch, tmp_path):
    """``--curriculum 1 --switch-at 0.8`` on reduced MP-20 at 11.2 M tokens: the first stage never copied 0.8 and
    spent every token. Training the mixture on what was left (nothing) took one step at a zero learning rate and
    labelled the first stage's weights CrystalICL+curriculum; the run must stop and say why instead."""
    metrics = {"seconds": 879.0, "tokens": 11_214_807, "stopped_by": "token_budget", "copying": 0.7385}
    b, configs = _bench_with_fake_training(monkeypatch, tmp_path, metrics, budget=2400.0, curriculum=1.0,
                                           switch_at=0.8, token_budget=11_214_807)
    out = b.work / "mp20" / "CrystalICL+curriculum-sgs" / "model"
    with pytest.raises(ConfigError, match="11,214,807 tokens.*copying 0.7385.*nothing is left for the mixture"):
        b._train("mp20", "CrystalICL", "sgs", out, b.work / "mp20" / "curriculum-stage1-sgs")
    assert len(configs) == 1 and not out.exists()  # the first stage only: no mixture model written


@pytest.mark.parametrize("tables", [["conditional", "unconditional"], ["ablations"]])
def test_prepare_only_builds_every_instruction_set_train_only_then_needs(monkeypatch, tmp_path, tables):
    """A GPU lease on a machine without the datasets: ``--prepare-only`` here builds the instruction sets, and
    ``--train-only`` there, from the same ``--work``, must build none (it has nothing to build them from)."""
    import crystalicl.instructions

    built = []

    def build(ds, split, fmt, mix, out, **kw):
        built.append(Path(out))
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("")

    monkeypatch.setattr(crystalicl.instructions, "build_dataset", build)
    monkeypatch.setattr(paper_tables, "mp20_name", lambda: "mp20_biternary")
    metrics = {"steps": 1, "seconds": 1.0, "tokens": 10, "stopped_by": "copying", "copying": 0.9}
    b, configs = _bench_with_fake_training(
        monkeypatch, tmp_path, metrics, fake_data=False, budget=10.0, token_budget=None, curriculum=0.5,
        switch_at=0.8, datasets=["perov5"], formats=["sgs"], icl_arm="CrystalICL+curriculum",
        ablations=["inference", "mixtures"], few_shot=3, uncond_share=0.03, workers=1)
    paper_tables.prepare_models(b, tables)
    assert built and not configs  # instructions only, no training

    def refuse(*args, **kw):
        raise AssertionError("built instructions while training")

    monkeypatch.setattr(crystalicl.instructions, "build_dataset", refuse)
    paper_tables.train_models(b, tables)
    read = {Path(c.data) for c in configs} | {Path(c.val_data) for c in configs}
    assert read == set(built)  # every set built is read, and no set is read unbuilt
    assert any(c.init_from for c in configs)  # the curriculum's mixture after its first stage, both prepared
