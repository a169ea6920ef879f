"""The Amazon review data 2018 reader: ratings (the ratings-only CSV or review JSON lines, gzipped or not) and
item text from the metadata JSON lines (titles cleaned of HTML, the official category rule)."""
from __future__ import annotations

import ast
import datetime
import html
import json
import pathlib
import re
from collections.abc import Iterator

import numpy as np

from rallrec_jax.data.readers.lines import (DataFormatError, PathLike, check_star_rating, require_file,
                                            split_fields, text_lines, to_int)
from rallrec_jax.data.readers.raw import RawDataset, Tally, flat_skipped


def _json_lines(path: pathlib.Path) -> Iterator[tuple[int, dict]]:
    """JSON lines (UTF-8), gzipped or not; also the Python-literal lines of the older dumps."""
    for number, line in text_lines(path, "utf-8"):
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
    ratings_path = require_file(pathlib.Path(ratings_file), "Amazon ratings")
    meta_path = require_file(pathlib.Path(meta_file), "Amazon metadata")
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
                      users, flat_skipped(accounting), accounting)


def _amazon_csv(path: pathlib.Path):
    u, i, r, t = [], [], [], []
    for number, line in text_lines(path, "utf-8"):
        item, user, rating, stamp = split_fields(path, number, line, ",", 4)
        if number == 1 and not rating.replace(".", "", 1).isdigit():
            continue  # a header row some copies carry
        i.append(item.strip())
        u.append(user.strip())
        r.append(check_star_rating(path, number, to_int(path, number, "rating", rating.strip())))
        t.append(to_int(path, number, "timestamp", stamp.strip()))
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
        check_star_rating(path, number, rating)
        if "reviewTime" in obj:
            try:
                day = datetime.datetime.strptime(str(obj["reviewTime"]).strip(), "%m %d, %Y")
            except ValueError:
                raise DataFormatError(f"{path}:{number}: reviewTime {obj['reviewTime']!r} is not '%m %d, %Y'") \
                    from None
            stamp = int(day.replace(tzinfo=datetime.timezone.utc).timestamp())
        elif "unixReviewTime" in obj:
            stamp = to_int(path, number, "unixReviewTime", obj["unixReviewTime"])
        else:
            raise DataFormatError(f"{path}:{number}: review without 'reviewTime' or 'unixReviewTime'")
        u.append(str(obj["reviewerID"]))
        i.append(str(obj["asin"]))
        r.append(rating)
        t.append(stamp)
    if not u:
        raise DataFormatError(f"{path}: no reviews in the file")
    return u, i, r, t
