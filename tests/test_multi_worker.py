"""--strategy=multi_worker_mirrored for real: two worker processes on
127.0.0.1 (ports chosen at run time) train a few hundred steps on the tiny
data, then resume for one more epoch. Both end with identical variables; only
the chief wrote model_dir and the export, which serves what the final
checkpoint predicts; the non-chief's scratch files are gone. Only the
processes this test starts are killed (their own session), and every run is
bounded in time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import distribute, training_run
from esmm_tf.model import build_model
from esmm_tf.serving import SIGNATURE_INPUT
from esmm_tf.serving_requests import impression_examples
from tests.conftest import make_tiny_config
from tests.entry import ENV, ROOT
from tests.test_input_pipeline import parse_serving, read_records

TIMEOUT_S = 240  # per run of the two workers; each takes well under that


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_workers(args: list[str], tmp_path, name: str) -> list[dict]:
    """One ``tests.multi_worker_driver`` process per worker of a 2-worker
    TF_CONFIG cluster; waits for both. Returns per worker: returncode, output,
    its TMPDIR and the .npz of its final variables."""
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs, runs = [], []
    try:
        for index in range(len(workers)):
            run = {
                "tmpdir": tmp_path / f"{name}-tmp{index}",
                "weights": tmp_path / f"{name}-weights{index}.npz",
                "log": open(tmp_path / f"{name}-worker{index}.log", "w+"),
            }
            run["tmpdir"].mkdir()
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.multi_worker_driver",
                        *args,
                        f"--weights_out={run['weights']}",
                    ],
                    cwd=ROOT,
                    env=dict(ENV, TF_CONFIG=json.dumps(tf_config), TMPDIR=str(run["tmpdir"])),
                    stdout=run["log"],
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            runs.append(run)
        deadline = time.time() + TIMEOUT_S
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the workers did not finish within {TIMEOUT_S} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        for run in runs:
            run["log"].seek(0)
            run["output"] = run.pop("log").read()
    for proc, run in zip(procs, runs, strict=True):
        run["returncode"] = proc.returncode
        assert proc.returncode == 0, f"{name}: a worker failed:\n{run['output'][-3000:]}"
    return runs


def test_two_workers_train_identically_and_only_the_chief_writes(tiny_data_dir, tmp_path):
    model_dir, export_dir = tmp_path / "model", tmp_path / "export"
    config = make_tiny_config(
        tiny_data_dir, batch_size=16, strategy="multi_worker_mirrored", epochs=2
    )
    args = [
        "--flagfile=experiments/esmm.flags",
        f"--data_dir={tiny_data_dir}",
        f"--model_dir={model_dir}",
        "--strategy=multi_worker_mirrored",
        "--embedding_dim=4",
        "--tower_units=16,8",
        "--batch_size=16",  # the global batch: 8 impressions per worker and step
        "--deterministic",
        "--seed=3",
        "--checkpoint_every_steps=50",
        "--log_every_steps=50",
        "--eval_every_steps=1000",
    ]
    per_epoch = training_run.steps_per_epoch(config)
    assert per_epoch >= 100

    first = run_workers([*args, "--epochs=2"], tmp_path, "first")
    # The second run resumes both workers from the chief's checkpoint and exports.
    second = run_workers([*args, "--epochs=3", f"--export_dir={export_dir}"], tmp_path, "second")
    for run in second:
        assert f"(step {2 * per_epoch})" in run["output"], run["output"][-2000:]

    # Identical variables on both workers, after all 3 epochs of steps.
    for runs in (first, second):
        chief, other = (dict(np.load(run["weights"])) for run in runs)
        assert chief.keys() == other.keys()
        for key in chief:
            np.testing.assert_array_equal(chief[key], other[key], err_msg=key)
    iterations = [v for k, v in chief.items() if k.endswith("/iterations:0")]
    assert [int(v) for v in iterations] == [3 * per_epoch]

    # Only the chief wrote model_dir: one events file per summary directory;
    # the non-chief's scratch checkpoints and export are gone.
    names = sorted(os.listdir(model_dir))
    assert [n for n in names if not n.startswith("events.out.tfevents")] == [
        "checkpoints",
        "config.json",
        "eval",
        "eval_metrics.json",
        "train",
        "vocab",
    ]
    # Root events: the first run's hparams, then each run's final test AUCs.
    assert len(names) == 6 + 3
    for sub in ("train", "eval"):
        assert len(os.listdir(model_dir / sub)) == 2  # one events file per run
    for run in (*first, *second):
        assert os.listdir(run["tmpdir"]) == []
    assert json.loads((model_dir / "config.json").read_text())["strategy"] == (
        "multi_worker_mirrored"
    )
    assert json.loads((model_dir / "eval_metrics.json").read_text())["step"] == 3 * per_epoch

    # The final checkpoint holds the workers' variables ...
    model = build_model(config, str(model_dir))
    optimizer = training_run.make_optimizer(config)
    optimizer.build(model.trainable_variables)
    latest = training_run.latest_checkpoint(str(model_dir))
    assert latest.endswith(f"ckpt-{3 * per_epoch}")
    tf.train.Checkpoint(model=model, optimizer=optimizer).restore(
        latest
    ).assert_existing_objects_matched()
    restored = [v.numpy() for v in model.weights]
    np.testing.assert_array_equal(
        restored[0], next(v for k, v in chief.items() if k.startswith("model/0/"))
    )
    # ... and the one export serves what it predicts.
    (version,) = os.listdir(export_dir)
    loaded = tf.saved_model.load(str(export_dir / version))
    examples = [e for r in read_records(tiny_data_dir, "test", 3) for e in impression_examples(r)]
    served = loaded.signatures["serving_default"](
        **{SIGNATURE_INPUT: tf.constant(examples, tf.string)}
    )
    expected = model(parse_serving(examples), training=False)
    for key in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(served[key].numpy(), expected[key].numpy(), rtol=1e-5)


@pytest.mark.parametrize(
    "tf_config, match",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "not valid JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', "needs a 'cluster' and a 'task'"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "not a job"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "range"),
        ('{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker"}}', "ps"),
    ],
)
def test_bad_tf_config_is_a_clear_error(tf_config, match, monkeypatch):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(distribute.ClusterConfigError, match=match):
        distribute.make_strategy("multi_worker_mirrored")


def test_parameter_server_says_what_fails():
    with pytest.raises(distribute.ClusterConfigError, match="ShardedVariable.*handle"):
        distribute.make_strategy("parameter_server")


def test_unknown_strategy(tiny_data_dir):
    with pytest.raises(ValueError, match="multi_worker_mirrored"):
        make_tiny_config(tiny_data_dir, strategy="mirrored_everywhere")
