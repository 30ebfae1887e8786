"""data_prep.stats: the one stats record of the local, Beam and TFDS conversions."""

from __future__ import annotations

import itertools
import json

import pytest

from data_prep import raw_layout
from data_prep import stats as S
from data_prep.beam import stats as beam_stats


def _part(rows: list[tuple[str, int]], records: list[int]) -> S.SplitStats:
    part = S.SplitStats(rows_read=len(rows) + sum(records))
    for path, line in rows:
        part.add_bad("bad_label", path, line, f"row {line}")
    for size in records:
        part.records += 1
        part.impressions += size
        part.record_sizes[str(size)] = part.record_sizes.get(str(size), 0) + 1
    return part


def test_merge_keeps_the_first_examples_by_file_and_line_in_any_order():
    parts = [
        _part([("b.csv", n) for n in range(20, 9, -1)], [3]),
        _part([("a.csv", 9), ("a.csv", 100)], [1, 1]),
        _part([("b.csv", 2)], []),
    ]
    results = set()
    for order in itertools.permutations(parts):
        # Through JSON, as convert's task files and Beam's meta file carry them.
        total = S.merged(S.SplitStats.from_json(json.loads(json.dumps(p.to_json()))) for p in order)
        results.add(json.dumps(total.counts(), sort_keys=True))
    assert len(results) == 1
    counts = json.loads(results.pop())
    assert counts["bad_rows"] == {"bad_label": 14}
    assert counts["bad_examples"]["bad_label"] == sorted(
        ["a.csv:9: row 9", "a.csv:100: row 100", "b.csv:2: row 2", "b.csv:10: row 10"]
        + ["b.csv:11: row 11"]
    )
    assert counts["records"] == 3 and counts["impressions"] == 5


def test_beam_delta_summarizes_as_the_local_record():
    local, delta = S.SplitStats(), beam_stats.Delta()
    for record in (local, delta):
        record.rows_read = 10
        record.add_bad("bad_label", "x.csv", 4, "bad")
        record.records, record.impressions, record.clicks = 2, 9, 3
        record.record_sizes = {"4": 1, "5": 1}
    delta.add_fatal(7, "out of step")

    class Config:
        max_bad_fraction = 0.5
        keep_conversion_without_click = False

    want = S.summarize_split("train", local, 1, Config)
    got = S.summarize_split("train", beam_stats.Delta.from_json(delta.to_json()), 1, Config)
    assert got == want
    assert "fatal" not in got and want["bad_fraction"] == pytest.approx(0.1)


def test_too_many_bad_rows_is_one_error():
    part = _part([("x.csv", 1), ("x.csv", 2)], [1])

    class Config:
        max_bad_fraction = 0.1
        keep_conversion_without_click = False

    with pytest.raises(S.ConvertError, match="exceed --max_bad_fraction=0.1"):
        S.summarize_split("train", part, 1, Config)


def test_shard_sizing_counts_gzip_as_uncompressed(tmp_path):
    plain, packed = tmp_path / "a.csv", tmp_path / "a.csv.gz"
    plain.write_bytes(b"x" * 1000)
    packed.write_bytes(b"x" * 1000)
    assert raw_layout.raw_bytes(str(packed)) == raw_layout.GZIP_RATIO * 1000
    assert raw_layout.shards_by_size(str(plain)) == 1
    fs = raw_layout.FileSystem(size=lambda _: 3 * raw_layout.SHARD_TARGET_BYTES + 1)
    assert raw_layout.shards_by_size("big.csv", fs) == 4


def test_id_counter_folds_counts_in_any_chunking(monkeypatch):
    """Counts added as (id, count) pairs in chunks of any size, folding
    whenever the buffer reaches the folded arrays' size, sum like one merge."""
    import numpy as np

    from data_prep import counting

    monkeypatch.setattr(counting, "_BUFFER", 50)
    rng = np.random.default_rng(0)
    chunks = []
    for _ in range(40):
        ids = np.unique(rng.zipf(1.3, size=int(rng.integers(1, 200))) % 1000)
        chunks.append((ids, rng.integers(1, 5, size=ids.size)))
    counter = counting.IdCounter()
    folds = []
    real_fold = counter._fold
    counter._fold = lambda: (folds.append(counter._buffered), real_fold())
    for ids, counts in chunks:
        counter.add_counts(ids, counts)
    counter.add(np.array([7, 7, 999_999]), weight=3)
    ids, counts = counter.result()
    expected = counting.merge_counts([*chunks, (np.array([7, 7, 999_999]), np.full(3, 3))])
    np.testing.assert_array_equal(ids, expected[0])
    np.testing.assert_array_equal(counts, expected[1])
    assert 1 < len(folds) < 40  # folded now and then, not per chunk


def test_total_rss_bound_counts_the_main_process_beside_its_workers_then_alone():
    split = {"train": {"impressions": 10}}
    t = S.timing_stats(split, 100, 0.0, workers=2, main_with_workers=300.0)
    rss = t["peak_rss_mb"]
    assert rss["main_with_workers"] == 300.0
    assert rss["total_bound"] == max(300.0 + 2 * rss["largest_worker"], rss["main"])
    assert "total_bound" not in S.timing_stats(split, 100, 0.0)["peak_rss_mb"]
