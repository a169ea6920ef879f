"""Merged export: a tuned model folded into its base and written as a transformers folder loads in transformers
(`AutoModelForCausalLM`, `AutoTokenizer`) with our logits and our tokenizer's ids, in one file or in shards,
in float32 or bfloat16; the model itself keeps its adapters. Tiny random Llama in HF layout (tests/tiny_llm.py);
the GGUF base is in tests/test_llm_gguf_rope.py."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rallrec_jax.llm import export  # noqa: E402
from rallrec_jax.llm import lora as lora_lib  # noqa: E402
from rallrec_jax.llm import tokenizer as tok_lib  # noqa: E402
from rallrec_jax.llm import weights  # noqa: E402
from rallrec_jax.llm.model import create_model  # noqa: E402

TOKENS = np.random.default_rng(2).integers(0, 49152, size=(2, 20))


def ours_logits(model) -> np.ndarray:
    pos = jnp.broadcast_to(jnp.arange(TOKENS.shape[1]), TOKENS.shape)
    return np.asarray(nnx.jit(lambda m, t: m(t, pos))(model, jnp.asarray(TOKENS)))


def torch_logits(folder, dtype=torch.float32) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor(TOKENS)).logits.float().numpy()


@pytest.fixture(scope="module")
def adapted(tiny_llm):
    """The tiny model with non-zero adapters on attention and MLP projections (as after tuning)."""
    torch.set_num_threads(2)
    model = lora_lib.apply_lora(weights.load_hf(tiny_llm), lora_lib.LoraConfig(
        rank=4, alpha=8.0, targets=("q_proj", "k_proj", "gate_proj", "down_proj")), rngs=nnx.Rngs(5))
    rng = np.random.default_rng(9)
    for node in lora_lib.lora_modules(model).values():
        node.lora_b.set_value(jnp.asarray(rng.normal(0, 0.2, node.lora_b.get_value().shape), jnp.float32))
    return model


def test_merged_export_loads_in_transformers_with_our_logits(adapted, tiny_llm, tmp_path):
    want = ours_logits(adapted)
    out = export.export_merged(adapted, tmp_path / "merged")
    assert lora_lib.lora_config_of(adapted) is not None  # the model keeps its adapters
    np.testing.assert_array_equal(ours_logits(adapted), want)
    got = torch_logits(out)
    print(f"merged export: max |logit diff| = {np.abs(got - want).max():.2e}")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    base = torch_logits(tiny_llm)
    assert np.abs(base - want).max() > 1e-2  # the adapters are in the written weights

    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (tiny_llm / name).read_bytes()  # copied as they are
    theirs = transformers.AutoTokenizer.from_pretrained(str(out))
    mine = tok_lib.load_tokenizer(tiny_llm)
    text = tok_lib.chat_prompt(mine, "Will he like Casino (1995)?", "You are helpful.")
    assert theirs.apply_chat_template([{"role": "system", "content": "You are helpful."},
                                       {"role": "user", "content": "Will he like Casino (1995)?"}],
                                      tokenize=False, add_generation_prompt=True) == text
    assert theirs(text, add_special_tokens=False)["input_ids"] == tok_lib.encode(mine, [text])[0]

    again = weights.load_hf(out)  # and our own loader reads it back to the same logits
    np.testing.assert_allclose(ours_logits(again), want, atol=1e-5, rtol=0)


def test_sharded_and_bfloat16_exports(adapted, tmp_path):
    want = ours_logits(adapted)
    out = export.export_merged(adapted, tmp_path / "sharded", max_shard_bytes=2_000_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (out / "model.safetensors").exists()
    for shard in shards:  # at most the limit (plus the header), or one tensor larger than it (the embedding)
        held = [k for k, v in index["weight_map"].items() if v == shard]
        assert (out / shard).stat().st_size <= 2_000_000 + 20_000 or held == ["model.embed_tokens.weight"]
    np.testing.assert_allclose(torch_logits(out), want, atol=1e-5, rtol=0)

    half = export.export_merged(adapted, tmp_path / "bf16", dtype="bfloat16")
    assert json.loads((half / "config.json").read_text())["dtype"] == "bfloat16"
    got = torch_logits(half, torch.bfloat16)
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()  # bfloat16 weights: close, not equal
    with pytest.raises(ValueError, match=r"dtype='int8' not in"):
        export.export_merged(adapted, tmp_path / "x", dtype="int8")


def test_a_model_without_a_source_needs_a_tokenizer(tiny_llm, tmp_path):
    from rallrec_jax.llm.config import LlmConfig

    cfg = LlmConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, tie_word_embeddings=True)
    with pytest.raises(ValueError, match="records no source .* pass tokenizer="):
        export.export_merged(create_model(cfg), tmp_path / "out")
    out = export.export_merged(create_model(cfg), tmp_path / "out", tokenizer=tiny_llm)
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="holds no tokenizer files"):
        export.export_merged(create_model(cfg), tmp_path / "out2", tokenizer=tmp_path)


def test_qwen2_with_biases_exports_and_loads_in_transformers(tiny_llm, tmp_path):
    """Qwen2's q/k/v biases and its config.json (no attention_bias field, no sliding window) round-trip."""
    torch.manual_seed(3)
    cfg = transformers.Qwen2Config(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                   tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6)
    ref = transformers.Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for layer in ref.model.layers:  # non-zero biases, so that a dropped one shows
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    ref.save_pretrained(tmp_path / "qwen2")
    model = lora_lib.apply_lora(weights.load_hf(tmp_path / "qwen2"), lora_lib.LoraConfig(rank=2, targets=("k_proj",)))
    for node in lora_lib.lora_modules(model).values():
        node.lora_b.set_value(jnp.full(node.lora_b.get_value().shape, 0.1, jnp.float32))
    want = ours_logits(model)
    out = export.export_merged(model, tmp_path / "merged", tokenizer=tiny_llm)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and "attention_bias" not in config
    got = torch_logits(out)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.abs(torch_logits(tmp_path / "qwen2") - want).max() > 1e-3  # the adapter is in the written weights
