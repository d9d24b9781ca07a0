"""Training: LoRA on a pretrained causal LM, or the compact crystal LM from scratch — one loop.

The loss is the negative log-likelihood of the response (and end-of-sequence) given the prompt; prompt
tokens are not scored (``full_loss`` scores everything, as the CrystaLLM-style baseline does).
The learning rate warms up, then follows a cosine over the run's progress — steps, or the share of
``time_budget`` (or ``token_budget``) spent when that is further along, so a budgeted run always ends annealed.
A token budget is equal compute for arms trained on a shared machine whose speed varies: the same seconds bought
11.2 M tokens in one session and 25.7 M in another.
Checkpoints (weights, optimiser, scheduler, step) are written atomically every ``save_every`` steps and
when the wall-clock budget runs out; ``resume`` continues from the last one with the same batch order
(the order is a pure function of seed and epoch). ``init_from`` starts a compact model from an earlier run's
weights with a fresh optimiser and schedule: the second stage of a curriculum (zero-shot whole-text first,
so a from-scratch model learns to read the formula, then the few-shot mixture); ``stop_at_copying`` ends
such a first stage as soon as it reads the conditions it must write out — the formula's elements and, in SGS
text, the space group's symbol (teacher-forced copying on the validation set, the lower of the two). The output
directory holds everything generation needs: weights (safetensors) or LoRA adapter, tokenizer, and
``crystalicl.json`` (text format, prompt template, training config, metrics).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from crystalicl.copying import condition_copying, formula_copying_records, require_pymatgen, space_group_copying_records
from crystalicl.errors import ConfigError
from crystalicl.model.batching import collate
from crystalicl.model.loading import META, read_meta

# what a copying check records (history entries and, at the kept weights, the run's metrics)
COPYING_KEYS = ("copying", "formula_copying", "space_group_copying", "formula_likelihood")
BEST_BY = ("val_loss", "copying")


@dataclass
class TrainConfig:
    data: str
    out: str
    val_data: str | None = None
    base_model: str | None = None  # hub id, directory or .gguf file; None: the compact model
    init_from: str | None = None  # compact only: start from this trained model's weights (curriculum stage 2)
    preset: str = "tiny"
    fmt: str | None = None  # None: from the instruction set's .meta.json, else told from its texts
    epochs: float = 1.0
    max_steps: int | None = None
    time_budget: float | None = None  # seconds of training, then save and stop
    token_budget: int | None = None  # training tokens of this process (prompt and response, not padding), then stop
    batch_size: int = 8
    grad_accum: int = 1
    lr: float | None = None  # default: 5e-4 (LoRA, the paper's) / 2e-3 (compact)
    warmup: float = 0.03
    weight_decay: float = 0.0
    max_length: int = 2048
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"
    merge: bool = False
    full_loss: bool = False
    bf16: bool | None = None  # default: on (CUDA with bf16, or CPU autocast)
    eval_every: int = 200
    # stop once teacher-forced condition copying on the validation set (the lower of formula and space-group
    # symbol copying, crystalicl.copying) reaches this: the end of a curriculum's first stage, where the model
    # reads its conditions; checked every eval_every steps
    stop_at_copying: float | None = None
    # measure that copying at every check without stopping on it (the history records it): whether a run that
    # samples the wrong formula stopped reading it somewhere, or never learnt to
    track_copying: bool = False
    # end with the weights of the lowest validation loss seen (checked every eval_every steps): a small training
    # set overfits long before a GPU's budget ends (reduced MP-20, small preset, H200: val loss 0.35 at 2,400
    # steps, 0.81 at 6,230); patience: stop after that many checks without a new best
    keep_best: bool = False
    # what "best" means for keep_best: the lowest validation loss, or the highest teacher-forced condition copying
    # (ties: the lower loss). Few-shot Carbon-24: the mixture's val loss is lowest at step 1,400 of 2,360 while its
    # space-group copying climbs from 0.72 to 0.85 by step 2,200; kept by copying, 3-shot space-group success is
    # 0.830 against 0.555 (benchmarks/results/paper_tables_c24_fs3_copying.md)
    best_by: str = "val_loss"
    patience: int | None = None
    save_every: int = 200
    log_every: int = 10
    seed: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
        # a zero budget would still take one step, and its schedule would fall back to the epochs': refuse it
        for name in ("time_budget", "token_budget"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive, not {value!r}")


def _encode(records, tok, max_length: int, full_loss: bool):
    """Token ids and labels (-100 on the prompt unless ``full_loss``); over-long examples are dropped."""
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    prompts = tok([r["prompt"] for r in records], add_special_tokens=False)["input_ids"]
    responses = tok([r["response"] for r in records], add_special_tokens=False)["input_ids"]
    out, dropped = [], 0
    for p, r in zip(prompts, responses, strict=True):
        ids = bos + p + r + [tok.eos_token_id]
        if len(ids) > max_length:
            dropped += 1
            continue
        n_prompt = len(bos) + len(p)
        labels = ids.copy() if full_loss else [-100] * n_prompt + ids[n_prompt:]
        out.append((np.array(ids, np.int64), np.array(labels, np.int64)))
    return out, dropped


def _batches(n_examples: int, lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Length-bucketed batches in a seeded order: shuffle, sort within windows of 50 batches, shuffle batches."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(n_examples)
    window = batch_size * 50
    batches = []
    for s in range(0, n_examples, window):
        w = perm[s:s + window]
        w = w[np.argsort(lengths[w], kind="stable")]
        batches += [w[i:i + batch_size] for i in range(0, len(w), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def format_of(records: list[dict], path: str, n: int = 8) -> str:
    """The text format of an instruction set without its ``.meta.json`` (copied alone, or written by hand), told
    from its first ``n`` crystal responses: the model's label decides the grammar it samples under."""
    from crystalicl.errors import ParseError
    from crystalicl.text import detect_format

    texts = [r["response"] for r in records if r.get("task") != "property" and r.get("response")][:n]
    try:
        return detect_format(texts)
    except ParseError as e:
        raise ParseError(f"{path} has no .meta.json and {e}: pass its format (--format)") from None


def _read_records(path: str) -> tuple[list[dict], dict]:
    from crystalicl.instructions import read_jsonl

    meta_path = Path(str(path) + ".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return read_jsonl(Path(path)), meta


def _model_and_tokenizer(cfg: TrainConfig):
    if cfg.init_from is not None:
        if cfg.base_model is not None:
            raise ConfigError("init_from continues a compact model; a LoRA run starts from base_model instead")
        from crystalicl.model.loading import load_trained

        model, tok, meta = load_trained(Path(cfg.init_from))
        if meta["kind"] != "compact":
            raise ConfigError(f"init_from must be a compact crystalicl model, {cfg.init_from} is {meta['kind']}")
        return model.train(), tok, "compact"
    if cfg.base_model is None:
        from crystalicl.model.compact import build_model
        from crystalicl.model.tokenizer import build_tokenizer

        tok = build_tokenizer()
        return build_model(cfg.preset, tok, cfg.seed), tok, "compact"
    from peft import LoraConfig, get_peft_model

    from crystalicl.model.loading import load_base

    model, tok = load_base(cfg.base_model)
    targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else cfg.lora_targets.split(",")
    lora = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=targets)
    return get_peft_model(model, lora), tok, "lora"


@dataclass
class _State:
    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    history: list | None = None
    best_val: float | None = None  # the lowest validation loss and its step, for patience
    best_step: int | None = None
    kept_step: int | None = None  # keep_best: the check whose weights are kept, and its score (_keep_score)
    kept_score: list | None = None


def _trainable(model) -> dict:
    """A CPU copy of the trainable weights (a LoRA run's adapters only), for keep_best."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def _restore(model, weights: dict) -> None:
    import torch

    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in weights:
                p.copy_(weights[n])


def _keep_score(best_by: str, val_loss: float, check: dict | None) -> list:
    """What keep_best maximises: -loss, or (copying, -loss) so that equal copying goes to the lower loss."""
    return [-val_loss] if best_by == "val_loss" else [check["copying"], -val_loss]


def _copying_check(model, tok, val_records: list[dict]) -> dict:
    """One validation check of teacher-forced condition copying, as the history records it."""
    read = condition_copying(model, tok, val_records)
    check = {"copying": read["conditions"], "formula_copying": read["accuracy"],
             "space_group_copying": read.get("space_group"), "formula_likelihood": read.get("formula_likelihood")}
    return {k: v for k, v in check.items() if v is not None}


def _save_checkpoint(ckpt: Path, model, opt, sched, state: _State, best: dict | None = None) -> None:
    import torch

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp / "model"))
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict(), "state": asdict(state),
                "torch_rng": torch.get_rng_state(), "best": best}, tmp / "trainer.pt")
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.rename(ckpt)


def _load_checkpoint(ckpt: Path, model, opt, sched, kind: str) -> tuple[_State, dict | None]:
    import torch
    from safetensors.torch import load_file

    weights = ckpt / "model"
    if kind == "lora":
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(weights / "adapter_model.safetensors")))
    else:
        sd = load_file(str(weights / "model.safetensors"))
        model.load_state_dict(sd, strict=False)  # tied embeddings are stored once
    blob = torch.load(ckpt / "trainer.pt", weights_only=False)
    opt.load_state_dict(blob["opt"])
    sched.load_state_dict(blob["sched"])
    torch.set_rng_state(blob["torch_rng"])
    return _State(**blob["state"]), blob.get("best")


def _hardware(device) -> str:
    """What trained the model, for results that compare budgets: the GPU's name, or the CPU count."""
    import os

    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPUs"


def evaluate_loss(model, data, pad_id: int, batch_size: int, autocast) -> float:
    """Mean per-token loss over ``data`` (scored tokens only)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(data), batch_size):
            ids, mask, labels = collate(data[s:s + batch_size], pad_id)
            with autocast():
                logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
            shift = labels[:, 1:].to(model.device)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                                     shift.reshape(-1), ignore_index=-100, reduction="sum")
            total += float(loss)
            count += int((shift != -100).sum())
    model.train()
    return total / max(count, 1)


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train and write a model directory; returns the metrics written to ``crystalicl.json``."""
    import contextlib

    import torch

    from crystalicl.prompts import DEFAULT

    by_copying = cfg.keep_best and cfg.best_by == "copying"
    measure_copying = cfg.stop_at_copying is not None or cfg.track_copying or by_copying
    if measure_copying:
        require_pymatgen()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    records, data_meta = _read_records(cfg.data)
    fmt = cfg.fmt or data_meta.get("format") or format_of(records, cfg.data)
    prior = read_meta(Path(cfg.init_from)) if cfg.init_from is not None else None  # curriculum: earlier stage
    if prior is not None and prior.get("format") != fmt:
        raise ConfigError(f"init_from model writes {prior.get('format')!r} text but {cfg.data} is {fmt!r}")
    from accelerate import Accelerator

    torch.manual_seed(cfg.seed)
    model, tok, kind = _model_and_tokenizer(cfg)
    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else (not cuda or torch.cuda.is_bf16_supported())
    # accelerate handles device placement and multi-GPU (launch with `accelerate launch -m crystalicl ...`);
    # autocast stays explicit so CPU bf16 behaves the same with or without it.
    acc = Accelerator(cpu=not cuda)
    device = acc.device
    model.to(device).train()
    world, rank = acc.num_processes, acc.process_index

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    data, dropped = _encode(records, tok, cfg.max_length, cfg.full_loss)
    if not data:
        raise ValueError(f"no usable training examples in {cfg.data} (all longer than {cfg.max_length} tokens?)")
    val_records = _read_records(cfg.val_data)[0] if cfg.val_data else []
    val = _encode(val_records, tok, cfg.max_length, cfg.full_loss)[0] if val_records else []
    if (cfg.keep_best or cfg.patience) and not val:
        raise ConfigError("keep_best and patience need validation instructions (val_data)")
    if cfg.best_by not in BEST_BY:
        raise ConfigError(f"best_by must be one of {', '.join(BEST_BY)}, not {cfg.best_by!r}")
    if measure_copying and not (formula_copying_records(val_records) or space_group_copying_records(val_records)):
        raise ConfigError("stop_at_copying, track_copying and best_by='copying' need validation instructions "
                         "conditioned on a formula or a space group (val_data)")
    lengths = np.array([len(x) for x, _ in data])
    per_epoch = math.ceil(len(data) / cfg.batch_size / world)  # micro-batches per process and epoch
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))
    lr = cfg.lr or (5e-4 if kind == "lora" else 2e-3)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    clock = {"elapsed": 0.0, "tokens": 0}  # training seconds and tokens so far, read by the schedule

    def lr_factor(step: int) -> float:
        """Warm-up then cosine decay over the run's progress: steps done, or the time budget spent if that
        is further along, so a budgeted run anneals fully whatever its step count."""
        p = step / total
        if cfg.time_budget:
            p = max(p, clock["elapsed"] / cfg.time_budget)
        if cfg.token_budget:
            p = max(p, clock["tokens"] / cfg.token_budget)
        if p < cfg.warmup:
            return p / cfg.warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (p - cfg.warmup) / max(1.0 - cfg.warmup, 1e-9))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    if world > 1:
        model, opt = acc.prepare(model, opt)  # DDP; the scheduler is stepped by hand, once per step
    ckpt = out / "checkpoint"
    state, best = _State(history=[]), None
    if cfg.resume and ckpt.is_dir():
        state, best = _load_checkpoint(ckpt, model, opt, sched, kind)
    bar = tqdm(total=total, initial=state.step, desc="train", unit="step", disable=not progress)
    micro = state.step * cfg.grad_accum  # micro-batches already consumed
    t_start, tokens_start, last_loss = time.perf_counter(), state.tokens, float("nan")
    stopped_by = "steps"
    while state.step < total:
        epoch, offset = divmod(micro, per_epoch)
        batches = _batches(len(data), lengths, cfg.batch_size, cfg.seed, epoch)[rank::world][:per_epoch]
        for b in batches[offset:]:
            ids, mask, labels = collate([data[i] for i in b], tok.pad_token_id)
            with autocast():
                loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            acc.backward(loss / cfg.grad_accum)
            micro += 1
            state.tokens += int(mask.sum())
            if micro % cfg.grad_accum:
                continue
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            clock["elapsed"], clock["tokens"] = state.seconds + time.perf_counter() - t_start, state.tokens
            sched.step()
            opt.zero_grad(set_to_none=True)
            state.step += 1
            last_loss = loss.item()
            elapsed = state.seconds + time.perf_counter() - t_start
            tok_s = (state.tokens - tokens_start) / max(time.perf_counter() - t_start, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}", tok_s=f"{tok_s:,.0f}")
            if state.step % cfg.log_every == 0:
                state.history.append({"step": state.step, "loss": last_loss, "seconds": round(elapsed, 1),
                                      "lr": opt.param_groups[0]["lr"]})
            stale = False
            if val and state.step % cfg.eval_every == 0:
                v = evaluate_loss(model, val, tok.pad_token_id, cfg.batch_size, autocast)
                state.history.append({"step": state.step, "val_loss": v, "seconds": round(elapsed, 1)})
                if state.best_val is None or v < state.best_val:
                    state.best_val, state.best_step = v, state.step
                checks_since = (state.step - state.best_step) // cfg.eval_every
                stale = cfg.patience is not None and checks_since >= cfg.patience
            copies, check = False, None
            if measure_copying and state.step % cfg.eval_every == 0:
                check = _copying_check(acc.unwrap_model(model), tok, val_records)
                state.history.append({"step": state.step, **check, "seconds": round(elapsed, 1)})
                copies = cfg.stop_at_copying is not None and check["copying"] >= cfg.stop_at_copying
                if world > 1:
                    copies = bool(acc.reduce(torch.tensor(float(copies), device=device), "max") > 0)
            if cfg.keep_best and state.step % cfg.eval_every == 0:
                score = _keep_score(cfg.best_by, v, check)
                if state.kept_score is None or score > state.kept_score:
                    state.kept_step, state.kept_score = state.step, score
                    best = _trainable(acc.unwrap_model(model))
            spent = "time_budget" if cfg.time_budget is not None and elapsed >= cfg.time_budget else \
                "token_budget" if cfg.token_budget is not None and state.tokens >= cfg.token_budget else None
            over_budget = spent is not None
            if world > 1:  # every process stops at the same step
                over_budget = bool(acc.reduce(torch.tensor(float(over_budget), device=device), "max") > 0)
            if state.step % cfg.save_every == 0 or state.step >= total or over_budget or copies or stale:
                state.seconds, t0 = elapsed, time.perf_counter()
                if acc.is_main_process:
                    _save_checkpoint(ckpt, acc.unwrap_model(model), opt, sched, state, best)
                acc.wait_for_everyone()
                t_start, tokens_start = t0, state.tokens  # checkpoint time is not training time
            if over_budget or copies or stale:
                budget = spent or ("time_budget" if cfg.time_budget is not None else "token_budget")  # another rank's
                stopped_by = budget if over_budget else "copying" if copies else "patience"
                break
            if state.step >= total:
                break
        if stopped_by != "steps":
            break
    bar.close()
    seconds = state.seconds if stopped_by != "steps" or state.step >= total else \
        state.seconds + time.perf_counter() - t_start
    metrics = {
        "steps": state.step, "total_steps": total, "stopped_by": stopped_by, "train_loss": last_loss,
        "tokens": state.tokens, "seconds": round(seconds, 1), "tokens_per_second": state.tokens / max(seconds, 1e-9),
        "examples": len(data), "dropped_too_long": dropped, "history": state.history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in params), "device": device.type, "bf16": bf16,
        "processes": world, "hardware": _hardware(device),
    }
    model = acc.unwrap_model(model)
    if val:
        metrics["val_loss"] = evaluate_loss(model, val, tok.pad_token_id, cfg.batch_size, autocast)
        # the last weights, unless a check kept them; a run stopped because it copies its conditions well enough
        # ends with those weights, not earlier ones
        if cfg.keep_best and best is not None and stopped_by != "copying" and state.kept_step != state.step:
            check = None
            if by_copying:  # the last weights' copying: their check, or a new one
                check = next((h for h in state.history if "copying" in h and h["step"] == state.step), None)
                if check is None:
                    check = _copying_check(model, tok, val_records)
                    state.history.append({"step": state.step, **check, "seconds": round(seconds, 1)})
            if _keep_score(cfg.best_by, metrics["val_loss"], check) < state.kept_score:
                _restore(model, best)
                metrics |= {"last_val_loss": metrics["val_loss"], "restored_step": state.kept_step,
                            "val_loss": evaluate_loss(model, val, tok.pad_token_id, cfg.batch_size, autocast)}
        if cfg.keep_best:
            metrics["kept_by"] = cfg.best_by
    kept = metrics.get("restored_step", state.step)  # the copying of the weights saved: the kept step's check
    copying = [h for h in state.history if "copying" in h and h["step"] <= kept]
    if copying:
        metrics |= {k: v for k, v in copying[-1].items() if k in COPYING_KEYS}
    if not acc.is_main_process:
        return metrics
    _save_final(model, tok, kind, cfg, fmt, out)
    preset = prior.get("preset", cfg.preset) if prior is not None else cfg.preset
    meta = {"kind": "compact" if kind == "compact" else ("lora-merged" if cfg.merge else "lora-adapter"),
            "base_model": cfg.base_model, "preset": preset if kind == "compact" else None, "format": fmt,
            "template": DEFAULT.to_dict(), "instructions": data_meta, "config": asdict(cfg), "metrics": metrics}
    (out / META).write_text(json.dumps(meta, indent=2))
    return metrics


def _save_final(model, tok, kind: str, cfg: TrainConfig, fmt: str, out: Path) -> None:
    model = model.to("cpu")
    if kind == "lora" and cfg.merge:
        model = model.merge_and_unload()
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
