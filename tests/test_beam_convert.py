"""data_prep.beam_convert (Apache Beam, DirectRunner) writes what data_prep.convert writes."""

from __future__ import annotations

import gzip
import os
import shutil

import pytest

from data_prep import beam_convert, duplicates, raw
from data_prep.beam import lines as beam_lines
from data_prep.convert import ConvertConfig, ConvertError, convert
from esmm_tf import data_layout, vocab
from esmm_tf import features as F
from tests.helpers import assert_same_dataset, beam_convert_dir, dead_pid, make_tiny_config
from tests.rawrows import item_features, simple_dataset, skeleton, write_raw_dir

MULTI_PROCESSING = [
    "--runner=DirectRunner",
    "--direct_running_mode=multi_processing",
    "--direct_num_workers=2",
]


def _convert(raw_dir, out_dir, **kwargs):
    return convert(ConvertConfig(raw_dir=str(raw_dir), out_dir=str(out_dir), workers=1, **kwargs))


def _messy_raw_dir(tiny_raw_dir, path):
    """tiny_raw_dir with bad rows of several kinds, duplicate sample_ids and
    common_feature_index, and an interleaved index, spread over the files (ground truth kept in step with the skeleton)."""
    shutil.copytree(tiny_raw_dir, path)

    def lines(name):
        with open(os.path.join(path, name), "rb") as f:
            return f.read().splitlines()

    def write(name, rows, newline_at_end=True):
        with open(os.path.join(path, name), "wb") as f:
            f.write(b"\n".join(rows) + (b"\n" if newline_at_end else b""))

    sk, gt, cf = (
        lines(f"{n}_train.csv") for n in ("sample_skeleton", "ground_truth", "common_features")
    )
    cfi = sk[200].split(b",")[3].decode()  # an index seen earlier: this row interleaves
    inserts = [
        (100, b"100,1,0", b"0,0.5,0.5,0"),  # wrong column count
        (300, b"3000,1,0", b"3000,0.5,0.5,0"),  # a bad row first: the real row 3000 repeats it
        (500, skeleton(10**9, 0, 0, cfi, item_features(3)), b"1000000000,0.5,0.5,0"),
        (1000, skeleton(10**9 + 1, 1, 0, "nope", item_features(1)), b"1000000001,0.5,0.5,0"),
        (1500, skeleton(10**9 + 2, 0, 1, cfi, item_features(2)), b"1000000002,0.5,0.5,1"),
        (2000, skeleton(10**9 + 3, 1, 0, "badcfi", item_features(2)), b"1000000003,0.5,0.5,0"),
        (2200, sk[10], gt[10]),  # sample_id 11 again: a duplicate, the first kept
        (2500, sk[7].replace(b",", b"\xe9,", 1), gt[7]),  # non-ASCII
    ]
    for at, sk_row, gt_row in reversed(inserts):
        sk.insert(at, sk_row)
        gt.insert(at, gt_row)
    write("sample_skeleton_train.csv", sk)
    write("ground_truth_train.csv", gt)
    cf.insert(50, cf[5])  # duplicate index
    cf[0] = raw.UTF8_BOM + cf[0]  # a byte order mark: not data, in either converter
    cf.insert(60, b"badcfi,9," + cf[6].split(b",", 2)[2])  # feature_num mismatch
    write("common_features_train.csv", cf)

    sk, gt = lines("sample_skeleton_test.csv"), lines("ground_truth_test.csv")
    gt[300] = b"garbage"  # bad ground truth
    write("sample_skeleton_test.csv", [*sk, sk[0][:20]], newline_at_end=False)  # truncated
    write("ground_truth_test.csv", [*gt, gt[0]])
    return path


@pytest.mark.slow
def test_same_output_as_convert_with_bad_rows(tiny_raw_dir, tmp_path):
    raw_dir = _messy_raw_dir(tiny_raw_dir, tmp_path / "raw")
    options = dict(min_count=2, num_shards=3, max_group_size=4, max_bad_fraction=0.01)
    expected = _convert(raw_dir, tmp_path / "convert", **options)
    # Ranges of 4 KiB: every raw file is read in parallel pieces.
    stats = beam_convert_dir(raw_dir, tmp_path / "beam", read_chunk_bytes=4096, **options)
    assert_same_dataset(tmp_path / "convert", tmp_path / "beam")
    assert stats["splits"] == expected["splits"]
    train, test = stats["splits"]["train"], stats["splits"]["test"]
    assert train["bad_rows"] == {
        raw.BAD_COMMON_ROW: 1,
        raw.DUPLICATE_COMMON_FEATURE_INDEX: 1,
        raw.FEATURE_NUM_MISMATCH: 1,
        raw.INVALID_BYTES: 1,
        raw.UNKNOWN_COMMON_FEATURE_INDEX: 1,
        raw.WRONG_COLUMN_COUNT: 2,
        duplicates.DUPLICATE_SAMPLE_ID: 2,
    }
    assert train["bad_examples"][raw.WRONG_COLUMN_COUNT][0] == (
        f"{raw_dir}/sample_skeleton_train.csv:101: expected 6 comma-separated columns, got 3"
    )
    assert sorted(train["bad_examples"][duplicates.DUPLICATE_SAMPLE_ID]) == [
        f"{raw_dir}/sample_skeleton_train.csv:2207: sample_id 11 seen before (line 11); "
        "keeping the first",
        f"{raw_dir}/sample_skeleton_train.csv:3008: sample_id 3000 seen before (line 302); "
        "keeping the first",
    ]
    assert train["conversion_without_click"] == 1
    assert test["bad_rows"] == {raw.BAD_GROUND_TRUTH: 1, raw.TRUNCATED_LAST_LINE: 1}
    assert not os.path.exists(f"{tmp_path}/beam.beam-partial")

    # What training needs: shards, vocabularies and the record count in stats.json.
    from esmm_tf import training_run

    assert training_run.steps_per_epoch(make_tiny_config(str(tmp_path / "beam"))) > 0
    for field in F.FIELDS:
        assert vocab.read_vocab(data_layout.vocab_file(str(tmp_path / "beam"), field.id)).size


@pytest.mark.slow
def test_multi_processing_gzip_equals_convert(tiny_raw_dir, tiny_data_dir, tmp_path):
    """2 worker processes; gzip input (read unsplit) against the csv conversion."""
    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    for name in os.listdir(tiny_raw_dir):
        if name.endswith(".csv"):
            with (
                open(os.path.join(tiny_raw_dir, name), "rb") as src,
                gzip.open(gz_dir / (name + ".gz"), "wb") as dst,
            ):
                dst.write(src.read())
    beam_convert_dir(gz_dir, tmp_path / "beam", MULTI_PROCESSING, min_count=1, num_shards=2)
    assert_same_dataset(tiny_data_dir, tmp_path / "beam", same_fingerprint=False)


def _bad_dataset(path):
    sk, cf = simple_dataset(users=4, impressions_per_user=3)
    sk.append(skeleton(99, 1, 0, "nope", item_features(1)))  # unknown common_feature_index
    sk.append(b"100,1,0")  # wrong column count
    sk.append(skeleton(101, 0, 1, f"{0:016x}", item_features(1)))  # conversion without click
    return write_raw_dir(path, sk, cf)


@pytest.mark.slow
def test_too_many_bad_rows_fail_like_convert(tmp_path):
    raw_dir = _bad_dataset(tmp_path / "raw")
    with pytest.raises(ConvertError) as expected:
        _convert(raw_dir, tmp_path / "convert", num_shards=2)
    with pytest.raises(ConvertError) as err:
        beam_convert_dir(raw_dir, tmp_path / "beam", num_shards=2)
    assert str(err.value) == str(expected.value)
    assert "sample_skeleton_train.csv:13" in str(err.value)
    assert "sample_skeleton_train.csv:14" in str(err.value)
    assert not [p for p in os.listdir(tmp_path) if p.startswith("beam")]  # no output, no leftovers

    # Under the threshold, kept on request: the same dataset as convert's.
    options = dict(num_shards=1, min_count=1, max_bad_fraction=0.5)
    options["keep_conversion_without_click"] = True
    _convert(raw_dir, tmp_path / "convert", **options)
    beam_convert_dir(raw_dir, tmp_path / "beam", **options)
    assert_same_dataset(tmp_path / "convert", tmp_path / "beam")


@pytest.mark.slow
def test_ground_truth_out_of_step_and_existing_output(tmp_path):
    sk, cf = simple_dataset(users=2, impressions_per_user=2)
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    gt = [b"%d,0.%d,0.5,%d" % (i, i, i % 2) for i in range(1, 5)]
    with open(os.path.join(raw_dir, "ground_truth_test.csv"), "wb") as f:
        f.write(b"\n".join(gt) + b"\n")
    with open(os.path.join(raw_dir, "ground_truth_train.csv"), "wb") as f:
        f.write(b"\n".join(gt[:3]) + b"\n")
    with pytest.raises(ConvertError, match=r"fewer rows .*\(ends before line 4\)"):
        beam_convert_dir(raw_dir, tmp_path / "out", num_shards=1)
    with open(os.path.join(raw_dir, "ground_truth_train.csv"), "wb") as f:
        f.write(b"\n".join(gt[::-1]) + b"\n")
    with pytest.raises(ConvertError, match="ground_truth_train.csv:1: sample_id 4 does not match"):
        beam_convert_dir(raw_dir, tmp_path / "out", num_shards=1)
    assert sorted(os.listdir(tmp_path)) == ["raw"]

    os.makedirs(tmp_path / "out")
    (tmp_path / "out" / "stats.json").write_text("{}")
    with pytest.raises(ConvertError, match="holds a converted dataset; .* pass --overwrite"):
        beam_convert_dir(tmp_path / "raw", tmp_path / "out")
    os.remove(tmp_path / "out" / "stats.json")
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    with pytest.raises(ConvertError, match="out holds no converted dataset"):
        beam_convert_dir(tmp_path / "raw", tmp_path / "out", overwrite=True)
    with pytest.raises(ConvertError, match="which this conversion reads"):  # the raw logs
        beam_convert_dir(tmp_path / "raw", tmp_path, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["out", "raw"]
    assert os.listdir(tmp_path / "out") == ["notes.txt"]


def test_flags_and_pipeline_options():
    config, pipeline_args = beam_convert.parse_args(
        [
            "--raw_dir=RAW",
            "--out_dir",
            "DATA",
            "--min_count=10",
            "--keep_conversion_without_click",
            "--overwrite=false",
            "--runner=DataflowRunner",
            "--project=p",
            "--num_shards=4",
            "--setup_file=./setup.py",
        ]
    )
    assert (config.raw_dir, config.out_dir, config.min_count, config.num_shards) == (
        "RAW",
        "DATA",
        10,
        4,
    )
    assert config.keep_conversion_without_click and not config.overwrite
    assert pipeline_args == ["--runner=DataflowRunner", "--project=p", "--setup_file=./setup.py"]
    assert config.read_chunk_bytes == 64 << 20 and config.verbosity == -2


def test_flags_from_the_config_dataclass():
    config, pipeline_args = beam_convert.parse_args(
        ["--raw_dir=R", "--out_dir=D", "--read_chunk_mb=0.5", "-v", "0", "--runner", "Direct"]
    )
    assert (config.read_chunk_bytes, config.verbosity) == (1 << 19, 0)
    assert pipeline_args == ["--runner", "Direct"]
    with pytest.raises(ConvertError, match="raw_dir"):
        beam_convert.parse_args(["--out_dir=D"])
    with pytest.raises(ConvertError, match="min_count"):
        beam_convert.parse_args(["--raw_dir=R", "--out_dir=D", "--min_count=many"])


def test_numbered_ranges_match_read_lines(tmp_path):
    """Every way of cutting a file into ranges gives raw.read_lines' numbered lines."""
    path = str(tmp_path / "f.csv")
    with open(path, "wb") as f:
        f.write(b"a,1\r\n\nbb,2\n\n\nccc,3\r\nd")  # CRLF, empty lines, no final newline
    expected = list(raw.read_lines(path))
    source = ("train", "skeleton", path)
    for chunk in range(1, 30):
        counted = [beam_lines._count_starts(r) for r in beam_lines._ranges(source, chunk)]
        numbered = list(beam_lines._number((source, [c for _, c in counted])))
        got = [line for r in numbered for line in beam_lines._read_range(r)]
        assert [(n, c, nl) for _, n, c, nl in got] == expected, chunk


def _tree(path) -> dict[str, bytes]:
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                files[os.path.relpath(full, path)] = f.read()
    return files


def test_a_publish_killed_between_its_renames_is_finished(tmp_path, capfd):
    """Killed after OUT was set aside (OUT.old-<pid>) and before the work dir
    was renamed: the rerun converted again and left the old copy forever.
    It now publishes the complete work dir and removes the old copy."""
    sk, cf = simple_dataset(users=3, impressions_per_user=2)
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    out, newer = tmp_path / "out", tmp_path / "newer"
    beam_convert_dir(raw_dir, out, num_shards=1)
    beam_convert_dir(raw_dir, newer, num_shards=2)
    want = _tree(newer)
    old = f"{out}.old-{dead_pid()}"
    os.rename(out, old)  # the state a kill between swap_into_place's renames leaves
    os.rename(newer, f"{out}.beam-partial")
    capfd.readouterr()
    beam_convert_dir(raw_dir, out, num_shards=2, overwrite=True)
    assert "finishing the interrupted publish" in capfd.readouterr().err
    assert _tree(out) == want
    assert sorted(os.listdir(tmp_path)) == ["out", "raw"]


def test_an_object_store_publish_killed_part_way_is_finished(tmp_path, monkeypatch):
    """On an object store the work dir's files are moved one by one: killed
    part-way, OUT holds some new files and an earlier dataset's; calling the
    move again finishes it: exactly the new dataset, stats.json last."""
    sk, cf = simple_dataset(users=3, impressions_per_user=2)
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    out, work = tmp_path / "out", tmp_path / "work"
    beam_convert_dir(raw_dir, out, num_shards=1)  # the earlier dataset (other shard names)
    beam_convert_dir(raw_dir, work, num_shards=2)
    want = _tree(work)
    os.remove(out / "stats.json")  # what _publish deletes first on an object store

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(beam_convert.FileSystems, "rename", killed)
        with pytest.raises(KeyboardInterrupt):
            beam_convert._move_files(str(work), str(out))
    moved = sorted(data_layout.shard_files(str(work), "train"))[:1]
    for path in moved:  # part of the moves had happened
        os.replace(path, str(out) + path[len(str(work)) :])
    assert not os.path.exists(out / "stats.json")
    beam_convert._move_files(str(work), str(out))
    assert _tree(out) == want
    assert not os.path.exists(work)


def test_a_dataset_of_this_conversion_is_up_to_date(tmp_path, capfd):
    """A rerun without --overwrite on OUT holding this very conversion (e.g.
    a publish killed after its stats.json, leaving the work dir) is "nothing
    to do", not an error; the leftover is removed."""
    sk, cf = simple_dataset(users=2, impressions_per_user=2)
    raw_dir = write_raw_dir(tmp_path / "raw", sk, cf)
    out = tmp_path / "out"
    first = beam_convert_dir(raw_dir, out, num_shards=1)
    want = _tree(out)
    os.makedirs(f"{out}.beam-partial/train")  # what a kill after the stats.json move left
    capfd.readouterr()
    assert beam_convert_dir(raw_dir, out, num_shards=1) == first
    assert "already holds this conversion; nothing to do" in capfd.readouterr().err
    assert _tree(out) == want and sorted(os.listdir(tmp_path)) == ["out", "raw"]
    with pytest.raises(ConvertError, match="holds a converted dataset; .* pass --overwrite"):
        beam_convert_dir(raw_dir, out, num_shards=2)  # another conversion: still refused
