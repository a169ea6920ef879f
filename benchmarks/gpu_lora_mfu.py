"""LoRA train step of an 8B-shaped Llama (random weights, bf16) on one accelerator: seconds per step and
model FLOP utilisation. The prepared device check of issue 5 (goal: 40% MFU on an H200); part 2 of
benchmarks/device_check.py calls `measure`.

Model: Llama-3.1-8B's shapes (32 layers, D 4096, 32 heads / 8 KV heads, FFN 14336, vocab 128256), random
weights in bfloat16 initialised straight into their shardings (no host copy). LoRA r=8, alpha 16 on q_proj
and v_proj, AdamW, the answer-position loss of `generation.trainer.Trainer` (the library's own step, nothing
special-cased). FLOPs: `rallrec_jax.llm.flops.lora_step_flops` (work the step must do; recomputation by
remat is not counted), checked against XLA's cost analysis in tests/test_flops.py. Peak: bf16 dense
TFLOP/s of the device kind (H200/H100 989, A100 312, TPU v5e 197, v5p 459, v4 275) or --peak_tflops.

  python benchmarks/gpu_lora_mfu.py                      # 8B shapes, B=4, L=2048, remat attention
  python benchmarks/gpu_lora_mfu.py --shape tiny --steps 2  # a CPU smoke run of the same code path

Prints one JSON line (RESULT {...}) with the shapes, step seconds (median of --steps after --warmup),
tokens/s, model TFLOP/s, MFU and the device's peak memory when the backend reports it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PEAK_BF16_TFLOPS = {"h200": 989.0, "h100": 989.0, "a100": 312.0, "l40s": 362.0, "a40": 150.0,
                    "tpu v5 lite": 197.0, "tpu v5e": 197.0, "tpu v5p": 459.0, "tpu v4": 275.0, "tpu v6": 918.0}


def shape_config(shape: str):
    from rallrec_jax.llm.config import LlmConfig, RopeScaling

    if shape == "8b":
        return LlmConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
                         num_heads=32, num_kv_heads=8, head_dim=128, rope_theta=500000.0,
                         rope_scaling=RopeScaling("llama3", 8.0), max_position_embeddings=131072,
                         param_dtype="bfloat16", dtype="bfloat16")
    if shape == "tiny":
        return LlmConfig(vocab_size=1024, hidden_size=256, intermediate_size=512, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=64, param_dtype="bfloat16", dtype="bfloat16")
    raise SystemExit(f"--shape {shape!r} is not 8b or tiny")


def peak_tflops(device, override: float) -> float | None:
    if override:
        return override
    kind = device.device_kind.lower()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in kind), None)


def measure(shape: str = "8b", batch: int = 4, seq: int = 2048, remat: str = "attention", steps: int = 5,
            warmup: int = 2, peak: float = 0.0, deadline: float | None = None, progress=None) -> dict:
    """The measurement as a dict (what main prints). `deadline` (time.time()) stops the timed steps early,
    after at least one; `progress(dict)` gets the partial result after the compile and after each step."""
    import jax
    import numpy as np
    from flax import nnx

    from rallrec_jax import parallel
    from rallrec_jax.generation import batches as batch_lib
    from rallrec_jax.generation import examples as ex_lib
    from rallrec_jax.generation import trainer as trainer_lib
    from rallrec_jax.llm import flops as flops_lib
    from rallrec_jax.llm import lora
    from rallrec_jax.llm.model import count_params, create_model

    cfg = shape_config(shape)
    device = jax.devices()[0]
    mesh = parallel.make_mesh({"data": 1}, [device])
    t0 = time.perf_counter()
    model = create_model(cfg, mesh=mesh, seed=0)
    lora.apply_lora(model, lora.LoraConfig(rank=8, alpha=16.0, dropout=0.05), rngs=nnx.Rngs(0))
    jax.block_until_ready(jax.tree.leaves(nnx.state(model)))
    init_s = time.perf_counter() - t0
    settings = trainer_lib.TrainSettings(learning_rate=5e-4, effective_batch=batch, micro_batch=batch, remat=remat)
    trainer = trainer_lib.Trainer(model, settings, total_steps=steps + warmup, mesh=mesh)
    rng = np.random.default_rng(0)
    exs = [ex_lib.Example("train", i, "simple", tuple(rng.integers(10, cfg.vocab_size - 10, seq - 1).tolist()),
                          (11,), 1, 0, 0) for i in range(batch)]
    gbatch, length = batch_lib.global_batch(exs, list(range(batch)), 1, 0, 16)
    if length != seq:
        raise SystemExit(f"the batch bucketed to length {length}, not --seq {seq} (use a length bucket)")
    step_flops = flops_lib.lora_step_flops(cfg, batch, seq, answer_len=1, lora_rank=8)
    peak = peak_tflops(device, peak)
    out = {"device": device.device_kind, "backend": jax.default_backend(), "shape": shape,
           "params": count_params(model), "batch": batch, "seq": seq, "remat": remat, "init_s": init_s,
           "model_tflops_per_step": step_flops / 1e12, "peak_tflops": peak}
    state = trainer.initial_state()
    t0 = time.perf_counter()
    warm = []
    for s in range(warmup):
        t = time.perf_counter()
        lora_s, opt, stats = trainer.step(*state, gbatch, s)
        state = (lora_s, opt)
        float(stats["loss"])
        warm.append(time.perf_counter() - t)
    out.update(compile_and_warmup_s=time.perf_counter() - t0, warmup_s=warm)
    if progress:
        progress(out)
    times = []
    for s in range(steps):
        t0 = time.perf_counter()
        lora_s, opt, stats = trainer.step(*state, gbatch, warmup + s)
        loss = float(stats["loss"])  # blocks until the step is done
        times.append(time.perf_counter() - t0)
        state = (lora_s, opt)
        step_s = statistics.median(times)
        achieved = step_flops / step_s / 1e12
        memory = device.memory_stats() or {}
        out.update({"step_s": step_s, "times": times, "tokens_per_s": batch * seq / step_s,
                    "achieved_tflops": achieved, "mfu": achieved / peak if peak else None,
                    "compile_s": max(warm[0] - step_s, 0.0) if warm else None,
                    "peak_memory_gb": memory.get("peak_bytes_in_use", 0) / 2**30 or None, "loss": loss})
        if progress:
            progress(out)
        if deadline is not None and time.time() + step_s > deadline:
            break
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="8b", choices=["8b", "tiny"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--remat", default="attention", help="finetune.remat: none | attention | full")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="device peak; 0 = from the device kind")
    args = parser.parse_args()
    out = measure(args.shape, args.batch, args.seq, args.remat, args.steps, args.warmup, args.peak_tflops)
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
