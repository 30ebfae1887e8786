"""data_prep.convert on new logs: one split only, and --vocab_from."""

from __future__ import annotations

import dataclasses
import filecmp
import json
import os
import shutil

import pytest

from data_prep import raw
from data_prep.convert import ConvertConfig, ConvertError, convert
from esmm_tf import data_layout
from esmm_tf import features as F
from tests.helpers import run_module


def _convert(raw_dir, out_dir, **kwargs):
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("num_shards", 2)
    kwargs.setdefault("min_count", 1)
    return convert(ConvertConfig(raw_dir=str(raw_dir), out_dir=str(out_dir), **kwargs))


def _one_split(tiny_raw_dir, path, split):
    os.makedirs(path)
    for name in os.listdir(tiny_raw_dir):
        if name.endswith(f"_{split}.csv"):
            shutil.copy(os.path.join(tiny_raw_dir, name), path)
    return path


def _same_files(a, b):
    assert filecmp.cmp(a, b, shallow=False), (a, b)


def test_test_split_only_with_and_without_vocab_from(tiny_raw_dir, tiny_data_dir, tmp_path):
    raw_dir = _one_split(tiny_raw_dir, tmp_path / "raw", "test")
    stats = _convert(raw_dir, tmp_path / "plain")
    assert sorted(os.listdir(tmp_path / "plain")) == [
        "convert_timings.json",
        "stats.json",
        "test",
    ]  # no vocab/
    assert list(stats["splits"]) == ["test"] and stats["fields"] == {}
    assert stats["has_ground_truth"]
    # The same test shards as the conversion of both splits.
    for a, b in zip(
        data_layout.shard_files(str(tmp_path / "plain"), "test"),
        data_layout.shard_files(tiny_data_dir, "test"),
        strict=True,
    ):
        _same_files(a, b)
    full = json.load(open(data_layout.stats_file(tiny_data_dir)))
    assert stats["splits"]["test"] == full["splits"]["test"]

    stats = _convert(raw_dir, tmp_path / "reused", vocab_from=tiny_data_dir)
    assert stats["vocab_from"] == tiny_data_dir
    for field in F.FIELDS:
        _same_files(
            data_layout.vocab_file(tiny_data_dir, field.id),
            data_layout.vocab_file(str(tmp_path / "reused"), field.id),
        )
        assert stats["fields"][field.id]["vocab_size"] == full["fields"][field.id]["vocab_size"]
    assert set(stats["fingerprint"]["vocab_from"]) == {f.id for f in F.FIELDS}

    # The vocabulary is part of what the output was made from.
    other = tmp_path / "other_vocab"
    shutil.copytree(os.path.join(tiny_data_dir, data_layout.VOCAB_DIR), other / "vocab")
    with open(data_layout.vocab_file(str(other), "101"), "a") as f:
        f.write("123456789\t1\n")
    with pytest.raises(ConvertError, match="--overwrite"):
        _convert(raw_dir, tmp_path / "reused", vocab_from=str(other))
    _convert(raw_dir, tmp_path / "reused", vocab_from=str(other), overwrite=True)
    _same_files(
        data_layout.vocab_file(str(other), "101"),
        data_layout.vocab_file(str(tmp_path / "reused"), "101"),
    )


def test_train_split_only_builds_the_vocabulary(tiny_raw_dir, tiny_data_dir, tmp_path):
    raw_dir = _one_split(tiny_raw_dir, tmp_path / "raw", "train")
    stats = _convert(raw_dir, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == [
        "convert_timings.json",
        "stats.json",
        "train",
        "vocab",
    ]
    assert list(stats["splits"]) == ["train"]
    for field in F.FIELDS:
        _same_files(
            data_layout.vocab_file(tiny_data_dir, field.id),
            data_layout.vocab_file(str(tmp_path / "out"), field.id),
        )

    # With --vocab_from, train ids are not counted: the given vocabulary is kept.
    other = tmp_path / "other_vocab"
    shutil.copytree(os.path.join(tiny_data_dir, data_layout.VOCAB_DIR), other / "vocab")
    with open(data_layout.vocab_file(str(other), "205"), "w") as f:
        f.write("-1\t0\n42\t7\n")
    stats = _convert(raw_dir, tmp_path / "reused", vocab_from=str(other))
    _same_files(
        data_layout.vocab_file(str(other), "205"),
        data_layout.vocab_file(str(tmp_path / "reused"), "205"),
    )
    assert stats["fields"]["205"] == {"vocab_size": 1}


def test_missing_splits_and_vocabularies(tiny_raw_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(raw.RawInputError, match="holds no split"):
        _convert(tmp_path / "empty", tmp_path / "out")
    raw_dir = _one_split(tiny_raw_dir, tmp_path / "raw", "test")
    os.remove(raw_dir / "common_features_test.csv")
    with pytest.raises(raw.RawInputError, match="common_features_test"):
        _convert(raw_dir, tmp_path / "out")
    raw_dir = _one_split(tiny_raw_dir, tmp_path / "raw2", "test")
    with pytest.raises(ConvertError, match=r"--vocab_from=.*vocab/101.tsv not found"):
        _convert(raw_dir, tmp_path / "out", vocab_from=str(tmp_path / "empty"))
    assert not os.path.exists(tmp_path / "out")


def test_command_line_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_module(
        ["data_prep.convert", f"--raw_dir={tmp_path / 'empty'}"]
        + [f"--out_dir={tmp_path / 'out'}", f"--vocab_from={tmp_path}"]
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'empty'} holds no split: expected sample_skeleton_<split>.csv and "
        "common_features_<split>.csv (or .csv.gz) for train, test or both "
        "(see README: 'Real Ali-CCP data')"
    ]


@pytest.mark.parametrize(
    "option, value",
    [
        ("min_count", -1),
        ("max_bad_fraction", float("nan")),
        ("max_bad_fraction", -0.1),
        ("max_bad_fraction", 1.5),
        ("max_group_size", 0),
        ("num_shards", -1),
        ("workers", -1),
        ("memory_budget_mb", 0),
    ],
)
def test_options_out_of_range_are_refused_before_any_work(option, value, tmp_path):
    """One ConvertError naming the flag, from either converter's config (the
    same checks), before anything is read or written."""
    from data_prep.beam_convert import BeamConvertConfig

    with pytest.raises(ConvertError, match=f"^--{option} must be "):
        ConvertConfig(raw_dir="raw", out_dir=str(tmp_path / "out"), **{option: value})
    if option in {f.name for f in dataclasses.fields(BeamConvertConfig)}:
        with pytest.raises(ConvertError, match=f"^--{option} must be "):
            BeamConvertConfig(raw_dir="raw", out_dir=str(tmp_path / "out"), **{option: value})
    assert os.listdir(tmp_path) == []


def test_a_bad_option_is_one_line_from_the_command_line(tmp_path):
    result = run_module(
        [
            "data_prep.convert",
            f"--raw_dir={tmp_path}",
            f"--out_dir={tmp_path / 'out'}",
            "--memory_budget_mb=0",
        ]
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: --memory_budget_mb must be >= 1, got 0"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "damage, message",
    [
        (b"abc\t7\n", r"101.tsv:\d+: expected raw_id<TAB>count, got b'abc\\t7'"),
        (b"\n", r"101.tsv:\d+: expected raw_id<TAB>count, got b''"),
        (b"-5\t2\n", r"101.tsv:\d+: id -5 is negative"),
        (b"DUP", r"101.tsv:\d+: id \d+ repeats line 2"),
    ],
)
def test_a_damaged_vocabulary_is_refused_naming_file_and_line(
    tiny_raw_dir, tiny_data_dir, tmp_path, damage, message
):
    """Rows are line numbers: a hand-edited vocab/<field>.tsv would mis-map
    ids. --vocab_from refuses it before converting anything, and a training run
    before copying it (so nothing is written)."""
    from esmm_tf import run_dir

    source = tmp_path / "source"
    shutil.copytree(os.path.join(tiny_data_dir, data_layout.VOCAB_DIR), source / "vocab")
    path = data_layout.vocab_file(str(source), "101")
    if damage == b"DUP":
        with open(path, "rb") as f:
            damage = f.read().split(b"\n")[1] + b"\n"  # line 2's id again
    with open(path, "ab") as f:
        f.write(damage)
    raw_dir = _one_split(tiny_raw_dir, tmp_path / "raw", "test")
    with pytest.raises(ConvertError, match=f"^--vocab_from={source}: .*{message}"):
        _convert(raw_dir, tmp_path / "out", vocab_from=str(source))
    assert sorted(os.listdir(tmp_path)) == ["raw", "source"]  # no out, no out.partial
    with pytest.raises(data_layout.DatasetError, match=message):
        run_dir.copy_vocab(str(source), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / data_layout.VOCAB_DIR)
