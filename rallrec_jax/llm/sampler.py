"""Autoregressive sampling: one jitted prefill, then every decode step inside ONE `jax.lax.while_loop`.

K samples per prompt share one prefill (the prefilled KV cache is repeated K times). The cache is
preallocated at prompt bucket + generation bucket slots and donated to the decode loop. Prompt length,
generation length and prompt count are bucketed, so a long run compiles a handful of programs only.
Temperature 0 is greedy; otherwise temperature, top-k and top-p (nucleus) filtering, then a categorical
draw keyed by (seed, step): the same seed gives the same samples.
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


def filter_logits(logits: jax.Array, temperature: jax.Array, top_p: jax.Array, top_k: int, use_top_p: bool):
    """[N, V] logits -> temperature-scaled logits with everything outside top-k / the top-p nucleus at -inf."""
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
        self._prefill = jax.jit(self._prefill_fn, static_argnames=("num_samples", "gen_len"))
        self._decoders: dict[int, object] = {}  # prompt bucket -> jitted decode loop

    # ------------------------------------------------------------------ jitted pieces
    def _constrain(self, x: jax.Array, axes):
        if self.mesh is None:
            return x
        return jax.lax.with_sharding_constraint(x, fitted_sharding(self.mesh, axes, x.shape))

    def _prefill_fn(self, state, tokens, mask, *, num_samples: int, gen_len: int):
        """tokens, mask [P, Lp] left padded -> cache [P*K, Lp+G, ...], last logits [P*K, V], key mask, next pos."""
        model = nnx.merge(self.graphdef, state)
        p, lp = tokens.shape
        positions = positions_from_mask(mask)
        cache = init_cache(self.cfg, p, lp)
        logits, cache = model(tokens, positions, mask.astype(bool), kv_cache=cache, cache_index=0,
                              logits_at=jnp.full((p,), lp - 1))  # left padding: last real token is at Lp-1

        def grow(x):  # [P, Lp, ...] -> [P*K, Lp+G, ...]: room for generation, one copy per sample.
            x = jnp.pad(x, ((0, 0), (0, gen_len)) + ((0, 0),) * (x.ndim - 2))
            return self._constrain(jnp.repeat(x, num_samples, axis=0), CACHE_AXES[: x.ndim])

        cache = jax.tree.map(grow, cache)
        key_mask = grow(mask.astype(bool))
        logits = self._constrain(jnp.repeat(logits, num_samples, axis=0), ("batch", None))
        next_pos = jnp.repeat(positions[:, -1] + 1, num_samples)
        return cache, logits, key_mask, next_pos

    # ------------------------------------------------------------------ public
    def __call__(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, num_samples: int = 1,
                 temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0) -> SampleOutput:
        if not prompts:
            raise ValueError("no prompts given")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise ValueError(f"bad sampling parameters temperature={temperature}, top_p={top_p}, top_k={top_k}")
        p, k = len(prompts), int(num_samples)
        lp = bucket_length(max(len(x) for x in prompts))
        gen_len = bucket_length(max_new_tokens)
        if lp + gen_len > self.cfg.max_position_embeddings * 4:
            raise ValueError(f"prompt bucket {lp} + generation bucket {gen_len} is far beyond the model's "
                             f"max_position_embeddings={self.cfg.max_position_embeddings}")
        p_pad = 1 << (p - 1).bit_length()  # prompt count bucket: powers of two
        dp = 1 if self.mesh is None else parallel.data_parallel_size(self.mesh)
        while (p_pad * k) % dp:
            p_pad += 1
        padded = list(prompts) + [prompts[0]] * (p_pad - p)  # dummy rows, discarded below
        tokens, mask = pad_batch(padded, lp, self.pad_id, side="left")
        tokens, mask = self._put(tokens), self._put(mask)
        cache, logits, key_mask, next_pos = self._prefill(self.state, tokens, mask, num_samples=k, gen_len=gen_len)
        out, done, _ = self._run_decode(cache, key_mask, logits, next_pos, seed, max_new_tokens, temperature, top_p,
                                     top_k, lp)
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

    def _run_decode(self, cache, key_mask, logits, next_pos, seed, max_new_tokens, temperature, top_p, top_k, lp):
        greedy = temperature == 0.0
        return self._decode_lp(lp)(
            self.state, cache, key_mask, logits, next_pos, jax.random.key(seed), jnp.int32(max_new_tokens),
            jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p), greedy=greedy, top_k=int(top_k),
            use_top_p=(not greedy) and top_p < 1.0)

    def _decode_lp(self, lp: int):
        """The decode loop jitted for one prompt bucket (the cache is donated: the loop reuses its buffers)."""
        if lp not in self._decoders:
            self._decoders[lp] = jax.jit(functools.partial(self._decode_body, lp=lp),
                                         static_argnames=("greedy", "top_k", "use_top_p"), donate_argnames=("cache",))
        return self._decoders[lp]

    def _decode_body(self, state, cache, key_mask, logits, next_pos, key, max_new_tokens, temperature, top_p, *,
                     lp: int, greedy: bool, top_k: int, use_top_p: bool):
        model = nnx.merge(self.graphdef, state)
        n, s = key_mask.shape
        gen_len = s - lp
        eos = jnp.asarray(self.eos_ids, jnp.int32)
        out = jnp.full((n, gen_len), self.pad_id, jnp.int32)
        done = jnp.zeros((n,), bool)

        def cond(carry):
            step, done = carry[0], carry[-1]
            return (step < max_new_tokens) & ~jnp.all(done)

        def body(carry):
            step, cache, key_mask, logits, pos, out, done = carry
            if greedy:
                tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            else:
                filtered = filter_logits(logits, temperature, top_p, top_k, use_top_p)
                tok = jax.random.categorical(jax.random.fold_in(key, step), filtered).astype(jnp.int32)
            tok = jnp.where(done, self.pad_id, tok)
            out = jax.lax.dynamic_update_slice(out, tok[:, None], (0, step))
            done = done | jnp.isin(tok, eos)
            slot = lp + step
            key_mask = jax.lax.dynamic_update_slice(key_mask, jnp.ones((n, 1), bool), (0, slot))
            logits, cache = model(tok[:, None], pos[:, None], key_mask, kv_cache=cache, cache_index=slot,
                                  logits_at=jnp.zeros((n,), jnp.int32))
            return step + 1, cache, key_mask, logits, pos + 1, out, done

        carry = (jnp.int32(0), cache, key_mask, logits, next_pos, out, done)
        carry = jax.lax.while_loop(cond, body, carry)
        return carry[5], carry[6], carry[1]  # the cache goes back out so its donated buffers can be reused

    def _put(self, x: np.ndarray) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(x)
        return jax.device_put(x, parallel.batch_sharding(self.mesh, x.ndim))
