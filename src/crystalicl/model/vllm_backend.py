"""Sampling with vLLM on a GPU: the fast path for thousands of samples from the same prompts.

The grammar and the enforced conditions run in the transformers backend only (they re-read each row's text
at every step); vLLM samples are decoded afterwards and unparseable ones redrawn, as the paper does. The
model directory must hold full weights (a compact model, or LoRA trained with ``--merge``).
"""

from __future__ import annotations

from pathlib import Path

from crystalicl.errors import CrystalICLError


class VLLMSampler:
    def __init__(self, model_dir: Path, tokenizer, seed: int = 0):
        from crystalicl.model.loading import read_meta

        try:
            import vllm
        except ImportError as e:
            raise CrystalICLError("the vllm backend needs vLLM installed (pip install vllm) and a CUDA GPU") from e
        import torch

        if not torch.cuda.is_available():
            raise CrystalICLError("the vllm backend needs a CUDA GPU; use the default backend on CPU")
        if read_meta(Path(model_dir))["kind"] == "lora-adapter":
            raise CrystalICLError(f"{model_dir} holds a LoRA adapter: vLLM needs full weights (train with --merge)")
        self.tokenizer = tokenizer
        self.llm = vllm.LLM(model=str(model_dir), tokenizer=str(model_dir), seed=seed)

    def sample(self, prompt_ids: list[list[int]], seed: int, temperature: float, top_p: float,
               max_new_tokens: int) -> list[str]:
        from vllm import SamplingParams

        eos = self.tokenizer.eos_token_id
        params = [SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed + i,
                                 stop_token_ids=[eos]) for i in range(len(prompt_ids))]
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        return [self.tokenizer.decode(list(o.outputs[0].token_ids), skip_special_tokens=True).strip() for o in outs]
