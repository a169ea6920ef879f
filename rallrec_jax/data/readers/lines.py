"""Line and field access for the readers, with errors that name the file and the 1-based line.

Decoding (one encoding per file, with the documented ISO-8859-1 / UTF-8 recovery), blank lines skipped,
fixed field counts, integers, star ratings and ids that must be in another table: every reader reads its
files through these, so a bad byte or a truncated line reads the same way in every data set.
"""
from __future__ import annotations

import gzip
import pathlib
from collections.abc import Callable, Iterator

import numpy as np

PathLike = str | pathlib.Path


class DataFormatError(ValueError):
    """A data file does not hold what its format promises; the message names file and line."""


def require_file(path: pathlib.Path, what: str) -> pathlib.Path:
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


def text_lines(path: pathlib.Path, encoding: str,
                bad_line: Callable[[int], None] | None = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline), skipping fully blank lines."""
    for number, line in _decode_lines(path, _open_bytes(path), encoding, bad_line):
        if line.strip():
            yield number, line


def split_fields(path, number, line, sep, count) -> list[str]:
    fields = line.split(sep)
    if len(fields) != count:
        raise DataFormatError(
            f"{path}:{number}: expected {count} fields separated by {sep!r}, found {len(fields)}: {line[:120]!r}"
        )
    return fields


def to_int(path, number, field_name, value) -> int:
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


def check_unknown(path, lines, ids, known: set, kind: str, table: pathlib.Path | str):
    for number, value in zip(lines, ids):
        if value not in known:
            raise DataFormatError(f"{path}:{number}: unknown {kind} id {value!r} (not in {table})")


def check_star_rating(path, number, rating: int) -> int:
    if not 1 <= rating <= 5:
        raise DataFormatError(f"{path}:{number}: rating {rating} outside 1..5")
    return rating
