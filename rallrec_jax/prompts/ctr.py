"""The CTR prompt templates, verbatim from the official ones (paper-spec 3.1), for every data set and history
order: the text only. Which history items a prompt shows is chosen in data/histories.py (the `simple`
order) and generation/histories.py (retrieved orders), and the prompt is assembled (and fitted to the
context) by generation/prompts.py's PromptBuilder.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

ORDERS = ("simple", "high", "sequential", "rerank")
SYSTEM_PROMPT = "You are a friendly and helpful assistant who always responds to the query from users."

_ML_HISTORY_HEADER = {
    "simple": "watched the following movies in order in the past, and rated them:",
    "sequential": "watched the following movies in order in the past, and rated them:",
    "high": "watched the following most relevant movies in the past, and rated them:",
    "rerank": "watched the following relevant movies in the past, and rated them:",
}


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
