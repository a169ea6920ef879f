"""DeepFM train step: JAX (this package, jitted, 1 device) against a PyTorch peer, same sizes, same run.

Prints the median step time of each and the ratio torch / jax (> 1: JAX faster) over interleaved pairs
(benchmarks/harness.py: one pair = `--steps` JAX steps, then as many torch steps). Both models:
F fields sharing one embedding table (dim 16), FM first + second order, MLP 200-200-200 ReLU with
dropout, Adam, mean BCE. Usage: python benchmarks/bench_deepfm.py [--batch 1024] [--steps 10] [--pairs 5]
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from rallrec_jax import parallel  # noqa: E402
from rallrec_jax.generation import deepfm  # noqa: E402


class TorchDeepFM(torch.nn.Module):
    def __init__(self, cards, dim=16, hidden=(200, 200, 200), dropout=0.5):
        super().__init__()
        self.register_buffer("offsets", torch.tensor(np.concatenate([[0], np.cumsum(cards)[:-1]])))
        total = int(sum(cards))
        self.embed = torch.nn.Embedding(total, dim)
        self.linear = torch.nn.Embedding(total, 1)
        torch.nn.init.normal_(self.embed.weight, std=0.01)
        torch.nn.init.normal_(self.linear.weight, std=0.01)
        self.bias = torch.nn.Parameter(torch.zeros(()))
        layers, width = [], len(cards) * dim
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU(), torch.nn.Dropout(dropout)]
            width = h
        layers.append(torch.nn.Linear(width, 1))
        self.mlp = torch.nn.Sequential(*layers)

    def forward(self, x):
        ids = x + self.offsets
        e = self.embed(ids)
        first = self.linear(ids).squeeze(-1).sum(1)
        second = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1)
        return self.bias + first + second + self.mlp(e.flatten(1)).squeeze(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed call (one side of a pair)")
    harness.add_arguments(ap, pairs=5)
    args = ap.parse_args()
    cards = [6040, 3706, 18, 2, 7, 21]  # MovieLens-1M-like: user, item, genre, gender, age, occupation
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(0, c, args.batch) for c in cards], 1).astype(np.int32)
    y = rng.integers(0, 2, args.batch).astype(np.float32)
    w = np.ones(args.batch, np.float32)

    mesh = parallel.make_mesh({"data": 1}, devices=jax.devices()[:1])
    model = deepfm.DeepFM(cards, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-3)
    state = {"p": params, "o": tx.init(params)}
    step = deepfm.make_train_step(graphdef, tx, mesh)
    xj, yj, wj, key = jnp.asarray(x), jnp.asarray(y), jnp.asarray(w), jax.random.key(0)

    def jax_step():
        state["p"], state["o"], loss = step(state["p"], rest, state["o"], xj, yj, wj, key)
        loss.block_until_ready()

    tm = TorchDeepFM(cards)
    opt = torch.optim.Adam(tm.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y)

    def torch_step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(tm(xt), yt)
        loss.backward()
        opt.step()

    def repeat(fn):
        def run():
            for _ in range(args.steps):
                fn()
        return run

    report = harness.Report("bench_deepfm", args)
    report.compare(f"DeepFM train step, batch {args.batch} (x{args.steps} steps per call)",
                   harness.Side("jax", repeat(jax_step)), harness.Side("torch", repeat(torch_step)),
                   pairs=args.pairs, work=args.steps, unit="step",
                   extra={"batch": args.batch, "torch_threads": torch.get_num_threads()})
    report.finish()


if __name__ == "__main__":
    main()
