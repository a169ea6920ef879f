"""XLA's own accounting of the LoRA train step's memory (compiled `memory_analysis`), per remat mode.

SmolLM2-135M shapes (random weights: only shapes matter), B=4, L=512, r=8 on q_proj/v_proj, one micro-batch.
Prints temp / argument / output MB of the compiled step for each `finetune.remat` mode given.

  python benchmarks/lora_step_memory.py none attention full
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gguf  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from rallrec_jax import assets, parallel  # noqa: E402
from rallrec_jax.generation import batches as batch_lib  # noqa: E402
from rallrec_jax.generation import examples as ex  # noqa: E402
from rallrec_jax.generation import trainer as trainer_lib  # noqa: E402
from rallrec_jax.llm import lora  # noqa: E402
from rallrec_jax.llm.config import LlmConfig  # noqa: E402
from rallrec_jax.llm.model import create_model  # noqa: E402


def main(modes):
    cfg = LlmConfig.from_gguf(gguf.GGUFReader(str(assets.smollm2_gguf())))
    mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
    rng = np.random.default_rng(0)
    exs = [ex.Example("train", i, "simple", tuple(rng.integers(10, 40000, 511).tolist()), (10539,), 1, 0, 0)
           for i in range(4)]
    batch, _ = batch_lib.global_batch(exs, list(range(4)), 1, 0, 16)
    for remat in modes:
        m = create_model(cfg, seed=0)
        lora.apply_lora(m, lora.LoraConfig(), rngs=nnx.Rngs(0))
        tr = trainer_lib.Trainer(m, trainer_lib.TrainSettings(effective_batch=4, micro_batch=4, remat=remat), 10, mesh)
        lora_state, opt = tr.initial_state()
        ma = tr._step.lower(lora_state, opt, tr.frozen, tr.put(batch), jnp.int32(0)).compile().memory_analysis()
        print(f"remat={remat:>9}: temp {ma.temp_size_in_bytes / 2**20:8.1f} MB  args "
              f"{ma.argument_size_in_bytes / 2**20:7.1f} MB  out {ma.output_size_in_bytes / 2**20:6.1f} MB", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["none", "attention", "full"])
