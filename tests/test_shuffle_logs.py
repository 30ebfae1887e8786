"""data_prep.shuffle_logs refuses what would destroy its input or crash midway
(the shuffle itself is tested with the converter in test_grouping.py)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from data_prep.shuffle_logs import BUCKET_DIR_PREFIX, ShuffleConfig, ShuffleError, shuffle_logs
from tests.helpers import ENV, ROOT, dead_pid, run_module
from tests.rawrows import simple_dataset, write_raw_dir


@pytest.fixture
def raw_dir(tmp_path) -> str:
    return write_raw_dir(str(tmp_path / "raw"), *simple_dataset(users=40, impressions_per_user=5))


def _contents(directory: str) -> dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out


def _one_error_line(result, start: str) -> None:
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"error: {start}"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_out_dir_linked_to_raw_dir_is_refused_and_the_logs_kept(raw_dir, tmp_path):
    """The same-folder check compared abspath: a symbolic link shuffled the input in place."""
    before = _contents(raw_dir)
    link = tmp_path / "link"
    link.symlink_to(raw_dir)
    with pytest.raises(ShuffleError, match="is --raw_dir=.*the same directory"):
        shuffle_logs(ShuffleConfig(raw_dir=raw_dir, out_dir=str(link), seed=1))
    with pytest.raises(ShuffleError, match="the same directory"):  # and the other way round
        shuffle_logs(ShuffleConfig(raw_dir=str(link), out_dir=raw_dir + "/.", seed=1))
    assert _contents(raw_dir) == before


def test_bad_flags_are_one_error_line(raw_dir, tmp_path):
    out = str(tmp_path / "out")
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    flags = [f"--raw_dir={raw_dir}", f"--out_dir={out}"]
    cases = [
        ([f"--raw_dir={raw_dir}", f"--out_dir={a_file}"], f"--out_dir={a_file} exists and is not"),
        ([*flags, "--seed=-1"], "--seed=-1: need an integer >= 0"),
        ([*flags, "--bucket_mb=nan"], "--bucket_mb=nan: need a positive number"),
        ([*flags, "--bucket_mb=inf"], "--bucket_mb=inf: need a positive number"),
        ([*flags, "--bucket_mb=0"], "--bucket_mb=0.0: need a positive number"),
        # one open file per bucket: "Too many open files"
        ([*flags, "--bucket_mb=0.000001"], "--bucket_mb is too small for"),
        ([*flags, "extra", "words"], "unexpected arguments ['extra', 'words']"),
    ]
    for args, start in cases:
        _one_error_line(run_module(["data_prep.shuffle_logs", *args]), start)
        assert not os.path.exists(out), args
    assert a_file.read_text() == "keep me"


def test_too_small_buckets_name_the_least_bucket_mb_that_works(raw_dir, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(ShuffleError, match=r"use --bucket_mb=(\S+) or more") as error:
        shuffle_logs(ShuffleConfig(raw_dir=raw_dir, out_dir=out, bucket_mb=2 / 2**20))
    least = float(error.value.args[0].split("use --bucket_mb=")[1].split()[0])
    shuffle_logs(ShuffleConfig(raw_dir=raw_dir, out_dir=out, bucket_mb=least))
    assert sorted(os.listdir(out)) == sorted(os.listdir(raw_dir))


def test_more_buckets_than_the_open_file_limit_allows(raw_dir, tmp_path):
    """~500 buckets under a soft limit of 200 open files: the limit is raised."""
    size = sum(os.path.getsize(os.path.join(raw_dir, f"sample_skeleton_{s}.csv")) for s in ["train", "test"])  # fmt: skip
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 600:
        pytest.skip(f"hard open-file limit {hard}")
    result = subprocess.run(
        [sys.executable, "-m", "data_prep.shuffle_logs", f"--raw_dir={raw_dir}",
         f"--out_dir={tmp_path / 'out'}", f"--bucket_mb={size / 2 / 500 / 2**20}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, check=False,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(raw_dir))


def test_bucket_directory_of_a_killed_run_is_removed(raw_dir, tmp_path):
    """A kill left OUT/.shuffle-* (a copy of the logs in buckets) behind for good."""
    out = tmp_path / "out"
    stale, live = (
        out / f"{BUCKET_DIR_PREFIX}{dead_pid()}",
        out / f"{BUCKET_DIR_PREFIX}{os.getppid()}",
    )
    for directory in (stale, live):
        directory.mkdir(parents=True)
        (directory / "00000").write_bytes(b"rows\n")
    shuffle_logs(ShuffleConfig(raw_dir=raw_dir, out_dir=str(out), seed=1))
    assert sorted(os.listdir(out)) == sorted([*os.listdir(raw_dir), live.name])
