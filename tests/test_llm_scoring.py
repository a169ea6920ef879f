"""Scorer: last-token logits, P(Yes) (plain and double softmax), mean pooling; padding and order invariance."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rallrec_jax import parallel
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.model import create_model
from rallrec_jax.llm.scoring import Scorer, last_real_index
from rallrec_jax.llm.sharding import shard_model
from rallrec_jax.llm.tokenizer import bucket_length, pad_batch

CFG = LlmConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                head_dim=8, max_position_embeddings=256, tie_word_embeddings=True)
RNG = np.random.default_rng(0)
SEQS = [RNG.integers(1, 64, size=n).tolist() for n in (5, 19, 3, 11, 30, 7, 16, 2, 9, 25)]


@pytest.fixture(scope="module")
def model():
    return create_model(CFG, seed=0)


@pytest.fixture(scope="module")
def reference(model):
    """Per sequence, alone: full-forward logits after its last token and its hidden states. One compiled
    program: each sequence sits at the start of a 32-slot buffer, which causal attention makes exact."""
    fwd = nnx.jit(lambda m, t: (m(t, jnp.arange(32)[None]), m(t, jnp.arange(32)[None], return_hidden=True)))
    out = []
    for seq in SEQS:
        buf = np.zeros((1, 32), np.int32)
        buf[0, : len(seq)] = seq
        logits, hidden = fwd(model, jnp.asarray(buf))
        out.append((np.asarray(logits)[0, len(seq) - 1], np.asarray(hidden)[0, : len(seq)]))
    return out


@pytest.mark.parametrize("side", ["left", "right"])
def test_scores_match_unpadded_forward(model, reference, side):
    scorer = Scorer(model, pad_id=0, batch_size=4, padding_side=side)
    logits = scorer.next_token_logits(SEQS)
    plain = scorer.yes_probability(SEQS, 7, 9)
    double = scorer.yes_probability(SEQS, 7, 9, double_softmax=True)
    pooled = scorer.mean_pooled(SEQS)
    for i, seq in enumerate(SEQS):
        want_logits, hidden = reference[i]
        np.testing.assert_allclose(logits[i], want_logits, atol=2e-5)
        z = want_logits.astype(np.float64)
        assert abs(plain[i] - np.exp(z[7]) / (np.exp(z[7]) + np.exp(z[9]))) < 1e-5
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        assert abs(double[i] - np.exp(p[7]) / (np.exp(p[7]) + np.exp(p[9]))) < 1e-6
        np.testing.assert_allclose(pooled[i], hidden.mean(axis=0), atol=2e-5)


def test_sharded_scorer_equals_single_device(model):
    want = Scorer(model, pad_id=0, batch_size=4).yes_probability(SEQS, 7, 9)
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded = Scorer(shard_model(create_model(CFG, seed=0), mesh), pad_id=0, batch_size=4, mesh=mesh)
    np.testing.assert_allclose(sharded.yes_probability(SEQS, 7, 9), want, atol=1e-6)


@pytest.mark.parametrize("mesh_shape", [None, {"data": 2, "fsdp": 2, "tensor": 2}])
def test_prefix_shared_logits_equal_scoring_each_whole_sequence(model, mesh_shape):
    """R continuations scored against one prefill of their prefix = each prefix + continuation scored as one
    sequence by the plain forward (groups of different sizes, lengths across buckets, dummy rows padded in)."""
    rng = np.random.default_rng(5)
    prefixes = [rng.integers(1, 64, size=n).tolist() for n in (9, 3, 20, 14, 6)]
    groups = [[rng.integers(1, 64, size=int(rng.integers(1, 30))).tolist() for _ in range(r)] for r in (3, 1, 4, 2, 3)]
    mesh = None if mesh_shape is None else parallel.make_mesh(mesh_shape)
    m = model if mesh is None else shard_model(create_model(CFG, seed=0), mesh)
    scorer = Scorer(m, pad_id=0, batch_size=6, mesh=mesh)
    got = scorer.prefix_shared_logits(prefixes, groups)
    want = Scorer(model, pad_id=0, batch_size=4).next_token_logits([p + c for p, g in zip(prefixes, groups) for c in g])
    assert [len(x) for x in got] == [len(g) for g in groups]
    np.testing.assert_allclose(np.concatenate(got), want, atol=1e-5)
    with pytest.raises(ValueError, match="prefix 1"):
        scorer.prefix_shared_logits(prefixes[:2], [groups[0], []])


def test_helpers():
    tokens, mask = pad_batch([[1, 2, 3], [4]], 5, pad_id=0, side="left")
    assert tokens.tolist() == [[0, 0, 1, 2, 3], [0, 0, 0, 0, 4]]
    assert last_real_index(jnp.asarray(mask)).tolist() == [4, 4]
    _, mask = pad_batch([[1, 2, 3], [4]], 5, pad_id=0, side="right")
    assert last_real_index(jnp.asarray(mask)).tolist() == [2, 0]
    assert [bucket_length(n) for n in (1, 16, 17, 25, 33, 100, 512, 513)] == [16, 16, 24, 32, 48, 128, 512, 768]
    with pytest.raises(ValueError, match="sequence 0 has 6 tokens"):
        pad_batch([[1] * 6], 5, pad_id=0)
