"""Scoring prompts: next-token logits at the last real token, P(Yes), mean-pooled hidden states.

Prompts are sorted by length, batched, padded (left or right) to a length bucket, run through one jitted
forward whose head is computed at the last real position only, and returned in the input order.

Prefix-shared scoring (`Scorer.prefix_shared_logits`): R continuations of one prefix (the K reasoning
traces of one prompt) are scored against ONE computation of the prefix: the prefix is prefilled once into
a KV cache and every continuation runs against it (the R rows read the same cache, never a copy per row),
with the logits read at each continuation's last token. Same numbers as scoring prefix + continuation as
one sequence, at the cost of the prefix once instead of R times.

P(Yes) (paper-spec 3.3): textbook `softmax([s_yes, s_no])[0] = sigmoid(s_yes - s_no)` on logits, or with
`double_softmax=True` the official code's `softmax([p_yes, p_no])[0] = sigmoid(p_yes - p_no)` on full-vocab
probabilities, which bounds predictions to [0.2689, 0.7311] and reproduces the published tables.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from rallrec_jax import parallel
from rallrec_jax.llm.model import Llm, positions_from_mask
from rallrec_jax.llm.tokenizer import bucket_length, pad_batch


def last_real_index(mask: jax.Array) -> jax.Array:
    """[B, L] mask -> [B] index of the last real token (works for left and right padding)."""
    idx = jnp.arange(mask.shape[1])[None, :]
    return jnp.max(jnp.where(mask.astype(bool), idx, -1), axis=1)


def yes_probability_from_logits(logits: jax.Array, yes_id, no_id, double_softmax: bool = False) -> jax.Array:
    """logits [B, V] -> P(Yes) [B]."""
    if double_softmax:
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        return jax.nn.sigmoid(probs[:, yes_id] - probs[:, no_id])
    return jax.nn.sigmoid(logits[:, yes_id].astype(jnp.float32) - logits[:, no_id].astype(jnp.float32))


# Module-level jits with the graph definition static: scorers over same-structured models share programs.
def _forward(graphdef, state, tokens, mask, **kw):
    model = nnx.merge(graphdef, state)
    return model(tokens, positions_from_mask(mask), mask.astype(bool), **kw)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _last_logits(graphdef, state, tokens, mask):
    return _forward(graphdef, state, tokens, mask, logits_at=last_real_index(mask))  # [B, V]


@functools.partial(jax.jit, static_argnames=("graphdef", "double_softmax"))
def _yes(graphdef, state, tokens, mask, yes_id, no_id, *, double_softmax: bool):
    logits = _forward(graphdef, state, tokens, mask, logits_at=last_real_index(mask))
    return yes_probability_from_logits(logits, yes_id, no_id, double_softmax)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _prefix_last_logits(graphdef, state, p_tokens, p_mask, c_tokens, c_mask):
    """p_tokens, p_mask [P, Lp] left padded; c_tokens, c_mask [P*R, Lc] right padded, prefix i's R continuations
    in rows [i*R, (i+1)*R) -> [P*R, V] logits after each continuation's last real token."""
    model = nnx.merge(graphdef, state)
    _, prefix = model.hidden_states(p_tokens, positions_from_mask(p_mask), p_mask.astype(bool), return_kv=True)
    r = c_tokens.shape[0] // p_tokens.shape[0]
    start = jnp.repeat(jnp.sum(p_mask.astype(jnp.int32), axis=1), r)  # [P*R] real prefix tokens
    positions = start[:, None] + positions_from_mask(c_mask)  # [P*R, Lc]
    hidden, _ = model.extend(c_tokens, positions, c_mask.astype(bool), (prefix,))
    h = jnp.take_along_axis(hidden, last_real_index(c_mask)[:, None, None], axis=1)[:, 0]  # [P*R, D]
    return model.head(h)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _pool(graphdef, state, tokens, mask):
    hidden = _forward(graphdef, state, tokens, mask, return_hidden=True).astype(jnp.float32)  # [B, L, D]
    m = mask.astype(jnp.float32)[..., None]
    return (hidden * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)  # [B, D]


class Scorer:
    """Batched, length-bucketed scoring with one model (optionally sharded over a mesh)."""

    def __init__(self, model: Llm, pad_id: int, batch_size: int = 8, padding_side: str = "left",
                 mesh: Mesh | None = None, min_bucket: int = 16):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side {padding_side!r} must be 'left' or 'right'")
        self.graphdef, self.state = nnx.split(model)
        self.pad_id, self.batch_size, self.padding_side = int(pad_id), int(batch_size), padding_side
        self.mesh, self.min_bucket = mesh, min_bucket

    def refresh(self, model: Llm) -> None:
        """Re-reads the model's parameters (in-place optimizer updates already show; this covers replaced
        variables, e.g. adapters restored from a checkpoint)."""
        graphdef, self.state = nnx.split(model)
        if graphdef != self.graphdef:
            raise ValueError("refresh() needs a model with the same structure (e.g. LoRA applied before, not after)")

    # ------------------------------------------------------------------ batching
    def _batched(self, seqs: Sequence[Sequence[int]], fn: Callable,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
        """`progress(n)` (optional) is told the n rows of each finished batch (a progress bar's update)."""
        if not seqs:
            raise ValueError("no sequences to score")
        order = np.argsort([len(s) for s in seqs], kind="stable")
        dp = 1 if self.mesh is None else parallel.data_parallel_size(self.mesh)
        rows = -(-self.batch_size // dp) * dp
        outs: list[np.ndarray] = []
        for start in range(0, len(order), self.batch_size):
            chunk = [seqs[i] for i in order[start:start + self.batch_size]]
            n = len(chunk)
            chunk = chunk + [chunk[0]] * (rows - n)  # fixed batch shape; dummy rows dropped below
            length = bucket_length(max(len(s) for s in chunk), self.min_bucket)
            tokens, mask = pad_batch(chunk, length, self.pad_id, side=self.padding_side)
            outs.append(parallel.fetch(fn(self._put(tokens), self._put(mask)))[:n])  # global: gathered
            if progress is not None:
                progress(n)
        stacked = np.concatenate(outs, axis=0)
        result = np.empty_like(stacked)
        result[order] = stacked
        return result

    def _put(self, x: np.ndarray) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(x)
        return jax.device_put(x, parallel.batch_sharding(self.mesh, x.ndim))

    def _prefix_batches(self, prefixes, continuations):
        """Batches of whole prefix groups: (prefix indices, continuation counts, tokens/masks arrays), about
        batch_size continuation rows each, every group padded to the batch's largest with dummy rows."""
        order = np.argsort([len(p) for p in prefixes], kind="stable")
        dp = 1 if self.mesh is None else parallel.data_parallel_size(self.mesh)
        r = max(len(c) for c in continuations)
        per_batch = -(-max(1, self.batch_size // r) // dp) * dp  # prefixes per batch, a multiple of dp
        for start in range(0, len(order), per_batch):
            idx = [int(i) for i in order[start:start + per_batch]]
            groups = [list(continuations[i]) for i in idx]
            r_b = max(len(g) for g in groups)
            pre = [prefixes[i] for i in idx] + [prefixes[idx[0]]] * (per_batch - len(idx))  # dummy prefixes
            rows = [g + [g[0]] * (r_b - len(g)) for g in groups]  # dummy continuations
            rows += [rows[0]] * (per_batch - len(idx))
            flat = [c for g in rows for c in g]
            p_tok, p_mask = pad_batch(pre, bucket_length(max(map(len, pre)), self.min_bucket), self.pad_id,
                                      side="left")
            c_tok, c_mask = pad_batch(flat, bucket_length(max(map(len, flat)), self.min_bucket), self.pad_id,
                                      side="right")
            yield idx, [len(g) for g in groups], r_b, (p_tok, p_mask, c_tok, c_mask)

    # ------------------------------------------------------------------ public
    def next_token_logits(self, seqs: Sequence[Sequence[int]], progress: Callable[[int], None] | None = None
                          ) -> np.ndarray:
        """[N, V] float32 logits of the token after each sequence."""
        return self._batched(seqs, lambda t, m: _last_logits(self.graphdef, self.state, t, m), progress)

    def yes_probability(self, seqs: Sequence[Sequence[int]], yes_id: int, no_id: int,
                        double_softmax: bool = False, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """[N] P(Yes) of each prompt's next token (see the module docstring for `double_softmax`)."""
        return self._batched(seqs, lambda t, m: _yes(self.graphdef, self.state, t, m, jnp.int32(yes_id),
                                                     jnp.int32(no_id), double_softmax=double_softmax), progress)

    def prefix_shared_logits(self, prefixes: Sequence[Sequence[int]],
                             continuations: Sequence[Sequence[Sequence[int]]]) -> list[np.ndarray]:
        """[P] prefixes and, per prefix, its continuations -> per prefix [R_i, V] float32 logits of the token
        after prefix + continuation j, each prefix computed once (see the module docstring)."""
        if len(prefixes) != len(continuations):
            raise ValueError(f"{len(prefixes)} prefixes for {len(continuations)} continuation groups")
        if not prefixes:
            raise ValueError("no prefixes to score")
        for i, (p, group) in enumerate(zip(prefixes, continuations)):
            if not p or not group or any(not c for c in group):
                raise ValueError(f"prefix {i}: the prefix, its continuation list and every continuation must be "
                                 "non-empty")
        out: list[np.ndarray | None] = [None] * len(prefixes)
        for idx, counts, r_b, arrays in self._prefix_batches(prefixes, continuations):
            logits = parallel.fetch(_prefix_last_logits(self.graphdef, self.state, *(self._put(a) for a in arrays)))
            for j, (i, n) in enumerate(zip(idx, counts)):
                out[i] = logits[j * r_b:j * r_b + n]
        return out

    def mean_pooled(self, seqs: Sequence[Sequence[int]], progress: Callable[[int], None] | None = None
                    ) -> np.ndarray:
        """[N, D] mean of final-normed hidden states over each sequence's real tokens."""
        return self._batched(seqs, lambda t, m: _pool(self.graphdef, self.state, t, m), progress)
