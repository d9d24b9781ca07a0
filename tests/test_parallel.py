import json

import pytest

from crystalicl.generate import Generator, done_ids, generate_to_file
from crystalicl.parallel import PART, merge_parts
from crystalicl.text import decode


def test_workers_write_every_job_once_in_job_order_and_resume(tiny_model, tmp_path):
    gen = Generator.from_pretrained(tiny_model[0], device="cpu")
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


def test_parallel_sampling_needs_a_model_it_can_load_again(tiny_model, tmp_path):
    gen = Generator.from_pretrained(tiny_model[0], device="cpu")
    bare = Generator(gen.model, gen.tokenizer, gen.fmt, gen.template, gen.kind)
    with pytest.raises(ValueError, match="from_pretrained"):
        generate_to_file(bare, [("p0", gen.prompt(None), {})], tmp_path, processes=2, progress=False)
