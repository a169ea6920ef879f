"""Item descriptions written by an LLM (paper eq. 1, spec 2.1), cached per item and resumable.

The prompts are the official ones, verbatim, in prompts/descriptions.py.
Descriptions are generated in batches by any `generate(list of chat messages) -> list of str`
function (in the pipeline: our jitted sampler at temperature 0.8, top-p 0.9) and appended to a JSON
lines cache as each batch finishes, so an interrupted run resumes with the items still missing.
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from rallrec_jax import parallel
from rallrec_jax.data.ctr import CTRData
from rallrec_jax.prompts.descriptions import chat_messages, description_prompt

def clean_description(text: str) -> str:
    """The official post-processing: drop `</s>`, `</s`, newlines and double quotes."""
    for junk in ("</s>", "</s", "\n", '"'):
        text = text.replace(junk, "" if junk != "\n" else " ")
    return " ".join(text.split())


def item_fields(data: CTRData, item: int) -> dict[str, str]:
    return {name: str(values[item]) for name, values in data.item_fields.items()}


def _read_cache(path: pathlib.Path) -> dict[str, str]:
    """Reads the JSON lines cache. A torn last line (a crash mid-write) is dropped and the file is
    truncated to its last complete line; a bad line elsewhere is corruption and an error."""
    done: dict[str, str] = {}
    if not path.exists():
        return done
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    good_bytes = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            record = json.loads(line)
            done[str(record["item_id"])] = str(record["description"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            if number == len(lines):  # torn final line: recover by dropping it (the writer's file)
                if parallel.is_writer():
                    with open(path, "r+b") as f:
                        f.truncate(min(good_bytes, len(raw)))
                break
            raise ValueError(f"{path}:{number}: corrupt description cache line ({exc}); delete the file to redo") \
                from None
        good_bytes += len(line) + 1
    return done


def describe_items(
    data: CTRData,
    generate: Callable[[Sequence[list[dict[str, str]]]], Sequence[str]],
    cache_path: str | os.PathLike,
    batch_size: int = 32,
    items: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Descriptions for `items` (default: all), in item order; generated only where the cache lacks them."""
    cache_path = pathlib.Path(cache_path)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    done = _read_cache(cache_path)
    items = list(range(data.num_items)) if items is None else list(items)
    todo = [i for i in items if str(data.item_ids[i]) not in done]
    # A multi-host run generates on every process (one mesh) and appends from process 0 alone.
    writer = parallel.is_writer()
    with open(cache_path, "a", encoding="utf-8") if writer else open(os.devnull, "w") as out:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            messages = [chat_messages(description_prompt(data.name, item_fields(data, i))) for i in batch]
            texts = list(generate(messages))
            if len(texts) != len(batch):
                raise ValueError(f"generate returned {len(texts)} texts for {len(batch)} prompts")
            for i, text in zip(batch, texts):
                done[str(data.item_ids[i])] = clean_description(text)
                out.write(json.dumps({"item_id": str(data.item_ids[i]),
                                      "description": done[str(data.item_ids[i])]}) + "\n")
            out.flush()
            if writer:
                os.fsync(out.fileno())
            if progress:
                progress(len(items) - len(todo) + start + len(batch), len(items))
    return [done[str(data.item_ids[i])] for i in items]


def title_text(dataset_name: str, fields: dict[str, str]) -> str:
    """The 'plain' item text embedded as e_title (spec 2.2; raw text, no chat template)."""
    if dataset_name.startswith("movielens"):
        return f"Here is a movie. Its title is {fields['title']}. The movie's genre is {fields['genre']}."
    if dataset_name == "amazon":
        return f"Here is a movie. Its title is {fields['title']}. The movie's genre is {fields['category']}."
    if dataset_name == "bookcrossing":
        return (f"Here is a book. Its title is {fields['title']}. ISBN of the book is {fields['isbn']}. "
                f"The author of the book is {fields['author']}. The publication year of the book is "
                f"{fields['year']}. Its publisher is {fields['publisher']}.")
    raise ValueError(f"no title template for data set {dataset_name!r}")


def title_texts(data: CTRData) -> list[str]:
    return [title_text(data.name, item_fields(data, i)) for i in range(data.num_items)]


def text_embeddings(title_vectors: np.ndarray, description_vectors: np.ndarray, mode: str = "paper") -> np.ndarray:
    """The text block of an item: `paper` is e_text = [e_title || e_desc] (eq. 3; [I, D] + [I, D] -> [I, 2D]);
    `official` is e_desc alone, as the official retrieval scripts used it."""
    if len(title_vectors) != len(description_vectors):
        raise ValueError(f"{len(title_vectors)} title vectors but {len(description_vectors)} description vectors")
    if mode == "official":
        return np.asarray(description_vectors)
    if mode != "paper":
        raise ValueError(f"text embedding mode {mode!r} is neither 'paper' nor 'official'")
    return np.concatenate([title_vectors, description_vectors], axis=1)
