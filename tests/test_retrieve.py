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
TEXT_VECS = np.random.default_rng(8).normal(size=(50, 4))
COLLA_VECS = np.random.default_rng(9).normal(size=(50, 4))
COLLA_VECS[::7] = 0.0  # items without interactions: colla similarity 0, ties broken by item index


def similarity(targets, cands):
    return np.einsum("bd,bhd->bh", ITEM_VECS[targets], ITEM_VECS[cands])


def two_channel_similarity(targets, cands):
    """[B, H, 2] (text, colla), rounded so that both channels hold many ties."""
    text = np.einsum("bd,bhd->bh", TEXT_VECS[targets], TEXT_VECS[cands])
    colla = np.einsum("bd,bhd->bh", COLLA_VECS[targets], COLLA_VECS[cands])
    return np.round(np.stack([text, colla], axis=-1), 1)


@pytest.mark.parametrize("order", R.ORDERS)
@pytest.mark.parametrize("k", [5, 30])
@pytest.mark.parametrize("channels", [1, 2])
def test_batch_equals_per_sample_and_stays_in_history(order, k, channels):
    hist, rates, targets = random_samples()
    similarity_fn = similarity if channels == 1 else two_channel_similarity
    for variant in (R.OFFICIAL_VARIANTS if order == "official_rerank" else ("ml",)):
        cfg = R.RetrievalConfig(order=order, k_history=k, official_variant=variant)
        batch = R.retrieve_samples(hist, rates, targets, similarity_fn, cfg, chunk=64)
        for h, r, t, (got_items, got_ratings) in zip(hist, rates, targets, batch):
            ref_items, ref_ratings = R.order_history(h, r, t, similarity_fn(np.array([t]), h[None])[0], cfg)
            np.testing.assert_array_equal(got_items, ref_items)
            np.testing.assert_array_equal(got_ratings, ref_ratings)
            assert t not in got_items.tolist()
            assert set(got_items.tolist()) <= set(h.tolist())
            assert len(set(got_items.tolist())) == len(got_items) <= k
            n_distinct = len(set(h.tolist()) - {t})
            assert len(got_items) == min(k, n_distinct)
            for it, ra in zip(got_items, got_ratings):  # last rating of a repeated item
                assert ra == r[np.flatnonzero(h == it)[-1]]


# ----------------------------------------------------------------------------- Retri.-then-Mix (Fig. 8)
# One target; items 10..19. Text ranking 13 > 17 > 11 > 19 > 10 > 12 > 14 > 15 > 16 > 18, colla ranking
# 17 > 13 > 15 > 12 > 11 > 18 > 19 > 10 > 14 > 16: the two overlap at the top, so the colla half must walk
# past 17 and 13. Item 0 (never in a history) is the best of both: padding (read as item 0) must not count.
TEXT_ORDER = [13, 17, 11, 19, 10, 12, 14, 15, 16, 18]
COLLA_ORDER = [17, 13, 15, 12, 11, 18, 19, 10, 14, 16]
TEXT_TABLE = np.zeros(20)
COLLA_TABLE = np.zeros(20)
TEXT_TABLE[TEXT_ORDER] = np.linspace(0.9, 0.0, 10)
COLLA_TABLE[COLLA_ORDER] = np.linspace(0.9, 0.0, 10)
TEXT_TABLE[0] = COLLA_TABLE[0] = 5.0


def hand_two_channel(targets, cands):
    return np.stack([TEXT_TABLE[cands], COLLA_TABLE[cands]], axis=-1)  # [B, H, 2]


def rtm(history, k, order="high", target=1, ratings=None, **kw):
    """(per-sample, batched with a longer padded row beside it) item lists; asserts they agree."""
    history = np.asarray(history, np.int64)
    ratings = np.arange(len(history)) + 1 if ratings is None else np.asarray(ratings)
    cfg = R.RetrievalConfig(order=order, k_history=k, **kw)
    one, _ = R.order_history(history, ratings, target, hand_two_channel(np.array([target]), history[None])[0], cfg)
    longer = np.arange(10, 20)
    batch = R.retrieve_samples([history, longer], [ratings, np.ones(10, int)], [target, 1], hand_two_channel, cfg)
    np.testing.assert_array_equal(batch[0][0], one)
    return one.tolist()


HISTORY = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]  # chronological


@pytest.mark.parametrize("k,expect", [
    (4, [13, 17, 15, 12]),  # K1 = 2 text (13, 17); colla 17, 13 taken -> 15, 12
    (5, [13, 17, 11, 15, 12]),  # K1 = 3 text, K2 = 2
    (6, [13, 17, 11, 15, 12, 18]),  # colla skips 11 as well
    (1, [13]),  # K1 = 1, K2 = 0
    (2, [13, 17]),  # K1 = 1: 13; colla: 17
    (10, TEXT_ORDER[:5] + [15, 12, 18, 14, 16]),  # every item exactly once
    (30, TEXT_ORDER[:10]),  # history shorter than K1: all of it, in text order
])
def test_retri_then_mix_takes_half_from_each_ranking(k, expect):
    assert rtm(HISTORY, k) == expect


def test_retri_then_mix_short_history_target_and_repeats():
    # Shorter than K but longer than K1: K1 = 3 text (13, 17, 11), then colla 15 (17, 13 taken).
    assert rtm([11, 13, 15, 17], 5) == [13, 17, 11, 15]
    # Target inside the history: dropped before both rankings, so 17 is in neither walk.
    assert rtm(HISTORY, 4, target=17) == [13, 11, 15, 12]
    assert rtm(HISTORY, 5, target=13) == [17, 11, 19, 15, 12]
    # Repeats: 13 seen three times counts once (its last rating); if the earlier copies took text slots,
    # the list would be [13, 13, ...] or lose 17.
    items = [13, 10, 13, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    ratings = [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3, 4]
    assert rtm(items, 4, ratings=ratings) == [13, 17, 15, 12]
    got_items, got_ratings = R.order_history(np.array(items), np.array(ratings), 1,
                                             hand_two_channel(np.array([1]), np.array([items]))[0],
                                             R.RetrievalConfig(order="high", k_history=4))
    assert got_ratings.tolist() == [4, 2, 2, 5]  # last ratings of 13, 17, 15, 12
    assert rtm([], 4) == []
    assert rtm([17], 4, target=17) == []


def test_retri_then_mix_orders_work_on_the_composite_ranking():
    high = rtm(HISTORY, 5)
    assert rtm(HISTORY, 5, "sequential") == sorted(high)  # items 10..19 are chronological
    assert rtm(HISTORY, 5, "rerank", gamma=1.0) == high  # pure embedding channel = the Retri.-then-Mix list
    # gamma 2/3, K 5: scores 2/3 (list #1 = 13), 1/3 (list #2 = 17 and recent #1 = 19), 2/9 (list #3 = 11),
    # 1/6 (list #4 = 15 and recent #2 = 18: the embedding channel wins the tie)
    assert rtm(HISTORY, 5, "rerank") == [13, 17, 19, 11, 15]
    # official ML: the list [13, 17, 11, 15, 12] most recent first, its K1 = 3 first (17, 15, 13), then the
    # 2 most recent left, chronological
    assert rtm(HISTORY, 5, "official_rerank") == [17, 15, 13, 18, 19]
    assert rtm(HISTORY, 5, "simple") == [15, 16, 17, 18, 19]


def test_retri_then_mix_similarity_shape_is_checked():
    with pytest.raises(ValueError, match="Retri.-then-Mix"):
        R.order_history(np.arange(3), np.ones(3), 9, np.zeros((3, 3)), R.RetrievalConfig(order="high"))
    with pytest.raises(ValueError, match="Retri.-then-Mix"):
        R.retrieve_batch(np.arange(3)[None], np.ones((1, 3)), np.array([9]), np.zeros((1, 3, 3)),
                         R.RetrievalConfig(order="high"))
