"""History retrieval orders and the eq. 8 reranker."""
import numpy as np
import pytest

from rallrec_jax.retrieval import retrieve as R


def test_collapse_drops_target_and_keeps_last_occurrence():
    items = np.array([5, 3, 9, 3, 7, 5, 2])
    ratings = np.array([1, 2, 3, 4, 5, 1, 3])
    got_items, got_ratings, pos = R.collapse_history(items, ratings, target=7)
    np.testing.assert_array_equal(got_items, [9, 3, 5, 2])
    np.testing.assert_array_equal(got_ratings, [3, 4, 1, 3])  # item 3 -> its last rating 4
    np.testing.assert_array_equal(pos, [2, 3, 5, 6])


def hand_sample(n=60):
    """Items 100..100+n-1 watched in that order; similarity highest for the OLDEST items, so channels differ."""
    items = np.arange(100, 100 + n)
    ratings = np.arange(n) % 5 + 1
    sim = np.linspace(1.0, 0.0, n)  # oldest most similar
    return items, ratings, sim


def channel_counts(chosen, items):
    """(number from the 30 most similar = oldest 30, number from the 30 most recent)."""
    oldest, newest = set(items[:30].tolist()), set(items[-30:].tolist())
    return sum(c in oldest for c in chosen.tolist()), sum(c in newest for c in chosen.tolist())


@pytest.mark.parametrize("gamma,expect_emb", [(2 / 3, 20), (0.5, 15), (0.8, 24), (1.0, 30), (0.0, 0)])
def test_rerank_gamma_splits_channels(gamma, expect_emb):
    items, ratings, sim = hand_sample()
    cfg = R.RetrievalConfig(order="rerank", gamma=gamma, beta=1.0, k_history=30)
    got, got_r = R.order_history(items, ratings, target=1, similarity=sim, config=cfg)
    assert len(got) == 30 and len(set(got.tolist())) == 30
    n_emb, n_time = channel_counts(got, items)
    assert (n_emb, n_time) == (expect_emb, 30 - expect_emb)
    if gamma == 1.0:  # pure similarity: the `high` list
        high, _ = R.order_history(items, ratings, 1, sim, R.RetrievalConfig(order="high"))
        np.testing.assert_array_equal(got, high)
    # ratings travel with their items
    np.testing.assert_array_equal(got_r, ratings[got - 100])


def test_rerank_score_order_and_beta():
    items, ratings, sim = hand_sample()
    got, _ = R.order_history(items, ratings, 1, sim, R.RetrievalConfig(order="rerank", gamma=2 / 3, beta=1.0))
    # Scores 2/3 (emb #1), then 1/3: emb #2 and time #1 tie (embedding first), then 2/9 (emb #3), ...
    assert got[:4].tolist() == [100, 101, 159, 102]
    # beta = 0: the position does not matter, the heavier channel wins every slot.
    got0, _ = R.order_history(items, ratings, 1, sim, R.RetrievalConfig(order="rerank", gamma=0.6, beta=0.0))
    assert channel_counts(got0, items) == (30, 0)


def test_rerank_item_in_both_channels_counted_once():
    items, ratings, _ = hand_sample()
    sim = np.linspace(0.0, 1.0, 60)  # newest most similar: the two channels are the same 30 items
    got, _ = R.order_history(items, ratings, 1, sim, R.RetrievalConfig(order="rerank"))
    assert len(got) == 30 and len(set(got.tolist())) == 30
    np.testing.assert_array_equal(np.sort(got), items[-30:])
    # Partial overlap: 10 recent items are also the 10 most similar -> 30 distinct, deeper ranks fill in.
    sim = np.concatenate([np.linspace(0.5, 0.0, 50), np.linspace(0.6, 1.0, 10)])
    got, _ = R.order_history(items, ratings, 1, sim, R.RetrievalConfig(order="rerank"))
    assert len(set(got.tolist())) == 30


def test_simple_high_sequential_definitions():
    items, ratings, sim = hand_sample(40)
    rng = np.random.default_rng(0)
    sim = rng.permutation(sim)
    simple, _ = R.order_history(items, ratings, 1, None, R.RetrievalConfig(order="simple", k_history=5))
    np.testing.assert_array_equal(simple, items[-5:])
    high, _ = R.order_history(items, ratings, 1, sim, R.RetrievalConfig(order="high", k_history=5))
    np.testing.assert_array_equal(high, items[np.argsort(-sim)[:5]])
    seq, _ = R.order_history(items, ratings, 1, sim, R.RetrievalConfig(order="sequential", k_history=5))
    np.testing.assert_array_equal(seq, np.sort(high))
    with pytest.raises(ValueError, match="similarities"):
        R.order_history(items, ratings, 1, None, R.RetrievalConfig(order="high"))
    with pytest.raises(ValueError, match="order"):
        R.RetrievalConfig(order="random")


def test_official_rerank_hard_split():
    items, ratings, sim = hand_sample()  # oldest most similar
    got, _ = R.order_history(items, ratings, 1, sim, R.RetrievalConfig(order="official_rerank"))
    # ML: the 30 most similar (oldest 30) sorted most recent first, first 20 -> items 129..110,
    # then the 10 most recent not chosen, chronological -> 150..159.
    assert got.tolist() == list(range(129, 109, -1)) + list(range(150, 160))
    bx, _ = R.order_history(items, ratings, 1, sim, R.RetrievalConfig(order="official_rerank",
                                                                      official_variant="bx"))
    assert bx.tolist() == list(range(100, 120)) + list(range(159, 149, -1))
    # Amazon with a history no longer than K: plain similarity list.
    short_items, short_r, short_sim = items[:25], ratings[:25], sim[:25]
    amz, _ = R.order_history(short_items, short_r, 1, short_sim,
                             R.RetrievalConfig(order="official_rerank", official_variant="amazon"))
    high, _ = R.order_history(short_items, short_r, 1, short_sim, R.RetrievalConfig(order="high"))
    np.testing.assert_array_equal(amz, high)
    ml, _ = R.order_history(short_items, short_r, 1, short_sim, R.RetrievalConfig(order="official_rerank"))
    # ML reranks a short history too: 20 most recent of the relevant, then the 5 left, chronological.
    assert ml.tolist() == list(range(124, 104, -1)) + list(range(100, 105))


def random_samples(num=200, num_items=50, seed=0):
    rng = np.random.default_rng(seed)
    hist, rates, targets = [], [], []
    for _ in range(num):
        n = int(rng.integers(0, 70))
        hist.append(rng.integers(0, num_items, n))  # repeats and the target may occur
        rates.append(rng.integers(1, 6, n))
        targets.append(int(rng.integers(0, num_items)))
    return hist, rates, np.array(targets)


ITEM_VECS = np.random.default_rng(7).normal(size=(50, 4))


def similarity(targets, cands):
    return np.einsum("bd,bhd->bh", ITEM_VECS[targets], ITEM_VECS[cands])


@pytest.mark.parametrize("order", R.ORDERS)
@pytest.mark.parametrize("k", [5, 30])
def test_batch_equals_per_sample_and_stays_in_history(order, k):
    hist, rates, targets = random_samples()
    for variant in (R.OFFICIAL_VARIANTS if order == "official_rerank" else ("ml",)):
        cfg = R.RetrievalConfig(order=order, k_history=k, official_variant=variant)
        batch = R.retrieve_samples(hist, rates, targets, similarity, cfg, chunk=64)
        for h, r, t, (got_items, got_ratings) in zip(hist, rates, targets, batch):
            ref_items, ref_ratings = R.order_history(h, r, t, similarity(np.array([t]), h[None])[0], cfg)
            np.testing.assert_array_equal(got_items, ref_items)
            np.testing.assert_array_equal(got_ratings, ref_ratings)
            assert t not in got_items.tolist()
            assert set(got_items.tolist()) <= set(h.tolist())
            assert len(set(got_items.tolist())) == len(got_items) <= k
            n_distinct = len(set(h.tolist()) - {t})
            assert len(got_items) == min(k, n_distinct)
            for it, ra in zip(got_items, got_ratings):  # last rating of a repeated item
                assert ra == r[np.flatnonzero(h == it)[-1]]
