"""Orbax helpers: save/restore/latest step, relative paths resolved, clear errors."""
import os

import numpy as np
import pytest
from flax import nnx

from rallrec_jax import checkpoint
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.model import create_model

CFG = LlmConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                head_dim=8, tie_word_embeddings=True)


def _params(model):
    return [np.asarray(x) for x in __import__("jax").tree.leaves(nnx.state(model, nnx.Param))]


def test_save_restore_latest_and_keep(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert checkpoint.latest_step("ckpt") is None
    models = {s: create_model(CFG, seed=s) for s in (1, 2, 3)}
    for s, m in models.items():
        checkpoint.save_model_state("ckpt", s, m, max_to_keep=2)  # relative path: resolved before orbax sees it
    assert checkpoint.latest_step("ckpt") == 3
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["2", "3"]
    target = create_model(CFG, seed=0)
    assert checkpoint.restore_model_state("ckpt", target) == 3
    for a, b in zip(_params(target), _params(models[3])):
        np.testing.assert_array_equal(a, b)
    checkpoint.restore_model_state("ckpt", target, step=2)
    for a, b in zip(_params(target), _params(models[2])):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="step 1"):
        checkpoint.restore_model_state("ckpt", target, step=1)


def test_restore_from_empty_directory_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        checkpoint.restore_model_state(tmp_path / "empty", create_model(CFG))
