"""LoRA train-step throughput and peak memory: rallrec_jax (NNX + optax, one jitted donated step) vs
transformers + peft, SmolLM2-135M-Instruct in float32, same machine, same run.

Workload (both sides): B=4 sequences of L=512 random tokens; LoRA r=8, alpha=16, dropout 0.05 on q_proj and
v_proj; AdamW (0.9, 0.999, eps 1e-8, wd 0, lr 5e-4); cross-entropy of the answer token at the answer position
(the last prompt position). PyTorch runs with `torch.set_num_threads(2)`; each side runs in its own
worker subprocess so its memory is its own. The workers load, warm up (`--warmup` steps, the compile
included), then step on request, so their steps interleave as pairs (benchmarks/harness.py: one JAX step,
one torch step, `--pairs` times per JAX remat mode; the torch worker serves every mode). Memory: peak
resident set size sampled every 2 ms from the first timed step on (after loading and warm-up), and that
peak minus the RSS just before the first timed step.

  python benchmarks/bench_lora.py [--pairs 5] [--warmup 2] [--remat full,attention,none] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import harness  # noqa: E402

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


def batch_tokens(b: int, length: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = rng.integers(100, 49000, size=(b, length)).astype(np.int64)
    labels = rng.integers(0, 2, size=b)
    return tokens, labels


def jax_step_fn(b: int, length: int, remat: str = "none"):
    """A callable running one LoRA train step of the library's `generation.trainer.Trainer` (returns the loss)."""
    import jax
    from flax import nnx

    sys.path.insert(0, ROOT)
    from rallrec_jax import assets, parallel
    from rallrec_jax.generation import batches as batch_lib
    from rallrec_jax.generation import examples as ex_lib
    from rallrec_jax.generation import trainer as trainer_lib
    from rallrec_jax.llm import lora, tokenizer, weights

    path = assets.smollm2_gguf()
    model = weights.load(path)
    tok = tokenizer.load_tokenizer(path)
    yes, no = tokenizer.yes_no_ids(tok)
    lora.apply_lora(model, lora.LoraConfig(rank=8, alpha=16.0, dropout=0.05), rngs=nnx.Rngs(0))
    mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
    settings = trainer_lib.TrainSettings(learning_rate=5e-4, effective_batch=b, micro_batch=b, remat=remat)
    trainer = trainer_lib.Trainer(model, settings, total_steps=10 ** 6, mesh=mesh)
    tokens, labels = batch_tokens(b, length)
    exs = [ex_lib.Example("train", i, "simple", tuple(tokens[i, :length - 1].tolist()), (yes if labels[i] else no,),
                          int(labels[i]), 0, 0) for i in range(b)]
    batch, bucket = batch_lib.global_batch(exs, list(range(b)), 1, 0, 16)
    if bucket != length:
        raise SystemExit(f"--length {length} is not a length bucket (the batch padded to {bucket})")
    state = {"s": trainer.initial_state(), "step": 0}

    def step() -> float:
        lora_s, opt, stats = trainer.step(*state["s"], batch, state["step"])
        loss = float(stats["loss"])  # blocks until the step is done
        state["s"], state["step"] = (lora_s, opt), state["step"] + 1
        return loss

    return step


def torch_step_fn(b: int, length: int, remat: str = "none"):
    """A callable running one transformers + peft LoRA train step (returns the loss)."""
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
    tokens, labels = batch_tokens(b, length)
    ids = torch.tensor(tokens)
    mask = torch.ones_like(ids)
    target = torch.tensor([yes if y else no for y in labels])

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        # logits only for the last 2 positions; position L-2 predicts the answer token at L-1.
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=2).logits[:, 0]
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        loss.backward()
        opt.step()
        return float(loss)

    return step


def worker(impl: str, warmup: int, remat: str, b: int, length: int) -> None:
    """The worker loop: build, warm up, print READY; then one step per "step" line on stdin, "stop" ends
    with RESULT (peak RSS over the timed steps)."""
    import gc

    step = (jax_step_fn if impl == "jax" else torch_step_fn)(b, length, remat)
    t0 = time.perf_counter()
    warm = []
    for _ in range(warmup):  # compile + warm
        t = time.perf_counter()
        step()
        warm.append(time.perf_counter() - t)
    gc.collect()
    print("READY " + json.dumps({"warmup_s": warm, "load_and_warmup_s": time.perf_counter() - t0}), flush=True)
    rss, loss, times = None, None, []
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            if rss is None:
                rss = PeakRss().start()
            t = time.perf_counter()
            loss = step()
            times.append(time.perf_counter() - t)
            print(f"STEP {times[-1]!r}", flush=True)
        elif cmd == "stop":
            break
    if rss is None:
        rss = PeakRss().start()
    rss.stop()
    print("RESULT " + json.dumps({"impl": f"jax/{remat}" if impl == "jax" else "torch+peft", "times": times,
                                  "step_s": statistics.median(times) if times else None, "loss": loss,
                                  "warmup_s": warm, "peak_rss_mb": rss.peak / 2**20,
                                  "train_increment_mb": (rss.peak - rss.base) / 2**20}), flush=True)


class Worker:
    """A worker subprocess (its own memory) driven over stdin/stdout; stderr goes to a temporary file that
    is shown when the worker fails."""

    def __init__(self, impl: str, args, remat: str = "none"):
        self.name = f"jax/{remat}" if impl == "jax" else "torch+peft"
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--impl", impl, "--warmup",
                                      str(args.warmup), "--remat", remat, "--batch", str(args.batch), "--length",
                                      str(args.length)], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1)
        self.ready = json.loads(self._expect("READY "))

    def _expect(self, prefix: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        self.proc.wait()
        self.err.seek(0)
        raise SystemExit(f"{self.name} worker ended (rc {self.proc.returncode}) without {prefix.strip()}:\n"
                         f"{self.err.read()[-4000:]}")

    def step(self) -> harness.Measured:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return harness.Measured(float(self._expect("STEP ")))

    def stop(self) -> dict:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        out = json.loads(self._expect("RESULT "))
        self.proc.wait()
        self.err.close()
        return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--warmup", type=int, default=2, help="steps each worker runs before the pairs")
    parser.add_argument("--remat", default="full,attention,none",
                        help="comma-separated finetune.remat modes of the JAX side: none|attention|full")
    parser.add_argument("--batch", type=int, default=B)
    parser.add_argument("--length", type=int, default=L, help="sequence length (a length bucket: 64, 96, 128, ... 512)")
    parser.add_argument("--impl", choices=["jax", "torch"], default=None, help=argparse.SUPPRESS)
    harness.add_arguments(parser, pairs=5)
    args = parser.parse_args()
    if args.impl:
        worker(args.impl, args.warmup, args.remat, args.batch, args.length)
        return
    report = harness.Report("bench_lora", args)
    b, length = args.batch, args.length
    peer = Worker("torch", args)
    side_peer = harness.Side("torch+peft", peer.step)
    jax_results = []
    for remat in args.remat.split(","):
        ours = Worker("jax", args, remat)
        before = harness.machine_state()
        stats = harness.run_pairs(harness.Side(ours.name, ours.step), side_peer, args.pairs, warmup=False)
        after = harness.machine_state()
        result = ours.stop()
        stats.ours_warmup_s = ours.ready["warmup_s"][0] if ours.ready["warmup_s"] else None
        report.add(f"LoRA step SmolLM2-135M f32 B={b} L={length} r=8 q/v, remat={remat}", stats, b * length, "tok",
                   before, after, extra={"ours_worker": result})
        jax_results.append((report.rows[-1], result))
    t = peer.stop()
    for row, _ in jax_results:
        row["peer_warmup_s"] = t["warmup_s"][0] if t["warmup_s"] else None
    print(f"\nLoRA train step, SmolLM2-135M f32, B={b} L={length} r=8 q/v, AdamW, 2 threads")
    for r in (*[res for _, res in jax_results], t):
        print(f"  {r['impl']:>14}: {r['step_s'] * 1000:8.1f} ms/step  {b * length / r['step_s']:8.0f} tokens/s  "
              f"peak RSS {r['peak_rss_mb']:7.0f} MB  (+{r['train_increment_mb']:.0f} MB over pre-step)  "
              f"loss {r['loss']:.3f}")
    for row, j in jax_results:
        row["peak_rss_ratio"] = j["peak_rss_mb"] / t["peak_rss_mb"]
        row["train_increment_ratio"] = j["train_increment_mb"] / max(t["train_increment_mb"], 1e-9)
        print(f"{j['impl']}: throughput {row['ratio_median']:.2f}x torch+peft (median of {row['pairs']} pairs, "
              f"min-max {row['ratio_min']:.2f}-{row['ratio_max']:.2f}; target >= 1.2x), peak RSS "
              f"{row['peak_rss_ratio']:.2f}x (target <= 1), training increment {row['train_increment_ratio']:.2f}x")
    report.finish({"torch_worker": t})


if __name__ == "__main__":
    main()
