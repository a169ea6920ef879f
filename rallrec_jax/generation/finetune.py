"""LoRA instruction tuning of the general LLM M_G (paper-spec 3.2): the stage and its resumable loop.

Recipe (official `finetune.py`): LoRA r=8, alpha=16, dropout 0.05 on q_proj and v_proj; loss = mean
cross-entropy over the answer tokens only; AdamW (0.9, 0.999), eps 1e-8, weight decay 0, lr 5e-4 decaying
linearly to 0, no warm-up; effective batch 256; early stopping (patience 5) with the best adapters kept.
Deviation (spec 6.4 bug 7): early stopping reads the VALIDATION split, never test.

Where the pieces live: the step (loss, optimizer, gradient accumulation in one jitted program) is
`trainer.py`; which rows each step takes and their arrays, `batches.py`; the stage's inputs (model,
tokenizer, mesh, data, orders, run folder), `inputs.py`; early stopping, `early_stopping.py`. This module
is the loop that joins them: validation, best-adapter keeping, checkpoints, NaN detection, metrics.

Determinism and resumption: the data order is a permutation per (seed, epoch); every micro-batch's dropout
key is fold_in(seed, step, micro) and set into the model's RNG streams inside the step, so a run resumed from
a checkpoint (LoRA + optimizer state + step + early-stopping state, orbax, absolute paths) replays exactly
the same updates as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import time
from collections.abc import Mapping, Sequence

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from rallrec_jax import artifacts, checkpoint, console
from rallrec_jax import settings as settings_lib
from rallrec_jax.data import sampling
from rallrec_jax.generation import examples as ex_lib
from rallrec_jax.generation import learning_curve, training_rows
from rallrec_jax.generation.batches import answer_length, examples_seen, global_batch, step_rows, steps_per_epoch
from rallrec_jax.generation.early_stopping import METRICS, EarlyStopping
from rallrec_jax.generation.inputs import lora_config, run_dir, run_identity, stage_inputs
from rallrec_jax.generation.trainer import Trainer, TrainSettings
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm.model import Llm


# ----------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    """`config.finetune` (configs/base_generation.py, where each field is explained), typed and read once at the
    stage's top (`from_config`).

    `train` holds the fields the Trainer's step depends on; it stays its own dataclass because the run identity
    hashes exactly its fields (identity.json), so a run recorded before these settings existed still resumes.
    The rest says which examples to build, how long to train, how to validate and when to stop."""
    train: TrainSettings = TrainSettings()
    run_name: str = ""  # read from the ConfigDict by inputs.run_dir (it names the run folder)
    k_history: int = 30  # K most recent items of the `simple` order
    max_prompt_tokens: int = 2048  # 0 = no limit
    sample_size: int = 8192  # train rows drawn with random.seed(sample_seed) (training_rows.py)
    sample_seed: int = 42
    train_size: int = 0  # the first N prompts of the (mixed) set; 0 = all
    epochs: int = 20
    max_steps: int = 0  # 0 = epochs * ceil(N / effective_batch)
    eval_every: int = 0  # steps between validations; 0 = once per epoch
    eval_size: int = 1000  # validation rows early stopping reads, drawn as eval_sample (data/sampling.py)
    eval_sample: str = "stratified"
    eval_user_cap: int = 10
    eval_seed: int = 0
    eval_order: str = "simple"
    early_stopping_metric: str = "eval_loss"  # or "eval_auc"
    patience: int = 5  # evaluations without improvement; 0 = never stop early
    checkpoint_every: int = 0  # extra checkpoints between evaluations; 0 = only at evaluations and the end
    progress: bool = True

    @classmethod
    def from_config(cls, config) -> FinetuneSettings:
        """From the flat `config.finetune` section: its TrainSettings fields go to `train`, the rest here; a
        field neither knows is an error naming it."""
        if isinstance(config, cls):
            return config
        values = settings_lib.config_values(config)
        step_fields = settings_lib.field_names(TrainSettings)
        settings_lib.check_known(values, step_fields | settings_lib.field_names(cls) - {"train"}, "finetune")
        train = TrainSettings(**{k: v for k, v in values.items() if k in step_fields})
        return cls(train=train, **{k: v for k, v in values.items() if k not in step_fields})

    def loop(self, num_examples: int) -> LoopConfig:
        """The loop over `num_examples` training examples: `max_steps`, else `epochs` passes; one validation
        per epoch unless `eval_every` says otherwise."""
        epoch = steps_per_epoch(num_examples, self.train.effective_batch)
        return LoopConfig(total_steps=self.max_steps or self.epochs * epoch, eval_every=self.eval_every or epoch,
                          checkpoint_every=self.checkpoint_every, patience=self.patience,
                          metric=self.early_stopping_metric, progress=self.progress)


# ----------------------------------------------------------------------------- logging
class MetricsLog:
    """JSON lines + TensorBoard event files (process 0 only)."""

    def __init__(self, directory: pathlib.Path, enabled: bool):
        self.enabled = enabled
        self.path = directory / "metrics.jsonl"
        self.tb = None
        if enabled:
            directory.mkdir(parents=True, exist_ok=True)
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(directory / "tb"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        step = int(record["step"])
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ----------------------------------------------------------------------------- the training loop
@dataclasses.dataclass
class LoopConfig:
    total_steps: int
    eval_every: int  # 0 = no evaluation
    checkpoint_every: int  # 0 = no periodic checkpoints
    patience: int  # evaluations without improvement before stopping (0 = never stop early)
    metric: str = "eval_loss"  # or "eval_auc"
    log_every: int = 1
    progress: bool = True

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"finetune.early_stopping_metric={self.metric!r} must be 'eval_loss' or 'eval_auc'")
        if self.total_steps < 1:
            raise ValueError(f"total steps {self.total_steps} must be >= 1")


def _flat(tree) -> dict[str, jax.Array]:
    return {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(tree))}


def _unflat(template, flat: Mapping[str, jax.Array]):
    leaves = [flat[f"{i:05d}"] for i in range(len(flat))]
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def examples_identity(examples: Sequence[ex_lib.Example]) -> dict:
    """{count, sha256} over every example's split, row, order, token ids and label: what the run learns from."""
    def chunks():
        for e in examples:
            yield json.dumps([e.split, int(e.index), e.order, int(e.label)]).encode()
            yield np.asarray(e.prompt_ids, np.int64).tobytes() + b"|" + np.asarray(e.answer_ids, np.int64).tobytes()

    return {"count": len(examples), "sha256": artifacts.digest(chunks())}


def loop_identity(trainer: Trainer, loop: LoopConfig, train_examples: Sequence[ex_lib.Example],
                  eval_examples: Sequence[ex_lib.Example], extra: Mapping | None = None) -> dict:
    """Everything a run's updates depend on: the caller's part (`extra`: model and data files, LoRA layout,
    config), the optimiser and step settings, the schedule's length, early stopping, and the examples."""
    return {"run": artifacts.plain(dict(extra or {})), "settings": dataclasses.asdict(trainer.settings),
            "total_steps": loop.total_steps, "eval_every": loop.eval_every, "patience": loop.patience,
            "metric": loop.metric, "examples": examples_identity(train_examples),
            "validation": examples_identity(eval_examples)}


def check_resume_identity(run_dir: pathlib.Path, identity: Mapping) -> None:
    """A run folder's checkpoints are resumed only by a run of the same identity (`identity.json`); anything
    else is an error naming what changed, because resuming would report the old run's adapters as this one's."""
    path = run_dir / "identity.json"
    if not path.is_file():
        raise ValueError(f"{run_dir / 'checkpoints'} holds checkpoints but {path}, the record of what they were "
                         f"trained with, is missing (a run made before runs recorded it?); delete {run_dir} to "
                         "train again")
    try:
        stored = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is unreadable ({exc}); delete {run_dir} to train again") from None
    changed = artifacts.differences(stored, json.loads(json.dumps(identity, default=str)))
    if changed:
        old, new = stored.get("examples", {}).get("count"), identity["examples"]["count"]
        count = f"the checkpoints were made with {old} training examples, this run has {new}; " if old != new else ""
        raise ValueError(
            f"{run_dir}: {count}its checkpoints were trained with other settings than this run, so resuming them "
            f"would report the old run's adapters as this one's. Changed: {'; '.join(changed[:8])}"
            + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
            + f". Use another finetune.run_name or workdir, or delete {run_dir} to train this run there.")


def _align_best(trainer: Trainer, best_dir: pathlib.Path, mgr, abstract, start: int, best_step: int, lora) -> None:
    """Makes `best/` hold the adapters of the resumed state's best step: adapters of a later step (written just
    before a kill, or by steps a damaged checkpoint lost) are dropped, since the replayed steps write them again;
    damaged or missing ones are rebuilt from the checkpoint of that step where it is kept (else the replay must
    write a new best, which `train_loop` checks at its end)."""
    if not best_dir.is_dir() and best_step < 0:
        return
    bmgr = checkpoint.manager(best_dir, max_to_keep=1)
    try:
        for step in sorted(bmgr.all_steps()):
            if step > start:
                logging.warning("finetune: best adapters of step %d are newer than the resumed step %d; dropped "
                                "(the replayed steps write them again)", step, start)
                bmgr.delete(step)
            else:
                reason = checkpoint.step_damage(bmgr, step)
                if reason is not None:
                    moved = checkpoint.quarantine(bmgr, step)
                    logging.warning("finetune: best adapters %s are damaged (%s); moved to %s",
                                    best_dir / str(step), reason, moved)
        if best_step < 0 or best_step in bmgr.all_steps():
            return
        if best_step not in mgr.all_steps() or checkpoint.step_damage(mgr, best_step) is not None:
            logging.warning("finetune: the best adapters of step %d are not under %s and no checkpoint of that step "
                            "is kept; the replayed steps must write a better one", best_step, best_dir)
            return
        for step in list(bmgr.all_steps()):
            bmgr.delete(step)
    finally:
        bmgr.close()
    best = _unflat(lora, checkpoint.restore(mgr, abstract, best_step)["lora"])
    nnx.update(trainer.model, trainer._copy(best))
    checkpoint.save_adapters(best_dir, best_step, trainer.model, max_to_keep=1)
    logging.warning("finetune: rebuilt the best adapters of step %d under %s from its checkpoint", best_step, best_dir)


def data_position(step: int, num_examples: int, settings: TrainSettings) -> dict[str, np.ndarray]:
    """Where the data stream stands after `step` updates (the next batch is (epoch, batch) of the (seed, epoch)
    permutation), with what defines that stream: the checkpoint's "position"."""
    epoch, within = divmod(step, steps_per_epoch(num_examples, settings.effective_batch))
    return {k: np.asarray(v, np.int64) for k, v in {
        "step": step, "epoch": epoch, "batch_in_epoch": within, "num_examples": num_examples,
        "effective_batch": settings.effective_batch, "seed": settings.seed}.items()}


def _state_tree(lora, opt_state, track, position) -> dict:
    """The checkpoint tree: the keys every run writes and resumes ("lora", "opt", "track", "position")."""
    return {"lora": _flat(lora), "opt": _flat(opt_state), "track": track, "position": position}


def _resume(trainer: Trainer, mgr, run_dir: pathlib.Path, best_dir: pathlib.Path, lora, opt_state,
            stopping: EarlyStopping, identity: Mapping, num_examples: int) -> tuple[int, nnx.State, optax.OptState]:
    """(step, adapters, optimizer state) of the newest good checkpoint, with `stopping` restored and `best/`
    aligned to it; an error when the checkpoints belong to another run or another data stream."""
    s = trainer.settings
    check_resume_identity(run_dir, identity)
    abstract = _state_tree(lora, opt_state, EarlyStopping.abstract_arrays(), data_position(0, num_examples, s))
    start, restored = checkpoint.restore_newest_good(mgr, abstract)
    lora = _unflat(lora, restored["lora"])
    opt_state = _unflat(opt_state, restored["opt"])
    stopping.restore(restored["track"])
    start = int(start)
    pos = restored["position"]
    if int(pos["num_examples"]) != num_examples or int(pos["effective_batch"]) != s.effective_batch:
        raise ValueError(
            f"{run_dir / 'checkpoints'}: the checkpoint was made with {int(pos['num_examples'])} training examples "
            f"and effective batch {int(pos['effective_batch'])}, this run has {num_examples} and "
            f"{s.effective_batch}; its data position would not match. Use another run_name or workdir.")
    _align_best(trainer, best_dir, mgr, abstract, start, stopping.best_step, lora)
    logging.info("finetune: resumed from step %d (%s)", start, run_dir / "checkpoints")
    return start, lora, opt_state


def _check_finite(loss: float, grad_norm: float, step: int, epoch: int, within: int, mgr,
                  ckpt_dir: pathlib.Path) -> None:
    """Stops the run on a non-finite loss or gradient, naming the step and the last good checkpoint. Steps are
    numbered 1.. as in metrics.jsonl (checkpoint k = state after k updates); the bad state is never saved."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    last = mgr.latest_step()
    raise FloatingPointError(
        f"finetune: the training loss is {loss} (gradient norm {grad_norm}) at step {step + 1} "
        f"(epoch {epoch}, batch {within}); stopped. The last good checkpoint is "
        + (f"step {last} under {ckpt_dir}" if last is not None else "none (no checkpoint was written)"))


def _evaluate_and_keep_best(trainer: Trainer, lora, eval_examples: Sequence[ex_lib.Example], pad_id: int,
                            loop: LoopConfig, stopping: EarlyStopping, step: int, best_dir: pathlib.Path,
                            log: MetricsLog, seen: int) -> dict:
    """Validates the adapters of `step` (after `seen` training examples), updates early stopping, writes them
    to `best/` when they are the best so far, and logs the evaluation. Returns the evaluation's metrics."""
    result = trainer.evaluate(lora, eval_examples, answer_length(eval_examples), pad_id)
    value = result[loop.metric] if loop.metric in result else math.nan
    if stopping.update(value, step):
        nnx.update(trainer.model, trainer._copy(lora))
        checkpoint.save_adapters(best_dir, step, trainer.model, max_to_keep=1)
    log.write({"step": step, **result, "examples_seen": seen, "best_step": stopping.best_step,
               "evals_without_improvement": stopping.bad})
    return result


def train_loop(trainer: Trainer, train_examples: Sequence[ex_lib.Example], eval_examples: Sequence[ex_lib.Example],
               loop: LoopConfig, run_dir: str | os.PathLike, pad_id: int, stop_at: int | None = None,
               identity: Mapping | None = None) -> dict:
    """Trains from the latest checkpoint under `run_dir/checkpoints` (or from scratch) to `loop.total_steps`,
    with periodic validation, early stopping, best-adapter keeping and NaN detection.

    `stop_at` ends the loop after that many global steps (a pre-emption in tests, or a time box) with a
    checkpoint written, so a later call resumes. `identity` is what the caller knows the run depends on (model
    and data files, LoRA layout, config); with the settings and examples it is written to `identity.json` and a
    resume with any other is an error naming the difference. A damaged newest checkpoint is reported and the
    previous good one resumed. Returns a summary dict (also written to result.json)."""
    run_dir = checkpoint.absolute(run_dir)
    ckpt_dir, best_dir = run_dir / "checkpoints", run_dir / "best"
    s = trainer.settings
    if not train_examples:
        raise ValueError("no training examples")
    answer_len = answer_length(train_examples)
    is_main = jax.process_index() == 0
    log = MetricsLog(run_dir, is_main)
    mgr = checkpoint.manager(ckpt_dir, max_to_keep=2)
    lora, opt_state = trainer.initial_state()
    stopping = EarlyStopping.for_metric(loop.metric, loop.patience)
    start = 0
    full_identity = loop_identity(trainer, loop, train_examples, eval_examples, identity)
    if mgr.latest_step() is not None:
        start, lora, opt_state = _resume(trainer, mgr, run_dir, best_dir, lora, opt_state, stopping, full_identity,
                                         len(train_examples))
    elif is_main:
        artifacts.atomic_write_json(run_dir / "identity.json", full_identity)

    def save(step: int):
        checkpoint.save(mgr, step, _state_tree(lora, opt_state, stopping.to_arrays(),
                                               data_position(step, len(train_examples), s)))

    end = loop.total_steps if stop_at is None else min(loop.total_steps, int(stop_at))
    bar = console.progress(loop.total_steps, "finetune", initial=start, unit="step", enabled=loop.progress)
    step = start
    last_eval: dict = {}
    try:
        while step < end and not stopping.done:
            rows, epoch, within = step_rows(len(train_examples), s.effective_batch, s.seed, step)
            batch, length = global_batch(train_examples, rows, answer_len, pad_id, s.min_bucket)
            t0 = time.perf_counter()
            lora, opt_state, stats = trainer.step(lora, opt_state, batch, step)
            loss = float(stats["loss"])  # syncs: the step is finished
            grad_norm = float(stats["grad_norm"])
            dt = time.perf_counter() - t0
            _check_finite(loss, grad_norm, step, epoch, within, mgr, ckpt_dir)
            step += 1
            real = sum(r is not None for r in rows)
            seen = examples_seen(len(train_examples), s.effective_batch, step)
            if step % loop.log_every == 0 or step == end:
                log.write({"step": step, "epoch": epoch, "loss": loss, "grad_norm": grad_norm,
                           "answer_tokens": float(stats["answer_tokens"]), "lr": float(trainer.schedule(step - 1)),
                           "examples_per_s": real / dt, "bucket": length, "examples_seen": seen})
            bar.set_postfix(loss=f"{loss:.4f}", ex_s=f"{real / dt:.1f}", refresh=False)  # drawn by update()
            bar.update(1)
            if loop.eval_every and (step % loop.eval_every == 0 or step == loop.total_steps) and eval_examples:
                last_eval = _evaluate_and_keep_best(trainer, lora, eval_examples, pad_id, loop, stopping, step,
                                                    best_dir, log, seen)
                save(step)
            elif loop.checkpoint_every and step % loop.checkpoint_every == 0:
                save(step)
        if mgr.latest_step() != step:
            save(step)
    finally:
        bar.close()
        mgr.wait_until_finished()
        mgr.close()
        log.close()
    nnx.update(trainer.model, trainer._copy(lora))
    if stopping.best_step >= 0 and checkpoint.latest_step(best_dir) != stopping.best_step:
        raise ValueError(f"{best_dir}: the best adapters (step {stopping.best_step}) are missing or damaged and could "
                         f"not be rebuilt; delete {run_dir} to train this run again")
    summary = {"steps": step, "total_steps": loop.total_steps, "stopped_early": stopping.done,
               "finished": stopping.done or step >= loop.total_steps,
               "best_step": stopping.best_step, f"best_{loop.metric}": stopping.best,
               "checkpoints": str(ckpt_dir), "best_adapters": str(best_dir) if stopping.best_step >= 0 else None,
               "last_eval": last_eval}
    if is_main:
        artifacts.atomic_write_json(run_dir / "result.json", summary)
    return summary


# ----------------------------------------------------------------------------- library entry point
def finetune(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
             histories: Mapping[str, ex_lib.HistoryFn] | None = None, data=None, model: Llm | None = None,
             tokenizer=None, mesh: Mesh | None = None, stop_at: int | None = None,
             identity: Mapping | None = None) -> dict:
    """LoRA instruction tuning as configured; resumable. Returns the summary (see `train_loop`).

    `histories` maps history orders to `(split, index) -> [HistoryEntry]` callables (retrieval's `high`,
    `sequential`); `simple` (K = finetune.k_history most recent items) is always available. With `high` and
    `sequential` present the training set is the official `mixed` one. `data`, `model` (a base Llm without
    adapters) and `tokenizer` may be passed in (tests, notebooks); otherwise they come from the config.
    `identity` adds what the histories depend on to the run's identity (see `run_dir`)."""
    from rallrec_jax.llm import tokenizer as tok_lib

    f = FinetuneSettings.from_config(config.finetune)
    mesh, data, model, tokenizer, orders = stage_inputs(config, workdir, f.k_history, histories, data, model,
                                                        tokenizer, mesh)
    builder = ex_lib.ExampleBuilder(data, tokenizer, f.max_prompt_tokens or None)
    rows, order_names = training_rows.training_plan(data.num_samples("train"), f.sample_size, f.train_size,
                                                    list(orders), f.sample_seed)
    train = ex_lib.build_examples(builder, "train", rows, orders, order_names)
    if f.train_size:
        train = train[:f.train_size]
    # Early stopping reads a seeded user-stratified sample of the validation split (finetune.eval_size rows,
    # finetune.eval_sample / eval_user_cap / eval_seed): its first rows in time are a handful of users.
    val_sample = sampling.validation_sample(data, f)
    val_order = f.eval_order if f.eval_order in orders else "simple"
    val = ex_lib.build_examples(builder, "validation", val_sample.rows.tolist(), orders, [val_order])
    out_dir = run_dir(config, workdir, identity)
    if jax.process_index() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        report = {"train": ex_lib.dropped_report(train), "validation": ex_lib.dropped_report(val),
                  "validation_sample": val_sample.summary(), "orders": order_names, "train_rows": len(rows)}
        artifacts.atomic_write_json(out_dir / "examples.json", report)
        logging.info("finetune examples: %s", report)
    loop = f.loop(len(train))
    model = lora_lib.apply_lora(model, lora_config(config.lora), rngs=nnx.Rngs(f.train.seed))
    trainer = Trainer(model, f.train, loop.total_steps, mesh, yes_no=tok_lib.yes_no_ids(tokenizer))
    summary = train_loop(trainer, train, val, loop, out_dir, int(tokenizer.pad_token_id), stop_at=stop_at,
                         identity=run_identity(config, identity))
    summary.update({"train_examples": len(train), "validation_examples": len(val), "orders": order_names,
                    "validation_sample": val_sample.summary(), "run_dir": str(out_dir)})
    if jax.process_index() == 0 and summary["last_eval"]:
        # Validation AUC and loss against examples seen (issue 13): <run_dir>/learning_curve.png and .json.
        summary["learning_curve"] = learning_curve.save_learning_curve(out_dir)[0]
    return summary
