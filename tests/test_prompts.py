"""Prompts verbatim from the official templates, over-long prompts, instruction-tuning sets."""
import numpy as np
import pytest

from rallrec_jax.data import histories, recipes
from rallrec_jax.data.readers import amazon, bookcrossing, movielens
from rallrec_jax.generation import prompts
from rallrec_jax.prompts import ctr as ctr_prompts


@pytest.fixture(scope="module")
def ml1m(shared_data):
    return recipes.preprocess_temporal(movielens.read_movielens_1m(shared_data / "ml-1m"))


def test_render_item_and_list():
    assert ctr_prompts.render_item("Toy Story (1995)", 5) == "Toy Story (1995) (5 stars)"
    assert ctr_prompts.render_item("Heat (1995)", 1) == "Heat (1995) (1 star)"
    assert ctr_prompts.history_list(["A", "B's"], [4, 1]) == "['A (4 stars)', \"B's (1 star)\"]"


def test_movielens_prompt_is_verbatim(ml1m):
    builder = prompts.PromptBuilder(ml1m)
    # The first training sample: user 1's sixth rating in time order.
    shown = histories.recent_history(ml1m, "train", 0, 3)
    user = ml1m.samples["train"]["user"][0]
    profile = builder.profile(user)
    text = builder.text("train", 0, shown, "simple")
    female = profile["gender"] == "female"
    nom, obj = ("she", "Her") if female else ("he", "His")
    titles = [ml1m.item_fields["title"][e.item] for e in shown]
    ratings = [e.rating for e in shown]
    target = ml1m.item_fields["title"][ml1m.samples["train"]["item"][0]]
    expected = (
        f"The user is a {profile['gender']}. {obj} job is {profile['job']}. {obj} age is {profile['age']}.\n"
        f"{nom.capitalize()} watched the following movies in order in the past, and rated them:\n"
        f"{[f'{t} ({r} stars)' if r > 1 else f'{t} ({r} star)' for t, r in zip(titles, ratings)]}\n"
        "Note that more stars the user rated the movie, the user liked the movie more.\n"
        "And we think the user will like a new movie if the rating could be higher than 3 stars\n"
        f"Based on the movies {nom} has watched, deduce if {nom} will like the movie ***{target}***.\n"
        "You should ONLY tell me yes or no.")
    assert text == expected
    assert "most relevant movies" in builder.text("train", 0, shown, "high")
    assert "following relevant movies" in builder.text("train", 0, shown, "rerank")
    assert [e.position for e in shown] == [2, 3, 4]  # the three most recent of five, oldest first
    with pytest.raises(ValueError, match="history order 'random'"):
        builder.text("train", 0, shown, "random")


def test_bookcrossing_and_amazon_templates(shared_data):
    bx = recipes.preprocess_bookcrossing(bookcrossing.read_bookcrossing(shared_data / "bookcrossing"))
    text = prompts.PromptBuilder(bx).text("test", 0, histories.recent_history(bx, "test", 0, 2), "simple")
    lines = text.split("\n")
    assert lines[0].startswith("The user's location is ") and ". The user's age is " in lines[0]
    assert lines[1] == "The user read the following books in the past and rated them:"
    assert lines[-2] == "And we think the user will like a new book if the rating could be higher than 4 stars"
    # BookCrossing's simple order lists the most recent first.
    shown = histories.recent_history(bx, "test", 0, 2)
    assert shown[0].position > shown[1].position
    folder = shared_data / "amazon-2018"
    raw = amazon.read_amazon(folder / "Magazine_Subscriptions.csv", folder / "meta_Magazine_Subscriptions.json.gz",
                              1, None)
    az = recipes.preprocess_temporal(raw, drop_items_without="category", user_core=(5, None), item_core=(2, None))
    text = prompts.PromptBuilder(az).text("test", 0, histories.recent_history(az, "test", 0, 30), "high")
    assert text.startswith("The user watched the following movies in the past, and rated them:\n[")
    assert ctr_prompts.answer_text(1) == "Yes." and ctr_prompts.answer_text(0) == "No."


def test_over_long_prompt_drops_oldest_first(ml1m):
    builder = prompts.PromptBuilder(ml1m)
    index = int(np.argmax(ml1m.samples["test"]["position"][:100]))
    shown = histories.recent_history(ml1m, "test", index, 30)[::-1]  # shown most recent first
    words = lambda t: len(t.split())  # noqa: E731  a stand-in token counter
    full = builder.build("test", index, shown, "high", words, 10_000)
    assert full.dropped == 0 and len(full.shown) == 30
    budget = words(full.text) - 20
    cut = builder.build("test", index, shown, "high", words, budget)
    assert cut.dropped > 0 and words(cut.text) <= budget
    kept = {e.position for e in cut.shown}
    gone = {e.position for e in shown} - kept
    assert max(gone) < min(kept)  # only the oldest went
    assert len(cut.shown) + cut.dropped == 30
    # Keeping one more (the newest dropped) would not fit: the fewest items were dropped.
    newest_gone = next(e for e in shown if e.position == max(gone))
    one_more = [e for e in shown if e.position in kept or e is newest_gone]
    assert words(builder.text("test", index, one_more, "high")) > budget
    with pytest.raises(ValueError, match="even with no history"):
        builder.build("test", index, shown, "high", words, 20)


def test_retrieved_items_take_their_latest_rating(ml1m):
    hist = ml1m.history("train", 10)
    entries = histories.positions_in_history(ml1m, "train", 10, [int(hist["item"][0]), int(hist["item"][-1])])
    assert entries[0].position == 0 and entries[1].position == len(hist["item"]) - 1
    with pytest.raises(ValueError, match="not in the sample's history"):
        histories.positions_in_history(ml1m, "train", 10, [int(ml1m.samples["train"]["item"][10])])
