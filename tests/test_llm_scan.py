"""The scanned decoder (one stacked Block, one lax.scan) against the unrolled reference of tests/unrolled.py
(a Python loop over the per-layer slices): logits, gradients and greedy tokens, on tiny random models, the
HF-layout tiny Llama of tests/tiny_llm.py, and the real SmolLM2-135M GGUF."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.model import LAYER_AXIS, create_model, positions_from_mask
from rallrec_jax.llm.sampler import Sampler
from tests.unrolled import layer_slices, unrolled_logits

CFG = LlmConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2,
                head_dim=8, max_position_embeddings=256, tie_word_embeddings=False, qkv_bias=True)


def sharp(model):
    """Weights scaled up so greedy choices have margins (no float ties between scan and loop)."""
    nnx.update(model, jax.tree.map(lambda x: x * 2.0 if x.ndim == 3 else x, nnx.state(model, nnx.Param)))
    return model


def padded_batch(vocab: int, rows: int = 3, length: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(1, vocab, size=(rows, length)), jnp.int32)
    mask = np.ones((rows, length), np.int32)
    mask[1, :5] = 0  # left padded
    mask[2, 14:] = 0  # right padded
    mask = jnp.asarray(mask)
    return tokens, mask, positions_from_mask(mask)


def greedy_by_unrolled_recompute(model, prompt, steps, buffer=64):
    """Greedy continuation recomputed from scratch (unrolled, no cache) after every token."""
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda st, t: unrolled_logits(nnx.merge(graphdef, st), t, jnp.arange(buffer)[None]))
    seq = list(prompt)
    for _ in range(steps):
        buf = np.zeros((1, buffer), np.int32)
        buf[0, :len(seq)] = seq
        seq.append(int(np.argmax(np.asarray(fwd(state, jnp.asarray(buf)))[0, len(seq) - 1])))
    return seq[len(prompt):]


def check_logits_and_greedy(model, vocab, prompts, steps, rtol):
    """Logits of real tokens within rtol x the largest |logit|, the same argmax, and the same greedy tokens."""
    tokens, mask, pos = padded_batch(vocab)
    graphdef, state = nnx.split(model)
    scanned = jax.jit(lambda st: nnx.merge(graphdef, st)(tokens, pos, mask))(state)
    loop = jax.jit(lambda st: unrolled_logits(nnx.merge(graphdef, st), tokens, pos, mask))(state)
    real = np.asarray(mask).astype(bool)
    a, b = np.asarray(scanned)[real], np.asarray(loop)[real]
    diff, scale = np.abs(a - b).max(), np.abs(b).max()
    print(f"scanned vs unrolled: max |logit diff| {diff:.1e} (max |logit| {scale:.1f})")
    assert diff <= rtol * scale
    assert (a.argmax(-1) == b.argmax(-1)).all()
    got = Sampler(model, eos_ids=(vocab + 1,), pad_id=0)(prompts, max_new_tokens=steps).tokens
    for prompt, rows in zip(prompts, got):
        assert rows[0] == greedy_by_unrolled_recompute(model, prompt, steps)


def test_stacked_layout():
    model = create_model(CFG, seed=0)
    q = model.layers.attn.q_proj.kernel
    assert q[...].shape == (3, 32, 32) and q.get_metadata()["logical_axes"] == (LAYER_AXIS, "embed", "heads")
    assert model.layers.input_norm.scale[...].shape == (3, 32)
    slices = layer_slices(model)
    assert len(slices) == 3 and slices[1].attn.q_proj.kernel[...].shape == (32, 32)
    # every layer initialised from its own RNG split
    assert not np.allclose(np.asarray(q[...][0]), np.asarray(q[...][1]))


def test_tiny_scanned_equals_unrolled_logits_gradients_and_greedy():
    model = sharp(create_model(CFG, seed=1))
    check_logits_and_greedy(model, CFG.vocab_size, [[5, 6, 7, 8, 9], [12, 13, 14]], 8, rtol=1e-6)
    tokens, mask, pos = padded_batch(CFG.vocab_size, seed=2)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, unrolled):
        m = nnx.merge(graphdef, params, rest)
        logits = unrolled_logits(m, tokens, pos, mask) if unrolled else m(tokens, pos, mask)
        return jnp.sum(jax.nn.log_softmax(logits) * mask[..., None]) / 100.0

    want = jax.jit(jax.grad(lambda p: loss(p, True)))(params)
    got = jax.jit(jax.grad(lambda p: loss(p, False)))(params)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, rtol=1e-5)
    assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(want)) > 1e-3  # gradients that can differ


def test_tiny_hf_model_scanned_equals_unrolled(tmp_path):
    pytest.importorskip("torch")
    from rallrec_jax.llm import weights
    from tests.tiny_llm import make_tiny_llm

    model = weights.load_hf(make_tiny_llm(tmp_path / "tiny"))
    check_logits_and_greedy(model, model.config.vocab_size, [[1, 2, 3, 4], [10, 11]], 6, rtol=1e-6)


def test_stacked_lora_dropout_streams_are_per_layer():
    model = lora_lib.apply_lora(create_model(CFG, seed=0), lora_lib.LoraConfig(dropout=0.5), rngs=nnx.Rngs(3))
    keys = model.layers.attn.q_proj.dropout.rngs.key[...]
    assert keys.shape == (CFG.num_layers,)
    data = np.asarray(jax.random.key_data(keys))
    assert len({tuple(row) for row in data}) == CFG.num_layers  # a stream per layer
    # train mode: the scan advances every layer's count once per forward, as a loop over the slices would
    model.train()
    tokens, mask, pos = padded_batch(CFG.vocab_size)
    nnx.jit(lambda m: m(tokens, pos, mask))(model)
    np.testing.assert_array_equal(np.asarray(model.layers.attn.q_proj.dropout.rngs.count[...]), 1)


@pytest.mark.slow
def test_smollm2_scanned_equals_unrolled():
    """The real 30-layer SmolLM2 GGUF: logits, LoRA gradients and greedy tokens of the scan against the loop."""
    pytest.importorskip("gguf")
    from rallrec_jax import assets
    from rallrec_jax.llm import tokenizer as tk
    from rallrec_jax.llm import weights

    path = assets.smollm2_gguf()
    model = weights.load_gguf(path)
    tok = tk.load_tokenizer(path)
    prompts = tk.encode(tok, [tk.chat_prompt(tok, q) for q in ("Name a French painter.", "Is the sky blue?")])
    # 30 float32 layers: the scan and the loop fuse differently, ~2.5e-6 x the largest logit (~35) apart
    check_logits_and_greedy(model, model.config.vocab_size, prompts, 6, rtol=1e-5)

    lora_lib.apply_lora(model, lora_lib.LoraConfig(dropout=0.0), rngs=nnx.Rngs(0))
    graphdef, adapters, rest = nnx.split(model, nnx.LoRAParam, ...)
    adapters = jax.tree.map(lambda x: x + 0.01, adapters)  # non-zero B: every adapter has a gradient
    tokens, mask, pos = padded_batch(model.config.vocab_size, length=16)

    def loss(adapters, rest, unrolled):
        m = nnx.merge(graphdef, adapters, rest)
        logits = unrolled_logits(m, tokens, pos, mask) if unrolled else m(tokens, pos, mask)
        return jnp.sum(jax.nn.log_softmax(logits)[..., 0] * mask) / 100.0

    want = jax.jit(jax.grad(lambda a, r: loss(a, r, True)))(adapters, rest)
    got = jax.jit(jax.grad(lambda a, r: loss(a, r, False)))(adapters, rest)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, rtol=1e-4)
