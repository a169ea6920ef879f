"""Readers for the official file formats of MovieLens (1M, 100K), Book-Crossing and Amazon 2018.

Each reader returns a `RawDataset`: the interactions as parallel numpy arrays of official ids, plus
item and user tables of text fields. Readers check what the format promises and fail loudly, naming
the file and the 1-based line, on anything else (truncated lines, non-numeric fields, unknown ids,
undecodable bytes, empty or missing files). The one documented exception is Book-Crossing, whose
official dump is known to be dirty: its bad rows are skipped and *counted* in `RawDataset.skipped`
so the statistics show every row that did not make it.
"""
from __future__ import annotations

import ast
import csv
import dataclasses
import datetime
import gzip
import html
import io
import json
import pathlib
import re
from collections.abc import Iterator, Sequence

import numpy as np

PathLike = str | pathlib.Path


class DataFormatError(ValueError):
    """A data file does not hold what its format promises; the message names file and line."""


@dataclasses.dataclass
class RawDataset:
    """One data set as read from its official files, before any preprocessing.

    `timestamp` is None for Book-Crossing (the dump has none). `item_fields` and `user_fields`
    map an official id to its text fields (title, genre, ... / gender, age, job, ...).
    `skipped` counts rows dropped by the reader, keyed by reason; empty for clean formats.
    """

    name: str
    user: np.ndarray  # [E] str, official user ids
    item: np.ndarray  # [E] str, official item ids
    rating: np.ndarray  # [E] int32
    timestamp: np.ndarray | None  # [E] int64 seconds, or None
    item_fields: dict[str, dict[str, str]]
    user_fields: dict[str, dict[str, str]]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n = len(self.user)
        lengths = {len(self.item), len(self.rating)} | ({len(self.timestamp)} if self.timestamp is not None else set())
        if lengths != {n}:
            raise ValueError(f"{self.name}: interaction arrays differ in length: {n}, {lengths}")

    @property
    def num_interactions(self) -> int:
        return len(self.user)


# --------------------------------------------------------------------------------------------------
# Low-level line access with file/line-aware errors.


def _require_file(path: pathlib.Path, what: str) -> pathlib.Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what})")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: the file is empty ({what})")
    return path


def _open_bytes(path: pathlib.Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataFormatError(f"{path}: not a readable gzip file ({exc})") from exc
        if not raw:
            raise DataFormatError(f"{path}: the file is empty once decompressed")
    return raw


def _decode(path: pathlib.Path, raw: bytes, encoding: str) -> str:
    """Decodes a whole file. `encoding="latin-1-or-utf-8"` is the documented recovery for files that
    are officially ISO-8859-1: a copy re-saved as UTF-8 decodes as UTF-8 (strict), else ISO-8859-1.
    NUL bytes mean a different encoding altogether (UTF-16/32) or a binary file: that is an error.
    """
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise DataFormatError(
            f"{path}:{line}: NUL byte: the file is not text in the expected encoding "
            f"({encoding}); UTF-16/UTF-32 or binary content?"
        )
    if encoding == "latin-1-or-utf-8":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("iso-8859-1")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(f"{path}:{line}: bytes that are not valid {encoding} ({exc.reason})") from exc


def _text_lines(path: pathlib.Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline), skipping fully blank lines."""
    text = _decode(path, _open_bytes(path), encoding)
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def _split_fields(path, number, line, sep, count) -> list[str]:
    fields = line.split(sep)
    if len(fields) != count:
        raise DataFormatError(
            f"{path}:{number}: expected {count} fields separated by {sep!r}, found {len(fields)}: {line[:120]!r}"
        )
    return fields


def _to_int(path, number, field_name, value) -> int:
    try:
        return int(value)
    except ValueError:
        try:
            as_float = float(value)
        except ValueError:
            raise DataFormatError(f"{path}:{number}: {field_name} {value!r} is not a number") from None
        if not np.isfinite(as_float) or as_float != int(as_float):
            raise DataFormatError(f"{path}:{number}: {field_name} {value!r} is not an integer")
        return int(as_float)


def _check_unknown(path, lines, ids, known: set, kind: str, table: pathlib.Path | str):
    for number, value in zip(lines, ids):
        if value not in known:
            raise DataFormatError(f"{path}:{number}: unknown {kind} id {value!r} (not in {table})")


# --------------------------------------------------------------------------------------------------
# MovieLens

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


def _check_star_rating(path, number, rating: int) -> int:
    if not 1 <= rating <= 5:
        raise DataFormatError(f"{path}:{number}: rating {rating} outside 1..5")
    return rating


def _read_ratings(path, sep, num_fields=4) -> tuple[list[int], list[str], list[str], list[int], list[int]]:
    lines, users, items, ratings, stamps = [], [], [], [], []
    for number, line in _text_lines(path, "latin-1-or-utf-8"):
        u, i, r, t = _split_fields(path, number, line, sep, num_fields)[:4]
        lines.append(number)
        users.append(u.strip())
        items.append(i.strip())
        ratings.append(_check_star_rating(path, number, _to_int(path, number, "rating", r)))
        stamps.append(_to_int(path, number, "timestamp", t))
    if not lines:
        raise DataFormatError(f"{path}: no ratings in the file")
    return lines, users, items, ratings, stamps


def _check_genders(path, number, gender):
    if gender not in GENDERS:
        raise DataFormatError(f"{path}:{number}: gender {gender!r} is neither 'F' nor 'M'")


def read_movielens_1m(data_dir: PathLike) -> RawDataset:
    """`ratings.dat`, `movies.dat` (ISO-8859-1), `users.dat`, all `::`-separated."""
    root = pathlib.Path(data_dir)
    ratings_path = _require_file(root / "ratings.dat", "MovieLens-1M ratings")
    movies_path = _require_file(root / "movies.dat", "MovieLens-1M movies")
    users_path = _require_file(root / "users.dat", "MovieLens-1M users")

    items: dict[str, dict[str, str]] = {}
    for number, line in _text_lines(movies_path, "latin-1-or-utf-8"):
        movie_id, title, genres = _split_fields(movies_path, number, line, "::", 3)
        _to_int(movies_path, number, "MovieID", movie_id)
        items[movie_id] = {"title": title.strip(), "genre": genres.split("|")[0].strip()}
    users: dict[str, dict[str, str]] = {}
    for number, line in _text_lines(users_path, "latin-1-or-utf-8"):
        user_id, gender, age, job, _zip = _split_fields(users_path, number, line, "::", 5)
        _check_genders(users_path, number, gender)
        if age not in ML1M_AGES:
            raise DataFormatError(f"{users_path}:{number}: age code {age!r} not in {sorted(ML1M_AGES)}")
        if job not in ML1M_JOBS:
            raise DataFormatError(f"{users_path}:{number}: occupation code {job!r} not in 0..20")
        users[user_id] = {"gender": GENDERS[gender], "age": ML1M_AGES[age], "job": ML1M_JOBS[job]}

    lines, u, i, r, t = _read_ratings(ratings_path, "::")
    _check_unknown(ratings_path, lines, i, items.keys(), "movie", movies_path.name)
    _check_unknown(ratings_path, lines, u, users.keys(), "user", users_path.name)
    return RawDataset("movielens-1m", np.array(u), np.array(i), np.array(r, np.int32), np.array(t, np.int64),
                      items, users)


def read_movielens_100k(data_dir: PathLike) -> RawDataset:
    """GroupLens layout (`u.data`, `u.item`, `u.user`) or RecBole atomic files (`ml-100k.inter`, ...)."""
    root = pathlib.Path(data_dir)
    if (root / "u.data").exists() or not (root / "ml-100k.inter").exists():
        return _read_ml100k_grouplens(root)
    return _read_ml100k_recbole(root)


def _read_ml100k_grouplens(root: pathlib.Path) -> RawDataset:
    data_path = _require_file(root / "u.data", "MovieLens-100K ratings")
    item_path = _require_file(root / "u.item", "MovieLens-100K movies")
    user_path = _require_file(root / "u.user", "MovieLens-100K users")
    items = {}
    for number, line in _text_lines(item_path, "latin-1-or-utf-8"):
        fields = _split_fields(item_path, number, line, "|", 5 + len(ML100K_GENRES))
        flags = fields[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataFormatError(f"{item_path}:{number}: genre flags must be 0 or 1, got {flags}")
        genre = next((g for g, f in zip(ML100K_GENRES, flags) if f == "1"), "unknown")
        items[fields[0]] = {"title": fields[1].strip(), "genre": genre}
    users = {}
    for number, line in _text_lines(user_path, "latin-1-or-utf-8"):
        user_id, age, gender, job, _zip = _split_fields(user_path, number, line, "|", 5)
        _check_genders(user_path, number, gender)
        users[user_id] = {"gender": GENDERS[gender], "age": ml100k_age_bucket(_to_int(user_path, number, "age", age)),
                          "job": job.strip()}
    lines, u, i, r, t = _read_ratings(data_path, "\t")
    _check_unknown(data_path, lines, i, items.keys(), "movie", item_path.name)
    _check_unknown(data_path, lines, u, users.keys(), "user", user_path.name)
    return RawDataset("movielens-100k", np.array(u), np.array(i), np.array(r, np.int32), np.array(t, np.int64),
                      items, users)


def _atomic_table(path: pathlib.Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """RecBole atomic files: a `name:type` header, then tab-separated rows."""
    rows = _text_lines(path, "latin-1-or-utf-8")
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(f"{path}: no header line") from None
    names = [h.split(":")[0] for h in header.split("\t")]
    missing = [c for c in required if c not in names]
    if missing:
        raise DataFormatError(f"{path}:1: header lacks columns {missing}: {header!r}")
    for number, line in rows:
        yield number, dict(zip(names, _split_fields(path, number, line, "\t", len(names))))


def _read_ml100k_recbole(root: pathlib.Path) -> RawDataset:
    inter_path = _require_file(root / "ml-100k.inter", "MovieLens-100K interactions (RecBole)")
    item_path = _require_file(root / "ml-100k.item", "MovieLens-100K movies (RecBole)")
    user_path = _require_file(root / "ml-100k.user", "MovieLens-100K users (RecBole)")
    items = {}
    for number, row in _atomic_table(item_path, ("item_id", "movie_title", "release_year", "class")):
        year = row["release_year"].strip()
        title = row["movie_title"].strip() + (f" ({year})" if year else "")
        genres = row["class"].split()
        items[row["item_id"]] = {"title": title, "genre": genres[0] if genres else "unknown"}
    users = {}
    for number, row in _atomic_table(user_path, ("user_id", "age", "gender", "occupation")):
        _check_genders(user_path, number, row["gender"])
        users[row["user_id"]] = {"gender": GENDERS[row["gender"]],
                                 "age": ml100k_age_bucket(_to_int(user_path, number, "age", row["age"])),
                                 "job": row["occupation"].strip()}
    lines, u, i, r, t = [], [], [], [], []
    for number, row in _atomic_table(inter_path, ("user_id", "item_id", "rating", "timestamp")):
        lines.append(number)
        u.append(row["user_id"])
        i.append(row["item_id"])
        r.append(_check_star_rating(inter_path, number, _to_int(inter_path, number, "rating", row["rating"])))
        t.append(_to_int(inter_path, number, "timestamp", row["timestamp"]))
    if not lines:
        raise DataFormatError(f"{inter_path}: no interactions in the file")
    _check_unknown(inter_path, lines, i, items.keys(), "movie", item_path.name)
    _check_unknown(inter_path, lines, u, users.keys(), "user", user_path.name)
    return RawDataset("movielens-100k", np.array(u), np.array(i), np.array(r, np.int32), np.array(t, np.int64),
                      items, users)


# --------------------------------------------------------------------------------------------------
# Book-Crossing (BX-CSV-Dump): `;`-separated, quoted, ISO-8859-1, header row.

_ISBN = re.compile(r"[0-9A-Za-z]{10}")


def _bx_rows(path: pathlib.Path, header: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    text = _decode(path, _open_bytes(path), "latin-1-or-utf-8")
    reader = csv.reader(io.StringIO(text), delimiter=";", quotechar='"')
    try:
        first = next(reader)
    except StopIteration:
        raise DataFormatError(f"{path}: the file is empty") from None
    if [h.strip() for h in first[: len(header)]] != list(header):
        raise DataFormatError(f"{path}:1: expected header {list(header)}, found {first}")
    for row in reader:
        if row:
            yield reader.line_num, row


def _clean_bx_text(value: str) -> str:
    """The dump escapes quotes as `\\"` inside doubled quotes; unescape and unquote HTML entities."""
    value = value.replace('\\"', '"').replace("\\", "")
    if value.count('"') % 2 == 1:
        value = value.replace('"', "")
    return html.unescape(value).strip()


def read_bookcrossing(data_dir: PathLike) -> RawDataset:
    """BX-Book-Ratings.csv, BX-Books.csv, BX-Users.csv.

    Known-dirty rows (the official dump has them) are skipped and counted in `skipped`:
    a books row with the wrong number of fields or an ISBN that is not 10 alphanumerics; a rating
    row with the wrong number of fields, an invalid ISBN, or an ISBN/user absent from the tables.
    A users row whose age carries stray quotes (`"14""`) is cleaned and counted.
    A non-numeric rating or a rating outside 0..10 is not known dirt: that is an error.
    """
    root = pathlib.Path(data_dir)
    ratings_path = _require_file(root / "BX-Book-Ratings.csv", "Book-Crossing ratings")
    books_path = _require_file(root / "BX-Books.csv", "Book-Crossing books")
    users_path = _require_file(root / "BX-Users.csv", "Book-Crossing users")
    skipped: dict[str, int] = {}

    def skip(reason: str):
        skipped[reason] = skipped.get(reason, 0) + 1

    items = {}
    for number, row in _bx_rows(books_path, ("ISBN", "Book-Title", "Book-Author", "Year-Of-Publication",
                                             "Publisher")):
        if len(row) != 8:
            skip("books: row with the wrong number of fields")
            continue
        isbn = row[0].strip().upper()
        if not _ISBN.fullmatch(isbn):
            skip("books: ISBN not 10 alphanumerics")
            continue
        year = row[3].strip()
        publisher = _clean_bx_text(row[4])
        items[isbn] = {
            "title": _clean_bx_text(row[1]),
            "isbn": isbn,
            "author": _clean_bx_text(row[2]),
            "year": year if re.fullmatch(r"\d{4}", year) and year != "0000" else "unknown",
            "publisher": "unknown" if publisher.lower() in ("", "n/a") else publisher,
        }
    users = {}
    for number, row in _bx_rows(users_path, ("User-ID", "Location", "Age")):
        if len(row) != 3:
            raise DataFormatError(f"{users_path}:{number}: expected 3 fields, found {len(row)}: {row}")
        age_text = _clean_bx_text(row[2]).strip('"')
        if age_text in ("NULL", ""):
            age = None
        elif re.fullmatch(r"\d+", age_text):
            age = int(age_text)
            if age_text != row[2].strip():
                skip("users: age with stray quotes (cleaned, kept)")
        else:
            skip("users: unreadable age (kept as unknown)")
            age = None
        users[row[0].strip()] = {"location": bx_country(row[1]), "age": bx_age_bucket(age)}

    u, i, r = [], [], []
    for number, row in _bx_rows(ratings_path, ("User-ID", "ISBN", "Book-Rating")):
        if len(row) != 3:
            skip("ratings: row with the wrong number of fields")
            continue
        user, isbn = row[0].strip(), row[1].strip().upper()
        rating = _to_int(ratings_path, number, "Book-Rating", row[2].strip())
        if not 0 <= rating <= 10:
            raise DataFormatError(f"{ratings_path}:{number}: Book-Rating {rating} outside 0..10")
        if not _ISBN.fullmatch(isbn):
            skip("ratings: ISBN not 10 alphanumerics")
        elif isbn not in items:
            skip("ratings: ISBN absent from BX-Books.csv")
        elif user not in users:
            skip("ratings: user absent from BX-Users.csv")
        else:
            u.append(user)
            i.append(isbn)
            r.append(rating)
    if not u:
        raise DataFormatError(f"{ratings_path}: no usable ratings (skipped: {skipped})")
    return RawDataset("bookcrossing", np.array(u), np.array(i), np.array(r, np.int32), None, items, users,
                      skipped)


BX_COUNTRY_ALIASES = {
    "us": "usa", "u.s.a.": "usa", "u.s.a": "usa", "u.s.": "usa", "united states": "usa",
    "united states of america": "usa", "america": "usa", "united state": "usa",
    "uk": "united kingdom", "u.k.": "united kingdom", "england": "united kingdom", "scotland": "united kingdom",
    "wales": "united kingdom", "northern ireland": "united kingdom", "great britain": "united kingdom",
    "deutschland": "germany", "espaÃ±a": "spain", "españa": "spain", "italia": "italy",
    "the netherlands": "netherlands", "holland": "netherlands", "la france": "france",
}


def bx_country(location: str) -> str:
    """'city, state, country' -> a normalised country (the official notebook's map is not public in
    full; this keeps the last component, lower-cased, with common aliases merged)."""
    country = location.split(",")[-1].strip().strip('".').lower()
    country = re.sub(r"\s+", " ", country)
    if country in ("", "n/a", "null", "none", "-", "?"):
        return "unknown"
    return BX_COUNTRY_ALIASES.get(country, country)


def bx_age_bucket(age: int | None) -> str:
    if age is None or age < 5 or age > 100:
        return "unknown"
    if age < 18:
        return "under 18"
    if age < 25:
        return "18-24"
    if age >= 60:
        return "60+"
    low = 25 + 5 * ((age - 25) // 5)
    return f"{low}-{low + 4}"


# --------------------------------------------------------------------------------------------------
# Amazon review data 2018


def _json_lines(path: pathlib.Path) -> Iterator[tuple[int, dict]]:
    """JSON lines (UTF-8), gzipped or not; also the Python-literal lines of the older dumps."""
    for number, line in _text_lines(path, "utf-8"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            try:
                obj = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                raise DataFormatError(f"{path}:{number}: not a JSON object ({exc.msg}): {line[:120]!r}") from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


_TAG = re.compile(r"<[^>]*>?")


def clean_html(text: str) -> str:
    """Strips tags (also unterminated ones, as the 2018 titles have) and unescapes entities."""
    return re.sub(r"\s+", " ", html.unescape(_TAG.sub(" ", text or ""))).strip()


def amazon_title(meta: dict) -> tuple[str, str]:
    """(title, source field). Many 2018 titles are bare HTML fragments with no text; then the
    description's first sentence (which usually names the product) stands in, else the brand."""
    title = clean_html(str(meta.get("title", "")))
    if title:
        return title, "title"
    description = meta.get("description") or []
    if isinstance(description, str):
        description = [description]
    for text in description:
        sentence = clean_html(str(text)).split(". ")[0].strip().rstrip(".")
        if sentence:
            return sentence[:120], "description"
    brand = clean_html(str(meta.get("brand", "")))
    if brand:
        return brand, "brand"
    return "", "none"


def amazon_category(meta: dict, index: int = 2, depth: int | None = 3) -> str:
    """category[index] when the list has exactly `depth` entries (official rule for Movies & TV:
    index 2, depth 3); depth None accepts any list long enough. Else 'unknown'."""
    cats = [clean_html(str(c)) for c in (meta.get("category") or [])]
    if (depth is None and len(cats) > index) or (depth is not None and len(cats) == depth):
        return cats[index] or "unknown"
    return "unknown"


def read_amazon(
    ratings_file: PathLike,
    meta_file: PathLike,
    category_index: int = 2,
    category_depth: int | None = 3,
) -> RawDataset:
    """Ratings from the ratings-only CSV (`item,user,rating,timestamp`, no header) or from review
    JSON lines (`asin`, `reviewerID`, `overall`, `reviewTime` "%m %d, %Y" or `unixReviewTime`),
    gzipped or not; item text from the metadata JSON lines.

    Metadata duplicates (same asin twice, as the official files have) keep the first line and are
    counted in `skipped`. Ratings of items without metadata are kept here; the preprocessing drops
    them with a count, as it drops items whose category is unknown.
    """
    ratings_path = _require_file(pathlib.Path(ratings_file), "Amazon ratings")
    meta_path = _require_file(pathlib.Path(meta_file), "Amazon metadata")
    skipped: dict[str, int] = {}
    items = {}
    title_sources: dict[str, int] = {}
    for number, obj in _json_lines(meta_path):
        asin = str(obj.get("asin", "")).strip()
        if not asin:
            raise DataFormatError(f"{meta_path}:{number}: metadata line without an 'asin'")
        if asin in items:
            skipped["metadata: duplicate asin (first line kept)"] = skipped.get(
                "metadata: duplicate asin (first line kept)", 0) + 1
            continue
        title, source = amazon_title(obj)
        title_sources[source] = title_sources.get(source, 0) + 1
        items[asin] = {"title": title, "category": amazon_category(obj, category_index, category_depth)}
    for source, count in title_sources.items():
        if source != "title":
            skipped[f"metadata: title taken from {source} (kept)"] = count

    name = ratings_path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        u, i, r, t = _amazon_csv(ratings_path)
    else:
        u, i, r, t = _amazon_reviews(ratings_path)
    users = {user: {} for user in dict.fromkeys(u)}
    return RawDataset("amazon", np.array(u), np.array(i), np.array(r, np.int32), np.array(t, np.int64), items,
                      users, skipped)


def _amazon_csv(path: pathlib.Path):
    u, i, r, t = [], [], [], []
    for number, line in _text_lines(path, "utf-8"):
        item, user, rating, stamp = _split_fields(path, number, line, ",", 4)
        if number == 1 and not rating.replace(".", "", 1).isdigit():
            continue  # a header row some copies carry
        i.append(item.strip())
        u.append(user.strip())
        r.append(_check_star_rating(path, number, _to_int(path, number, "rating", rating.strip())))
        t.append(_to_int(path, number, "timestamp", stamp.strip()))
    if not u:
        raise DataFormatError(f"{path}: no ratings in the file")
    return u, i, r, t


def _amazon_reviews(path: pathlib.Path):
    u, i, r, t = [], [], [], []
    for number, obj in _json_lines(path):
        for key in ("asin", "reviewerID", "overall"):
            if key not in obj:
                raise DataFormatError(f"{path}:{number}: review without {key!r}")
        try:
            rating = int(float(obj["overall"]))
        except (TypeError, ValueError):
            raise DataFormatError(f"{path}:{number}: overall {obj['overall']!r} is not a number") from None
        _check_star_rating(path, number, rating)
        if "reviewTime" in obj:
            try:
                day = datetime.datetime.strptime(str(obj["reviewTime"]).strip(), "%m %d, %Y")
            except ValueError:
                raise DataFormatError(f"{path}:{number}: reviewTime {obj['reviewTime']!r} is not '%m %d, %Y'") \
                    from None
            stamp = int(day.replace(tzinfo=datetime.timezone.utc).timestamp())
        elif "unixReviewTime" in obj:
            stamp = _to_int(path, number, "unixReviewTime", obj["unixReviewTime"])
        else:
            raise DataFormatError(f"{path}:{number}: review without 'reviewTime' or 'unixReviewTime'")
        u.append(str(obj["reviewerID"]))
        i.append(str(obj["asin"]))
        r.append(rating)
        t.append(stamp)
    if not u:
        raise DataFormatError(f"{path}: no reviews in the file")
    return u, i, r, t
