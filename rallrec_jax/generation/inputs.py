"""What every generation stage starts from: the base model and tokenizer, the mesh, the data, the history
orders, the LoRA layout, and the folder a LoRA run lives in (keyed by everything its adapters depend on).

Training (finetune.py), evaluation (evaluate.py), reasoning (reasoning/stage.py) and the pipeline all read
their inputs here, so none of them imports another stage's training module to get them.
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping

import ml_collections
from jax.sharding import Mesh

from rallrec_jax import artifacts, checkpoint, parallel
from rallrec_jax.generation import examples as ex_lib
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm.model import Llm


def lora_config(c: Mapping) -> lora_lib.LoraConfig:
    """The typed LoRA layout (rank, alpha, dropout, target projections) from `config.lora`."""
    return lora_lib.LoraConfig(rank=int(c["rank"]), alpha=float(c["alpha"]), dropout=float(c["dropout"]),
                               targets=tuple(c["targets"]))


def load_base(config: ml_collections.ConfigDict, mesh: Mesh | None = None):
    """(model, tokenizer) from config.model.path (.gguf or HF folder; "" = SmolLM2-135M-Instruct GGUF)."""
    from rallrec_jax import assets
    from rallrec_jax.llm import tokenizer as tok_lib
    from rallrec_jax.llm import weights

    path = config.model.path or str(assets.smollm2_gguf())
    model = weights.load(path, mesh, param_dtype=config.model.param_dtype, dtype=config.model.dtype)
    tokenizer = tok_lib.load_tokenizer(config.model.tokenizer or path)
    return model, tokenizer


def stage_inputs(config: ml_collections.ConfigDict, workdir: str | os.PathLike, k_history: int,
                 histories: Mapping[str, ex_lib.HistoryFn] | None, data=None, model: Llm | None = None,
                 tokenizer=None, mesh: Mesh | None = None):
    """(mesh, data, model, tokenizer, history orders) for a generation stage: whatever the caller passed,
    the rest from the config; `simple` (the K most recent items) is always among the orders."""
    from rallrec_jax.data import prepare

    mesh = parallel.make_mesh(config.get("mesh") and dict(config.mesh)) if mesh is None else mesh
    data = prepare.prepare_data(config.data, workdir) if data is None else data
    if model is None or tokenizer is None:
        loaded, loaded_tok = load_base(config, mesh if model is None else None)
        model = loaded if model is None else model
        tokenizer = loaded_tok if tokenizer is None else tokenizer
    orders = {"simple": ex_lib.simple_history(data, k_history)}
    orders.update(histories or {})
    return mesh, data, model, tokenizer, orders


# finetune fields that change how a run reports, not what it computes.
NOT_IN_IDENTITY = ("progress", "run_name")


def run_identity(config: ml_collections.ConfigDict, extra: Mapping | None = None) -> dict:
    """What a LoRA run's adapters depend on that is known before its examples are built: the data config and
    its files, the base model's config and files (and the tokenizer's), LoRA, every finetune setting, and the
    caller's `extra` (the pipeline: the retrieval behind its tuning histories). Keys the run folder."""
    from rallrec_jax.data import prepare

    m = config.model
    return {"data": prepare.input_identity(config.data), "model": m.to_dict(),
            "model_files": artifacts.model_identity(m.path),
            "tokenizer_files": artifacts.model_identity(m.tokenizer) if m.tokenizer else None,
            "lora": config.lora.to_dict(),
            "finetune": {k: v for k, v in config.finetune.to_dict().items() if k not in NOT_IN_IDENTITY},
            "extra": artifacts.plain(dict(extra or {}))}


def run_dir(config: ml_collections.ConfigDict, workdir: str | os.PathLike, extra: Mapping | None = None
            ) -> pathlib.Path:
    """`workdir/finetune/<run_name or "simple">/<fingerprint of run_identity>`: a run with any other setting, model
    or data file trains in its own folder (and a run with the same ones resumes or reuses it)."""
    return (checkpoint.absolute(workdir) / "finetune" / (config.finetune.run_name or "simple")
            / artifacts.fingerprint(run_identity(config, extra)))


def other_runs(config: ml_collections.ConfigDict, workdir: str | os.PathLike, extra: Mapping | None = None) -> str:
    """For an error when this config's run folder is missing: the runs beside it and how each differs."""
    folder = run_dir(config, workdir, extra)
    want = json.loads(json.dumps(run_identity(config, extra), default=str))
    lines = []
    for other in sorted(p for p in folder.parent.glob("*/identity.json")):
        try:
            changed = artifacts.differences(json.loads(other.read_text()).get("run", {}), want)
        except ValueError:
            changed = ["its identity.json is unreadable"]
        lines.append(f"{other.parent.name} ({'; '.join(changed[:4]) or 'same identity'})")
    if not lines:
        return f"no LoRA run under {folder.parent}"
    return f"the runs under {folder.parent} differ from this config: " + ", ".join(lines)
