"""Where a converted dataset keeps its files (shared by writer and readers).

<data_dir>/train/part-00000-of-00008.tfrecord ...  grouped tf.train.Examples
<data_dir>/test/part-00000-of-00008.tfrecord ...
<data_dir>/vocab/<field>.tsv    "raw_id<TAB>train_count", most frequent first
<data_dir>/stats.json           counts, rates, records per split, bad rows (deterministic: written last)
<data_dir>/convert_timings.json wall time, throughput, peak memory of the conversion

A conversion of raw logs holding one split has only that split's directory
(and its entry in stats.json). ``vocab/`` is built from the train split, or
copied from another directory with the same ``vocab/<field>.tsv`` layout
(``data_prep.convert --vocab_from``: a data dir or a training run dir); a
conversion of test logs alone without ``--vocab_from`` has no ``vocab/``.
"""

from __future__ import annotations

import glob
import json
import os
import re

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


def read_stats(data_dir: str) -> dict:
    """The dataset's stats.json; a DatasetError names the file when it is
    missing, not JSON, or not a conversion's stats (no ``splits``)."""
    path = stats_file(data_dir)
    if not os.path.exists(path):
        raise DatasetError(
            f"{path} not found; is {data_dir!r} a completed data_prep.convert output?"
        )
    try:
        with open(path) as f:
            stats = json.load(f)
    except ValueError as e:
        raise DatasetError(f"{path}: not valid JSON ({e}); {_RECONVERT}") from None
    if not isinstance(stats, dict) or not isinstance(stats.get("splits"), dict):
        raise DatasetError(f"{path}: not a conversion's stats (no splits); {_RECONVERT}")
    return stats


def split_impressions(data_dir: str, split: str) -> int | None:
    """The split's impression count from the dataset's stats.json, or None
    (no stats.json, or no such split in it)."""
    try:
        with open(stats_file(data_dir)) as f:
            return int(json.load(f)["splits"][split]["impressions"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
    _check_complete(data_dir, split, files)
    return files


_SHARD = re.compile(r"part-(\d{5})-of-(\d{5})\.tfrecord")
_RECONVERT = "re-run data_prep.convert --overwrite for this dataset"


def _check_complete(data_dir: str, split: str, files: list[str]) -> None:
    """Before any reading starts: every shard of the split is there and none
    that the conversion wrote with records is now empty (its size in stats.json's
    ``shard_bytes``). Cheap: names and sizes only (record CRCs are checked as they
    are read, see esmm_tf.shards)."""
    names = [os.path.basename(f) for f in files]
    totals = {int(m.group(2)) for m in map(_SHARD.fullmatch, names) if m}
    where = split_dir(data_dir, split)
    if len(totals) > 1:
        raise DatasetError(f"{where} holds shards of different conversions; {_RECONVERT}")
    if not totals:
        return
    total = totals.pop()
    missing = sorted(set(shard_name(i, total) for i in range(total)) - set(names))
    if missing:
        raise DatasetError(
            f"{where}: {len(missing)} of {total} shards are missing ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); {_RECONVERT}"
        )
    expected = _shard_bytes(data_dir, split)
    if expected is None or len(expected) != total:
        return
    for path, size in zip(files, expected, strict=True):
        if size > 0 and os.path.getsize(path) == 0:
            raise DatasetError(
                f"{path} is empty (0 bytes; the conversion wrote {size:,}); {_RECONVERT}"
            )


def _shard_bytes(data_dir: str, split: str) -> list[int] | None:
    try:
        with open(stats_file(data_dir)) as f:
            return json.load(f)["splits"][split].get("shard_bytes")
    except (OSError, ValueError, KeyError, TypeError):
        return None
