"""The compact crystal LM: a Llama-architecture decoder built from a config (no downloaded weights).

Llama-style blocks are about 2x faster than GPT-2 blocks of the same size on a 2-core CPU (measured,
MACHINE_NOTES); RoPE keeps the parameter count independent of the context length.
"""

from __future__ import annotations

PRESETS = {
    # name: (hidden, layers, heads, intermediate)
    "tiny": (128, 4, 4, 384),
    "small": (256, 6, 8, 768),
    "base": (512, 8, 8, 1536),
}
MAX_POSITIONS = 4096


def build_model(preset: str, tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    hidden, layers, heads, inter = PRESETS[preset]
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=heads, intermediate_size=inter, max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True, rope_theta=10000.0,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
