"""DeepFM: FM identity, forward against a numpy reference, learning, sharded step, bad ids."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rallrec_jax import metrics, parallel
from rallrec_jax.generation import deepfm


def test_fm_second_order_equals_pairwise_sum():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(7, 5, 4)).astype(np.float32)  # [B, F, D]
    want = np.zeros(7)
    for i, j in itertools.combinations(range(5), 2):
        want += np.sum(emb[:, i] * emb[:, j], axis=1)
    np.testing.assert_allclose(deepfm.fm_second_order(jnp.asarray(emb)), want, rtol=1e-5, atol=1e-5)


def _numpy_forward(model, x):
    """DeepFM written out in numpy from the model's own weights (eval mode)."""
    offsets = np.concatenate([[0], np.cumsum(model.field_cardinalities)[:-1]])
    ids = x + offsets
    table = np.asarray(model.embed.embedding[...])
    w = np.asarray(model.linear.embedding[...])[:, 0]
    e = table[ids]  # [B, F, D]
    first = w[ids].sum(1)
    second = sum(np.sum(e[:, i] * e[:, j], 1) for i, j in itertools.combinations(range(x.shape[1]), 2))
    h = e.reshape(len(x), -1)
    for layer in model.hidden:
        h = np.maximum(h @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...]), 0)
    deep = (h @ np.asarray(model.out.kernel[...]) + np.asarray(model.out.bias[...]))[:, 0]
    return 1 / (1 + np.exp(-(float(model.bias[...]) + first + second + deep)))


def test_forward_matches_numpy_reference():
    cards = [5, 3, 8, 2]
    cfg = deepfm.DeepFMConfig(embed_dim=6, hidden=(16, 8), embed_init_std=0.3)
    model = deepfm.DeepFM(cards, cfg, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(1)
    x = np.stack([rng.integers(0, c, 32) for c in cards], 1).astype(np.int32)
    np.testing.assert_allclose(deepfm.predict(model, x), _numpy_forward(model, x), rtol=1e-5, atol=1e-6)


def _synthetic(n, seed=0):
    """Per-id effects plus a field-pair interaction: learnable by FM and by the MLP."""
    rng = np.random.default_rng(seed)
    cards = [200, 100, 20]
    x = np.stack([rng.integers(0, c, n) for c in cards], 1).astype(np.int32)
    eff = [rng.normal(0, 1, c) for c in cards]
    inter = rng.normal(0, 1, (cards[1], cards[2]))
    logit = eff[0][x[:, 0]] + eff[1][x[:, 1]] + inter[x[:, 1], x[:, 2]]
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * logit))).astype(np.int32)
    return x, y, cards


def test_training_learns_and_keeps_best_validation_epoch():
    x, y, cards = _synthetic(8000)
    cfg = dict(batch_size=256, max_epochs=6, dropout=0.2, patience=2)
    model, hist = deepfm.train_deepfm(x[:6000], y[:6000], x[6000:7000], y[6000:7000], cards, cfg)
    test = metrics.ctr_metrics(y[7000:], deepfm.predict(model, x[7000:]))
    assert test["auc"] > 0.75, test
    losses = [r["train_loss"] for r in hist["epochs"]]
    assert losses[-1] < losses[0]
    # the returned model is the best validation epoch's, chosen on validation AUC
    best = max(hist["epochs"], key=lambda r: r["valid_auc"])
    assert hist["best_epoch"] == best["epoch"]
    valid_now = metrics.roc_auc(y[6000:7000], deepfm.predict(model, x[6000:7000]))
    assert valid_now == pytest.approx(best["valid_auc"], abs=1e-6)


def test_early_stopping_stops():
    x, y, cards = _synthetic(1200, seed=3)
    # a huge learning rate overfits at once: validation log-loss stops improving quickly
    cfg = dict(batch_size=64, max_epochs=30, patience=1, learning_rate=0.05, early_stop_metric="logloss",
               hidden=(32,), dropout=0.0)
    _, hist = deepfm.train_deepfm(x[:1000], y[:1000], x[1000:], y[1000:], cards, cfg)
    assert hist["stopped_early"] and len(hist["epochs"]) < 30
    assert len(hist["epochs"]) == hist["best_epoch"] + 2  # patience 1: one epoch past the best


def test_sharded_step_equals_single_device():
    assert jax.device_count() == 8
    cards = [50, 30, 10]
    cfg = deepfm.DeepFMConfig(hidden=(64, 64), dropout=0.5)
    rng = np.random.default_rng(2)
    x = np.stack([rng.integers(0, c, 64) for c in cards], 1).astype(np.int32)
    y = rng.integers(0, 2, 64).astype(np.float32)
    w = np.ones(64, np.float32)
    w[-5:] = 0.0  # padding rows must not count
    key = jax.random.key(7)
    results = []
    for mesh in (parallel.make_mesh({"data": 8}), parallel.make_mesh({"data": 1}, devices=jax.devices()[:1])):
        model = deepfm.DeepFM(cards, cfg, rngs=nnx.Rngs(0))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        tx = optax.adam(1e-2)
        opt_state = tx.init(params)
        step = deepfm.make_train_step(graphdef, tx, mesh)
        params, opt_state, loss = step(params, rest, opt_state, x, y, w, key)
        if mesh.shape["data"] == 8:
            assert len(params["hidden"][0]["kernel"][...].sharding.device_set) == 8  # replicated over 8
        results.append((float(loss), jax.tree.map(np.asarray, nnx.to_pure_dict(params))))
    (loss8, p8), (loss1, p1) = results
    assert loss8 == pytest.approx(loss1, rel=1e-6)
    for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # and the loss equals a hand-computed masked BCE of the initial model
    model = deepfm.DeepFM(cards, cfg, rngs=nnx.Rngs(0))
    logits = np.asarray(model(jnp.asarray(x), dropout_key=key))
    bce = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
    assert loss1 == pytest.approx(float((bce * w).sum() / w.sum()), rel=1e-5)


def test_unknown_id_names_field_and_value():
    cards = [5, 3]
    model = deepfm.DeepFM(cards, deepfm.DeepFMConfig(hidden=(4,)), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"unknown id 3 in field 1 \(row 1\)"):
        deepfm.predict(model, np.array([[0, 0], [4, 3]]))
    with pytest.raises(ValueError, match=r"unknown id -1 in field 0"):
        deepfm.predict(model, np.array([[-1, 0]]))
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        deepfm.predict(model, np.array([[0, 0, 0]]))
    with pytest.raises(ValueError, match="integer"):
        deepfm.predict(model, np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="valid_fields: unknown id 9 in field 0"):
        deepfm.train_deepfm(np.zeros((8, 2), np.int32), np.zeros(8), np.array([[9, 0]]), np.zeros(1), cards)


def test_config_errors():
    with pytest.raises(ValueError, match="unknown DeepFM config fields"):
        deepfm.DeepFMConfig.from_any({"lr": 0.1})
    x = np.zeros((16, 2), np.int32)
    with pytest.raises(ValueError, match="data-parallel size 8"):
        deepfm.train_deepfm(x, np.zeros(16), x, np.zeros(16), [2, 2], dict(batch_size=12))
    with pytest.raises(ValueError, match="max_epochs"):
        deepfm.train_deepfm(x, np.zeros(16), x, np.zeros(16), [2, 2], dict(max_epochs=0))
    with pytest.raises(ValueError, match="train_labels"):
        deepfm.train_deepfm(x, np.zeros(15), x, np.zeros(16), [2, 2])
