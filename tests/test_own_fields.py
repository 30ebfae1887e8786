"""README "Your own logs": a non-Ali-CCP field set, end to end through the real
entry points (convert -> train -> evaluate -> export), then a serving request
with the new fields."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import tensorflow as tf

from esmm_tf import features as F
from tests.helpers import run_ok
from tests.own_fields import OWN_FIELDS, write_raw_logs

SMALL = ["--embedding_dim=4", "--tower_units=16,8", "--batch_size=64"]


def run(module: str, *flags: str) -> subprocess.CompletedProcess:
    return run_ok(["tests.own_fields", module, *flags], 300)


def test_hash_id_is_a_stable_non_negative_int64():
    assert F.hash_id("user-1") == F.hash_id("user-1") != F.hash_id("user-2")
    assert 0 <= F.hash_id("") < 2**63
    assert F.hash_id("sku:ß") == 3571863296079166234  # the same in every process


@pytest.mark.slow
def test_own_fields_convert_train_evaluate_export(tmp_path):
    raw, data = str(tmp_path / "raw"), str(tmp_path / "data")
    run_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "export")
    write_raw_logs(raw)
    run(
        "data_prep.convert",
        f"--raw_dir={raw}",
        f"--out_dir={data}",
        "--min_count=1",
        "--num_shards=2",
        "--workers=1",
    )
    assert sorted(os.listdir(os.path.join(data, "vocab"))) == sorted(
        f"{f.id}.tsv" for f in OWN_FIELDS
    )
    run(
        "esmm_tf.train",
        "--flagfile=experiments/esmm.flags",
        *SMALL,
        "--epochs=2",
        "--learning_rate=0.01",
        f"--data_dir={data}",
        f"--model_dir={run_dir}",
    )
    metrics_json = str(tmp_path / "test.json")
    run("esmm_tf.evaluate", f"--model_dir={run_dir}", f"--output_json={metrics_json}")
    with open(metrics_json) as f:
        metrics = json.load(f)
    assert metrics["impressions"] == 1600
    assert metrics["ctr_auc"] > 0.65  # it learned from the new fields (slot, tags)
    exported = run("esmm_tf.export", f"--model_dir={run_dir}", f"--export_dir={export_dir}")
    version = exported.stdout.strip().split()[-1]

    # One impression, as a serving client builds it: ids/<field> (+ w/<field>).
    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "ids/user": ints([F.hash_id("user-3")]),
                "ids/age": ints([0]),
                "ids/recent": ints([5, 17]),
                "w/recent": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0, 0.5])),
                "ids/item": ints([42]),
                "ids/tags": ints([1002, 2000]),
                "ids/slot": ints([0]),
            }
        )
    )
    serve = tf.saved_model.load(version).signatures["serving_default"]
    out = serve(examples=tf.constant([example.SerializeToString()]))
    ctr, cvr, ctcvr = (float(out[k][0]) for k in F.OUTPUT_KEYS)
    assert 0 < ctr < 1 and 0 < cvr < 1
    assert ctcvr == pytest.approx(ctr * cvr, rel=1e-5)
