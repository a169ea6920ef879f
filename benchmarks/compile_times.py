"""Compile seconds of SmolLM2-135M's jitted programs: the scoring forward, the sampler's prefill and decode,
and the LoRA train step, each `jax.jit(...).lower(...).compile()` once in a fresh process (no persistent cache;
`--persistent-cache` runs two fresh processes on one new cache folder: what a first run and every later one pay).

Only shapes matter: scoring, prefill and decode lower with abstract parameters (`nnx.eval_shape`); the train
step needs a concrete model (random weights). Shapes: scoring B=8, L=256 (head at the last real token);
sampler P=4 prompts of a 256-token bucket, K=5 samples, 128 new tokens, top-p sampling; train step LoRA
r=8 on q/v, 2 micro-batches of 4 rows of 256 tokens, remat "attention" (the default).

`--baseline DIR` measures the same programs of another checkout (e.g. `git archive main | tar -x -C DIR`) in
its own process, right before the current code, and prints both columns with their ratio; timings on a
shared machine are noisy, so compare the ratio, not seconds across runs; CPU seconds move far less than wall.

    python benchmarks/compile_times.py [--baseline /tmp/main_copy | --persistent-cache]
                                       [--parts scoring,prefill,decode,train]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PARTS = ("scoring", "prefill", "decode", "train")


def _timed_compile(jitted, *args, **kwargs) -> dict[str, float]:
    """Seconds of lower + compile: CPU time of this process (all compiler threads; far less sensitive to
    other users of a shared machine than wall time) and wall time."""
    c0, t0 = time.process_time(), time.perf_counter()
    lowered = jitted.lower(*args, **kwargs)
    c1 = time.process_time()
    lowered.compile()
    c2, t2 = time.process_time(), time.perf_counter()
    return {"lower": c1 - c0, "compile": c2 - c1, "total": c2 - c0, "wall": t2 - t0}


def measure(parts: list[str]) -> dict[str, dict[str, float]]:
    """Runs in the child process: the code under test is whatever `rallrec_jax` imports from."""
    import functools
    import inspect

    import gguf
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from rallrec_jax import assets, parallel
    from rallrec_jax.llm import sampler as sampler_lib
    from rallrec_jax.llm import scoring
    from rallrec_jax.llm.config import LlmConfig
    from rallrec_jax.llm.model import Llm

    if os.environ.get("COMPILE_TIMES_PERSISTENT"):  # --persistent-cache: the binaries' cache, as they enable it
        from rallrec_jax import xla_cache

        xla_cache.enable()
    cfg = LlmConfig.from_gguf(gguf.GGUFReader(str(assets.smollm2_gguf())))
    jax.jit(lambda x: x + 1).lower(1.0).compile()  # the process's one-time compiler set-up, not counted
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Llm(cfg, rngs=nnx.Rngs(0))))
    out: dict[str, dict[str, float]] = {}
    i32 = jnp.int32
    if "scoring" in parts:
        b, length = 8, 256
        tok = jax.ShapeDtypeStruct((b, length), i32)
        out["scoring B=8 L=256"] = _timed_compile(scoring._last_logits, graphdef, state, tok, tok)
    p, k, lp, gen = 4, 5, 256, 128
    prefill_kw = dict(mesh=None, num_samples=k, gen_len=gen)
    ptok = jax.ShapeDtypeStruct((p, lp), i32)
    if "prefill" in parts:
        out["prefill P=4 K=5 Lp=256"] = _timed_compile(sampler_lib._prefill, graphdef, state, ptok, ptok, **prefill_kw)
    if "decode" in parts:
        cache, logits, key_mask, next_pos = jax.eval_shape(
            functools.partial(sampler_lib._prefill, graphdef, **prefill_kw), state, ptok, ptok)
        key = jax.eval_shape(lambda: jax.random.key(0))
        scalar_i, scalar_f = jax.ShapeDtypeStruct((), i32), jax.ShapeDtypeStruct((), jnp.float32)
        flags = dict(eos_ids=(cfg.vocab_size,), pad_id=0, greedy=False, top_k=0, use_top_p=True)
        if "lp" in inspect.signature(sampler_lib._decode).parameters:  # older sampler: the prompt bucket is static
            flags["lp"] = lp
        out["decode P*K=20 S=384"] = _timed_compile(
            sampler_lib._decode, graphdef, state, cache, key_mask, logits, next_pos, key, scalar_i, scalar_f,
            scalar_f, **flags)
    if "train" in parts:
        from rallrec_jax.generation import batches as batch_lib
        from rallrec_jax.generation import examples as ex_lib
        from rallrec_jax.generation import trainer as trainer_lib
        from rallrec_jax.llm import lora
        from rallrec_jax.llm.model import create_model

        model = create_model(cfg, seed=0)
        lora.apply_lora(model, lora.LoraConfig(), rngs=nnx.Rngs(0))
        mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
        trainer = trainer_lib.Trainer(model, trainer_lib.TrainSettings(effective_batch=8, micro_batch=4), 10, mesh)
        rng = np.random.default_rng(0)
        exs = [ex_lib.Example("train", i, "simple", tuple(rng.integers(10, 40000, 250).tolist()), (10539, 2), 1, 0, 0)
               for i in range(8)]
        batch, length = batch_lib.global_batch(exs, list(range(8)), 2, 0, 16)
        lora_state, opt = trainer.initial_state()
        out[f"LoRA train step 2x4 L={length}"] = _timed_compile(trainer._step, lora_state, opt, trainer.frozen,
                                                               trainer.put(batch), jnp.int32(0))
    return out


def run_child(code_root: pathlib.Path, parts: list[str], cache: pathlib.Path | None = None
              ) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(code_root), "JAX_PLATFORMS": "cpu"}
    if cache is not None:
        env.update(COMPILE_TIMES_PERSISTENT="1", RALLREC_XLA_CACHE=str(cache))
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", "--parts", ",".join(parts)]
    done = subprocess.run(cmd, env=env, cwd=str(code_root), capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"measuring {code_root} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--baseline", default="", help="another checkout to measure first, in its own process")
    ap.add_argument("--persistent-cache", action="store_true",
                    help="two fresh processes sharing a new persistent XLA cache (rallrec_jax/xla_cache.py): the "
                         "first compiles and writes each program, the second loads it")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"--parts: unknown {unknown}; known {PARTS}")
    if args.persistent_cache and args.baseline:
        raise SystemExit("--baseline and --persistent-cache measure different things (another checkout's first "
                         "compile; this checkout's cached reload): give one of them per run")
    if args.child:
        print(json.dumps(measure(parts)))
        return
    import jax

    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    if args.persistent_cache:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            first = run_child(ROOT, parts, pathlib.Path(tmp))
            second = run_child(ROOT, parts, pathlib.Path(tmp))
        print(f"{'program':32s} {'compiled':>8s} {'loaded':>7s} {'ratio':>6s} {'wall compiled':>14s} {'loaded':>7s}"
              "   (lower + compile, CPU seconds: a first process with an empty persistent cache, then a second)")
        for name, a_, b_ in ((n, first[n], second[n]) for n in first):
            print(f"{name:32s} {a_['total']:8.2f} {b_['total']:7.2f} {a_['total'] / b_['total']:5.1f}x "
                  f"{a_['wall']:14.2f} {b_['wall']:7.2f}")
        return
    base = run_child(pathlib.Path(args.baseline).resolve(), parts) if args.baseline else None
    cur = run_child(ROOT, parts)
    if base is None:
        print(f"{'program':32s} {'lower':>7s} {'compile':>8s} {'total':>7s} {'wall':>7s}   (CPU seconds)")
        for name, t in cur.items():
            print(f"{name:32s} {t['lower']:7.2f} {t['compile']:8.2f} {t['total']:7.2f} {t['wall']:7.2f}")
        return
    print(f"{'program':32s} {'before':>7s} {'after':>7s} {'ratio':>6s} {'wall before':>12s} {'after':>6s}"
          f"   (lower + compile, CPU seconds; before: {args.baseline})")
    for (name, after), (bname, before) in zip(cur.items(), base.items()):
        print(f"{name:32s} {before['total']:7.2f} {after['total']:7.2f} {before['total'] / after['total']:5.2f}x "
              f"{before['wall']:12.2f} {after['wall']:6.2f}" + ("" if bname == name else f"   (before: {bname})"))


if __name__ == "__main__":
    main()
