"""The command-line entry points, run as the README runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.helpers import USER_ENV, run_module

SMALL = ["--embedding_dim=4", "--tower_units=16,8", "--batch_size=64"]


def run(module: str, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    # The user's environment: the entry points quiet TensorFlow themselves.
    return run_module([module, *args], timeout, env=USER_ENV)


def train(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return run("esmm_tf.train", "--flagfile=experiments/esmm.flags", *SMALL, *args, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory):
    """One `python -m esmm_tf.train` run with an export."""
    root = tmp_path_factory.mktemp("cli")
    model_dir, export_dir = str(root / "model"), str(root / "export")
    result = train(
        f"--data_dir={tiny_data_dir}",
        f"--model_dir={model_dir}",
        f"--export_dir={export_dir}",
        timeout=600,  # under a minute on 2 idle cores; a shared machine can take minutes
    )
    return result, model_dir, export_dir


@pytest.mark.slow
def test_train_exits_0_and_exports(trained):
    result, model_dir, export_dir = trained
    assert result.returncode == 0, result.stderr[-3000:]
    versions = [n for n in os.listdir(export_dir) if not n.startswith(".")]
    assert len(versions) == 1 and versions[0].isdigit()
    assert os.path.isfile(os.path.join(export_dir, versions[0], "saved_model.pb"))
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    # The flagfile chain (esmm.flags includes common.flags) and the overrides.
    assert config["model"] == "esmm"
    assert config["embedding_dim"] == 4
    assert config["tower_units"] == [16, 8]
    assert config["beta_2"] == 0.999
    assert os.path.isabs(config["data_dir"])
    assert os.path.exists(os.path.join(model_dir, "eval_metrics.json"))
    assert "CVR AUC (clicked impressions)" in result.stderr
    for noise in ("absl::InitializeLog", "oneDNN", "cpu_feature_guard"):
        assert noise not in result.stderr


@pytest.mark.slow
def test_evaluate_prints_the_table_and_writes_json(trained, tmp_path):
    train_result, model_dir, _ = trained
    assert train_result.returncode == 0
    output = str(tmp_path / "metrics.json")
    result = run("esmm_tf.evaluate", f"--model_dir={model_dir}", f"--output_json={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CVR AUC (clicked impressions)" in result.stdout
    assert "CTCVR AUC (all impressions)" in result.stdout
    # Progress on stderr, as plain lines (stderr is a pipe here) with an integer rate.
    assert "\x1b" not in result.stderr and "\r" not in result.stderr
    assert re.search(
        r"^evaluate test: [\d,]+/[\d,]+ imp \(100%\)  imp/s: \d+  in ", result.stderr, re.M
    )
    with open(output) as f:
        metrics = json.load(f)
    for key in ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space", "calibration"):
        assert key in metrics
    assert metrics["model"] == "esmm"
    # The restored checkpoint scores exactly as the trained model did.
    with open(os.path.join(model_dir, "eval_metrics.json")) as f:
        at_training = json.load(f)
    for key in ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space"):
        assert metrics[key] == pytest.approx(at_training[key], abs=1e-9), key


def test_missing_data_dir(tmp_path):
    missing = str(tmp_path / "no_such_data")
    result = train(f"--data_dir={missing}", f"--model_dir={tmp_path / 'model'}")
    assert result.returncode == 1
    assert "error:" in result.stderr
    assert missing in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_data_dir_without_a_vocab_file(tiny_data_dir, tmp_path):
    data_dir = str(tmp_path / "data")
    shutil.copytree(tiny_data_dir, data_dir)
    os.remove(os.path.join(data_dir, "vocab", "205.tsv"))
    result = train(f"--data_dir={data_dir}", f"--model_dir={tmp_path / 'model'}")
    assert result.returncode == 1
    assert "205.tsv" in result.stderr
    assert "Traceback" not in result.stderr


def test_flagfile_with_an_unknown_flag(tiny_data_dir, tmp_path):
    flagfile = tmp_path / "bad.flags"
    flagfile.write_text("--flagfile=experiments/common.flags\n--tower_unitz=16,8\n")
    result = run(
        "esmm_tf.train",
        f"--flagfile={flagfile}",
        f"--data_dir={tiny_data_dir}",
        f"--model_dir={tmp_path / 'model'}",
    )
    assert result.returncode == 1
    assert "tower_unitz" in result.stderr
    assert not os.path.exists(tmp_path / "model")


def test_unknown_model_name(tiny_data_dir, tmp_path):
    result = train(
        f"--data_dir={tiny_data_dir}", f"--model_dir={tmp_path / 'model'}", "--model=nonsense"
    )
    assert result.returncode == 1
    assert "nonsense" in result.stderr and "esmm_ns" in result.stderr
    assert "Traceback" not in result.stderr


ENTRY_POINTS = {  # each with its required flags
    "esmm_tf.train": ["--data_dir=D", "--model_dir=M"],
    "esmm_tf.evaluate": ["--model_dir=M"],
    "esmm_tf.predict": ["--data_dir=D", "--output=P"],
    "esmm_tf.export": ["--model_dir=M", "--export_dir=E"],
    "data_prep.convert": ["--raw_dir=R", "--out_dir=O"],
    "data_prep.synthetic": ["--out_dir=O"],
    "data_prep.shuffle_logs": ["--raw_dir=R", "--out_dir=O"],
}


@pytest.mark.slow  # seven interpreters, most of them loading TensorFlow
@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_a_word_that_is_not_a_flag_is_one_error_line(module, tmp_path):
    """``convert`` silently ignored a stray word (e.g. a path given without
    ``--raw_dir=``); every command now refuses it before doing anything."""
    flags = [f"{f[:-1]}{tmp_path / f[-1]}" for f in ENTRY_POINTS[module]]
    result = run(module, *flags, "stray")
    assert result.returncode == 1, result.stderr[-2000:]
    assert (
        result.stderr.strip().splitlines()[-1].startswith("error: unexpected arguments ['stray']")
    ), result.stderr[-2000:]
    assert os.listdir(tmp_path) == []
