"""TFDS builders for the CTR samples, written as array_record so that no TensorFlow is needed.

A builder reads a prepared `CTRData` folder (see `ctr.py`) and writes one example per sample with
its history materialised: the most recent `max_history` interactions (oldest first), plus the full
history length so that a truncation is always visible. Reading back goes through
`tfds.data_source`, i.e. random access over array_record files, no `tf.data`.

A built copy loads by name with only its folder, in any process, without this module or the prepared data:

    tfds.data_source("ctr_samples/<config>", split="test", data_dir=".../data/tfds")
    tfds.builder("ctr_samples/<config>", data_dir=".../data/tfds")   # info, metadata, splits

The config name is `<data set>_h<max_history>_<fingerprint of the samples>` (`dataset_name`); tfds reads the
features, splits and metadata from the files it wrote (dataset_info.json, features.json, metadata.json).
It is an export format: the stages read `ctr.npz` (CSR arrays, histories never copied). Decoding one example
per sample is 16x slower for a 500-row evaluation sample and 70x for a whole split (benchmarks/bench_tfds.py).
"""
from __future__ import annotations

import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from rallrec_jax.data.ctr import SPLITS, CTRData

DEFAULT_MAX_HISTORY = 100
BUILDER_NAME = "ctr_samples"  # tfds's name for CtrSamples (its class name in snake case)


def config_name(data: CTRData, max_history: int = DEFAULT_MAX_HISTORY) -> str:
    """The builder config of a prepared data set: it changes with the samples and the history cut."""
    return f"{data.name.replace('-', '_')}_h{int(max_history)}_{data.fingerprint()}"


def dataset_name(prepared_dir: str | os.PathLike, max_history: int = DEFAULT_MAX_HISTORY) -> str:
    """"ctr_samples/<config>": the name `tfds.builder` / `tfds.data_source` load the copy by."""
    return f"{BUILDER_NAME}/{config_name(CTRData.load(prepared_dir), max_history)}"


def _features() -> tfds.features.FeaturesDict:
    int_seq = lambda dtype: tfds.features.Sequence(tfds.features.Scalar(dtype=dtype))  # noqa: E731
    return tfds.features.FeaturesDict({
        "sample_index": np.int64,
        "user": np.int32,
        "user_id": tfds.features.Text(),
        "item": np.int32,
        "item_id": tfds.features.Text(),
        "label": np.int64,
        "rating": np.int32,
        "timestamp": np.int64,
        "history_length": np.int32,  # full length, before truncation to max_history
        "history_item": int_seq(np.int32),
        "history_rating": int_seq(np.int32),
        "history_timestamp": int_seq(np.int64),
    })


class CtrSamples(tfds.core.GeneratorBasedBuilder):
    """CTR samples of one prepared data set; the builder config name is the data set's name."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "CTR samples with histories, from rallrec_jax.data.ctr."}

    def __init__(self, *, prepared_dir: str | os.PathLike, max_history: int = DEFAULT_MAX_HISTORY, **kwargs):
        self._prepared_dir = pathlib.Path(prepared_dir).resolve()
        self._max_history = int(max_history)
        self._ctr = CTRData.load(self._prepared_dir)
        config = tfds.core.BuilderConfig(
            name=config_name(self._ctr, self._max_history),
            description=f"{self._ctr.name}, histories cut to the last {self._max_history}")
        kwargs.setdefault("file_format", "array_record")
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"CTR samples of {self._ctr.name} (RALLRec+ preprocessing).",
            features=_features(),
            disable_shuffling=True,  # example i of a split is sample i: order is part of the data
            metadata=tfds.core.MetadataDict(
                statistics=self._ctr.statistics(), max_history=self._max_history,
                prepared_dir=str(self._prepared_dir)),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in SPLITS if self._ctr.num_samples(split)}

    def _generate_examples(self, split: str):
        ctr = self._ctr
        s = ctr.samples[split]
        for index in range(len(s["user"])):
            hist = ctr.history(split, index)
            keep = slice(max(0, len(hist["item"]) - self._max_history), None)
            user, item = int(s["user"][index]), int(s["item"][index])
            yield index, {
                "sample_index": index,
                "user": user,
                "user_id": str(ctr.user_ids[user]),
                "item": item,
                "item_id": str(ctr.item_ids[item]),
                "label": int(s["label"][index]),
                "rating": int(s["rating"][index]),
                "timestamp": int(s["timestamp"][index]),
                "history_length": len(hist["item"]),
                "history_item": hist["item"][keep],
                "history_rating": hist["rating"][keep],
                "history_timestamp": hist["timestamp"][keep],
            }


def build(prepared_dir: str | os.PathLike, data_dir: str | os.PathLike,
          max_history: int = DEFAULT_MAX_HISTORY) -> CtrSamples:
    """Writes (once) the array_record files of a prepared data set under `data_dir`; afterwards
    `tfds.data_source(builder.info.full_name.rsplit("/", 1)[0], split=..., data_dir=data_dir)` reads them."""
    builder = CtrSamples(prepared_dir=prepared_dir, max_history=max_history,
                         data_dir=str(pathlib.Path(data_dir).resolve()))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(builder._prepared_dir)))
    return builder


def data_source(prepared_dir: str | os.PathLike, data_dir: str | os.PathLike, split: str,
                max_history: int = DEFAULT_MAX_HISTORY):
    """Random-access source of decoded examples (dicts of numpy values) for one split."""
    builder = build(prepared_dir, data_dir, max_history)
    return builder.as_data_source(split=split)
