"""Description prompts verbatim, and the per-item cache: resumable, torn lines recovered."""
import json

import numpy as np
import pytest

from rallrec_jax.data import recipes
from rallrec_jax.data.readers import bookcrossing
from rallrec_jax.retrieval import descriptions
from rallrec_jax.prompts import descriptions as description_prompts


@pytest.fixture(scope="module")
def bx(shared_data):
    return recipes.preprocess_bookcrossing(bookcrossing.read_bookcrossing(shared_data / "bookcrossing"))


def test_prompts_are_verbatim():
    film = description_prompts.description_prompt("movielens-1m", {"title": "Heat (1995)", "genre": "Action"})
    assert film.startswith("\nWrite a concise and informative description of the film Heat (1995) whose genre is "
                           "Action, with consideration of the following aspects:\n\nThe brief plot overview")
    assert "Its cultural impact or deeper meaning, if applicable. \n\nKeep the description under 80 words." in film
    assert film.endswith("Please only return the description.\n")
    movie = description_prompts.description_prompt("amazon", {"title": "Heat", "category": "Drama"})
    assert "of the movie/TV Heat whose genre is Drama" in movie and "The movie's director" in movie
    assert "The overall tone and mood of the movie." in movie and "film" not in movie
    book = description_prompts.description_prompt("bookcrossing", {"title": "T", "isbn": "0002005018", "author": "A",
                                                             "year": "2001", "publisher": "P"})
    assert "The author of the book is A.\nThe publication year of the book is 2001. Its publisher is P." in book
    assert 'Keep the description under 80 words."\n\nPlease only return the description.\n' in book
    assert description_prompts.chat_messages("x")[0]["content"].startswith("You are a friendly and helpful asistant")


def test_clean_description():
    assert descriptions.clean_description('A "tense" heist.\nWith De Niro.</s>') == "A tense heist. With De Niro."


def test_cache_resumes_and_never_redoes(bx, tmp_path):
    cache = tmp_path / "desc.jsonl"
    calls = []

    def generate(messages):
        calls.append(len(messages))
        return [m[1]["content"].split("of the book ")[1].split(".")[0] + " described" for m in messages]

    items = list(range(10))
    first = descriptions.describe_items(bx, generate, cache, batch_size=4, items=items[:6])
    assert calls == [4, 2] and len(first) == 6
    # Interrupted mid-write: the last line is torn. It is dropped, and only the missing items are made.
    with open(cache, "a") as f:
        f.write('{"item_id": "broken", "descr')
    calls.clear()
    out = descriptions.describe_items(bx, generate, cache, batch_size=4, items=items)
    assert calls == [4]
    assert out[:6] == first
    assert out[0] == f"{bx.item_fields['title'][0]} described"
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [r["item_id"] for r in lines] == [str(bx.item_ids[i]) for i in items]


def test_corrupt_cache_line_is_an_error(bx, tmp_path):
    cache = tmp_path / "desc.jsonl"
    cache.write_text('{"item_id": "a", "description": "x"}\nnot json\n{"item_id": "b", "description": "y"}\n')
    with pytest.raises(ValueError, match=r"desc\.jsonl:2: corrupt description cache line"):
        descriptions.describe_items(bx, lambda m: ["z"] * len(m), cache, items=[0])


def test_title_texts_and_text_embedding(bx):
    texts = descriptions.title_texts(bx)
    assert len(texts) == bx.num_items
    assert texts[0].startswith(f"Here is a book. Its title is {bx.item_fields['title'][0]}. ISBN of the book is ")
    e = descriptions.text_embeddings(np.ones((3, 2)), np.zeros((3, 4)))
    assert e.shape == (3, 6) and e[:, :2].sum() == 6
    assert descriptions.text_embeddings(np.ones((3, 2)), np.zeros((3, 4)), "official").shape == (3, 4)
    with pytest.raises(ValueError, match="3 title vectors but 2"):
        descriptions.text_embeddings(np.ones((3, 2)), np.zeros((2, 4)))
