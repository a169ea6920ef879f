"""Orbax helpers: save/restore/latest step, relative paths resolved, clear errors; verified restores (a damaged
newest step is reported, moved aside and the previous one used; another structure is an error, not damage)."""
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


def _data_files(step_dir):
    return [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]


def test_a_damaged_newest_step_is_reported_moved_aside_and_the_previous_one_restored(tmp_path, caplog):
    models = {s: create_model(CFG, seed=s) for s in (1, 2)}
    for s, m in models.items():
        checkpoint.save_model_state(tmp_path / "ckpt", s, m)
    assert sorted(p.name for p in (tmp_path / "ckpt.manifests").iterdir()) == ["1.json", "2.json"]
    assert checkpoint.damage(tmp_path / "ckpt") is None
    victim = max(_data_files(tmp_path / "ckpt" / "2"), key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte, same size: only the manifest's sha256 sees it
    victim.write_bytes(bytes(raw))
    assert "differs from what was written (sha256)" in checkpoint.damage(tmp_path / "ckpt")
    target = create_model(CFG, seed=0)
    with caplog.at_level("WARNING"):
        assert checkpoint.restore_model_state(tmp_path / "ckpt", target) == 1
    assert f"{tmp_path / 'ckpt' / '2'} is damaged" in caplog.text
    for a, b in zip(_params(target), _params(models[1])):
        np.testing.assert_array_equal(a, b)
    assert [p.name.split("-")[0] for p in (tmp_path / "ckpt.damaged").iterdir()] == ["2"]
    assert checkpoint.latest_step(tmp_path / "ckpt") == 1


def test_without_a_manifest_a_step_is_checked_by_reading_it_back(tmp_path):
    checkpoint.save_model_state(tmp_path / "ckpt", 1, create_model(CFG, seed=1))
    (tmp_path / "ckpt.manifests" / "1.json").unlink()
    assert checkpoint.damage(tmp_path / "ckpt") is None
    for f in _data_files(tmp_path / "ckpt" / "1"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert "does not read back (ValueError" in checkpoint.damage(tmp_path / "ckpt")
    with pytest.raises(checkpoint.DamagedCheckpointError, match=rf"{tmp_path / 'ckpt'}: no checkpoint step reads "
                                                                  rf"back .* Delete {tmp_path / 'ckpt'}"):
        checkpoint.restore_model_state(tmp_path / "ckpt", create_model(CFG, seed=0))


def test_another_structure_is_an_error_not_damage(tmp_path):
    checkpoint.save_model_state(tmp_path / "ckpt", 1, create_model(CFG, seed=1))
    with pytest.raises(ValueError, match=r"Requested shape: \(.*32.*\) is not compatible with the stored shape"):
        checkpoint.restore_model_state(tmp_path / "ckpt", create_model(CFG.replace(hidden_size=32, head_dim=16)))
    assert checkpoint.latest_step(tmp_path / "ckpt") == 1 and not (tmp_path / "ckpt.damaged").exists()
