"""Order-independent grouping: every row of a common_feature_index in its records,
whatever the row order (data_prep.grouping, data_prep.convert, data_prep.shuffle_logs)."""

from __future__ import annotations

import collections
import filecmp
import gzip
import json
import os
import shutil

import pytest
import tensorflow as tf

from data_prep import grouping, raw, raw_layout
from data_prep.convert import ConvertConfig, convert
from data_prep.shuffle_logs import ShuffleConfig, shuffle_logs
from esmm_tf import data_layout
from esmm_tf import features as F
from tests.rawrows import (
    common,
    feature_list,
    item_features,
    simple_dataset,
    skeleton,
    user_features,
    write_raw_dir,
)


def _convert(raw_dir, out_dir, **kwargs):
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("num_shards", 2)
    kwargs.setdefault("min_count", 1)
    return convert(ConvertConfig(raw_dir=str(raw_dir), out_dir=str(out_dir), **kwargs))


def _records(data_dir, split):
    """Per record, in shard order: (sample ids, user 101 ids)."""
    out = []
    for path in data_layout.shard_files(str(data_dir), split):
        for record in tf.data.TFRecordDataset(path):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            out.append(
                (
                    list(feature[F.SAMPLE_ID].int64_list.value),
                    list(feature["ids/101"].int64_list.value),
                )
            )
    return out


def _skeleton_lines(raw_dir, split):
    path = raw.find_raw_file(str(raw_dir), f"sample_skeleton_{split}")
    return [content for _, content, _ in raw.read_lines(path)]


def _groups_by_index(raw_dir, split):
    """common_feature_index -> sample ids, from the raw skeleton (no converter)."""
    out = collections.defaultdict(set)
    for line in _skeleton_lines(raw_dir, split):
        cols = line.split(b",")
        if not (cols[2] == b"1" and cols[1] == b"0"):  # conversions without click are dropped
            out[cols[3]].add(int(cols[0]))
    return out


def _same_shards(a, b, splits=data_layout.SPLITS):
    for split in splits:
        x, y = data_layout.shard_files(str(a), split), data_layout.shard_files(str(b), split)
        assert [os.path.basename(p) for p in x] == [os.path.basename(p) for p in y]
        for p, q in zip(x, y, strict=True):
            assert filecmp.cmp(p, q, shallow=False), (p, q)


@pytest.fixture(scope="module")
def shuffled_raw_dir(tiny_raw_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shuffled"))
    shuffle_logs(ShuffleConfig(raw_dir=tiny_raw_dir, out_dir=out, seed=0))
    return out


def test_shuffle_logs_permutes_rows_and_keeps_ground_truth_aligned(tiny_raw_dir, tmp_path):
    out = tmp_path / "out"
    rows = shuffle_logs(
        ShuffleConfig(raw_dir=tiny_raw_dir, out_dir=str(out), seed=3, bucket_mb=50_000 / 2**20)
    )
    for split in data_layout.SPLITS:
        before, after = _skeleton_lines(tiny_raw_dir, split), _skeleton_lines(out, split)
        assert rows[split] == len(before)
        assert sorted(after) == sorted(before) and after != before
        truth = raw.find_raw_file(str(out), f"ground_truth_{split}")
        for sk, (_, gt, _) in zip(after, raw.read_lines(truth), strict=True):
            assert sk.split(b",", 1)[0] == gt.split(b",", 1)[0]  # the same sample_id
        assert filecmp.cmp(
            os.path.join(tiny_raw_dir, f"common_features_{split}.csv"),
            out / f"common_features_{split}.csv",
            shallow=False,
        )
    assert (out / "synthetic_config.json").exists()
    assert not [p for p in os.listdir(out) if p.startswith(".") or p.endswith(".tmp")]

    # Reproducible from the seed (and bucket size); .csv.gz in, .csv.gz out.
    again = tmp_path / "again"
    shuffle_logs(
        ShuffleConfig(raw_dir=tiny_raw_dir, out_dir=str(again), seed=3, bucket_mb=50_000 / 2**20)
    )
    assert _skeleton_lines(again, "train") == _skeleton_lines(out, "train")
    gz_in, gz_out = tmp_path / "gz_in", tmp_path / "gz_out"
    gz_in.mkdir()
    for name in ("sample_skeleton_test.csv", "common_features_test.csv"):
        with open(os.path.join(tiny_raw_dir, name), "rb") as src:
            data = src.read()
        with gzip.open(gz_in / (name + ".gz"), "wb") as dst:
            dst.write(data)
    shuffle_logs(ShuffleConfig(raw_dir=str(gz_in), out_dir=str(gz_out), seed=3))
    assert sorted(os.listdir(gz_out)) == [
        "common_features_test.csv.gz",
        "sample_skeleton_test.csv.gz",
    ]
    assert sorted(_skeleton_lines(gz_out, "test")) == sorted(_skeleton_lines(tiny_raw_dir, "test"))


def test_shuffled_logs_convert_to_the_same_groups(
    tiny_raw_dir, tiny_data_dir, shuffled_raw_dir, tmp_path
):
    stats = _convert(shuffled_raw_dir, tmp_path / "shuffled")
    ordered = json.load(open(data_layout.stats_file(tiny_data_dir)))
    for split in data_layout.SPLITS:
        assert stats["splits"][split]["records"] == ordered["splits"][split]["records"]
        assert (
            stats["splits"][split]["impressions_per_record"]
            == (ordered["splits"][split]["impressions_per_record"])
        )
        expected = _groups_by_index(tiny_raw_dir, split)
        assert stats["splits"][split]["records"] == len(expected)  # no group above 256
        shuffled, in_order = _records(tmp_path / "shuffled", split), _records(tiny_data_dir, split)
        assert sorted(sorted(ids) for ids, _ in shuffled) == sorted(
            sorted(ids) for ids, _ in in_order
        )
        assert {frozenset(ids) for ids, _ in shuffled} == {frozenset(v) for v in expected.values()}
        # Inside a record, impressions keep (the shuffled) file order.
        position = {
            int(line.split(b",", 1)[0]): n
            for n, line in enumerate(_skeleton_lines(shuffled_raw_dir, split))
        }
        for ids, _ in shuffled:
            assert [position[i] for i in ids] == sorted(position[i] for i in ids)
    for field in F.FIELDS:  # counts do not depend on the order
        assert filecmp.cmp(
            data_layout.vocab_file(tiny_data_dir, field.id),
            data_layout.vocab_file(str(tmp_path / "shuffled"), field.id),
            shallow=False,
        )

    # Byte-identical whatever the number of workers.
    _convert(shuffled_raw_dir, tmp_path / "two_workers", workers=2)
    _same_shards(tmp_path / "shuffled", tmp_path / "two_workers")


def test_interleaved_rows_group_cap_and_record_order(tmp_path):
    a, b, c = f"{1:016x}", f"{2:016x}", f"{3:016x}"
    sk = [
        skeleton(1, 0, 0, b, item_features(1)),
        skeleton(2, 0, 0, a, item_features(2)),
        skeleton(3, 1, 0, b, item_features(3)),
        skeleton(4, 0, 1, c, item_features(4)),  # conversion without click: dropped
        skeleton(5, 0, 0, a, item_features(5)),
        skeleton(6, 0, 0, b, item_features(6)),
        skeleton(7, 0, 0, c, item_features(7)),
        skeleton(8, 0, 0, b, item_features(8)),
    ]
    cf = [common(x, user_features(k)) for k, x in enumerate((a, b, c), 1)]
    stats = _convert(
        write_raw_dir(tmp_path / "raw", sk, cf), tmp_path / "out", max_group_size=2, num_shards=1
    )
    # Indices in order of their first row (b, a, c; c's first row is dropped but
    # still places it), cut into records of at most 2 in file order.
    assert _records(tmp_path / "out", "train") == [
        ([1, 3], [1002]),
        ([6, 8], [1002]),
        ([2, 5], [1001]),
        ([7], [1003]),
    ]
    assert stats["splits"]["train"]["impressions_per_record"] == {
        "mean": 1.75,
        "p50": 2,
        "p99": 2,
        "max": 2,
    }


def test_bad_examples_are_the_first_by_line_whatever_the_order(tmp_path):
    sk, cf = simple_dataset(users=4, impressions_per_user=3)

    def bad(sample_id, cfi):  # feature_num 9, 6 features
        return b"%d,0,0,%s,9,%s" % (sample_id, cfi.encode(), feature_list(item_features(1)))

    # Lines 2-7: bad rows of 6 new indices; the last line: a bad row of line 1's
    # index, which comes first in group order.
    sk[1:1] = [bad(100 + n, f"q{n}") for n in range(6)]
    sk.append(bad(200, f"{0:016x}"))
    stats = _convert(
        write_raw_dir(tmp_path / "raw", sk, cf), tmp_path / "out", max_bad_fraction=0.9
    )
    examples = stats["splits"]["train"]["bad_examples"][raw.FEATURE_NUM_MISMATCH]
    assert [int(e.split(": ")[0].rsplit(":", 1)[1]) for e in examples] == [2, 3, 4, 5, 6]


def test_lines_by_group(tmp_path, monkeypatch):
    keys = [b"b", b"a", b"b", b"c", b"a", b"a", b"b", b"d"]
    path = tmp_path / "lines"
    lines = [b"%s,%d" % (k, n) for n, k in enumerate(keys)]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    expected = [(0, b"b,0"), (0, b"b,2"), (0, b"b,6"), (1, b"a,1"), (1, b"a,4"), (1, b"a,5")]
    expected += [(2, b"c,3"), (3, b"d,7")]
    key_of = lambda line: line.split(b",")[0]  # noqa: E731
    assert list(grouping.lines_by_group(str(path), key_of)) == expected
    for run_lines, run_bytes in ((1, 1 << 20), (3, 1 << 20), (4096, 5)):  # reads of every size
        monkeypatch.setattr(grouping, "_RUN_LINES", run_lines)
        monkeypatch.setattr(grouping, "_RUN_BYTES", run_bytes)
        assert list(grouping.lines_by_group(str(path), key_of)) == expected
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert list(grouping.lines_by_group(str(empty), key_of)) == []


def test_size_summary():
    histogram = {}
    for size in [1] * 50 + [2] * 49 + [10]:
        grouping.add_size(histogram, size)
    assert grouping.size_summary(histogram) == {"mean": 1.58, "p50": 1, "p99": 2, "max": 10}
    merged = dict(histogram)
    grouping.merge_sizes(merged, {"10": 1, "3": 2})
    assert merged["10"] == 2 and merged["3"] == 2
    assert grouping.size_summary({})["max"] == 0


def test_partitions_keep_the_line_index_within_the_memory_budget(tmp_path):
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    (raw_dir / "sample_skeleton_train.csv").write_bytes(b"1,0,0,a,0,\n" * 20_000)
    (raw_dir / "common_features_train.csv").write_bytes(b"a,0,\n")
    files = raw_layout.find_inputs(str(raw_dir))["train"]
    # 20,000 lines x 128 bytes in partitions of 1 MB.
    assert raw_layout.num_parts(files, num_shards=0, memory_budget_mb=1) == 3


@pytest.mark.slow
def test_shuffled_logs_beam_equals_convert(shuffled_raw_dir, tmp_path):
    from tests.helpers import assert_same_dataset, beam_convert_dir

    shutil.copytree(shuffled_raw_dir, tmp_path / "raw")
    options = dict(min_count=1, num_shards=2, max_group_size=4)
    _convert(tmp_path / "raw", tmp_path / "convert", **options)
    beam_convert_dir(tmp_path / "raw", tmp_path / "beam", read_chunk_bytes=1 << 16, **options)
    assert_same_dataset(tmp_path / "convert", tmp_path / "beam")
