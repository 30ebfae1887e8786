"""kill -9 in the middle of a conversion, a training run or an export, then
the same command again: the conversion ends byte-identical to an uninterrupted
one (and never showed a complete-looking output), the training resumes from
its last checkpoint and, with --deterministic, ends with the very model
(every checkpointed value) and metrics of an uninterrupted run; a server
polling the export directory never sees a partial version. Only the processes the test starts are killed (their own session)."""

from __future__ import annotations

import filecmp
import glob
import json
import os
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from data_prep.synthetic import SyntheticConfig, generate
from esmm_tf import data_layout, run_dir
from tests.helpers import kill_session, run_ok, start_module

pytestmark = pytest.mark.slow  # end-to-end runs: `make test-fast` leaves them out


def _kill_when(proc, condition, timeout=120.0):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"finished before it could be killed: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            kill_session(proc)
            pytest.fail("condition never met")
        time.sleep(0.05)
    kill_session(proc)


def _train_args(data_dir, model_dir) -> list[str]:
    """esmm_tf.train with the paper's flags and tiny towers."""
    return [
        "esmm_tf.train",
        "--flagfile=experiments/esmm.flags",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--embedding_dim=4",
        "--tower_units=16,8",
    ]


@pytest.fixture(scope="module")
def medium_raw_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("raw_medium"))
    generate(SyntheticConfig(impressions=150_000, seed=2, progress_seconds=0), out)
    return out


def test_kill_9_during_convert_then_rerun(medium_raw_dir, tmp_path):
    flags = [f"--raw_dir={medium_raw_dir}", "--num_shards=6", "--workers=2", "--min_count=1"]
    run_ok(["data_prep.convert", *flags, f"--out_dir={tmp_path / 'clean'}"])

    out = tmp_path / "out"
    tasks = os.path.join(str(out) + ".partial", "tasks")
    proc = start_module(["data_prep.convert", *flags, f"--out_dir={out}"])
    _kill_when(proc, lambda: len(glob.glob(os.path.join(tasks, "*.json"))) >= 2)
    assert not out.exists()  # nothing that looks complete
    assert len(glob.glob(os.path.join(tasks, "*.json"))) < 12  # really interrupted

    rerun = run_ok(["data_prep.convert", *flags, f"--out_dir={out}"])
    assert "resuming" in rerun.stderr
    for split in data_layout.SPLITS:
        clean = data_layout.shard_files(str(tmp_path / "clean"), split)
        resumed = data_layout.shard_files(str(out), split)
        assert [os.path.basename(p) for p in clean] == [os.path.basename(p) for p in resumed]
        for a, b in zip(clean, resumed, strict=True):
            assert filecmp.cmp(a, b, shallow=False)
    for name in os.listdir(tmp_path / "clean" / "vocab"):
        assert filecmp.cmp(tmp_path / "clean" / "vocab" / name, out / "vocab" / name, False)


def test_kill_9_during_training_then_rerun(tiny_data_dir, tmp_path):
    model_dir = tmp_path / "run"
    args = [
        *_train_args(tiny_data_dir, model_dir),
        "--batch_size=32",
        "--epochs=2",  # killed in epoch 1: the resumed run skips its trained batches
        "--checkpoint_every_steps=40",
        "--log_every_steps=40",
        "--deterministic",
    ]
    proc = start_module(args)
    index = model_dir / "checkpoints" / "checkpoint"
    _kill_when(proc, lambda: index.exists() and "ckpt-" in index.read_text())
    assert not (model_dir / "eval_metrics.json").exists()
    rerun = run_ok(args)
    assert "resumed from" in rerun.stderr
    resumed_step = int(rerun.stderr.split("resumed from")[1].split("(step ")[1].split(")")[0])
    assert resumed_step >= 40
    metrics = json.loads((model_dir / "eval_metrics.json").read_text())
    # The same command never interrupted ends with the same model, bit for bit.
    clean_dir = tmp_path / "clean"
    run_ok([a if not a.startswith("--model_dir=") else f"--model_dir={clean_dir}" for a in args])
    clean = json.loads((clean_dir / "eval_metrics.json").read_text())
    assert metrics["step"] == clean["step"]
    for key in ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space", "calibration"):
        assert metrics[key] == clean[key], key
    resumed_vars, clean_vars = (
        checkpoint_values(run_dir.latest_checkpoint(str(d))) for d in (model_dir, clean_dir)
    )
    assert resumed_vars.keys() == clean_vars.keys()
    differ = [
        k
        for k, v in clean_vars.items()
        if not np.array_equal(resumed_vars[k], v, equal_nan=v.dtype.kind == "f")
    ]
    assert not differ, differ


def checkpoint_values(path: str) -> dict:
    """Every value saved in a checkpoint (model, optimizer, progress) but its
    save counter, by name."""
    reader = tf.train.load_checkpoint(path)
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if not name.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))
    }


def _complete_version(path: str) -> bool:
    return all(
        os.path.exists(os.path.join(path, name))
        for name in ("saved_model.pb", "variables/variables.index", "assets", "assets.extra")
    )


def test_kill_9_during_export_never_shows_a_partial_version(tiny_data_dir, tmp_path):
    model_dir, export_dir = tmp_path / "run", tmp_path / "export"
    run_ok([*_train_args(tiny_data_dir, model_dir), "--epochs=1"])
    args = ["esmm_tf.export", f"--model_dir={model_dir}", f"--export_dir={export_dir}"]
    # A server polling export_dir loads every directory named by an integer.
    partial_seen = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            if export_dir.exists():
                for name in os.listdir(export_dir):
                    if name.isdigit() and not _complete_version(str(export_dir / name)):
                        partial_seen.append(name)
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        proc = start_module(args)
        _kill_when(
            proc,
            lambda: (
                export_dir.exists()
                and any(
                    n.startswith(".tmp") and os.listdir(export_dir / n)
                    for n in os.listdir(export_dir)
                )
            ),
        )
        left = os.listdir(export_dir)
        assert [n for n in left if n.startswith(".tmp")], left  # killed mid-export
        assert not [n for n in left if n.isdigit()], left
        rerun = run_ok(args)
    finally:
        stop.set()
        poller.join(timeout=10)
    assert not partial_seen, partial_seen
    versions = [n for n in os.listdir(export_dir) if n.isdigit()]
    assert len(versions) == 1 and rerun.stdout.strip().endswith(versions[0])
    assert not [n for n in os.listdir(export_dir) if n.startswith(".tmp")]  # the killed one's
    assert _complete_version(str(export_dir / versions[0]))
