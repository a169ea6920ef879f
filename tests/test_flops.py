"""The MFU numerator: our model-FLOP count of a LoRA step against XLA's own count of the compiled step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rallrec_jax import parallel
from rallrec_jax.generation import batches as batch_lib
from rallrec_jax.generation import examples as ex_lib
from rallrec_jax.generation import trainer as trainer_lib
from rallrec_jax.llm import flops
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.model import create_model

# Matmul-dominated shapes (short rows, wide layers): attention is < 1% of the work, so XLA's count of the
# step (which also holds element-wise ops and AdamW) must match ours closely. One layer: XLA's cost analysis
# counts a while loop's body once, and the training forward scans the layers.
CFG = LlmConfig(vocab_size=512, hidden_size=512, intermediate_size=2048, num_layers=1, num_heads=8,
                num_kv_heads=2, head_dim=64)


def test_lora_step_flops_match_xla_cost_analysis():
    batch, seq = 4, 16
    model = create_model(CFG, seed=0)
    lora_lib.apply_lora(model, lora_lib.LoraConfig(rank=8, dropout=0.0), rngs=nnx.Rngs(0))
    mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
    settings = trainer_lib.TrainSettings(effective_batch=batch, micro_batch=batch, remat="none")
    trainer = trainer_lib.Trainer(model, settings, 10, mesh)
    rng = np.random.default_rng(0)
    exs = [ex_lib.Example("train", i, "simple", tuple(rng.integers(3, 500, seq - 1).tolist()), (7,), 1, 0, 0)
           for i in range(batch)]
    data, length = batch_lib.global_batch(exs, list(range(batch)), 1, 0, 16)
    assert length == seq
    lora, opt = trainer.initial_state()
    compiled = trainer._step.lower(lora, opt, trainer.frozen, trainer.put(data), jnp.int32(0)).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    xla = float(analysis["flops"])
    ours = flops.lora_step_flops(CFG, batch, seq, answer_len=1, lora_rank=8)
    # XLA skips what no gradient needs: the first layer's q/k/v input gradients (the embedding is frozen).
    d, hd = CFG.hidden_size, CFG.head_dim
    skipped = 2 * (d * CFG.num_heads * hd + 2 * d * CFG.num_kv_heads * hd) * batch * seq
    assert ours - skipped == pytest.approx(xla, rel=0.01), (ours, skipped, xla)
    # The counts that make it up: without the 4*N_mm term nothing close to XLA's count remains.
    assert 4 * flops.decoder_matmul_params(CFG) * batch * seq > 0.9 * xla
    with pytest.raises(ValueError, match="unknown LoRA target"):
        flops.lora_step_flops(CFG, 1, 8, lora_modules=("qkv",))
