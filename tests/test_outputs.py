"""What the commands write (predict's --output, evaluate's --output_json,
export's and train's directories) never replaces what a user already has by
mistake, and is checked before any work."""

from __future__ import annotations

import json
import os

import pytest

from esmm_tf.predict import check_output


@pytest.fixture
def dirs(tmp_path):
    data, run, export = (tmp_path / name for name in ("data", "run", "export"))
    for d in (data / "test", run, export):
        d.mkdir(parents=True)
    shard = data / "test" / "part-00000-of-00001.tfrecord"
    shard.write_bytes(b"records")
    return data, run, export


@pytest.mark.parametrize("where", ["data", "run", "export"])
def test_a_path_inside_the_data_the_run_or_the_export_is_refused(dirs, where):
    data, run, export = dirs
    inside = {"data": data / "test" / "part-00000-of-00001.tfrecord", "run": run / "x.csv"}
    inside["export"] = export / "new" / "p.csv"
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"is inside --(data_dir|model_dir|saved_model)="):
            check_output(str(inside[where]), str(data), str(run), str(export), overwrite)
    assert (data / "test" / "part-00000-of-00001.tfrecord").read_bytes() == b"records"


def test_an_existing_file_needs_overwrite_and_must_be_predictions(dirs, tmp_path):
    data, run, _ = dirs
    out = tmp_path / "day.csv"
    check_output(str(out), str(data), str(run))  # new: fine
    out.write_text("sample_id,ctr,cvr,ctcvr\n1,0.1,0.2,0.02\n")
    with pytest.raises(ValueError, match=r"day.csv exists; pass --overwrite"):
        check_output(str(out), str(data), str(run))
    check_output(str(out), str(data), str(run), overwrite=True)  # a predictions file
    other = tmp_path / "notes.csv"
    other.write_text("user,revenue\n")
    with pytest.raises(ValueError, match=r"notes.csv exists and is not a predictions file"):
        check_output(str(other), str(data), str(run), overwrite=True)
    with pytest.raises(ValueError, match=r"is a directory; give a file path"):
        check_output(str(tmp_path), str(data), str(run), overwrite=True)


def test_the_header_is_the_files_own():
    from esmm_tf import predict, scoring

    assert ",".join(scoring.PREDICTION_COLUMNS) == predict._HEADER


def _run_dir(tmp_path, data):
    run = tmp_path / "trained"
    run.mkdir()
    config = {"model": "esmm", "data_dir": str(data), "embedding_dim": 4, "tower_units": [8]}
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_evaluate_output_json_never_replaces_a_run_or_data_file(dirs, tmp_path):
    """--output_json=RUN/config.json or DATA/stats.json used to exit 0 and
    leave the run or the data unusable; a previous metrics file is replaced
    (a rerun updates it), anything else is refused, all before evaluating."""
    from esmm_tf.evaluate import check_output_json

    data, _, _ = dirs
    run = _run_dir(tmp_path, data)
    (data / "stats.json").write_text('{"splits": {}}')
    (run / "eval_metrics.json").write_text('{"ctcvr_auc": 0.8, "checkpoint": "c", "model": "m"}')
    for path in (run / "config.json", run / "eval_metrics.json", data / "stats.json"):
        with pytest.raises(ValueError, match=r"is a file of --(model_dir|data_dir)=.*not one this"):
            check_output_json(str(path), str(run))  # data_dir: the run's own
    check_output_json(str(run / "test.json"), str(run))  # a new file in the run: fine
    (run / "test.json").write_text('{"ctcvr_auc": 0.8, "checkpoint": "c", "model": "m"}')
    check_output_json(str(run / "test.json"), str(run))  # and again: the README's rerun
    for bad in (f"{tmp_path}/new/", f"{run}/config.json/m.json"):
        with pytest.raises(ValueError, match=r"a directory|is a file, not a directory"):
            check_output_json(bad, str(run))
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "stats.json").write_text("{}")
    with pytest.raises(ValueError, match=r"of --data_dir="):  # the data it is told to score
        check_output_json(str(other / "stats.json"), str(run), str(other))
    metrics = tmp_path / "metrics.json"
    check_output_json(str(metrics), str(run))  # new: fine
    metrics.write_text(json.dumps({"ctcvr_auc": 0.8, "checkpoint": "c", "model": "esmm"}))
    check_output_json(str(metrics), str(run))  # evaluate's own output: replaced
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    with pytest.raises(ValueError, match=r"notes.json exists and is not metrics written by"):
        check_output_json(str(notes), str(run))
    with pytest.raises(ValueError, match=r"is a directory"):
        check_output_json(str(tmp_path), str(run), str(other))


def test_damaged_run_config_and_stats_are_named(dirs, tmp_path):
    from esmm_tf import config, data_layout

    data, _, _ = dirs
    run = _run_dir(tmp_path, data)
    (run / "config.json").write_text('{"model": "esmm", "data_dir": "x", "embed')
    with pytest.raises(ValueError, match=r"trained/config.json: not valid JSON"):
        config.load(str(run))
    (run / "config.json").write_text('{"ctcvr_auc": 0.8, "data_dir": "x"}')  # metrics, not a config
    with pytest.raises(ValueError, match=r"config.json: not an esmm_tf.train config \(no model"):
        config.load(str(run))
    (data / "stats.json").write_text('{"splits": {"te')
    with pytest.raises(data_layout.DatasetError, match=r"stats.json: not valid JSON"):
        data_layout.read_stats(str(data))
    (data / "stats.json").write_text('{"ctcvr_auc": 0.8}')
    with pytest.raises(data_layout.DatasetError, match=r"stats.json: not a conversion's stats"):
        data_layout.read_stats(str(data))


def test_a_file_where_a_directory_goes_is_refused_before_any_work(tmp_path):
    from esmm_tf import files

    (tmp_path / "afile").write_text("x")
    for path in (tmp_path / "afile", tmp_path / "afile" / "below"):
        with pytest.raises(ValueError, match=r"afile is a file, not a directory; choose another"):
            files.check_directory(str(path), "--export_dir")
    files.check_directory(str(tmp_path / "new" / "dir"), "--export_dir")
    assert sorted(os.listdir(tmp_path)) == ["afile"]  # nothing created


def test_export_options_out_of_range():
    from esmm_tf.export import ExportConfig

    for field, value, message in (
        ("version", -3, r"--version must be in \[0, 2\*\*63\)"),
        ("version", 2**63, r"--version must be in \[0, 2\*\*63\)"),  # TF Serving's int64
        ("warmup_records", -1, "--warmup_records must be >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            ExportConfig(model_dir="run", export_dir="export", **{field: value})
    assert ExportConfig(model_dir="run", export_dir="export", version=2**63 - 1)
    assert ExportConfig(model_dir="run", export_dir="export", version=0).version == 0


def test_words_that_are_not_flags_are_one_error_line(capsys):
    from esmm_tf import cli

    cli.no_arguments(["train"])  # none: nothing happens
    with pytest.raises(SystemExit) as exit_:
        cli.no_arguments(["train", "stray"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: unexpected arguments ['stray']: every option is a flag, --name=value "
        "(--help lists them)"
    ]
