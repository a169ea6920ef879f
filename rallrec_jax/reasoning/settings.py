"""The reasoning stage's settings, typed and read once at the top of `reason` / `merge_results`.

The stage reads its own section (`config.reasoning`) and, because P_G and the traces must describe the same
prompts, the generation fields they share: `config.evaluate` (split, history order, K), the general model's
path, the data settings and the evaluation sample's draw. `ReasoningRun` holds those typed values; the
functions below the stage's top take it, never the ConfigDict."""
from __future__ import annotations

import dataclasses
from typing import Any

from rallrec_jax import settings as settings_lib
from rallrec_jax.data import sampling
from rallrec_jax.generation.evaluate import EvaluateSettings


@dataclasses.dataclass(frozen=True)
class ReasoningSettings:
    """`config.reasoning` (configs/base_reasoning.py, where each field is explained)."""
    llm_path: str = ""  # M_R; "" = the SmolLM2-135M-Instruct GGUF
    tokenizer: str = ""  # "" = from llm_path
    param_dtype: str = "float32"
    dtype: str = "float32"
    modes: tuple[str, ...] = ("plain", "hint")
    num_rows: int = 0  # the first N rows of the evaluation sample; 0 = all
    num_traces: int = 5  # K
    temperature: float = 0.6  # DeepSeek-R1 guidance
    top_p: float = 0.95
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 4000  # official vLLM budget (4000 plain / 4800 KP)
    seed: int = 42  # row batch b is sampled with seed + b * prompts_per_batch
    prompts_per_batch: int = 4  # rows sampled together: part of the seeding, fixed across a resume
    score_batch: int = 8
    max_prompt_tokens: int = 2048  # 0 = no limit
    hint_bands: str = "follow"  # "follow" | "official" (reasoning/hints.py)
    official_prompt: bool = False  # the released string ("<think>" in the user turn)
    score: str = "softmax"  # trace P(Yes): "softmax" | "double_softmax" | "text"
    alpha: float = 0.1  # eq. 10
    epsilon: float = 1e-3
    general_mean: str = "first"
    merge_rows: int = 0  # merge the first N rows only; 0 = all
    alphas: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
    epsilons: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
    length_groups: int = 5  # Fig. 2
    variance_window: int = 1000  # Fig. 3

    @classmethod
    def from_config(cls, config) -> ReasoningSettings:
        out = settings_lib.from_config(cls, config, "reasoning")
        # A ConfigDict (or a --config override) may hold these as lists: the settings hold tuples.
        return dataclasses.replace(out, modes=tuple(out.modes), alphas=tuple(out.alphas),
                                   epsilons=tuple(out.epsilons))


@dataclasses.dataclass(frozen=True)
class ReasoningRun:
    """Everything the reasoning stage reads from a run config: its own section and the shared generation
    fields. `data` is `config.data` as a dict and `model_path` is `config.model.path`: the caches hash them as
    they are, so the fingerprints keep the values they had when the stage read the ConfigDict."""
    reasoning: ReasoningSettings
    evaluate: EvaluateSettings
    model_path: str  # M_G's files (P_G's cache key)
    dataset: str  # config.data.name (the latency figure's label)
    data: dict[str, Any]  # config.data as a dict
    sample: dict[str, Any]  # the evaluation sample's draw: sampling.sample_settings (n, how, user_cap, seed)

    @classmethod
    def from_config(cls, config) -> ReasoningRun:
        if isinstance(config, cls):
            return config
        return cls(reasoning=ReasoningSettings.from_config(config.reasoning),
                   evaluate=EvaluateSettings.from_config(config.evaluate), model_path=config.model.path,
                   dataset=str(config.data.name), data=config.data.to_dict(),
                   sample=sampling.sample_settings(config))
