"""Sampler: KV-cache decoding vs full recomputation, sampling reproducibility, filters, sharding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rallrec_jax import parallel
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.model import create_model
from rallrec_jax.llm.sharding import shard_model
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm import sampler as sampler_lib
from rallrec_jax.llm.sampler import CANDIDATES, WIDE_CANDIDATES, Sampler, candidate_logits, filter_logits, sample_tokens

CFG = LlmConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                head_dim=8, max_position_embeddings=256, tie_word_embeddings=False, qkv_bias=True)
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36]]


def sharp_model(seed=0):
    """Random weights scaled up so logits have O(1) margins (greedy choices are then not float ties)."""
    model = create_model(CFG, seed=seed)
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: x * 2.0 if x.ndim == 2 else x, state))
    return model


_full_forward = nnx.jit(lambda m, t: m(t, jnp.arange(t.shape[1])[None]))


def greedy_by_recompute(model, prompt, steps, eos):
    """Greedy decoding that reruns the whole sequence (no cache) every step; right padding to a fixed
    length keeps one compiled program (causal attention ignores the padding after the last token)."""
    seq = list(prompt)
    for _ in range(steps):
        buf = np.zeros((1, 32 if len(seq) < 32 else 256), np.int32)
        buf[0, : len(seq)] = seq
        logits = np.asarray(_full_forward(model, jnp.asarray(buf)))
        seq.append(int(np.argmax(logits[0, len(seq) - 1])))
        if seq[-1] in eos:
            break
    return seq[len(prompt):]


def test_kv_cache_greedy_equals_full_recompute():
    model = sharp_model()
    # pick as EOS a token the first prompt emits mid-way, so per-row stopping is exercised.
    free = greedy_by_recompute(model, PROMPTS[0], 10, eos=())
    eos = (free[3],)
    assert free.index(eos[0]) == 3
    sampler = Sampler(model, eos_ids=eos, pad_id=0)
    out = sampler(PROMPTS, max_new_tokens=10)
    for prompt, got in zip(PROMPTS, out.tokens):
        want = greedy_by_recompute(model, prompt, 10, eos)
        assert got[0] == want, (prompt, got[0], want)
    assert out.finished[0, 0] and len(out.tokens[0][0]) == 4
    assert len(set(free)) > 3  # the check is not trivially one repeated token


def test_long_prompt_prefill_uses_chunked_attention_correctly():
    model = sharp_model()
    prompt = np.random.default_rng(2).integers(1, 63, size=150).tolist()  # > ATTN_CHUNK query rows
    got = Sampler(model, eos_ids=(63,), pad_id=0)([prompt, prompt[:20]], max_new_tokens=4).tokens
    assert got[0][0] == greedy_by_recompute(model, prompt, 4, (63,))
    assert got[1][0] == greedy_by_recompute(model, prompt[:20], 4, (63,))


def test_samples_differ_and_are_reproducible():
    model = sharp_model()
    sampler = Sampler(model, eos_ids=(63,), pad_id=0)
    kw = dict(max_new_tokens=12, num_samples=4, temperature=1.0, top_p=0.95, top_k=40)
    a = sampler(PROMPTS[:2], seed=7, **kw).tokens
    b = sampler(PROMPTS[:2], seed=7, **kw).tokens
    c = sampler(PROMPTS[:2], seed=8, **kw).tokens
    assert a == b
    assert a != c
    for traces in a:
        assert len({tuple(t) for t in traces}) == 4  # K traces of one prompt differ


def test_first_sample_follows_the_prefill_distribution():
    """K samples of the first token share one prefill: their frequencies match softmax(logits / T)."""
    model = create_model(CFG, seed=3)
    sampler = Sampler(model, eos_ids=(63,), pad_id=0)
    k = 2000
    first = np.array([t[0] for t in sampler([PROMPTS[1]], max_new_tokens=1, num_samples=k, temperature=0.7,
                                            seed=1).tokens[0]])
    logits = np.asarray(model(jnp.asarray([PROMPTS[1]]), jnp.arange(3)[None]))[0, -1] / 0.7
    p = np.exp(logits - logits.max())
    p /= p.sum()
    freq = np.bincount(first, minlength=CFG.vocab_size) / k
    assert np.abs(freq - p).sum() < 0.25  # total variation ~ sqrt(V/k) noise


def test_filter_logits_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50)).astype(np.float32)
    out = np.asarray(filter_logits(jnp.asarray(logits), jnp.float32(0.5), jnp.float32(0.8), 10, True))
    for row, got in zip(logits, out):
        scaled = row / 0.5
        kept = set(np.argsort(-scaled)[:10])
        order = [i for i in np.argsort(-scaled) if i in kept]
        z = scaled[order]
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        nucleus = set(np.array(order)[: int(np.searchsorted(np.cumsum(p), 0.8) + 1)])
        assert set(np.flatnonzero(got > -1e30)) == nucleus
        np.testing.assert_allclose(got[list(nucleus)], scaled[list(nucleus)], rtol=1e-6)


def test_buckets_bound_recompiles():
    sampler = Sampler(sharp_model(), eos_ids=(62,), pad_id=0)  # a stop id no other test uses: fresh programs
    prefills, decodes = sampler_lib._prefill._cache_size(), sampler_lib._decode._cache_size()
    for n in (3, 5, 9, 14):  # all in the 16-token prompt bucket
        sampler([list(range(1, n + 1))], max_new_tokens=5 + n)  # 8..19 new tokens: buckets 16 and 24
    assert sampler_lib._prefill._cache_size() - prefills <= 2  # gen buckets 16, 24 (maybe compiled before)
    assert sampler_lib._decode._cache_size() - decodes == 2  # prompt bucket 16 x gen buckets 16, 24


def test_sharded_sampling_equals_single_device():
    model = sharp_model()
    single = Sampler(model, eos_ids=(63,), pad_id=0)
    want_greedy = single(PROMPTS, max_new_tokens=8).tokens
    want_sampled = single(PROMPTS, max_new_tokens=8, num_samples=3, temperature=0.8, seed=5).tokens
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded_model = shard_model(sharp_model(), mesh)
    kernel = sharded_model.layers.mlp.up_proj.kernel[...]  # [N_layers, D, F]: the layer axis is never sharded
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    sharded = Sampler(sharded_model, eos_ids=(63,), pad_id=0, mesh=mesh)
    assert sharded(PROMPTS, max_new_tokens=8).tokens == want_greedy
    assert sharded(PROMPTS, max_new_tokens=8, num_samples=3, temperature=0.8, seed=5).tokens == want_sampled


def test_bad_arguments_are_named():
    sampler = Sampler(sharp_model(), eos_ids=(63,), pad_id=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampler(PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        sampler(PROMPTS, max_new_tokens=3, temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="eos_ids"):
        Sampler(sharp_model(), eos_ids=(), pad_id=0)


def test_candidate_nucleus_equals_full_sort_and_falls_back():
    rng = np.random.default_rng(1)
    peaked = jnp.asarray(rng.normal(size=(4, 1000)) * 4.0, jnp.float32)  # nucleus well inside 64 tokens
    for top_k in (0, 20):
        full = np.asarray(filter_logits(peaked, jnp.float32(0.6), jnp.float32(0.95), top_k, True))
        vals, idx, covered = (np.asarray(a) for a in candidate_logits(peaked, jnp.float32(0.6), jnp.float32(0.95),
                                                                      top_k, True))
        assert covered.all()
        for r in range(4):
            assert set(idx[r][vals[r] > -1e30]) == set(np.flatnonzero(full[r] > -1e30))
    flat = jnp.zeros((2, 1000), jnp.float32)  # uniform: the 0.9-nucleus holds 900 tokens > CANDIDATES
    assert not np.asarray(candidate_logits(flat, jnp.float32(1.0), jnp.float32(0.9), 0, True)[2]).any()
    draws = np.asarray(jax.vmap(lambda k: sample_tokens(flat, k, jnp.float32(1.0), jnp.float32(0.9), 0, True))(
        jax.random.split(jax.random.key(0), 100)))
    assert len(np.unique(draws)) > 2 * CANDIDATES  # the full-sort fallback ran (candidates alone give <= 64)


def numpy_nucleus_draw(logits: np.ndarray, u: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """The top-p draw by its definition: sort descending, keep the smallest prefix whose mass reaches top_p,
    invert its CDF at u (one uniform per row). logits [N, V] (distinct values), u [N] -> ids [N]."""
    out = []
    for z, x in zip(np.asarray(logits, np.float64) / temperature, u):
        order = np.argsort(-z, kind="stable")
        p = np.exp(z[order] - z.max())
        p /= p.sum()
        cum = np.cumsum(p)
        n_kept = int(np.sum(cum - p < top_p))
        out.append(order[min(int(np.sum(cum[:n_kept] <= x * cum[n_kept - 1])), n_kept - 1)])
    return np.array(out)


@pytest.mark.parametrize("width", [300, 3000])  # nucleus inside the wide tier / wider than it (the full sort)
def test_every_fallback_tier_draws_the_full_sorts_token(width):
    v = 5000
    rng = np.random.default_rng(width)
    # `width` near-equal tokens on top and a long tail far below: the 0.9-nucleus holds about 0.9 * width tokens.
    logits = np.concatenate([rng.uniform(0.0, 0.01, (3, width)), rng.uniform(-30.0, -20.0, (3, v - width))], axis=1)
    logits = jnp.asarray(rng.permuted(logits, axis=1), jnp.float32)
    assert CANDIDATES < 0.9 * 300 < WIDE_CANDIDATES < 0.9 * 3000
    keys = jax.random.split(jax.random.key(width), 50)
    got = np.asarray(jax.vmap(lambda k: sample_tokens(logits, k, jnp.float32(1.0), jnp.float32(0.9), 0, True))(keys))
    u = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (3, 1)))(keys))[..., 0]  # the sampler's one uniform a row
    want = np.stack([numpy_nucleus_draw(np.asarray(logits), u[i], 1.0, 0.9) for i in range(len(keys))])
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got)) > 2 * CANDIDATES  # the draws spread beyond the first tier


def test_top_p_samples_follow_the_nucleus_distribution():
    logits = jnp.asarray(np.random.default_rng(4).normal(size=(1, 200)) * 2.0, jnp.float32)
    keys = jax.random.split(jax.random.key(3), 4000)
    draws = np.asarray(jax.vmap(lambda k: sample_tokens(logits, k, jnp.float32(0.7), jnp.float32(0.8), 0, True))(
        keys))[:, 0]
    z = np.asarray(logits[0], np.float64) / 0.7
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p)
    keep = order[(np.cumsum(p[order]) - p[order]) < 0.8]
    q = np.zeros_like(p)
    q[keep] = p[keep] / p[keep].sum()
    assert set(np.unique(draws)) <= set(keep)
    freq = np.bincount(draws, minlength=200) / len(draws)
    assert np.abs(freq - q).sum() < 0.1


# ----------------------------------------------------------------------------- fused decode projections
def lora_everywhere(seed=0, dropout=0.0):
    """A sharp model with adapters on all seven projections and non-zero B, so the fold-in is visible."""
    model = sharp_model(seed)
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lora_lib.apply_lora(model, lora_lib.LoraConfig(rank=4, alpha=8.0, dropout=dropout, targets=targets),
                        rngs=nnx.Rngs(seed))
    for _, node in nnx.iter_graph(model):
        if isinstance(node, lora_lib.LoraDense):
            node.lora_b.set_value(0.3 * jax.random.normal(jax.random.key(seed + 7), node.lora_b.get_value().shape))
    return model


@pytest.mark.parametrize("adapted", [False, True])
def test_fused_projections_are_the_kernels_side_by_side_and_decode_the_same(adapted):
    model = lora_everywhere() if adapted else sharp_model()
    fused = model.fused_projections()
    attn, mlp = model.layers.attn, model.layers.mlp

    def effective(layer):  # numpy: W + (alpha / r) A @ B for an adapted layer
        if isinstance(layer, lora_lib.LoraDense):
            return (np.asarray(layer.base.kernel.get_value())
                    + layer.scale * np.asarray(layer.lora_a.get_value()) @ np.asarray(layer.lora_b.get_value()))
        return np.asarray(layer.kernel.get_value())

    want_qkv = np.concatenate([effective(m) for m in (attn.q_proj, attn.k_proj, attn.v_proj)], axis=-1)
    want_gu = np.concatenate([effective(m) for m in (mlp.gate_proj, mlp.up_proj)], axis=-1)
    assert fused["qkv"].shape == (CFG.num_layers, CFG.hidden_size, (CFG.num_heads + 2 * CFG.num_kv_heads) * 8)
    np.testing.assert_allclose(fused["qkv"], want_qkv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused["gate_up"], want_gu, rtol=1e-5, atol=1e-6)
    assert "qkv_bias" in fused and "gate_up_bias" not in fused  # CFG has q/k/v biases, no MLP bias
    # One decode chunk after a cached prompt: the same hidden states and new keys/values either way.
    tokens = jnp.asarray([[5, 6, 7, 8], [9, 10, 11, 12]])
    mask = jnp.ones_like(tokens, bool)
    _, prefix = model.hidden_states(tokens, jnp.arange(4)[None].repeat(2, 0), mask, return_kv=True)
    step, pos = jnp.asarray([[13], [14]]), jnp.asarray([[4], [4]])
    h0, kv0 = model.extend(step, pos, None, (prefix,))
    h1, kv1 = model.extend(step, pos, None, (prefix,), fused)
    np.testing.assert_allclose(h1, h0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kv1.k, kv0.k, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kv1.v, kv0.v, rtol=1e-5, atol=1e-5)


def test_an_adapter_with_dropout_in_training_mode_is_not_fused():
    model = lora_everywhere(dropout=0.1)
    model.train()
    assert model.fused_projections() is None
    model.eval()
    assert model.fused_projections() is not None


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_fused_and_unfused_samplers_draw_the_same_tokens(temperature):
    model = lora_everywhere(seed=3)
    runs = [Sampler(model, eos_ids=(63,), pad_id=0, fuse_projections=f)(
        PROMPTS, max_new_tokens=12, num_samples=3, temperature=temperature, top_p=0.9, seed=4) for f in (False, True)]
    assert runs[0].tokens == runs[1].tokens
    assert not Sampler(model, eos_ids=(63,), pad_id=0).fuse  # off unless asked for (Sampler's docstring)
