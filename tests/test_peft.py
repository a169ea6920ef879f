"""PEFT adapters in and out, held to transformers + peft (the reference): a tuned adapter exported here and
loaded by `PeftModel.from_pretrained` gives our logits; adapters made by peft (random non-zero B, several
layouts) load here with peft's logits; our own saved adapters carry their layout (lora_config.json) and load
with no config. Bad folders (another base, rank or targets; a missing, misshapen or stray tensor;
an option our LoRA cannot reproduce) are errors naming the file and the field or tensor.
Tiny random Llama in HF layout (tests/tiny_llm.py)."""
import json
import shutil

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from safetensors.numpy import load_file, save_file  # noqa: E402

from rallrec_jax import checkpoint  # noqa: E402
from rallrec_jax.llm import lora as lora_lib  # noqa: E402
from rallrec_jax.llm import peft as peft_lib  # noqa: E402
from rallrec_jax.llm import weights  # noqa: E402

TOKENS = np.random.default_rng(0).integers(0, 49152, size=(2, 24))
POS = jnp.broadcast_to(jnp.arange(TOKENS.shape[1]), TOKENS.shape)


def ours_logits(model) -> np.ndarray:
    return np.asarray(nnx.jit(lambda m, t: m(t, POS))(model, jnp.asarray(TOKENS)))


def torch_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(TOKENS)).logits.numpy()


@pytest.fixture(scope="module")
def hf_base(tiny_llm):
    torch.set_num_threads(2)
    return lambda: transformers.AutoModelForCausalLM.from_pretrained(tiny_llm, dtype=torch.float32).eval()


def tuned(tiny_llm, cfg=lora_lib.LoraConfig(rank=4, alpha=8.0, dropout=0.05, targets=("q_proj", "v_proj",
                                                                                        "o_proj", "down_proj"))):
    """Our tiny model with adapters tuned a few AdamW steps (dropout on) on next-token loss."""
    model = lora_lib.apply_lora(weights.load_hf(tiny_llm), cfg, rngs=nnx.Rngs(3))
    model.train()
    opt = nnx.Optimizer(model, optax.adamw(3e-2), wrt=nnx.LoRAParam)
    tokens = jnp.asarray(TOKENS)

    @nnx.jit
    def step(model, opt):
        def loss_fn(model):
            logits = model(tokens[:, :-1], POS[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
        opt.update(model, grads)
        return loss

    losses = [float(step(model, opt)) for _ in range(4)]
    assert losses[-1] < losses[0]
    model.eval()
    return model


def test_tuned_adapter_exported_loads_in_peft_with_our_logits(tiny_llm, hf_base, tmp_path):
    model = tuned(tiny_llm)
    want = ours_logits(model)
    base_logits = torch_logits(hf_base())
    assert np.abs(want - base_logits).max() > 1e-2  # the adapters change the model
    folder = peft_lib.export_peft(model, tmp_path / "adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8, 0.05)
    assert config["target_modules"] == ["down_proj", "o_proj", "q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == str(tiny_llm.resolve())
    tensors = load_file(folder / "adapter_model.safetensors")
    assert tensors["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"].shape == (4, 32)  # [r, in]
    assert tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].shape == (32, 4)  # [out, r]
    assert len(tensors) == 2 * 4 * 2  # A and B, 4 targets, 2 layers

    reference = peft.PeftModel.from_pretrained(hf_base(), str(folder)).eval()
    got = torch_logits(reference)
    print(f"PEFT export: max |logit diff| = {np.abs(got - want).max():.2e}")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)

    again = peft_lib.load_peft(folder, weights.load_hf(tiny_llm))  # and back: the same arrays
    for path, node in lora_lib.lora_modules(model).items():
        other = lora_lib.lora_modules(again)[path]
        np.testing.assert_array_equal(np.asarray(other.lora_a[...]), np.asarray(node.lora_a[...]))
        np.testing.assert_array_equal(np.asarray(other.lora_b[...]), np.asarray(node.lora_b[...]))


PEFT_LAYOUTS = {
    "q_v": dict(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    "all_rslora": dict(r=8, lora_alpha=8, use_rslora=True,
                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "regex_one_layer": dict(r=2, lora_alpha=4, target_modules=r"model\.layers\.1\.self_attn\.(q|k)_proj"),
    "layers_to_transform": dict(r=2, lora_alpha=2, target_modules=["v_proj", "up_proj"], layers_to_transform=[0]),
}


@pytest.mark.parametrize("layout", sorted(PEFT_LAYOUTS))
def test_adapter_made_by_peft_imports_with_its_logits(tiny_llm, hf_base, tmp_path, layout):
    torch.manual_seed(0)
    config = peft.LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.1, init_lora_weights=False,  # random B
                             **PEFT_LAYOUTS[layout])
    reference = peft.get_peft_model(hf_base(), config)
    reference.save_pretrained(str(tmp_path / "adapter"))
    reference.eval()
    want = torch_logits(reference)
    assert np.abs(want - torch_logits(hf_base())).max() > 1e-3

    model = peft_lib.load_peft(tmp_path / "adapter", weights.load_hf(tiny_llm))
    got = ours_logits(model)
    print(f"PEFT import ({layout}): max |logit diff| = {np.abs(got - want).max():.2e}")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    merged = ours_logits(lora_lib.merge_lora(model))
    np.testing.assert_allclose(merged, want, atol=1e-5, rtol=0)


def test_our_saved_adapters_load_with_no_config(tiny_llm, tmp_path):
    model = tuned(tiny_llm)
    want = ours_logits(model)
    checkpoint.save_adapters(tmp_path / "best", 7, model, max_to_keep=1)
    record = json.loads((tmp_path / "best" / "lora_config.json").read_text())
    assert (record["rank"], record["alpha"], record["dropout"]) == (4, 8.0, 0.05)
    assert record["targets"] == ["down_proj", "o_proj", "q_proj", "v_proj"]
    assert record["base_model"] == str(tiny_llm.resolve())
    assert record["base_architecture"]["num_layers"] == 2
    bare = weights.load_hf(tiny_llm)  # no apply_lora: the layout comes from lora_config.json
    assert checkpoint.restore_adapters(tmp_path / "best", bare) == 7
    np.testing.assert_array_equal(ours_logits(bare), want)
    assert checkpoint.latest_step(tmp_path / "best") == 7  # orbax still sees its steps beside the record

    other_rank = lora_lib.apply_lora(weights.load_hf(tiny_llm), lora_lib.LoraConfig(rank=8, targets=(
        "q_proj", "v_proj", "o_proj", "down_proj")))
    path = tmp_path / "best" / "lora_config.json"
    with pytest.raises(ValueError, match=rf"{path}: rank=4, but the model's adapters have rank 8"):
        checkpoint.restore_adapters(tmp_path / "best", other_rank)
    other_targets = lora_lib.apply_lora(weights.load_hf(tiny_llm), lora_lib.LoraConfig(rank=4, alpha=8.0))
    with pytest.raises(ValueError, match=rf"{path}: targets names \['down_proj', 'o_proj', 'q_proj', 'v_proj'\], "
                                         r"but the model's adapters wrap "
                                         r"\['layers.attn.q_proj', 'layers.attn.v_proj'\]"):
        checkpoint.restore_adapters(tmp_path / "best", other_targets)
    renamed = weights.load_hf(tiny_llm, name_or_path="org/another-model")
    with pytest.raises(ValueError, match=rf"{path}: base_model='{tiny_llm.resolve()}', but this model is "
                                         r"'org/another-model'.*check_base=False"):
        checkpoint.restore_adapters(tmp_path / "best", renamed)
    checkpoint.restore_adapters(tmp_path / "best", renamed, check_base=False)
    np.testing.assert_array_equal(ours_logits(renamed), want)
    wider = weights.load_hf(tiny_llm)
    wider.config = wider.config.replace(num_layers=3)  # the architecture recorded beside the adapters differs
    with pytest.raises(ValueError, match=rf"{path}: base_architecture.num_layers=2 \(the adapters' base\), but this "
                                         "model has num_layers=3"):
        checkpoint.restore_adapters(tmp_path / "best", wider)


# ----------------------------------------------------------------------------- bad adapter folders


@pytest.fixture(scope="module")
def exported(tiny_llm, tmp_path_factory):
    """An adapter folder of ours (r=4, alpha=8, q/v/o/down), tuned."""
    return peft_lib.export_peft(tuned(tiny_llm), tmp_path_factory.mktemp("peft") / "adapter")


def _copy(folder, tmp_path, config=None, tensors=None):
    out = tmp_path / "bad"
    shutil.copytree(folder, out)
    if config is not None:
        cfg = json.loads((out / "adapter_config.json").read_text())
        cfg.update(config)
        (out / "adapter_config.json").write_text(json.dumps(cfg))
    if tensors is not None:
        arrays = load_file(out / "adapter_model.safetensors")
        save_file(tensors(arrays) or arrays, out / "adapter_model.safetensors")
    return out


def test_another_base_model_is_an_error(exported, tiny_llm, tmp_path):
    bad = _copy(exported, tmp_path, {"base_model_name_or_path": "meta-llama/Llama-3.1-8B-Instruct"})
    with pytest.raises(ValueError, match=rf"{bad / 'adapter_config.json'}: base_model_name_or_path="
                                         r"'meta-llama/Llama-3.1-8B-Instruct', but this model is .*check_base=False"):
        peft_lib.load_peft(bad, weights.load_hf(tiny_llm))
    peft_lib.load_peft(bad, weights.load_hf(tiny_llm), check_base=False)  # the same weights under another name
    # The same model by hub name, snapshot path or a GGUF file name is the same base.
    for name in ("someone/llm", f"/cache/models--someone--llm/snapshots/{'a' * 40}", "/models/llm.Q4_K_M.gguf"):
        peft_lib.load_peft(exported, weights.load_hf(tiny_llm, name_or_path=name))


def test_another_rank_or_targets_is_an_error(exported, tiny_llm, tmp_path):
    config = exported / "adapter_config.json"
    rank8 = lora_lib.apply_lora(weights.load_hf(tiny_llm), lora_lib.LoraConfig(
        rank=8, alpha=8.0, targets=("q_proj", "v_proj", "o_proj", "down_proj")))
    with pytest.raises(ValueError, match=rf"{config}: r=4, but the model's adapters have rank 8"):
        peft_lib.load_peft(exported, rank8)
    q_v = lora_lib.apply_lora(weights.load_hf(tiny_llm), lora_lib.LoraConfig(rank=4, alpha=8.0))
    with pytest.raises(ValueError, match=rf"{config}: target_modules names \['down_proj', 'o_proj', 'q_proj', "
                                         r"'v_proj'\], but the model's adapters wrap"):
        peft_lib.load_peft(exported, q_v)
    alpha = lora_lib.apply_lora(weights.load_hf(tiny_llm), lora_lib.LoraConfig(
        rank=4, alpha=16.0, targets=("q_proj", "v_proj", "o_proj", "down_proj")))
    with pytest.raises(ValueError, match=rf"{config}: lora_alpha=8, but the model's adapters have alpha 16"):
        peft_lib.load_peft(exported, alpha)
    # The file's own r disagreeing with its tensors: the tensors are misshapen for it.
    bad = _copy(exported, tmp_path, {"r": 8})
    with pytest.raises(ValueError, match=rf"{bad / 'adapter_model.safetensors'}: tensor 'base_model\.model\..*"
                                         r"lora_A\.weight' has shape \(4, .*\), expected \(8, .*\) \(r=8"):
        peft_lib.load_peft(bad, weights.load_hf(tiny_llm))
    nothing = _copy(exported, tmp_path / "t", {"target_modules": ["c_attn"]})
    with pytest.raises(ValueError, match=r"target_modules=\['c_attn'\] matches no projection of the model"):
        peft_lib.load_peft(nothing, weights.load_hf(tiny_llm))


def test_missing_misshapen_or_stray_tensors_are_errors(exported, tiny_llm, tmp_path):
    name = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    def drop(t):
        del t[name]

    missing = _copy(exported, tmp_path / "a", tensors=drop)
    with pytest.raises(ValueError, match=rf"{missing / 'adapter_model.safetensors'}: lacks tensor '{name}'"):
        peft_lib.load_peft(missing, weights.load_hf(tiny_llm))

    def misshape(t):
        t[name] = np.zeros((16, 3), np.float32)

    wrong = _copy(exported, tmp_path / "b", tensors=misshape)
    with pytest.raises(ValueError, match=rf"{wrong / 'adapter_model.safetensors'}: tensor '{name}' has shape "
                                         r"\(16, 3\), expected \(16, 4\)"):
        peft_lib.load_peft(wrong, weights.load_hf(tiny_llm))

    def stray(t):
        t["base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"] = np.zeros((4, 32), np.float32)

    extra = _copy(exported, tmp_path / "c", tensors=stray)
    with pytest.raises(ValueError, match=r"tensor 'base_model\.model\.model\.layers\.0\.mlp\.up_proj\.lora_A\.weight' "
                                         r"is for module 'model\.layers\.0\.mlp\.up_proj', which adapter_config\.json "
                                         r"target_modules=.* does not target"):
        peft_lib.load_peft(extra, weights.load_hf(tiny_llm))
    model = weights.load_hf(tiny_llm)
    before = ours_logits(model)
    with pytest.raises(ValueError):
        peft_lib.load_peft(wrong, model)
    assert lora_lib.lora_config_of(model) is None  # a refused file leaves the model as it was
    np.testing.assert_array_equal(ours_logits(model), before)


@pytest.mark.parametrize("field, value", [("use_dora", True), ("bias", "lora_only"), ("modules_to_save", ["lm_head"]),
                                          ("peft_type", "IA3"), ("rank_pattern", {"q_proj": 8})])
def test_options_our_lora_cannot_reproduce_are_errors(exported, tiny_llm, tmp_path, field, value):
    bad = _copy(exported, tmp_path, {field: value})
    with pytest.raises(ValueError, match=rf"{bad / 'adapter_config.json'}: {field}="):
        peft_lib.load_peft(bad, weights.load_hf(tiny_llm))


def test_not_a_peft_folder_is_named(tiny_llm, tmp_path):
    with pytest.raises(ValueError, match=rf"{tmp_path / 'adapter_config.json'} not found"):
        peft_lib.load_peft(tmp_path, weights.load_hf(tiny_llm))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                              "target_modules": ["q_proj"]}))
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match=r"adapter_model\.bin: a pickled torch file.*convert it once"):
        peft_lib.load_peft(tmp_path, weights.load_hf(tiny_llm))
    with pytest.raises(ValueError, match="no LoRA adapters to export"):
        peft_lib.export_peft(weights.load_hf(tiny_llm), tmp_path / "out")
