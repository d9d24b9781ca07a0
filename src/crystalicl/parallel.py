"""Sample one job list in several processes, each with its own copy of the model.

Grammar-constrained decoding works out each row's allowed tokens on the CPU, one row after another, while the
model's step is short (a compact model, or any model on a GPU): one process leaves a GPU idle and the other CPU
cores unused. Workers split the jobs, append to their own part files (resumable, like
:func:`crystalicl.generate.generate_to_file`), and the parts are merged into ``samples.jsonl`` in job order.
Worker ``k`` draws from its own random stream, so samples depend on the number of workers (not on timing).
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

from tqdm.auto import tqdm

PART = "samples.part{}.jsonl"


def exit_with_parent(parent: int, interval: float = 2.0) -> threading.Thread:
    """Exit this process once ``parent`` is gone. A pool's workers outlive a parent that was killed: they would go
    on sampling (taking the CPUs from the next run) and appending to the part files a resumed run writes too."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)  # the parts keep every finished line; a torn last one is dropped on merge and resampled

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def _sample_part(source: dict, jobs: list, path: str, cif_dir: str | None, stream: int, threads: int,
                 kw: dict) -> tuple[int, int]:
    """One worker: load the model as the parent did, sample its share of the jobs."""
    import torch

    from crystalicl.generate import Generator, append_samples

    torch.set_num_threads(threads)
    gen = Generator.from_pretrained(**source)
    return append_samples(gen, jobs, Path(path), None if cif_dir is None else Path(cif_dir),
                          **{**kw, "progress": False, "stream": stream})


class _LineCounter:
    """Lines written so far to growing part files, reading only what was appended since the last count."""

    def __init__(self, paths: list[Path]):
        self.offsets = {p: 0 for p in paths}
        self.total = 0

    def __call__(self) -> int:
        for path, offset in self.offsets.items():
            if path.exists() and path.stat().st_size > offset:
                with open(path, "rb") as f:
                    f.seek(offset)
                    new = f.read()
                self.offsets[path] = offset + len(new)
                self.total += new.count(b"\n")
        return self.total


def merge_parts(out_dir: Path, jobs: list[tuple[str, str, dict]]) -> int:
    """Append the part files' records to ``samples.jsonl`` in job order (each id once), then drop the parts;
    returns how many records were added. Safe to repeat after an interruption."""
    from crystalicl.generate import _repair_tail, done_ids

    out_dir = Path(out_dir)
    path = out_dir / "samples.jsonl"
    _repair_tail(path)
    done = done_ids(path)
    parts = sorted(out_dir.glob(PART.format("*")))
    records: dict[str, str] = {}
    for part in parts:
        with open(part) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a torn last line of a killed worker: resampled next time
                    continue
                if rec.get("id") not in done:
                    records[rec["id"]] = line if line.endswith("\n") else line + "\n"
    added = len(records)
    with open(path, "a") as f:
        for job_id, _, _ in jobs:
            if job_id in records:
                f.write(records.pop(job_id))
        for line in records.values():  # records of jobs not in this list (an earlier, longer run) are kept
            f.write(line)
        f.flush()
        os.fsync(f.fileno())
    for part in parts:
        part.unlink()
    return added


def generate_in_parallel(gen, jobs: list[tuple[str, str, dict]], out_dir: Path, processes: int,
                         write_cifs: bool = True, progress: bool = True, **kw) -> dict:
    """:func:`crystalicl.generate.generate_to_file` with ``processes`` workers (see the module docstring)."""
    from crystalicl.generate import done_ids

    if gen.source is None:
        raise ValueError("parallel sampling needs a Generator loaded with Generator.from_pretrained")
    out_dir = Path(out_dir)
    path = out_dir / "samples.jsonl"
    merge_parts(out_dir, jobs)  # what an interrupted run left in its parts
    done = done_ids(path)
    todo = [j for j in jobs if j[0] not in done]
    t = time.perf_counter()
    n_ok = attempts = 0
    if todo:
        processes = min(processes, len(todo))
        cif_dir = str(out_dir / "cifs") if write_cifs else None
        threads = 1 if gen.model is not None and gen.model.device.type == "cuda" else \
            max(1, (os.cpu_count() or 1) // processes)
        shares = [todo[k::processes] for k in range(processes)]  # interleaved: long and short prompts alike
        parts = [out_dir / PART.format(k) for k in range(processes)]
        bar = tqdm(total=len(todo), desc="generate", unit="cryst", disable=not progress)
        written = _LineCounter(parts)
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn"), initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:  # each worker, once: stop when this process dies
            futures = [pool.submit(_sample_part, gen.source, share, str(part), cif_dir, k + 1, threads, kw)
                       for k, (share, part) in enumerate(zip(shares, parts, strict=True))]
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=2.0, return_when=FIRST_EXCEPTION)
                bar.n = written()
                bar.refresh()
                for fut in finished:
                    fut.result()  # a worker's error stops the run (its parts are kept and merged next time)
        bar.close()
        for fut in futures:
            ok, draws = fut.result()
            n_ok, attempts = n_ok + ok, attempts + draws
        merge_parts(out_dir, jobs)
    return {"requested": len(jobs), "already_done": len(jobs) - len(todo), "generated": len(todo),
            "parsed": n_ok, "attempts": attempts, "seconds": time.perf_counter() - t, "processes": processes}
