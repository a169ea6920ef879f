"""A tiny random Llama in Hugging Face layout, with SmolLM2's real tokenizer, for fast end-to-end tests.

Random weights: it exercises every code path of the pipeline and the notebook in seconds; the numbers it
produces mean nothing (the parity tests tie our decoder to PyTorch on real weights)."""
from __future__ import annotations

import pathlib


def make_tiny_llm(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Writes config.json, model.safetensors and the tokenizer into `folder` (once); returns it."""
    folder = pathlib.Path(folder)
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rallrec_jax import assets
    from rallrec_jax.llm import tokenizer as tok_lib

    tokenizer = tok_lib.load_tokenizer(assets.smollm2_gguf())
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, rope_theta=100000.0)
    model = LlamaForCausalLM(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
