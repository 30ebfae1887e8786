"""Truncated or corrupted TFRecord shards: find them, name them, or leave them out.

TensorFlow's record reader checks every record's length and CRC and fails
with a DataLossError ("corrupted record at <byte offset>") that names no file.
``corrupt_shard_error`` turns that into an error naming the shard;
``usable_shards`` checks every shard up front and leaves the bad ones out
(``--corrupt_shards=skip``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys

import tensorflow as tf

from esmm_tf.config import CORRUPT_SHARD_POLICIES
from esmm_tf.data_layout import DatasetError


class CorruptShardError(DatasetError):
    """A TFRecord shard is truncated or corrupted."""


@dataclasses.dataclass(frozen=True)
class ShardCheck:
    path: str
    records: int  # records read before the error (all of them when ok)
    error: str | None  # TensorFlow's message, e.g. "corrupted record at 27321585"

    @property
    def ok(self) -> bool:
        return self.error is None


def _message(error: tf.errors.OpError) -> str:
    """TensorFlow's message without the op/function-node decoration, e.g.
    "truncated record at 100584" (TensorFlow adds "' failed with Read less
    bytes than requested", quote unbalanced)."""
    text = error.message.split("}}")[-1]
    text = text.split(" [Op:")[0].split("' failed with ")[0]
    return text.strip().rstrip("'")


def _count(dataset: tf.data.Dataset) -> int:
    return sum(int(tf.size(batch)) for batch in dataset)


def check_shard(path: str) -> ShardCheck:
    """Reads every record of ``path`` (lengths and CRCs checked, nothing parsed)."""
    try:
        return ShardCheck(path, _count(tf.data.TFRecordDataset(path).batch(4096)), None)
    except tf.errors.DataLossError as e:
        error = _message(e)
    records = 0  # how far it reads, record by record
    try:
        for _ in tf.data.TFRecordDataset(path):
            records += 1
    except tf.errors.DataLossError:
        pass
    return ShardCheck(path, records, error)


def describe(check: ShardCheck) -> str:
    return f"{check.path}: {check.error} (after {check.records} good records)"


def corrupt_shard_error(
    files: list[str], error: tf.errors.DataLossError, can_skip: bool = False
) -> CorruptShardError:
    """The error to raise when reading ``files`` failed with ``error``: it names
    the shard(s) that fail the check (the first read error of each).
    ``can_skip``: the command has ``--corrupt_shards=skip`` (training), so the
    message offers it."""
    bad = [c for c in map(check_shard, files) if not c.ok]
    if bad:
        where = "; ".join(map(describe, bad))
    else:
        where = f"one of {len(files)} shards ({_message(error)})"
    return CorruptShardError(
        f"a TFRecord shard is truncated or corrupted: {where}. Re-run data_prep.convert "
        "for this dataset"
        + (", or pass --corrupt_shards=skip to leave bad shards out." if can_skip else ".")
    )


@contextlib.contextmanager
def naming_corrupt_shards(files: list[str], can_skip: bool = False):
    """Turns a DataLossError raised while reading ``files`` into a
    CorruptShardError that names the bad shard (``can_skip``: as in
    ``corrupt_shard_error``)."""
    try:
        yield
    except tf.errors.DataLossError as e:
        raise corrupt_shard_error(files, e, can_skip) from None


def usable_shards(files: list[str], policy: str) -> tuple[list[str], list[ShardCheck]]:
    """(good files, checks of the bad ones). ``policy="fail"`` checks nothing
    here (a bad shard fails when it is read); ``"skip"`` reads every shard once
    and leaves out the bad ones, with a warning on stderr."""
    if policy not in CORRUPT_SHARD_POLICIES:
        raise ValueError(f"corrupt_shards must be one of {CORRUPT_SHARD_POLICIES}, got {policy!r}")
    if policy == "fail":
        return files, []
    checks = [check_shard(f) for f in files]
    bad = [c for c in checks if not c.ok]
    for check in bad:
        print(f"warning: skipping corrupted shard {describe(check)}", file=sys.stderr)
    if len(bad) == len(checks):
        raise CorruptShardError(f"every shard is corrupted: {'; '.join(map(describe, bad))}")
    return [c.path for c in checks if c.ok], bad
