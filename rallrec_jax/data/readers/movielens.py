"""MovieLens readers: ML-1M (`::`-separated .dat files) and ML-100K (the GroupLens `u.*` files or RecBole's
atomic files). A repeated (user, item) rating and a negative timestamp are skipped and counted."""
from __future__ import annotations

import pathlib
from collections.abc import Iterator, Sequence

import numpy as np

from rallrec_jax.data.readers.lines import (DataFormatError, PathLike, check_star_rating, check_unknown,
                                            require_file, split_fields, text_lines, to_int)
from rallrec_jax.data.readers.raw import RawDataset, Tally, flat_skipped


ML1M_AGES = {"1": "under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49", "50": "50-55",
             "56": "above 56"}
ML1M_JOBS = {
    "0": "other or not specified", "1": "academic/educator", "2": "artist", "3": "clerical/admin",
    "4": "college/grad student", "5": "customer service", "6": "doctor/health care",
    "7": "executive/managerial", "8": "farmer", "9": "homemaker", "10": "K-12 student", "11": "lawyer",
    "12": "programmer", "13": "retired", "14": "sales/marketing", "15": "scientist", "16": "self-employed",
    "17": "technician/engineer", "18": "tradesman/craftsman", "19": "unemployed", "20": "writer",
}
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
GENDERS = {"F": "female", "M": "male"}


def ml100k_age_bucket(age: int) -> str:
    """ML-100K stores raw ages; bucket them as ML-1M's codes so prompts read the same."""
    for upper, label in ((18, "under 18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"),
                         (56, "50-55")):
        if age < upper:
            return label
    return "above 56"


def _read_ratings(path, sep, num_fields=4) -> tuple[list[int], list[str], list[str], list[int], list[int]]:
    lines, users, items, ratings, stamps = [], [], [], [], []
    for number, line in text_lines(path, "latin-1-or-utf-8"):
        u, i, r, t = split_fields(path, number, line, sep, num_fields)[:4]
        lines.append(number)
        users.append(u.strip())
        items.append(i.strip())
        ratings.append(check_star_rating(path, number, to_int(path, number, "rating", r)))
        stamps.append(to_int(path, number, "timestamp", t))
    if not lines:
        raise DataFormatError(f"{path}: no ratings in the file")
    return lines, users, items, ratings, stamps


def _drop_bad_ratings(tally: Tally, u: list, i: list, r: list, t: list) -> tuple[list, list, list, list]:
    """Skips (and counts) ratings a temporal data set cannot use: a negative timestamp (no time before 1970 in
    these data sets), and a second rating of the same item by the same user (the earliest is kept, then the
    first in the file), which would otherwise give a sample whose history holds its own target."""
    stamps = np.asarray(t, np.int64)
    ok = np.flatnonzero(stamps >= 0)
    tally.skip("negative timestamp", len(t) - len(ok))
    seen: set[tuple[str, str]] = set()
    keep = []
    for k in ok[np.lexsort((ok, stamps[ok]))]:  # by time, then file order
        pair = (u[k], i[k])
        if pair not in seen:
            seen.add(pair)
            keep.append(k)
    tally.skip("duplicate (user, item) rating (the earliest kept)", len(ok) - len(keep))
    keep.sort()  # back to file order
    return [u[k] for k in keep], [i[k] for k in keep], [r[k] for k in keep], [t[k] for k in keep]


def _table_report(table: str, path: pathlib.Path, rows: int, kept: int) -> dict:
    """A table keyed by id (movies, users) where a repeated id's last line wins: the rest are counted."""
    tally = Tally(table, path)
    tally.rows = rows
    tally.skip("repeated id (the last line kept)", rows - kept)
    return tally.report(kept)


def _movielens(name: str, paths: Sequence[pathlib.Path], lines, u, i, r, t, items, users, rows) -> RawDataset:
    """The MovieLens RawDataset once the ratings are read: bad ratings skipped and every row accounted for.
    `paths` = (ratings, movies, users); `rows` = the movies' and users' row counts."""
    tally = Tally("ratings", paths[0])
    tally.rows = len(lines)
    u, i, r, t = _drop_bad_ratings(tally, u, i, r, t)
    accounting = {"ratings": tally.report(len(u)), "movies": _table_report("movies", paths[1], rows[0], len(items)),
                  "users": _table_report("users", paths[2], rows[1], len(users))}
    return RawDataset(name, np.array(u), np.array(i), np.array(r, np.int32), np.array(t, np.int64), items, users,
                      flat_skipped(accounting), accounting)


def _check_genders(path, number, gender):
    if gender not in GENDERS:
        raise DataFormatError(f"{path}:{number}: gender {gender!r} is neither 'F' nor 'M'")


def read_movielens_1m(data_dir: PathLike) -> RawDataset:
    """`ratings.dat`, `movies.dat` (ISO-8859-1), `users.dat`, all `::`-separated."""
    root = pathlib.Path(data_dir)
    ratings_path = require_file(root / "ratings.dat", "MovieLens-1M ratings")
    movies_path = require_file(root / "movies.dat", "MovieLens-1M movies")
    users_path = require_file(root / "users.dat", "MovieLens-1M users")

    items: dict[str, dict[str, str]] = {}
    rows = [0, 0]
    for number, line in text_lines(movies_path, "latin-1-or-utf-8"):
        rows[0] += 1
        movie_id, title, genres = split_fields(movies_path, number, line, "::", 3)
        to_int(movies_path, number, "MovieID", movie_id)
        items[movie_id] = {"title": title.strip(), "genre": genres.split("|")[0].strip()}
    users: dict[str, dict[str, str]] = {}
    for number, line in text_lines(users_path, "latin-1-or-utf-8"):
        rows[1] += 1
        user_id, gender, age, job, _zip = split_fields(users_path, number, line, "::", 5)
        _check_genders(users_path, number, gender)
        if age not in ML1M_AGES:
            raise DataFormatError(f"{users_path}:{number}: age code {age!r} not in {sorted(ML1M_AGES)}")
        if job not in ML1M_JOBS:
            raise DataFormatError(f"{users_path}:{number}: occupation code {job!r} not in 0..20")
        users[user_id] = {"gender": GENDERS[gender], "age": ML1M_AGES[age], "job": ML1M_JOBS[job]}

    lines, u, i, r, t = _read_ratings(ratings_path, "::")
    check_unknown(ratings_path, lines, i, items.keys(), "movie", movies_path.name)
    check_unknown(ratings_path, lines, u, users.keys(), "user", users_path.name)
    return _movielens("movielens-1m", (ratings_path, movies_path, users_path), lines, u, i, r, t, items, users, rows)


def read_movielens_100k(data_dir: PathLike) -> RawDataset:
    """GroupLens layout (`u.data`, `u.item`, `u.user`) or RecBole atomic files (`ml-100k.inter`, ...)."""
    root = pathlib.Path(data_dir)
    if (root / "u.data").exists() or not (root / "ml-100k.inter").exists():
        return _read_ml100k_grouplens(root)
    return _read_ml100k_recbole(root)


def movielens_100k_files(root: pathlib.Path) -> list[pathlib.Path]:
    """The three files `read_movielens_100k` reads from `root` (GroupLens or RecBole layout)."""
    if (root / "u.data").exists() or not (root / "ml-100k.inter").exists():
        return [root / f for f in ("u.data", "u.item", "u.user")]
    return [root / f for f in ("ml-100k.inter", "ml-100k.item", "ml-100k.user")]


def _read_ml100k_grouplens(root: pathlib.Path) -> RawDataset:
    data_path, item_path, user_path = (require_file(root / name, f"MovieLens-100K {what}") for name, what in
                                       (("u.data", "ratings"), ("u.item", "movies"), ("u.user", "users")))
    items = {}
    rows = [0, 0]
    for number, line in text_lines(item_path, "latin-1-or-utf-8"):
        rows[0] += 1
        fields = split_fields(item_path, number, line, "|", 5 + len(ML100K_GENRES))
        flags = fields[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataFormatError(f"{item_path}:{number}: genre flags must be 0 or 1, got {flags}")
        genre = next((g for g, f in zip(ML100K_GENRES, flags) if f == "1"), "unknown")
        items[fields[0]] = {"title": fields[1].strip(), "genre": genre}
    users = {}
    for number, line in text_lines(user_path, "latin-1-or-utf-8"):
        rows[1] += 1
        user_id, age, gender, job, _zip = split_fields(user_path, number, line, "|", 5)
        _check_genders(user_path, number, gender)
        users[user_id] = {"gender": GENDERS[gender], "age": ml100k_age_bucket(to_int(user_path, number, "age", age)),
                          "job": job.strip()}
    lines, u, i, r, t = _read_ratings(data_path, "\t")
    check_unknown(data_path, lines, i, items.keys(), "movie", item_path.name)
    check_unknown(data_path, lines, u, users.keys(), "user", user_path.name)
    return _movielens("movielens-100k", (data_path, item_path, user_path), lines, u, i, r, t, items, users, rows)


def _atomic_table(path: pathlib.Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """RecBole atomic files: a `name:type` header, then tab-separated rows."""
    rows = text_lines(path, "latin-1-or-utf-8")
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(f"{path}: no header line") from None
    names = [h.split(":")[0] for h in header.split("\t")]
    missing = [c for c in required if c not in names]
    if missing:
        raise DataFormatError(f"{path}:1: header lacks columns {missing}: {header!r}")
    for number, line in rows:
        yield number, dict(zip(names, split_fields(path, number, line, "\t", len(names))))


def _read_ml100k_recbole(root: pathlib.Path) -> RawDataset:
    inter_path, item_path, user_path = (
        require_file(root / f"ml-100k.{suffix}", f"MovieLens-100K {what} (RecBole)")
        for suffix, what in (("inter", "interactions"), ("item", "movies"), ("user", "users")))
    items = {}
    rows = [0, 0]
    for number, row in _atomic_table(item_path, ("item_id", "movie_title", "release_year", "class")):
        rows[0] += 1
        year = row["release_year"].strip()
        title = row["movie_title"].strip() + (f" ({year})" if year else "")
        genres = row["class"].split()
        items[row["item_id"]] = {"title": title, "genre": genres[0] if genres else "unknown"}
    users = {}
    for number, row in _atomic_table(user_path, ("user_id", "age", "gender", "occupation")):
        rows[1] += 1
        _check_genders(user_path, number, row["gender"])
        users[row["user_id"]] = {"gender": GENDERS[row["gender"]],
                                 "age": ml100k_age_bucket(to_int(user_path, number, "age", row["age"])),
                                 "job": row["occupation"].strip()}
    lines, u, i, r, t = [], [], [], [], []
    for number, row in _atomic_table(inter_path, ("user_id", "item_id", "rating", "timestamp")):
        lines.append(number)
        u.append(row["user_id"])
        i.append(row["item_id"])
        r.append(check_star_rating(inter_path, number, to_int(inter_path, number, "rating", row["rating"])))
        t.append(to_int(inter_path, number, "timestamp", row["timestamp"]))
    if not lines:
        raise DataFormatError(f"{inter_path}: no interactions in the file")
    check_unknown(inter_path, lines, i, items.keys(), "movie", item_path.name)
    check_unknown(inter_path, lines, u, users.keys(), "user", user_path.name)
    return _movielens("movielens-100k", (inter_path, item_path, user_path), lines, u, i, r, t, items, users, rows)
