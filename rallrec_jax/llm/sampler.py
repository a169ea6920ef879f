"""Autoregressive sampling: one jitted prefill, then every decode step inside ONE `jax.lax.while_loop`.

K samples per prompt share one prefill and one copy of its keys/values: decode attends to the prompt's
[P, Lp] prefix cache with the K sample rows folded together, and to a per-sample cache of the generated
tokens ([N_layers, P*K, KV, G, hd], preallocated, donated, updated in place once per step). A step thus
reads the weights once and each prompt's keys once, not K times. Prompt length, generation length and
prompt count are bucketed, so a long run compiles a handful of programs only.
Temperature 0 is greedy; otherwise temperature, top-k and top-p (nucleus) filtering, then one inverse-CDF
draw per row keyed by (seed, step): the same seed gives the same samples. The nucleus is found among the
top CANDIDATES tokens, else among the top WIDE_CANDIDATES, and the whole vocabulary is sorted only when a row's
nucleus is wider still (on 2 CPU cores a sort of 20 x 49,152 logits costs more than a whole decode step).
Prefix sums are triangular matmuls (`prefix_sum`), not `jnp.cumsum`, whose associative scan costs far more
to compile than the sampling costs to run.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from rallrec_jax import parallel
from rallrec_jax.llm.model import CACHE_AXES, KVCache, Llm, positions_from_mask
from rallrec_jax.llm.sharding import fitted_sharding
from rallrec_jax.llm.tokenizer import bucket_length, pad_batch


@dataclasses.dataclass
class SampleOutput:
    tokens: list[list[list[int]]]  # [prompt][sample] -> generated ids, up to and including EOS
    finished: np.ndarray  # [P, K] bool: stopped at EOS (else ran out of max_new_tokens)


CANDIDATES = 64  # top-p nucleus searched among this many top tokens first,
WIDE_CANDIDATES = 1024  # then among this many (top_k of 20 x 49,152: ~11 ms vs ~200 ms for the full sort on CPU)
_BLOCK = 256  # prefix sums over the vocabulary run in blocks of this many entries


def prefix_sum(x: jax.Array) -> jax.Array:
    """Inclusive cumulative sum over the last axis, [N, C] float32, as triangular matmuls.

    `jnp.cumsum` lowers to an associative scan on CPU/GPU (log2(C) levels of slices: a few hundred ms of
    compile per call site for the 49,152-token vocabulary); a matmul with a triangular ones matrix is one
    library call. Above _BLOCK entries the axis is cut into blocks: sums within each block, then block
    offsets."""
    n, c = x.shape
    upper = lambda m, k=0: jnp.asarray(np.triu(np.ones((m, m), np.float32), k), x.dtype)  # noqa: E731 (constants)
    if c <= _BLOCK:
        return x @ upper(c)
    nb = -(-c // _BLOCK)
    blocks = jnp.pad(x, ((0, 0), (0, nb * _BLOCK - c))).reshape(n, nb, _BLOCK)
    within = blocks @ upper(_BLOCK)  # [N, nb, BLOCK]
    offsets = within[..., -1] @ upper(nb, 1)  # [N, nb] sums of earlier blocks
    return (within + offsets[..., None]).reshape(n, nb * _BLOCK)[:, :c]


def filter_logits(logits: jax.Array, temperature: jax.Array, top_p: jax.Array, top_k: int, use_top_p: bool):
    """[N, V] logits -> temperature-scaled logits with everything outside top-k / the top-p nucleus at -inf.

    The definition of the distribution `sample_tokens` draws from (which never materialises it: it takes the
    top CANDIDATES tokens, or all V sorted by top_k when the nucleus is wider); tests hold the two together.
    """
    logits = logits.astype(jnp.float32) / temperature
    neg = jnp.finfo(jnp.float32).min
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [N, 1]
        logits = jnp.where(logits < kth, neg, logits)
    if use_top_p:
        sorted_desc = -jnp.sort(-logits, axis=-1)  # [N, V]
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        before = prefix_sum(probs) - probs  # mass strictly above each token
        keep = before < top_p  # the smallest set whose mass reaches top_p (always >= 1 token)
        threshold = jnp.min(jnp.where(keep, sorted_desc, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, neg, logits)
    return logits


def candidate_logits(logits: jax.Array, temperature: jax.Array, top_p: jax.Array, top_k: int, use_top_p: bool):
    """`filter_logits` restricted to the top C tokens: (logits [N, C] with the rest at -inf, token ids [N, C],
    covered [N]). `covered` is False where the nucleus may extend beyond the C candidates (`sample_tokens`
    makes the same test in `_nucleus_draw`)."""
    logits = logits.astype(jnp.float32) / temperature
    c = top_k if top_k > 0 else CANDIDATES
    vals, idx = jax.lax.top_k(logits, c)  # sorted descending
    covered = jnp.ones(logits.shape[:1], bool)
    if use_top_p:
        # mass over the whole (top-k filtered) distribution, as in the full filter
        lse = jax.nn.logsumexp(vals if top_k > 0 else logits, axis=-1, keepdims=True)
        probs = jnp.exp(vals - lse)
        cum = prefix_sum(probs)
        keep = cum - probs < top_p
        covered = (cum[:, -1] >= top_p) | (top_k > 0)
        threshold = jnp.min(jnp.where(keep, vals, jnp.inf), axis=-1, keepdims=True)
        vals = jnp.where(vals < threshold, jnp.finfo(jnp.float32).min, vals)
    return vals, idx, covered


def inverse_cdf_sample(logits: jax.Array, key_or_uniform: jax.Array) -> jax.Array:
    """One draw per row from softmax(logits) [N, C] with one uniform per row (cheap on CPU, unlike
    `jax.random.categorical`'s Gumbel noise over every entry); pass a key, or the uniforms [N, 1] in [0, 1)."""
    if jax.dtypes.issubdtype(key_or_uniform.dtype, jax.dtypes.prng_key):
        key_or_uniform = jax.random.uniform(key_or_uniform, (logits.shape[0], 1))
    probs = jax.nn.softmax(logits, axis=-1)
    cdf = prefix_sum(probs)
    u = key_or_uniform * cdf[:, -1:]
    return jnp.minimum(jnp.sum(cdf <= u, axis=-1), logits.shape[-1] - 1).astype(jnp.int32)


def _nucleus_draw(vals: jax.Array, idx: jax.Array, lse: jax.Array, top_p: jax.Array, u: jax.Array,
                  use_top_p: bool) -> tuple[jax.Array, jax.Array]:
    """One draw per row from the top-p filtered distribution, given its top tokens sorted: vals [N, C]
    (temperature-scaled logits, descending), idx [N, C] their ids, lse [N, 1] the log-normaliser of the
    whole (top-k filtered) distribution, u [N, 1] uniforms. -> (ids [N], covered [N]: the C tokens hold the
    whole nucleus). The kept tokens (those at or above `filter_logits`'s threshold) are a prefix of the
    sorted order, so the filtered CDF is the prefix sum itself: no second sort, no scatter back."""
    probs = jnp.exp(vals - lse)  # [N, C]
    cum = prefix_sum(probs)
    if use_top_p:
        threshold = jnp.min(jnp.where(cum - probs < top_p, vals, jnp.inf), axis=-1, keepdims=True)
        kept = vals >= threshold  # [N, C], a prefix
        covered = cum[:, -1] >= top_p
    else:
        kept = jnp.ones_like(vals, bool)
        covered = jnp.ones(vals.shape[:1], bool)
    n_kept = jnp.sum(kept, axis=-1)
    mass = jnp.sum(jnp.where(kept, probs, 0.0), axis=-1, keepdims=True)
    j = jnp.minimum(jnp.sum(cum <= u * mass, axis=-1), n_kept - 1)  # [N]
    return jnp.take_along_axis(idx, j[:, None], axis=1)[:, 0].astype(jnp.int32), covered


def sample_tokens(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array, top_k: int,
                  use_top_p: bool) -> jax.Array:
    """[N, V] logits -> [N] sampled ids (temperature, then top-k, then top-p, as transformers orders them).

    One uniform per row serves whichever path runs: the top CANDIDATES tokens, or (a nucleus wider than
    that, under lax.cond) the top WIDE_CANDIDATES, or (wider still) all V tokens sorted once by top_k. Each
    tier's tokens are a prefix of the full sorted order, so every path draws the token the full sort would."""
    u = jax.random.uniform(key, (logits.shape[0], 1))
    z = logits.astype(jnp.float32) / temperature
    if top_k == 0 and not use_top_p:
        return inverse_cdf_sample(z, u)
    vals, idx = jax.lax.top_k(z, top_k if top_k > 0 else CANDIDATES)  # sorted descending
    lse = jax.nn.logsumexp(vals if top_k > 0 else z, axis=-1, keepdims=True)
    tok, covered = _nucleus_draw(vals, idx, lse, top_p, u, use_top_p)
    if top_k > 0 or not use_top_p:
        return tok

    def from_top(c: int):
        def draw(_):
            vals, idx = jax.lax.top_k(z, c)
            return _nucleus_draw(vals, idx, lse, top_p, u, True)
        return draw

    def from_wide(_):
        if WIDE_CANDIDATES >= z.shape[-1]:
            return from_top(z.shape[-1])(None)[0]
        tok, covered = from_top(WIDE_CANDIDATES)(None)
        return jax.lax.cond(jnp.all(covered), lambda _: tok, lambda _: from_top(z.shape[-1])(None)[0], None)

    return jax.lax.cond(jnp.all(covered), lambda _: tok, from_wide, None)


def _constrain(x: jax.Array, mesh: Mesh | None, axes) -> jax.Array:
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, fitted_sharding(mesh, axes, x.shape))


class DecodeCache(NamedTuple):
    """The keys/values decode reads: each prompt's once, and each sample's generated tokens."""

    prefix: KVCache  # k/v [N_layers, P, KV, Lp, hd], mask [P, Lp]: shared by the prompt's K consecutive rows
    k: jax.Array  # [N_layers, P*K, KV, G, hd]: slot t holds generated token t (its mask is SamplingState.key_mask)
    v: jax.Array


class SamplingState(NamedTuple):
    """The decode while-loop's carry, one named field per piece (tunix's name for it)."""

    step: jax.Array  # [] tokens generated so far = the generation slot the next token is written to
    cache: DecodeCache
    key_mask: jax.Array  # [P*K, G] bool: generation slots filled
    logits: jax.Array  # [P*K, V] float32: the distribution of the next token
    positions: jax.Array  # [P*K] rotary position of the next token
    tokens: jax.Array  # [P*K, G] generated ids (pad_id after a row's EOS)
    done: jax.Array  # [P*K] bool: the row emitted EOS


def prompt_count_bucket(p: int) -> int:
    """Prompt-count buckets 1, 2, 4, 6, 8, 12, 16, 24, ...: few programs, at most 50% dummy prompts."""
    return 1 << (p - 1).bit_length() if p <= 4 else bucket_length(p, 4)


# The jitted pieces are module-level with the graph definition static, so every Sampler over models of the
# same structure shares one compiled program per (bucket, flags).
@functools.partial(jax.jit, static_argnames=("graphdef", "mesh", "num_samples", "gen_len"))
def _prefill(graphdef, state, tokens, mask, *, mesh, num_samples: int, gen_len: int):
    """tokens, mask [P, Lp] left padded -> (DecodeCache, last logits [P*K, V], key mask [P*K, G], next pos [P*K]).

    The prompt's keys/values stay [P, Lp]: the K samples of a prompt read the same prefix (decode attends
    to it with the K query rows folded together), so it is neither repeated nor copied per sample."""
    model = nnx.merge(graphdef, state)
    cfg = model.config
    p, lp = tokens.shape
    positions = positions_from_mask(mask)
    hidden, prefix = model.hidden_states(tokens, positions, mask.astype(bool), return_kv=True)
    logits = model.head(hidden[:, -1])  # left padding: the last real token is at Lp-1
    n = p * num_samples
    prefix = KVCache(_constrain(prefix.k, mesh, CACHE_AXES), _constrain(prefix.v, mesh, CACHE_AXES),
                     _constrain(prefix.mask, mesh, ("batch", None)))
    shape = (cfg.num_layers, n, cfg.num_kv_heads, gen_len, cfg.head_dim)
    k, v = (_constrain(jnp.zeros(shape, cfg.jnp_dtype), mesh, CACHE_AXES) for _ in range(2))
    key_mask = _constrain(jnp.zeros((n, gen_len), bool), mesh, ("batch", None))
    logits = _constrain(jnp.repeat(logits, num_samples, axis=0), mesh, ("batch", None))
    next_pos = jnp.repeat(positions[:, -1] + 1, num_samples)
    return DecodeCache(prefix, k, v), logits, key_mask, next_pos


@functools.partial(jax.jit, static_argnames=("graphdef", "eos_ids", "pad_id", "greedy", "top_k", "use_top_p",
                                             "fuse"), donate_argnames=("cache",))
def _decode(graphdef, state, cache, key_mask, logits, next_pos, key, max_new_tokens, temperature, top_p, *,
            eos_ids: tuple[int, ...], pad_id: int, greedy: bool, top_k: int, use_top_p: bool, fuse: bool):
    """All decode steps in one while_loop; stops when every row hit EOS or after max_new_tokens.

    Per step: one layer scan that only reads the caches (prefix + generated) and returns the new token's
    keys/values, then one dynamic_update_slice of all layers' [N, B, KV, 1, hd] into the donated cache,
    which XLA does in place in the loop carry. With `fuse`, the fused q/k/v and gate/up weights are built
    once here, before the loop (`Llm.fused_projections`), and every step reads them."""
    model = nnx.merge(graphdef, state)
    n, gen_len = key_mask.shape
    eos = jnp.asarray(eos_ids, jnp.int32)
    fused = model.fused_projections() if fuse else None

    def cond(s: SamplingState):
        return (s.step < max_new_tokens) & ~jnp.all(s.done)

    def body(s: SamplingState) -> SamplingState:
        if greedy:
            tok = jnp.argmax(s.logits, axis=-1).astype(jnp.int32)
        else:
            tok = sample_tokens(s.logits, jax.random.fold_in(key, s.step), temperature, top_p, top_k, use_top_p)
        tok = jnp.where(s.done, pad_id, tok)
        tokens = jax.lax.dynamic_update_slice(s.tokens, tok[:, None], (0, s.step))
        done = s.done | jnp.isin(tok, eos)
        generated = KVCache(s.cache.k, s.cache.v, s.key_mask)
        hidden, new = model.extend(tok[:, None], s.positions[:, None], None, (s.cache.prefix, generated), fused)
        at = (0, 0, 0, s.step, 0)  # generation slot s.step of every layer, row and KV head
        cache = s.cache._replace(k=jax.lax.dynamic_update_slice(s.cache.k, new.k.astype(s.cache.k.dtype), at),
                                 v=jax.lax.dynamic_update_slice(s.cache.v, new.v.astype(s.cache.v.dtype), at))
        key_mask = jax.lax.dynamic_update_slice(s.key_mask, jnp.ones((n, 1), bool), (0, s.step))
        return SamplingState(step=s.step + 1, cache=cache, key_mask=key_mask, logits=model.head(hidden[:, 0]),
                             positions=s.positions + 1, tokens=tokens, done=done)

    start = SamplingState(step=jnp.int32(0), cache=cache, key_mask=key_mask, logits=logits, positions=next_pos,
                          tokens=jnp.full((n, gen_len), pad_id, jnp.int32), done=jnp.zeros((n,), bool))
    end = jax.lax.while_loop(cond, body, start)
    return end.tokens, end.done, end.cache  # the cache goes back out so its donated buffers are reused


class Sampler:
    """Generates from a model (optionally sharded over `mesh`: batch over data x fsdp, params by their rules)."""

    def __init__(self, model: Llm, eos_ids: Sequence[int], pad_id: int, mesh: Mesh | None = None,
                 fuse_projections: bool = False):
        """fuse_projections: decode with q/k/v and gate/up fused (`Llm.fused_projections`). Off by default: an
        isolated microbenchmark of a 20-row step's matmuls had them at 35-44 ms fused against 47-50 ms apart,
        but the whole decode step measured 0.85x (0.79-1.09, 3 interleaved pairs, SmolLM2 P=4 x K=5,
        `benchmarks/decode_floor.py`, 2 CPU cores, 2026-12-08, on a machine running at a third of its usual
        matmul rate). Measure again with `decode_floor.py --fuse on,off` before turning it on; on an
        accelerator decode is bound by reading the weights, which fusion does not change."""
        if not eos_ids:
            raise ValueError("eos_ids is empty: give at least one stop token")
        self.graphdef, self.state = nnx.split(model)
        self.cfg = model.config
        self.eos_ids = tuple(int(i) for i in eos_ids)
        self.pad_id = int(pad_id)
        self.mesh = mesh
        # A model whose projections cannot be fused (an adapter in training mode) decodes unfused (`_decode`).
        self.fuse = bool(fuse_projections)

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
        p_pad = prompt_count_bucket(p)
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
            jnp.int32(max_new_tokens), jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p),
            eos_ids=self.eos_ids, pad_id=self.pad_id, greedy=greedy, top_k=int(top_k),
            use_top_p=(not greedy) and top_p < 1.0, fuse=self.fuse)
        out = parallel.fetch(out)[: p * k].reshape(p, k, -1)
        done = parallel.fetch(done)[: p * k].reshape(p, k)
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
        """Rows over the data axes where they divide (a few prompts of K samples may not), else replicated."""
        if self.mesh is None:
            return jnp.asarray(x)
        return jax.device_put(x, fitted_sharding(self.mesh, ("batch",) + (None,) * (x.ndim - 1), x.shape))
