"""P(Yes) over a split: equal to a per-prompt forward of the model (plain and double softmax), metrics equal
to sklearn, tuned adapters loaded (merged) equal to the unmerged LoRA model; bad orders and folders rejected.
Tiny random decoder with the SmolLM2 vocabulary; real Amazon-magazine data (configs/test.py)."""
import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from sklearn import metrics as skm

import configs.test
from rallrec_jax import assets, checkpoint, parallel
from rallrec_jax.data import prepare
from rallrec_jax.generation import evaluate as ev
from rallrec_jax.generation import examples as ex_lib
from rallrec_jax.generation import finetune as ft
from rallrec_jax.generation import inputs
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm import tokenizer as tok_lib
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.model import create_model

WIDE = LlmConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=8, max_position_embeddings=1024, tie_word_embeddings=True)
ROWS = 24


@pytest.fixture(scope="module")
def tokenizer():
    return tok_lib.load_tokenizer(assets.smollm2_gguf())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare.prepare_data(configs.test.get_config().data, tmp_path_factory.mktemp("work"))


def one_device():
    return parallel.make_mesh({"data": 1}, jax.devices()[:1])


def reference_last_logits(model, data, tokenizer, config, rows) -> np.ndarray:
    """Each prompt alone, unpadded, full forward; logits after its last token. [N, V] float64."""
    builder = ex_lib.ExampleBuilder(data, tokenizer, config.evaluate.max_prompt_tokens)
    hist = ex_lib.simple_history(data, config.evaluate.k_history)
    # One compiled program: each prompt sits at the start of a 512-slot buffer; causal attention makes the
    # logits after its last token exactly those of the prompt alone.
    fwd = nnx.jit(lambda m, t, i: m(t, jnp.arange(t.shape[1])[None], logits_at=i))
    out = []
    for r in range(rows):
        ids = builder.build("test", r, hist("test", r), "simple", with_answer=False).prompt_ids
        buf = np.zeros((1, 512), np.int32)
        buf[0, :len(ids)] = ids
        out.append(np.asarray(fwd(model, jnp.asarray(buf), jnp.asarray([len(ids) - 1])), np.float64)[0])
    return np.stack(out)


def test_zero_shot_probabilities_and_metrics(tmp_path, tokenizer, data):
    config = configs.test.get_config()
    result = ev.evaluate(config, tmp_path, "", data=data, model=create_model(WIDE, seed=0), tokenizer=tokenizer,
                         mesh=one_device(), num_rows=ROWS)
    logits = reference_last_logits(create_model(WIDE, seed=0), data, tokenizer, config, ROWS)
    yes, no = tok_lib.yes_no_ids(tokenizer)
    want = 1.0 / (1.0 + np.exp(-(logits[:, yes] - logits[:, no])))
    np.testing.assert_allclose(result["probabilities"], want, atol=2e-5)
    labels = np.asarray(data.samples["test"]["label"][:ROWS])
    np.testing.assert_array_equal(result["labels"], labels)
    assert 0 < labels.sum() < ROWS
    p = result["probabilities"].astype(np.float64)
    m = result["metrics"]
    assert abs(m["auc"] - skm.roc_auc_score(labels, p)) < 1e-9
    assert abs(m["logloss"] - skm.log_loss(labels, p)) < 1e-9
    assert abs(m["acc"] - skm.accuracy_score(labels, p > 0.5)) < 1e-12
    assert (tmp_path / "evaluate" / "test_simple_zeroshot.json").is_file()
    np.testing.assert_array_equal(np.load(tmp_path / "evaluate" / "test_simple_zeroshot.npy"), result["probabilities"])
    # The per-row CSV beside the .npy (what the standalone binary leaves for a person): the split's rows, the data
    # set's own ids and labels as the samples file holds them, and P read back to the same float.
    with open(tmp_path / "evaluate" / "test_simple_zeroshot.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["row_id", "user_id", "item_id", "label", "test_simple_zeroshot"]
    test = data.samples["test"]
    assert [int(r["row_id"]) for r in table] == list(range(ROWS))
    assert [r["user_id"] for r in table] == [str(data.user_ids[u]) for u in test["user"][:ROWS]]
    assert [r["item_id"] for r in table] == [str(data.item_ids[i]) for i in test["item"][:ROWS]]
    assert [int(r["label"]) for r in table] == labels.tolist()
    np.testing.assert_array_equal([float(r["test_simple_zeroshot"]) for r in table], result["probabilities"])

    config.evaluate.double_softmax = True
    double = ev.evaluate(config, tmp_path, "", data=data, model=create_model(WIDE, seed=0), tokenizer=tokenizer,
                         mesh=one_device(), num_rows=ROWS, tag="double")["probabilities"]
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(double, 1.0 / (1.0 + np.exp(-(probs[:, yes] - probs[:, no]))), atol=1e-6)
    assert double.min() >= 0.2689 and double.max() <= 0.7311


def test_tuned_adapters_are_loaded_and_merged(tmp_path, tokenizer, data):
    config = configs.test.get_config()
    config.finetune.max_steps = 2
    config.finetune.train_size = 16
    config.finetune.learning_rate = 5e-2
    config.finetune.eval_size = 8
    summary = ft.finetune(config, tmp_path, data=data, model=create_model(WIDE, seed=0), tokenizer=tokenizer,
                          mesh=one_device())
    assert summary["best_adapters"]
    tuned = ev.evaluate(config, tmp_path, "best", data=data, model=create_model(WIDE, seed=0), tokenizer=tokenizer,
                        mesh=one_device(), num_rows=ROWS)
    assert tuned["adapter_step"] == summary["best_step"]
    # Reference: the same adapters restored into an unmerged LoRA model, each prompt run alone.
    model = lora_lib.apply_lora(create_model(WIDE, seed=0), inputs.lora_config(config.lora), rngs=nnx.Rngs(7))
    checkpoint.restore_adapters(inputs.run_dir(config, tmp_path) / "best", model)
    logits = reference_last_logits(model, data, tokenizer, config, ROWS)
    yes, no = tok_lib.yes_no_ids(tokenizer)
    want = 1.0 / (1.0 + np.exp(-(logits[:, yes] - logits[:, no])))
    np.testing.assert_allclose(tuned["probabilities"], want, atol=5e-5)
    zero = ev.evaluate(config, tmp_path, "", data=data, model=create_model(WIDE, seed=0), tokenizer=tokenizer,
                       mesh=one_device(), num_rows=ROWS)["probabilities"]
    assert np.abs(tuned["probabilities"] - zero).max() > 1e-3


def test_bad_order_and_missing_adapters_are_errors(tmp_path, tokenizer, data):
    config = configs.test.get_config()
    with pytest.raises(ValueError, match="evaluate.order 'high' has no history function"):
        ev.evaluate(config, tmp_path, "", order="high", data=data, model=create_model(WIDE, seed=0),
                    tokenizer=tokenizer, mesh=one_device(), num_rows=4)
    with pytest.raises(ValueError, match="no saved adapters under"):
        ev.evaluate(config, tmp_path, str(tmp_path / "nowhere"), data=data, model=create_model(WIDE, seed=0),
                    tokenizer=tokenizer, mesh=one_device(), num_rows=4)
