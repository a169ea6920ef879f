"""Evaluation samples (data/sampling.py): seeded, no repeats, capped per user, covering min(users, n) users,
every prefix itself such a sample; the official first-N rows as an option; saved and read back."""
import numpy as np
import pytest

from rallrec_jax.data import sampling


def _users(seed=0, num_users=50):
    """A time-sorted-like split: users with very unequal row counts (1 to ~400), in long runs."""
    rng = np.random.default_rng(seed)
    counts = np.maximum(1, rng.pareto(1.2, num_users) * 20).astype(int)
    return np.repeat(rng.permutation(num_users), counts)


@pytest.mark.parametrize("n, cap", [(10, 5), (50, 5), (120, 5), (300, 10), (100000, 3), (0, 4)])
def test_stratified_sample_properties(n, cap):
    users = _users()
    s = sampling.draw(users, "test", n, "stratified", cap, seed=7)
    rows = s.rows
    assert len(np.unique(rows)) == len(rows)  # no row twice
    assert ((rows >= 0) & (rows < len(users))).all()
    np.testing.assert_array_equal(s.users, users[rows])
    per_user = np.bincount(s.users)
    if n:
        assert per_user.max() <= cap
        pool = int(np.minimum(np.bincount(users), cap).sum())
        assert len(rows) == min(n, pool)
    else:  # the whole split, ordered
        assert sorted(rows.tolist()) == list(range(len(users)))
    num_users = len(np.unique(users))
    assert s.num_users == min(num_users, len(rows))
    # Every prefix covers min(users, its length) users: the first rows are one per user.
    for m in (1, 7, num_users, len(rows)):
        assert len(np.unique(s.users[:m])) == min(num_users, m, len(rows))
    again = sampling.draw(users, "test", n, "stratified", cap, seed=7)
    np.testing.assert_array_equal(again.rows, rows)  # deterministic per seed
    other = sampling.draw(users, "test", n, "stratified", cap, seed=8)
    if 0 < len(rows) < len(users):
        assert not np.array_equal(np.sort(other.rows), np.sort(rows))


def test_the_fill_is_uniform_over_the_capped_pool():
    """Beyond one row per user, every capped-pool row is equally likely: with cap 3, a user's 2nd and 3rd rows
    are drawn as often as any other user's, and no row past the cap ever is."""
    users = np.repeat(np.arange(10), [1, 3, 3, 3, 8, 8, 20, 40, 40, 100])
    hits = np.zeros(len(users))
    for seed in range(400):
        hits[sampling.draw(users, "test", 16, "stratified", 3, seed).rows] += 1
    per_user = np.bincount(users, weights=hits) / 400
    np.testing.assert_allclose(per_user[0], 1.0)  # a single-row user is always in
    # Every other user: 1 row for sure + 6 fill rows over 2 * 9 = 18 candidates -> 1 + 2 * 6 / 18 = 1.33.
    np.testing.assert_allclose(per_user[1:], 1 + 2 * 6 / 18, atol=0.08)


def test_first_rows_and_the_description():
    users = _users()
    s = sampling.draw(users, "test", 30, "first")
    np.testing.assert_array_equal(s.rows, np.arange(30))
    assert "first 30 rows" in s.describe() and s.user_cap == 0
    big = sampling.draw(users, "test", 10 ** 6, "first")
    assert len(big) == len(users)  # more asked than the split holds: the split, and it says so
    assert big.describe().startswith(f"{len(users):,} of {len(users):,} test rows")
    strat = sampling.draw(users, "test", 40, "stratified", 5, seed=1)
    text = strat.describe()
    assert text.startswith(f"40 of {len(users):,} test rows, 40 users")
    assert "seed 1" in text and "5 rows per user" in text
    with pytest.raises(ValueError, match="eval_sample='random' is not one of"):
        sampling.draw(users, "test", 10, "random")


def test_prefix_save_and_load(tmp_path):
    s = sampling.draw(_users(), "validation", 80, "stratified", 4, seed=2)
    head = s.prefix(20)
    np.testing.assert_array_equal(head.rows, s.rows[:20])
    assert head.num_users == 20
    path = s.save(tmp_path / "evaluate" / "sample.json")
    back = sampling.EvalSample.load(path)
    np.testing.assert_array_equal(back.rows, s.rows)
    assert back.summary() == s.summary()
    path.write_text("{")
    with pytest.raises(ValueError, match="not a readable evaluation sample"):
        sampling.EvalSample.load(path)


def test_settings_from_config_sections():
    import ml_collections

    c = ml_collections.ConfigDict({"eval_size": 200, "eval_sample": "first", "eval_user_cap": 3, "eval_seed": 9})
    assert sampling.sample_settings(c) == {"n": 200, "how": "first", "user_cap": 3, "seed": 9}
    assert sampling.sample_settings(ml_collections.ConfigDict({"eval_size": 5})) == {
        "n": 5, "how": "stratified", "user_cap": 10, "seed": 0}


def test_a_larger_sample_extends_a_smaller_one():
    """The draw's order does not depend on n: a run scoring more rows keeps the rows already scored."""
    users = _users(3)
    small = sampling.draw(users, "test", 30, "stratified", 6, seed=4)
    large = sampling.draw(users, "test", 400, "stratified", 6, seed=4)
    np.testing.assert_array_equal(large.rows[:30], small.rows)
