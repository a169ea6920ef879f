"""SmolLM2-135M-Instruct (float32): our JAX scoring and sampling against transformers + torch, same run.

Scoring: B=8 prompts of L=512 tokens, next-token logits at the last position (the peer at its best:
`logits_to_keep=1`). Sampling: P=4 chat prompts, K=5 samples each, 128 new tokens, temperature 0.6,
top-p 0.95 (the peer: one `generate(num_return_sequences=K)` call). Both sides generate exactly 128
tokens per sample (the peer with `min_new_tokens`, ours with an unreachable stop id) so the work is equal.
Also prints our scoring FLOP rate as a fraction of this machine's measured float32 2048x2048 matmul rate.

    python benchmarks/bench_llm.py [--threads 2] [--reps 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def timed(fn, reps: int, warmup=None) -> float:
    """Median wall seconds of `fn()` over `reps` runs, after one warm-up run (of `warmup` if given)."""
    (warmup or fn)()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def timed_pair(fa, fb, reps: int) -> tuple[float, float]:
    """Median seconds of `fa` and `fb`, runs interleaved (a, b, a, b, ...) so load from other processes on a
    shared machine hits both sides alike; one warm-up run each first."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(reps):
        for fn, ts in ((fa, ta), (fb, tb)):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def matmul_rate(reps: int) -> float:
    """float32 GFLOP/s of a jitted 2048 x 2048 matmul."""
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    sec = timed(lambda: f(a, b).block_until_ready(), max(reps, 5))
    return 2 * n ** 3 / sec / 1e9


def forward_flops(cfg, batch: int, length: int) -> float:
    """Matmul FLOPs of a forward pass with the head at one position (attention as computed: full L x L)."""
    d, f, h, kv, hd = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    per_token = 2 * cfg.num_layers * (d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * f)
    attention = 2 * 2 * cfg.num_layers * h * hd * length * length
    return batch * (length * per_token + attention) + batch * 2 * d * cfg.vocab_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--parts", default="scoring,sampling", help="comma list of scoring, sampling")
    args = ap.parse_args()

    import torch
    import transformers

    from rallrec_jax import assets
    from rallrec_jax.llm import tokenizer as tk
    from rallrec_jax.llm import weights

    torch.set_num_threads(args.threads)
    path = assets.smollm2_gguf()
    tok = tk.load_tokenizer(path)
    ours = weights.load_gguf(path)
    peer = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32).eval()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); transformers {transformers.__version__}")

    rate = matmul_rate(args.reps)
    print(f"float32 2048x2048 matmul: {rate:.0f} GFLOP/s (jax)")

    parts = set(args.parts.split(","))
    if "scoring" in parts:
        bench_scoring(args, ours, peer, rate)
    if "sampling" in parts:
        bench_sampling(args, ours, peer, tok)


def bench_scoring(args, ours, peer, rate: float) -> None:
    import torch

    from rallrec_jax.llm.model import positions_from_mask
    from rallrec_jax.llm.scoring import last_real_index

    cfg = ours.config
    b, length = args.batch, args.length
    rng = np.random.default_rng(0)
    tokens = rng.integers(100, cfg.vocab_size, size=(b, length)).astype(np.int32)
    mask = np.ones_like(tokens)
    graphdef, state = nnx.split(ours)

    @jax.jit
    def score(state, tokens, mask):
        model = nnx.merge(graphdef, state)
        return model(tokens, positions_from_mask(mask), mask.astype(bool), logits_at=last_real_index(mask))

    jt, jm = jnp.asarray(tokens), jnp.asarray(mask)
    tt, tm = torch.tensor(tokens, dtype=torch.long), torch.tensor(mask)

    def peer_score_fn():
        with torch.inference_mode():
            return peer(input_ids=tt, attention_mask=tm, logits_to_keep=1).logits

    ours_score, peer_score = timed_pair(lambda: score(state, jt, jm).block_until_ready(), peer_score_fn, args.reps)
    want = peer_score_fn()[:, -1].numpy()
    got = np.asarray(score(state, jt, jm))
    flops = forward_flops(cfg, b, length)
    print(f"scoring B={b} L={length}: ours {b * length / ours_score:,.0f} tok/s, peer {b * length / peer_score:,.0f} "
          f"tok/s, ratio {peer_score / ours_score:.2f}x; ours {flops / ours_score / 1e9:.0f} GFLOP/s = "
          f"{flops / ours_score / 1e9 / rate:.0%} of the matmul rate; max |logit diff| {np.abs(got - want).max():.1e}")



def bench_sampling(args, ours, peer, tok) -> None:
    import torch

    from rallrec_jax.llm import tokenizer as tk
    from rallrec_jax.llm.sampler import Sampler

    cfg = ours.config
    questions = ["Will a user who loved Toy Story like Finding Nemo?", "Name three French painters.",
                 "Explain in one paragraph why the sky is blue.", "Write a haiku about recommender systems."]
    prompts = tk.encode(tok, [tk.chat_prompt(tok, q) for q in questions])
    k, new = 5, args.new_tokens
    sampler = Sampler(ours, eos_ids=(cfg.vocab_size,), pad_id=tok.pad_token_id)  # unreachable stop: 128 tokens each
    counter = iter(range(10 ** 6))

    def ours_sample():
        return sampler(prompts, max_new_tokens=new, num_samples=k, temperature=0.6, top_p=0.95, seed=next(counter))

    ours_sec = timed(ours_sample, args.reps)
    out = ours_sample().tokens
    assert all(len(t) == new for traces in out for t in traces)
    tok.padding_side = "left"
    enc = tok([tk.chat_prompt(tok, q) for q in questions], return_tensors="pt", padding=True, add_special_tokens=False)

    def peer_sample(n=new):
        with torch.inference_mode():
            return peer.generate(**enc, do_sample=True, temperature=0.6, top_p=0.95, max_new_tokens=n,
                                 min_new_tokens=n, num_return_sequences=k, pad_token_id=tok.pad_token_id)

    # The peer has nothing to compile: a short warm-up, then one timed run (it is the slow side).
    peer_sec = timed(peer_sample, 1, warmup=lambda: peer_sample(4))
    n_tok = len(prompts) * k * new
    print(f"sampling P={len(prompts)} K={k} new={new}: ours {n_tok / ours_sec:,.0f} tok/s, peer "
          f"{n_tok / peer_sec:,.0f} tok/s, ratio {peer_sec / ours_sec:.2f}x")


if __name__ == "__main__":
    main()
