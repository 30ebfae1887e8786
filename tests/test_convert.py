"""data_prep.convert: raw rows -> grouped TFRecords, vocabularies and stats."""

from __future__ import annotations

import filecmp
import gzip
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from data_prep import convert as convert_lib
from data_prep import raw, raw_layout
from data_prep.convert import ConvertConfig, ConvertError, convert
from esmm_tf import data_layout, vocab
from esmm_tf import features as F
from tests.helpers import assert_same_dataset
from tests.rawrows import (
    common,
    item_features,
    simple_dataset,
    skeleton,
    user_features,
    write_lines,
    write_raw_dir,
)


def _convert(raw_dir, out_dir, **kwargs):
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("num_shards", 2)
    kwargs.setdefault("min_count", 1)
    return convert(ConvertConfig(raw_dir=str(raw_dir), out_dir=str(out_dir), **kwargs))


def _records(data_dir, split="train"):
    out = []
    for path in data_layout.shard_files(str(data_dir), split):
        for record in tf.data.TFRecordDataset(path):
            out.append(tf.train.Example.FromString(record.numpy()).features.feature)
    return out


def _ints(feature_map, key):
    return list(feature_map[key].int64_list.value)


def _floats(feature_map, key):
    return list(feature_map[key].float_list.value)


def _expected_field(features, field_id):
    ids = [fid for f, fid, _ in features if f == field_id]
    weights = [w for f, _, w in features if f == field_id]
    return ids, weights


def test_roundtrip_records_equal_source(tmp_path):
    sk, cf = simple_dataset(users=4, impressions_per_user=3)
    _convert(write_raw_dir(tmp_path / "raw", sk, cf), tmp_path / "out")
    records = _records(tmp_path / "out")
    assert len(records) == 4
    seen = set()
    for rec in records:
        sample_ids = _ints(rec, F.SAMPLE_ID)
        user = (sample_ids[0] - 1) // 3
        seen.add(user)
        assert sample_ids == [3 * user + 1, 3 * user + 2, 3 * user + 3]
        assert _ints(rec, F.CLICK) == [1, 0, 0]
        assert _ints(rec, F.CONVERSION) == [int(user % 2 == 0), 0, 0]
        for field in F.USER_FIELDS:
            ids, weights = _expected_field(user_features(user), field.id)
            assert _ints(rec, field.ids_key) == ids
            if field.weighted:
                np.testing.assert_allclose(_floats(rec, field.weights_key), weights, rtol=1e-6)
        for field in F.ITEM_FIELDS:
            per_impression = [_expected_field(item_features(user + k), field.id) for k in range(3)]
            assert _ints(rec, field.lengths_key) == [len(ids) for ids, _ in per_impression]
            assert _ints(rec, field.ids_key) == [i for ids, _ in per_impression for i in ids]
            if field.weighted:
                expected = [w for _, ws in per_impression for w in ws]
                np.testing.assert_allclose(_floats(rec, field.weights_key), expected, rtol=1e-6)
        assert F.GT_PCTR not in rec
    assert seen == {0, 1, 2, 3}


def test_stats(tmp_path):
    sk, cf = simple_dataset(users=4, impressions_per_user=3)
    stats = _convert(write_raw_dir(tmp_path / "raw", sk, cf), tmp_path / "out")
    train = stats["splits"]["train"]
    assert (train["impressions"], train["records"], train["clicks"], train["conversions"]) == (
        12,
        4,
        4,
        2,
    )
    assert train["ctr"] == pytest.approx(4 / 12)
    assert train["cvr"] == pytest.approx(2 / 4)
    assert train["bad_rows_total"] == 0
    assert stats["fields"]["205"]["distinct_ids"] == 6
    on_disk = json.load(open(data_layout.stats_file(str(tmp_path / "out"))))
    assert on_disk["splits"]["train"]["impressions"] == 12


def test_vocab_min_count_oov_and_train_only(tmp_path):
    sk, cf = simple_dataset(users=4, impressions_per_user=3)
    # The test split has items never seen in train: they must not enter the vocab.
    test_sk = [skeleton(100, 0, 0, f"{0:016x}", item_features(50))]
    _convert(
        write_raw_dir(tmp_path / "raw", sk, cf, test_sk, cf[:1]), tmp_path / "out", min_count=2
    )
    path = data_layout.vocab_file(str(tmp_path / "out"), "205")
    lines = [line.split("\t") for line in open(path).read().splitlines()]
    # Item 5000+i is shown to users u with u <= i <= u+2: counts 1, 2, 3, 3, 2, 1.
    assert lines[0] == ["-1", "2"]  # OOV row: ids 5000 and 5005, once each
    assert [(int(a), int(b)) for a, b in lines[1:]] == [(5002, 3), (5003, 3), (5001, 2), (5004, 2)]
    np.testing.assert_array_equal(vocab.read_vocab(path), [5002, 5003, 5001, 5004])
    assert vocab.vocab_size(path) == 4
    # User-side ids count once per impression of their group: 3 each.
    user_vocab = open(data_layout.vocab_file(str(tmp_path / "out"), "101")).read().splitlines()
    assert user_vocab[1:] == ["1000\t3", "1001\t3", "1002\t3", "1003\t3"]


def test_deterministic_across_workers_and_gzip(tmp_path):
    sk, cf = simple_dataset(users=9, impressions_per_user=4)
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    for name in os.listdir(raw_dir):
        with (
            open(os.path.join(raw_dir, name), "rb") as src,
            gzip.open(gz_dir / (name + ".gz"), "wb") as dst,
        ):
            dst.write(src.read())
    _convert(raw_dir, tmp_path / "a", workers=1)
    _convert(raw_dir, tmp_path / "b", workers=2)
    _convert(gz_dir, tmp_path / "c", workers=1)
    for split in data_layout.SPLITS:
        a = data_layout.shard_files(str(tmp_path / "a"), split)
        for other in ("b", "c"):
            b = data_layout.shard_files(str(tmp_path / other), split)
            assert [os.path.basename(p) for p in a] == [os.path.basename(p) for p in b]
            for x, y in zip(a, b, strict=True):
                assert filecmp.cmp(x, y, shallow=False)
    for field in F.FIELDS:
        assert filecmp.cmp(
            data_layout.vocab_file(str(tmp_path / "a"), field.id),
            data_layout.vocab_file(str(tmp_path / "b"), field.id),
            shallow=False,
        )


def test_default_shard_count_does_not_depend_on_workers(tmp_path):
    """--num_shards=0 (the default) picks the partitions from the data alone: the
    same output, stats.json included, with any --workers (0: the machine's cores)."""
    sk, cf = simple_dataset(users=9, impressions_per_user=4)
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    outs = {w: tmp_path / f"workers{w}" for w in (1, 3, 0)}
    for workers, out in outs.items():
        _convert(raw_dir, out, workers=workers, num_shards=0)
    one = outs[1]
    names = sorted(n for n in os.listdir(one) if n != "convert_timings.json")
    for out in outs.values():
        assert sorted(n for n in os.listdir(out) if n != "convert_timings.json") == names
        for split in data_layout.SPLITS:
            assert len(data_layout.shard_files(str(out), split)) == raw_layout.MIN_PARTITIONS
        assert_same_dataset(one, out)
        assert filecmp.cmp(one / "stats.json", out / "stats.json", shallow=False)


def test_non_consecutive_rows_join_correctly_and_group_cap(tmp_path):
    a, b = f"{1:016x}", f"{2:016x}"
    sk = [
        skeleton(1, 0, 0, a, item_features(1)),
        skeleton(2, 0, 0, b, item_features(2)),
        skeleton(3, 1, 0, a, item_features(3)),
        skeleton(4, 0, 0, a, item_features(4)),
        skeleton(5, 0, 0, a, item_features(5)),
    ]
    cf = [common(b, user_features(2)), common(a, user_features(1))]
    _convert(
        write_raw_dir(tmp_path / "raw", sk, cf), tmp_path / "out", max_group_size=2, num_shards=1
    )
    records = _records(tmp_path / "out")
    by_sample = {}
    for rec in records:
        assert len(_ints(rec, F.SAMPLE_ID)) <= 2
        for sid in _ints(rec, F.SAMPLE_ID):
            by_sample[sid] = _ints(rec, "ids/101")
    assert by_sample == {1: [1001], 2: [1002], 3: [1001], 4: [1001], 5: [1001]}


def _bad_dataset(tmp_path):
    sk, cf = simple_dataset(users=4, impressions_per_user=3)
    sk.append(skeleton(99, 1, 0, "nope", item_features(1)))  # unknown common_feature_index
    sk.append(b"100,1,0")  # wrong column count
    sk.append(skeleton(101, 0, 1, f"{0:016x}", item_features(1)))  # conversion without click
    return write_raw_dir(tmp_path / "raw", sk, cf)


def test_bad_rows_fail_by_default_with_file_and_line(tmp_path):
    raw_dir = _bad_dataset(tmp_path)
    with pytest.raises(ConvertError) as err:
        _convert(raw_dir, tmp_path / "out")
    message = str(err.value)
    assert "max_bad_fraction" in message
    assert "sample_skeleton_train.csv:13" in message and "sample_skeleton_train.csv:14" in message
    assert raw.UNKNOWN_COMMON_FEATURE_INDEX in message and raw.WRONG_COLUMN_COUNT in message
    assert not os.path.exists(tmp_path / "out")  # nothing that looks complete


def test_bad_rows_skipped_and_counted_under_threshold(tmp_path):
    stats = _convert(_bad_dataset(tmp_path), tmp_path / "out", max_bad_fraction=0.5)
    train = stats["splits"]["train"]
    assert train["bad_rows"] == {raw.UNKNOWN_COMMON_FEATURE_INDEX: 1, raw.WRONG_COLUMN_COUNT: 1}
    assert train["bad_examples"][raw.WRONG_COLUMN_COUNT][0].endswith(
        "sample_skeleton_train.csv:14: expected 6 comma-separated columns, got 3"
    )
    assert train["conversion_without_click"] == 1
    assert train["impressions"] == 12  # the conversion-without-click row is dropped


def test_conversion_without_click_kept_on_request(tmp_path):
    stats = _convert(
        _bad_dataset(tmp_path),
        tmp_path / "out",
        max_bad_fraction=0.5,
        keep_conversion_without_click=True,
    )
    assert stats["splits"]["train"]["impressions"] == 13
    assert stats["splits"]["train"]["conversion_without_click"] == 1


def test_truncated_last_line(tmp_path):
    sk, cf = simple_dataset(users=2, impressions_per_user=2)
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    write_lines(os.path.join(raw_dir, "sample_skeleton_train.csv"), sk + [sk[0][:20]], False)
    stats = _convert(raw_dir, tmp_path / "out", max_bad_fraction=0.5)
    assert stats["splits"]["train"]["bad_rows"] == {raw.TRUNCATED_LAST_LINE: 1}
    # A complete last line without a newline is fine.
    write_lines(os.path.join(raw_dir, "sample_skeleton_train.csv"), sk, False)
    stats = _convert(raw_dir, tmp_path / "out2")
    assert stats["splits"]["train"]["impressions"] == 4


def test_bad_common_row_drops_its_impressions(tmp_path):
    sk, cf = simple_dataset(users=3, impressions_per_user=2)
    cf[1] = cf[1].replace(b",4,", b",9,", 1)
    stats = _convert(
        write_raw_dir(tmp_path / "raw", sk, cf), tmp_path / "out", max_bad_fraction=0.9
    )
    bad = stats["splits"]["train"]["bad_rows"]
    assert bad == {raw.FEATURE_NUM_MISMATCH: 1, raw.BAD_COMMON_ROW: 2}
    assert (
        "common_features_train.csv:2"
        in stats["splits"]["train"]["bad_examples"][raw.FEATURE_NUM_MISMATCH][0]
    )


def test_ground_truth_joined_and_checked(tmp_path):
    sk, cf = simple_dataset(users=2, impressions_per_user=2)
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    gt = [b"%d,0.%d,0.5,%d" % (i, i, i % 2) for i in range(1, 5)]
    for split in data_layout.SPLITS:
        write_lines(os.path.join(raw_dir, f"ground_truth_{split}.csv"), gt)
    stats = _convert(raw_dir, tmp_path / "out")
    assert stats["has_ground_truth"]
    rec = {}
    for r in _records(tmp_path / "out"):
        for i, sid in enumerate(_ints(r, F.SAMPLE_ID)):
            rec[sid] = (_floats(r, F.GT_PCTR)[i], _ints(r, F.GT_CONVERSION)[i])
    assert rec[3] == (pytest.approx(0.3), 1)
    write_lines(os.path.join(raw_dir, "ground_truth_train.csv"), gt[::-1])
    with pytest.raises(ConvertError, match="does not match"):
        _convert(raw_dir, tmp_path / "out2")
    write_lines(os.path.join(raw_dir, "ground_truth_train.csv"), gt[:3])
    with pytest.raises(ConvertError, match="fewer rows"):
        _convert(raw_dir, tmp_path / "out3")


def test_missing_inputs(tmp_path):
    with pytest.raises(raw.RawInputError, match="does not exist"):
        _convert(tmp_path / "nope", tmp_path / "out")
    sk, cf = simple_dataset()
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    os.remove(os.path.join(raw_dir, "common_features_test.csv"))
    with pytest.raises(raw.RawInputError, match="common_features_test"):
        _convert(raw_dir, tmp_path / "out")


def test_interrupted_run_resumes_to_identical_output(tmp_path, monkeypatch):
    sk, cf = simple_dataset(users=9, impressions_per_user=4)
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    _convert(raw_dir, tmp_path / "clean", num_shards=3)

    calls = []
    real = convert_lib._join_task

    def failing(task):
        calls.append(task.part)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated interruption")
        return real(task)

    monkeypatch.setattr(convert_lib, "_join_task", failing)
    with pytest.raises(KeyboardInterrupt):
        _convert(raw_dir, tmp_path / "out", num_shards=3)
    assert not os.path.exists(tmp_path / "out")
    partial = str(tmp_path / "out") + ".partial"
    assert os.path.isdir(partial)
    # A committed shard's partitions are removed at once (the disk's peak);
    # the unfinished tasks' are kept for the rerun.
    committed = sorted(os.listdir(os.path.join(partial, "tasks")))
    committed = {n.split(".")[0] for n in committed if n.endswith(".json")}
    assert len(committed) == 2
    for split in data_layout.SPLITS:
        for part in range(3):
            for kind in ("skeleton", "common"):
                path = os.path.join(partial, "parts", f"{split}-{kind}-{part:05d}")
                assert os.path.exists(path) != (f"{split}-{part:05d}" in committed), path

    calls.clear()
    monkeypatch.setattr(convert_lib, "_join_task", lambda t: (calls.append(t.part), real(t))[1])
    _convert(raw_dir, tmp_path / "out", num_shards=3)
    assert len(calls) == 4  # 6 tasks, 2 finished before the interruption
    assert not os.path.exists(str(tmp_path / "out") + ".partial")
    for split in data_layout.SPLITS:
        for x, y in zip(
            data_layout.shard_files(str(tmp_path / "clean"), split),
            data_layout.shard_files(str(tmp_path / "out"), split),
            strict=True,
        ):
            assert filecmp.cmp(x, y, shallow=False)


def test_existing_output(tmp_path):
    sk, cf = simple_dataset()
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    first = _convert(raw_dir, tmp_path / "out")
    assert _convert(raw_dir, tmp_path / "out") == first  # already done: nothing redone
    with pytest.raises(ConvertError, match="--overwrite"):
        _convert(raw_dir, tmp_path / "out", max_group_size=2)
    stats = _convert(raw_dir, tmp_path / "out", max_group_size=2, overwrite=True)
    assert stats["max_group_size"] == 2
    assert not [p for p in os.listdir(tmp_path) if ".old-" in p]


def test_synthetic_logs_convert_cleanly(tiny_raw_dir, tiny_data_dir):
    stats = json.load(open(data_layout.stats_file(tiny_data_dir)))
    summary = json.load(open(os.path.join(tiny_raw_dir, "synthetic_config.json")))
    assert stats["has_ground_truth"]
    for split in data_layout.SPLITS:
        converted, generated = stats["splits"][split], summary["splits"][split]
        assert converted["bad_rows_total"] == 0
        assert converted["impressions"] == generated["impressions"]
        assert converted["clicks"] == generated["clicks"]
        assert converted["conversions"] == generated["conversions"]


def test_duplicate_sample_ids_are_bad_rows_keeping_the_first(tmp_path):
    sk, cf = simple_dataset(users=4, impressions_per_user=3)  # sample ids 1..12
    later = skeleton(3, 1, 1, f"{1:016x}", item_features(9))  # id 3 again, another user
    sk = sk[:6] + [later] + sk[6:] + [sk[0]]  # lines 7 and 14 repeat ids 3 and 1
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    stats = _convert(raw_dir, tmp_path / "out", max_bad_fraction=0.2)
    s = stats["splits"]["train"]
    assert s["bad_rows"] == {"duplicate_sample_id": 2}
    path = os.path.join(raw_dir, "sample_skeleton_train.csv")
    assert s["bad_examples"]["duplicate_sample_id"] == [
        f"{path}:14: sample_id 1 seen before (line 1); keeping the first",
        f"{path}:7: sample_id 3 seen before (line 3); keeping the first",
    ]
    assert s["impressions"] == 12
    ids = sorted(i for r in _records(tmp_path / "out") for i in _ints(r, F.SAMPLE_ID))
    assert ids == list(range(1, 13))
    # the kept row 3 is the first one (user 0's), not the later one (user 1's)
    first = next(r for r in _records(tmp_path / "out") if 3 in _ints(r, F.SAMPLE_ID))
    assert _ints(first, "ids/101") == [1000]


def test_duplicate_sample_ids_of_19_digits_are_found(tmp_path):
    """Ids up to 2^63 - 1, written with leading zeros or not, are compared by value."""
    sk, cf = simple_dataset(users=3, impressions_per_user=2)  # sample ids 1..6
    sk = [b"%d%s" % (10**18 + int(line.split(b",")[0]), line[line.index(b",") :]) for line in sk]
    sk.append(b"000" + sk[1])  # line 7: the id of line 2, 22 digits
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    s = _convert(raw_dir, tmp_path / "out", max_bad_fraction=0.2)["splits"]["train"]
    path = os.path.join(raw_dir, "sample_skeleton_train.csv")
    assert s["bad_examples"]["duplicate_sample_id"] == [
        f"{path}:7: sample_id {10**18 + 2} seen before (line 2); keeping the first"
    ]
    assert s["impressions"] == 6


def test_duplicate_finder_on_shuffled_ids():
    from data_prep import duplicates

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, 300)
    finder = duplicates.SampleIds()
    for i in ids:
        finder.add(b"%d,0,0,x,0," % i)
    finder.add(b"+1,0,0,x,0,")  # unparsable: reported elsewhere, never a duplicate
    big = [2**63 - 1, 10**18 + 5, 2**63 - 1, 10**18 + 5, 7]
    tokens = [b"9223372036854775807", b"1000000000000000005", b"9223372036854775807"]
    tokens += [b"00001000000000000000005", b"0000000000000000000007"]  # 19+ characters
    for token in tokens:
        finder.add(token + b",0,0,x,0,")
    ids = [*ids, -1, *big]
    got = finder.duplicates()
    seen, expected = {}, []
    for line, i in enumerate(ids, 1):
        if i == -1:
            continue
        if i in seen:
            expected.append((line, seen[i], i))
        else:
            seen[i] = line
    assert got.tolist() == [list(e) for e in expected]


def test_a_raw_file_rewritten_within_the_same_second_is_converted_again(tmp_path):
    """The fingerprint keeps mtimes to the microsecond: the same size and the
    same whole second used to return the old dataset ("nothing to do")."""
    sk, cf = simple_dataset(users=4, impressions_per_user=3)
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    path = os.path.join(raw_dir, "sample_skeleton_train.csv")
    first = _convert(raw_dir, tmp_path / "out")["splits"]["train"]["clicks"]
    st = os.stat(path)
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    flipped = [line.replace(b",0,0,", b",1,0,", 1) for line in lines]  # clicks, same size
    with open(path, "wb") as f:
        f.write(b"\n".join(flipped))
    whole = int(st.st_mtime)
    os.utime(path, ns=(st.st_atime_ns, whole * 10**9 + (st.st_mtime_ns + 300_000_000) % 10**9))
    assert os.path.getsize(path) == st.st_size and int(os.stat(path).st_mtime) == whole
    with pytest.raises(ConvertError, match="holds another conversion"):  # not "nothing to do"
        _convert(raw_dir, tmp_path / "out")
    again = _convert(raw_dir, tmp_path / "out", overwrite=True)["splits"]["train"]["clicks"]
    assert again > first


def test_a_byte_order_mark_at_the_start_of_a_file_is_not_data(tmp_path):
    """Files saved by some Windows tools start with a UTF-8 BOM: the same
    records, vocabularies and counts as without it (it used to make line 1 a
    bad row and its request's impressions "unknown" ones)."""
    sk, cf = simple_dataset(users=4, impressions_per_user=3)
    plain = write_raw_dir(tmp_path / "plain", sk, cf)
    bom = write_raw_dir(tmp_path / "bom", sk, cf)
    for name in os.listdir(bom):
        path = os.path.join(bom, name)
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(raw.UTF8_BOM + data)
    a = _convert(plain, tmp_path / "a")
    b = _convert(bom, tmp_path / "b")
    assert b["splits"]["train"]["bad_rows_total"] == 0
    assert a["splits"] == b["splits"]
    assert_same_dataset(tmp_path / "a", tmp_path / "b", same_fingerprint=False)  # sizes differ


def test_a_conversion_by_an_earlier_version_is_still_the_same_conversion(tmp_path):
    """Conversions made before mtimes were kept to the microsecond stored whole
    seconds: rerunning the same command on one still does nothing."""
    sk, cf = simple_dataset(users=4, impressions_per_user=3)
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    out = tmp_path / "out"
    stats = _convert(raw_dir, out)
    stats["fingerprint"] = raw_layout.in_seconds(stats["fingerprint"])  # as written then
    (out / "stats.json").write_text(json.dumps(stats))
    before = (out / "stats.json").read_bytes()
    assert _convert(raw_dir, out)["fingerprint"] == stats["fingerprint"]  # nothing to do
    assert (out / "stats.json").read_bytes() == before
