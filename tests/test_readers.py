"""Readers on the real official files, and every kind of bad input named by file and line."""
import gzip
import pathlib
import shutil

import numpy as np
import pytest

from rallrec_jax import assets
from rallrec_jax.data import ctr, recipes
from rallrec_jax.data.readers import amazon, bookcrossing, movielens
from rallrec_jax.data.readers.lines import DataFormatError
from rallrec_jax.data.readers.raw import RawDataset, Tally


@pytest.fixture(scope="module")
def ml1m(shared_data):
    return movielens.read_movielens_1m(shared_data / "ml-1m")


def test_movielens_1m_real_files(ml1m):
    assert ml1m.num_interactions == 487_650
    assert len(ml1m.item_fields) == 3_883 and len(ml1m.user_fields) == 6_040
    assert ml1m.item_fields["1"] == {"title": "Toy Story (1995)", "genre": "Animation"}
    assert ml1m.user_fields["1"] == {"gender": "female", "age": "under 18", "job": "K-12 student"}
    assert ml1m.user_fields["2"]["job"] == "self-employed" and ml1m.user_fields["2"]["age"] == "above 56"
    assert set(np.unique(ml1m.rating)) == {1, 2, 3, 4, 5}
    # ISO-8859-1 titles decode to the right characters.
    assert any("é" in f["title"] for f in ml1m.item_fields.values())


def test_movielens_100k_both_layouts_agree(tmp_path):
    recbole = movielens.read_movielens_100k(assets.fetch_wheel("recbole") / assets.ML100K_WHEEL_FOLDER)
    assert recbole.num_interactions == 100_000
    assert len(recbole.item_fields) == 1_682 and len(recbole.user_fields) == 943
    assert recbole.item_fields["1"] == {"title": "Toy Story (1995)", "genre": "Animation"}
    assert recbole.user_fields["1"] == {"gender": "male", "age": "18-24", "job": "technician"}
    # Write the same data in the GroupLens layout and read it back through the other reader.
    genres = movielens.ML100K_GENRES
    with open(tmp_path / "u.data", "w") as f:
        for u, i, r, t in zip(recbole.user, recbole.item, recbole.rating, recbole.timestamp):
            f.write(f"{u}\t{i}\t{r}\t{t}\n")
    with open(tmp_path / "u.item", "w", encoding="iso-8859-1") as f:
        for i, fields in recbole.item_fields.items():
            flags = ["1" if g == fields["genre"] else "0" for g in genres]
            f.write("|".join([i, fields["title"], "", "", ""] + flags) + "\n")
    with open(tmp_path / "u.user", "w") as f:
        for u in recbole.user_fields:
            f.write(f"{u}|24|M|technician|00000\n")
    grouplens = movielens.read_movielens_100k(tmp_path)
    np.testing.assert_array_equal(grouplens.item, recbole.item)
    np.testing.assert_array_equal(grouplens.rating, recbole.rating)
    assert grouplens.item_fields == recbole.item_fields


def test_bookcrossing_real_files(shared_data):
    bx = bookcrossing.read_bookcrossing(shared_data / "bookcrossing")
    assert len(bx.item_fields) == 27_108 or len(bx.item_fields) == 27_109 - sum(
        v for k, v in bx.skipped.items() if k.startswith("books"))
    assert len(bx.user_fields) == 48_299
    # Every rating row is either kept or counted as skipped: nothing silently dropped.
    assert bx.num_interactions + sum(v for k, v in bx.skipped.items() if k.startswith("ratings")) == 230_936
    assert bx.timestamp is None
    book = bx.item_fields["0002005018"]
    assert book == {"title": "Clara Callan", "isbn": "0002005018", "author": "Richard Bruce Wright", "year": "2001",
                    "publisher": "HarperFlamingo Canada"}
    assert bx.user_fields["9"] == {"location": "usa", "age": "unknown"}
    # The dump's escaped quotes are cleaned, not left as backslashes.
    assert not any("\\" in f["title"] for f in bx.item_fields.values())


def test_amazon_real_files(shared_data):
    folder = shared_data / "amazon-2018"
    az = amazon.read_amazon(folder / "Magazine_Subscriptions.csv", folder / "meta_Magazine_Subscriptions.json.gz",
                             category_index=1, category_depth=None)
    assert az.num_interactions == 89_689
    assert len(az.item_fields) == 2_320  # distinct asins; duplicates counted
    assert az.skipped["metadata: duplicate asin (first line kept)"] == 3_385 - 2_320
    assert all("<" not in f["title"] for f in az.item_fields.values())
    assert sum(1 for f in az.item_fields.values() if f["title"]) >= 2_300
    assert set(np.unique(az.rating)) <= {1, 2, 3, 4, 5}
    strict = amazon.read_amazon(folder / "Magazine_Subscriptions.csv", folder / "meta_Magazine_Subscriptions.json.gz")
    # The official rule (exactly three levels, third one) leaves most magazines 'unknown'.
    assert sum(f["category"] == "unknown" for f in strict.item_fields.values()) > 1000


def test_amazon_review_json_and_plain_meta(tmp_path):
    reviews = tmp_path / "Movies_and_TV_5.json.gz"
    with gzip.open(reviews, "wt") as f:
        f.write('{"overall": 5.0, "reviewTime": "09 18, 1999", "reviewerID": "U1", "asin": "A1"}\n')
        f.write('{"overall": 2.0, "unixReviewTime": 1000, "reviewerID": "U2", "asin": "A1"}\n')
    meta = tmp_path / "meta.json"
    meta.write_text("{'asin': 'A1', 'title': 'Heat &amp; Dust', 'category': ['Movies & TV', 'Genre', 'Drama']}\n")
    az = amazon.read_amazon(reviews, meta)
    assert az.timestamp.tolist() == [937612800, 1000]
    assert az.item_fields["A1"] == {"title": "Heat & Dust", "category": "Drama"}


# ---- bad input ----------------------------------------------------------------------------------

def _ml1m_copy(src: pathlib.Path, dst: pathlib.Path, n_ratings=200) -> pathlib.Path:
    dst.mkdir()
    shutil.copy(src / "movies.dat", dst)
    shutil.copy(src / "users.dat", dst)
    with open(src / "ratings.dat") as f:
        (dst / "ratings.dat").write_text("".join(next(f) for _ in range(n_ratings)))
    return dst


def _replace_line(path: pathlib.Path, number: int, text: str):
    lines = path.read_text(encoding="iso-8859-1").splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="iso-8859-1")


def test_truncated_line(shared_data, tmp_path):
    d = _ml1m_copy(shared_data / "ml-1m", tmp_path / "ml")
    _replace_line(d / "ratings.dat", 17, "1::1193::5")
    with pytest.raises(DataFormatError, match=r"ratings\.dat:17: expected 4 fields"):
        movielens.read_movielens_1m(d)


def test_non_numeric_rating(shared_data, tmp_path):
    d = _ml1m_copy(shared_data / "ml-1m", tmp_path / "ml")
    _replace_line(d / "ratings.dat", 5, "1::1193::five::978300760")
    with pytest.raises(DataFormatError, match=r"ratings\.dat:5: rating 'five' is not a number"):
        movielens.read_movielens_1m(d)
    _replace_line(d / "ratings.dat", 5, "1::1193::9::978300760")
    with pytest.raises(DataFormatError, match=r"ratings\.dat:5: rating 9 outside 1\.\.5"):
        movielens.read_movielens_1m(d)


def test_non_numeric_bookcrossing_rating(shared_data, tmp_path):
    d = tmp_path / "bx"
    shutil.copytree(shared_data / "bookcrossing", d)
    for p in d.iterdir():
        p.chmod(0o644)
    _replace_line(d / "BX-Book-Ratings.csv", 3, '"276754";"0684867621";"eight"')
    with pytest.raises(DataFormatError, match=r"BX-Book-Ratings\.csv:3: Book-Rating 'eight' is not a number"):
        bookcrossing.read_bookcrossing(d)


def test_unknown_item_id(shared_data, tmp_path):
    d = _ml1m_copy(shared_data / "ml-1m", tmp_path / "ml")
    _replace_line(d / "ratings.dat", 9, "1::99999::5::978300760")
    with pytest.raises(DataFormatError, match=r"ratings\.dat:9: unknown movie id '99999' \(not in movies\.dat\)"):
        movielens.read_movielens_1m(d)


def test_wrong_encoding(shared_data, tmp_path):
    # UTF-16 where ISO-8859-1 / ASCII is promised: named, not read as garbage.
    d = _ml1m_copy(shared_data / "ml-1m", tmp_path / "ml")
    text = (d / "ratings.dat").read_text()
    (d / "ratings.dat").write_bytes(text.encode("utf-16"))
    with pytest.raises(DataFormatError, match=r"ratings\.dat:1: NUL byte.*UTF-16"):
        movielens.read_movielens_1m(d)
    # Latin-1 bytes where JSON (UTF-8) is promised.
    meta = tmp_path / "meta.json"
    meta.write_bytes('{"asin": "A1", "title": "ok"}\n{"asin": "A2", "title": "Caf\u00e9"}\n'.encode("iso-8859-1"))
    ratings = tmp_path / "r.csv"
    ratings.write_text("A1,U1,5.0,1000\n")
    with pytest.raises(DataFormatError, match=r"meta\.json:2: bytes that are not valid utf-8"):
        amazon.read_amazon(ratings, meta)


def test_utf8_copy_of_latin1_file_is_recovered(shared_data, tmp_path):
    """Documented recovery: a movies.dat re-saved as UTF-8 reads the same as the official one."""
    d = _ml1m_copy(shared_data / "ml-1m", tmp_path / "ml")
    text = (d / "movies.dat").read_text(encoding="iso-8859-1")
    (d / "movies.dat").write_text(text, encoding="utf-8")
    original = movielens.read_movielens_1m(_ml1m_copy(shared_data / "ml-1m", tmp_path / "ml2"))
    assert movielens.read_movielens_1m(d).item_fields == original.item_fields


def test_empty_file(shared_data, tmp_path):
    d = _ml1m_copy(shared_data / "ml-1m", tmp_path / "ml")
    (d / "ratings.dat").write_text("")
    with pytest.raises(DataFormatError, match=r"ratings\.dat: the file is empty"):
        movielens.read_movielens_1m(d)
    (d / "ratings.dat").write_text("\n\n")
    with pytest.raises(DataFormatError, match=r"ratings\.dat: no ratings"):
        movielens.read_movielens_1m(d)


def test_missing_file(shared_data, tmp_path):
    d = _ml1m_copy(shared_data / "ml-1m", tmp_path / "ml")
    (d / "users.dat").unlink()
    with pytest.raises(FileNotFoundError, match=r"users\.dat: missing"):
        movielens.read_movielens_1m(d)


def test_bad_json_line_and_gzip(tmp_path):
    meta = tmp_path / "meta.json"
    meta.write_text('{"asin": "A1"}\n{"asin": "A2", "title": \n')
    ratings = tmp_path / "r.csv"
    ratings.write_text("A1,U1,5.0,1000\n")
    with pytest.raises(DataFormatError, match=r"meta\.json:2: not a JSON object"):
        amazon.read_amazon(ratings, meta)
    bad_gz = tmp_path / "meta.json.gz"
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match=r"meta\.json\.gz: not a readable gzip file"):
        amazon.read_amazon(ratings, bad_gz)


def test_bookcrossing_known_dirt_is_counted(shared_data, tmp_path):
    d = tmp_path / "bx"
    shutil.copytree(shared_data / "bookcrossing", d)
    for p in d.iterdir():
        p.chmod(0o644)
    _replace_line(d / "BX-Book-Ratings.csv", 2, '"276744";"03855X";"7"')  # invalid ISBN
    _replace_line(d / "BX-Book-Ratings.csv", 3, '"276754";"9999999999";"8"')  # book not in the table
    bx = bookcrossing.read_bookcrossing(d)
    assert bx.skipped["ratings: ISBN not 10 alphanumerics"] == 1
    assert bx.skipped["ratings: ISBN absent from BX-Books.csv"] == 1
    assert bx.num_interactions + sum(v for k, v in bx.skipped.items() if k.startswith("ratings")) == 230_936


# ---- defects found by hand (issue 12): each parsed right or skipped and counted, every row accounted for ---

BX_BOOKS_HEADER = '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";"Image-URL-M";' \
                  '"Image-URL-L"'


def _book(isbn, title, author="An Author", year="2001", tail='"";"";""'):
    return f'"{isbn}";"{title}";"{author}";"{year}";"A Publisher";{tail}'


def _write_bx(folder: pathlib.Path, books: list, ratings: list, books_bytes: bytes | None = None) -> pathlib.Path:
    """A small BX-CSV-Dump: the books lines given (or raw bytes), users 1..3, and the rating lines given."""
    folder.mkdir()
    (folder / "BX-Books.csv").write_bytes(books_bytes or ("\n".join([BX_BOOKS_HEADER] + books) + "\n").encode())
    (folder / "BX-Users.csv").write_text('"User-ID";"Location";"Age"\n"1";"x, y, usa";"30"\n"2";"a, b, uk";NULL\n'
                                         '"3";"c, d, spain";"14"""\n')
    (folder / "BX-Book-Ratings.csv").write_text("\n".join(['"User-ID";"ISBN";"Book-Rating"'] + ratings) + "\n")
    return folder


def _accounted(raw: RawDataset, table: str, data_rows: int) -> dict:
    a = raw.accounting[table]
    assert a["rows"] == data_rows == a["kept"] + sum(a["skipped"].values()), a
    return a


def test_bookcrossing_stray_quote_at_a_line_end_keeps_the_next_book(tmp_path):
    books = [_book("0000000001", "Book One", tail='"";"";"7""'), _book("0000000002", "Book Two")]
    d = _write_bx(tmp_path / "bx", books, ['"1";"0000000001";"7"', '"2";"0000000002";"8"', '"3";"0000000002";"9"'])
    bx = bookcrossing.read_bookcrossing(d)
    assert sorted(bx.item_fields) == ["0000000001", "0000000002"]  # the second book is not swallowed
    assert bx.item_fields["0000000002"]["title"] == "Book Two"
    assert sorted(bx.item.tolist()) == ["0000000001", "0000000002", "0000000002"]  # none "absent"
    assert _accounted(bx, "books", 2)["noted"] == {"malformed quotes (read field by field, kept)": 1}
    assert _accounted(bx, "ratings", 3)["skipped"] == {}
    assert _accounted(bx, "users", 3)["noted"] == {"age with stray quotes (cleaned, kept)": 1}


def test_bookcrossing_unescaped_inner_quotes_stay_text(tmp_path):
    books = [_book("0000000003", 'The "Best" Book'), _book("0000000004", 'A ""Quoted"" Word')]
    d = _write_bx(tmp_path / "bx", books, ['"1";"0000000003";"7"'])
    bx = bookcrossing.read_bookcrossing(d)
    assert bx.item_fields["0000000003"]["title"] == 'The "Best" Book'
    assert bx.item_fields["0000000004"]["title"] == 'A "Quoted" Word'  # valid CSV escaping, as before
    assert _accounted(bx, "books", 2)["noted"] == {"malformed quotes (read field by field, kept)": 1}


def test_bookcrossing_one_latin1_byte_skips_its_line_not_the_files_encoding(tmp_path):
    lines = [_book("0000000005", "Café Society"), _book("0000000006", "Crème Brûlée"),
             _book("0000000007", "Naïve")]
    raw = ("\n".join([BX_BOOKS_HEADER] + lines) + "\n").encode("utf-8")
    raw = raw.replace("Naïve".encode("utf-8"), "Naïve".encode("iso-8859-1"))  # one stray ISO-8859-1 byte
    d = _write_bx(tmp_path / "bx", [], ['"1";"0000000005";"7"', '"2";"0000000007";"8"'], books_bytes=raw)
    bx = bookcrossing.read_bookcrossing(d)
    assert bx.item_fields["0000000005"]["title"] == "Café Society"  # UTF-8 rows keep their text
    assert bx.item_fields["0000000006"]["title"] == "Crème Brûlée"
    assert "0000000007" not in bx.item_fields
    books = _accounted(bx, "books", 3)
    assert books["skipped"] == {"line not in the file's encoding (the rest of the file is UTF-8)": 1}
    assert _accounted(bx, "ratings", 2)["skipped"] == {"ISBN absent from BX-Books.csv": 1}
    assert bx.skipped["books: line not in the file's encoding (the rest of the file is UTF-8)"] == 1


def test_bookcrossing_isbn_in_two_cases_keeps_the_first_and_counts(tmp_path):
    books = [_book("039592720X", "Interpreter of Maladies"), _book("039592720x", "A Later Copy")]
    d = _write_bx(tmp_path / "bx", books, ['"1";"039592720x";"7"'])
    bx = bookcrossing.read_bookcrossing(d)
    assert bx.item_fields == {"039592720X": {"title": "Interpreter of Maladies", "isbn": "039592720X",
                                             "author": "An Author", "year": "2001", "publisher": "A Publisher"}}
    assert _accounted(bx, "books", 2)["skipped"] == {"ISBN given twice, in any case (the first line kept)": 1}
    assert bx.item.tolist() == ["039592720X"]


def test_amazon_category_given_as_a_string_is_one_level(tmp_path):
    meta = tmp_path / "meta.json"
    meta.write_text('{"asin": "A1", "title": "Wired", "category": "Magazines"}\n'
                    '{"asin": "A2", "title": "Vogue", "category": ["Magazines", "Fashion"]}\n'
                    '{"asin": "A1", "title": "Wired again"}\n')
    ratings = tmp_path / "r.csv"
    ratings.write_text("A1,U1,5.0,1000\nA2,U1,4.0,-5\nA2,U2,4.0,1001\nA2,U2,2.0,1002\n")
    az = amazon.read_amazon(ratings, meta, category_index=0, category_depth=None)
    assert az.item_fields["A1"]["category"] == "Magazines"  # not its letter 'a'
    assert amazon.read_amazon(ratings, meta, 1, None).item_fields["A1"]["category"] == "unknown"
    assert az.item_fields["A2"]["category"] == "Magazines"
    m = _accounted(az, "metadata", 3)
    assert m["skipped"] == {"duplicate asin (first line kept)": 1}
    assert m["noted"]["category given as a string, not a list (read as a list of one)"] == 1
    r = _accounted(az, "ratings", 4)
    assert r["skipped"] == {"negative timestamp": 1}
    assert r["noted"] == {"repeated (user, item) rating (kept, as the official preprocessing)": 1}
    assert az.timestamp.tolist() == [1000, 1001, 1002]


def _tiny_movielens(folder: pathlib.Path, ratings: list[str]) -> pathlib.Path:
    folder.mkdir()
    (folder / "movies.dat").write_text("".join(f"{m}::Movie {m} (1999)::Drama\n" for m in range(1, 10)))
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (folder / "ratings.dat").write_text("".join(line + "\n" for line in ratings))
    return folder


def test_movielens_duplicate_rating_and_negative_timestamp_are_counted(tmp_path):
    ratings = [f"1::{m}::4::{100 + m}" for m in range(1, 8)]  # user 1 rates movies 1..7
    ratings += ["1::3::1::500",  # a second rating of movie 3: would put the target in its own history
                "2::1::5::-20",  # before 1970
                "2::2::5::300"]
    ml = movielens.read_movielens_1m(_tiny_movielens(tmp_path / "ml", ratings))
    a = _accounted(ml, "ratings", 10)
    assert a["skipped"] == {"negative timestamp": 1, "duplicate (user, item) rating (the earliest kept)": 1}
    assert ml.skipped == {"ratings: negative timestamp": 1,
                          "ratings: duplicate (user, item) rating (the earliest kept)": 1}
    pairs = list(zip(ml.user.tolist(), ml.item.tolist(), ml.timestamp.tolist()))
    assert ("1", "3", 103) in pairs and ("1", "3", 500) not in pairs and ml.timestamp.min() >= 0
    data = recipes.preprocess_temporal(ml, min_history=2)
    for split in ctr.SPLITS:  # no sample's history holds its own target
        for row in range(data.num_samples(split)):
            assert data.samples[split]["item"][row] not in data.history(split, row)["item"]
    with pytest.raises(AssertionError, match="rows read"):  # the accounting is checked, not trusted
        Tally("ratings", tmp_path / "r").report(kept=1)
