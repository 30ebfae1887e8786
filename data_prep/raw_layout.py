"""The raw Ali-CCP directory as the converters see it: its file names, the raw
files of each split (on any filesystem), the inputs' fingerprint and the
number of shards a split gets.

``data_prep.convert`` (local files), ``data_prep.beam_convert`` (any
filesystem Beam knows, through a :class:`FileSystem` of Beam's calls) and the
TFDS builder use these functions, so they find the same files, record the
same fingerprint and cut the same shards.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

from data_prep import grouping, raw
from esmm_tf import data_layout

# The raw files of split ``<split>``: ``<stem>_<split>.csv`` or ``.csv.gz``.
SKELETON = "sample_skeleton"
COMMON = "common_features"
GROUND_TRUTH = "ground_truth"  # synthetic logs only: the true pCTR/pCVR of each impression

SHARD_TARGET_BYTES = 256 << 20  # raw (uncompressed) skeleton bytes a shard holds
GZIP_RATIO = 4  # rough uncompressed/compressed size of the raw csv
_SAMPLE_BYTES = 1 << 20  # read from a skeleton file to estimate its line count
FORMAT_VERSION = 2  # of the output (2: every row of an index grouped, whatever the order)


def _local_stat(path: str) -> tuple[int, float]:
    st = os.stat(path)
    return st.st_size, st.st_mtime


@dataclasses.dataclass(frozen=True)
class FileSystem:
    """The few filesystem calls the lookup needs (local by default)."""

    exists: Callable[[str], bool] = os.path.exists
    size: Callable[[str], int] = os.path.getsize
    join: Callable[..., str] = os.path.join
    stat: Callable[[str], tuple[int, float]] = _local_stat  # (bytes, mtime in seconds)
    dir_missing: Callable[[str], bool] = lambda path: not os.path.isdir(path)  # noqa: E731


LOCAL = FileSystem()


def find_inputs(raw_dir: str, fs: FileSystem = LOCAL) -> dict[str, dict[str, str | None]]:
    """The raw files of each split present in ``raw_dir``: ``{split: {"skeleton":
    path, "common": path, "ground_truth": path or None}}`` (a split is present
    when either of its two required files is; then both must be)."""
    if fs.dir_missing(raw_dir):
        raise raw.RawInputError(f"raw dir {raw_dir!r} does not exist")

    def find(stem: str, required: bool = True) -> str | None:
        return raw.find_raw_file(
            raw_dir, stem, required, exists=fs.exists, size=fs.size, join=fs.join
        )

    inputs = {}
    for split in data_layout.SPLITS:
        skeleton, common = f"{SKELETON}_{split}", f"{COMMON}_{split}"
        if not any(find(stem, required=False) for stem in (skeleton, common)):
            continue
        inputs[split] = {
            "skeleton": find(skeleton),
            "common": find(common),
            "ground_truth": find(f"{GROUND_TRUTH}_{split}", required=False),
        }
    if not inputs:
        raise raw.RawInputError(
            f"{raw_dir} holds no split: expected {SKELETON}_<split>.csv and "
            f"{COMMON}_<split>.csv (or .csv.gz) for train, test or both "
            "(see README: 'Real Ali-CCP data')"
        )
    return inputs


def fingerprint(config, inputs: dict, partitions: dict[str, int], fs: FileSystem = LOCAL) -> dict:
    """What a conversion's output depends on: every input file's size and
    modification time (to the microsecond), the shards of each split, the settings that change the
    output (``config``'s min_count, max_group_size and
    keep_conversion_without_click) and the output format's version."""
    files = {}
    for split_files in inputs.values():
        for path in split_files.values():
            if path:
                size, mtime = fs.stat(path)
                # Microseconds: a file rewritten within the same second, at the
                # same size, is another input (whole seconds missed it).
                files[os.path.basename(path)] = [size, round(mtime * 1_000_000)]
    return {
        "files": files,
        "partitions": partitions,
        "min_count": config.min_count,
        "max_group_size": config.max_group_size,
        "keep_conversion_without_click": config.keep_conversion_without_click,
        "format_version": FORMAT_VERSION,
    }


def in_seconds(fingerprint: dict) -> dict:
    """``fingerprint`` as conversions before microsecond mtimes wrote it (whole
    seconds): what their stats.json and work directories hold."""
    files = {
        name: [size, mtime // 1_000_000] for name, (size, mtime) in fingerprint["files"].items()
    }
    return {**fingerprint, "files": files}


def raw_bytes(path: str, fs: FileSystem = LOCAL) -> int:
    """The (estimated, for ``.gz``) uncompressed size of a raw file."""
    size = fs.size(path)
    return size * GZIP_RATIO if path.endswith(".gz") else size


def shards_by_size(skeleton: str, fs: FileSystem = LOCAL) -> int:
    """Shards holding about ``SHARD_TARGET_BYTES`` of raw skeleton rows each."""
    return max(1, math.ceil(raw_bytes(skeleton, fs) / SHARD_TARGET_BYTES))


def estimated_lines(path: str) -> int:
    """Lines of a local raw file, estimated from the mean length of its first lines."""
    sample = raw.read_head(path, _SAMPLE_BYTES)
    lines = max(sample.count(b"\n"), 1)
    return math.ceil(raw_bytes(path) * lines / max(len(sample), 1))


MIN_PARTITIONS = 2  # so that two workers join even a small split


def num_parts(files: dict, *, num_shards: int, memory_budget_mb: int) -> int:
    """Partitions (= shards) of a split of local files: ``num_shards`` when > 0;
    else at least ``MIN_PARTITIONS``, each holding about ``SHARD_TARGET_BYTES``
    of raw skeleton rows, and enough that one partition's common_features rows
    and its skeleton line index (``grouping.BYTES_PER_LINE`` a line) fit
    ``memory_budget_mb``. It depends on the data and these options only, never
    on ``--workers`` or the machine, so the output does not either."""
    if num_shards > 0:
        return num_shards
    budget = memory_budget_mb << 20
    by_skeleton = shards_by_size(files["skeleton"])
    by_memory = math.ceil(raw_bytes(files["common"]) / budget)
    by_index = math.ceil(estimated_lines(files["skeleton"]) * grouping.BYTES_PER_LINE / budget)
    return max(MIN_PARTITIONS, by_skeleton, by_memory, by_index)


# Rows are partitioned (sharded) by their common_feature_index column, raw.
SKELETON_INDEX_COLUMN = 3  # sample_id,click,conversion,common_feature_index,...
COMMON_INDEX_COLUMN = 0  # common_feature_index,feature_num,features


def index_column(content: bytes, column: int) -> bytes:
    """The raw (unparsed) ``column``-th column of a raw row (b"" when it has
    fewer columns): the key rows are partitioned and joined by."""
    cols = content.split(b",", column + 1)
    return cols[column] if len(cols) > column else b""
