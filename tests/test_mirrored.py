"""--strategy=mirrored: one host, several devices (two logical CPUs here)."""

from __future__ import annotations

import json
import os

import pytest

from esmm_tf import config as config_lib
from tests.helpers import run_ok


def test_mirrored_is_a_strategy_choice(tiny_data_dir):
    assert "mirrored" in config_lib.STRATEGIES
    assert config_lib.Config(data_dir=tiny_data_dir, strategy="mirrored").strategy == "mirrored"


@pytest.mark.slow
def test_one_step_on_two_replicas_equals_one_device_on_their_union(tiny_data_dir):
    result = run_ok(["tests.mirrored_driver", tiny_data_dir], 300)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    # Each replica got its own records (4 of the global 8), with impressions.
    assert len(report["replica_impressions"]) == 2 and min(report["replica_impressions"]) > 0
    assert report["outputs_rows"] == sum(report["replica_impressions"])
    # The replicas' losses add up to the mean over the union; the update is the
    # one device's on that union, and both copies of every variable agree.
    assert report["loss"] == pytest.approx(report["one_device_loss"], rel=1e-5)
    assert report["copies_agree"]
    assert report["max_update"] > 1e-4
    assert report["max_diff_vs_one_device"] < 1e-6


@pytest.mark.slow
def test_a_training_run_under_mirrored_trains_evaluates_and_exports(tiny_data_dir, tmp_path):
    """The whole TrainingRun (per-replica steps, evaluation, checkpoints,
    export) on two logical CPUs."""
    model_dir = str(tmp_path / "run")
    result = run_ok(["tests.mirrored_run_driver", tiny_data_dir, model_dir], 600)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["step"] > 10
    assert 0 <= report["ctr_auc"] <= 1
    assert os.path.exists(os.path.join(report["export_path"], "saved_model.pb"))
    assert os.path.exists(os.path.join(model_dir, "checkpoints"))
