"""LoRA: identity at init, only adapters train, save/restore, merge."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rallrec_jax import checkpoint
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.lora import LoraConfig, LoraDense, apply_lora, lora_paths, merge_lora
from rallrec_jax.llm.model import create_model
from rallrec_jax.llm.scoring import Scorer

CFG = LlmConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                head_dim=8, max_position_embeddings=128, tie_word_embeddings=False)
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 64, size=(4, 12)))
POS = jnp.broadcast_to(jnp.arange(12), (4, 12))


def lora_model(seed=0, lora_seed=1):
    return apply_lora(create_model(CFG, seed=seed), LoraConfig(), rngs=nnx.Rngs(lora_seed))


def train(model, steps=5):
    """A few AdamW steps on next-token loss, dropout on; only LoRAParam is optimised."""
    model.train()
    opt = nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.LoRAParam)

    @nnx.jit
    def step(model, opt):
        def loss_fn(model):
            logits = model(TOKENS[:, :-1], POS[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, TOKENS[:, 1:]).mean()
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
        opt.update(model, grads)
        return loss

    losses = [float(step(model, opt)) for _ in range(steps)]
    model.eval()
    return losses


def test_defaults_target_q_and_v_and_start_as_identity():
    base = create_model(CFG, seed=0)
    want = base(TOKENS, POS)
    model = apply_lora(base, LoraConfig())
    paths = lora_paths(model)
    assert len(paths) == 2 * 2  # (A, B) of q_proj and v_proj, each stacked over the layers
    assert all(".q_proj." in p or ".v_proj." in p for p in paths)
    q = model.layers.attn.q_proj
    assert isinstance(q, LoraDense) and not isinstance(model.layers.attn.k_proj, LoraDense)
    assert q.lora_a[...].shape == (CFG.num_layers, CFG.hidden_size, 8)  # [N, in, r]
    assert q.lora_b[...].shape == (CFG.num_layers, 8, CFG.num_heads * CFG.head_dim)  # [N, r, out]
    assert q.lora_a.get_metadata()["logical_axes"] == ("layers", "embed", "lora_rank")
    assert q.scale == 2.0  # alpha / r = 16 / 8
    np.testing.assert_array_equal(np.asarray(model(TOKENS, POS)), np.asarray(want))
    with pytest.raises(ValueError, match="match no Dense"):
        apply_lora(create_model(CFG), LoraConfig(targets=("nonexistent",)))


def test_only_adapters_change_and_save_restore_merge(tmp_path):
    model = lora_model()
    scorer = Scorer(model, pad_id=0, batch_size=4)
    untuned = scorer.next_token_logits(np.asarray(TOKENS).tolist())
    base_before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))))
    lora_before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.LoRAParam)))
    losses = train(model)
    assert losses[-1] < losses[0]
    base_after = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))))
    lora_after = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.LoRAParam)))
    jax.tree.map(np.testing.assert_array_equal, base_before, base_after)  # the base is frozen
    changed = jax.tree.map(lambda a, b: bool((a != b).any()), lora_before, lora_after)
    assert all(jax.tree.leaves(changed))

    tuned = model(TOKENS, POS)
    assert np.abs(untuned - np.asarray(tuned)[:, -1]).max() > 1e-3
    scorer.refresh(model)
    np.testing.assert_allclose(scorer.next_token_logits(np.asarray(TOKENS).tolist()), np.asarray(tuned)[:, -1],
                               atol=2e-5)
    checkpoint.save_adapters(tmp_path / "adapters", 5, model)
    fresh = lora_model(lora_seed=99)  # same base, different adapter init
    assert np.abs(np.asarray(fresh(TOKENS, POS)) - np.asarray(tuned)).max() > 1e-4
    assert checkpoint.restore_adapters(tmp_path / "adapters", fresh) == 5
    np.testing.assert_array_equal(np.asarray(fresh(TOKENS, POS)), np.asarray(tuned))

    merged = merge_lora(fresh)
    assert not jax.tree.leaves(nnx.state(merged, nnx.LoRAParam))
    np.testing.assert_allclose(np.asarray(merged(TOKENS, POS)), np.asarray(tuned), atol=1e-5)


def test_dropout_is_active_only_in_train_mode():
    model = lora_model()
    train(model, steps=2)  # non-zero B so the adapter path matters
    eval_out = model(TOKENS, POS)
    np.testing.assert_array_equal(np.asarray(model(TOKENS, POS)), np.asarray(eval_out))
    model.train()
    assert np.abs(np.asarray(model(TOKENS, POS)) - np.asarray(eval_out)).max() > 0
    with pytest.raises(ValueError, match="no nnx.LoRAParam"):
        checkpoint.save_adapters("/tmp/unused", 0, create_model(CFG))


def test_packed_dropout_drops_at_the_rate_independently_and_keeps_the_mean():
    """The mask of `PackedDropout` (two entries per random word): the dropped fraction is the rate within a 5-sigma
    binomial bound, neighbours (the two halves of one word) are independent, kept values are scaled by 1/keep."""
    from rallrec_jax.llm.lora import PackedDropout

    rate, shape = 0.05, (64, 1001)  # an odd size: the last word's second half is cut off
    drop = PackedDropout(rate, deterministic=False, rngs=nnx.Rngs(dropout=7))
    x = jnp.ones(shape)
    y = np.asarray(drop(x))
    n = y.size
    dropped = y == 0
    assert abs(dropped.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    np.testing.assert_allclose(y[~dropped], 1 / (1 - round(rate * 65536) / 65536), rtol=1e-6)
    flat = dropped.reshape(-1)
    pairs = flat[: n // 2 * 2].reshape(-1, 2)  # entries that share a word
    both = (pairs[:, 0] & pairs[:, 1]).mean()
    assert abs(both - rate ** 2) < 5 * np.sqrt(rate ** 2 * (1 - rate ** 2) / len(pairs))
    again = np.asarray(drop(x))
    assert (again != y).any()  # a new draw every call
    assert np.asarray(PackedDropout(rate, deterministic=True)(x)).min() == 1.0
