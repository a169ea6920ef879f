"""Decode ms/step of the jitted sampler against the memory-bandwidth floor, SmolLM2-135M-Instruct float32.

A decode step of a batch of B rows must read every weight once (the tied embedding too: it is the head) and
the KV cache it holds once (the attention reads all allocated slots, masked; with the prompt prefix shared
by the K samples that is P*Lp + P*K*G slots, not P*K*(Lp+G)). Floor = those bytes / this machine's memory
bandwidth, measured in the same run (the best of a jitted large-array sum, an in-place add and a one-row
matrix product over a 128 MiB weight).

At a batch of B rows a step also does 2*B multiply-adds per weight (the head included) plus the attention's
2 * 2 * B * slots * heads * head_dim per layer, and on a CPU that is often the larger bound: the compute floor is
those FLOPs / this machine's float32 matmul rate (jax, 2048x2048, the best case; small-M matmuls run slower).
The floor printed is the larger of the two, and the column says which bound it is.

Shapes: reasoning prompts (a CTR prompt with a 20-movie history, chat-templated, ~300 tokens) at
P=4 x K=5 and P=10 x K=3 samples, and a single row (P=1, K=1); 128 new tokens, every step run (the stop id
is unreachable); sampled (temperature 0.6, top-p 0.95, as the reasoning stage) and greedy. The time is the
decode while-loop alone (prefill excluded), median of --reps runs.

`--fuse on,off` (the default) times each shape and mode with the fused q/k/v and gate/up projections
(`Llm.fused_projections`; the Sampler's default is off) and without, in interleaved runs, and prints fused / unfused.

    python benchmarks/decode_floor.py [--reps 3] [--shapes 4x5,10x3,1x1] [--new-tokens 128] [--fuse on,off]
"""
from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MOVIES = ["Toy Story (1995)", "Heat (1995)", "GoldenEye (1995)", "Casino (1995)", "Sabrina (1995)",
          "Jumanji (1995)", "Babe (1995)", "Se7en (1995)", "Braveheart (1995)", "Apollo 13 (1995)",
          "Batman Forever (1995)", "Clueless (1995)", "Rob Roy (1995)", "Waterworld (1995)", "Dead Man (1995)",
          "Hackers (1995)", "Hoop Dreams (1994)", "Nell (1994)", "Ed Wood (1994)", "Quiz Show (1994)"]


def prompt_text(i: int) -> str:
    hist = ", ".join(f"'{m} ({1 + (j * 7 + i) % 5} stars)'" for j, m in enumerate(MOVIES))
    target = MOVIES[(3 * i + 1) % len(MOVIES)]
    return (f"The user is a female. Her job is artist. Her age is {20 + i}.\nShe watched the following movies in "
            f"order in the past, and rated them:\n[{hist}]\nBased on the movies she has watched, deduce if she "
            f"will like the movie ***{target}***.\nYou should ONLY tell me yes or no.\n"
            "Another one think the answer is Yes.\n")


def median_seconds(fn, reps: int) -> float:
    fn()  # compile + warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bandwidth(reps: int) -> dict[str, float]:
    """GB/s of streaming arrays far larger than the caches: a jitted sum (read), an in-place add into a donated
    buffer (read + write, no fresh pages to fault in) and a one-row matrix product (decode's matmul at batch 1)."""
    n = 128 * 2 ** 20  # 512 MiB of float32
    box = [jnp.ones((n,), jnp.float32)]
    total = jax.jit(jnp.sum)
    add = jax.jit(lambda a: a + 1.0, donate_argnums=0)

    def add_in_place():
        box[0] = add(box[0])
        box[0].block_until_ready()

    w = jnp.ones((576, n // 576 // 4), jnp.float32)  # 128 MiB weight
    row = jnp.ones((1, 576), jnp.float32)
    matvec = jax.jit(lambda r, w: r @ w)
    return {
        "sum": 4 * n / median_seconds(lambda: total(box[0]).block_until_ready(), reps) / 1e9,
        "in-place add": 8 * n / median_seconds(add_in_place, reps) / 1e9,
        "1-row matmul": w.nbytes / median_seconds(lambda: matvec(row, w).block_until_ready(), reps) / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shapes", default="4x5,10x3,1x1", help="PxK list")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--modes", default="sampled,greedy")
    ap.add_argument("--fuse", default="on,off", help="fused projections: on, off, or both (interleaved)")
    args = ap.parse_args()
    fuses = [{"on": True, "off": False}[v] for v in args.fuse.split(",")]

    from rallrec_jax import assets
    from rallrec_jax.llm import sampler as sampler_lib
    from rallrec_jax.llm import tokenizer as tk
    from rallrec_jax.llm import weights
    from rallrec_jax.llm.tokenizer import bucket_length, pad_batch

    path = assets.smollm2_gguf()
    tok = tk.load_tokenizer(path)
    model = weights.load_gguf(path)
    cfg = model.config
    graphdef, state = nnx.split(model)
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    bw = bandwidth(args.reps)
    best = max(bw.values())
    gflops = harness.matmul_gflops_jax()
    matmul_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)) if x.ndim >= 2)
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print("memory bandwidth: " + ", ".join(f"{k} {v:.1f} GB/s" for k, v in bw.items()) + f" -> floor uses {best:.1f}")
    print(f"float32 matmul (jax, 2048^2): {gflops:.0f} GFLOP/s")
    print(f"weights: {param_bytes / 1e6:.0f} MB read per step, {matmul_params / 1e6:.0f} M multiply-adds per row")
    print(f"{'shape':>8s} {'mode':>8s} {'rows':>5s} {'slots':>6s} {'KV MB':>6s} {'mem ms':>7s} {'flop ms':>8s} "
          f"{'floor':>6s} {'fused':>6s} {'ms/step':>8s} {'x floor':>8s} {'tok/s':>7s} {'vs unfused':>10s}")
    new = args.new_tokens
    gen = bucket_length(new)
    for shape in args.shapes.split(","):
        p, k = (int(v) for v in shape.split("x"))
        prompts = tk.encode(tok, [tk.chat_prompt(tok, prompt_text(i)) for i in range(p)])
        lp = bucket_length(max(map(len, prompts)))
        p_pad = getattr(sampler_lib, "prompt_count_bucket", lambda n: 1 << (n - 1).bit_length())(p)
        tokens, mask = pad_batch(prompts + [prompts[0]] * (p_pad - p), lp, int(tok.pad_token_id), side="left")
        tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
        rows = p_pad * k
        cache = jax.eval_shape(lambda t, m: sampler_lib._prefill(graphdef, state, t, m, mesh=None, num_samples=k,
                                                                gen_len=gen)[0], tokens, mask)
        kv_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(cache))  # what a step's attention reads
        mem_ms = (param_bytes + kv_bytes) / (best * 1e9) * 1e3
        attn_flops = 4 * rows * (lp + gen) * cfg.num_heads * cfg.head_dim * cfg.num_layers
        flop_ms = (2 * rows * matmul_params + attn_flops) / (gflops * 1e9) * 1e3
        floor_ms = max(mem_ms, flop_ms)
        bound = "mem" if mem_ms >= flop_ms else "flop"
        for mode in args.modes.split(","):
            greedy = mode == "greedy"
            flags = dict(eos_ids=(cfg.vocab_size,), pad_id=int(tok.pad_token_id), greedy=greedy, top_k=0,
                         use_top_p=not greedy)
            if "lp" in inspect.signature(sampler_lib._decode).parameters:  # older sampler: static prompt bucket
                flags["lp"] = lp
            has_fuse = "fuse" in inspect.signature(sampler_lib._decode).parameters  # older sampler: never fused

            def run(fuse: bool):
                cache, logits, key_mask, next_pos = sampler_lib._prefill(
                    graphdef, state, tokens, mask, mesh=None, num_samples=k, gen_len=gen)
                jax.block_until_ready(cache)
                extra = {"fuse": fuse} if has_fuse else {}
                t0 = time.perf_counter()
                out = sampler_lib._decode(graphdef, state, cache, key_mask, logits, next_pos, jax.random.key(0),
                                          jnp.int32(new), jnp.float32(0.6), jnp.float32(0.95), **flags, **extra)
                jax.block_until_ready(out)
                return time.perf_counter() - t0

            for fuse in fuses:
                run(fuse)  # compile
            times = {fuse: [] for fuse in fuses}
            for _ in range(args.reps):  # interleaved, so a change of the machine's speed hits both alike
                for fuse in fuses:
                    times[fuse].append(run(fuse))
            for fuse in fuses:
                sec = statistics.median(times[fuse])
                ms = sec / new * 1e3
                ratio = ""
                if fuse and False in times:
                    pairs = sorted(b / a for a, b in zip(times[True], times[False]))
                    ratio = f"{statistics.median(pairs):.2f}x ({pairs[0]:.2f}-{pairs[-1]:.2f})"
                print(f"{p}x{k:<6d} {mode:>8s} {rows:5d} {lp + gen:6d} {kv_bytes / 1e6:6.0f} {mem_ms:7.1f} "
                      f"{flop_ms:8.1f} {bound:>6s} {'yes' if fuse else 'no':>6s} {ms:8.1f} {ms / floor_ms:8.2f} "
                      f"{p * k * new / sec:7.0f} {ratio:>10s}", flush=True)

if __name__ == "__main__":
    main()
