"""Autoregressive sampling: one jitted prefill, then every decode step inside ONE `jax.lax.while_loop`.

K samples per prompt share one prefill (the prefilled KV cache is repeated K times). The cache is
preallocated at prompt bucket + generation bucket slots and donated to the decode loop. Prompt length,
generation length and prompt count are bucketed, so a long run compiles a handful of programs only.
Temperature 0 is greedy; otherwise temperature, top-k and top-p (nucleus) filtering, then one inverse-CDF
draw per row keyed by (seed, step): the same seed gives the same samples. The nucleus is found among the
top CANDIDATES tokens (a full-vocabulary sort costs ~1 s per step on CPU) and falls back to the sort only
when a row's nucleus is wider.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from rallrec_jax import parallel
from rallrec_jax.llm.model import CACHE_AXES, Llm, fitted_sharding, init_cache, positions_from_mask
from rallrec_jax.llm.tokenizer import bucket_length, pad_batch


@dataclasses.dataclass
class SampleOutput:
    tokens: list[list[list[int]]]  # [prompt][sample] -> generated ids, up to and including EOS
    finished: np.ndarray  # [P, K] bool: stopped at EOS (else ran out of max_new_tokens)


CANDIDATES = 64  # top-p nucleus searched among this many top tokens first (full sort only if it is larger)


def filter_logits(logits: jax.Array, temperature: jax.Array, top_p: jax.Array, top_k: int, use_top_p: bool):
    """[N, V] logits -> temperature-scaled logits with everything outside top-k / the top-p nucleus at -inf.

    The full-vocabulary reference (it sorts all V logits: slow on CPU); `sample_tokens` uses it only when
    a nucleus is wider than CANDIDATES tokens.
    """
    logits = logits.astype(jnp.float32) / temperature
    neg = jnp.finfo(jnp.float32).min
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [N, 1]
        logits = jnp.where(logits < kth, neg, logits)
    if use_top_p:
        sorted_desc = -jnp.sort(-logits, axis=-1)  # [N, V]
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each token
        keep = before < top_p  # the smallest set whose mass reaches top_p (always >= 1 token)
        threshold = jnp.min(jnp.where(keep, sorted_desc, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, neg, logits)
    return logits


def candidate_logits(logits: jax.Array, temperature: jax.Array, top_p: jax.Array, top_k: int, use_top_p: bool):
    """The same filter restricted to the top C tokens: (logits [N, C] with the rest at -inf, token ids [N, C],
    covered [N]). `covered` is False where the nucleus may extend beyond the C candidates."""
    logits = logits.astype(jnp.float32) / temperature
    c = top_k if top_k > 0 else CANDIDATES
    vals, idx = jax.lax.top_k(logits, c)  # sorted descending
    covered = jnp.ones(logits.shape[:1], bool)
    if use_top_p:
        # mass over the whole (top-k filtered) distribution, as in the full filter
        lse = jax.nn.logsumexp(vals if top_k > 0 else logits, axis=-1, keepdims=True)
        probs = jnp.exp(vals - lse)
        cum = jnp.cumsum(probs, axis=-1)
        keep = cum - probs < top_p
        covered = (cum[:, -1] >= top_p) | (top_k > 0)
        threshold = jnp.min(jnp.where(keep, vals, jnp.inf), axis=-1, keepdims=True)
        vals = jnp.where(vals < threshold, jnp.finfo(jnp.float32).min, vals)
    return vals, idx, covered


def inverse_cdf_sample(logits: jax.Array, key: jax.Array) -> jax.Array:
    """One draw per row from softmax(logits) [N, C] with one uniform per row (cheap on CPU, unlike
    `jax.random.categorical`'s Gumbel noise over every entry)."""
    probs = jax.nn.softmax(logits, axis=-1)
    cdf = jnp.cumsum(probs, axis=-1)
    u = jax.random.uniform(key, (logits.shape[0], 1)) * cdf[:, -1:]
    return jnp.minimum(jnp.sum(cdf <= u, axis=-1), logits.shape[-1] - 1).astype(jnp.int32)


def sample_tokens(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array, top_k: int,
                  use_top_p: bool) -> jax.Array:
    """[N, V] logits -> [N] sampled ids (temperature, then top-k, then top-p, as transformers orders them)."""
    if top_k == 0 and not use_top_p:
        return inverse_cdf_sample(logits.astype(jnp.float32) / temperature, key)
    vals, idx, covered = candidate_logits(logits, temperature, top_p, top_k, use_top_p)

    def from_candidates(_):
        return jnp.take_along_axis(idx, inverse_cdf_sample(vals, key)[:, None], axis=1)[:, 0]

    def from_full(_):  # a nucleus wider than CANDIDATES in some row: sort the whole vocabulary
        return inverse_cdf_sample(filter_logits(logits, temperature, top_p, top_k, use_top_p), key)

    if top_k > 0:
        return from_candidates(None)
    return jax.lax.cond(jnp.all(covered), from_candidates, from_full, None).astype(jnp.int32)


def _constrain(x: jax.Array, mesh: Mesh | None, axes) -> jax.Array:
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, fitted_sharding(mesh, axes, x.shape))


# The jitted pieces are module-level with the graph definition static, so every Sampler over models of the
# same structure shares one compiled program per (bucket, flags).
@functools.partial(jax.jit, static_argnames=("graphdef", "mesh", "num_samples", "gen_len"))
def _prefill(graphdef, state, tokens, mask, *, mesh, num_samples: int, gen_len: int):
    """tokens, mask [P, Lp] left padded -> cache [P*K, Lp+G, ...], last logits [P*K, V], key mask, next pos."""
    model = nnx.merge(graphdef, state)
    p, lp = tokens.shape
    positions = positions_from_mask(mask)
    cache = init_cache(model.config, p, lp)
    logits, cache = model(tokens, positions, mask.astype(bool), kv_cache=cache, cache_index=0,
                          logits_at=jnp.full((p,), lp - 1))  # left padding: last real token is at Lp-1

    def grow(x):  # [P, Lp, ...] -> [P*K, Lp+G, ...]: room for generation, one copy per sample.
        x = jnp.pad(x, ((0, 0), (0, gen_len)) + ((0, 0),) * (x.ndim - 2))
        return _constrain(jnp.repeat(x, num_samples, axis=0), mesh, CACHE_AXES[: x.ndim])

    cache = jax.tree.map(grow, cache)
    key_mask = grow(mask.astype(bool))
    logits = _constrain(jnp.repeat(logits, num_samples, axis=0), mesh, ("batch", None))
    next_pos = jnp.repeat(positions[:, -1] + 1, num_samples)
    return cache, logits, key_mask, next_pos


@functools.partial(jax.jit, static_argnames=("graphdef", "lp", "eos_ids", "pad_id", "greedy", "top_k", "use_top_p"),
                   donate_argnames=("cache",))
def _decode(graphdef, state, cache, key_mask, logits, next_pos, key, max_new_tokens, temperature, top_p, *,
            lp: int, eos_ids: tuple[int, ...], pad_id: int, greedy: bool, top_k: int, use_top_p: bool):
    """All decode steps in one while_loop; stops when every row hit EOS or after max_new_tokens."""
    model = nnx.merge(graphdef, state)
    n, s = key_mask.shape
    gen_len = s - lp
    eos = jnp.asarray(eos_ids, jnp.int32)
    out = jnp.full((n, gen_len), pad_id, jnp.int32)
    done = jnp.zeros((n,), bool)

    def cond(carry):
        step, done = carry[0], carry[-1]
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, cache, key_mask, logits, pos, out, done = carry
        if greedy:
            tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            tok = sample_tokens(logits, jax.random.fold_in(key, step), temperature, top_p, top_k, use_top_p)
        tok = jnp.where(done, pad_id, tok)
        out = jax.lax.dynamic_update_slice(out, tok[:, None], (0, step))
        done = done | jnp.isin(tok, eos)
        slot = lp + step
        key_mask = jax.lax.dynamic_update_slice(key_mask, jnp.ones((n, 1), bool), (0, slot))
        logits, cache = model(tok[:, None], pos[:, None], key_mask, kv_cache=cache, cache_index=slot,
                              logits_at=jnp.zeros((n,), jnp.int32))
        return step + 1, cache, key_mask, logits, pos + 1, out, done

    carry = (jnp.int32(0), cache, key_mask, logits, next_pos, out, done)
    carry = jax.lax.while_loop(cond, body, carry)
    return carry[5], carry[6], carry[1]  # the cache goes back out so its donated buffers are reused


class Sampler:
    """Generates from a model (optionally sharded over `mesh`: batch over data x fsdp, params by their rules)."""

    def __init__(self, model: Llm, eos_ids: Sequence[int], pad_id: int, mesh: Mesh | None = None):
        if not eos_ids:
            raise ValueError("eos_ids is empty: give at least one stop token")
        self.graphdef, self.state = nnx.split(model)
        self.cfg = model.config
        self.eos_ids = tuple(int(i) for i in eos_ids)
        self.pad_id = int(pad_id)
        self.mesh = mesh

    def refresh(self, model: Llm) -> None:
        """Re-reads the model's parameters (in-place optimizer updates already show; this covers replaced
        variables, e.g. adapters restored from a checkpoint)."""
        graphdef, self.state = nnx.split(model)
        if graphdef != self.graphdef:
            raise ValueError("refresh() needs a model with the same structure (e.g. LoRA applied before, not after)")

    def __call__(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, num_samples: int = 1,
                 temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0) -> SampleOutput:
        """K = num_samples continuations of each prompt (lists of ids); temperature 0 is greedy."""
        if not prompts:
            raise ValueError("no prompts given")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise ValueError(f"bad sampling parameters temperature={temperature}, top_p={top_p}, top_k={top_k}")
        p, k = len(prompts), int(num_samples)
        lp = bucket_length(max(len(x) for x in prompts))
        gen_len = bucket_length(max_new_tokens)
        p_pad = 1 << (p - 1).bit_length()  # prompt count bucket: powers of two
        dp = 1 if self.mesh is None else parallel.data_parallel_size(self.mesh)
        while (p_pad * k) % dp:
            p_pad += 1
        padded = list(prompts) + [prompts[0]] * (p_pad - p)  # dummy rows, discarded below
        tokens, mask = pad_batch(padded, lp, self.pad_id, side="left")
        cache, logits, key_mask, next_pos = _prefill(self.graphdef, self.state, self._put(tokens), self._put(mask),
                                                     mesh=self.mesh, num_samples=k, gen_len=gen_len)
        greedy = temperature == 0.0
        out, done, _ = _decode(
            self.graphdef, self.state, cache, key_mask, logits, next_pos, jax.random.key(seed),
            jnp.int32(max_new_tokens), jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p), lp=lp,
            eos_ids=self.eos_ids, pad_id=self.pad_id, greedy=greedy, top_k=int(top_k),
            use_top_p=(not greedy) and top_p < 1.0)
        out = np.asarray(out)[: p * k].reshape(p, k, -1)
        done = np.asarray(done)[: p * k].reshape(p, k)
        result = []
        for i in range(p):
            rows = []
            for j in range(k):
                row = out[i, j, :max_new_tokens].tolist()
                stops = [t for t, x in enumerate(row) if x in self.eos_ids]
                rows.append(row[: stops[0] + 1] if stops else row)
            result.append(rows)
        return SampleOutput(result, done)

    def _put(self, x: np.ndarray) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(x)
        return jax.device_put(x, parallel.batch_sharding(self.mesh, x.ndim))
