"""Models: the compact crystal LM (tokenizer + Llama presets) and pretrained LLMs with LoRA."""
