"""The retrieval stage end to end on real samples, with a tiny random decoder behind the real tokenizer."""
import numpy as np
import pytest

from configs import base_retrieval
from configs import test as test_config
from rallrec_jax import assets
from rallrec_jax.data import prepare
from rallrec_jax.llm import sampler as sampler_lib
from rallrec_jax.llm import scoring, tokenizer as tok_lib
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.model import create_model
from rallrec_jax.retrieval import stage as stage_lib
from rallrec_jax.retrieval import text_embed


@pytest.fixture(scope="module")
def tools():
    tokenizer = tok_lib.load_tokenizer(assets.smollm2_gguf())
    cfg = LlmConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                    num_kv_heads=1, head_dim=8, max_position_embeddings=2048)
    model = create_model(cfg, seed=0)
    pad = int(tokenizer.pad_token_id)
    return text_embed.TextTools(tokenizer, scoring.Scorer(model, pad, batch_size=32, padding_side="right"),
                                sampler_lib.Sampler(model, tok_lib.eos_ids(tokenizer), pad))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    config = test_config.get_config().data
    config.build_tfds = False
    return prepare.prepare_data(config, tmp_path_factory.mktemp("work"))


def _config():
    c = base_retrieval.retrieval_config()
    c.description_max_new_tokens = 4
    c.description_batch_size = 64
    c.embed_batch_size = 32
    c.lightgcn.epochs = 2
    c.lightgcn.batch_size = 256
    c.ssl.epochs = 3
    c.k_history = 5
    return c


def test_stage_retrieves_from_history_and_reuses_artifacts(data, tools, tmp_path):
    config = _config()
    stage = stage_lib.RetrievalStage(data, config, tmp_path, tools=tools)
    indices = list(range(data.num_samples("test")))
    out = stage.retrieve("test", indices, "rerank")
    for i, (items, ratings) in zip(indices, out):
        hist = data.history("test", i)
        target = data.samples["test"]["item"][i]
        assert 0 < len(items) <= 5 and target not in items
        assert set(items.tolist()) <= set(hist["item"].tolist())
        for item, rating in zip(items, ratings):  # each item keeps its last rating in the history
            assert rating == hist["rating"][np.flatnonzero(hist["item"] == item)[-1]]
    text = stage.text_embeddings()
    assert text.shape == (data.num_items, 32)  # [e_title || e_desc], 16 each
    assert len(stage.descriptions()) == data.num_items

    # A second stage over the same workdir reuses everything (no file rewritten: no generation, no training).
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "retrieval").rglob("*") if p.is_file()}
    again = stage_lib.RetrievalStage(data, config, tmp_path, tools=tools)
    out2 = again.retrieve("test", indices, "rerank")
    again.retrieve("test", indices, "high")
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(out, out2))
    # Retri.-then-Mix reads the same text and LightGCN embeddings: its list opens with the text list's
    # first ceil(5/2) = 3 items and then holds 2 more (when the collapsed history has them).
    text_high = again.retrieve("test", indices, "high", "text")
    mixed = again.retrieve("test", indices, "high", "retri_then_mix")
    for i, (t_items, _), (m_items, _) in zip(indices, text_high, mixed):
        np.testing.assert_array_equal(m_items[:3], t_items[:3])
        assert len(m_items) == len(t_items) and len(set(m_items.tolist())) == len(m_items)
        assert set(m_items.tolist()) <= set(data.history("test", i)["item"].tolist())
    for p, t in files.items():
        assert p.stat().st_mtime_ns == t, p

    # A changed LightGCN setting retrains LightGCN but leaves the text embeddings alone.
    config.lightgcn.epochs = 3
    changed = stage_lib.RetrievalStage(data, config, tmp_path, tools=tools)
    changed.collaborative_embeddings()
    assert (tmp_path / "retrieval" / "e_title.npy").stat().st_mtime_ns == files[tmp_path / "retrieval" / "e_title.npy"]
    assert len(list((tmp_path / "retrieval").glob("lightgcn_*"))) == 2


def test_official_graph_reaches_further_than_training(data, tools, tmp_path):
    config = _config()
    config.graph = "official"
    official = stage_lib.RetrievalStage(data, config, tmp_path, tools=tools).graph_interactions()
    config.graph = "train"
    train = stage_lib.RetrievalStage(data, config, tmp_path, tools=tools).graph_interactions()
    assert len(official[0]) > len(train[0])
    config.graph = "everything"
    with pytest.raises(ValueError, match="neither 'train' nor 'official'"):
        stage_lib.RetrievalStage(data, config, tmp_path, tools=tools).graph_interactions()


def test_embed_texts_rejects_over_long_text(tools):
    with pytest.raises(ValueError, match="over max_tokens=4"):
        text_embed.embed_texts(tools, ["a b c d e f g h"], max_tokens=4)


def _numpy_topk(scores, train_pairs, eval_pairs, k):
    """Recall@k (hits / held-out items) and NDCG@k per user with held-out items outside training, averaged;
    training items ranked last, ties to the lower item index (a stable sort)."""
    train = {(int(u), int(i)) for u, i in zip(*train_pairs)}
    held = {}
    for u, i in zip(*eval_pairs):
        if (int(u), int(i)) not in train:
            held.setdefault(int(u), set()).add(int(i))
    recalls, ndcgs = [], []
    for u, truth in held.items():
        s = scores[u].astype(np.float64).copy()
        s[[i for (v, i) in train if v == u]] = -np.inf
        top = np.argsort(-s, kind="stable")[:k]
        hits = np.array([i in truth for i in top], float)
        recalls.append(hits.sum() / len(truth))
        ideal = (1 / np.log2(np.arange(2, min(len(truth), k) + 2))).sum()
        ndcgs.append((hits / np.log2(np.arange(2, k + 2))).sum() / ideal)
    return {f"recall@{k}": np.mean(recalls), f"ndcg@{k}": np.mean(ndcgs), "eval_users": len(held)}


def test_collaborative_evaluation_reports_both_models(data, tools, tmp_path):
    config = _config()
    stage = stage_lib.RetrievalStage(data, config, tmp_path, tools=tools)
    report = stage_lib.evaluate_collaborative(stage, "validation", k=10)
    users, items = stage_lib.heldout_pairs(data, "validation")
    train_pairs = stage.graph_interactions()
    user_emb, item_emb = stage.lightgcn_embeddings()
    counts = np.bincount(np.unique(np.stack(train_pairs, 1), axis=0)[:, 1], minlength=data.num_items)
    want = {"lightgcn": _numpy_topk(user_emb.astype(np.float64) @ item_emb.astype(np.float64).T, train_pairs,
                                    (users, items), 10),
            "popularity": _numpy_topk(np.broadcast_to(counts, (data.num_users, data.num_items)), train_pairs,
                                      (users, items), 10)}
    for model in ("lightgcn", "popularity"):
        assert report[model] == pytest.approx(want[model], abs=1e-6)
        assert want[model]["recall@10"] > 0  # the check is not a trivial 0 == 0
    assert len(users) == int(data.samples["validation"]["label"].sum())
    # Items (users) the training graph never saw hold zero rows, and the stage counts them.
    graph_users, graph_items = stage.graph_interactions()
    cold_items = data.num_items - len(np.unique(graph_items))
    assert report["cold_items"] == cold_items and report["cold_users"] == data.num_users - len(np.unique(graph_users))
    _, item_emb = stage.lightgcn_embeddings()
    unseen = np.setdiff1d(np.arange(data.num_items), graph_items)
    assert cold_items == len(unseen) and not np.abs(item_emb[unseen]).any()


def test_stage_text_similarity_is_the_centred_cosine(data, tools, tmp_path):
    """The stage's paper-style text similarity: cosines of the text embeddings centred over the items
    (retrieval.text_center, default on); uncentred when switched off."""
    from sklearn.metrics.pairwise import cosine_similarity

    config = _config()
    config.use_descriptions = False
    stage = stage_lib.RetrievalStage(data, config, tmp_path, tools=tools)
    text = stage.text_embeddings().astype(np.float64)
    items = np.arange(0, data.num_items, 5)
    got = stage.similarity("text")(items, np.broadcast_to(items, (len(items), len(items))))
    np.testing.assert_allclose(got, cosine_similarity(text - text.mean(0))[np.ix_(items, items)], atol=2e-5)
    config.text_center = False
    plain = stage_lib.RetrievalStage(data, config, tmp_path, tools=tools).similarity("text")
    np.testing.assert_allclose(plain(items, np.broadcast_to(items, (len(items), len(items)))),
                               cosine_similarity(text)[np.ix_(items, items)], atol=2e-5)


def test_settings_hash_the_config_as_written_and_name_unknown_fields():
    """The cache fingerprints hash `as_dict`: it must be the config's own dict (types included), or every
    cached description, embedding and retrieval of an existing workdir would be computed again."""
    config = _config()
    typed = stage_lib.RetrievalSettings.from_config(config)
    want = config.to_dict()
    assert typed.as_dict() == want
    assert {k: type(v) for k, v in typed.as_dict().items()} == {k: type(v) for k, v in want.items()}
    assert typed.k_history == 5 and typed.lightgcn["epochs"] == 2 and typed.ssl["epochs"] == 3
    config.k_hisotry = 3
    with pytest.raises(ValueError, match=r"unknown retrieval config fields \['k_hisotry'\]"):
        stage_lib.RetrievalSettings.from_config(config)
