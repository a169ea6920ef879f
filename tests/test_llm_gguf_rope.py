"""Llama-3.1-style GGUF files (llama3 rope scaling stored as the `rope_freqs` tensor, as llama.cpp's converter
writes it): they load, their logits match the transformers model with the llama3 `rope_scaling` they encode
and transformers' own loading of the same file, and a merged export of them loads in transformers with the
same logits. The divisors are read back into a config.json rope_scaling (Llama 3.1's and 3.2's real numbers
too); divisors that match no llama3 rule load, but cannot be exported.

The file is written here with the `gguf` writer from a tiny random Llama (head_dim 16, a steep llama3 rule so
that the scaling moves the logits at short positions), with SmolLM2's tokenizer metadata."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
pytest.importorskip("accelerate")

from rallrec_jax import assets  # noqa: E402
from rallrec_jax.llm import export  # noqa: E402
from rallrec_jax.llm import gguf_tokenizer as gt  # noqa: E402
from rallrec_jax.llm import lora as lora_lib  # noqa: E402
from rallrec_jax.llm import tokenizer as tok_lib  # noqa: E402
from rallrec_jax.llm import weights  # noqa: E402
from rallrec_jax.llm.config import LlmConfig, RopeScaling, fit_llama3_scaling, llama3_freq_factors  # noqa: E402
from rallrec_jax.llm.model import Llm  # noqa: E402

SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 8.0,
           "original_max_position_embeddings": 1024}
THETA, HEADS, KV, HIDDEN = 10000.0, 4, 2, 64
TOKENS = np.random.default_rng(1).integers(0, 49152, size=(2, 40))


def permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf row order for Q/K (the inverse of weights.unpermute_rotary)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, path, factors: np.ndarray) -> None:
    meta = gt.read_metadata(assets.smollm2_gguf())
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(THETA)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model(meta["tokenizer.ggml.model"])
    w.add_tokenizer_pre(meta["tokenizer.ggml.pre"])
    w.add_token_list(meta["tokenizer.ggml.tokens"])
    w.add_token_types(meta["tokenizer.ggml.token_type"])
    w.add_token_merges(meta["tokenizer.ggml.merges"])
    w.add_bos_token_id(meta["tokenizer.ggml.bos_token_id"])
    w.add_eos_token_id(meta["tokenizer.ggml.eos_token_id"])
    w.add_pad_token_id(meta["tokenizer.ggml.padding_token_id"])
    w.add_add_bos_token(False)
    w.add_chat_template(meta["tokenizer.chat_template"])
    w.add_tensor("rope_freqs.weight", factors.astype(np.float32))
    names = {"embed_tokens": "token_embd", "norm": "output_norm"}
    for name, t in model.state_dict().items():
        a = t.detach().numpy().astype(np.float32)
        parts = name.split(".")
        if parts[0] == "lm_head":
            continue  # tied
        if parts[1] in names:
            w.add_tensor(f"{names[parts[1]]}.weight", a)
            continue
        i, kind = parts[2], ".".join(parts[3:5])
        gname = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down", "input_layernorm.weight": "attn_norm",
                 "post_attention_layernorm.weight": "ffn_norm"}[kind]
        if kind == "self_attn.q_proj":
            a = permute(a, HEADS)
        elif kind == "self_attn.k_proj":
            a = permute(a, KV)
        w.add_tensor(f"blk.{i}.{gname}.weight", a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def llama31(tmp_path_factory):
    """(HF reference with llama3 rope_scaling, folder with its .gguf, the file's rope divisors)."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=HEADS, num_key_value_heads=KV, max_position_embeddings=4096,
                                   tie_word_embeddings=True, initializer_range=0.08, bos_token_id=1, eos_token_id=2,
                                   rope_parameters={"rope_theta": THETA, **SCALING})
    ref = transformers.LlamaForCausalLM(cfg).eval()
    scaling = RopeScaling("llama3", 8.0, 1.0, 8.0, 1024)
    factors = llama3_freq_factors(THETA, HIDDEN // HEADS, scaling)
    assert (factors == 1).any() and (factors == 8).any() and ((factors > 1) & (factors < 8)).sum() >= 2
    folder = tmp_path_factory.mktemp("llama31")
    write_gguf(ref, folder / "tiny-llama-3.1.F32.gguf", factors)
    return ref, folder, factors


def ours_logits(model: Llm) -> np.ndarray:
    return np.asarray(nnx.jit(lambda m, t: m(t, jnp.broadcast_to(jnp.arange(t.shape[1]), t.shape)))(
        model, jnp.asarray(TOKENS)))


def torch_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(TOKENS)).logits.numpy()


def test_rope_freqs_gguf_matches_transformers(llama31):
    ref, folder, factors = llama31
    path = folder / "tiny-llama-3.1.F32.gguf"
    ours = weights.load_gguf(path)
    cfg = ours.config
    np.testing.assert_array_equal(np.asarray(cfg.rope_freq_factors, np.float32), factors.astype(np.float32))
    assert cfg.rope_scaling is not None and cfg.rope_scaling.factor == 8.0  # the rule they encode, for config.json
    np.testing.assert_allclose(llama3_freq_factors(THETA, 16, cfg.rope_scaling), factors, rtol=1e-6)
    got = ours_logits(ours)
    want = torch_logits(ref)
    print(f"rope_freqs GGUF vs HF llama3 model: max |logit diff| = {np.abs(got - want).max():.2e} "
          f"(max |logit| {np.abs(want).max():.2f})")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    plain = Llm(cfg.replace(rope_freq_factors=None, rope_scaling=None), rngs=nnx.Rngs(0))
    nnx.update(plain, nnx.state(ours))
    unscaled = ours_logits(plain)
    assert np.abs(unscaled - want).max() > 1e-3  # the divisors matter at these positions

    # transformers on the same file: its GGUF loader does not read rope_freqs (it builds the model with plain
    # rope); given the llama3 rope_scaling that the file's divisors encode, it matches.
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=path.name,
                                                               dtype=torch.float32).eval()
    as_file = torch_logits(loaded)
    reads_tensor = np.abs(as_file - got).max() < 1e-5
    print(f"transformers {transformers.__version__} reads rope_freqs from GGUF: {reads_tensor}")
    if not reads_tensor:
        np.testing.assert_allclose(as_file, unscaled, atol=1e-5, rtol=0)
        config = transformers.AutoConfig.from_pretrained(str(folder), gguf_file=path.name)
        config.rope_parameters = {"rope_theta": THETA, **SCALING}
        loaded = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=path.name, config=config,
                                                                   dtype=torch.float32).eval()
        np.testing.assert_allclose(torch_logits(loaded), got, atol=1e-5, rtol=0)


def test_merged_export_of_a_rope_freqs_gguf_loads_in_transformers(llama31, tmp_path):
    _, folder, _ = llama31
    path = folder / "tiny-llama-3.1.F32.gguf"
    model = lora_lib.apply_lora(weights.load_gguf(path), lora_lib.LoraConfig(rank=2, targets=("k_proj", "up_proj")))
    for node in lora_lib.lora_modules(model).values():
        node.lora_b.set_value(jnp.full(node.lora_b.get_value().shape, 0.05, jnp.float32))
    want = ours_logits(model)
    out = export.export_merged(model, tmp_path / "merged")  # the tokenizer from the GGUF file's metadata
    config = json.loads((out / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "llama3" and config["rope_scaling"]["factor"] == 8.0
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    got = torch_logits(hf)
    print(f"merged export of the GGUF: max |logit diff| = {np.abs(got - want).max():.2e}")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    theirs = transformers.AutoTokenizer.from_pretrained(str(out))
    mine = tok_lib.load_tokenizer(path)
    chat = tok_lib.chat_prompt(mine, "Will she like Heat (1995)?", "You are helpful.")
    assert theirs.apply_chat_template([{"role": "system", "content": "You are helpful."},
                                       {"role": "user", "content": "Will she like Heat (1995)?"}],
                                      tokenize=False, add_generation_prompt=True) == chat
    assert theirs(chat, add_special_tokens=False)["input_ids"] == tok_lib.encode(mine, [chat])[0]


@pytest.mark.parametrize("scaling, head_dim, theta", [
    (RopeScaling("llama3", 8.0, 1.0, 4.0, 8192), 128, 500000.0),  # Llama 3.1 8B / 70B
    (RopeScaling("llama3", 32.0, 1.0, 4.0, 8192), 64, 500000.0),  # Llama 3.2 1B
    (RopeScaling("llama3", 16.0, 2.0, 6.0, 4096), 128, 1e6),  # a rule of its own, found by the ramp fit
], ids=["llama-3.1", "llama-3.2", "other"])
def test_divisors_are_read_back_into_their_rope_scaling(scaling, head_dim, theta):
    factors = llama3_freq_factors(theta, head_dim, scaling).astype(np.float32)  # as the file stores them
    found = fit_llama3_scaling(theta, head_dim, factors)
    assert found is not None
    np.testing.assert_allclose(llama3_freq_factors(theta, head_dim, found), factors, rtol=1e-5)
    if scaling.original_max_position_embeddings == 8192:
        assert found == scaling


def test_divisors_of_no_llama3_rule_load_but_cannot_be_exported():
    factors = np.linspace(1.0, 3.0, 8) ** 2  # not a llama3 ramp
    assert fit_llama3_scaling(THETA, 16, factors) is None
    assert fit_llama3_scaling(THETA, 16, np.ones(8)) is None
    cfg = LlmConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_layers=1, num_heads=4, num_kv_heads=2,
                    head_dim=16, rope_freq_factors=tuple(factors), name_or_path="odd.gguf")
    with pytest.raises(ValueError, match="odd.gguf: its rope_freqs divisors match no llama3 rope_scaling"):
        cfg.to_hf()
    with pytest.raises(ValueError, match="rope_freq_factors holds 3 values; head_dim=16 needs 8"):
        cfg.replace(rope_freq_factors=(1.0, 2.0, 3.0))
