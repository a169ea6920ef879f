"""The item-description prompts (paper eq. 1, spec 2.1), verbatim from the official ones (typos included:
they are part of what the model saw). retrieval/descriptions.py generates and caches the descriptions.
"""
from __future__ import annotations

SYSTEM_MESSAGE = "You are a friendly and helpful asistant who always responds to the query from users"

_FILM_ASPECTS = """The brief plot overview (without major spoilers).
The main themes and genre.
The setting or historical context.
Key characters and the actors who portray them.
The film's director and any notable stylistic elements.
The overall tone and mood of the film.
Its cultural impact or deeper meaning, if applicable. """

PROMPT_FILM = ("\nWrite a concise and informative description of the film {title} whose genre is {genre}, "
               "with consideration of the following aspects:\n\n" + _FILM_ASPECTS +
               "\n\nKeep the description under 80 words.\n\nPlease only return the description.\n")

PROMPT_MOVIE = ("\nWrite a concise and informative description of the movie/TV {title} whose genre is {genre}, "
                "with consideration of the following aspects:\n\n"
                + _FILM_ASPECTS.replace("The film's director", "The movie's director")
                .replace("The overall tone and mood of the film.", "The overall tone and mood of the movie.")
                + "\n\nKeep the description under 80 words.\n\nPlease only return the description.\n")

PROMPT_BOOK = """
Write a concise and informative description of the book {title}. ISBN of the book is {isbn}. The author of the book is {author}.
The publication year of the book is {year}. Its publisher is {publisher}. The description could include the following details:

- A brief plot overview (without major spoilers).
- The main themes and genre.
- The setting or historical context.
- Key characters and their roles.
- The author's name and any notable stylistic elements.
- The overall tone and style of the writing.
- Any cultural or literary impact, if applicable.
- Basic publication details of year and publisher. 

Keep the description under 80 words."

Please only return the description.
"""


def description_prompt(dataset_name: str, fields: dict[str, str]) -> str:
    if dataset_name.startswith("movielens"):
        return PROMPT_FILM.format(title=fields["title"], genre=fields["genre"])
    if dataset_name == "amazon":
        return PROMPT_MOVIE.format(title=fields["title"], genre=fields["category"])
    if dataset_name == "bookcrossing":
        return PROMPT_BOOK.format(**{k: fields[k] for k in ("title", "isbn", "author", "year", "publisher")})
    raise ValueError(f"no description prompt for data set {dataset_name!r}")


def chat_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": prompt}]
