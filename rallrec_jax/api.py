"""Scoring for notebooks and services: load a model (and its adapters) once, then P(like) per candidate.

    from rallrec_jax.api import Recommender
    rec = Recommender.load("meta-llama/Llama-3.1-8B-Instruct", adapters="path/to/peft_or_our_adapters",
                           dataset="movielens")
    rec.score({"gender": "female", "job": "writer", "age": "25-34"},
              [("Toy Story (1995)", 5), ("Heat (1995)", 2)], ["Aladdin (1992)", "Casino (1995)"])
    -> array([P(like Aladdin), P(like Casino)])

No workdir, no config file, no prepared data set. The prompts are the pipeline's own: a request becomes a
small in-memory `CTRData` (the profile as its one user, the rated history as that user's sequence, each
candidate a sample whose history is that sequence) and goes through the same `generation.examples`
builder (`simple_history`: the `k_history` most recent items; the data set's template from
`generation.prompts`; the oldest items dropped past `max_prompt_tokens`) and the same P(Yes) scorer as
`generation.evaluate`, with the same defaults (K = 30, 2,048 tokens, Yes/No softmax). tests/test_api.py
holds `score` equal to `evaluate` on the same rows. The candidates of one call, and of every request of
`score_batch`, are scored in length-bucketed batches together.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from jax.sharding import Mesh

from rallrec_jax.data import histories
from rallrec_jax.data.ctr import SAMPLE_KEYS, SPLITS, CTRData
from rallrec_jax.generation import examples as ex_lib
from rallrec_jax.generation.evaluate import EvaluateSettings
from rallrec_jax.prompts import ctr as ctr_prompts
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm import tokenizer as tok_lib
from rallrec_jax.llm.model import Llm
from rallrec_jax.llm.scoring import Scorer

DATASETS = ("movielens", "amazon", "bookcrossing")
SPLIT = "score"  # the in-memory data set's one split

Profile = Mapping[str, Any]
HistoryItem = tuple[str, int] | Mapping[str, Any]  # (title, rating) or {"title": ..., "rating": ...}


@dataclasses.dataclass(frozen=True)
class ScoreSettings:
    """How prompts are built and scored; the defaults are the pipeline's `evaluate` defaults
    (configs/base_generation.py)."""

    dataset: str = "movielens"
    k_history: int = 30
    max_prompt_tokens: int = 2048  # 0 = no limit
    double_softmax: bool = False
    batch_size: int = 8
    min_bucket: int = 16
    order: str = "simple"  # "simple": the K most recent; another order shows the history as given

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r} must be one of {DATASETS} (it picks the prompt template)")
        if self.order not in ctr_prompts.ORDERS:
            raise ValueError(f"order={self.order!r} must be one of {ctr_prompts.ORDERS}")
        for name in ("k_history", "batch_size", "min_bucket"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_prompt_tokens < 0:
            raise ValueError(f"max_prompt_tokens={self.max_prompt_tokens} must be >= 0 (0 = no limit)")

    @classmethod
    def from_config(cls, config) -> "ScoreSettings":
        """The settings a pipeline config scores with (its data set's name and `config.evaluate`, read through the
        evaluate stage's own typed settings, so that both check the section the same way)."""
        e = EvaluateSettings.from_config(config.evaluate)
        name = str(config.data.name)
        dataset = next((d for d in DATASETS if name.startswith(d)), name)
        return cls(dataset=dataset, k_history=e.k_history, max_prompt_tokens=e.max_prompt_tokens,
                   double_softmax=e.double_softmax, batch_size=e.batch_size, min_bucket=e.min_bucket, order=e.order)


class _Probe(dict):
    """A profile that records which fields a prompt template reads."""

    def __init__(self):
        super().__init__()
        self.read: list[str] = []

    def __missing__(self, key):
        self.read.append(key)
        return "x"


def profile_fields(dataset: str) -> tuple[str, ...]:
    """The user-profile fields the data set's prompt template shows (movielens: gender, job, age)."""
    probe = _Probe()
    ctr_prompts.template_for(dataset)(probe, "[]", "x", "simple")
    return tuple(dict.fromkeys(probe.read))


def _history_entry(item: HistoryItem, request: int, position: int) -> tuple[str, int]:
    if isinstance(item, Mapping):
        if "title" not in item or "rating" not in item:
            raise ValueError(f"request {request}: history item {position} {dict(item)!r} needs 'title' and 'rating'")
        title, rating = item["title"], item["rating"]
    else:
        try:
            title, rating = item
        except (TypeError, ValueError):
            raise ValueError(f"request {request}: history item {position} {item!r} is not (title, rating)") from None
    try:
        stars = int(float(rating))
        whole = not isinstance(rating, bool) and float(rating) == stars
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise ValueError(f"request {request}: history item {position} ({title!r}) has rating {rating!r}, "
                         "not a whole number of stars")
    return str(title), stars


def requests_data(dataset: str, requests: Sequence[tuple[Profile, Sequence[HistoryItem], Sequence[str]]]
                  ) -> tuple[CTRData, list[tuple[int, int]]]:
    """Requests (profile, rated history oldest first, candidate titles) -> an in-memory CTRData whose split
    "score" holds one sample per candidate (its history: the request's whole history), and each request's
    rows [start, stop) in that split."""
    fields = profile_fields(dataset)
    titles: dict[str, int] = {}
    user_fields: dict[str, list[str]] = {f: [] for f in fields}
    offsets, seq_item, seq_rating = [0], [], []
    cols: dict[str, list[int]] = {k: [] for k in SAMPLE_KEYS}
    spans = []
    for r, (profile, history, candidates) in enumerate(requests):
        missing = [f for f in fields if f not in profile]
        if missing:
            raise ValueError(f"request {r}: profile lacks {missing} (the {dataset} prompt shows {list(fields)})")
        for f in fields:
            user_fields[f].append(str(profile[f]))
        if isinstance(candidates, str):
            raise ValueError(f"request {r}: candidates must be a list of titles, not one string")
        if not candidates:
            raise ValueError(f"request {r}: no candidates to score")
        entries = [_history_entry(h, r, p) for p, h in enumerate(history)]
        for title, rating in entries:
            seq_item.append(titles.setdefault(title, len(titles)))
            seq_rating.append(rating)
        offsets.append(len(seq_item))
        start = len(cols["user"])
        for title in candidates:
            cols["user"].append(r)
            cols["position"].append(len(entries))
            cols["item"].append(titles.setdefault(str(title), len(titles)))
            for k in ("rating", "label", "timestamp"):
                cols[k].append(0)
        spans.append((start, len(cols["user"])))
    empty = {k: np.zeros(0, np.int64) for k in SAMPLE_KEYS}
    samples = {s: dict(empty) for s in SPLITS}
    samples[SPLIT] = {k: np.asarray(v, np.int64) for k, v in cols.items()}
    names = np.array(list(titles), dtype=str)
    data = CTRData(
        name=dataset, item_ids=np.arange(len(names)).astype(str), item_fields={"title": names},
        user_ids=np.arange(len(requests)).astype(str),
        user_fields={f: np.array(v, dtype=str) for f, v in user_fields.items()},
        seq_offsets=np.asarray(offsets, np.int64), seq_item=np.asarray(seq_item, np.int32),
        seq_rating=np.asarray(seq_rating, np.int32), seq_timestamp=np.zeros(len(seq_item), np.int64),
        samples=samples, has_timestamps=False, options={}, filter_log=[], skipped={})
    return data, spans


class Recommender:
    """A model, its tokenizer and the prompt settings: `score(profile, history, candidates)` -> P(like)."""

    def __init__(self, model: Llm, tokenizer, settings: ScoreSettings = ScoreSettings(), *,
                 mesh: Mesh | None = None):
        self.model, self.tokenizer, self.settings, self.mesh = model, tokenizer, settings, mesh
        self.yes_no = tok_lib.yes_no_ids(tokenizer)
        self._scorer = Scorer(model, pad_id=int(tokenizer.pad_token_id), batch_size=settings.batch_size, mesh=mesh,
                              min_bucket=settings.min_bucket)

    @classmethod
    def load(cls, model: str | os.PathLike = "", *, adapters: str | os.PathLike | None = None,
             tokenizer: str | os.PathLike | None = None, settings: ScoreSettings | None = None,
             mesh: Mesh | None = None, param_dtype: str = "float32", dtype: str = "float32",
             check_base: bool = True, merge: bool = True, **setting_overrides: Any) -> "Recommender":
        """The model (an HF folder, a .gguf file, a hub name "org/model[@revision]", or "" for the bundled
        SmolLM2-135M-Instruct) with `adapters`: a PEFT LoRA folder (adapter_config.json) or hub name, or a
        folder of this library's saved adapters (`finetune/.../best`; their lora_config.json says the
        layout), folded into the weights (`merge`). `setting_overrides` are ScoreSettings fields
        (dataset="amazon", k_history=10, ...)."""
        from rallrec_jax import assets, convert
        from rallrec_jax.llm.sharding import shard_model

        path = str(model) or str(assets.smollm2_gguf())
        llm = convert.load_model(path, adapters, check_base=check_base, mesh=mesh, param_dtype=param_dtype,
                                 dtype=dtype)
        tok = tok_lib.load_tokenizer(tokenizer or path)
        if adapters and merge:
            lora_lib.merge_lora(llm)
        if mesh is not None:
            shard_model(llm, mesh)
        settings = dataclasses.replace(settings or ScoreSettings(), **setting_overrides)
        return cls(llm, tok, settings, mesh=mesh)

    # ------------------------------------------------------------------ prompts
    def _examples(self, requests) -> tuple[list[ex_lib.Example], list[tuple[int, int]]]:
        s = self.settings
        data, spans = requests_data(s.dataset, requests)
        builder = ex_lib.ExampleBuilder(data, self.tokenizer, s.max_prompt_tokens or None)
        if s.order == "simple":
            history = ex_lib.simple_history(data, s.k_history)
        else:  # the history as given (already retrieved / ordered by the caller), oldest-dropped by list position
            def history(split, index):
                h = data.history(split, index)
                return [histories.HistoryEntry(int(i), int(r), p) for p, (i, r) in enumerate(zip(h["item"], h["rating"]))]
        rows = list(range(data.num_samples(SPLIT)))
        return ex_lib.build_examples(builder, SPLIT, rows, {s.order: history}, [s.order], with_answer=False), spans

    def prompts(self, profile: Profile, history: Sequence[HistoryItem], candidates: Sequence[str]) -> list[str]:
        """The chat-templated prompt text of each candidate (what `score` scores)."""
        exs, _ = self._examples([(profile, history, candidates)])
        return [self.tokenizer.decode(list(e.prompt_ids)) for e in exs]

    # ------------------------------------------------------------------ scoring
    def score(self, profile: Profile, history: Sequence[HistoryItem], candidates: Sequence[str]) -> np.ndarray:
        """P(like) [len(candidates)] of each candidate for the user with `profile` and the rated `history`
        (oldest first, as (title, stars) pairs or {"title", "rating"} dicts)."""
        return self.score_batch([(profile, history, candidates)])[0]

    def score_batch(self, requests: Sequence[tuple[Profile, Sequence[HistoryItem], Sequence[str]]]
                    ) -> list[np.ndarray]:
        """`score` of several users' requests, every candidate of all of them batched together."""
        if not requests:
            raise ValueError("no requests to score")
        exs, spans = self._examples(requests)
        yes, no = self.yes_no
        probs = self._scorer.yes_probability([list(e.prompt_ids) for e in exs], yes, no,
                                             double_softmax=self.settings.double_softmax)
        return [probs[a:b] for a, b in spans]
