"""The retrieval stage end to end: item texts -> embeddings -> per-sample ordered histories.

Artifacts live under `workdir/retrieval/`, each written atomically beside a fingerprint of the
settings that made it; a later run reuses what matches and redoes what does not:

    descriptions.jsonl     LLM item descriptions (resumable per item)
    e_title.npy, e_desc.npy  mean-pooled text embeddings [I, D]
    lightgcn/              checkpoints (resumable), item_emb.npy, user_emb.npy, metrics.json
    e_ssl.npy              projected text embeddings [I, d_colla]
    retrieved/<split>_<kind>_<order>_<n>.npz   ordered history items and ratings per sample
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from rallrec_jax import artifacts, console, metrics, parallel, settings
from rallrec_jax.data.ctr import CTRData
from rallrec_jax.retrieval import descriptions, lightgcn, mix, retrieve, ssl, text_embed

# The official LightGCN graph per data set (spec 1.2-1.4): drop each user's last rating when the user
# has more than N ratings (MovieLens: only if that item occurs more than once).
OFFICIAL_GRAPH = {"movielens": (10, True), "amazon": (5, False), "bookcrossing": (5, False)}


def _as_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


@dataclasses.dataclass(frozen=True)
class RetrievalSettings:
    """`config.retrieval` (configs/base_retrieval.py, where each field is explained), typed and read once.

    `lightgcn` and `ssl` stay plain dicts: their own modules type them (lightgcn.py, ssl.py). `as_dict` is
    what the cache fingerprints hash: the same dict the stage hashed when it read the config by string keys,
    so existing workdirs stay valid."""
    llm_path: str = ""  # descriptions and text embeddings; "" = the SmolLM2-135M-Instruct wheel
    embed_batch_size: int = 8
    use_descriptions: bool = True
    description_max_new_tokens: int = 128  # the official run allowed 1024 (descriptions are asked under 80 words)
    description_temperature: float = 0.8
    description_top_p: float = 0.9
    description_batch_size: int = 16
    description_seed: int = 0
    text_mode: str = "paper"  # "paper": [e_title || e_desc]; "official": e_desc alone
    graph: str = "train"  # "train": training interactions only; "official": the released graph
    lightgcn: dict = dataclasses.field(default_factory=dict)
    ssl: dict = dataclasses.field(default_factory=dict)
    kind: str = "mix3"  # text | colla | mix | mix3 | hybrid | retri_then_mix
    style: str = "paper"  # "paper": per-row L2 blocks; "official": PCA text, max-norm blocks, cosine
    pca_dim: int = 128  # the official style's PCA of the text block
    text_center: bool = True
    text_pca: int = 0  # 0 = no PCA of the paper style's text block
    k_history: int = 30
    order: str = "rerank"  # simple | high | sequential | rerank | official_rerank
    gamma: float = 2.0 / 3.0
    beta: float = 1.0

    @classmethod
    def from_config(cls, config) -> RetrievalSettings:
        if isinstance(config, cls):
            return config
        values = _as_dict(config)
        values.update({k: _as_dict(values[k]) for k in ("lightgcn", "ssl") if k in values})
        return settings.from_config(cls, values, "retrieval")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _save_npy(path: pathlib.Path, array: np.ndarray, fingerprint: str) -> None:
    if not parallel.is_writer():  # a multi-host run's files are process 0's; the others hold the same array
        return
    artifacts.atomic_save_npy(path, array)
    artifacts.atomic_write_json(path.with_suffix(".json"), {"fingerprint": fingerprint}, indent=None)


def cached_array(path: pathlib.Path, fingerprint: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Loads `path` if its sidecar fingerprint matches, else computes and saves it (atomically)."""
    side = path.with_suffix(".json")
    if path.is_file() and side.is_file():
        try:
            if json.loads(side.read_text()).get("fingerprint") == fingerprint:
                return np.load(path)
        except (ValueError, OSError) as exc:
            logging.warning("retrieval: %s unreadable (%s); computing it again", path, exc)
    array = np.asarray(compute())
    _save_npy(path, array, fingerprint)
    return array


class RetrievalStage:
    """Holds a prepared data set and the retrieval config; computes (or reuses) each artifact."""

    def __init__(self, data: CTRData, config: Mapping, workdir: str | os.PathLike,
                 tools: text_embed.TextTools | None = None, mesh=None):
        self.data = data
        self.settings = RetrievalSettings.from_config(config)
        self.root = pathlib.Path(workdir).resolve() / "retrieval"
        self.root.mkdir(parents=True, exist_ok=True)
        self._tools = tools
        self.mesh = mesh
        self._similarities: dict[str, mix.ItemSimilarity] = {}
        self.base = {"data": data.fingerprint()}
        self.artifacts: set[pathlib.Path] = set()  # the files this object read or wrote (the pipeline's marker)
        self._llm_identity = None

    def _cached(self, path: pathlib.Path, fingerprint: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        array = cached_array(path, fingerprint, compute)
        self.artifacts.add(path)
        return array

    @property
    def llm_identity(self):
        """The identity of the LLM's files (a replaced model at the same path is another model)."""
        if self._llm_identity is None:
            self._llm_identity = artifacts.model_identity(self.settings.llm_path)
        return self._llm_identity

    @property
    def tools(self) -> text_embed.TextTools:
        if self._tools is None:
            c = self.settings
            self._tools = text_embed.load_text_tools(c.llm_path or None, self.mesh, c.embed_batch_size)
        return self._tools

    # ---- item texts ---------------------------------------------------------------------------
    def descriptions(self) -> list[str]:
        c = self.settings
        fp = artifacts.fingerprint({**self.base, "llm": c.llm_path, "llm_files": self.llm_identity,
                                    "tokens": c.description_max_new_tokens,
                                    "t": c.description_temperature, "p": c.description_top_p,
                                    "seed": c.description_seed})
        path = self.root / f"descriptions_{fp}.jsonl"
        gen = text_embed.generate_fn(self.tools, c.description_max_new_tokens, c.description_temperature,
                                     c.description_top_p, c.description_seed)
        bars = []  # made after the first generated batch: items all read from the cache show none

        def shown(done: int, total: int) -> None:
            if not bars:
                bars.append(console.progress(total, "descriptions", initial=done, unit="item"))
            bars[0].update(done - bars[0].n)

        try:
            texts = descriptions.describe_items(self.data, gen, path, c.description_batch_size,
                                                progress=shown)
            self.artifacts.add(path)
            return texts
        finally:
            for bar in bars:
                bar.close()

    def text_embeddings(self) -> np.ndarray:
        """e_text: [e_title || e_desc] (paper) or e_desc (official); title alone without descriptions."""
        c = self.settings
        fp_model = {**self.base, "llm": c.llm_path, "llm_files": self.llm_identity}
        title = self._cached(self.root / "e_title.npy", artifacts.fingerprint(fp_model),
                             lambda: text_embed.embed_texts(self.tools, descriptions.title_texts(self.data),
                                                            desc="title embeddings"))
        if not c.use_descriptions:
            return title
        texts = self.descriptions()
        fp_desc = artifacts.fingerprint({**fp_model, "texts": artifacts.fingerprint(texts)})
        desc = self._cached(self.root / "e_desc.npy", fp_desc,
                            lambda: text_embed.embed_texts(self.tools, texts, desc="description embeddings"))
        return descriptions.text_embeddings(title, desc, c.text_mode)

    # ---- collaborative ------------------------------------------------------------------------
    def graph_interactions(self) -> tuple[np.ndarray, np.ndarray]:
        if self.settings.graph == "official":
            family = next(k for k in OFFICIAL_GRAPH if self.data.name.startswith(k))
            users, items, _ = self.data.official_graph_interactions(*OFFICIAL_GRAPH[family])
        elif self.settings.graph == "train":
            users, items, _ = self.data.training_interactions()
        else:
            raise ValueError(f"retrieval.graph={self.settings.graph!r} is neither 'train' nor 'official'")
        return users, items

    def lightgcn_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(user_emb [U, d], item_emb [I, d]) of LightGCN trained on the configured graph (resumable)."""
        c = self.settings
        fp = artifacts.fingerprint({**self.base, "graph": c.graph, "lightgcn": c.lightgcn})
        folder = self.root / f"lightgcn_{fp}"
        trained: dict[str, np.ndarray] = {}

        def train(part: str):
            if not trained:
                users, items = self.graph_interactions()
                result = lightgcn.train_lightgcn(users, items, self.data.num_users, self.data.num_items,
                                                 c.lightgcn, workdir=str(folder), mesh=self.mesh)
                trained.update(user=result.user_emb, item=result.item_emb)
            return trained[part]

        user = self._cached(folder / "user_emb.npy", fp, lambda: train("user"))
        item = self._cached(folder / "item_emb.npy", fp, lambda: train("item"))
        # Nodes without a training interaction get zero rows (lightgcn.py); applied to cached arrays too, which
        # may predate that rule.
        user_seen, item_seen = lightgcn.seen_nodes(*self.graph_interactions(), self.data.num_users,
                                                   self.data.num_items)
        return lightgcn.zero_cold_rows(user, user_seen), lightgcn.zero_cold_rows(item, item_seen)

    def collaborative_embeddings(self) -> np.ndarray:
        return self.lightgcn_embeddings()[1]

    def ssl_embeddings(self, text: np.ndarray, colla: np.ndarray) -> np.ndarray:
        c = self.settings
        fp = artifacts.fingerprint({"text": artifacts.array_fingerprint(text),
                                    "colla": artifacts.array_fingerprint(colla), "ssl": c.ssl})
        return self._cached(self.root / "e_ssl.npy", fp,
                            lambda: ssl.train_ssl(text, colla, c.ssl, mesh=self.mesh).ssl_emb)

    # ---- similarity and retrieval -------------------------------------------------------------
    def similarity(self, kind: str | None = None) -> mix.ItemSimilarity:
        """The item similarity of one embedding kind, built once per stage object."""
        c = self.settings
        kind = kind or c.kind
        if kind not in self._similarities:
            self._similarities[kind] = self._build_similarity(kind)
        return self._similarities[kind]

    def _build_similarity(self, kind: str) -> mix.ItemSimilarity:
        c = self.settings
        two = ("hybrid", "retri_then_mix")  # mixtures of the text and colla kinds
        text = self.text_embeddings() if kind in ("text", "mix", "mix3") + two else None
        colla = self.collaborative_embeddings() if kind in ("colla", "mix", "mix3") + two else None
        ssl_emb = self.ssl_embeddings(text, colla) if kind == "mix3" else None
        return mix.ItemSimilarity(kind, text, colla, ssl_emb, c.style, c.pca_dim,
                                  text_center=c.text_center, text_pca=c.text_pca)

    def retrieve(self, split: str, indices: Sequence[int], order: str | None = None,
                 kind: str | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Ordered (item indices, ratings) for the samples `indices` of `split`; cached per request."""
        c = self.settings
        order, kind = order or c.order, kind or c.kind
        indices = [int(i) for i in indices]
        rcfg = retrieve.RetrievalConfig(k_history=c.k_history, order=order, gamma=c.gamma, beta=c.beta,
                                        official_variant=_official_variant(self.data.name))
        fp = artifacts.fingerprint({**self.base,
                                    "retrieval": {k: v for k, v in c.as_dict().items() if k not in ("lightgcn", "ssl")},
                                    "lightgcn": c.lightgcn, "ssl": c.ssl, "order": order,
                                    "llm_files": self.llm_identity if order != "simple" else None,
                                    "kind": kind, "indices": artifacts.fingerprint(indices)})
        path = self.root / "retrieved" / f"{split}_{kind}_{order}_{len(indices)}_{fp}.npz"
        if path.is_file():
            try:
                with np.load(path) as z:
                    out = _unflatten(z["items"], z["ratings"], z["counts"])
                self.artifacts.add(path)
                return out
            except (ValueError, OSError, KeyError) as exc:  # a damaged cache file: retrieve again
                logging.warning("retrieval: %s unreadable (%s); retrieving again", path, exc)
        similarity = None if order == "simple" else self.similarity(kind)
        hist = [self.data.history(split, i) for i in indices]
        targets = self.data.samples[split]["item"][indices]
        out = retrieve.retrieve_samples([h["item"] for h in hist], [h["rating"] for h in hist], targets,
                                        similarity, rcfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        counts = np.array([len(x[0]) for x in out], np.int32)
        if parallel.is_writer():
            empty = np.zeros(0, np.int32)
            artifacts.atomic_save_npz(path, items=np.concatenate([x[0] for x in out]) if out else empty,
                                      ratings=np.concatenate([x[1] for x in out]) if out else empty, counts=counts)
        self.artifacts.add(path)
        return out


def _official_variant(name: str) -> str:
    return "bx" if name == "bookcrossing" else "amazon" if name == "amazon" else "ml"


def _unflatten(items: np.ndarray, ratings: np.ndarray, counts: np.ndarray):
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [(items[a:b], ratings[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


# ---- library entry points (the experiments' mains and the notebook call these) ------------------------


def heldout_pairs(data: CTRData, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) of the split's positive targets: what LightGCN should rank high."""
    s = data.samples[split]
    keep = s["label"] == 1
    return s["user"][keep], s["item"][keep]


def evaluate_collaborative(stage: RetrievalStage, split: str = "validation", k: int = 20) -> dict:
    """Recall@K / NDCG@K of the stage's LightGCN on a split's liked targets, beside a popularity baseline."""
    train_pairs = stage.graph_interactions()
    eval_pairs = heldout_pairs(stage.data, split)
    user_emb, item_emb = stage.lightgcn_embeddings()
    ours = metrics.topk_metrics(user_emb, item_emb, train_pairs, eval_pairs, k=k)
    popular = metrics.popularity_metrics(train_pairs, eval_pairs, stage.data.num_users, stage.data.num_items, k=k)
    # Items (users) the graph never saw hold zero rows: no collaborative similarity, counted here.
    cold = {"cold_items": int((np.abs(item_emb).sum(1) == 0).sum()),
            "cold_users": int((np.abs(user_emb).sum(1) == 0).sum())}
    return {"split": split, "k": k, "lightgcn": ours, "popularity": popular, **cold}


def eval_indices(data: CTRData, config) -> list[int]:
    """The evaluated test rows: the evaluation sample of a full config (`eval_size` rows drawn as
    `eval_sample`, data/sampling.py); an int is the official first `eval_size` rows (all when 0)."""
    from rallrec_jax.data import sampling  # data is below retrieval: a downward import

    if isinstance(config, int):
        return sampling.draw(data.samples["test"]["user"], "test", config, "first").rows.tolist()
    return sampling.evaluation_sample(data, config).rows.tolist()


def run_step(config, workdir: str | os.PathLike, step: str, tools: text_embed.TextTools | None = None) -> dict:
    """One retrieval step from a full config (`config.data`, `config.retrieval`, `config.eval_size`):
    `lightgcn` trains and evaluates LightGCN; `ssl` aligns text to it; `retrieve` orders the evaluated
    test rows' histories. Returns a JSON-able summary (also printed by the experiments)."""
    from rallrec_jax.data import prepare  # data is below retrieval: a downward import

    data = prepare.prepare_data(config.data, workdir)
    stage = RetrievalStage(data, config.retrieval, workdir, tools=tools)
    if step == "lightgcn":
        return {"step": step, **{s: evaluate_collaborative(stage, s) for s in ("validation", "test")}}
    if step == "ssl":
        text, colla = stage.text_embeddings(), stage.collaborative_embeddings()
        e_ssl = stage.ssl_embeddings(text, colla)
        valid = np.linalg.norm(colla, axis=1) > 0
        unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
        cos = (unit(e_ssl[valid]) * unit(colla[valid])).sum(axis=1)
        return {"step": step, "items": int(valid.sum()), "mean_cos_to_own_colla": float(cos.mean()),
                "mean_cos_to_shuffled_colla": float((unit(e_ssl[valid]) * np.roll(unit(colla[valid]), 1, 0))
                                                    .sum(axis=1).mean())}
    if step == "retrieve":
        indices = eval_indices(data, config)
        out = stage.retrieve("test", indices)
        lengths = np.array([len(x[0]) for x in out])
        return {"step": step, "samples": len(out), "order": stage.settings.order, "kind": stage.settings.kind,
                "mean_items": float(lengths.mean()) if len(out) else 0.0}
    raise ValueError(f"retrieval step {step!r} is not one of lightgcn, ssl, retrieve")
