"""The training forward of the decoder: final hidden states with per-block rematerialisation, and logits at the
answer positions only.

It lives beside model.py because it uses the model's layer scan and head directly: the loss needs logits
at the A positions that predict answer tokens, so the hidden states are gathered there first and only those
go through the vocab head ([B, A, V], not [B, L, V]). The trainer (generation/finetune.py) builds its loss and
its validation pass on `answer_logits`.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from rallrec_jax.llm.model import Llm, positions_from_mask


def decoder_hidden(model: Llm, tokens: jax.Array, mask: jax.Array, remat: str = "none") -> jax.Array:
    """Final-normed hidden states [B, L, D] of the training forward: the model's layer scan (built once, at
    load) with per-block rematerialisation `remat` ("none" | "attention" | "full", see
    `Llm.hidden_states`); each block slice keeps its own dropout RNG stream."""
    return model.hidden_states(tokens, positions_from_mask(mask), mask.astype(bool), remat=remat)


def answer_logits(model: Llm, batch: Mapping[str, jax.Array], remat: str = "none") -> jax.Array:
    """Logits [B, A, V] at the positions predicting each answer token (head applied only there).

    batch: tokens [B, L], mask [B, L], ans_pos [B, A] (the position whose next-token logits predict answer
    token a)."""
    hidden = decoder_hidden(model, batch["tokens"], batch["mask"], remat)  # [B, L, D]
    h = jnp.take_along_axis(hidden, batch["ans_pos"][..., None].astype(jnp.int32), axis=1)  # [B, A, D]
    return model.head(h)  # [B, A, V] float32
