"""The Book-Crossing reader (BX-CSV-Dump): `;`-separated, quoted, ISO-8859-1, header row; the dump's known
dirt is skipped or kept with a note, and counted. Also the user fields' normalisation (country, age band)."""
from __future__ import annotations

import csv
import html
import pathlib
import re
from collections.abc import Iterator, Sequence

import numpy as np

from rallrec_jax.data.readers.lines import DataFormatError, PathLike, require_file, text_lines, to_int
from rallrec_jax.data.readers.raw import RawDataset, Tally, flat_skipped


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
    lines = text_lines(path, "latin-1-or-utf-8", bad_line=lambda number: (
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
    ratings_path = require_file(root / "BX-Book-Ratings.csv", "Book-Crossing ratings")
    books_path = require_file(root / "BX-Books.csv", "Book-Crossing books")
    users_path = require_file(root / "BX-Users.csv", "Book-Crossing users")
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
        rating = to_int(ratings_path, number, "Book-Rating", row[2].strip().strip('"'))
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
    skipped = flat_skipped(accounting)
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
