import json

import pytest
from conftest import sample

from crystalicl.data.prepare import prepare_one
from crystalicl.generate import Generator, done_ids, generate_to_file
from crystalicl.instructions import write_jsonl
from crystalicl.parallel import PART, merge_parts
from crystalicl.prompts import DEFAULT
from crystalicl.text import decode
from crystalicl.train import TrainConfig, train


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A compact model trained briefly on zero-shot SGS instructions for 48 real Perov-5 crystals."""
    d = tmp_path_factory.mktemp("par")
    df = sample("perov5", "val", n=48)
    recs = []
    for m, c in zip(df.material_id, df.cif, strict=True):
        r = prepare_one(m, c)
        recs.append({"prompt": DEFAULT.generation(f"The chemical formula is {r['formula']}.", "sgs"),
                     "response": r["sgs"], "task": "zero-shot"})
    write_jsonl(recs, d / "train.jsonl")
    (d / "train.jsonl.meta.json").write_text(json.dumps({"format": "sgs"}))
    train(TrainConfig(data=str(d / "train.jsonl"), out=str(d / "model"), max_steps=30, batch_size=8,
                      log_every=10, save_every=30), progress=False)
    return d / "model"


def test_workers_write_every_job_once_in_job_order_and_resume(model_dir, tmp_path):
    gen = Generator.from_pretrained(model_dir, device="cpu")
    jobs = [(f"p{i}", gen.prompt({"formula": f}), {}) for i, f in enumerate(["SrTiO3", "BaZrO3", "KNbO3"] * 4)]
    first = generate_to_file(gen, jobs[:7], tmp_path, processes=2, batch_size=4, max_new_tokens=120,
                             max_attempts=1, progress=False)
    assert first["generated"] == 7 and first["processes"] == 2
    again = generate_to_file(gen, jobs, tmp_path, processes=2, batch_size=4, max_new_tokens=120, max_attempts=1,
                             progress=False)
    assert again["already_done"] == 7 and again["generated"] == 5
    recs = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == [j[0] for j in jobs]  # each once, in job order
    assert not list(tmp_path.glob(PART.format("*")))
    assert all(decode(r["text"], "sgs") is not None for r in recs)
    assert {p.stem for p in (tmp_path / "cifs").glob("*.cif")} == {j[0] for j in jobs}


def test_parts_left_by_a_killed_run_are_merged_once(tmp_path):
    """A killed run leaves part files, maybe with a torn last line and a record already merged: the next merge
    keeps every id once, in job order, and drops the parts."""
    jobs = [(f"u{i}", "", {}) for i in range(6)]
    (tmp_path / "samples.jsonl").write_text(json.dumps({"id": "u1", "text": "a"}) + "\n")
    (tmp_path / PART.format(0)).write_text("".join(json.dumps({"id": f"u{i}", "text": "b"}) + "\n"
                                                   for i in (4, 0, 1)) + '{"id": "u2", "te')
    (tmp_path / PART.format(1)).write_text(json.dumps({"id": "u3", "text": "c"}) + "\n")
    assert merge_parts(tmp_path, jobs) == 3
    recs = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == ["u1", "u0", "u3", "u4"] and recs[0]["text"] == "a"
    assert done_ids(tmp_path / "samples.jsonl") == {"u0", "u1", "u3", "u4"}
    assert not list(tmp_path.glob(PART.format("*")))
    assert merge_parts(tmp_path, jobs) == 0


def test_parallel_sampling_needs_a_model_it_can_load_again(model_dir, tmp_path):
    gen = Generator.from_pretrained(model_dir, device="cpu")
    bare = Generator(gen.model, gen.tokenizer, gen.fmt, gen.template, gen.kind)
    with pytest.raises(ValueError, match="from_pretrained"):
        generate_to_file(bare, [("p0", gen.prompt(None), {})], tmp_path, processes=2, progress=False)
