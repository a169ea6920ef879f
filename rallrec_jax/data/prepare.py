"""The data stage as one library call: official files -> prepared CTR samples under a workdir.

`prepare_data(config, workdir)` is what `experiments/prepare_data.py`, the pipeline and the notebook
call. Its output folder (`workdir/data/<name>/`) is written atomically and reused while the data config
and the files it reads are unchanged (`input_identity`) and its outputs still open; a changed setting, a
fixed or replaced data file, or a missing or damaged output prepares it again.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Mapping

import ml_collections

from rallrec_jax import artifacts, assets, parallel
from rallrec_jax.data import ctr, recipes, tfds_builders
from rallrec_jax.data.readers import amazon, bookcrossing, movielens
from rallrec_jax.data.readers.raw import RawDataset

DATASETS = ("movielens-1m", "movielens-100k", "bookcrossing", "amazon")


def _as_dict(config) -> dict:
    return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)


def _source(c: Mapping):
    """(reader, its arguments, the files it reads) for a data config, fetching the files where needed."""
    name = c["name"]
    if name == "movielens-1m":
        root = assets.movielens_1m_dir(c.get("data_dir") or None)
        return movielens.read_movielens_1m, (root,), [root / f for f in ("ratings.dat", "movies.dat", "users.dat")]
    if name == "movielens-100k":
        root = assets.movielens_100k_dir(c.get("data_dir") or None)
        return movielens.read_movielens_100k, (root,), movielens.movielens_100k_files(root)
    if name == "bookcrossing":
        root = assets.bookcrossing_dir(c.get("data_dir") or None)
        return bookcrossing.read_bookcrossing, (root,), [root / f for f in ("BX-Book-Ratings.csv", "BX-Books.csv",
                                                                       "BX-Users.csv")]
    if name == "amazon":
        ratings, meta = assets.amazon_files(c["amazon_category"], c.get("data_dir") or None,
                                            c.get("ratings_file", ""), c.get("meta_file", ""))
        return (amazon.read_amazon, (ratings, meta, c["category_index"], c["category_depth"] or None),
                [ratings, meta])
    raise ValueError(f"data.name {name!r} is not one of {DATASETS}")


def input_identity(config: Mapping) -> dict:
    """The data config and the identity of every file its reader reads (content hash for small files, size and
    modification time for large ones): a fixed or replaced data file changes it, as a changed setting does."""
    c = _as_dict(config)
    _, _, files = _source(c)
    return {"config": c, "files": [artifacts.file_identity(f) for f in files]}


def data_fingerprint(config: Mapping) -> str:
    return artifacts.fingerprint(input_identity(config))


def read_raw(config: Mapping) -> RawDataset:
    """Reads the official files named by a data config (fetching them where that is possible)."""
    reader, args, _ = _source(_as_dict(config))
    return reader(*args)


def _core(lo: int, hi: int):
    return (lo, hi or None) if lo or hi else None


def preprocess(raw: RawDataset, config: Mapping) -> ctr.CTRData:
    c = _as_dict(config)
    if c["name"] == "bookcrossing":
        selection = (c["item_selection_user_min"], c["item_selection_user_max"] or None,
                     c["item_selection_item_min"]) if c["item_selection_item_min"] else None
        return recipes.preprocess_bookcrossing(
            raw, positive_min_rating=c["positive_min_rating"], item_selection_core=selection,
            min_user_ratings=c["min_user_ratings"], seed=c["seed"], test_fraction=c["test_fraction"],
            valid_fraction=c["valid_fraction"])
    return recipes.preprocess_temporal(
        raw, positive_min_rating=c["positive_min_rating"], min_history=c["min_history"],
        user_core=_core(c["user_core_min"], c["user_core_max"]),
        item_core=_core(c["item_core_min"], c["item_core_max"]),
        top_items=c["top_items"] or None, drop_items_without=c["drop_items_without"] or None,
        split_fractions=tuple(c["split_fractions"]))


# What a prepared folder holds (config.json, the stamp, is written last).
OUTPUTS = ("ctr.npz", "meta.json", "statistics.json", "config.json")


def prepared_dir(config: Mapping, workdir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(workdir).resolve() / "data" / _as_dict(config)["name"]


def prepare_data(config: Mapping, workdir: str | os.PathLike, force: bool = False) -> ctr.CTRData:
    """Reads, preprocesses and saves one data set; returns the prepared `CTRData`.

    Skipped (loaded from disk) when `workdir/data/<name>/` holds the output of the same config.
    Writes `statistics.json` and, if `config.build_tfds`, the TFDS array_record files. In a multi-host run
    process 0 prepares first and the others then load what it wrote (`parallel.writer_first`).
    """
    out = prepared_dir(_as_dict(config), workdir)
    with parallel.writer_first(f"prepare {out}"):
        return _prepare_data(config, workdir, force=force and parallel.is_writer())


def _prepare_data(config: Mapping, workdir: str | os.PathLike, force: bool = False) -> ctr.CTRData:
    c = _as_dict(config)
    out = prepared_dir(c, workdir)
    identity = input_identity(c)
    fingerprint = artifacts.fingerprint(identity)
    stamp = out / "config.json"
    if not force and stamp.is_file():
        try:
            previous = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            previous = {}
        if previous.get("fingerprint") == fingerprint:
            damaged = artifacts.first_unreadable(out / name for name in OUTPUTS)
            if damaged is None:
                try:
                    data = ctr.CTRData.load(out)
                except (ValueError, OSError) as exc:
                    damaged = (out / "ctr.npz", str(exc))
                else:
                    logging.info("data: %s is up to date", out)
                    return data
            logging.warning("data: %s is %s; preparing the data set again", *damaged)
        else:
            changed = artifacts.differences(previous.get("identity", {}), identity)
            if previous:
                logging.info("data: %s was prepared from other settings or files (%s); preparing it again", out,
                             "; ".join(changed[:4]) or "an older format")
    raw = read_raw(c)
    data = preprocess(raw, c)
    data.save(out)
    artifacts.atomic_write_json(out / "statistics.json", data.statistics())
    if c.get("build_tfds"):
        builder = tfds_builders.build(out, out.parent / "tfds",
                                      c.get("tfds_max_history", tfds_builders.DEFAULT_MAX_HISTORY))
        logging.info("data: TFDS copy tfds.data_source(%r, split=..., data_dir=%r)",
                     f"{tfds_builders.BUILDER_NAME}/{builder.builder_config.name}", str(out.parent / "tfds"))
    # Written last: its presence with this fingerprint means every output above is complete.
    artifacts.atomic_write_json(stamp, {"fingerprint": fingerprint, "config": c, "identity": identity})
    return data
