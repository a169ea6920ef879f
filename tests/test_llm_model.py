"""Parity of the NNX decoder with transformers' PyTorch Llama/Qwen2 on tiny random checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rallrec_jax.llm import weights  # noqa: E402
from rallrec_jax.llm.config import LlmConfig  # noqa: E402
from rallrec_jax.llm.model import positions_from_mask  # noqa: E402

TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5)


def _save_tiny(tmp_path, kind: str, **overrides):
    torch.manual_seed(0)
    if kind == "qwen2":
        cfg = transformers.Qwen2Config(**{**TINY, **overrides})
        model = transformers.Qwen2ForCausalLM(cfg)
    else:
        cfg = transformers.LlamaConfig(**{**TINY, **overrides})
        model = transformers.LlamaForCausalLM(cfg)
    # Random non-trivial norms and biases, so a mis-mapped tensor cannot hide.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p) if name.endswith("norm.weight") else 0.2 * torch.randn_like(p))
    model.eval()
    folder = tmp_path / kind
    model.save_pretrained(folder)
    return model, folder


def _compare(torch_model, folder, tokens, mask):
    ours = weights.load_hf(folder)
    with torch.no_grad():
        ref = torch_model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
    pos = positions_from_mask(jnp.asarray(mask))
    got = np.asarray(ours(jnp.asarray(tokens), pos, jnp.asarray(mask, bool)))
    real = mask.astype(bool)
    diff = np.abs(got[real] - ref[real]).max()
    print(f"max |logit diff| = {diff:.2e}")
    assert diff < 1e-4
    return ours


@pytest.mark.parametrize("kind,overrides", [
    ("llama", dict(tie_word_embeddings=False)),
    ("llama", dict(tie_word_embeddings=True)),
    ("llama_rope3", dict(tie_word_embeddings=False, rope_theta=500000.0,
                         rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0, original_max_position_embeddings=200))),
    ("qwen2", dict(tie_word_embeddings=True)),
])
def test_logits_match_transformers_left_and_right_padding(tmp_path, kind, overrides):
    torch_model, folder = _save_tiny(tmp_path, "qwen2" if kind == "qwen2" else "llama", **overrides)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, TINY["vocab_size"], size=(3, 150))  # > ATTN_CHUNK: the chunked path
    mask = np.ones_like(tokens)
    mask[1, :7] = 0  # left padded row
    mask[2, 131:] = 0  # right padded row
    _compare(torch_model, folder, tokens, mask)


def test_config_reads_rope_parameters_and_rope_scaling(tmp_path):
    _, folder = _save_tiny(tmp_path, "llama", rope_theta=500000.0,
                           rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                             high_freq_factor=4.0, original_max_position_embeddings=32))
    cfg = weights.load_hf_config(folder)
    assert cfg.rope_theta == 500000.0 and cfg.rope_scaling.rope_type == "llama3"
    assert cfg.rope_scaling.factor == 8.0 and cfg.rope_scaling.original_max_position_embeddings == 32
    # transformers 4 style (rope_theta + rope_scaling at the top level)
    old = {**TINY, "model_type": "llama", "rope_theta": 1234.0,
           "rope_scaling": {"type": "llama3", "factor": 2.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 64}}
    cfg = LlmConfig.from_hf(old)
    assert cfg.rope_theta == 1234.0 and cfg.rope_scaling.factor == 2.0
    with pytest.raises(ValueError, match="yarn"):
        LlmConfig.from_hf({**old, "rope_scaling": {"type": "yarn", "factor": 2.0}})
    with pytest.raises(ValueError, match="model_type"):
        LlmConfig.from_hf({**old, "model_type": "gpt2"})
    with pytest.raises(ValueError, match="use_sliding_window"):
        LlmConfig.from_hf({**old, "model_type": "qwen2", "use_sliding_window": True})


def test_loader_names_bad_tensors(tmp_path):
    _, folder = _save_tiny(tmp_path, "llama", tie_word_embeddings=False)
    cfg = weights.load_hf_config(folder)
    tensors = dict(weights.iter_safetensors(folder))
    abstract = lambda: __import__("rallrec_jax.llm.model", fromlist=["x"]).abstract_model(cfg)  # noqa: E731

    bad = dict(tensors)
    bad["model.layers.1.mlp.up_proj.weight"] = bad["model.layers.1.mlp.up_proj.weight"][:, :-1]
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*shape"):
        weights.load_params(abstract(), bad.items())
    missing = {k: v for k, v in tensors.items() if k != "model.norm.weight"}
    with pytest.raises(ValueError, match="final_norm.scale"):
        weights.load_params(abstract(), missing.items())
    extra = {**tensors, "model.layers.0.self_attn.q_norm.weight": np.ones(8, np.float32)}
    with pytest.raises(ValueError, match="q_norm"):
        weights.load_params(abstract(), extra.items())
    # per-layer tensors go into slices of stacked parameters: a missing layer, a layer past the config's
    # count and a layer given twice are errors naming the tensor
    no_layer = {k: v for k, v in tensors.items() if k != "model.layers.1.mlp.down_proj.weight"}
    with pytest.raises(ValueError, match=r"layers\.mlp\.down_proj\.kernel layers \[1\].*model\.layers\.1\.mlp\.down_proj"):
        weights.load_params(abstract(), no_layer.items())
    beyond = {**tensors, "model.layers.2.input_layernorm.weight": np.ones(32, np.float32)}
    with pytest.raises(ValueError, match=r"model\.layers\.2\.input_layernorm\.weight.*layer 2.*2 layers"):
        weights.load_params(abstract(), beyond.items())
    twice = list(tensors.items()) + [("model.layers.0.self_attn.k_proj.weight",
                                      tensors["model.layers.0.self_attn.k_proj.weight"])]
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.k_proj\.weight.*twice"):
        weights.load_params(abstract(), twice)
    # each layer's tensor lands in its own slice
    loaded = weights.load_params(abstract(), tensors.items())
    for i in range(2):
        np.testing.assert_array_equal(np.asarray(loaded.layers.mlp.up_proj.kernel[...][i]),
                                      tensors[f"model.layers.{i}.mlp.up_proj.weight"].T)


def test_sharded_index_and_mesh_loading_match(tmp_path):
    torch_model, folder = _save_tiny(tmp_path, "llama", tie_word_embeddings=False)
    torch_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    from rallrec_jax import parallel
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    a = weights.load_hf(folder)
    b = weights.load_hf(tmp_path / "sharded", mesh=mesh)
    q = b.layers.attn.q_proj.kernel[...]  # [N_layers, D, H*hd]: the layer axis is never sharded
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    tokens = jnp.arange(24).reshape(2, 12) % TINY["vocab_size"]
    pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
    np.testing.assert_allclose(np.asarray(a(tokens, pos)), np.asarray(b(tokens, pos)), atol=1e-5)


def test_head_at_positions_and_hidden_states(tmp_path):
    torch_model, folder = _save_tiny(tmp_path, "llama", tie_word_embeddings=True)
    model = weights.load_hf(folder)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 97, size=(2, 10)))
    pos = jnp.broadcast_to(jnp.arange(10), (2, 10))
    full = model(tokens, pos)
    idx = jnp.asarray([3, 9])
    at = model(tokens, pos, logits_at=idx)
    np.testing.assert_allclose(np.asarray(at), np.asarray(full[jnp.arange(2), idx]), atol=1e-6)
    hidden = model(tokens, pos, return_hidden=True)
    with torch.no_grad():
        ref = torch_model(input_ids=torch.tensor(np.asarray(tokens)), output_hidden_states=True).hidden_states[-1]
    np.testing.assert_allclose(np.asarray(hidden), ref.numpy(), atol=1e-5)  # HF's last = after final norm


def test_bfloat16_params_and_compute(tmp_path):
    torch_model, folder = _save_tiny(tmp_path, "qwen2", tie_word_embeddings=False)
    f32 = weights.load_hf(folder)
    bf16 = weights.load_hf(folder, param_dtype="bfloat16", dtype="bfloat16")
    assert bf16.layers.attn.q_proj.kernel[...].dtype == jnp.bfloat16
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, 97, size=(2, 20)))
    pos = jnp.broadcast_to(jnp.arange(20), (2, 20))
    a, b = np.asarray(f32(tokens, pos)), np.asarray(bf16(tokens, pos))
    assert b.dtype == np.float32  # logits come back in float32
    diff = np.abs(a - b).max()
    print(f"bf16 vs f32 max |logit diff| = {diff:.3f}")
    assert 0 < diff < 0.05 * np.abs(a).max()
