"""Tokenizers (from an HF folder with transformers' AutoTokenizer, or from a GGUF file's metadata without
torch: gguf_tokenizer.py), chat templates, Yes/No ids.

transformers 5 has no `return_tensors="jax"`: everything here returns python lists or numpy arrays.
The Yes/No answer ids are always looked up from the tokenizer, never hard-coded, because they differ by
vocabulary (Llama-3 "Yes" = 9642, Vicuna "▁Yes" = 3869, SmolLM2 "Yes" = 10539).
"""
from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np


def load_tokenizer(path: str | os.PathLike):
    """AutoTokenizer from an HF folder, or the tokenizer a .gguf file's metadata describes (vocabulary, chat
    template, special tokens), built without torch with the ids of transformers' GGUF loader."""
    from transformers import AutoTokenizer

    from rallrec_jax import assets
    from rallrec_jax.llm.gguf_tokenizer import load_gguf_tokenizer

    p = pathlib.Path(path)
    if p.suffix != ".gguf" and not p.exists():
        p = assets.resolve_model(path)  # a hub name
    if p.suffix == ".gguf":
        try:
            tok = load_gguf_tokenizer(p)
        except Exception:
            from rallrec_jax.llm.weights import open_gguf

            # A missing, damaged or non-GGUF file: the model loader's error naming it and the fix. (Checked only
            # on failure: gguf.GGUFReader maps every tensor, seconds for a file whose header reads in 0.1 s.)
            open_gguf(p)
            raise
    else:
        if not p.is_dir():
            raise ValueError(f"tokenizer folder {p} not found")
        tok = AutoTokenizer.from_pretrained(str(p))
    if tok.pad_token_id is None:  # padding is always masked out; any id works, EOS is the usual choice.
        tok.pad_token = tok.eos_token
    return tok


def chat_prompt(tokenizer, user: str, system: str | None = None, add_generation_prompt: bool = True,
                assistant_prefix: str = "") -> str:
    """The model's chat template applied to [system?, user] (text, not ids), plus an optional assistant prefix."""
    if tokenizer.chat_template is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template")
    messages = ([] if system is None else [{"role": "system", "content": system}]) + [
        {"role": "user", "content": user}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return text + assistant_prefix


def encode(tokenizer, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
    """Token ids per text. Chat-templated text already holds its special tokens, hence the default False."""
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]


def single_token_id(tokenizer, word: str) -> int:
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{word!r} is not a single token for tokenizer {tokenizer.name_or_path!r}: ids {ids}")
    return int(ids[0])


def yes_no_ids(tokenizer, leading_space: bool = False) -> tuple[int, int]:
    """Ids of the answer tokens "Yes" and "No" (or " Yes"/" No"); a clear error if either is not one token.

    Right after a chat template's assistant header the answer starts without a space, so that is the default
    (the official code's Llama-3 ids 9642/2822 are "Yes"/"No").
    """
    prefix = " " if leading_space else ""
    return single_token_id(tokenizer, prefix + "Yes"), single_token_id(tokenizer, prefix + "No")


def eos_ids(tokenizer, extra: Sequence[int] = ()) -> tuple[int, ...]:
    """The tokenizer's EOS id plus any extra stop ids (e.g. a model's config eos list)."""
    ids = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    return tuple(dict.fromkeys(ids + [int(i) for i in extra]))


def pad_batch(seqs: Sequence[Sequence[int]], length: int, pad_id: int, side: str = "left") -> tuple[np.ndarray, np.ndarray]:
    """Lists of ids -> tokens, mask [B, length] (int32), left or right padded; too-long input is an error."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side {side!r} must be 'left' or 'right'")
    tokens = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.int32)
    for i, s in enumerate(seqs):
        n = len(s)
        if n == 0:
            raise ValueError(f"sequence {i} is empty")
        if n > length:
            raise ValueError(f"sequence {i} has {n} tokens, more than the bucket length {length}")
        sl = slice(length - n, length) if side == "left" else slice(0, n)
        tokens[i, sl] = s
        mask[i, sl] = 1
    return tokens, mask


def bucket_length(n: int, minimum: int = 16) -> int:
    """Power-of-two-ish buckets (16, 24, 32, 48, 64, 96, 128, ...) so jit recompiles stay few."""
    b = minimum
    while b < n:
        b = b * 3 // 2 if (b & (b - 1)) == 0 else b * 4 // 3
    return b
