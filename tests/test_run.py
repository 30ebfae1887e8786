"""A run and the workflow around it: the run owns its vocabulary (any
conversion scores, the data may go), validation + early stopping + the best
checkpoint (kept across a crash), warm start, and predict."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from esmm_tf import config as config_lib
from esmm_tf import run_dir, training_run
from esmm_tf.evaluate import evaluate_model_dir
from esmm_tf.metrics import AucAccumulator
from tests.helpers import make_tiny_config

# Every test here trains a tiny run (seconds to a minute each).
pytestmark = pytest.mark.slow

AUC_KEYS = ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space")


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory):
    """A run trained on a copy of the tiny dataset: (config, model_dir, metrics)."""
    data = os.path.join(str(tmp_path_factory.mktemp("owned")), "data")
    shutil.copytree(tiny_data_dir, data)
    config = make_tiny_config(data)
    model_dir = str(tmp_path_factory.mktemp("run"))
    return config, model_dir, training_run.train_and_evaluate(config, model_dir)


def test_the_run_keeps_its_vocabulary_with_a_fingerprint(trained):
    config, model_dir, _ = trained
    assert run_dir.has_vocab(model_dir)
    saved = config_lib.load_json(model_dir)
    assert saved["vocab_fingerprint"] == run_dir.vocab_fingerprint(config.data_dir)
    assert saved["vocab_fingerprint"] == run_dir.vocab_fingerprint(model_dir)


def test_another_conversion_of_the_same_logs_scores_the_same(trained, tiny_raw_dir, tmp_path):
    """Conversion B of the same raw rows with another --min_count (other
    vocabulary sizes): identical metrics, since the run maps raw ids with its
    own vocabulary."""
    from data_prep.convert import ConvertConfig, convert

    config, model_dir, metrics = trained
    other = str(tmp_path / "other")
    convert(ConvertConfig(raw_dir=tiny_raw_dir, out_dir=other, min_count=3, workers=1))
    assert run_dir.vocab_fingerprint(other) != run_dir.vocab_fingerprint(config.data_dir)
    again = evaluate_model_dir(model_dir, other)
    for key in AUC_KEYS:
        assert again[key] == pytest.approx(metrics[key], abs=1e-9), key


def test_evaluate_predict_and_export_work_after_the_data_is_gone(trained, tiny_data_dir, tmp_path):
    from esmm_tf.export import export_model_dir
    from esmm_tf.predict import predict

    config, model_dir, metrics = trained
    moved = str(tmp_path / "moved")
    shutil.move(config.data_dir, moved)
    try:
        path = export_model_dir(model_dir, str(tmp_path / "export"))
        assert os.path.exists(os.path.join(path, "saved_model.pb"))
        again = evaluate_model_dir(model_dir, tiny_data_dir)
        assert again["ctr_auc"] == pytest.approx(metrics["ctr_auc"], abs=1e-9)
        out = str(tmp_path / "pred.csv")
        assert predict(tiny_data_dir, out, saved_model=path) == metrics["impressions"]
    finally:
        shutil.move(moved, config.data_dir)


def _read_predictions(path: str) -> dict[int, tuple[float, float, float]]:
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["sample_id", "ctr", "cvr", "ctcvr"]
    return {int(r[0]): tuple(float(x) for x in r[1:]) for r in rows[1:]}


def test_predict_file_gives_evaluates_aucs(trained, tmp_path):
    """AUCs computed from the predictions file (joined with the labels by
    sample_id) equal evaluate's; the run and its export write the same file."""
    import tensorflow as tf

    from esmm_tf import data_layout, input_pipeline
    from esmm_tf.export import export_model_dir
    from esmm_tf.predict import predict

    config, model_dir, metrics = trained
    from_run = str(tmp_path / "run.csv")
    n = predict(config.data_dir, from_run, model_dir=model_dir)
    assert n == metrics["impressions"]
    export = export_model_dir(model_dir, str(tmp_path / "export"), warmup=0)
    from_export = str(tmp_path / "export.csv")
    predict(config.data_dir, from_export, saved_model=export)
    with open(from_run) as a, open(from_export) as b:
        assert a.read() == b.read()
    with pytest.raises(ValueError, match="exists; pass --overwrite"):  # before any scoring
        predict(config.data_dir, from_run, saved_model=str(tmp_path / "no such export"))
    assert predict(config.data_dir, from_run, saved_model=export, overwrite=True) == n

    scores = _read_predictions(from_run)
    labels = {}
    files = data_layout.shard_files(config.data_dir, "test")
    for _, y in input_pipeline.make_dataset(files, 512, shuffle=False, with_ground_truth=True):
        columns = (y["sample_id"].numpy(), y["click"].numpy(), y["conversion"].numpy())
        for sid, c, v in zip(*columns, strict=True):
            labels[int(sid)] = (c, v)
    assert set(labels) == set(scores)
    ids = sorted(labels)
    click = np.array([labels[i][0] for i in ids])
    conversion = np.array([labels[i][1] for i in ids])
    pred = np.array([scores[i] for i in ids])
    ctr, cvr, ctcvr = AucAccumulator(), AucAccumulator(), AucAccumulator()
    ctr.update(click, pred[:, 0])
    cvr.update(conversion, pred[:, 1], mask=click > 0)
    ctcvr.update(click * conversion, pred[:, 2])
    # The file keeps 7 significant digits: AUCs agree to rounding.
    assert ctr.result() == pytest.approx(metrics["ctr_auc"], abs=2e-4)
    assert cvr.result() == pytest.approx(metrics["cvr_auc"], abs=2e-4)
    assert ctcvr.result() == pytest.approx(metrics["ctcvr_auc"], abs=2e-4)
    del tf


def test_predict_needs_exactly_one_model(trained, tmp_path):
    from esmm_tf.predict import predict

    config, model_dir, _ = trained
    with pytest.raises(ValueError, match="exactly one"):
        predict(config.data_dir, str(tmp_path / "p.csv"))
    (tmp_path / "not_an_export").mkdir()
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        predict(
            config.data_dir, str(tmp_path / "p.csv"), saved_model=str(tmp_path / "not_an_export")
        )
    assert not os.path.exists(tmp_path / "p.csv")


def test_an_old_run_directory_gets_a_clear_message(trained, tmp_path):
    _, model_dir, _ = trained
    old = str(tmp_path / "old")
    os.makedirs(old)
    values = config_lib.load_json(model_dir)
    values["records_per_batch"] = 32
    with open(os.path.join(old, config_lib.CONFIG_FILE), "w") as f:
        json.dump(values, f)
    with pytest.raises(ValueError, match="records_per_batch=32.*--batch_size"):
        evaluate_model_dir(old)


# ------------------------------------------------------ validation, early stop


def _early_config(data_dir: str, **overrides):
    values = dict(
        validation_fraction=0.3,
        early_stopping_patience=2,
        early_stopping_metric="ctr_auc",
        eval_every_steps=3,
        epochs=40,
        learning_rate=0.05,
    )
    values.update(overrides)
    return make_tiny_config(data_dir, **values)


def test_validation_split_is_never_trained_on(tiny_data_dir):
    """Training and validation take disjoint requests that cover the split."""
    from esmm_tf import data_layout, input_pipeline

    config = _early_config(tiny_data_dir)
    files = data_layout.shard_files(tiny_data_dir, "train")

    def ids(**kw):
        ds = input_pipeline.make_dataset(files, 64, shuffle=False, **kw)
        return np.concatenate([y["sample_id"].numpy() for _, y in ds])

    train = ids(fraction=1 - config.validation_fraction, exclude=config.validation_fraction)
    validation = ids(fraction=config.validation_fraction)
    everything = ids()
    assert not set(train) & set(validation)
    assert sorted(np.concatenate([train, validation])) == sorted(everything)
    assert 0.15 < validation.size / everything.size < 0.45


@pytest.fixture(scope="module")
def early_stopped(tiny_data_dir, tmp_path_factory):
    config = _early_config(tiny_data_dir)
    model_dir = str(tmp_path_factory.mktemp("early"))
    return config, model_dir, training_run.train_and_evaluate(config, model_dir)


def test_early_stopping_keeps_the_best_checkpoint(early_stopped):
    config, model_dir, metrics = early_stopped
    assert metrics["stopped_early"]
    assert metrics["epochs_trained"] < config.epochs
    best = run_dir.best_checkpoint(model_dir)
    assert best and best.endswith(f"ckpt-{metrics['best_step']}")
    assert metrics["checkpoint"] == best
    assert metrics["best_step"] < metrics["step"]
    # The stop came `patience` evaluations (each at most 3 steps apart) after the best.
    assert 0 < metrics["step"] - metrics["best_step"] <= config.early_stopping_patience * 3
    # evaluate/predict/export use the best checkpoint by default.
    again = evaluate_model_dir(model_dir)
    assert again["checkpoint"] == best
    assert again["ctr_auc"] == pytest.approx(metrics["ctr_auc"], abs=1e-9)
    latest = evaluate_model_dir(model_dir, checkpoint="latest")
    assert latest["checkpoint"] == run_dir.latest_checkpoint(model_dir) != best


def test_a_stopped_run_stays_stopped(early_stopped):
    config, model_dir, metrics = early_stopped
    again = training_run.train_and_evaluate(config, model_dir)
    assert again["step"] == metrics["step"]
    assert again["best_step"] == metrics["best_step"]


@pytest.mark.slow
def test_a_crash_keeps_the_early_stopping_state(early_stopped, tmp_path, monkeypatch):
    """Killed mid-run and resumed: the same stop, best step and metrics as the
    uninterrupted run (deterministic input)."""
    config, _, metrics = early_stopped
    model_dir = str(tmp_path / "run")

    class Crash(Exception):
        pass

    calls = {"n": 0}
    original = training_run.TrainingRun._evaluate_during_training

    def crash_on_the_third_eval(run):
        original(run)
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash()

    monkeypatch.setattr(
        training_run.TrainingRun, "_evaluate_during_training", crash_on_the_third_eval
    )
    with pytest.raises(Crash):
        training_run.train_and_evaluate(config, model_dir)
    monkeypatch.undo()
    resumed = training_run.train_and_evaluate(config, model_dir)
    assert resumed["step"] == metrics["step"]
    assert resumed["best_step"] == metrics["best_step"]
    for key in AUC_KEYS:
        assert resumed[key] == pytest.approx(metrics[key], abs=1e-6), key


def test_a_sampled_run_trains_on_its_written_sample(tiny_data_dir, tmp_path):
    """Several epochs on a sample of at most half the split read the sample
    written once to RUN/train_sample/ (the same records as filtering the split
    by key), resume the same after the sample is lost mid-run, and remove it
    when training ends."""
    from esmm_tf import data_layout, input_pipeline

    config = _early_config(
        tiny_data_dir, train_fraction=0.5, validation_fraction=0.2, epochs=3, learning_rate=0.01
    )
    config = dataclasses.replace(config, early_stopping_patience=0)
    files = data_layout.shard_files(tiny_data_dir, "train")
    sample = run_dir.sample_dir(str(tmp_path / "run"))

    run = training_run.TrainingRun(config, str(tmp_path / "run"))
    run.train_epoch()
    written = sorted(r.numpy() for r in tf_records(run_dir_files(sample)))
    assert written == sorted(r.numpy() for r in input_pipeline.train_records(files, 0.4, 0.2))
    steps_one_epoch = run.step
    shutil.rmtree(sample)  # lost between epochs: rewritten identically on resumption
    resumed = training_run.train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(sample)
    assert resumed["epochs_trained"] == 3

    # The uninterrupted run (deterministic input) ends at the same model.
    whole = training_run.train_and_evaluate(config, str(tmp_path / "whole"))
    assert whole["step"] == resumed["step"] >= 3 * steps_one_epoch - 3  # epochs pack alike
    for key in AUC_KEYS:
        assert resumed[key] == pytest.approx(whole[key], abs=1e-6), key


def tf_records(paths):
    import tensorflow as tf

    return tf.data.TFRecordDataset(paths)


def run_dir_files(directory):
    return sorted(
        os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".tfrecord")
    )


def test_an_undefined_validation_metric_is_an_error(tiny_data_dir, tmp_path):
    """A validation sample without a positive (or negative) label cannot
    select a checkpoint: one clear error, not a silent stop with no best."""
    run = training_run.TrainingRun(_early_config(tiny_data_dir), str(tmp_path / "run"))
    counts = dict(impressions=900, clicks=40, conversions=0)
    with pytest.raises(training_run.TrainingError, match="ctr_auc is undefined.*0 conversions"):
        run._early_stopping(dict(counts, ctr_auc=float("nan")))
    assert run._early_stopping(dict(counts, ctr_auc=0.6)) == (1.0, 0.0)


def test_early_stopping_needs_a_validation_split(tiny_data_dir):
    with pytest.raises(ValueError, match="validation split"):
        make_tiny_config(tiny_data_dir, early_stopping_patience=2)


# ------------------------------------------------------------- warm start


def test_warm_start_starts_from_the_other_runs_model_and_vocabulary(
    trained, tiny_raw_dir, tmp_path, capsys
):
    """A new run warm-started from `trained` on another conversion (min_count=3)
    takes its vocabulary and weights: with a negligible learning rate it scores
    as the old run does, and the log counts the ids that map to OOV."""
    from data_prep.convert import ConvertConfig, convert

    config, source, metrics = trained
    other = str(tmp_path / "other")
    convert(ConvertConfig(raw_dir=tiny_raw_dir, out_dir=other, min_count=3, workers=1))
    warm = dataclasses.replace(config, data_dir=other, warm_start_from=source, learning_rate=1e-12)
    model_dir = str(tmp_path / "warm")
    capsys.readouterr()
    result = training_run.train_and_evaluate(warm, model_dir)
    err = capsys.readouterr().err
    assert "warm start from" in err and "map to OOV rows" in err
    assert run_dir.vocab_fingerprint(model_dir) == run_dir.vocab_fingerprint(source)
    for key in ("ctr_auc", "ctcvr_auc"):
        assert result[key] == pytest.approx(metrics[key], abs=1e-3), key
    cold = training_run.train_and_evaluate(
        dataclasses.replace(warm, warm_start_from=""), str(tmp_path / "cold")
    )
    assert cold["ctr_auc"] != pytest.approx(metrics["ctr_auc"], abs=1e-3)


def test_warm_start_refuses_another_architecture(trained, tmp_path):
    config, source, _ = trained
    other = dataclasses.replace(config, warm_start_from=source, embedding_dim=8)
    with pytest.raises(ValueError, match="embedding_dim"):
        training_run.train_and_evaluate(other, str(tmp_path / "run"))


def test_a_new_days_test_logs_convert_with_the_runs_vocabulary_and_score(
    trained, tiny_raw_dir, tmp_path
):
    """The daily flow: a directory with only the test files, converted with
    --vocab_from=RUN (no train data, no vocabulary of its own), scores like
    the run's own conversion."""
    from data_prep.convert import ConvertConfig, convert

    config, model_dir, metrics = trained
    day = tmp_path / "day"
    day.mkdir()
    for name in os.listdir(tiny_raw_dir):
        if "_test" in name:
            shutil.copy(os.path.join(tiny_raw_dir, name), day / name)
    out = str(tmp_path / "day_data")
    convert(ConvertConfig(raw_dir=str(day), out_dir=out, vocab_from=model_dir, workers=1))
    assert not os.path.isdir(os.path.join(out, "train"))
    assert run_dir.vocab_fingerprint(out) == run_dir.vocab_fingerprint(model_dir)
    again = evaluate_model_dir(model_dir, out)
    for key in AUC_KEYS:
        assert again[key] == pytest.approx(metrics[key], abs=1e-9), key


def test_a_damaged_checkpoint_is_one_error_naming_it(trained, tmp_path):
    """A truncated variables file: evaluate/predict/export and a resumed
    training say which checkpoint and what to do (it was a traceback)."""
    import glob
    import shutil

    from esmm_tf import run_dir, training_run

    config, model_dir, _ = trained
    run = str(tmp_path / "run")
    shutil.copytree(model_dir, run)
    latest = run_dir.latest_checkpoint(run)
    for path in glob.glob(latest + ".data-*"):
        with open(path, "r+b") as f:
            f.truncate(100)
    with pytest.raises(
        run_dir.RunError, match=f"checkpoint {latest} cannot be read: .*--checkpoint="
    ):
        run_dir.restore(run, "latest")
    resumed = dataclasses.replace(config, epochs=config.epochs + 1)
    with pytest.raises(
        run_dir.RunError, match=f"checkpoint {latest} cannot be read: .*start this run over"
    ):
        training_run.train_and_evaluate(resumed, run)
    with open(os.path.join(run, "vocab", "205.tsv"), "r+b") as f:  # a damaged vocabulary
        f.truncate(20)
    with pytest.raises(run_dir.RunError, match="vocab does not match the fingerprint"):
        run_dir.restore(run)  # checked before the (damaged) checkpoint is read
    with pytest.raises(run_dir.RunError, match="vocab does not match the fingerprint"):
        training_run.train_and_evaluate(resumed, run)  # not resumed on shifted ids


def test_a_checkpoint_whose_files_were_deleted_is_never_a_fresh_start(
    trained, tmp_path, capfd, monkeypatch
):
    """The state file names checkpoints whose files are gone:
    tf.train.latest_checkpoint said None (after ERROR lines), so a resumed run
    started over in its own directory. The newest kept checkpoint is used,
    with a warning; with none left it is one error, and training refuses.
    The run directory is relative, as in the README's commands."""
    import dataclasses
    import glob

    import tensorflow as tf

    config, model_dir, _ = trained
    monkeypatch.chdir(tmp_path)
    run = "run"
    shutil.copytree(model_dir, run)
    state = tf.train.get_checkpoint_state(run_dir.checkpoint_dir(run))
    kept = [
        os.path.join(run_dir.checkpoint_dir(run), os.path.basename(p))
        for p in state.all_model_checkpoint_paths
    ]
    assert len(kept) >= 2, kept
    assert run_dir.latest_checkpoint(run) == kept[-1]
    for path in glob.glob(kept[-1] + ".*"):
        os.remove(path)
    assert run_dir.latest_checkpoint(run) == kept[-2]
    assert f"the files of checkpoint {kept[-1]} are missing" in capfd.readouterr().err
    assert run_dir.serving_checkpoint(run, "latest") == kept[-2]
    resumed = dataclasses.replace(config, epochs=config.epochs + 1)
    again = "again"  # relative: training to its end, evaluation and metrics included
    shutil.copytree(run, again)
    capfd.readouterr()
    metrics = training_run.train_and_evaluate(resumed, again)
    moved = kept[-2].replace(run, again)
    assert f"resumed from {moved} (step " in capfd.readouterr().err
    assert metrics["epochs_trained"] == resumed.epochs
    for path in kept[:-1]:
        for name in glob.glob(path + ".*"):
            os.remove(name)
    with pytest.raises(run_dir.RunError, match="no checkpoint it lists has its files"):
        run_dir.latest_checkpoint(run)
    with pytest.raises(run_dir.RunError, match="no checkpoint it lists has its files"):
        training_run.train_and_evaluate(resumed, run)


def test_a_pruned_run_is_not_trained_over(trained, tmp_path):
    """run_dir.prune keeps a finished run's results without its checkpoints;
    training it again (e.g. more epochs) started from step 0 and replaced
    them."""
    import dataclasses

    config, model_dir, _ = trained
    run = str(tmp_path / "run")
    shutil.copytree(model_dir, run)
    run_dir.prune(run)
    with open(run_dir.eval_file(run)) as f:
        before = f.read()
    resumed = dataclasses.replace(config, epochs=config.epochs + 1)
    with pytest.raises(run_dir.RunError, match="finished run without checkpoints"):
        training_run.train_and_evaluate(resumed, run)
    with open(run_dir.eval_file(run)) as f:
        assert f.read() == before


def test_export_with_a_damaged_test_split_skips_the_warm_up(trained, tmp_path, capfd):
    """The warm-up requests come from the test split; a damaged shard there
    stopped the export with a DataLossError traceback, though the model needs
    only the run."""
    import glob

    from esmm_tf import serving
    from esmm_tf.export import export_model_dir

    config, model_dir, _ = trained
    shard = sorted(glob.glob(os.path.join(config.data_dir, "test", "*")))[0]
    with open(shard, "rb") as f:
        original = f.read()
    try:
        with open(shard, "r+b") as f:
            f.seek(12)
            f.write(bytes([original[12] ^ 0xFF]))  # a flipped byte in the first record
        path = export_model_dir(model_dir, str(tmp_path / "export"))
    finally:
        with open(shard, "wb") as f:
            f.write(original)
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    assert not os.path.exists(os.path.join(path, serving.WARMUP_FILE))
    assert "warning: no warm-up requests (reading the test split:" in capfd.readouterr().err


def test_a_damaged_export_is_one_error_naming_saved_model(trained, tmp_path):
    """A truncated variables file or saved_model.pb gave an IndexError
    traceback, or an error blaming --output."""
    import glob

    from esmm_tf.export import export_model_dir
    from esmm_tf.predict import predict

    config, model_dir, _ = trained
    path = export_model_dir(model_dir, str(tmp_path / "export"), warmup=0)
    for name in ("variables/variables.data-*", "saved_model.pb"):
        damaged = str(tmp_path / f"damaged-{name[:4]}")
        shutil.copytree(path, damaged)
        (target,) = glob.glob(os.path.join(damaged, name))
        with open(target, "r+b") as f:
            f.truncate(os.path.getsize(target) // 2)
        with pytest.raises(ValueError, match=f"--saved_model={damaged} cannot be loaded"):
            predict(config.data_dir, str(tmp_path / "p.csv"), saved_model=damaged)


def test_predict_removes_what_a_killed_predict_left(trained, tmp_path):
    """predict writes OUTPUT.tmp-<pid> and renames it; a killed one's (its
    process gone) is removed by the next, a live process's is not."""
    from esmm_tf.predict import predict
    from tests.helpers import dead_pid, live_pid

    config, model_dir, _ = trained
    out = str(tmp_path / "p.csv")
    dead = dead_pid()
    with live_pid() as live:
        for pid in (dead, live):
            with open(f"{out}.tmp-{pid}", "w") as f:
                f.write("sample_id,ctr,cvr,ctcvr\n1,0.1")
        predict(config.data_dir, out, model_dir=model_dir)
    assert not os.path.exists(f"{out}.tmp-{dead}")
    assert os.path.exists(f"{out}.tmp-{live}") and os.path.exists(out)
