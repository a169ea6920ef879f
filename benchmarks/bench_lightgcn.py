"""LightGCN on MovieLens-1M: seconds per epoch and Recall@20, rallrec-jax vs a PyTorch LightGCN, same run.

Data: ratings.dat sorted by timestamp globally; the first 80% of rows form the training graph, the later
rows' (user, item) pairs of users seen in training are held out; full-ranking Recall@20 / NDCG@20
excluding training items (the same numpy/jax metric code scores both models).

Both models: dim 64, 3 layers, layer-mean readout, BPR with one uniform negative re-drawn (up to 4 times)
while it is a training positive, L2 1e-4 on the batch's layer-0 rows, Adam lr 1e-3, batch 2048, every
batch re-propagates the whole graph. Seconds per epoch include negative sampling and shuffling.

PyTorch peer at its best on CPU: CSR adjacency, `torch.sparse.mm`, a custom autograd Function whose
backward reuses the symmetric adjacency, negatives drawn with numpy once per epoch.
JAX: `LightGCNTrainer` (what `train_lightgcn` runs) with the "auto" propagation, which on CPU is the native
threaded CSR kernel (`rallrec_jax/retrieval/native.py`), whole epoch in one jitted scan, negatives drawn on
device; XLA's single-threaded BCSR path and the jraph gather path are timed for a few epochs beside it. The
JAX and torch epochs interleave in the same process as pairs (benchmarks/harness.py: epoch 1 of each is the
warm-up, then `--pairs` pairs of one JAX epoch and one torch epoch), so a busy machine slows both alike; the
ratio's median and spread over the pairs are printed beside the machine's matmul rate and bandwidth. The
torch thread count is the fastest measured here. `TorchLightGCN(device="cuda")` is the GPU peer of
benchmarks/device_check.py.

Measured 2026-11-29 on a quiet 2-core machine, 50 epochs: jax (native) 1.473 s/epoch, torch (2 threads,
CSR product 1.7 ms vs 3.4 ms on 1) 3.236 s/epoch -> 2.20x; Recall@20 jax 0.0871 vs torch 0.0867 (+0.5%),
NDCG@20 0.2803 vs 0.2787; popularity 0.0757 / 0.2626. XLA's BCSR path 2.541 s/epoch (1.27x torch), the
jraph gather path 16.8 s/epoch. Both sides spend most of a batch in six CSR products (3 forward,
3 backward); on ML-1M one product takes 0.81 ms in the native kernel on 2 threads, 1.54 ms on 1, 1.89 ms
in XLA's kernel, 1.7 ms in torch's on 2 threads. What limits the ratio: those products are bound by
random reads of 256-byte embedding rows from L2/L3, and torch's kernel also uses both cores.

Usage: python benchmarks/bench_lightgcn.py [--epochs 50 | --pairs 49] [--jraph_epochs 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import math
import os
import pathlib
import statistics
import sys
import time

import warnings

import numpy as np

warnings.filterwarnings("ignore", message=".*[Ss]parse.*")

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-1m" / "ratings.dat"


def load_ml1m_split(path):
    """ML-1M ratings sorted by time; first 80% of rows = train, later pairs of users seen in train = held out."""
    raw = np.array([line.split("::") for line in open(path).read().split("\n") if line], dtype=np.int64)
    raw = raw[np.lexsort((raw[:, 1], raw[:, 0], raw[:, 3]))]  # by timestamp, then user, then movie
    _, users = np.unique(raw[:, 0], return_inverse=True)
    _, items = np.unique(raw[:, 1], return_inverse=True)
    n_train = int(0.8 * len(raw))
    tu, ti, eu, ei = users[:n_train], items[:n_train], users[n_train:], items[n_train:]
    keep = np.isin(eu, np.unique(tu))
    return (tu.astype(np.int32), ti.astype(np.int32), eu[keep].astype(np.int32), ei[keep].astype(np.int32),
            int(users.max()) + 1, int(items.max()) + 1)


# ----------------------------------------------------------------------------- PyTorch peer


class TorchLightGCN:
    """The PyTorch peer, stepped one epoch at a time so that its epochs interleave with JAX's."""

    def __init__(self, tu, ti, num_users, num_items, seed=0, dim=64, layers=3, lr=1e-3, l2=1e-4, batch=2048,
                 rounds=4, device="cpu"):
        import torch

        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.keys = np.unique(tu.astype(np.int64) * num_items + ti)
        self.u_all = (self.keys // num_items).astype(np.int64)
        self.i_all = (self.keys % num_items).astype(np.int64)
        self.num_users, self.num_items, self.layers, self.l2, self.batch, self.rounds = (
            num_users, num_items, layers, l2, batch, rounds)
        n = num_users + num_items
        rows = np.concatenate([self.u_all, self.i_all + num_users])
        cols = np.concatenate([self.i_all + num_users, self.u_all])
        deg = np.bincount(rows, minlength=n).astype(np.float64)
        vals = 1.0 / np.sqrt(deg[rows] * deg[cols])
        order = np.lexsort((cols, rows))
        crow = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
        # int32 indices: MKL's CSR kernel runs faster with them than with int64.
        adj = torch.sparse_csr_tensor(torch.from_numpy(crow.astype(np.int32)),
                                      torch.from_numpy(cols[order].astype(np.int32)),
                                      torch.from_numpy(vals[order].astype(np.float32)), size=(n, n)).to(self.device)

        class SymSpMM(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return torch.sparse.mm(adj, x)

            @staticmethod
            def backward(ctx, g):
                return torch.sparse.mm(adj, g)  # A symmetric: A^T g = A g

        self.spmm = SymSpMM
        self.emb = torch.nn.Parameter((0.1 * torch.randn(n, dim)).to(self.device))
        self.opt = torch.optim.Adam([self.emb], lr=lr)

    def readout(self):
        x, total = self.emb, self.emb
        for _ in range(self.layers):
            x = self.spmm.apply(x)
            total = total + x
        return total / (self.layers + 1)

    def run_epoch(self) -> float:
        import torch

        e, batch, nu, ni = self.u_all.size, self.batch, self.num_users, self.num_items
        nb = math.ceil(e / batch)
        idx = self.rng.permutation(e)[np.arange(nb * batch) % e].reshape(nb, batch)
        bu, bi = self.u_all[idx], self.i_all[idx]
        bj = self.rng.integers(0, ni, bu.shape)
        for _ in range(self.rounds):
            hit = np.isin(bu * ni + bj, self.keys)
            bj = np.where(hit, self.rng.integers(0, ni, bu.shape), bj)
        bu_t, bi_t, bj_t = (torch.from_numpy(x).to(self.device) for x in (bu, bi + nu, bj + nu))
        total = torch.zeros((), device=self.device)  # summed on the device: no host sync per batch
        for b in range(nb):
            u, i, j = bu_t[b], bi_t[b], bj_t[b]
            final = self.readout()
            eu, ei, ej = final[u], final[i], final[j]
            diff = (eu * ei).sum(-1) - (eu * ej).sum(-1)
            loss = torch.nn.functional.softplus(-diff).mean()
            reg = 0.5 * (self.emb[u].pow(2).sum() + self.emb[i].pow(2).sum() + self.emb[j].pow(2).sum()) / batch
            loss = loss + self.l2 * reg
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach()
        return float(total) / nb  # blocks until the epoch is done

    def embeddings(self):
        import torch

        with torch.no_grad():
            final = self.readout().cpu().numpy()
        return final[: self.num_users], final[self.num_users:]


def best_torch_threads(num_users, num_items, tu, ti, candidates):
    """The torch thread count whose CSR product is fastest here (OpenMP threads suffer on a busy machine)."""
    import torch

    n = num_users + num_items
    rows = np.concatenate([tu, ti + num_users]).astype(np.int64)
    cols = np.concatenate([ti + num_users, tu]).astype(np.int64)
    order = np.lexsort((cols, rows))
    crow = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int32)
    adj = torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy(cols[order].astype(np.int32)),
                                  torch.ones(rows.size), size=(n, n)).to(torch.float32)
    x = torch.randn(n, 64)
    timings = {}
    for t in candidates:
        torch.set_num_threads(t)
        torch.sparse.mm(adj, x)
        reps = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(10):
                torch.sparse.mm(adj, x)
            reps.append((time.perf_counter() - t0) / 10)
        timings[t] = min(reps)
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    return best, timings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs trained by each side (default 50): one warm-up epoch, then pairs; "
                             "with --pairs given, pairs + 1")
    parser.add_argument("--propagation", default="auto", help="the JAX side's propagation (auto = native on CPU)")
    parser.add_argument("--jraph_epochs", type=int, default=2, help="epochs timed on the jraph (gather) path")
    parser.add_argument("--sparse_epochs", type=int, default=3, help="epochs timed on XLA's BCSR path")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = the fastest of 1..cores")
    harness.add_arguments(parser, pairs=None)
    args = parser.parse_args()
    if args.pairs is None:
        args.epochs = 50 if args.epochs is None else args.epochs
        args.pairs = args.epochs - 1
    elif args.epochs is None:
        args.epochs = args.pairs + 1
    if args.epochs != args.pairs + 1 or args.pairs < 1:
        raise SystemExit(f"--epochs {args.epochs} must be --pairs + 1 ({args.pairs} + 1) and at least 2")

    import torch
    import jax

    from rallrec_jax import parallel
    from rallrec_jax import metrics as M
    from rallrec_jax.retrieval import graph as G
    from rallrec_jax.retrieval import lightgcn as L

    tu, ti, eu, ei, nu, ni = load_ml1m_split(args.data)
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        best, timings = best_torch_threads(nu, ni, *M.dedupe_interactions(tu, ti, nu, ni),
                                           range(1, (os.cpu_count() or 1) + 1))
        print("torch CSR product ms by thread count: "
              + ", ".join(f"{t}: {1e3 * s:.1f}" for t, s in timings.items()) + f" -> {best}", flush=True)
    n_edges = np.unique(tu.astype(np.int64) * ni + ti).size
    print(f"ML-1M split: {nu} users, {ni} items, {n_edges} train pairs ({2 * n_edges} directed edges), "
          f"{eu.size} held-out pairs; backend {jax.default_backend()}, {jax.device_count()} device(s), "
          f"torch threads {torch.get_num_threads()}", flush=True)
    pop = M.popularity_metrics((tu, ti), (eu, ei), nu, ni, k=20)
    print(f"popularity: recall@20 {pop['recall@20']:.4f} ndcg@20 {pop['ndcg@20']:.4f}", flush=True)

    # Epoch 1 of each side is its warm-up (JAX's holds the compile), then pairs of (JAX epoch, torch epoch).
    mesh = parallel.make_mesh(devices=jax.devices()[:1])
    propagation = G.resolve_propagation(args.propagation)
    jax_run = L.LightGCNTrainer(tu, ti, nu, ni, L.LightGCNConfig(propagation=propagation), mesh=mesh)
    torch_run = TorchLightGCN(tu, ti, nu, ni)
    jax_losses, torch_losses = [], []

    def jax_epoch_():
        jax_losses.append(jax_run.run_epoch(len(jax_losses)))

    def torch_epoch_():
        torch_losses.append(torch_run.run_epoch())
        if len(torch_losses) % 10 == 0:
            print(f"epoch {len(torch_losses)}: loss jax {jax_losses[-1]:.4f} torch {torch_losses[-1]:.4f}", flush=True)

    report = harness.Report("bench_lightgcn", args)
    row = report.compare(f"LightGCN epoch ML-1M ({propagation})", harness.Side(f"jax/{propagation}", jax_epoch_),
                         harness.Side("torch", torch_epoch_), pairs=args.pairs)
    jax_times, torch_times = [row["ours_warmup_s"], *row["ours_s"]], [row["peer_warmup_s"], *row["peer_s"]]
    jax_epoch, torch_epoch = row["ours_median_s"], row["peer_median_s"]
    jm = jax_run.evaluate((eu, ei))
    tm = M.topk_metrics(*torch_run.embeddings(), (tu, ti), (eu, ei), k=20)
    print(f"jax  ({propagation} propagation, epoch in one jitted scan): first epoch {jax_times[0]:.2f}s (compile), "
          f"median {jax_epoch:.3f}s/epoch, loss {jax_losses[-1]:.4f}, recall@20 {jm['recall@20']:.4f}, "
          f"ndcg@20 {jm['ndcg@20']:.4f}", flush=True)
    print(f"torch (CSR sparse.mm, custom backward): median {torch_epoch:.3f}s/epoch, loss "
          f"{torch_losses[-1]:.4f}, recall@20 {tm['recall@20']:.4f}, ndcg@20 {tm['ndcg@20']:.4f}", flush=True)

    sparse_epoch = None
    if args.sparse_epochs > 0 and propagation != "sparse":
        scfg = L.LightGCNConfig(epochs=args.sparse_epochs + 1, propagation="sparse", eval_every=0)
        sp = L.train_lightgcn(tu, ti, nu, ni, scfg, mesh=mesh)
        sparse_epoch = statistics.median(m["seconds"] for m in sp.metrics[1:])
        print(f"jax BCSR (XLA's single-threaded sparse kernel) path: median {sparse_epoch:.3f}s/epoch", flush=True)
    jraph_epoch = None
    if args.jraph_epochs > 0:
        jcfg = L.LightGCNConfig(epochs=args.jraph_epochs + 1, propagation="jraph", eval_every=0)
        jr = L.train_lightgcn(tu, ti, nu, ni, jcfg, mesh=mesh)
        jraph_epoch = statistics.median(m["seconds"] for m in jr.metrics[1:])
        print(f"jax jraph (gather/segment_sum) path: median {jraph_epoch:.3f}s/epoch", flush=True)

    ratio = row["ratio_median"]
    rel = (jm["recall@20"] - tm["recall@20"]) / tm["recall@20"]
    print(f"RATIO torch/jax seconds per epoch: {ratio:.2f}x median over {args.pairs} pairs (min-max "
          f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f}; jax faster if > 1); "
          f"recall@20 after {args.epochs} epochs: jax {jm['recall@20']:.4f} vs torch {tm['recall@20']:.4f} "
          f"({100 * rel:+.1f}%)", flush=True)
    report.finish({"epochs": args.epochs, "jax_s_per_epoch": jax_epoch, "torch_s_per_epoch": torch_epoch,
                   "ratio": ratio, "propagation": propagation, "sparse_s_per_epoch": sparse_epoch,
                   "jraph_s_per_epoch": jraph_epoch, "jax": jm, "torch": tm, "popularity": pop,
                   "jax_times": jax_times, "torch_times": torch_times, "jax_losses": jax_losses,
                   "torch_losses": torch_losses})


if __name__ == "__main__":
    main()
