"""Bad data at training time: truncated or corrupted TFRecord shards (a clear
error naming the file, or skipped and counted) and absurd values that make
training non-finite (a clear stop; the last good checkpoint is kept)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from data_prep.tfrecord import TFRecordWriter
from esmm_tf import data_layout, shards, training_run
from esmm_tf.evaluate import evaluate_model_dir, restore_model
from tests.helpers import make_tiny_config, run_module


@pytest.fixture
def data_dir(tiny_data_dir, tmp_path):
    """A private copy of the tiny dataset, to damage."""
    out = str(tmp_path / "data")
    shutil.copytree(tiny_data_dir, out)
    return out


def truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) * 2 // 3)


def flip_a_byte(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_check_shard(data_dir):
    good, bad = data_layout.shard_files(data_dir, "train")
    records = shards.check_shard(good).records
    assert shards.check_shard(good).ok and records > 0
    truncate(bad)
    check = shards.check_shard(bad)
    assert not check.ok and "truncated record at" in check.error
    assert check.records > 0
    assert "failed with" not in check.error and "'" not in check.error  # TensorFlow's tail
    flip_a_byte(good)
    check = shards.check_shard(good)
    assert not check.ok and "corrupted record at" in check.error
    assert 0 < check.records < records

    # The error names each bad shard once; only training (which has the flag) offers to skip.
    try:
        list(tf.data.TFRecordDataset(bad))
    except tf.errors.DataLossError as e:
        error = e
    for can_skip in (False, True):
        message = str(shards.corrupt_shard_error([good, bad], error, can_skip))
        assert message.count("truncated record at") == 1 and bad in message and good in message
        assert ("--corrupt_shards=skip" in message) == can_skip


@pytest.mark.slow  # a whole training run or export (~10 s): out of the fast loop
def test_truncated_shard_stops_training_with_its_name(data_dir, tmp_path):
    bad = data_layout.shard_files(data_dir, "train")[1]
    truncate(bad)
    with pytest.raises(shards.CorruptShardError) as error:
        training_run.train_and_evaluate(make_tiny_config(data_dir), str(tmp_path / "run"))
    message = str(error.value)
    assert bad in message and "truncated record at" in message
    assert "--corrupt_shards=skip" in message
    assert data_layout.shard_files(data_dir, "train")[0] not in message  # the good one


@pytest.mark.slow
def test_skip_leaves_bad_shards_out_and_counts_them(data_dir, tmp_path):
    good, bad = data_layout.shard_files(data_dir, "train")
    flip_a_byte(bad)
    config = make_tiny_config(data_dir, corrupt_shards="skip")
    model_dir = str(tmp_path / "run")
    metrics = training_run.train_and_evaluate(config, model_dir)
    assert len(metrics["skipped_shards"]) == 1
    assert metrics["skipped_shards"][0].startswith(f"{bad}: corrupted record at")
    from esmm_tf import input_pipeline

    steps = input_pipeline.make_dataset(
        [good], config.batch_size, shuffle=True, seed=config.seed, deterministic=True
    )
    assert metrics["step"] == sum(1 for _ in steps)  # an epoch of the good shard
    # Evaluation of a damaged test split names the shard, through the entry point's function.
    test_shard = data_layout.shard_files(data_dir, "test")[0]
    truncate(test_shard)
    with pytest.raises(shards.CorruptShardError, match=test_shard):
        evaluate_model_dir(model_dir)


@pytest.mark.slow
def test_corrupted_shard_is_a_clear_error_from_the_command_line(data_dir, tmp_path):
    bad = data_layout.shard_files(data_dir, "test")[1]
    flip_a_byte(bad)
    result = run_module(
        [
            "esmm_tf.train",
            "--flagfile=experiments/esmm.flags",
            f"--data_dir={data_dir}",
            f"--model_dir={tmp_path / 'run'}",
            "--embedding_dim=4",
            "--tower_units=8,4",
            "--epochs=1",
        ],
        300,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: a TFRecord shard is truncated or corrupted") and bad in last
    assert "Traceback" not in result.stderr


def poison_weights(path: str, value: float) -> int:
    """Rewrites a shard with every weight of field 109_14 set to ``value``."""
    records = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    for example in records:
        weights = example.features.feature["w/109_14"].float_list.value
        weights[:] = [value] * len(weights)
    with TFRecordWriter(path) as writer:
        for example in records:
            writer.write(example.SerializeToString())
    return len(records)


@pytest.mark.slow
@pytest.mark.parametrize("value", [3e38])  # finite, but its gradients overflow
def test_absurd_weight_stops_training_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, value):
    config = make_tiny_config(data_dir, checkpoint_every_steps=1)
    model_dir = str(tmp_path / "run")
    per_epoch = training_run.train_and_evaluate(config, model_dir)["step"]  # one clean epoch
    assert poison_weights(data_layout.shard_files(data_dir, "train")[0], value) > 0
    with pytest.raises(training_run.TrainingError, match="not finite") as error:
        training_run.train_and_evaluate(dataclasses.replace(config, epochs=2), model_dir)
    assert "last good checkpoint is kept" in str(error.value)
    _, model, latest = restore_model(model_dir)
    assert latest in str(error.value)
    assert int(latest.rsplit("-", 1)[1]) >= per_epoch
    assert all(np.isfinite(v.numpy()).all() for v in model.variables)


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_deleted_or_emptied_shard_is_found_before_training(data_dir, tmp_path, damage):
    bad = data_layout.shard_files(data_dir, "train")[1]
    if damage == "deleted":
        os.remove(bad)
        expected = f"1 of 2 shards are missing ({os.path.basename(bad)})"
    else:
        open(bad, "wb").close()
        expected = f"{bad} is empty (0 bytes; the conversion wrote "
    with pytest.raises(data_layout.DatasetError) as error:
        data_layout.shard_files(data_dir, "train")
    assert expected in str(error.value)
    model_dir = str(tmp_path / "run")
    with pytest.raises(data_layout.DatasetError, match="re-run data_prep.convert"):
        training_run.train_and_evaluate(make_tiny_config(data_dir), model_dir)
    assert not os.path.exists(os.path.join(model_dir, "checkpoints"))  # no step was taken


def test_a_shard_written_empty_is_not_an_error(data_dir):
    """A partition with no records is a legitimate 0-byte shard (stats.json says so)."""
    path = data_layout.stats_file(data_dir)
    with open(path) as f:
        stats = json.load(f)
    bad = data_layout.shard_files(data_dir, "test")[0]
    open(bad, "wb").close()
    stats["splits"]["test"]["shard_bytes"][0] = 0
    with open(path, "w") as f:
        json.dump(stats, f)
    assert data_layout.shard_files(data_dir, "test")[0] == bad
