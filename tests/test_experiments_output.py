"""experiments.table2/figure2 write a user's runs to runs/experiments/; the
committed reference results only with --update_reference."""

from __future__ import annotations

import os
import subprocess

import pytest

from experiments import runner
from tests.helpers import run_module


def test_default_is_not_the_committed_results():
    assert runner.output_dir(None, False) == runner.DEFAULT_OUT_DIR
    assert not runner.DEFAULT_OUT_DIR.startswith(runner.REFERENCE_DIR)
    assert runner.output_dir("/tmp/mine", False) == "/tmp/mine"
    assert runner.output_dir(None, True) == runner.REFERENCE_DIR


def test_reference_dir_needs_the_flag():
    relative = os.path.relpath(runner.REFERENCE_DIR)
    with pytest.raises(ValueError, match="--update_reference"):
        runner.output_dir(relative, False)
    assert runner.output_dir(relative, True) == runner.REFERENCE_DIR
    with pytest.raises(ValueError, match="drop --out_dir"):
        runner.output_dir("/tmp/mine", True)


def test_default_output_is_ignored_by_git():
    rel = os.path.relpath(os.path.join(runner.DEFAULT_OUT_DIR, "table2.md"), runner.ROOT)
    result = subprocess.run(
        ["git", "check-ignore", "-q", rel], cwd=runner.ROOT, capture_output=True
    )
    assert result.returncode == 0, f"{rel} is not git-ignored"


@pytest.mark.parametrize("module", ["experiments.table2", "experiments.figure2"])
def test_entry_point_refuses_the_reference_dir_without_the_flag(module, tmp_path):
    before = {
        n: os.path.getmtime(os.path.join(runner.REFERENCE_DIR, n))
        for n in os.listdir(runner.REFERENCE_DIR)
    }
    result = run_module(
        [module, f"--data_dir={tmp_path}", "--out_dir=experiments/results"], timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: --out_dir=experiments/results holds the")
    after = {
        n: os.path.getmtime(os.path.join(runner.REFERENCE_DIR, n))
        for n in os.listdir(runner.REFERENCE_DIR)
    }
    assert after == before


def test_paired_difference_interval():
    """Mean of the per-seed differences and its 95 % t interval (t = 2.776 at
    4 degrees of freedom), computed by hand."""
    mean, low, high = runner.paired_difference([1, 2, 3, 4, 5], [0, 0, 1, 1, 2])
    diffs = [1, 2, 2, 3, 3]
    sd = (sum((d - 2.2) ** 2 for d in diffs) / 4) ** 0.5
    assert mean == pytest.approx(2.2)
    assert (low, high) == pytest.approx((2.2 - 2.776 * sd / 5**0.5, 2.2 + 2.776 * sd / 5**0.5))
    assert runner.paired_difference([1.0], [0.5])[0] == 0.5  # one seed: no interval
    assert all(v != v for v in runner.paired_difference([1.0], [0.5])[1:])


def test_table2_claims_hold_only_when_the_interval_excludes_zero():
    from experiments import table2

    def runs(cvr: list[float]) -> list[dict]:
        return [{"cvr_auc": v, "ctcvr_auc": v} for v in cvr]

    result = table2.claims(
        {
            "base": runs([0.60, 0.61, 0.60]),
            "esmm_ns": runs([0.60, 0.62, 0.58]),  # noisy: no clear difference to BASE
            "esmm": runs([0.65, 0.66, 0.65]),
            "escm2_ipw": runs([0.64, 0.65, 0.64]),  # below ESMM
        }
    )
    holds = {(r["claim"], r["metric"]): r["holds"] for r in result}
    assert holds[("ESMM > BASE", "cvr_auc")] == "yes"
    assert holds[("ESMM > ESMM-NS", "ctcvr_auc")] == "yes"
    assert holds[("ESCM²-IPS > ESMM", "cvr_auc")] == "no"
    assert holds[("ESMM-NS > BASE (the paper's order)", "cvr_auc")] == "unresolved"
    assert len(result) == 2 * 2 + 1 + 1  # ESMM vs each paper row x 2 metrics, ESCM², order


def test_figure2_claims_esmm_above_every_line_at_every_rate():
    """ESMM minus each other line per rate and metric, paired by seed; the
    markdown has a column per rate and counts what holds."""
    from experiments import figure2_report as figure2

    def runs(values: list[float]) -> list[dict]:
        return [{"cvr_auc": v, "ctcvr_auc": v + 0.1} for v in values]

    per_seed = {
        "esmm": {"0.1": runs([0.60, 0.61, 0.62]), "1.0": runs([0.66, 0.67, 0.66])},
        "base": {"0.1": runs([0.50, 0.52, 0.51]), "1.0": runs([0.66, 0.66, 0.67])},
        "aman": {"0.1": runs([0.70, 0.71, 0.72]), "1.0": runs([0.60, 0.62, 0.61])},
    }
    rows = figure2.claims(per_seed, [0.1, 1.0])
    assert len(rows) == 2 * 2 * 2  # (base, aman) x 2 metrics x 2 rates
    holds = {(r["claim"], r["metric"], r["rate"]): r["holds"] for r in rows}
    assert holds[("ESMM > BASE", "cvr_auc", 0.1)] == "yes"
    assert holds[("ESMM > BASE", "ctcvr_auc", 1.0)] == "unresolved"
    assert holds[("ESMM > AMAN", "cvr_auc", 0.1)] == "no"
    assert holds[("ESMM > AMAN", "ctcvr_auc", 1.0)] == "yes"
    (row,) = [
        r for r in rows if (r["claim"], r["metric"], r["rate"]) == ("ESMM > BASE", "cvr_auc", 0.1)
    ]
    assert row["mean"] == pytest.approx(10.0)  # AUC points: (60-50 + 61-52 + 62-51) / 3
    assert figure2.claims({k: v for k, v in per_seed.items() if k != "esmm"}, [0.1, 1.0]) == []

    points = {
        model: {
            rate: {m: (100 * seeds[0][m], 0.0) for m in figure2.METRICS}
            for rate, seeds in by.items()
        }
        for model, by in per_seed.items()
    }
    text = figure2.to_markdown(
        dict(
            data_dir="DATA",
            rates=[0.1, 1.0],
            points=points,
            runs=per_seed,
            claims=rows,
            command="CMD",
        )
    )
    assert "| model | 10% | 100% |" in text and "| AMAN | 70.00 ± 0.00 | 60.00 ± 0.00 |" in text
    assert "| ESMM > BASE | CVR AUC | +10.00 [" in text
    assert (
        "Of 8 (model, metric, rate) claims: 4 hold, 2 are contradicted, 2 are unresolved." in text
    )


def _finished_run(tmp_path, metrics: dict):
    """A dataset with a stats.json and a run directory that holds its final
    metrics (what a finished training leaves)."""
    import json

    from esmm_tf import training_run

    data = tmp_path / "data"
    data.mkdir()
    (data / "stats.json").write_text('{"splits": {"train": {"impressions": 10}}}\n')
    run = tmp_path / "run"
    run.mkdir()
    (run / training_run.EVAL_FILE).write_text(json.dumps(metrics))
    return str(data), str(run)


def test_archive_keeps_a_finished_run_and_a_fresh_machine_reuses_it(tmp_path, monkeypatch):
    """A run's record goes to the archive when it is first read; with its run
    directory gone (a fresh machine) the record is returned instead of
    training again, and it summarises like the run's own metrics."""
    import shutil

    metrics = {
        "ctr_auc": 0.76,
        "cvr_auc": 0.65,
        "ctcvr_auc": 0.85,
        "cvr_auc_entire_space": 0.64,
        "calibration": {"cvr": {"ground_truth": {"ratio": 1.1, "mean_true": 0.03}}},
        "step": 500,
        "best_step": 300,
        "stopped_early": True,
        "loss": 0.1,
    }
    data, run = _finished_run(tmp_path, metrics)
    archive = runner.archive_path(str(tmp_path / "archive"), "esmm", 0.1, 2, runner.ES_SUFFIX)
    assert archive.endswith(os.path.join("esmm", "rate0.1-es", "seed2.json"))
    flags = ["--train_fraction=0.1", "--epochs=10"]
    assert runner.train_once("esmm", 2, data, run, flags, archive) == metrics
    shutil.rmtree(run)

    def no_training(*args, **kwargs):
        raise AssertionError("trained a run the archive holds")

    monkeypatch.setattr(runner, "train_process", no_training)
    record = runner.train_once("esmm", 2, data, run, flags, archive)
    assert record["data"] == runner.data_id(data) and record["flags"] == flags
    assert {k: record[k] for k in runner.ARCHIVE_STEP_KEYS} == {
        "step": 500,
        "best_step": 300,
        "stopped_early": True,
    }
    assert runner.per_run(record) == runner.per_run(metrics)
    assert runner.per_run(record)["cvr_calibration_ratio"] == 1.1
    assert runner.summarise([record]) == runner.summarise([metrics])


def test_prune_keeps_a_finished_runs_metrics_and_drops_its_checkpoints(tmp_path, monkeypatch):
    """--prune: disk for many runs stays bounded; the run still reads as finished."""
    from esmm_tf import run_dir

    metrics = {"ctr_auc": 0.7, "cvr_auc": 0.6, "ctcvr_auc": 0.8}
    data, run = _finished_run(tmp_path, metrics)
    for path in (run_dir.checkpoint_dir(run), run_dir.best_dir(run), run_dir.sample_dir(run)):
        os.makedirs(path)
        with open(os.path.join(path, "state"), "wb") as f:
            f.write(b"x" * 1000)
    (tmp_path / "run" / "config.json").write_text("{}")
    monkeypatch.setattr(runner, "train_process", lambda *a, **k: 0.0)  # "trains" nothing
    assert runner.train_once("base", 0, data, run) == metrics  # no prune: all kept
    assert os.path.isdir(run_dir.checkpoint_dir(run))
    assert runner.train_once("base", 0, data, run, prune=True) == metrics
    assert sorted(os.listdir(run)) == ["config.json", "eval_metrics.json"]
    assert runner.train_once("base", 0, data, run, prune=True) == metrics  # still reused
    assert run_dir.prune(run) == 0


def test_archive_refuses_a_record_of_other_data_or_flags(tmp_path, monkeypatch):
    metrics = {"ctr_auc": 0.7, "cvr_auc": 0.6, "ctcvr_auc": 0.8}
    data, run = _finished_run(tmp_path, metrics)
    archive = runner.archive_path(str(tmp_path / "archive"), "base", 1.0, 0)
    runner.train_once("base", 0, data, run, [], archive)
    os.remove(os.path.join(run, "eval_metrics.json"))
    monkeypatch.setattr(runner, "train_process", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(
        RuntimeError, match="with flags \\[\\], not data .* with \\['--epochs=2'\\]"
    ):
        runner.train_once("base", 0, data, run, ["--epochs=2"], archive)
    (tmp_path / "data" / "stats.json").write_text('{"splits": {"train": {"impressions": 11}}}\n')
    with pytest.raises(RuntimeError, match="was measured on data"):
        runner.train_once("base", 0, data, run, [], archive)
    with open(archive, "w") as f:
        f.write('{"cvr_auc": 0.6, "da')  # a record cut short (not by us: writes are atomic)
    with pytest.raises(RuntimeError, match="seed0.json: not a readable run record"):
        runner.train_once("base", 0, data, run, [], archive)


def test_data_id_ignores_the_raw_files_mtimes_only(tmp_path):
    """The same raw logs regenerated on another machine have other mtimes and
    the same id; another size or count is other data."""
    import json

    def data_id(size: int, mtime: int, clicks: int) -> str:
        stats = {
            "fingerprint": {"files": {"sample_skeleton_train.csv": [size, mtime]}},
            "splits": {"train": {"clicks": clicks}},
        }
        (tmp_path / "stats.json").write_text(json.dumps(stats))
        return runner.data_id(str(tmp_path))

    assert data_id(100, 1, 5) == data_id(100, 2, 5)
    assert data_id(101, 1, 5) != data_id(100, 1, 5)
    assert data_id(100, 1, 6) != data_id(100, 1, 5)


def test_figure2_rate_1_points_are_table2_runs_in_an_archive(tmp_path, monkeypatch):
    """Figure 2's points at rate 1.0 (without early stopping) run Table 2's
    command, so an archived Table 2 run is reused as the point, not refused
    for other flags."""
    metrics = {"ctr_auc": 0.7, "cvr_auc": 0.6, "ctcvr_auc": 0.8}
    data, run = _finished_run(tmp_path, metrics)
    archive = runner.archive_path(str(tmp_path / "archive"), "esmm", 1.0, 0)
    extra = ["--embedding_dim=8"]
    runner.train_once("esmm", 0, data, run, extra, archive)  # Table 2's call
    os.remove(os.path.join(run, "eval_metrics.json"))
    monkeypatch.setattr(runner, "train_process", lambda *a, **k: pytest.fail("trained"))
    point = runner.train_once(
        "esmm", 0, data, run, [*runner.rate_flags(1.0, True), *extra], archive
    )
    assert runner.per_run(point) == runner.per_run(metrics)


@pytest.mark.parametrize("module", ["experiments.table2", "experiments.figure2"])
def test_entry_points_report_a_bad_archive_in_one_line(module, tmp_path):
    """A mismatched archive record and an archive path that cannot be a
    directory: one ``error:`` line naming it, exit status 1, no traceback."""
    import json

    data, run = _finished_run(tmp_path, {"ctr_auc": 0.7, "cvr_auc": 0.6, "ctcvr_auc": 0.8})
    out = tmp_path / "out"
    finished = out / "runs" / "base" / "rate1.0" / "seed0"
    finished.mkdir(parents=True)
    os.replace(os.path.join(run, "eval_metrics.json"), finished / "eval_metrics.json")
    args = [module, f"--data_dir={data}", "--models=base", "--runs=1", f"--out_dir={out}"]
    if module == "experiments.figure2":
        args += ["--rates=1.0", "--noequal_steps"]
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_module([*args, f"--archive_dir={blocker}"], timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "a_file" in line

    record = tmp_path / "archive" / "base" / "rate1.0" / "seed0.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"cvr_auc": 0.5, "data": "other", "flags": []}))
    (finished / "eval_metrics.json").unlink()  # the run directory is gone: the record counts
    result = run_module([*args, f"--archive_dir={tmp_path / 'archive'}"], timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "seed0.json was measured on data other" in line

    with open(os.path.join(data, "stats.json"), "w") as f:
        f.write('{"splits": ')  # a damaged stats.json: the data's id cannot be computed
    result = run_module([*args, f"--archive_dir={tmp_path / 'archive'}"], timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "stats.json: not valid JSON" in line


def _dataset(tmp_path) -> str:
    """A dataset directory whose stats.json has a train split's counts (what
    the figure's early-stopping budget reads), and no records."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "stats.json").write_text('{"splits": {"train": {"impressions": 1000, "records": 100}}}')
    return str(data)


@pytest.mark.parametrize(
    "module, args, expected",
    [
        ("experiments.table2", ["--runs=0"], "--runs=0"),
        ("experiments.table2", ["--models="], "--models is empty"),
        ("experiments.table2", ["--models=esmm,esmn"], "unknown model 'esmn'"),
        ("experiments.table2", ["--models=esmm_tuned"], "unknown model 'esmm_tuned'"),
        ("experiments.figure2", ["--runs=-1"], "--runs=-1"),
        ("experiments.figure2", ["--rates=0.1,nan"], "--rates: nan is not a fraction"),
        (
            "experiments.figure2",
            ["--early_stopping", "--validation_fraction=2"],
            "--validation_fraction=2.0",
        ),
        (
            "experiments.figure2",
            ["--early_stopping", "--data_dir=/nonexistent"],
            "/nonexistent/stats.json not found",
        ),
        (
            "experiments.figure2",
            ["--early_stopping", "--extra_flags=--batch_size=abc"],
            "--batch_size=abc: the batch size is not an integer",
        ),
    ],
)
def test_bad_flags_end_the_command_before_it_trains_or_writes(module, args, expected, tmp_path):
    """Runs, models, rates and the early-stopping budget are checked first:
    one error line, exit status 1, nothing trained, the results already in
    --out_dir untouched (--runs=0 used to write a table of NaN over them, a bad
    model name to fail after the models before it trained)."""
    out = tmp_path / "out"
    out.mkdir()
    name = "table2.json" if module == "experiments.table2" else "figure2.json"
    (out / name).write_text('{"good": true}\n')
    result = run_module(
        [module, f"--data_dir={_dataset(tmp_path)}", f"--out_dir={out}", "--models=esmm", *args],
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert expected in line
    assert sorted(os.listdir(out)) == [name] and (out / name).read_text() == '{"good": true}\n'


def test_models_runs_and_rates_are_checked():
    for models in ([], ["esmm", "esmn"], ["esmm_tuned"], ["esmm", "base", "esmm"], [""]):
        with pytest.raises(ValueError, match="--models"):
            runner.check_models(models)
    runner.check_models(["esmm", "base"])
    for runs in (0, -1):
        with pytest.raises(ValueError, match=f"--runs={runs}"):
            runner.check_runs(runs)
    runner.check_runs(1)
    for rates, problem in (
        ([], "empty"),
        (["bad"], "'bad' is not a number"),
        (["0"], "not a fraction"),
        (["nan"], "not a fraction"),
        (["inf"], "not a fraction"),
        (["1.5"], "not a fraction"),
        (["-0.1"], "not a fraction"),
        (["0.1", "1", "1.0"], "1.0 is given more than once"),
    ):
        with pytest.raises(ValueError, match=problem):
            runner.parse_rates(rates)
    assert runner.parse_rates(["0.01", "1"]) == [0.01, 1.0]


def test_budget_reports_a_bad_batch_size_or_dataset(tmp_path):
    from esmm_tf import data_layout

    data = _dataset(tmp_path)
    with pytest.raises(ValueError, match="--batch_size=abc"):
        runner.budget_steps(data, 0.1, ["--batch_size=abc"])
    with pytest.raises(ValueError, match="--batch_size must be positive"):
        runner.budget_steps(data, 0.1, ["--batch_size=0"])
    with pytest.raises(data_layout.DatasetError, match="not found"):
        runner.budget_steps(str(tmp_path / "none"), 0.1)
    assert runner.budget_steps(data, 0.1, ["--batch_size=10"]) >= 1


@pytest.mark.parametrize(
    "change, problem",
    [
        (dict(cvr_auc=None), "no cvr_auc"),
        (dict(cvr_auc="0.6"), "cvr_auc is '0.6', not a number"),
        (dict(cvr_auc=60), "cvr_auc is 60, not an AUC in \\[0, 1\\]"),
        (dict(ctr_auc=True), "ctr_auc is True, not a number"),
        (dict(cvr_auc_entire_space=-0.1), "cvr_auc_entire_space is -0.1"),
        (dict(cvr_calibration_ratio=float("inf")), "cvr_calibration_ratio is inf"),
        (dict(cvr_calibration_ratio="x"), "cvr_calibration_ratio is 'x'"),
    ],
)
def test_a_damaged_archive_record_is_an_error_naming_it(change, problem, tmp_path, monkeypatch):
    """A record of the right data and flags whose numbers are missing, not
    numbers or not AUCs is one RuntimeError naming it (was a KeyError or
    TypeError traceback, or a table of 6000 %)."""
    import json

    data, run = _finished_run(tmp_path, {"ctr_auc": 0.7, "cvr_auc": 0.6, "ctcvr_auc": 0.8})
    os.remove(os.path.join(run, "eval_metrics.json"))
    archive = runner.archive_path(str(tmp_path / "archive"), "base", 1.0, 0)
    record = {"ctr_auc": 0.7, "cvr_auc": 0.6, "ctcvr_auc": 0.8, **change}
    record = {k: v for k, v in record.items() if v is not None}  # None: the key is missing
    record.update(data=runner.data_id(data), flags=[])
    os.makedirs(os.path.dirname(archive))
    with open(archive, "w") as f:
        json.dump(record, f)
    monkeypatch.setattr(runner, "train_process", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(RuntimeError, match=f"seed0.json: not a run record \\({problem}"):
        runner.train_once("base", 0, data, run, [], archive)


def test_nan_aucs_are_kept_and_left_out_of_the_summary(tmp_path):
    """An AUC of a split with one class is NaN (esmm_tf.metrics): a valid
    record, which the mean leaves out."""
    nan = float("nan")
    metrics = {"ctr_auc": 0.7, "cvr_auc": nan, "ctcvr_auc": 0.8, "cvr_calibration_ratio": nan}
    assert runner.metrics_problem(metrics) is None
    data, run = _finished_run(tmp_path, metrics)
    assert runner.summarise([runner.train_once("base", 0, data, run)])["ctr_auc"] == (70.0, 0.0)


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"ctr_auc": 0.7, "cvr_a', "not readable JSON"),  # cut short
        ('{"ctr_auc": 0.7, "ctcvr_auc": 0.8}', "no cvr_auc"),
        ('{"ctr_auc": 0.7, "cvr_auc": 0.6, "ctcvr_auc": 0.8, "calibration": []}', "calibration"),
    ],
)
def test_a_damaged_eval_metrics_file_is_an_error_naming_it(text, problem, tmp_path, monkeypatch):
    data, run = _finished_run(tmp_path, {})
    with open(os.path.join(run, "eval_metrics.json"), "w") as f:
        f.write(text)
    monkeypatch.setattr(runner, "train_process", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(RuntimeError) as error:
        runner.train_once("base", 0, data, run)
    message = str(error.value)
    assert message.startswith(os.path.join(run, "eval_metrics.json") + ": ")
    assert problem in message and "delete it" in message and "\n" not in message


def test_table2_refuses_an_archived_auc_of_60_before_writing(tmp_path):
    """An archived record with an AUC in % (60, not 0.6) used to give a table
    of 6000 % and exit status 0."""
    import json

    data, _ = _finished_run(tmp_path, {})
    out = tmp_path / "out"
    out.mkdir()
    (out / "table2.json").write_text('{"good": true}\n')
    record = tmp_path / "archive" / "base" / "rate1.0" / "seed0.json"
    record.parent.mkdir(parents=True)
    values = {"ctr_auc": 0.7, "cvr_auc": 60, "ctcvr_auc": 0.8}
    record.write_text(json.dumps({**values, "data": runner.data_id(data), "flags": []}))
    result = run_module(
        [
            "experiments.table2",
            f"--data_dir={data}",
            "--models=base",
            "--runs=1",
            f"--out_dir={out}",
            f"--archive_dir={tmp_path / 'archive'}",
        ],
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "seed0.json: not a run record (cvr_auc is 60, not an AUC in [0, 1])" in line
    assert (out / "table2.json").read_text() == '{"good": true}\n'
