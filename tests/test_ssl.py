"""SSL alignment: InfoNCE against the paper's equation written with loops, masking, training on a mesh."""
import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rallrec_jax import parallel
from rallrec_jax.retrieval import ssl as S


def paper_loss(t, c, anchors, negatives, tau):
    """Eq. 5 with explicit loops: -mean_i [log f(t_i,c_i)/sum_v f(t_i,c_v) + log f(c_i,t_i)/sum_v f(c_i,t_v)]."""
    def cos(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    def f(a, b):
        return math.exp(cos(a, b) / tau)

    total = 0.0
    for i in anchors:
        den_t = sum(f(t[i], c[v]) for v in negatives)
        den_c = sum(f(c[i], t[v]) for v in negatives)
        total += math.log(f(t[i], c[i]) / den_t) + math.log(f(c[i], t[i]) / den_c)
    return -total / len(anchors)


@pytest.mark.parametrize("tau", [1.0, 0.2])
def test_info_nce_equals_paper_equation(tau):
    rng = np.random.default_rng(0)
    n = 9
    t, c = rng.normal(size=(n, 5)), rng.normal(size=(n, 5))
    valid = np.ones(n, bool)
    valid[[2, 6]] = False  # items without a collaborative embedding
    idx = np.flatnonzero(valid)
    # All-item negatives, anchors = a batch of valid items.
    anchors = np.array([0, 3, 4, 8])
    got = S.symmetric_info_nce(jnp.asarray(t[anchors]), jnp.asarray(c[anchors]), jnp.ones(4, bool),
                               jnp.asarray(t), jnp.asarray(c), jnp.asarray(valid), tau)
    np.testing.assert_allclose(got, paper_loss(t, c, anchors, idx, tau), rtol=1e-5)
    # In-batch negatives with a padded, masked row.
    batch = np.array([0, 3, 4, 8, 2])
    mask = np.array([True, True, True, True, False])
    got = S.symmetric_info_nce(jnp.asarray(t[batch]), jnp.asarray(c[batch]), jnp.asarray(mask),
                               jnp.asarray(t[batch]), jnp.asarray(c[batch]), jnp.asarray(mask), tau)
    np.testing.assert_allclose(got, paper_loss(t, c, batch[:4], batch[:4], tau), rtol=1e-5)


def test_projector_shapes():
    p = S.Projector(12, 16, 4, rngs=nnx.Rngs(0))
    assert p(jnp.ones((3, 12))).shape == (3, 4)
    assert p.fc1.kernel[...].shape == (12, 16)


def aligned_data(seed=0, n=64, dt=24, dc=6):
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, dt)).astype(np.float32)
    colla = np.tanh(text @ rng.normal(size=(dt, dc)) / 3).astype(np.float32)  # colla is a function of text
    return text, colla


def top1_accuracy(ssl, colla, rows):
    a = ssl[rows] / np.linalg.norm(ssl[rows], axis=1, keepdims=True)
    b = colla[rows] / np.linalg.norm(colla[rows], axis=1, keepdims=True)
    return float(np.mean(np.argmax(a @ b.T, axis=1) == np.arange(len(rows))))


@pytest.mark.parametrize("negatives,batch_size", [("all", 0), ("in_batch", 16)])
def test_training_aligns_and_masks_items_without_colla(negatives, batch_size):
    text, colla = aligned_data()
    colla[[5, 17]] = 0.0  # no interactions -> zero rows, excluded by the default mask
    cfg = S.SSLConfig(hidden=32, epochs=150, lr=1e-2, negatives=negatives, batch_size=batch_size)
    mesh = parallel.make_mesh()
    res = S.train_ssl(text, colla, cfg, mesh=mesh)
    assert res.ssl_emb.shape == (64, 6) and np.isfinite(res.ssl_emb).all()
    assert res.losses[-1] < 0.8 * res.losses[0]
    rows = np.setdiff1d(np.arange(64), [5, 17])
    assert top1_accuracy(res.ssl_emb, colla, rows) > 0.3  # chance is 1/62
    # The masked items' (garbage) colla rows do not change training at all.
    colla2 = colla.copy()
    colla2[[5, 17]] = 7.0
    valid = np.ones(64, bool)
    valid[[5, 17]] = False
    res2 = S.train_ssl(text, colla2, cfg, valid=valid, mesh=mesh)
    np.testing.assert_allclose(res2.ssl_emb, res.ssl_emb, rtol=1e-4, atol=1e-5)


def test_bad_input_is_named():
    text, colla = aligned_data()
    with pytest.raises(ValueError, match="colla_emb"):
        S.train_ssl(text, colla[:10], S.SSLConfig(epochs=1))
    with pytest.raises(ValueError, match="negatives"):
        S.SSLConfig(negatives="hard")
