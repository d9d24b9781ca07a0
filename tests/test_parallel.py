import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def _state(pid: int) -> str | None:
    """A process's state letter from /proc (``Z``: a zombie), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _workers(pid: int) -> list[int]:
    """The spawned pool workers among ``pid``'s live children."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            spawned = b"spawn_main" in (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and spawned:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_stop_when_their_parent_is_killed(tiny_model, tmp_path):
    """A killed run's workers stop too, instead of sampling on beside (and into the part files of) the run that
    resumes it; what they wrote merges as usual."""
    script = (
        "import sys\n"
        "from crystalicl.generate import Generator, generate_to_file\n"
        "gen = Generator.from_pretrained(sys.argv[1], device='cpu')\n"
        "jobs = [(f'p{i}', gen.prompt({'formula': 'SrTiO3'}), {}) for i in range(5000)]\n"
        "generate_to_file(gen, jobs, sys.argv[2], processes=2, batch_size=2, max_new_tokens=120, max_attempts=1,"
        " progress=False)\n")
    parts = [tmp_path / PART.format(k) for k in range(2)]
    run = subprocess.Popen([sys.executable, "-c", script, str(tiny_model[0]), str(tmp_path)])
    workers: list[int] = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not all(p.exists() and p.stat().st_size for p in parts):
            time.sleep(0.5)
        workers = _workers(run.pid)
        assert len(workers) == 2, "both workers should be sampling by now"
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_state(p) not in (None, "Z") for p in workers):
            time.sleep(0.5)
        assert all(_state(p) in (None, "Z") for p in workers)
    finally:
        run.kill()
        for p in workers:
            if _state(p) not in (None, "Z"):
                os.kill(p, signal.SIGKILL)
    assert 0 < merge_parts(tmp_path, [(f"p{i}", "", {}) for i in range(5000)]) < 5000
