"""Where a converted dataset keeps its files (shared by writer and readers).

<data_dir>/train/part-00000-of-00008.tfrecord ...  grouped tf.train.Examples
<data_dir>/test/part-00000-of-00008.tfrecord ...
<data_dir>/vocab/<field>.tsv    "raw_id<TAB>train_count", most frequent first
<data_dir>/stats.json           counts, rates, bad rows (deterministic: written last)
<data_dir>/convert_timings.json wall time, throughput, peak memory of the conversion
"""

from __future__ import annotations

import glob
import os

SPLITS = ("train", "test")
STATS_FILE = "stats.json"
TIMINGS_FILE = "convert_timings.json"
VOCAB_DIR = "vocab"


class DatasetError(Exception):
    """A converted dataset is missing or incomplete."""


def shard_name(index: int, num_shards: int) -> str:
    return f"part-{index:05d}-of-{num_shards:05d}.tfrecord"


def split_dir(data_dir: str, split: str) -> str:
    return os.path.join(data_dir, split)


def vocab_file(data_dir: str, field_id: str) -> str:
    return os.path.join(data_dir, VOCAB_DIR, f"{field_id}.tsv")


def stats_file(data_dir: str) -> str:
    return os.path.join(data_dir, STATS_FILE)


def timings_file(data_dir: str) -> str:
    return os.path.join(data_dir, TIMINGS_FILE)


def shard_files(data_dir: str, split: str) -> list[str]:
    """The split's shards, sorted; a clear error when there are none."""
    if not os.path.isdir(data_dir):
        raise DatasetError(
            f"data dir {data_dir!r} does not exist; convert raw logs first: "
            "python -m data_prep.convert --raw_dir=RAW --out_dir=DATA"
        )
    files = sorted(glob.glob(os.path.join(split_dir(data_dir, split), "part-*.tfrecord")))
    if not files:
        raise DatasetError(
            f"no TFRecord shards in {split_dir(data_dir, split)!r}; is {data_dir!r} the "
            "--out_dir of a completed data_prep.convert run?"
        )
    return files
