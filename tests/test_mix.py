"""Embedding mixtures: PCA vs sklearn, normalisations, Table 6 similarity variants, on-the-fly scoring."""
import numpy as np
import pytest
from scipy.special import softmax
from sklearn.decomposition import PCA
from sklearn.metrics.pairwise import cosine_similarity

from rallrec_jax.retrieval import mix as M
from rallrec_jax.retrieval import retrieve as R

RNG = np.random.default_rng(0)
NUM_ITEMS = 40
TEXT = (RNG.normal(size=(NUM_ITEMS, 160)) @ RNG.normal(size=(160, 160))).astype(np.float32) + 3.0
COLLA = RNG.normal(scale=0.3, size=(NUM_ITEMS, 8)).astype(np.float32)
COLLA[5] = 0.0  # an item without interactions
SSL = RNG.normal(size=(NUM_ITEMS, 8)).astype(np.float32)


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))


def test_pca_matches_sklearn_up_to_sign():
    ours = M.pca(TEXT, 16)
    ref = PCA(n_components=16).fit_transform(TEXT.astype(np.float64))
    signs = np.sign((ours * ref).sum(0))
    assert np.all(signs != 0)
    np.testing.assert_allclose(ours * signs, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    with pytest.raises(ValueError, match="n_components"):
        M.pca(TEXT, 500)


def test_normalisations():
    n = M.l2_normalize_rows(COLLA)
    norms = np.linalg.norm(n, axis=1)
    np.testing.assert_allclose(np.delete(norms, 5), 1.0, rtol=1e-6)
    assert norms[5] == 0.0 and np.isfinite(n).all()
    s = M.scale_by_max_row_norm(COLLA)
    np.testing.assert_allclose(np.linalg.norm(s, axis=1).max(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(s * np.linalg.norm(COLLA, axis=1).max(), COLLA, rtol=1e-5)  # one scalar


def test_paper_mix3_is_sum_of_block_cosines():
    emb = M.mixed_embedding("mix3", TEXT, COLLA, SSL, style="paper")
    assert emb.shape == (NUM_ITEMS, 160 + 8 + 8)
    for a, b in [(0, 1), (3, 7), (5, 9), (12, 12)]:
        expect = cos(TEXT[a], TEXT[b]) + cos(COLLA[a], COLLA[b]) + cos(SSL[a], SSL[b])
        np.testing.assert_allclose(emb[a] @ emb[b], expect, rtol=1e-5, atol=1e-6)
    mix = M.mixed_embedding("mix", TEXT, COLLA, style="paper")
    np.testing.assert_allclose(mix[3] @ mix[7], cos(TEXT[3], TEXT[7]) + cos(COLLA[3], COLLA[7]), rtol=1e-5)


def test_official_mix3_is_cosine_of_scaled_blocks():
    sim = M.ItemSimilarity("mix3", TEXT, COLLA, SSL, style="official", pca_dim=32).matrix()
    t = PCA(n_components=32).fit_transform(TEXT.astype(np.float64))
    blocks = [x / np.linalg.norm(x, axis=1).max() for x in (t, COLLA.astype(np.float64), SSL.astype(np.float64))]
    ref = cosine_similarity(np.concatenate(blocks, axis=1))  # sign flips of PCA components do not change it
    np.testing.assert_allclose(sim, ref, rtol=1e-4, atol=1e-5)
    text_only = M.ItemSimilarity("text", TEXT, style="official", pca_dim=32).matrix()
    np.testing.assert_allclose(text_only, cosine_similarity(t), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("style", M.STYLES)
def test_hybrid_score(style):
    sim = M.ItemSimilarity("hybrid", TEXT, COLLA, style=style, pca_dim=32).matrix()
    t = PCA(n_components=32).fit_transform(TEXT.astype(np.float64)) if style == "official" else TEXT
    ref = 0.5 * softmax(cosine_similarity(t), axis=1) + 0.5 * softmax(cosine_similarity(COLLA), axis=1)
    np.testing.assert_allclose(sim, ref, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(sim.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind", M.KINDS)
def test_on_the_fly_scores_equal_the_matrix(kind):
    sim = M.ItemSimilarity(kind, TEXT, COLLA, SSL, chunk=7)
    full = sim.matrix()
    targets = RNG.integers(0, NUM_ITEMS, 20)
    cands = RNG.integers(0, NUM_ITEMS, (20, 11))
    np.testing.assert_allclose(sim(targets, cands), full[targets[:, None], cands], rtol=1e-5, atol=1e-6)
    assert np.isfinite(full).all()
    with pytest.raises(ValueError, match="outside"):
        sim(targets, cands + NUM_ITEMS)


def test_missing_blocks_and_shapes_are_named():
    with pytest.raises(ValueError, match="ssl"):
        M.mixed_embedding("mix3", TEXT, COLLA, None)
    with pytest.raises(ValueError, match="colla embeddings have 3 rows"):
        M.mixed_embedding("mix", TEXT, COLLA[:3])


def test_high_retrieval_equals_official_walk_of_global_ranking():
    """The code walks argsort(-sim[t]) over all items, keeping history members until K are found."""
    sim = M.ItemSimilarity("mix3", TEXT, COLLA, SSL, style="official", pca_dim=32)
    full = sim.matrix()
    rng = np.random.default_rng(1)
    for _ in range(20):
        target = int(rng.integers(0, NUM_ITEMS))
        hist = rng.choice(np.delete(np.arange(NUM_ITEMS), target), size=25, replace=False)
        ratings = rng.integers(1, 6, 25)
        walk = [i for i in np.argsort(-full[target], kind="stable") if i in set(hist.tolist())][:10]
        got = R.retrieve_samples([hist], [ratings], [target], sim, R.RetrievalConfig(order="high", k_history=10))
        np.testing.assert_array_equal(got[0][0], walk)


@pytest.mark.parametrize("style", M.STYLES)
def test_retri_then_mix_channels_are_the_text_and_colla_kinds(style):
    both = M.ItemSimilarity("retri_then_mix", TEXT, COLLA, style=style, pca_dim=32)
    assert both.channels == 2 and M.ItemSimilarity("mix3", TEXT, COLLA, SSL).channels == 1
    full = both.matrix()
    assert full.shape == (NUM_ITEMS, NUM_ITEMS, 2)
    text = M.ItemSimilarity("text", TEXT, style=style, pca_dim=32).matrix()
    colla = M.ItemSimilarity("colla", colla=COLLA, style=style).matrix()
    np.testing.assert_allclose(full[..., 0], text, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full[..., 1], colla, rtol=1e-5, atol=1e-6)
    assert not np.allclose(text, colla)  # the two rankings really differ
    assert np.all(full[5, :, 1] == 0)  # no interactions: colla 0, never NaN
    with pytest.raises(ValueError, match="single embedding"):
        M.mixed_embedding("retri_then_mix", TEXT, COLLA)
    with pytest.raises(ValueError, match="colla"):
        M.ItemSimilarity("retri_then_mix", TEXT, None)


@pytest.mark.parametrize("k", [9, 10])
def test_retri_then_mix_high_equals_official_hybrid_walk(k):
    """The code's `hybrid_ret_get_prompt`: walk the text index keeping history members until K1 = (K+1)//2,
    then the colla index keeping history members not taken yet until K2 = K - K1 more."""
    sim = M.ItemSimilarity("retri_then_mix", TEXT, COLLA, style="official", pca_dim=32)
    full = sim.matrix()
    rng = np.random.default_rng(2)
    k1 = (k + 1) // 2
    for _ in range(20):
        target = int(rng.integers(0, NUM_ITEMS))
        hist = rng.choice(np.delete(np.arange(NUM_ITEMS), target), size=25, replace=False)
        members = set(hist.tolist())
        walk = [i for i in np.argsort(-full[target, :, 0], kind="stable") if i in members][:k1]
        walk += [i for i in np.argsort(-full[target, :, 1], kind="stable") if i in members and i not in walk][:k - k1]
        got = R.retrieve_samples([hist], [rng.integers(1, 6, 25)], [target], sim,
                                 R.RetrievalConfig(order="high", k_history=k))
        np.testing.assert_array_equal(got[0][0], walk)


# An anisotropic text block, as mean-pooled LLM states are: one large shared direction plus item structure.
ANISO = (8.0 * RNG.normal(size=(1, 64)) + RNG.normal(size=(NUM_ITEMS, 64))).astype(np.float32)


@pytest.mark.parametrize("kind", ["text", "mix3"])
def test_paper_style_centres_the_text_block_before_its_norm(kind):
    centred = ANISO - ANISO.astype(np.float64).mean(0)
    got = M.ItemSimilarity(kind, ANISO, COLLA, SSL, style="paper", text_center=True).matrix()
    # (sklearn's cosine of the zero colla row 5 is 0, as the mixture's)
    ref = cosine_similarity(centred) + (0 if kind == "text" else cosine_similarity(COLLA) + cosine_similarity(SSL))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # Uncentred, the text cosines bunch near 1; centred, they spread around 0.
    raw = cosine_similarity(ANISO)[np.triu_indices(NUM_ITEMS, 1)]
    fixed = cosine_similarity(centred)[np.triu_indices(NUM_ITEMS, 1)]
    assert raw.mean() > 0.9 and abs(fixed.mean()) < 0.1 and fixed.std() > 3 * raw.std()


def test_paper_style_text_pca_equals_sklearn():
    got = M.ItemSimilarity("text", ANISO, style="paper", text_center=True, text_pca=12).matrix()
    ref = cosine_similarity(PCA(n_components=12).fit_transform(ANISO.astype(np.float64)))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # The hybrid and Retri.-then-Mix text channels read the same prepared block.
    two = M.ItemSimilarity("retri_then_mix", ANISO, COLLA, style="paper", text_center=True, text_pca=12).matrix()
    np.testing.assert_allclose(two[..., 0], ref, rtol=1e-4, atol=1e-5)
