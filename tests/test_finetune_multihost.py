"""Two processes on localhost (jax.distributed, gloo CPU collectives, 4 fake devices each) train LoRA as one
(data=2, fsdp=2, tensor=2) mesh: each process feeds its half of every effective batch, and the loss curve,
the adapters and the validation metrics equal a single-process, single-device run."""
import textwrap

import jax
import numpy as np
import pytest

COMMON = textwrap.dedent("""
    import numpy as np
    from flax import nnx
    from rallrec_jax.generation import examples as ex_lib
    from rallrec_jax.generation import finetune as ft
    from rallrec_jax.generation import batches as batch_lib
    from rallrec_jax.generation import trainer as trainer_lib
    from rallrec_jax.llm import lora as lora_lib
    from rallrec_jax.llm.config import LlmConfig
    from rallrec_jax.llm.model import create_model

    CFG = LlmConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=8, max_position_embeddings=512, tie_word_embeddings=True)

    def examples(n, seed=0):
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n):
            label = int(rng.integers(0, 2))
            prompt = tuple(rng.integers(3, 60, size=int(rng.integers(5, 40))).tolist())
            out.append(ex_lib.Example("train", i, "simple", prompt, (7 if label else 9, 11, 2), label, 0, 0))
        return out

    def train(mesh, steps=3):
        model = lora_lib.apply_lora(create_model(CFG, seed=0), lora_lib.LoraConfig(), rngs=nnx.Rngs(1))
        settings = trainer_lib.TrainSettings(effective_batch=16, micro_batch=8, eval_batch=8, seed=3,
                                             learning_rate=5e-3)
        trainer = trainer_lib.Trainer(model, settings, steps, mesh, yes_no=(7, 9))
        exs = examples(40)
        lora, opt = trainer.initial_state()
        losses = []
        for step in range(steps):
            rows, _, _ = batch_lib.step_rows(len(exs), 16, 3, step)
            batch, _ = batch_lib.global_batch(exs, rows, 3, 0, 16)  # this process's rows only
            lora, opt, stats = trainer.step(lora, opt, batch, step)
            losses.append(float(stats["loss"]))
        ev = trainer.evaluate(lora, examples(16, seed=4), 3, 0)
        return losses, ev
""")

from tests.multiproc import run_two_processes

WORKER = COMMON + textwrap.dedent("""
    from rallrec_jax import parallel
    losses, ev = train(parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    json.dump({"losses": losses, "eval": ev, "process": jax.process_index()}, open(out, "w"))
""")


@pytest.mark.slow
def test_two_processes_train_as_one_mesh(tmp_path):
    results = run_two_processes(WORKER, tmp_path, timeout=600)

    namespace: dict = {}
    exec(COMMON, namespace)  # the same model, data and steps in this process, on one device
    from rallrec_jax import parallel

    losses, ev = namespace["train"](parallel.make_mesh({"data": 1}, jax.devices()[:1]))
    for r in results:
        np.testing.assert_allclose(r["losses"], losses, rtol=2e-6)
        assert abs(r["eval"]["eval_loss"] - ev["eval_loss"]) < 1e-5
        assert abs(r["eval"]["eval_auc"] - ev["eval_auc"]) < 1e-9
    assert losses[-1] != losses[0]
