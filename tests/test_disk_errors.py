"""A full disk or an unwritable output directory: convert, train and export end
with one ``error:`` line naming the path and what to do (no traceback), exit
status 1, and nothing complete-looking; a rerun with space resumes."""

from __future__ import annotations

import contextlib
import errno
import filecmp
import os
import subprocess

import pytest

from data_prep import convert as convert_lib
from data_prep.convert import ConvertConfig, ConvertError
from esmm_tf import cli, data_layout
from tests.helpers import run_module, run_ok
from tests.rawrows import simple_dataset, write_raw_dir


def test_os_error_line():
    full = OSError(errno.ENOSPC, "No space left on device", "/d/x.tmp")
    assert cli.os_error_line(full, "--out_dir=/d") == (
        "/d/x.tmp: No space left on device; free space on that disk (or choose a directory "
        "on another one), then rerun the command"
    )
    closing = OSError(errno.ENOSPC, "No space left on device")  # e.g. from close(): no name
    assert cli.os_error_line(closing, "--out_dir=/d").startswith("--out_dir=/d: No space")
    ro = OSError(errno.EROFS, "Read-only file system", "/ro/run")
    assert "choose a directory you can write to" in cli.os_error_line(ro, "")
    assert cli.os_error_line(ValueError("x"), "") is None


def test_tensorflow_disk_full_error_is_one_line():
    import tensorflow as tf

    error = tf.errors.ResourceExhaustedError(
        None,
        None,
        "{{function_node __wrapped__SaveV2}} /r/ckpt_temp/x; No space left on device [Op:SaveV2]",
    )
    assert cli.os_error_line(error, "--model_dir=/r") == (
        "/r/ckpt_temp/x; No space left on device (writing --model_dir=/r); free space on that "
        "disk (or choose a directory on another one), then rerun the command"
    )
    assert cli.os_error_line(tf.errors.ResourceExhaustedError(None, None, "OOM"), "") is None


def test_one_line_errors_exits_1(capsys):
    with pytest.raises(SystemExit) as exit_, cli.one_line_errors("--out_dir=D", (KeyError,)):
        raise OSError(errno.ENOSPC, "No space left on device", "D/f")
    assert exit_.value.code == 1
    assert capsys.readouterr().err.startswith("error: D/f: No space left on device; free space")
    with pytest.raises(RuntimeError), cli.one_line_errors("D"):
        raise RuntimeError("a bug keeps its traceback")


def test_convert_on_a_full_disk_then_rerun(tmp_path, monkeypatch, capsys):
    """ENOSPC at the first shard write: one line, exit 1, no OUT; the rerun
    (space freed) resumes and equals a clean conversion."""
    sk, cf = simple_dataset(users=6, impressions_per_user=3)
    raw_dir = write_raw_dir(str(tmp_path / "raw"), sk, cf)
    config = ConvertConfig(raw_dir=raw_dir, out_dir=str(tmp_path / "out"), workers=1)
    real = convert_lib.TFRecordWriter

    def full_disk(path):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(convert_lib, "TFRecordWriter", full_disk)
    where = f"--out_dir={config.out_dir}"
    with pytest.raises(SystemExit) as exit_, cli.one_line_errors(where, (ConvertError,)):
        convert_lib.convert(config)
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {tmp_path}/out.partial/train/part-00000-of-")
    assert err[-1].endswith(
        "No space left on device; free space on that disk (or choose a "
        "directory on another one), then rerun the command"
    )
    assert not os.path.exists(config.out_dir)
    monkeypatch.setattr(convert_lib, "TFRecordWriter", real)
    convert_lib.convert(config)
    clean = ConvertConfig(raw_dir=raw_dir, out_dir=str(tmp_path / "clean"), workers=1)
    convert_lib.convert(clean)
    shards = [
        os.path.relpath(p, clean.out_dir) for p in data_layout.shard_files(clean.out_dir, "train")
    ]
    for name in ("stats.json", *shards):
        assert filecmp.cmp(
            os.path.join(config.out_dir, name), os.path.join(clean.out_dir, name), shallow=False
        )


@contextlib.contextmanager
def _mount(path, options: str):
    os.makedirs(path)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path]).returncode != 0:
        pytest.skip("needs root to mount a tmpfs")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", path], check=False)


def _fails_with_one_line(args: list[str], must_name: str) -> str:
    result = run_module(args)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and must_name in line, line
    return line


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_and_read_only_disks_from_the_command_line(tiny_raw_dir, tiny_data_dir, tmp_path):
    train = [
        "esmm_tf.train",
        "--flagfile=experiments/esmm.flags",
        f"--data_dir={tiny_data_dir}",
        "--embedding_dim=4",
        "--tower_units=16,8",
    ]
    run = str(tmp_path / "run")
    run_ok([*train, f"--model_dir={run}"])
    convert = ["data_prep.convert", f"--raw_dir={tiny_raw_dir}", "--workers=1"]
    with _mount(tmp_path / "full", "size=64k") as full:
        line = _fails_with_one_line([*convert, f"--out_dir={full}/data"], full)
        assert "No space left on device" in line and not os.path.exists(f"{full}/data")
        line = _fails_with_one_line([*train, f"--model_dir={full}/run"], full)
        assert "No space left on device" in line
        assert not os.path.exists(f"{full}/run/eval_metrics.json")
        line = _fails_with_one_line(
            ["esmm_tf.export", f"--model_dir={run}", f"--export_dir={full}/export"], full
        )
        assert "No space left on device" in line and os.listdir(f"{full}/export") == []
    with _mount(tmp_path / "ro", "ro,size=64k") as ro:
        for args in (
            [*convert, f"--out_dir={ro}/data"],
            [*train, f"--model_dir={ro}/run"],
            ["esmm_tf.export", f"--model_dir={run}", f"--export_dir={ro}/export"],
        ):
            assert "Read-only file system" in _fails_with_one_line(args, ro)
