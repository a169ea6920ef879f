"""SmolLM2-135M-Instruct (float32): our JAX scoring and sampling against transformers + torch, same run.

Scoring: B=8 prompts of L=512 tokens, next-token logits at the last position (the peer at its best:
`logits_to_keep=1`). Sampling: P=4 chat prompts, K=5 samples each, 128 new tokens, temperature 0.6,
top-p 0.95 (the peer: one `generate(num_return_sequences=K)` call). Both sides generate exactly 128
tokens per sample (the peer with `min_new_tokens`, ours with an unreachable stop id) so the work is equal.
Ours goes through the library's public entry points (`scoring.Scorer` on one fixed [B, L] batch,
`sampler.Sampler`). Each part runs as interleaved pairs after a warm-up of each side (benchmarks/harness.py),
beside the machine's measured matmul rate and bandwidth; also prints our scoring FLOP rate as a fraction of
the jax float32 2048x2048 matmul rate measured in the same run.

    python benchmarks/bench_llm.py [--threads 2] [--pairs 3] [--parts scoring,sampling] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def forward_flops(cfg, batch: int, length: int) -> float:
    """Matmul FLOPs of a forward pass with the head at one position (attention as computed: full L x L)."""
    d, f, h, kv, hd = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    per_token = 2 * cfg.num_layers * (d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * f)
    attention = 2 * 2 * cfg.num_layers * h * hd * length * length
    return batch * (length * per_token + attention) + batch * 2 * d * cfg.vocab_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--num-samples", type=int, default=5, help="K samples per prompt in the sampling part")
    ap.add_argument("--parts", default="scoring,sampling", help="comma list of scoring, sampling")
    harness.add_arguments(ap, pairs=3)
    args = ap.parse_args()

    import torch
    import transformers

    from rallrec_jax import assets
    from rallrec_jax.llm import tokenizer as tk
    from rallrec_jax.llm import weights

    torch.set_num_threads(args.threads)
    path = assets.smollm2_gguf()
    tok = tk.load_tokenizer(path)
    ours = weights.load(path)
    peer = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32).eval()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); transformers {transformers.__version__}")

    report = harness.Report("bench_llm", args)
    parts = set(args.parts.split(","))
    unknown = parts - {"scoring", "sampling"}
    if unknown:
        raise SystemExit(f"--parts: unknown {sorted(unknown)}; known: scoring, sampling")
    if "scoring" in parts:
        bench_scoring(args, ours, peer, tok, report)
    if "sampling" in parts:
        bench_sampling(args, ours, peer, tok, report)
    report.finish()


def bench_scoring(args, ours, peer, tok, report: harness.Report) -> None:
    import torch

    from rallrec_jax.llm.scoring import Scorer

    cfg = ours.config
    b, length = args.batch, args.length
    rng = np.random.default_rng(0)
    tokens = rng.integers(100, cfg.vocab_size, size=(b, length)).astype(np.int32)
    seqs = [row.tolist() for row in tokens]
    scorer = Scorer(ours, pad_id=int(tok.pad_token_id), batch_size=b)  # one batch, bucket = L when L is a bucket
    tt, tm = torch.tensor(tokens, dtype=torch.long), torch.ones((b, length), dtype=torch.long)

    def peer_score_fn():
        with torch.inference_mode():
            return peer(input_ids=tt, attention_mask=tm, logits_to_keep=1).logits

    row = report.compare(f"scoring B={b} L={length}", harness.Side("jax", lambda: scorer.next_token_logits(seqs)),
                         harness.Side("torch", peer_score_fn), pairs=args.pairs, work=b * length, unit="tok")
    want = peer_score_fn()[:, -1].numpy()
    got = scorer.next_token_logits(seqs)
    flops = forward_flops(cfg, b, length)
    gflops = flops / row["ours_median_s"] / 1e9
    rates = [row[k]["matmul_jax_gflops"] for k in ("machine_before", "machine_after")]
    row.update({"ours_gflops": gflops, "fraction_of_matmul_rate": [gflops / r for r in rates],
                "max_abs_logit_diff": float(np.abs(got - want).max())})
    print(f"  ours {gflops:.0f} GFLOP/s = {gflops / max(rates):.0%}-{gflops / min(rates):.0%} of the jax matmul rate; "
          f"max |logit diff| vs torch {row['max_abs_logit_diff']:.1e}", flush=True)


def bench_sampling(args, ours, peer, tok, report: harness.Report) -> None:
    import torch

    from rallrec_jax.llm import tokenizer as tk
    from rallrec_jax.llm.sampler import Sampler

    cfg = ours.config
    questions = ["Will a user who loved Toy Story like Finding Nemo?", "Name three French painters.",
                 "Explain in one paragraph why the sky is blue.", "Write a haiku about recommender systems."]
    prompts = tk.encode(tok, [tk.chat_prompt(tok, q) for q in questions])
    k, new = args.num_samples, args.new_tokens
    sampler = Sampler(ours, eos_ids=(cfg.vocab_size,), pad_id=tok.pad_token_id)  # unreachable stop: 128 tokens each
    counter = iter(range(10 ** 6))

    last = {}

    def ours_sample():
        last["out"] = sampler(prompts, max_new_tokens=new, num_samples=k, temperature=0.6, top_p=0.95,
                              seed=next(counter))

    tok.padding_side = "left"
    enc = tok([tk.chat_prompt(tok, q) for q in questions], return_tensors="pt", padding=True, add_special_tokens=False)

    def peer_sample(n=new):
        with torch.inference_mode():
            return peer.generate(**enc, do_sample=True, temperature=0.6, top_p=0.95, max_new_tokens=n,
                                 min_new_tokens=n, num_return_sequences=k, pad_token_id=tok.pad_token_id)

    n_tok = len(prompts) * k * new
    # The peer has nothing to compile: it warms up on a short generation.
    report.compare(f"sampling P={len(prompts)} K={k} new={new}", harness.Side("jax", ours_sample),
                   harness.Side("torch", peer_sample, warmup=lambda: peer_sample(4)), pairs=args.pairs,
                   work=n_tok, unit="tok")
    if not all(len(t) == new for traces in last["out"].tokens for t in traces):
        raise SystemExit(f"ours generated other than {new} tokens per sample: the work was not equal")


if __name__ == "__main__":
    main()
