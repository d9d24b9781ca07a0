"""Shared by the benchmark scripts: provenance (commit, date, hardware, command) and result writing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def provenance() -> dict:
    def git(*args):
        try:
            out = subprocess.check_output(["git", *args], cwd=RESULTS.parent, text=True, stderr=subprocess.DEVNULL)
            return out.strip()
        except Exception:
            return None

    return {
        "commit": git("rev-parse", "HEAD"),
        # results files are what a run writes (every save after the first would read as dirty): not code
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ":/",
                          ":(top,exclude)benchmarks/results")),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hardware": {"machine": platform.machine(), "processor": platform.processor() or None,
                     "cpus": os.cpu_count(), "gpu": _gpu(), "python": platform.python_version()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def _gpu() -> str | None:
    """The CUDA device a run used, if it imported torch and has one (importing torch just to ask is slow)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return f"{torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}"


def write(name: str, payload: dict, summary_md: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload | {"provenance": provenance()}, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(summary_md.rstrip() + "\n")
    return path


def analysed(samples: Path) -> list[tuple[dict, dict]]:
    """(record, per-sample analysis) of a samples.jsonl, the analysis read from the cache evaluation left beside it
    (``eval/`` + :data:`crystalicl.evaluate.ANALYSIS_DIR`), so a sorting script sees the same verdicts as the scores."""
    from crystalicl.evaluate import ANALYSIS_DIR, analyze_many, load_samples

    records = load_samples(samples)
    return list(zip(records, analyze_many(records, samples.parent / "eval" / ANALYSIS_DIR, progress=False),
                    strict=True))


def conditional_jobs(models: list[str]) -> dict[str, Path]:
    """Every ``cond-*/samples.jsonl`` under paper_tables.py model directories, named work/dataset/arm/job."""
    jobs = {}
    for m in map(Path, models):
        for job in sorted(m.glob("cond-*/samples.jsonl")):
            jobs[f"{m.parent.parent.name}/{m.parent.name}/{m.name}/{job.parent.name}"] = job
    return jobs
