"""What an adapter file says about the model it belongs to, and the checks that hold the two together.

A LoRA adapter is only meaningful on the base it was tuned on, with the rank, alpha and target layers it was
tuned with. Both adapter formats this library reads or writes record them: our orbax checkpoints in a
`lora_config.json` beside the steps (checkpoint.save_adapters), PEFT folders in `adapter_config.json`
(llm/peft.py). Loading either onto a model goes through `ensure_lora` and `check_base`, so a mismatch is one
error naming the file, the field and the fix, never an orbax tree error or silently wrong logits.

Base identity is the model's `name_or_path` (a hub name, or the local folder / .gguf file it was loaded from)
compared by model name (`model_name`: the hub name's last part, or the folder / file name without a
quantisation tag: "HuggingFaceTB/SmolLM2-135M-Instruct", ".../SmolLM2-135M-Instruct/" and
"SmolLM2-135M-Instruct.Q4_1.gguf" are one model), plus, in our own records, the architecture's numbers.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from flax import nnx

from rallrec_jax.assets import split_revision
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm.config import LlmConfig

# The numbers of the architecture an adapter's shapes and meaning depend on.
ARCHITECTURE_FIELDS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                       "num_kv_heads", "head_dim", "tie_word_embeddings")

_QUANT_TAG = re.compile(r"[.\-_](?:i?q\d[\w]*|f16|f32|bf16|fp16|fp32)$", re.IGNORECASE)


def architecture(cfg: LlmConfig) -> dict[str, Any]:
    return {field: getattr(cfg, field) for field in ARCHITECTURE_FIELDS}


def model_name(name_or_path: str) -> str:
    """The comparable name of a base model: lower-cased, the last path part (a hub cache snapshot by its repo
    name), ".gguf" and a quantisation tag (".Q4_1", "-f16") removed."""
    text = split_revision(str(name_or_path))[0].rstrip("/\\")
    hub = re.search(r"models--[^/\\]+--([^/\\]+)[/\\]snapshots", text)
    last = hub.group(1) if hub else re.split(r"[/\\]", text)[-1]
    if last.lower().endswith(".gguf"):
        last = _QUANT_TAG.sub("", last[:-5])
    return last.lower()


def check_base(recorded_name: str | None, model: nnx.Module, *, file: str | os.PathLike, field: str,
               recorded_architecture: Mapping[str, Any] | None = None, check_name: bool = True) -> None:
    """Errors (naming `file` and `field`) when an adapter's recorded base is not `model`'s: another model
    name (unless `check_name=False`, for the same weights under another name), or, where recorded, another
    architecture. A name missing on either side is not compared."""
    cfg: LlmConfig = model.config
    if recorded_architecture:
        mine = architecture(cfg)
        for key, want in recorded_architecture.items():
            if key in mine and mine[key] != want:
                raise ValueError(f"{file}: base_architecture.{key}={want!r} (the adapters' base), but this model "
                                 f"has {key}={mine[key]!r} ({cfg.name_or_path or 'unnamed'}): load them onto "
                                 "their own base model")
    if check_name and recorded_name and cfg.name_or_path and model_name(recorded_name) != model_name(cfg.name_or_path):
        raise ValueError(f"{file}: {field}={recorded_name!r}, but this model is {cfg.name_or_path!r}: load the "
                         "adapters onto that base, or pass check_base=False if this is the same model under "
                         "another name")


def ensure_lora(model: nnx.Module, want: lora_lib.LoraConfig, *, file: str | os.PathLike,
                fields: Mapping[str, str], seed: int = 0) -> nnx.Module:
    """`model` with the LoRA layout `want`: applied when the model has no adapters yet; when it has, they
    must match in rank, alpha and targets (dropout, which only acts in training, is not compared): else an
    error naming `file` and the file's field for it (`fields`: "rank"/"alpha"/"targets" -> its name)."""
    have = lora_lib.lora_config_of(model)
    if have is None:
        return lora_lib.apply_lora(model, want, rngs=nnx.Rngs(seed))
    wrapped = sorted(lora_lib.lora_modules(model))
    if have.rank != want.rank:
        raise ValueError(f"{file}: {fields['rank']}={want.rank}, but the model's adapters have rank {have.rank}: "
                         "load onto a model without adapters (the file's layout is applied) or one of that rank")
    if abs(have.alpha - want.alpha) > 1e-9 * max(1.0, abs(want.alpha)):
        raise ValueError(f"{file}: {fields['alpha']}={want.alpha:g}, but the model's adapters have alpha "
                         f"{have.alpha:g}: load onto a model without adapters or one with that alpha")
    if tuple(sorted(have.targets)) != tuple(sorted(want.targets)):
        raise ValueError(f"{file}: {fields['targets']} names {sorted(want.targets)}, but the model's adapters wrap "
                         f"{wrapped}: load onto a model without adapters or one with those targets")
    return model
