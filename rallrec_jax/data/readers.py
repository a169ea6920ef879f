"""Readers for the official file formats of MovieLens (1M, 100K), Book-Crossing and Amazon 2018.

Each reader returns a `RawDataset`: the interactions as parallel numpy arrays of official ids, plus
item and user tables of text fields. Readers check what the format promises and fail loudly, naming
the file and the 1-based line, on anything else (truncated lines, non-numeric fields, unknown ids,
undecodable bytes, empty or missing files). The documented exceptions are skipped and *counted* in
`RawDataset.skipped`: the Book-Crossing dump's known dirt, and the ratings a temporal data set cannot use
(a negative timestamp; MovieLens: a repeated (user, item) rating). Every reader accounts for every row of
every file it reads (`RawDataset.accounting`: rows = kept + each skip reason, checked), so the statistics
show every row that did not make it, and why.
"""
from __future__ import annotations

import ast
import csv
import dataclasses
import datetime
import gzip
import html
import json
import pathlib
import re
from collections.abc import Callable, Iterator, Sequence

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
    # table -> {"file", "rows", "kept", "skipped": {reason: n}, "noted": {reason: n}} (see `Tally`); the
    # interactions are the table "ratings".
    accounting: dict[str, dict] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n = len(self.user)
        lengths = {len(self.item), len(self.rating)} | ({len(self.timestamp)} if self.timestamp is not None else set())
        if lengths != {n}:
            raise ValueError(f"{self.name}: interaction arrays differ in length: {n}, {lengths}")
        for table, a in self.accounting.items():
            if a["kept"] + sum(a["skipped"].values()) != a["rows"]:
                raise AssertionError(f"{self.name} reader: {a['file']} has {a['rows']} rows but {a['kept']} kept and "
                                     f"{a['skipped']} skipped")
        if "ratings" in self.accounting and self.accounting["ratings"]["kept"] != n:
            raise AssertionError(f"{self.name} reader: {self.accounting['ratings']['kept']} ratings counted as kept, "
                                 f"{n} returned")

    @property
    def num_interactions(self) -> int:
        return len(self.user)


class Tally:
    """The rows of one table (file): each is kept, skipped for a reason, and possibly kept with a note (a fix
    applied, a duplicate left as the official code leaves it). `report(kept)` checks kept + skipped = rows."""

    def __init__(self, table: str, path: pathlib.Path):
        self.table, self.path, self.rows = table, path, 0
        self.skipped: dict[str, int] = {}
        self.noted: dict[str, int] = {}

    def row(self) -> None:
        self.rows += 1

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    def note(self, reason: str, count: int = 1) -> None:
        if count:
            self.noted[reason] = self.noted.get(reason, 0) + count

    def report(self, kept: int) -> dict:
        if kept + sum(self.skipped.values()) != self.rows:
            raise AssertionError(f"{self.path}: {self.rows} rows read, but {kept} kept and {self.skipped} skipped")
        return {"file": str(self.path), "rows": self.rows, "kept": kept, "skipped": dict(self.skipped),
                "noted": dict(self.noted)}


def _flat_skipped(accounting: dict[str, dict]) -> dict[str, int]:
    """`RawDataset.skipped`: every skip and note of every table as "table: reason" -> count."""
    out = {}
    for table, a in accounting.items():
        for kind in ("skipped", "noted"):
            out.update({f"{table}: {reason}": n for reason, n in a[kind].items()})
    return out


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


def _byte_lines(raw: bytes) -> list[bytes]:
    """The file's lines at the byte level (a CR before the LF dropped): numbering matches what editors show,
    whatever code points a line holds (ISO-8859-1's 0x85 is a line break to `str.splitlines`)."""
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _decode_lines(path: pathlib.Path, raw: bytes, encoding: str,
                  bad_line: Callable[[int], None] | None = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line) of a file in one encoding, decided for the whole file.

    `encoding="latin-1-or-utf-8"` is the documented recovery for files that are officially ISO-8859-1: a copy
    re-saved as UTF-8 reads as UTF-8. A file whose non-ASCII lines are mostly UTF-8 is UTF-8, and a line that
    is not (one stray ISO-8859-1 byte) is that line's fault: `bad_line(number)` (a counted skip) or an error
    naming it, never a reason to re-decode the whole file. Otherwise the file is ISO-8859-1 (every byte
    decodes). NUL bytes mean another encoding altogether (UTF-16/32) or a binary file: an error.
    """
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise DataFormatError(
            f"{path}:{line}: NUL byte: the file is not text in the expected encoding "
            f"({encoding}); UTF-16/UTF-32 or binary content?"
        )
    lines = _byte_lines(raw)
    if encoding == "latin-1-or-utf-8":
        try:
            raw.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            utf8 = invalid = 0
            for line in lines:
                if not line.isascii():
                    try:
                        line.decode("utf-8")
                        utf8 += 1
                    except UnicodeDecodeError:
                        invalid += 1
            encoding = "utf-8" if utf8 > invalid else "iso-8859-1"
    for number, line in enumerate(lines, start=1):
        try:
            yield number, line.decode(encoding)
        except UnicodeDecodeError as exc:
            if bad_line is not None:
                bad_line(number)
                continue
            raise DataFormatError(
                f"{path}:{number}: bytes that are not valid {encoding} ({exc.reason} at column {exc.start + 1}), "
                "in a file that is otherwise in that encoding; re-save this line (or the file) in one encoding"
            ) from None


def _text_lines(path: pathlib.Path, encoding: str,
                bad_line: Callable[[int], None] | None = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline), skipping fully blank lines."""
    for number, line in _decode_lines(path, _open_bytes(path), encoding, bad_line):
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
                      _flat_skipped(accounting), accounting)


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
    rows = [0, 0]
    for number, line in _text_lines(movies_path, "latin-1-or-utf-8"):
        rows[0] += 1
        movie_id, title, genres = _split_fields(movies_path, number, line, "::", 3)
        _to_int(movies_path, number, "MovieID", movie_id)
        items[movie_id] = {"title": title.strip(), "genre": genres.split("|")[0].strip()}
    users: dict[str, dict[str, str]] = {}
    for number, line in _text_lines(users_path, "latin-1-or-utf-8"):
        rows[1] += 1
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
    data_path, item_path, user_path = (_require_file(root / name, f"MovieLens-100K {what}") for name, what in
                                       (("u.data", "ratings"), ("u.item", "movies"), ("u.user", "users")))
    items = {}
    rows = [0, 0]
    for number, line in _text_lines(item_path, "latin-1-or-utf-8"):
        rows[0] += 1
        fields = _split_fields(item_path, number, line, "|", 5 + len(ML100K_GENRES))
        flags = fields[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataFormatError(f"{item_path}:{number}: genre flags must be 0 or 1, got {flags}")
        genre = next((g for g, f in zip(ML100K_GENRES, flags) if f == "1"), "unknown")
        items[fields[0]] = {"title": fields[1].strip(), "genre": genre}
    users = {}
    for number, line in _text_lines(user_path, "latin-1-or-utf-8"):
        rows[1] += 1
        user_id, age, gender, job, _zip = _split_fields(user_path, number, line, "|", 5)
        _check_genders(user_path, number, gender)
        users[user_id] = {"gender": GENDERS[gender], "age": ml100k_age_bucket(_to_int(user_path, number, "age", age)),
                          "job": job.strip()}
    lines, u, i, r, t = _read_ratings(data_path, "\t")
    _check_unknown(data_path, lines, i, items.keys(), "movie", item_path.name)
    _check_unknown(data_path, lines, u, users.keys(), "user", user_path.name)
    return _movielens("movielens-100k", (data_path, item_path, user_path), lines, u, i, r, t, items, users, rows)


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
    inter_path, item_path, user_path = (
        _require_file(root / f"ml-100k.{suffix}", f"MovieLens-100K {what} (RecBole)")
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
    return _movielens("movielens-100k", (inter_path, item_path, user_path), lines, u, i, r, t, items, users, rows)


# --------------------------------------------------------------------------------------------------
# Book-Crossing (BX-CSV-Dump): `;`-separated, quoted, ISO-8859-1, header row.

_ISBN = re.compile(r"[0-9A-Za-z]{10}")


def _lenient_fields(line: str) -> list[str] | None:
    """`;`-separated fields of a line whose quoting the csv module rejects: a quoted field ends at the quote
    before the next `;` (or the line's end), so an unescaped inner quote (`"The "Best" Book"`) stays text;
    doubled quotes are undone, and a stray quote left at a field's end (`"7""`) is dropped. None when a quoted
    field never ends."""
    fields, pos = [], 0
    while True:
        if line.startswith('"', pos):
            end = line.find('";', pos + 1)
            if end < 0:
                if len(line) - 1 <= pos or not line.endswith('"'):
                    return None
                fields.append(line[pos + 1:-1])
                break
            fields.append(line[pos + 1:end])
            pos = end + 2
        else:
            end = line.find(";", pos)
            fields.append(line[pos:] if end < 0 else line[pos:end])
            if end < 0:
                break
            pos = end + 1
    out = []
    for field in fields:
        field = field.replace('""', '"')
        if field.count('"') % 2:
            field = field[:-1] if field.endswith('"') else field[1:] if field.startswith('"') else field
        out.append(field)
    return out


def _bx_rows(path: pathlib.Path, header: Sequence[str], tally: Tally) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of a BX-CSV-Dump file, one line at a time: no field of the dump spans lines, so a stray
    quote can never swallow the next row. A line the csv module rejects is read by `_lenient_fields` (noted)
    or skipped; a line not in the file's encoding is skipped; both counted in `tally`."""
    lines = _text_lines(path, "latin-1-or-utf-8", bad_line=lambda number: (
        tally.row(), tally.skip("line not in the file's encoding (the rest of the file is UTF-8)")))
    try:
        number, first = next(lines)
    except StopIteration:
        raise DataFormatError(f"{path}: the file is empty") from None
    if number != 1 or [h.strip() for h in next(csv.reader([first], delimiter=";"))[: len(header)]] != list(header):
        raise DataFormatError(f"{path}:1: expected header {list(header)}, found {first[:200]!r}")
    for number, line in lines:
        tally.row()
        try:
            row = next(csv.reader([line], delimiter=";", quotechar='"', strict=True))
        except csv.Error:
            row = _lenient_fields(line)
            if row is None:
                tally.skip("a quoted field that never ends")
                continue
            tally.note("malformed quotes (read field by field, kept)")
        yield number, row


def _clean_bx_text(value: str) -> str:
    """The dump escapes quotes as `\\"` inside doubled quotes; unescape and unquote HTML entities."""
    value = value.replace('\\"', '"').replace("\\", "")
    if value.count('"') % 2 == 1:
        value = value.replace('"', "")
    return html.unescape(value).strip()


def read_bookcrossing(data_dir: PathLike) -> RawDataset:
    """BX-Book-Ratings.csv, BX-Books.csv, BX-Users.csv.

    Read line by line. Known-dirty rows (the official dump has them) are skipped and counted, per file, in
    `accounting` (and `skipped`): a books row with the wrong number of fields, an ISBN that is not 10
    alphanumerics, or an ISBN already given (the dump has `039592720X` and `039592720x`: the first line is
    kept); a rating row with the wrong number of fields, an invalid ISBN, or an ISBN/user absent from the
    tables; in any file, a line whose quoting never closes or whose bytes are not in the file's encoding.
    Kept with a note: a users row whose age carries stray quotes (`"14""`), an unreadable age, a line whose
    quoting the csv module rejects but whose fields are clear (`"The "Best" Book"`, a stray `"7""`).
    A non-numeric rating or a rating outside 0..10 is not known dirt: that is an error.
    """
    root = pathlib.Path(data_dir)
    ratings_path = _require_file(root / "BX-Book-Ratings.csv", "Book-Crossing ratings")
    books_path = _require_file(root / "BX-Books.csv", "Book-Crossing books")
    users_path = _require_file(root / "BX-Users.csv", "Book-Crossing users")
    books, users_t, ratings = (Tally("books", books_path), Tally("users", users_path),
                               Tally("ratings", ratings_path))

    items = {}
    for number, row in _bx_rows(books_path, ("ISBN", "Book-Title", "Book-Author", "Year-Of-Publication",
                                             "Publisher"), books):
        if len(row) != 8:
            books.skip("row with the wrong number of fields")
            continue
        isbn = row[0].strip().upper()
        if not _ISBN.fullmatch(isbn):
            books.skip("ISBN not 10 alphanumerics")
            continue
        if isbn in items:
            books.skip("ISBN given twice, in any case (the first line kept)")
            continue
        year = row[3].strip().strip('"')
        publisher = _clean_bx_text(row[4])
        items[isbn] = {
            "title": _clean_bx_text(row[1]),
            "isbn": isbn,
            "author": _clean_bx_text(row[2]),
            "year": year if re.fullmatch(r"\d{4}", year) and year != "0000" else "unknown",
            "publisher": "unknown" if publisher.lower() in ("", "n/a") else publisher,
        }
    users = {}
    for number, row in _bx_rows(users_path, ("User-ID", "Location", "Age"), users_t):
        if len(row) != 3:
            raise DataFormatError(f"{users_path}:{number}: expected 3 fields, found {len(row)}: {row}")
        age_text = _clean_bx_text(row[2]).strip('"')
        if age_text in ("NULL", ""):
            age = None
        elif re.fullmatch(r"\d+", age_text):
            age = int(age_text)
            if age_text != row[2].strip():
                users_t.note("age with stray quotes (cleaned, kept)")
        else:
            users_t.note("unreadable age (kept as unknown)")
            age = None
        user = row[0].strip()
        if user in users:
            users_t.skip("User-ID given twice (the first line kept)")
            continue
        users[user] = {"location": bx_country(row[1]), "age": bx_age_bucket(age)}

    u, i, r = [], [], []
    for number, row in _bx_rows(ratings_path, ("User-ID", "ISBN", "Book-Rating"), ratings):
        if len(row) != 3:
            ratings.skip("row with the wrong number of fields")
            continue
        user, isbn = row[0].strip(), row[1].strip().upper()
        rating = _to_int(ratings_path, number, "Book-Rating", row[2].strip().strip('"'))
        if not 0 <= rating <= 10:
            raise DataFormatError(f"{ratings_path}:{number}: Book-Rating {rating} outside 0..10")
        if not _ISBN.fullmatch(isbn):
            ratings.skip("ISBN not 10 alphanumerics")
        elif isbn not in items:
            ratings.skip("ISBN absent from BX-Books.csv")
        elif user not in users:
            ratings.skip("user absent from BX-Users.csv")
        else:
            u.append(user)
            i.append(isbn)
            r.append(rating)
    accounting = {"ratings": ratings.report(len(u)), "books": books.report(len(items)),
                  "users": users_t.report(len(users))}
    skipped = _flat_skipped(accounting)
    if not u:
        raise DataFormatError(f"{ratings_path}: no usable ratings (skipped: {skipped})")
    return RawDataset("bookcrossing", np.array(u), np.array(i), np.array(r, np.int32), None, items, users,
                      skipped, accounting)


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
    raw = meta.get("category") or []
    if isinstance(raw, str):  # one level given as a string (not the format's list): a list of one, not letters
        raw = [raw]
    cats = [clean_html(str(c)) for c in raw]
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
    counted in `skipped`, as are ratings with a negative timestamp; a user's repeated rating of one item is
    kept (as the official preprocessing keeps it) and counted. Ratings of items without metadata are kept
    here; the preprocessing drops them with a count, as it drops items whose category is unknown.
    """
    ratings_path = _require_file(pathlib.Path(ratings_file), "Amazon ratings")
    meta_path = _require_file(pathlib.Path(meta_file), "Amazon metadata")
    meta_t, ratings = Tally("metadata", meta_path), Tally("ratings", ratings_path)
    items = {}
    title_sources: dict[str, int] = {}
    for number, obj in _json_lines(meta_path):
        meta_t.row()
        asin = str(obj.get("asin", "")).strip()
        if not asin:
            raise DataFormatError(f"{meta_path}:{number}: metadata line without an 'asin'")
        if asin in items:
            meta_t.skip("duplicate asin (first line kept)")
            continue
        if isinstance(obj.get("category"), str):
            meta_t.note("category given as a string, not a list (read as a list of one)")
        title, source = amazon_title(obj)
        title_sources[source] = title_sources.get(source, 0) + 1
        items[asin] = {"title": title, "category": amazon_category(obj, category_index, category_depth)}
    for source, count in title_sources.items():
        if source != "title":
            meta_t.note(f"title taken from {source} (kept)", count)

    name = ratings_path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        u, i, r, t = _amazon_csv(ratings_path)
    else:
        u, i, r, t = _amazon_reviews(ratings_path)
    ratings.rows = len(u)
    stamps = np.asarray(t, np.int64)
    ok = stamps >= 0
    ratings.skip("negative timestamp", int((~ok).sum()))
    u, i, r, t = ([x[k] for k in np.flatnonzero(ok)] for x in (u, i, r, t))
    pairs = len(set(zip(u, i)))
    # Kept, as the official preprocessing keeps them (a user who reviewed an item twice), but counted.
    ratings.note("repeated (user, item) rating (kept, as the official preprocessing)", len(u) - pairs)
    accounting = {"ratings": ratings.report(len(u)), "metadata": meta_t.report(len(items))}
    users = {user: {} for user in dict.fromkeys(u)}
    return RawDataset("amazon", np.array(u), np.array(i), np.array(r, np.int32), np.array(t, np.int64), items,
                      users, _flat_skipped(accounting), accounting)


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
