"""Shared timing harness of benchmarks/: ours against a peer as repeated interleaved pairs, with the machine's
state measured beside every ratio.

Why pairs: on a shared machine one ratio taken once moved from 2.3x to 0.8x with the load (issue 15). Each
benchmark therefore warms both sides up once, then runs N pairs (ours, peer, ours, peer, ...), so that load
from other processes hits both sides alike, and reports each side's median, the ratio's median (peer seconds
over ours: > 1 means ours is faster) and its spread over the pairs (min-max and the interquartile range).
Beside every ratio it prints what this machine delivered in the same run, measured right before and right
after the pairs: the float32 2048x2048 matmul rate in numpy and in jax, the memory bandwidth of a large array
copy and reduction, and the load average. A ratio whose matmul rate moved a lot between before and after is
one to distrust.

    from benchmarks import harness            # or `import harness` from a script in benchmarks/
    report = harness.Report("bench_x", args)
    report.compare("step B=4", harness.Side("jax", ours_fn), harness.Side("torch", peer_fn),
                   pairs=args.pairs, work=tokens_per_call, unit="tok")
    report.finish()                            # prints the table, writes --json if given
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np


# ----------------------------------------------------------------------------- timing
@dataclasses.dataclass(frozen=True)
class Measured:
    """Returned by a side's callable when it timed itself (e.g. a worker process that reports its own step
    seconds): the harness then records `seconds` instead of its own wall clock around the call."""

    seconds: float
    value: object = None


@dataclasses.dataclass
class Side:
    """One side of a comparison. `run` does one unit of the work and returns when it is finished (jax
    callers block on the result); `warmup` (default: `run`) is called once before the pairs, so a side
    whose full run is long can warm up on a smaller piece of the work that compiles the same programs."""

    name: str
    run: Callable[[], object]
    warmup: Callable[[], object] | None = None


def timed_call(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call; a `Measured` result supplies its own seconds."""
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    if isinstance(out, Measured):
        return out.seconds, out.value
    return wall, out


def quartiles(xs: Sequence[float]) -> tuple[float, float]:
    """(Q1, Q3) with numpy's linear interpolation; for one value both are that value."""
    a = np.asarray(xs, np.float64)
    return float(np.percentile(a, 25)), float(np.percentile(a, 75))


@dataclasses.dataclass
class PairStats:
    """Seconds of each side per pair (index-aligned) and of their warm-up calls."""

    ours: str
    peer: str
    ours_s: list[float]
    peer_s: list[float]
    ours_warmup_s: float | None = None
    peer_warmup_s: float | None = None

    @property
    def ratios(self) -> list[float]:
        """peer seconds / ours seconds per pair (> 1: ours faster)."""
        return [p / o for o, p in zip(self.ours_s, self.peer_s)]

    def summary(self, work: float | None = None) -> dict:
        r = self.ratios
        q1, q3 = quartiles(r)
        out = {"ours": self.ours, "peer": self.peer, "pairs": len(r),
               "ours_median_s": statistics.median(self.ours_s), "peer_median_s": statistics.median(self.peer_s),
               "ratio_median": statistics.median(r), "ratio_min": min(r), "ratio_max": max(r),
               "ratio_q1": q1, "ratio_q3": q3, "ours_s": self.ours_s, "peer_s": self.peer_s, "ratios": r,
               "ours_warmup_s": self.ours_warmup_s, "peer_warmup_s": self.peer_warmup_s}
        if work is not None:
            out["work_per_call"] = work
            out["ours_rate"] = work / out["ours_median_s"]
            out["peer_rate"] = work / out["peer_median_s"]
        return out


def run_pairs(ours: Side, peer: Side, pairs: int, warmup: bool = True) -> PairStats:
    """Warm-up of each side (ours first), then `pairs` interleaved pairs (ours, peer)."""
    if pairs < 1:
        raise ValueError(f"--pairs must be >= 1, got {pairs}")
    stats = PairStats(ours.name, peer.name, [], [])
    if warmup:
        stats.ours_warmup_s = timed_call(ours.warmup or ours.run)[0]
        stats.peer_warmup_s = timed_call(peer.warmup or peer.run)[0]
    for _ in range(pairs):
        stats.ours_s.append(timed_call(ours.run)[0])
        stats.peer_s.append(timed_call(peer.run)[0])
    return stats


# ----------------------------------------------------------------------------- the machine's state
def _median_seconds(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm (and compile)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops_numpy(n: int = 2048, reps: int = 5) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return 2 * n ** 3 / _median_seconds(lambda: a @ b, reps) / 1e9


def matmul_gflops_jax(n: int = 2048, reps: int = 5, device=None) -> float:
    """float32 GFLOP/s of a jitted n x n matmul on `device` (default: jax's first device; on a GPU at
    jax's default precision, i.e. TF32 where the chip has it)."""
    import jax
    import jax.numpy as jnp

    device = device or jax.devices()[0]
    a = jax.device_put(jax.random.normal(jax.random.key(0), (n, n), jnp.float32), device)
    b = jax.device_put(jax.random.normal(jax.random.key(1), (n, n), jnp.float32), device)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * n ** 3 / _median_seconds(lambda: f(a, b).block_until_ready(), reps) / 1e9


def host_bandwidth_gbs(megabytes: int = 256, reps: int = 5) -> dict[str, float]:
    """GB/s of a large float64 array copy (bytes read + written) and of a sum over it (bytes read)."""
    src = np.ones(megabytes * 2 ** 20 // 8, np.float64)
    dst = np.empty_like(src)
    copy = _median_seconds(lambda: np.copyto(dst, src), reps)
    reduce = _median_seconds(lambda: src.sum(), reps)
    return {"copy_gbs": 2 * src.nbytes / copy / 1e9, "reduce_gbs": src.nbytes / reduce / 1e9}


def device_bandwidth_gbs(megabytes: int = 2048, reps: int = 5, device=None) -> dict[str, float]:
    """GB/s of a jitted copy (x + 1: every byte read and written once) and of a sum on a jax device."""
    import jax
    import jax.numpy as jnp

    device = device or jax.devices()[0]
    n = megabytes * 2 ** 20 // 4
    x = jax.device_put(jnp.ones((n,), jnp.float32), device)
    add = jax.jit(lambda x: x + 1.0)
    red = jax.jit(lambda x: jnp.sum(x))
    copy = _median_seconds(lambda: add(x).block_until_ready(), reps)
    reduce = _median_seconds(lambda: red(x).block_until_ready(), reps)
    return {"copy_gbs": 2 * n * 4 / copy / 1e9, "reduce_gbs": n * 4 / reduce / 1e9, "megabytes": megabytes}


def machine_state(quick: bool = False) -> dict:
    """This machine right now: float32 matmul GFLOP/s (numpy, jax), host bandwidth GB/s, load average."""
    reps = 3 if quick else 5
    out = {"time": time.time(), "loadavg": list(os.getloadavg()),
           "matmul_numpy_gflops": matmul_gflops_numpy(reps=reps), "matmul_jax_gflops": matmul_gflops_jax(reps=reps)}
    out.update({f"host_{k}": v for k, v in host_bandwidth_gbs(128 if quick else 256, reps).items()})
    return out


def machine_info() -> dict:
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": np.__version__}
    try:
        import jax

        info.update({"jax": jax.__version__, "jax_backend": jax.default_backend(),
                     "jax_device": jax.devices()[0].device_kind})
    except Exception as e:  # noqa: BLE001 - recorded, never fatal
        info["jax"] = f"unavailable: {e}"
    if "torch" in sys.modules:
        import torch

        info.update({"torch": torch.__version__, "torch_threads": torch.get_num_threads()})
    return info


# ----------------------------------------------------------------------------- reporting
def add_arguments(parser: argparse.ArgumentParser, pairs: int = 5) -> argparse.ArgumentParser:
    """--pairs and --json, the flags every kernel benchmark shares."""
    parser.add_argument("--pairs", type=int, default=pairs,
                        help="interleaved (ours, peer) pairs after one warm-up each")
    parser.add_argument("--json", default=None, help="also write the rows, machine state and arguments here")
    return parser


def fmt_seconds(s: float) -> str:
    return f"{s * 1e3:,.1f} ms" if s < 1 else f"{s:,.2f} s"


def _span(a: float, b: float, fmt: str = "{:.0f}") -> str:
    lo, hi = sorted((a, b))
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


class Report:
    """Rows of (ours vs peer) comparisons, each with the machine's state before and after its pairs."""

    def __init__(self, title: str, args: argparse.Namespace | None = None, quick_machine: bool = False):
        self.title, self.args, self.quick = title, args, quick_machine
        self.rows: list[dict] = []
        self.info = machine_info()

    def compare(self, name: str, ours: Side, peer: Side, pairs: int, work: float | None = None,
                unit: str = "", extra: dict | None = None) -> dict:
        """Runs the pairs between two measurements of the machine and records one row."""
        before = machine_state(self.quick)
        stats = run_pairs(ours, peer, pairs)
        after = machine_state(self.quick)
        return self.add(name, stats, work, unit, before, after, extra)

    def add(self, name: str, stats: PairStats, work: float | None, unit: str, before: dict, after: dict,
            extra: dict | None = None) -> dict:
        row = {"name": name, "unit": unit, **stats.summary(work), "machine_before": before,
               "machine_after": after, **(extra or {})}
        self.rows.append(row)
        print(self.format_row(row), flush=True)
        return row

    @staticmethod
    def format_row(row: dict) -> str:
        b, a = row["machine_before"], row["machine_after"]
        if row.get("work_per_call") is not None:
            sides = (f"{row['ours']} {row['ours_rate']:,.1f} {row['unit']}/s, {row['peer']} "
                     f"{row['peer_rate']:,.1f} {row['unit']}/s")
        else:
            sides = (f"{row['ours']} {fmt_seconds(row['ours_median_s'])}, "
                     f"{row['peer']} {fmt_seconds(row['peer_median_s'])}")
        return (f"{row['name']}: {sides} | ratio {row['ratio_median']:.2f}x (min-max {row['ratio_min']:.2f}-"
                f"{row['ratio_max']:.2f}, IQR {row['ratio_q1']:.2f}-{row['ratio_q3']:.2f}, {row['pairs']} pairs) | "
                f"matmul f32 numpy {_span(b['matmul_numpy_gflops'], a['matmul_numpy_gflops'])} / jax "
                f"{_span(b['matmul_jax_gflops'], a['matmul_jax_gflops'])} GFLOP/s, copy "
                f"{_span(b['host_copy_gbs'], a['host_copy_gbs'], '{:.1f}')} GB/s, reduce "
                f"{_span(b['host_reduce_gbs'], a['host_reduce_gbs'], '{:.1f}')} GB/s, load "
                f"{b['loadavg'][0]:.2f}->{a['loadavg'][0]:.2f}")

    def table(self) -> str:
        head = ("| benchmark | ours | peer | ratio (median) | min-max | IQR | pairs | matmul f32 numpy / jax "
                "GFLOP/s | copy GB/s | load |")
        lines = [head, "|" + "---|" * 10]
        for r in self.rows:
            b, a = r["machine_before"], r["machine_after"]
            if r.get("work_per_call") is not None:
                ours, peer = f"{r['ours_rate']:,.1f} {r['unit']}/s", f"{r['peer_rate']:,.1f} {r['unit']}/s"
            else:
                ours, peer = fmt_seconds(r["ours_median_s"]), fmt_seconds(r["peer_median_s"])
            lines.append(
                f"| {r['name']} | {r['ours']} {ours} | {r['peer']} {peer} | {r['ratio_median']:.2f}x | "
                f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f} | {r['ratio_q1']:.2f}-{r['ratio_q3']:.2f} | {r['pairs']} | "
                f"{_span(b['matmul_numpy_gflops'], a['matmul_numpy_gflops'])} / "
                f"{_span(b['matmul_jax_gflops'], a['matmul_jax_gflops'])} | "
                f"{_span(b['host_copy_gbs'], a['host_copy_gbs'], '{:.1f}')} | "
                f"{b['loadavg'][0]:.2f}->{a['loadavg'][0]:.2f} |")
        return "\n".join(lines)

    def finish(self, extra: dict | None = None) -> dict:
        """Prints the table; writes everything to --json when the arguments name a file."""
        print(f"\n{self.title} (ratio = peer seconds / ours seconds: > 1 means ours is faster)")
        print(self.table(), flush=True)
        out = {"title": self.title, "info": self.info, "args": vars(self.args) if self.args else None,
               "rows": self.rows, **(extra or {})}
        path = getattr(self.args, "json", None) if self.args else None
        if path:
            write_json(path, out)
            print(f"wrote {path}")
        return out


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomic JSON write (a reader never sees half a file)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_jsonable)
    os.replace(tmp, path)


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
