"""`python -m rallrec_jax.convert`: our saved adapters to a PEFT folder and back, and a merged HF folder, each
holding exactly the adapters it was given (the PEFT and transformers parity of those formats is in
tests/test_peft.py and tests/test_export.py). Tiny random Llama (tests/tiny_llm.py)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from rallrec_jax import checkpoint, convert
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm import peft as peft_lib
from rallrec_jax.llm import weights

TOKENS = jnp.asarray(np.random.default_rng(4).integers(0, 49152, size=(2, 16)))


def logits(model):
    return np.asarray(nnx.jit(lambda m, t: m(t, jnp.broadcast_to(jnp.arange(16), t.shape)))(model, TOKENS))


@pytest.fixture(scope="module")
def saved(tiny_llm, tmp_path_factory):
    model = lora_lib.apply_lora(weights.load_hf(tiny_llm), lora_lib.LoraConfig(rank=2, alpha=6.0, dropout=0.0,
                                                                               targets=("v_proj", "up_proj")))
    for node in lora_lib.lora_modules(model).values():
        node.lora_b.set_value(jax.random.normal(jax.random.key(2), node.lora_b.get_value().shape) * 0.2)
    folder = tmp_path_factory.mktemp("ours") / "best"
    checkpoint.save_adapters(folder, 3, model, max_to_keep=1)
    return model, folder


def test_to_peft_and_back(saved, tiny_llm, tmp_path):
    model, folder = saved
    out = convert.main(["to-peft", "--model", str(tiny_llm), "--adapters", str(folder), "--out", str(tmp_path / "p"),
                        "--base_model", "someone/llm@abc123"])
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["target_modules"]) == (2, 6, ["up_proj", "v_proj"])
    assert (config["base_model_name_or_path"], config["revision"]) == ("someone/llm", "abc123")
    written = load_file(out / "adapter_model.safetensors")
    want = peft_lib.peft_tensors(model)
    assert sorted(written) == sorted(want)
    for name, array in want.items():
        np.testing.assert_array_equal(written[name], array)

    back = convert.main(["from-peft", "--model", str(tiny_llm), "--adapters", str(out), "--out", str(tmp_path / "o")])
    bare = weights.load_hf(tiny_llm)
    checkpoint.restore_adapters(back, bare)  # no LoRA config given: lora_config.json has it
    np.testing.assert_array_equal(logits(bare), logits(model))


def test_merged(saved, tiny_llm, tmp_path):
    model, folder = saved
    out = convert.main(["merged", "--model", str(tiny_llm), "--adapters", str(folder), "--out", str(tmp_path / "m")])
    assert (out / "tokenizer.json").is_file() and (out / "chat_template.jinja").is_file()
    np.testing.assert_allclose(logits(weights.load_hf(out)), logits(model), atol=1e-5, rtol=0)
    with pytest.raises(SystemExit):
        convert.main(["to-peft", "--model", str(tiny_llm), "--out", str(tmp_path / "x")])  # needs --adapters
