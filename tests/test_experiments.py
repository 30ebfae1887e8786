"""Table 2 and Figure 2 commands on tiny data: models train and evaluate
through the real entry point (a paper baseline, ESMM and ESCM²-DR with its
extra tower; every registry model's train step: test_registry.py); the
outputs are written; finished runs are reused."""

from __future__ import annotations

import json

import pytest

from esmm_tf import registry
from tests.helpers import run_ok

TINY = "--embedding_dim=4,--tower_units=16,--batch_size=128,--log_every_steps=5"
TABLE_MODELS = ("base", "esmm", "escm2_dr")


def _run(args, timeout=900):
    return run_ok(args, timeout)


@pytest.mark.slow
def test_table2_then_resume_then_figure2_on_the_same_runs(tiny_data_dir, tmp_path):
    out = tmp_path / "results"
    args = [
        "experiments.table2",
        f"--data_dir={tiny_data_dir}",
        "--runs=1",
        f"--models={','.join(TABLE_MODELS)}",
        f"--out_dir={out}",
        f"--extra_flags={TINY}",
    ]
    _run(args)
    table = (out / "table2.md").read_text()
    result = json.loads((out / "table2.json").read_text())
    assert list(result["summaries"]) == list(TABLE_MODELS)
    for model in TABLE_MODELS:
        assert f"| {registry.get(model).display} |" in table
        s = result["summaries"][model]
        for key in ("cvr_auc", "ctcvr_auc", "ctr_auc", "cvr_auc_entire_space"):
            assert 0 <= s[key][0] <= 100
        run_dir = out / "runs" / model / "rate1.0" / "seed0"
        assert json.loads((run_dir / "config.json").read_text())["model"] == model
        assert (run_dir / "checkpoints").is_dir()
    assert "68.56 ± 0.37" in table  # the paper's ESMM CVR AUC beside ours
    assert "| ESMM > BASE | CVR AUC |" in table  # the claims, with one seed: no interval
    # A second call reuses every finished run (no training: fast, same numbers).
    again = _run(args, timeout=120)
    assert json.loads((out / "table2.json").read_text())["summaries"] == result["summaries"]
    assert "seed 0:" not in again.stderr  # train_once logs only runs it trained
    # Another machine (no run directories) with the same data and the archive
    # of the first: nothing trains, the same table.
    archive = tmp_path / "archive"
    _run([*args, f"--archive_dir={archive}"], timeout=120)  # archives the finished runs
    assert len(list(archive.glob("*/rate1.0/seed0.json"))) == len(TABLE_MODELS)
    elsewhere = [*args[:-2], f"--out_dir={tmp_path / 'elsewhere'}", args[-1]]
    fresh = _run([*elsewhere, f"--archive_dir={archive}"], timeout=120)
    assert "seed 0:" not in fresh.stderr and not (tmp_path / "elsewhere" / "runs").exists()
    reread = json.loads((tmp_path / "elsewhere" / "table2.json").read_text())
    assert reread["summaries"] == result["summaries"] and reread["runs"] == result["runs"]

    # Figure 2 on the same out_dir: its points at rate 1 are Table 2's runs.
    figure = _run(
        [
            "experiments.figure2",
            f"--data_dir={tiny_data_dir}",
            "--rates=0.5,1.0",
            "--models=esmm,base",
            f"--out_dir={out}",
            f"--extra_flags={TINY}",
        ]
    )
    assert figure.stderr.count("seed 0:") == 2  # only the two runs at rate 0.5 trained
    png = (out / "figure2.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    result = json.loads((out / "figure2.json").read_text())
    assert result["rates"] == [0.5, 1.0] and result["equal_steps"]
    for model in ("esmm", "base"):
        for rate in ("0.5", "1.0"):
            assert 0 <= result["points"][model][rate]["cvr_auc"][0] <= 100
    half = json.loads((out / "runs" / "esmm" / "rate0.5" / "seed0" / "config.json").read_text())
    assert half["train_fraction"] == 0.5
    assert half["epochs"] == 2  # equal steps: a half-size training set, twice over
    assert result["early_stopping"] is None
    assert len(result["claims"]) == 2 * 2  # ESMM minus BASE, 2 metrics x 2 rates (one seed)
    report = (out / "figure2.md").read_text()
    assert "| ESMM > BASE | CVR AUC |" in report and "n/a (one seed)" in report

    # The early-stopping protocol: its own runs (rate<r>-es), a validation
    # split, ten evaluations over the budget, the best checkpoint tested.
    _run(
        [
            "experiments.figure2",
            f"--data_dir={tiny_data_dir}",
            "--rates=0.5",
            "--models=esmm",
            f"--out_dir={out}",
            "--early_stopping",
            "--validation_fraction=0.5",
            "--metric=ctr_auc",  # the tiny data has ~7 train conversions, its clicks rank
            "--patience=2",
            f"--extra_flags={TINY}",
        ]
    )
    result = json.loads((out / "figure2.json").read_text())
    budget = result["early_stopping"]["budget_steps"]
    run = out / "runs" / "esmm" / "rate0.5-es" / "seed0"
    config = json.loads((run / "config.json").read_text())
    assert config["validation_fraction"] == 0.5 and config["early_stopping_patience"] == 2
    assert config["early_stopping_metric"] == "ctr_auc"
    assert config["epochs"] == 2 and config["eval_every_steps"] == max(1, budget // 10)
    (point,) = result["steps"]["esmm"]["0.5"]
    metrics = json.loads((run / "eval_metrics.json").read_text())
    assert point["best_step"] == metrics["best_step"] <= point["step"]
    assert not (run / "train_sample").exists()  # the sample is removed when training ends
    assert "--early_stopping" in result["command"]


def test_rate_flags():
    from experiments.runner import rate_flags  # figure2's flags would clash with table2's

    assert rate_flags(0.1, True) == [
        "--train_fraction=0.1",
        "--epochs=10",
        "--eval_every_steps=1000000000",
    ]
    assert rate_flags(1.0, True) == []  # Table 2's command: its runs are these points
    assert rate_flags(0.1, False) == ["--train_fraction=0.1", "--epochs=1"]
    es = dict(validation_fraction=0.1, metric="ctcvr_auc", patience=3, budget_steps=4600)
    assert rate_flags(0.05, True, es) == [
        "--train_fraction=0.05",
        "--epochs=20",
        "--validation_fraction=0.1",
        "--early_stopping_metric=ctcvr_auc",
        "--early_stopping_patience=3",
        "--eval_every_steps=460",
    ]
