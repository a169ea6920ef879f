"""CTR prompts, verbatim from the official templates (paper-spec 3.1), for every history order.

A prompt is built from a sample's profile, its target, and an *ordered* history: the list of
(item, rating, position) that retrieval chose, in the order it is to be shown. `position` is the
item's place in the user's chronological history, so that a prompt that does not fit the model's
context can drop the *oldest* items first, whatever order they are shown in.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

from rallrec_jax.data.ctr import CTRData

ORDERS = ("simple", "high", "sequential", "rerank")
SYSTEM_PROMPT = "You are a friendly and helpful assistant who always responds to the query from users."

_ML_HISTORY_HEADER = {
    "simple": "watched the following movies in order in the past, and rated them:",
    "sequential": "watched the following movies in order in the past, and rated them:",
    "high": "watched the following most relevant movies in the past, and rated them:",
    "rerank": "watched the following relevant movies in the past, and rated them:",
}


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    item: int  # item index
    rating: int
    position: int  # place in the user's chronological history (0 = oldest)


def render_item(title: str, rating: int) -> str:
    """`Toy Story (1995) (5 stars)`; one star reads `(1 star)` as the official code."""
    return f"{title} ({rating}" + (" stars)" if rating > 1 else " star)")


def history_list(titles: Sequence[str], ratings: Sequence[int]) -> str:
    """The official prompts paste the Python repr of the list of rendered items."""
    return str([render_item(t, int(r)) for t, r in zip(titles, ratings)])


_MOVIE_RULES = (
    "Note that more stars the user rated the movie, the user liked the movie more.",
    "And we think the user will like a new movie if the rating could be higher than 3 stars",
)


def _movielens(profile: dict, hist: str, target: str, order: str) -> str:
    female = profile["gender"] == "female"
    nom, obj = ("she", "Her") if female else ("he", "His")
    return "\n".join([
        f"The user is a {profile['gender']}. {obj} job is {profile['job']}. {obj} age is {profile['age']}.",
        f"{nom.capitalize()} {_ML_HISTORY_HEADER[order]}",
        hist,
        *_MOVIE_RULES,
        f"Based on the movies {nom} has watched, deduce if {nom} will like the movie ***{target}***.",
        "You should ONLY tell me yes or no.",
    ])


def _amazon(profile: dict, hist: str, target: str, order: str) -> str:
    return "\n".join([
        "The user watched the following movies in the past, and rated them:",
        hist,
        *_MOVIE_RULES,
        f"Based on the movies the user has watched, deduce if the user will like the movie ***{target}***.",
        "You should ONLY tell me yes or no.",
    ])


def _bookcrossing(profile: dict, hist: str, target: str, order: str) -> str:
    return "\n".join([
        f"The user's location is {profile['location']}. The user's age is {profile['age']}.",
        "The user read the following books in the past and rated them:",
        hist,
        f"Based on the books the user has read, deduce if the user will like the book ***{target}***.",
        "Note that more stars the user rated the book, the user liked the book more.",
        "And we think the user will like a new book if the rating could be higher than 4 stars",
        "You should ONLY tell me yes or no.",
    ])


def template_for(dataset_name: str) -> Callable[[dict, str, str, str], str]:
    if dataset_name.startswith("movielens"):
        return _movielens
    if dataset_name == "amazon":
        return _amazon
    if dataset_name == "bookcrossing":
        return _bookcrossing
    raise ValueError(f"no prompt template for data set {dataset_name!r}")


def answer_text(label: int) -> str:
    return "Yes." if int(label) == 1 else "No."


@dataclasses.dataclass
class Prompt:
    text: str
    label: int
    shown: list[HistoryEntry]
    dropped: int  # oldest history items dropped to fit the context


class PromptBuilder:
    """Builds the user-turn text of CTR prompts for one prepared data set."""

    def __init__(self, data: CTRData):
        self.data = data
        self.template = template_for(data.name)
        self.titles = data.item_fields["title"]

    def profile(self, user: int) -> dict:
        return {field: str(values[user]) for field, values in self.data.user_fields.items()}

    def text(self, split: str, index: int, shown: Sequence[HistoryEntry], order: str) -> str:
        if order not in ORDERS:
            raise ValueError(f"history order {order!r} is not one of {ORDERS}")
        s = self.data.samples[split]
        hist = history_list([self.titles[e.item] for e in shown], [e.rating for e in shown])
        return self.template(self.profile(int(s["user"][index])), hist, str(self.titles[s["item"][index]]), order)

    def build(self, split: str, index: int, shown: Sequence[HistoryEntry], order: str,
              count_tokens: Callable[[str], int] | None = None, max_tokens: int | None = None) -> Prompt:
        """The prompt, with the oldest shown items dropped until `count_tokens(text) <= max_tokens`.

        If even an empty history does not fit, that is an error naming the sample: the template and
        target alone exceed the context, and no truncation of the history can help.
        """
        shown = list(shown)
        label = int(self.data.samples[split]["label"][index])
        text = self.text(split, index, shown, order)
        if count_tokens is None or max_tokens is None or count_tokens(text) <= max_tokens:
            return Prompt(text, label, shown, 0)
        by_age = sorted(range(len(shown)), key=lambda k: shown[k].position)
        lo, hi = 1, len(shown)  # binary search on how many of the oldest to drop
        best = None
        while lo <= hi:
            mid = (lo + hi) // 2
            gone = set(by_age[:mid])
            kept = [e for k, e in enumerate(shown) if k not in gone]
            candidate = self.text(split, index, kept, order)
            if count_tokens(candidate) <= max_tokens:
                best, hi = (candidate, kept, mid), mid - 1
            else:
                lo = mid + 1
        if best is None:
            raise ValueError(f"{split} sample {index}: the prompt exceeds {max_tokens} tokens even with no "
                             f"history ({count_tokens(self.text(split, index, [], order))} tokens)")
        return Prompt(best[0], label, best[1], best[2])


def recent_history(data: CTRData, split: str, index: int, k: int) -> list[HistoryEntry]:
    """The `simple` order: the K most recent items, chronological (BX: the last K of its shuffled list,
    shown most recent first as the official BookCrossing prompts)."""
    hist = data.history(split, index)
    n = len(hist["item"])
    entries = [HistoryEntry(int(hist["item"][p]), int(hist["rating"][p]), p) for p in range(max(0, n - k), n)]
    return entries[::-1] if data.name == "bookcrossing" else entries


def sample_training_indices(num_train: int, count: int, seed: int = 42) -> list[int]:
    """The official `random.seed(42); random.sample(range(N), n)` draw of instruction-tuning rows."""
    if count > num_train:
        raise ValueError(f"asked for {count} training rows, the train split has {num_train}")
    rng = random.Random(seed)
    return rng.sample(range(num_train), count)


def mixed_training_set(indices: Sequence[int], variants: dict[str, Sequence]) -> list:
    """Interleave, per sampled row, its prompt variants in the official order [high, sequential, simple]
    (the `mixed` set); `variants` maps order name -> per-row prompts aligned with `indices`."""
    names = [n for n in ("high", "sequential", "simple") if n in variants]
    if not names:
        raise ValueError(f"no known prompt variants in {sorted(variants)}")
    for n in names:
        if len(variants[n]) != len(indices):
            raise ValueError(f"variant {n!r} has {len(variants[n])} prompts for {len(indices)} rows")
    return [variants[n][k] for k in range(len(indices)) for n in names]


def positions_in_history(data: CTRData, split: str, index: int, items: Sequence[int]) -> list[HistoryEntry]:
    """Entries for retrieved items (item indices, in display order): each takes the rating and the
    position of its most recent occurrence in the history (duplicates collapse, last rating wins)."""
    hist = data.history(split, index)
    last: dict[int, int] = {}
    for p, item in enumerate(hist["item"].tolist()):
        last[item] = p
    missing = [i for i in items if i not in last]
    if missing:
        raise ValueError(f"{split} sample {index}: items {missing[:5]} are not in the sample's history")
    return [HistoryEntry(int(i), int(hist["rating"][last[i]]), last[i]) for i in items]

