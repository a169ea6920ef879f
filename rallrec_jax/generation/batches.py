"""The tuning data plan: which example rows each global step takes, and the padded arrays they become.

Pure numpy, and a function of (seed, epoch, step) only: a resumed run, another process of a multi-host run
and a benchmark that replays the stage's batches all see the same rows (`step_rows`). Each process builds the
whole effective batch's arrays and keeps its own slice (`global_batch`), padded to the length bucket of the
whole global batch so that every process runs the same program.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from rallrec_jax.generation import examples as ex_lib
from rallrec_jax.llm.tokenizer import bucket_length

BATCH_KEYS = ("tokens", "mask", "ans_pos", "ans_tok", "ans_w")


def answer_length(examples: Sequence[ex_lib.Example]) -> int:
    """A: the most answer tokens of any example (fixed per run so the step compiles once per bucket)."""
    n = max((len(e.answer_ids) for e in examples), default=0)
    if n == 0:
        raise ValueError("no example has answer tokens: training examples need with_answer=True")
    return n


def make_batch(examples: Sequence[ex_lib.Example | None], length: int, answer_len: int, pad_id: int
               ) -> dict[str, np.ndarray]:
    """Right-padded tokens [B, L] and mask [B, L]; `ans_pos` [B, A] = positions whose next-token logits predict
    answer token j (the prompt's last position + j); `ans_tok` [B, A] targets; `ans_w` [B, A] 1 on real answer
    tokens, 0 on padding and on filler rows (None entries: they repeat a real row with zero weight)."""
    real = [e for e in examples if e is not None]
    if not real:
        raise ValueError("a batch needs at least one example")
    b = len(examples)
    tokens = np.full((b, length), pad_id, np.int32)
    mask = np.zeros((b, length), np.int32)
    ans_pos = np.zeros((b, answer_len), np.int32)
    ans_tok = np.zeros((b, answer_len), np.int32)
    ans_w = np.zeros((b, answer_len), np.float32)
    for i, e in enumerate(examples):
        row = real[0] if e is None else e
        seq = row.prompt_ids + row.answer_ids
        if len(seq) > length:
            raise ValueError(f"example {row.split}[{row.index}] has {len(seq)} tokens, more than the bucket {length}")
        tokens[i, :len(seq)] = seq
        mask[i, :len(seq)] = 1
        p = len(row.prompt_ids)
        a = len(row.answer_ids)
        ans_pos[i, :a] = np.arange(p - 1, p - 1 + a)
        ans_pos[i, a:] = p - 1
        ans_tok[i, :a] = row.answer_ids
        if e is not None:
            ans_w[i, :a] = 1.0
    return {"tokens": tokens, "mask": mask, "ans_pos": ans_pos, "ans_tok": ans_tok, "ans_w": ans_w}


def steps_per_epoch(num_examples: int, effective_batch: int) -> int:
    return max(1, -(-num_examples // effective_batch))


def examples_seen(num_examples: int, effective_batch: int, steps: int) -> int:
    """Real (non-filler) training examples the first `steps` global steps have seen: the x axis of a learning
    curve, comparable across batch sizes."""
    spe = steps_per_epoch(num_examples, effective_batch)
    epochs, within = divmod(int(steps), spe)
    return epochs * num_examples + min(within * effective_batch, num_examples)


def step_rows(num_examples: int, effective_batch: int, seed: int, step: int) -> tuple[list[int | None], int, int]:
    """Example indices of global step `step` (None = zero-weight filler in a short last batch), its epoch and
    its batch within the epoch. Depends only on (seed, epoch, step): a resumed run sees the same data."""
    spe = steps_per_epoch(num_examples, effective_batch)
    epoch, within = divmod(step, spe)
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    rows: list[int | None] = perm[within * effective_batch:(within + 1) * effective_batch].tolist()
    rows += [None] * (effective_batch - len(rows))
    return rows, epoch, within


def global_batch(examples: Sequence[ex_lib.Example], rows: Sequence[int | None], answer_len: int, pad_id: int,
                 min_bucket: int) -> tuple[dict[str, np.ndarray], int]:
    """This process's rows of one effective batch, padded to the length bucket of the whole global batch."""
    chosen = [None if r is None else examples[r] for r in rows]
    length = bucket_length(max(e.length for e in chosen if e is not None), min_bucket)
    batch = make_batch(chosen, length, answer_len, pad_id)
    procs, rank = jax.process_count(), jax.process_index()
    e = len(rows)
    if e % procs:
        raise ValueError(f"effective batch {e} does not divide over {procs} processes")
    return {k: v[rank * e // procs:(rank + 1) * e // procs] for k, v in batch.items()}, length
