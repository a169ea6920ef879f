"""The data stage as one library call: official files -> prepared CTR samples under a workdir.

`prepare_data(config, workdir)` is what `experiments/prepare_data.py`, the pipeline and the notebook
call. Its output folder (`workdir/data/<name>/`) is written atomically and reused when the data
config that made it is unchanged; any change re-prepares it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
from collections.abc import Mapping

import ml_collections

from rallrec_jax import assets
from rallrec_jax.data import ctr, readers, tfds_builders

DATASETS = ("movielens-1m", "movielens-100k", "bookcrossing", "amazon")


def _as_dict(config) -> dict:
    return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)


def data_fingerprint(config: Mapping) -> str:
    blob = json.dumps(_as_dict(config), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_raw(config: Mapping) -> readers.RawDataset:
    """Reads the official files named by a data config (fetching them where that is possible)."""
    c = _as_dict(config)
    name = c["name"]
    if name == "movielens-1m":
        return readers.read_movielens_1m(assets.movielens_1m_dir(c.get("data_dir") or None))
    if name == "movielens-100k":
        return readers.read_movielens_100k(assets.movielens_100k_dir(c.get("data_dir") or None))
    if name == "bookcrossing":
        return readers.read_bookcrossing(assets.bookcrossing_dir(c.get("data_dir") or None))
    if name == "amazon":
        ratings, meta = assets.amazon_files(c["amazon_category"], c.get("data_dir") or None,
                                            c.get("ratings_file", ""), c.get("meta_file", ""))
        return readers.read_amazon(ratings, meta, c["category_index"], c["category_depth"] or None)
    raise ValueError(f"data.name {name!r} is not one of {DATASETS}")


def _core(lo: int, hi: int):
    return (lo, hi or None) if lo or hi else None


def preprocess(raw: readers.RawDataset, config: Mapping) -> ctr.CTRData:
    c = _as_dict(config)
    if c["name"] == "bookcrossing":
        selection = (c["item_selection_user_min"], c["item_selection_user_max"] or None,
                     c["item_selection_item_min"]) if c["item_selection_item_min"] else None
        return ctr.preprocess_bookcrossing(
            raw, positive_min_rating=c["positive_min_rating"], item_selection_core=selection,
            min_user_ratings=c["min_user_ratings"], seed=c["seed"], test_fraction=c["test_fraction"],
            valid_fraction=c["valid_fraction"])
    return ctr.preprocess_temporal(
        raw, positive_min_rating=c["positive_min_rating"], min_history=c["min_history"],
        user_core=_core(c["user_core_min"], c["user_core_max"]),
        item_core=_core(c["item_core_min"], c["item_core_max"]),
        top_items=c["top_items"] or None, drop_items_without=c["drop_items_without"] or None,
        split_fractions=tuple(c["split_fractions"]))


def prepared_dir(config: Mapping, workdir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(workdir).resolve() / "data" / _as_dict(config)["name"]


def prepare_data(config: Mapping, workdir: str | os.PathLike, force: bool = False) -> ctr.CTRData:
    """Reads, preprocesses and saves one data set; returns the prepared `CTRData`.

    Skipped (loaded from disk) when `workdir/data/<name>/` holds the output of the same config.
    Writes `statistics.json` and, if `config.build_tfds`, the TFDS array_record files.
    """
    c = _as_dict(config)
    out = prepared_dir(c, workdir)
    fingerprint = data_fingerprint(c)
    stamp = out / "config.json"
    if not force and stamp.is_file():
        try:
            previous = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            previous = {}
        if previous.get("fingerprint") == fingerprint:
            logging.info("data: %s is up to date", out)
            return ctr.CTRData.load(out)
    raw = read_raw(c)
    data = preprocess(raw, c)
    data.save(out)
    (out / "statistics.json").write_text(json.dumps(data.statistics(), indent=1))
    if c.get("build_tfds"):
        tfds_builders.build(out, out.parent / "tfds", c.get("tfds_max_history", tfds_builders.DEFAULT_MAX_HISTORY))
    # Written last: its presence with this fingerprint means every output above is complete.
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "config": c}, indent=1, default=str))
    os.replace(tmp, stamp)
    return data
