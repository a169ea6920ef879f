"""LoRA instruction tuning: answer-only loss, examples from real data, resume = uninterrupted, 1 vs 8 devices,
NaN stop, validation-only early stopping. Tiny random decoders; real Amazon-magazine data (configs/test.py)."""
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import configs.test
from rallrec_jax import assets, checkpoint, parallel
from rallrec_jax.data import prepare, sampling
from rallrec_jax.generation import batches as batch_lib
from rallrec_jax.generation import examples as ex_lib
from rallrec_jax.generation import finetune as ft
from rallrec_jax.generation import inputs
from rallrec_jax.generation import trainer as trainer_lib
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm import tokenizer as tok_lib
from rallrec_jax.llm import training_forward as tf
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.model import create_model, positions_from_mask
from rallrec_jax.prompts import ctr as ctr_prompts
from tests.unrolled import unrolled_hidden

SMALL = LlmConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, max_position_embeddings=512, tie_word_embeddings=True)
# Same shape with the SmolLM2 vocabulary, so real tokenised prompts run through it.
WIDE = SMALL.replace(vocab_size=49152)


def synthetic_examples(n: int, seed: int = 0) -> list[ex_lib.Example]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = int(rng.integers(0, 2))
        prompt = tuple(rng.integers(3, 60, size=int(rng.integers(5, 40))).tolist())
        answer = (7, 11, 2) if label else (9, 11, 2)
        out.append(ex_lib.Example("train", i, "simple", prompt, answer, label, 0, 0))
    return out


def lora_model(cfg: LlmConfig, dropout: float = 0.05) -> nnx.Module:
    model = create_model(cfg, seed=0)
    return lora_lib.apply_lora(model, lora_lib.LoraConfig(dropout=dropout), rngs=nnx.Rngs(1))


def lora_arrays(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam))]


@pytest.fixture(scope="module")
def tokenizer():
    return tok_lib.load_tokenizer(assets.smollm2_gguf())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare.prepare_data(configs.test.get_config().data, tmp_path_factory.mktemp("work"))


# ----------------------------------------------------------------------------- loss mask
def test_token_cross_entropy_matches_hand_computation():
    logits = np.array([[[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]]], np.float32)  # [1, 2, 3]
    targets = np.array([[0, 2]])
    want = 0.0
    for a, t in enumerate([0, 2]):
        z = logits[0, a].astype(np.float64)
        want += np.log(np.exp(z).sum()) - z[t]
    got = trainer_lib.token_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.ones((1, 2)))
    assert abs(float(got) - want) < 1e-5
    only_second = trainer_lib.token_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray([[0.0, 1.0]]))
    z = logits[0, 1].astype(np.float64)
    assert abs(float(only_second) - (np.log(np.exp(z).sum()) - z[2])) < 1e-5


def test_only_answer_tokens_contribute_to_the_loss():
    """The batch's loss equals an HF-style loss on the full logits with labels -100 on every prompt and padding
    token; changing prompt-position targets (i.e. the prompt tokens after the first) cannot change it."""
    model = create_model(SMALL, seed=0)
    exs = synthetic_examples(4)
    batch = batch_lib.make_batch(exs + [None], 64, 3, pad_id=0)  # one zero-weight filler row
    assert batch["ans_w"].sum() == 12 and batch["ans_w"][4].sum() == 0
    ours = float(trainer_lib.token_cross_entropy(tf.answer_logits(model, {k: jnp.asarray(v) for k, v in batch.items()}),
                                        jnp.asarray(batch["ans_tok"]), jnp.asarray(batch["ans_w"])))
    full = np.asarray(model(jnp.asarray(batch["tokens"]), jnp.arange(64)[None].repeat(5, 0),
                            jnp.asarray(batch["mask"]).astype(bool)), np.float64)  # [B, L, V]
    total, count = 0.0, 0
    for i, e in enumerate(exs):
        labels = [-100] * len(e.prompt_ids) + list(e.answer_ids)
        seq = list(e.prompt_ids) + list(e.answer_ids)
        for t in range(1, len(seq)):  # position t-1 predicts token t
            if labels[t] == -100:
                continue
            z = full[i, t - 1]
            total += np.log(np.exp(z - z.max()).sum()) + z.max() - z[seq[t]]
            count += 1
    assert count == 12
    assert abs(ours - total) < 1e-3 * max(1.0, abs(total))
    # Answer position bookkeeping: ans_pos is the last prompt position, then the following ones.
    for i, e in enumerate(exs):
        p = len(e.prompt_ids)
        assert batch["ans_pos"][i].tolist() == [p - 1, p, p + 1]
        assert batch["ans_tok"][i].tolist() == list(e.answer_ids)


def _unrolled_answer_logits(model, batch):
    """A Python loop over the per-layer slices of the stacked blocks: the reference for the training scan."""
    hidden = unrolled_hidden(model, batch["tokens"], positions_from_mask(batch["mask"]), batch["mask"])
    h = jnp.take_along_axis(hidden, batch["ans_pos"][..., None].astype(jnp.int32), axis=1)
    return model.head(h)


@pytest.mark.parametrize("remat", ["none", "attention", "full"])
def test_scanned_forward_and_gradients_equal_the_unrolled_model(remat):
    model = lora_model(SMALL, dropout=0.0)
    batch = {k: jnp.asarray(v) for k, v in batch_lib.make_batch(synthetic_examples(3), 48, 3, 0).items()}
    graphdef, lora, rest = nnx.split(model, nnx.LoRAParam, ...)

    def loss(lora, mode):
        m = nnx.merge(graphdef, lora, rest)
        logits = _unrolled_answer_logits(m, batch) if mode == "unrolled" else tf.answer_logits(m, batch, mode)
        return trainer_lib.token_cross_entropy(logits, batch["ans_tok"], batch["ans_w"])

    lora = jax.tree.map(lambda x: x + 0.01, lora)  # non-zero B so every adapter has a gradient
    want_loss, want_grad = jax.jit(jax.value_and_grad(lambda p: loss(p, "unrolled")))(lora)
    got_loss, got_grad = jax.jit(jax.value_and_grad(lambda p: loss(p, remat)))(lora)
    assert abs(float(got_loss) - float(want_loss)) < 1e-5
    for a, b in zip(jax.tree.leaves(want_grad), jax.tree.leaves(got_grad)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="finetune.remat='some'"):
        trainer_lib.TrainSettings(remat="some")


def test_finetune_settings_read_the_config_section_once():
    """The flat `config.finetune` section typed: the step's fields in `train` (what the run identity hashes),
    the loop from the rest; values by hand from configs/test.py over configs/base_generation.py."""
    f = ft.FinetuneSettings.from_config(configs.test.get_config().finetune)
    assert f.train == trainer_lib.TrainSettings(learning_rate=5e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                                       effective_batch=16, micro_batch=8, seed=42, min_bucket=16, eval_batch=8,
                                       double_softmax=False, remat="attention")
    assert (f.k_history, f.max_prompt_tokens, f.epochs, f.eval_size, f.progress) == (5, 512, 1, 16, False)
    loop = f.loop(40)  # ceil(40 / 16) = 3 steps per epoch, 1 epoch, validation once per epoch
    assert (loop.total_steps, loop.eval_every, loop.patience, loop.metric) == (3, 3, 5, "eval_loss")
    capped = ft.FinetuneSettings.from_config({"max_steps": 7, "eval_every": 2, "effective_batch": 4,
                                              "micro_batch": 2})
    assert capped.train.effective_batch == 4 and (capped.loop(40).total_steps, capped.loop(40).eval_every) == (7, 2)
    typo = r"unknown finetune config fields \['learning_rat'\]; known: .*'learning_rate'"
    with pytest.raises(ValueError, match=typo):
        ft.FinetuneSettings.from_config({"learning_rat": 0.1})


def test_scanned_forward_draws_the_unrolled_dropout_masks():
    """Each layer slice keeps its own RNG stream in the stacked adapters: with dropout on, the scanned training
    forward equals the loop over layer slices draw for draw (and differs from the dropout-free forward, so masks are applied)."""
    model = lora_model(SMALL, dropout=0.5)
    batch = {k: jnp.asarray(v) for k, v in batch_lib.make_batch(synthetic_examples(3), 48, 3, 0).items()}
    model.train()
    graphdef, lora, rngs, rest = nnx.split(model, nnx.LoRAParam, nnx.RngState, ...)
    lora = jax.tree.map(lambda x: x + 0.05, lora)

    def logits(mode, key):
        m = nnx.merge(graphdef, lora, trainer_lib.reseeded(rngs, key), rest)
        return _unrolled_answer_logits(m, batch) if mode == "unrolled" else tf.answer_logits(m, batch, mode)

    key = jax.random.key(3)
    want = jax.jit(lambda k: logits("unrolled", k))(key)
    for mode in ("none", "full"):
        np.testing.assert_allclose(np.asarray(jax.jit(lambda k, m=mode: logits(m, k))(key)), np.asarray(want),
                                   atol=1e-5, rtol=1e-5)
    other = jax.jit(lambda k: logits("none", k))(jax.random.key(4))
    assert float(jnp.max(jnp.abs(other - want))) > 1e-4


# ----------------------------------------------------------------------------- examples on real data
def test_examples_chat_template_answer_and_truncation(data, tokenizer):
    builder = ex_lib.ExampleBuilder(data, tokenizer, max_prompt_tokens=None)
    hist = ex_lib.simple_history(data, 5)
    e = builder.build("train", 3, hist("train", 3), "simple")
    text = tok_lib.chat_prompt(tokenizer, builder.builder.text("train", 3, hist("train", 3), "simple"),
                               ctr_prompts.SYSTEM_PROMPT)
    assert list(e.prompt_ids) == tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(list(e.prompt_ids)).endswith("<|im_start|>assistant\n")
    yes, no = tok_lib.yes_no_ids(tokenizer)
    # ChatML closes the assistant turn with <|im_end|> = EOS: the answer is trained with it.
    assert builder.append_eos
    assert e.answer_ids[0] == (yes if e.label else no)
    assert tokenizer.decode(list(e.answer_ids)) == ("Yes." if e.label else "No.") + tokenizer.eos_token
    # A context limit: oldest items dropped, the count reported, the prompt within the limit.
    full_len = len(e.prompt_ids)
    tight = ex_lib.ExampleBuilder(data, tokenizer, max_prompt_tokens=full_len - 5)
    t = tight.build("train", 3, hist("train", 3), "simple")
    assert t.dropped >= 1 and t.shown == e.shown - t.dropped and len(t.prompt_ids) <= full_len - 5
    report = ex_lib.dropped_report([e, t])
    assert report["truncated_prompts"] == 1 and report["dropped_items"] == t.dropped


# ----------------------------------------------------------------------------- resume == uninterrupted
def _run(run_dir, steps, stop_at=None):
    model = lora_model(SMALL)
    trainer = trainer_lib.Trainer(model, trainer_lib.TrainSettings(effective_batch=8, micro_batch=4, eval_batch=8,
                                                                   seed=5), steps,
                                  parallel.make_mesh({"data": 1}, jax.devices()[:1]), yes_no=(7, 9))
    loop = ft.LoopConfig(total_steps=steps, eval_every=2, checkpoint_every=0, patience=3, progress=False)
    summary = ft.train_loop(trainer, synthetic_examples(20), synthetic_examples(8, seed=9), loop, run_dir,
                            pad_id=0, stop_at=stop_at)
    return summary, model


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted(tmp_path):
    """4 steps straight vs 2 steps, a new process state (new model, new trainer), resume to 4: the same
    adapters bit for bit (data order from (seed, epoch), dropout keys from (seed, step, micro-batch))."""
    whole, m_whole = _run(tmp_path / "a", 4)
    first, _ = _run(tmp_path / "b", 4, stop_at=2)
    assert first["steps"] == 2 and not first["finished"]
    assert checkpoint.latest_step(tmp_path / "b" / "checkpoints") == 2
    second, m_resumed = _run(tmp_path / "b", 4)
    assert second["steps"] == 4 and second["finished"] and whole["finished"]
    for a, b in zip(lora_arrays(m_whole), lora_arrays(m_resumed)):
        np.testing.assert_array_equal(a, b)
    assert np.abs(lora_arrays(m_whole)[1]).max() > 0  # lora_b moved away from its zero init
    la = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in la if "loss" in r] == [r["loss"] for r in lb if "loss" in r]
    assert [r["eval_loss"] for r in la if "eval_loss" in r] == [r["eval_loss"] for r in lb if "eval_loss" in r]
    assert list((tmp_path / "a" / "tb").glob("events.out.tfevents.*"))
    assert whole["best_step"] == second["best_step"]
    # The data position is in the checkpoint; resuming with another training set is an error, not a silent skip.
    mgr = checkpoint.manager(tmp_path / "b" / "checkpoints")
    pos = mgr.restore(4)["position"]
    mgr.close()
    assert int(pos["step"]) == 4 and int(pos["epoch"]) == 1 and int(pos["batch_in_epoch"]) == 1
    model = lora_model(SMALL)
    trainer = trainer_lib.Trainer(model, trainer_lib.TrainSettings(effective_batch=8, micro_batch=4, seed=5), 6,
                         parallel.make_mesh({"data": 1}, jax.devices()[:1]))
    loop = ft.LoopConfig(total_steps=6, eval_every=0, checkpoint_every=0, patience=0, progress=False)
    with pytest.raises(ValueError, match="made with 20 training examples"):
        ft.train_loop(trainer, synthetic_examples(24), [], loop, tmp_path / "b", pad_id=0)


# ----------------------------------------------------------------------------- sharding
def _losses(mesh, steps=3, micro=4):
    model = lora_model(SMALL)
    settings = trainer_lib.TrainSettings(effective_batch=16, micro_batch=micro, eval_batch=8, seed=3)
    trainer = trainer_lib.Trainer(model, settings, total_steps=steps, mesh=mesh, yes_no=(7, 9))
    exs = synthetic_examples(40)
    lora, opt = trainer.initial_state()
    losses = []
    for step in range(steps):
        rows, _, _ = batch_lib.step_rows(len(exs), 16, 3, step)
        batch, _ = batch_lib.global_batch(exs, rows, 3, 0, 16)
        lora, opt, stats = trainer.step(lora, opt, batch, step)
        losses.append(float(stats["loss"]))
    return losses, [np.asarray(x) for x in jax.tree.leaves(lora)], trainer.evaluate(lora, exs[:16], 3, 0)


def test_sharded_training_equals_single_device():
    one, lora_one, ev_one = _losses(parallel.make_mesh({"data": 1}, jax.devices()[:1]))
    eight, lora_eight, ev_eight = _losses(parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    np.testing.assert_allclose(eight, one, rtol=2e-6)
    for a, b in zip(lora_one, lora_eight):
        np.testing.assert_allclose(a, b, atol=2e-6)
    assert abs(ev_one["eval_loss"] - ev_eight["eval_loss"]) < 1e-5
    assert abs(ev_one["eval_auc"] - ev_eight["eval_auc"]) < 1e-9


def test_micro_batch_size_does_not_change_the_updates_and_training_learns():
    """4 micro-batches of 4 or 2 of 8 are the same effective batch of 16 (no dropout): same loss curve; and
    repeated steps on one batch lower the answer loss."""
    def run(micro):
        model = lora_model(SMALL, dropout=0.0)
        trainer = trainer_lib.Trainer(model, trainer_lib.TrainSettings(effective_batch=16, micro_batch=micro,
                                                                       learning_rate=1e-2), 6,
                                      parallel.make_mesh({"data": 1}, jax.devices()[:1]))
        lora, opt = trainer.initial_state()
        batch, _ = batch_lib.global_batch(synthetic_examples(16), list(range(16)), 3, 0, 16)
        losses = []
        for step in range(6):
            lora, opt, stats = trainer.step(lora, opt, batch, step)
            losses.append(float(stats["loss"]))
        return losses, [np.asarray(x) for x in jax.tree.leaves(lora)]
    (l4, p4), (l8, p8) = run(4), run(8)
    np.testing.assert_allclose(l4, l8, rtol=2e-6)
    for a, b in zip(p4, p8):
        np.testing.assert_allclose(a, b, atol=2e-6)
    assert all(b < a for a, b in zip(l4, l4[1:])) and l4[-1] < l4[0] - 0.1, l4


def test_micro_batch_must_divide_over_the_mesh():
    with pytest.raises(ValueError, match="micro_batch=2 must be a multiple of the 8 data-parallel"):
        trainer_lib.Trainer(lora_model(SMALL), trainer_lib.TrainSettings(effective_batch=16, micro_batch=2), 1,
                   parallel.make_mesh({"data": 8}))
    with pytest.raises(ValueError, match="not a multiple of finetune.micro_batch"):
        trainer_lib.TrainSettings(effective_batch=10, micro_batch=4)


# ----------------------------------------------------------------------------- NaN and early stopping
def _trainer(tmp, steps=6):
    model = lora_model(SMALL)
    trainer = trainer_lib.Trainer(model, trainer_lib.TrainSettings(effective_batch=8, micro_batch=8), steps,
                         parallel.make_mesh({"data": 1}, jax.devices()[:1]), yes_no=(7, 9))
    return trainer


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = _trainer(tmp_path)
    real_step = trainer.step

    def poisoned(lora, opt, batch, step):  # the 3rd update (step index 2) blows up
        lora, opt, stats = real_step(lora, opt, batch, step)
        if step == 2:
            lora = jax.tree.map(lambda x: x * jnp.nan, lora)
            stats = {**stats, "loss": jnp.float32(jnp.nan)}
        return lora, opt, stats

    trainer.step = poisoned
    loop = ft.LoopConfig(total_steps=6, eval_every=0, checkpoint_every=1, patience=0, progress=False)
    with pytest.raises(FloatingPointError, match="at step 3 .*last good checkpoint is step 2 under"):
        ft.train_loop(trainer, synthetic_examples(32), [], loop, tmp_path / "run", pad_id=0)
    mgr = checkpoint.manager(tmp_path / "run" / "checkpoints")
    assert mgr.latest_step() == 2
    restored = mgr.restore(2)
    mgr.close()
    leaves = jax.tree.leaves(restored["lora"])
    assert leaves and all(np.isfinite(np.asarray(x)).all() for x in leaves)


def test_early_stopping_reads_validation_and_keeps_the_best(tmp_path, monkeypatch):
    """Scripted validation losses 1.0, 0.8, 0.9, 0.85, 0.7 with patience 2: step 2 is the best, steps 3 and 4
    do not improve, so the run stops after 4 updates and the kept adapters are the ones evaluated at step 2."""
    trainer = _trainer(tmp_path, steps=10)
    scripted = iter([1.0, 0.8, 0.9, 0.85, 0.7])
    evaluated = []  # the LoRA arrays each evaluation saw, in step order

    def fake_eval(lora, examples, answer_len, pad_id):
        evaluated.append([np.array(x) for x in jax.tree.leaves(lora)])
        return {"eval_loss": next(scripted)}

    monkeypatch.setattr(trainer, "evaluate", fake_eval)
    val = [ex_lib.Example("validation", i, "simple", e.prompt_ids, e.answer_ids, e.label, 0, 0)
           for i, e in enumerate(synthetic_examples(8, seed=5))]
    loop = ft.LoopConfig(total_steps=10, eval_every=1, checkpoint_every=0, patience=2, progress=False)
    summary = ft.train_loop(trainer, synthetic_examples(32), val, loop, tmp_path / "run", pad_id=0)
    assert summary["stopped_early"] and summary["steps"] == 4 and summary["best_step"] == 2
    assert math.isclose(summary["best_eval_loss"], 0.8)
    assert len(evaluated) == 4 and checkpoint.latest_step(tmp_path / "run" / "best") == 2
    # The kept step: the best adapters read back equal the arrays evaluated after update 2, not the last ones.
    fresh = lora_model(SMALL)
    checkpoint.restore_adapters(tmp_path / "run" / "best", fresh)
    kept = lora_arrays(fresh)
    assert len(kept) == len(evaluated[1])
    for got, want in zip(kept, evaluated[1]):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(a, b) for a, b in zip(kept, evaluated[3]))


def test_finetune_evaluates_on_the_validation_split_only(tmp_path, tokenizer, data, monkeypatch):
    splits = []
    real = trainer_lib.Trainer.evaluate

    indices = []

    def spy(self, lora, examples, answer_len, pad_id):
        splits.extend(e.split for e in examples)
        indices.append([e.index for e in examples])
        return real(self, lora, examples, answer_len, pad_id)

    monkeypatch.setattr(trainer_lib.Trainer, "evaluate", spy)
    config = configs.test.get_config()
    config.finetune.max_steps = 1
    config.finetune.train_size = 16
    summary = ft.finetune(config, tmp_path, data=data, model=create_model(WIDE, seed=0), tokenizer=tokenizer,
                          mesh=parallel.make_mesh({"data": 1}, jax.devices()[:1]))
    assert splits and set(splits) == {"validation"} and len(splits) == config.finetune.eval_size
    # The rows: the seeded user-stratified validation sample, one row per user here (not the first rows in time).
    want = sampling.validation_sample(data, config.finetune)
    assert indices[0] == want.rows.tolist() and want.how == "stratified"
    users = data.samples["validation"]["user"][indices[0]]
    assert len(set(users.tolist())) == min(len(users), len(set(data.samples["validation"]["user"].tolist())))
    assert summary["validation_sample"]["rows"] == config.finetune.eval_size
    assert summary["finished"] and math.isfinite(summary["last_eval"]["eval_loss"])
    # The run draws its learning curve: the validation at step 1, after train_size examples.
    curve = json.loads(pathlib.Path(summary["learning_curve"]).with_suffix(".json").read_text())
    assert pathlib.Path(summary["learning_curve"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert curve["x"] == "examples_seen" and curve["validation"]["examples_seen"] == [16.0]
    assert curve["validation"]["eval_loss"] == [summary["last_eval"]["eval_loss"]]


# ----------------------------------------------------------------------------- damaged checkpoints, changed settings
def _run_checkpointed(run_dir, steps, stop_at=None, lr=5e-4):
    model = lora_model(SMALL)
    trainer = trainer_lib.Trainer(model, trainer_lib.TrainSettings(effective_batch=8, micro_batch=4, eval_batch=8,
                                                                   seed=5, learning_rate=lr), steps,
                                  parallel.make_mesh({"data": 1}, jax.devices()[:1]), yes_no=(7, 9))
    loop = ft.LoopConfig(total_steps=steps, eval_every=2, checkpoint_every=1, patience=0, progress=False)
    summary = ft.train_loop(trainer, synthetic_examples(20), synthetic_examples(8, seed=9), loop, run_dir,
                            pad_id=0, stop_at=stop_at, identity={"what": "test"})
    return summary, model


def _truncate_step(step_dir):
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for p in files:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def test_a_damaged_newest_checkpoint_is_reported_and_the_previous_one_resumed(tmp_path, caplog):
    whole, m_whole = _run_checkpointed(tmp_path / "a", 6)
    first, _ = _run_checkpointed(tmp_path / "b", 6, stop_at=4)
    assert checkpoint.latest_step(tmp_path / "b" / "checkpoints") == 4
    _truncate_step(tmp_path / "b" / "checkpoints" / "4")
    with caplog.at_level("WARNING"):
        second, m_resumed = _run_checkpointed(tmp_path / "b", 6)
    assert f"{tmp_path / 'b' / 'checkpoints' / '4'} is damaged" in caplog.text
    assert "resuming from step 3" in caplog.text
    assert [p.name.split("-")[0] for p in (tmp_path / "b" / "checkpoints.damaged").iterdir()] == ["4"]
    assert second["finished"] and second["best_step"] == whole["best_step"]
    for a, b in zip(lora_arrays(m_whole), lora_arrays(m_resumed)):
        np.testing.assert_array_equal(a, b)
    ma, mb = lora_model(SMALL), lora_model(SMALL)
    assert checkpoint.restore_adapters(tmp_path / "a" / "best", ma) == checkpoint.restore_adapters(
        tmp_path / "b" / "best", mb) == whole["best_step"]
    for a, b in zip(lora_arrays(ma), lora_arrays(mb)):
        np.testing.assert_array_equal(a, b)
    # Nothing left to resume from: an error naming the folder to delete, never a traceback from the zarr driver.
    for step in checkpoint.manager(tmp_path / "b" / "checkpoints").all_steps():
        _truncate_step(tmp_path / "b" / "checkpoints" / str(step))
    assert "step 6" in checkpoint.damage(tmp_path / "b" / "checkpoints")
    with pytest.raises(checkpoint.DamagedCheckpointError, match=r"no checkpoint step reads back .* Delete .*"):
        _run_checkpointed(tmp_path / "b", 6)


def test_a_resume_with_another_setting_is_refused_naming_it(tmp_path):
    _run_checkpointed(tmp_path / "run", 4, stop_at=2)
    with pytest.raises(ValueError, match=r"settings\.learning_rate: 0\.0005 -> 0\.05"):
        _run_checkpointed(tmp_path / "run", 4, lr=0.05)
    (tmp_path / "run" / "identity.json").unlink()
    with pytest.raises(ValueError, match="identity.json, the record of what they were trained with, is missing"):
        _run_checkpointed(tmp_path / "run", 4)


@pytest.mark.slow
def test_a_changed_learning_rate_trains_afresh_as_a_new_run(tmp_path, tokenizer, data):
    """Issue 12.1: the same workdir with another learning rate must train (in its own run folder), giving the
    adapters a fresh run with that rate gives, not resume the finished run of the old rate."""
    def tune(workdir, lr):
        config = configs.test.get_config()
        config.finetune.max_steps = 3
        config.finetune.train_size = 16
        config.finetune.eval_size = 8
        config.finetune.effective_batch = 8
        config.finetune.learning_rate = lr
        model = create_model(WIDE, seed=0)
        summary = ft.finetune(config, workdir, data=data, model=model, tokenizer=tokenizer,
                              mesh=parallel.make_mesh({"data": 1}, jax.devices()[:1]))
        return summary, lora_arrays(model), config

    old, old_arrays, old_config = tune(tmp_path / "work", 5e-4)
    new, new_arrays, new_config = tune(tmp_path / "work", 5e-2)
    fresh, fresh_arrays, _ = tune(tmp_path / "fresh", 5e-2)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(new_arrays, old_arrays))
    for a, b in zip(new_arrays, fresh_arrays):
        np.testing.assert_array_equal(a, b)
    assert new["run_dir"] != old["run_dir"]
    assert pathlib.Path(new["run_dir"]).parent == pathlib.Path(old["run_dir"]).parent
    assert inputs.run_dir(new_config, tmp_path / "work") == pathlib.Path(new["run_dir"])
    losses = [[json.loads(x)["loss"] for x in (pathlib.Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines()
               if "loss" in json.loads(x)] for s in (new, fresh)]
    assert len(losses[0]) == 3 and losses[0] == losses[1]  # all three steps trained, as the fresh run's
    from rallrec_jax.generation import evaluate as ev

    assert ev.adapters_dir(new_config, tmp_path / "work", "best") == pathlib.Path(new["run_dir"]) / "best"
    other = ml_collections.ConfigDict(new_config.to_dict())
    other.finetune.learning_rate = 0.01
    with pytest.raises(ValueError, match=r"no LoRA run of this config; the runs under .* differ from this config: "
                                         r".*\(finetune\.learning_rate: 0\.05 -> 0\.01\)"):
        ev.adapters_dir(other, tmp_path / "work", "best")
    again, again_arrays, _ = tune(tmp_path / "work", 5e-4)  # back to the old rate: its finished run is reused
    assert again["run_dir"] == old["run_dir"] and again["steps"] == 3
    for a, b in zip(again_arrays, old_arrays):
        np.testing.assert_array_equal(a, b)
