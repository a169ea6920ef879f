"""LoRA train-step throughput and peak memory: rallrec_jax (NNX + optax, one jitted donated step) vs
transformers + peft, SmolLM2-135M-Instruct in float32, same machine, same run.

Workload (both sides): B=4 sequences of L=512 random tokens; LoRA r=8, alpha=16, dropout 0.05 on q_proj and
v_proj; AdamW (0.9, 0.999, eps 1e-8, wd 0, lr 5e-4); cross-entropy of the answer token at the answer position
(the last prompt position). PyTorch runs with `torch.set_num_threads(2)`; each side runs in its own
subprocess so its memory is its own. Memory: peak resident set size sampled every 2 ms during the timed
steps (after loading), and that peak minus the RSS just before the first step.

  python benchmarks/bench_lora.py [--steps 5] [--warmup 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, L = 4, 512


class PeakRss:
    """Samples this process's RSS in a thread; `peak` is the maximum seen since `start`."""

    def __init__(self, interval: float = 0.002):
        import psutil

        self.proc, self.interval, self.peak, self._stop = psutil.Process(), interval, 0, threading.Event()

    def start(self):
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def stop(self):
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def batch_tokens(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = rng.integers(100, 49000, size=(B, L)).astype(np.int64)
    labels = rng.integers(0, 2, size=B)
    return tokens, labels


def run_jax(steps: int, warmup: int, remat: str = "none") -> dict:
    import jax
    from flax import nnx

    sys.path.insert(0, ROOT)
    from rallrec_jax import assets, parallel
    from rallrec_jax.generation import examples as ex_lib
    from rallrec_jax.generation import finetune as ft
    from rallrec_jax.llm import lora, tokenizer, weights

    path = assets.smollm2_gguf()
    model = weights.load(path)
    tok = tokenizer.load_tokenizer(path)
    yes, no = tokenizer.yes_no_ids(tok)
    lora.apply_lora(model, lora.LoraConfig(rank=8, alpha=16.0, dropout=0.05), rngs=nnx.Rngs(0))
    mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
    settings = ft.TrainSettings(learning_rate=5e-4, effective_batch=B, micro_batch=B, remat=remat)
    trainer = ft.Trainer(model, settings, total_steps=steps + warmup, mesh=mesh)
    tokens, labels = batch_tokens()
    exs = [ex_lib.Example("train", i, "simple", tuple(tokens[i, :L - 1].tolist()), (yes if labels[i] else no,),
                          int(labels[i]), 0, 0) for i in range(B)]
    batch, length = ft.global_batch(exs, list(range(B)), 1, 0, 16)
    assert length == L, length
    state = trainer.initial_state()
    for s in range(warmup):  # compile + warm
        state = trainer.step(*state, batch, s)[:2]
    jax.block_until_ready(state)
    import gc

    gc.collect()
    rss = PeakRss().start()
    times = []
    for s in range(steps):
        t0 = time.perf_counter()
        lora_s, opt, stats = trainer.step(*state, batch, warmup + s)
        loss = float(stats["loss"])
        times.append(time.perf_counter() - t0)
        state = (lora_s, opt)
    rss.stop()
    return {"impl": f"jax/{remat}", "step_s": statistics.median(times), "times": times, "loss": loss,
            "peak_rss_mb": rss.peak / 2**20, "train_increment_mb": (rss.peak - rss.base) / 2**20}


def run_torch(steps: int, warmup: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, ROOT)
    from rallrec_jax import assets

    torch.set_num_threads(2)
    torch.manual_seed(0)
    path = assets.smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, torch_dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    yes = tok.encode("Yes", add_special_tokens=False)[0]
    no = tok.encode("No", add_special_tokens=False)[0]
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                             target_modules=["q_proj", "v_proj"], bias="none",
                                             task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.0)
    tokens, labels = batch_tokens()
    ids = torch.tensor(tokens)
    mask = torch.ones_like(ids)
    target = torch.tensor([yes if y else no for y in labels])

    def step():
        opt.zero_grad(set_to_none=True)
        # logits only for the last 2 positions; position L-2 predicts the answer token at L-1.
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=2).logits[:, 0]
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        loss.backward()
        opt.step()
        return float(loss)

    for _ in range(warmup):
        step()
    import gc

    gc.collect()
    rss = PeakRss().start()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    rss.stop()
    return {"impl": "torch+peft", "step_s": statistics.median(times), "times": times, "loss": loss,
            "peak_rss_mb": rss.peak / 2**20, "train_increment_mb": (rss.peak - rss.base) / 2**20}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--remat", default="full,attention,none",
                        help="comma-separated finetune.remat modes of the JAX side: none|attention|full")
    parser.add_argument("--impl", choices=["jax", "torch"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.impl:
        out = run_jax(args.steps, args.warmup, args.remat) if args.impl == "jax" else run_torch(args.steps, args.warmup)
        print("RESULT " + json.dumps(out))
        return
    def run(impl, remat):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        out = subprocess.run([sys.executable, __file__, "--impl", impl, "--steps", str(args.steps),
                              "--warmup", str(args.warmup), "--remat", remat], env=env, capture_output=True, text=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not line:
            raise SystemExit(f"{impl} run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        return json.loads(line[0][7:])

    t = run("torch", "none")
    jax_runs = [run("jax", remat) for remat in args.remat.split(",")]
    print(f"LoRA train step, SmolLM2-135M f32, B={B} L={L} r=8 q/v, AdamW, 2 threads")
    for r in (*jax_runs, t):
        print(f"  {r['impl']:>14}: {r['step_s'] * 1000:8.1f} ms/step  {B * L / r['step_s']:8.0f} tokens/s  "
              f"peak RSS {r['peak_rss_mb']:7.0f} MB  (+{r['train_increment_mb']:.0f} MB over pre-step)  "
              f"loss {r['loss']:.3f}")
    for j in jax_runs:
        print(f"{j['impl']}: throughput {t['step_s'] / j['step_s']:.2f}x torch+peft (target >= 1.2x), peak RSS "
              f"{j['peak_rss_mb'] / t['peak_rss_mb']:.2f}x (target <= 1), training increment "
              f"{j['train_increment_mb'] / max(t['train_increment_mb'], 1e-9):.2f}x")

if __name__ == "__main__":
    main()
