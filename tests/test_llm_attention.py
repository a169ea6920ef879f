"""Attention paths: the einsum path, `jax.nn.dot_product_attention` (its XLA implementation on CPU) and a numpy
softmax over the concatenated keys agree, with padding masks, grouped-query heads, a prefix shared by several
rows and a KV cache; and a whole model gives the same logits and greedy tokens on either path."""
import jax.numpy as jnp
import numpy as np
import pytest

from rallrec_jax.llm import attention
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.model import create_model, positions_from_mask
from rallrec_jax.llm.sampler import Sampler

B, T, H, KV, HD = 4, 5, 6, 2, 8  # G = 3 query heads per KV head


def numpy_attention(q, k, v, mask):
    """q [B, T, H, hd], k/v [B, S, KV, hd], mask [B, T, S] -> [B, T, H*hd], float64, head h reads KV head h // G."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    g = q.shape[2] // k.shape[2]
    out = np.zeros(q.shape)
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            s = q[b, :, h] @ k[b, :, h // g].T / np.sqrt(q.shape[-1])  # [T, S]
            s = np.where(mask[b], s, -np.inf)
            with np.errstate(invalid="ignore"):  # fully masked rows (padding queries) are NaN and not compared
                p = np.exp(s - s.max(-1, keepdims=True))
            out[b, :, h] = (p / p.sum(-1, keepdims=True)) @ v[b, :, h // g]
    return out.reshape(q.shape[0], q.shape[1], -1)


def rand(rng, *shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


def head_major(parts):
    """(k, v [B, S, KV, hd], mask) -> the KV cache's layout [B, KV, S, hd] that attend_parts reads."""
    return [(k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), m) for k, v, m in parts]


def test_self_attention_paths_equal_with_padding_and_gqa():
    rng = np.random.default_rng(0)
    q, k, v = rand(rng, B, T, H, HD), rand(rng, B, T, KV, HD), rand(rng, B, T, KV, HD)
    real = np.ones((B, T), bool)
    real[1, :2] = False  # left padding
    real[2, 3:] = False  # right padding
    mask = np.tril(np.ones((T, T), bool))[None] & real[:, None, :]
    want = numpy_attention(q, k, v, mask)
    rows = mask.any(-1)  # queries with at least one key
    for impl in ("einsum", "dot_product"):
        got = np.asarray(attention.attend(q, k, v, jnp.asarray(mask), impl))
        np.testing.assert_allclose(got[rows], want[rows], atol=1e-5)


def test_parts_with_a_shared_prefix_and_a_cache_equal_one_softmax_over_all_keys():
    """Decode's three key sets: a prompt prefix shared by 2 rows each ([B/2, Sp]), a per-row cache of generated
    tokens ([B, Sg], partly filled) and the new token itself; the same as attention over their concatenation."""
    rng = np.random.default_rng(1)
    sp, sg, r = 7, 4, 2
    q = rand(rng, B, 1, H, HD)
    pk, pv = rand(rng, B // r, sp, KV, HD), rand(rng, B // r, sp, KV, HD)
    p_real = rng.random((B // r, sp)) > 0.3
    p_real[:, -1] = True
    gk, gv = rand(rng, B, sg, KV, HD), rand(rng, B, sg, KV, HD)
    g_real = np.arange(sg)[None, :] < np.array([0, 1, 2, 4])[:, None]  # row 0 has generated nothing yet
    sk, sv = rand(rng, B, 1, KV, HD), rand(rng, B, 1, KV, HD)
    parts = [(pk, pv, jnp.asarray(p_real)[:, None]), (gk, gv, jnp.asarray(g_real)[:, None]),
             (sk, sv, jnp.ones((B, 1, 1), bool))]
    k_all = np.concatenate([np.repeat(np.asarray(pk), r, 0), np.asarray(gk), np.asarray(sk)], 1)
    v_all = np.concatenate([np.repeat(np.asarray(pv), r, 0), np.asarray(gv), np.asarray(sv)], 1)
    m_all = np.concatenate([np.repeat(p_real, r, 0), g_real, np.ones((B, 1), bool)], 1)[:, None]
    want = numpy_attention(q, k_all, v_all, m_all)
    for impl in ("einsum", "dot_product"):
        np.testing.assert_allclose(np.asarray(attention.attend_parts(q, head_major(parts), impl)), want, atol=1e-5)
    # a chunk of T queries after a shared prefix (prefix-shared scoring): prefix + causal self part
    q = rand(rng, B, T, H, HD)
    ck, cv = rand(rng, B, T, KV, HD), rand(rng, B, T, KV, HD)
    causal = np.broadcast_to(np.tril(np.ones((T, T), bool)), (B, T, T))
    parts = [(pk, pv, jnp.asarray(p_real)[:, None]), (ck, cv, jnp.asarray(causal))]
    k_all = np.concatenate([np.repeat(np.asarray(pk), r, 0), np.asarray(ck)], 1)
    v_all = np.concatenate([np.repeat(np.asarray(pv), r, 0), np.asarray(cv)], 1)
    m_all = np.concatenate([np.broadcast_to(np.repeat(p_real, r, 0)[:, None], (B, T, sp)), causal], 2)
    want = numpy_attention(q, k_all, v_all, m_all)
    for impl in ("einsum", "dot_product"):
        np.testing.assert_allclose(np.asarray(attention.attend_parts(q, head_major(parts), impl)), want, atol=1e-5)


def test_model_on_either_path_gives_the_same_logits_and_tokens():
    cfg = LlmConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, max_position_embeddings=256, attention_impl="einsum")
    tokens = jnp.asarray(np.random.default_rng(2).integers(1, 64, size=(2, 12)), jnp.int32)
    mask = jnp.asarray(np.arange(12)[None, :] >= np.array([[0], [4]]))  # row 1 left padded
    pos = positions_from_mask(mask)
    outs, samples = [], []
    for impl in ("einsum", "dot_product"):
        model = create_model(cfg.replace(attention_impl=impl), seed=0)
        outs.append(np.asarray(model(tokens, pos, mask))[np.asarray(mask)])
        samples.append(Sampler(model, eos_ids=(0,), pad_id=0)([[3, 4, 5], [6, 7]], max_new_tokens=6, num_samples=2,
                                                             temperature=0.8, seed=1).tokens)
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-5)
    assert samples[0] == samples[1]


def test_auto_takes_the_einsum_path_on_cpu_and_bad_names_are_errors():
    assert attention.resolve("auto", jnp.bfloat16, 64) == "einsum"  # no GPU here
    assert attention.resolve("dot_product", jnp.float32, 64) == "dot_product"
    with pytest.raises(ValueError, match="attention_impl='flash'"):
        LlmConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1, num_heads=1, num_kv_heads=1,
                  head_dim=8, attention_impl="flash")
