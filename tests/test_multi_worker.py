"""--strategy=multi_worker_mirrored for real: two worker processes on
127.0.0.1 (ports chosen at run time) train a few hundred steps on the tiny
data, then resume for one more epoch. Both end with identical variables, the
ones a single process gets from the same global batches (each step on the
union of the two workers' batches, replayed from what they recorded); only
the chief wrote model_dir and the export, which serves what the final
checkpoint predicts; the non-chief's scratch files are gone. Only the
processes this test starts are killed (their own session), and every run is
bounded in time."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import distribute, training_run
from esmm_tf.model import build_model
from esmm_tf.serving import SIGNATURE_INPUT
from esmm_tf.serving_requests import impression_examples
from tests.helpers import (
    ENV,
    kill_session,
    make_tiny_config,
    parse_serving,
    read_records,
    start_module,
)

TIMEOUT_S = 240  # per run of the two workers; each takes well under that
# Worker variables vs one process on the same global batches: measured max
# |diff| 1.1e-6 after 612 steps (summation order); averaging the workers' own
# means instead of the global batch's mean gives 0.25.
RTOL, ATOL = 1e-4, 1e-5


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
                start_module(
                    ["tests.multi_worker_driver", *args, f"--weights_out={run['weights']}"],
                    env=dict(ENV, TF_CONFIG=json.dumps(tf_config), TMPDIR=str(run["tmpdir"])),
                    stdout=run["log"],
                    stderr=subprocess.STDOUT,
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
            kill_session(proc)
        for run in runs:
            run["log"].seek(0)
            run["output"] = run.pop("log").read()
    for proc, run in zip(procs, runs, strict=True):
        run["returncode"] = proc.returncode
        assert proc.returncode == 0, f"{name}: a worker failed:\n{run['output'][-3000:]}"
    return runs


def one_process_replay(config, runs: list[list[dict]], per_epoch: int) -> list[list[np.ndarray]]:
    """One process with the default strategy trains on what the two workers
    trained on: each step on the union of their two batches of that step
    (the global batch), from the same initial variables. The ESMM loss is a
    mean over the batch's impressions, so the union's is the two batches'
    means weighted by their impressions. Returns the model's variables after
    each run of the workers (``runs``: one list of worker results per run)."""
    import pickle

    from esmm_tf import features as F
    from esmm_tf import input_pipeline, objectives
    from tests.multi_worker_driver import batches_path

    recorded = []
    for runs_of_one in runs:
        workers = []
        for run in runs_of_one:
            with open(batches_path(str(run["weights"])), "rb") as f:
                workers.append(pickle.load(f))
        recorded.append(workers)
    initial = recorded[0][0]["initial"]
    for a, b in zip(initial, recorded[0][1]["initial"], strict=True):
        np.testing.assert_array_equal(a, b)  # both workers start alike

    model = build_model(config)
    optimizer = training_run.make_optimizer(config, per_epoch)
    optimizer.build(model.trainable_variables)
    for v, value in zip(model.weights, initial, strict=True):
        v.assign(value)
    variables = model.trainable_variables
    spec = input_pipeline.batch_spec()

    @tf.function(input_signature=(*spec, *spec))
    def step(inputs_a, labels_a, inputs_b, labels_b):
        with tf.GradientTape() as tape:
            total = weight = 0.0
            for inputs, labels in ((inputs_a, labels_a), (inputs_b, labels_b)):
                size = tf.cast(tf.size(labels[F.CLICK]), tf.float32)
                loss = objectives.loss(config, labels, model(inputs, training=True))["total"]
                total, weight = total + size * loss, weight + size
            total = total / weight
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))

    after = []
    for workers in recorded:
        steps = [w["steps"] for w in workers]
        assert len(steps[0]) == len(steps[1]) > 0
        for (inputs_a, labels_a), (inputs_b, labels_b) in zip(*steps, strict=True):
            step(inputs_a, labels_a, inputs_b, labels_b)
        after.append([v.numpy() for v in model.weights])
    return after


@pytest.mark.slow
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

    # One process on the same global batches ends with the same variables,
    # within float tolerance (the all-reduce sums in another order).
    single = dataclasses.replace(config, strategy="default")
    replayed = one_process_replay(single, [first, second], per_epoch)
    for runs, values in zip((first, second), replayed, strict=True):
        chief = dict(np.load(runs[0]["weights"]))
        keys = sorted(
            (k for k in chief if k.startswith("model/")), key=lambda k: int(k.split("/")[1])
        )
        assert len(keys) == len(values)
        for key, value in zip(keys, values, strict=True):
            np.testing.assert_allclose(value, chief[key], rtol=RTOL, atol=ATOL, err_msg=key)

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
