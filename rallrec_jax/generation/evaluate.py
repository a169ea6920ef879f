"""P_G: the general LLM's click probability for every sample of a split, and its CTR metrics (paper-spec 3.3).

P(Yes) is read at the answer position (right after the chat-templated prompt): softmax over the Yes/No logits
(ids from `tokenizer.yes_no_ids`, never hard-coded), or with `double_softmax` the official code's softmax over
the two full-vocabulary probabilities, which bounds P to [0.269, 0.731] and reproduces the published LogLoss.
Prompts are scored in length-sorted, length-bucketed batches by the LLM core's `Scorer`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from collections.abc import Mapping, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from rallrec_jax import artifacts, checkpoint, console, metrics, settings
from rallrec_jax.data import sampling
from rallrec_jax.generation import examples as ex_lib
from rallrec_jax.generation import predictions
from rallrec_jax.generation.inputs import lora_config, other_runs, run_dir, stage_inputs
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm import tokenizer as tok_lib
from rallrec_jax.llm.model import Llm
from rallrec_jax.llm.scoring import Scorer
from rallrec_jax.llm.sharding import shard_model


@dataclasses.dataclass(frozen=True)
class EvaluateSettings:
    """`config.evaluate` (configs/base_generation.py, where each field is explained), typed and read once at the
    top of `evaluate` (and of the reasoning stage, whose P_G and traces read the same rows and prompts)."""
    split: str = "test"
    order: str = "simple"
    k_history: int = 30
    max_prompt_tokens: int = 2048  # 0 = no limit
    batch_size: int = 8
    double_softmax: bool = False
    adapters: str = ""  # "" = zero-shot; "best" = the finetune run's best adapters; or a folder
    min_bucket: int = 16

    @classmethod
    def from_config(cls, config) -> EvaluateSettings:
        return settings.from_config(cls, config, "evaluate")


def score_examples(model: Llm, tokenizer, examples: Sequence[ex_lib.Example], *, batch_size: int = 8,
                   double_softmax: bool = False, mesh: Mesh | None = None, min_bucket: int = 16) -> np.ndarray:
    """[N] P(Yes) of each example's prompt (answer ids, if any, are ignored)."""
    if not examples:
        raise ValueError("no examples to score")
    yes, no = tok_lib.yes_no_ids(tokenizer)
    scorer = Scorer(model, pad_id=int(tokenizer.pad_token_id), batch_size=batch_size, mesh=mesh,
                    min_bucket=min_bucket)
    with console.progress(len(examples), "scoring", unit="prompt") as bar:
        return scorer.yes_probability([list(e.prompt_ids) for e in examples], yes, no,
                                      double_softmax=double_softmax, progress=bar.update)


def attach_adapters(model: Llm, lora_cfg: lora_lib.LoraConfig, directory: str | os.PathLike,
                    merge: bool = True) -> int:
    """Adds LoRA layers of `lora_cfg` to `model`, loads the adapters saved under `directory` (latest step),
    and (by default) folds them into the base kernels for inference. Returns the restored step."""
    path = checkpoint.absolute(directory)
    if checkpoint.latest_step(path) is None:
        raise ValueError(f"no saved adapters under {path}")
    lora_lib.apply_lora(model, lora_cfg, rngs=nnx.Rngs(0))
    step = checkpoint.restore_adapters(path, model)
    if merge:
        lora_lib.merge_lora(model)
    return step


def adapters_dir(config: ml_collections.ConfigDict, workdir: str | os.PathLike, adapters: str | None) -> pathlib.Path | None:
    """"" / None = zero-shot; "best" = this config's finetune run's best adapters; else a folder."""
    if not adapters:
        return None
    if adapters == "best":
        best = run_dir(config, workdir) / "best"  # the run of exactly this config (its folder is its identity)
        if not best.is_dir():
            raise ValueError(f"no saved adapters under {best}: no LoRA run of this config; "
                             f"{other_runs(config, workdir)}")
        return best
    return checkpoint.absolute(adapters)


def evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, adapters: str | None = None, *,
             order: str | None = None, split: str | None = None, num_rows: int | None = None,
             rows: Sequence[int] | None = None, histories: Mapping[str, ex_lib.HistoryFn] | None = None, data=None,
             model: Llm | None = None, tokenizer=None, mesh: Mesh | None = None, tag: str | None = None) -> dict:
    """Scores rows of `split` (default config.evaluate.split) with the history `order` and returns
    {"metrics", "probabilities", "labels", "row_ids", ...}; writes `workdir/evaluate/<tag>.json` (with the row
    ids) and `<tag>.npy` (P(Yes) per row, in the order of the row ids).

    Which rows: `rows` (explicit row ids of the split, in that order), else the first `num_rows` (0 = all), else
    the config's evaluation sample of the split (`config.eval_size` rows drawn as `config.eval_sample`,
    data/sampling.py: the rows every table row of the pipeline is scored on).

    Beside them, `<tag>.csv` holds the same rows for a person to read: row_id, user_id, item_id, label and the
    P column named by the tag (generation/predictions.py; the pipeline's `predictions.csv` joins every row's).

    `adapters`: None/"" zero-shot, "best" the finetune run's best adapters, or a folder of saved adapters
    (default config.evaluate.adapters). `histories` adds retrieval orders (`high`, `rerank`, ...)."""
    e = EvaluateSettings.from_config(config.evaluate)
    order = order or e.order
    split = split or e.split
    adapters = e.adapters if adapters is None else adapters
    mesh, data, model, tokenizer, orders = stage_inputs(config, workdir, e.k_history, histories, data, model,
                                                        tokenizer, mesh)
    if order not in orders:
        raise ValueError(f"evaluate.order {order!r} has no history function (have {sorted(orders)}); "
                         "retrieval orders come from the retrieval stage")
    total = data.num_samples(split)
    if total == 0:
        raise ValueError(f"split {split!r} of {data.name} has no samples")
    if rows is not None:
        row_ids = [int(r) for r in rows]
        if not row_ids:
            raise ValueError("evaluate: `rows` is empty; pass row ids of the split or None for the config's sample")
    elif num_rows is not None:
        row_ids = list(range(total if not num_rows else min(int(num_rows), total)))
    else:
        row_ids = sampling.split_sample(data, split, sampling.sample_settings(config)).rows.tolist()
    n = len(row_ids)
    folder = adapters_dir(config, workdir, adapters)
    step = None
    if folder is not None:
        step = attach_adapters(model, lora_config(config.lora), folder)
    shard_model(model, mesh)
    builder = ex_lib.ExampleBuilder(data, tokenizer, e.max_prompt_tokens or None)
    exs = ex_lib.build_examples(builder, split, row_ids, orders, [order], with_answer=False)
    probs = score_examples(model, tokenizer, exs, batch_size=e.batch_size, double_softmax=e.double_softmax,
                           mesh=mesh, min_bucket=e.min_bucket)
    labels = np.array([x.label for x in exs], np.int64)
    result = {"metrics": metrics.ctr_metrics(labels, probs), "rows": n, "split": split, "order": order,
              "k_history": e.k_history, "double_softmax": bool(e.double_softmax),
              "adapters": None if folder is None else str(folder), "adapter_step": step,
              "prompts": ex_lib.dropped_report(exs), "positive_rate": float(labels.mean()), "row_ids": row_ids}
    tag = tag or f"{split}_{order}_{'zeroshot' if folder is None else 'tuned'}"
    if jax.process_index() == 0:
        out = checkpoint.absolute(workdir) / "evaluate"
        artifacts.atomic_save_npy(out / f"{tag}.npy", probs)
        predictions.write_predictions(out / f"{tag}.csv", data, split, np.asarray(row_ids), {tag: probs})
        artifacts.atomic_write_json(out / f"{tag}.json", result)
    logging.info("evaluate %s: %s", tag, result["metrics"])
    return {**result, "probabilities": probs, "labels": labels}
