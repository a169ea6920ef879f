"""TFDS array_record copy of the samples (no TensorFlow) and numpy batches sharded over the mesh."""
import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from rallrec_jax import parallel
from rallrec_jax.data import batching, ctr, recipes, tfds_builders
from rallrec_jax.data.readers import amazon, movielens


@pytest.fixture(scope="module")
def amazon_dir(shared_data, tmp_path_factory):
    folder = shared_data / "amazon-2018"
    raw = amazon.read_amazon(folder / "Magazine_Subscriptions.csv", folder / "meta_Magazine_Subscriptions.json.gz",
                              category_index=1, category_depth=None)
    data = recipes.preprocess_temporal(raw, drop_items_without="category", user_core=(5, None), item_core=(2, None))
    return data.save(tmp_path_factory.mktemp("prep") / "amazon"), data


def test_tfds_examples_equal_the_prepared_samples(amazon_dir, tmp_path):
    prepared, data = amazon_dir
    max_history = 6
    for split in ctr.SPLITS:
        source = tfds_builders.data_source(prepared, tmp_path / "tfds", split, max_history=max_history)
        assert len(source) == data.num_samples(split)
        s = data.samples[split]
        for index in range(len(source)):
            ex = source[index]
            hist = data.history(split, index)
            assert ex["sample_index"] == index
            assert ex["user"] == s["user"][index] and ex["item"] == s["item"][index]
            assert ex["label"] == s["label"][index] and ex["rating"] == s["rating"][index]
            assert ex["item_id"].decode() == data.item_ids[s["item"][index]]
            assert ex["history_length"] == len(hist["item"])
            np.testing.assert_array_equal(np.asarray(ex["history_item"]), hist["item"][-max_history:])
            np.testing.assert_array_equal(np.asarray(ex["history_rating"]), hist["rating"][-max_history:])
    # Built once: a second call reuses the files.
    builder = tfds_builders.build(prepared, tmp_path / "tfds", max_history)
    assert builder.info.metadata["max_history"] == max_history
    assert builder.info.metadata["statistics"]["samples"] == data.statistics()["samples"]


# A fresh interpreter that knows only tfds and the folder: no rallrec_jax, no builder object, no prepared data.
BY_NAME = textwrap.dedent("""
    import json, sys
    import tensorflow_datasets as tfds
    name, data_dir = sys.argv[1], sys.argv[2]
    builder = tfds.builder(name, data_dir=data_dir)
    out = {"max_history": builder.info.metadata["max_history"], "splits": {}}
    for split in builder.info.splits:
        source = tfds.data_source(name, split=split, data_dir=data_dir)
        out["splits"][split] = [{k: v.decode() if isinstance(v, bytes) else [int(x) for x in v]
                                 if isinstance(v, list) else int(v) for k, v in source[i].items()}
                                for i in range(len(source))]
    out["imported"] = sorted(m for m in sys.modules if m.startswith("rallrec_jax"))
    print(json.dumps(out))
""")


def test_a_built_copy_loads_by_name_in_a_fresh_process(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "movies.dat").write_text("".join(f"{m}::Movie {m} (1999)::Drama\n" for m in range(1, 10)))
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (folder / "ratings.dat").write_text("".join(f"{u}::{m}::{1 + (u + m) % 5}::{1000 * u + m}\n"
                                                for u in (1, 2) for m in range(1, 9)))
    data = recipes.preprocess_temporal(movielens.read_movielens_1m(folder), min_history=2)
    prepared = data.save(tmp_path / "prep")
    builder = tfds_builders.build(prepared, tmp_path / "tfds", max_history=3)
    name = tfds_builders.dataset_name(prepared, max_history=3)
    assert builder.info.full_name == f"{name}/1.0.0" and builder.name == tfds_builders.BUILDER_NAME
    del builder
    proc = subprocess.run([sys.executable, "-c", BY_NAME, name, str(tmp_path / "tfds")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["imported"] == [] and got["max_history"] == 3
    assert set(got["splits"]) == {s for s in ctr.SPLITS if data.num_samples(s)}
    for split, examples in got["splits"].items():
        s = data.samples[split]
        assert len(examples) == data.num_samples(split) > 0
        for index, ex in enumerate(examples):
            hist = data.history(split, index)
            assert ex["sample_index"] == index and ex["label"] == s["label"][index]
            assert ex["user_id"] == data.user_ids[s["user"][index]] and ex["item_id"] == data.item_ids[s["item"][index]]
            assert ex["history_length"] == len(hist["item"])
            assert ex["history_item"] == hist["item"][-3:].tolist()
            assert ex["history_timestamp"] == hist["timestamp"][-3:].tolist()


def test_batches_cover_every_row_once_with_padding_masked():
    arrays = {"x": np.arange(21), "y": np.arange(21) * 2.0}
    batches = list(batching.batch_iterator(arrays, 8))
    assert len(batches) == 3
    seen = np.concatenate([b["x"][b["mask"] == 1] for b in batches])
    np.testing.assert_array_equal(seen, np.arange(21))
    assert batches[-1]["mask"].tolist() == [1] * 5 + [0] * 3
    assert len(list(batching.batch_iterator(arrays, 8, drop_remainder=True))) == 2


def test_shuffle_depends_only_on_seed_and_epoch():
    arrays = {"x": np.arange(100)}
    order = lambda **kw: np.concatenate([b["x"] for b in batching.batch_iterator(arrays, 10, shuffle=True, **kw)])  # noqa: E731
    np.testing.assert_array_equal(order(seed=1, epoch=0), order(seed=1, epoch=0))
    assert not np.array_equal(order(seed=1, epoch=0), order(seed=1, epoch=1))
    np.testing.assert_array_equal(np.sort(order(seed=3, epoch=2)), np.arange(100))


def test_batches_are_sharded_over_the_data_axes():
    mesh = parallel.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
    arrays = {"x": np.arange(40, dtype=np.int32).reshape(20, 2)}
    batches = list(batching.batch_iterator(arrays, 16, mesh=mesh))
    first = batches[0]["x"]
    assert isinstance(first, jax.Array) and first.shape == (16, 2)
    assert len(first.sharding.device_set) == 8
    assert first.addressable_shards[0].data.shape == (2, 2)
    np.testing.assert_array_equal(np.asarray(first), arrays["x"][:16])
    with pytest.raises(ValueError, match="does not divide over 8"):
        next(batching.batch_iterator(arrays, 12, mesh=mesh))
