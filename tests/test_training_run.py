"""esmm_tf.training_run.train_and_evaluate: outputs, summaries, resumption,
determinism, non-finite losses and configuration changes."""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import config as config_lib
from esmm_tf import features as F
from esmm_tf import objectives, training_run
from esmm_tf.config import Config
from esmm_tf.model import build_model
from tests.helpers import make_tiny_config

METRIC_KEYS = ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space", "calibration")
TIMING_KEYS = ("seconds", "impressions_per_second")


def tiny(data_dir: str, **overrides) -> Config:
    return make_tiny_config(data_dir, **overrides)


def model_metrics(metrics: dict) -> dict:
    """The metrics without wall-clock timings and paths."""
    return {
        k: v for k, v in metrics.items() if k not in (*TIMING_KEYS, "export_path", "checkpoint")
    }


def assert_metrics_close(a: dict, b: dict, atol: float) -> None:
    a, b = model_metrics(a), model_metrics(b)
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_metrics_close(a[key], b[key], atol)
        elif isinstance(a[key], float) and math.isnan(a[key]):
            assert math.isnan(b[key]), key
        elif not isinstance(a[key], int | float):
            assert a[key] == b[key], key
        else:
            assert a[key] == pytest.approx(b[key], abs=atol, rel=0), key


def events(model_dir: str, sub: str) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of the TensorBoard event files in model_dir/sub."""
    out: dict[str, dict[int, float]] = {}
    files = sorted(glob.glob(os.path.join(model_dir, sub, "events.out.tfevents.*")))
    assert files, f"no event files in {model_dir}/{sub}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return out


def epoch_steps(config: Config, epoch: int) -> int:
    """Steps of epoch ``epoch``: the batches of the train split shuffled with
    seed ``seed + epoch`` (counted by the input pipeline itself)."""
    from esmm_tf import data_layout, input_pipeline

    files = data_layout.shard_files(config.data_dir, "train")
    return sum(
        1
        for _ in input_pipeline.make_dataset(
            files,
            config.batch_size,
            shuffle=True,
            seed=config.seed + epoch,
            shuffle_buffer=config.shuffle_buffer,
            deterministic=True,
        )
    )


def checkpoint_numbers(model_dir: str) -> list[int]:
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, training_run.CHECKPOINT_DIR))
    return sorted(int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths)


def expected_checkpoints(config: Config, epoch_ends: list[int]) -> list[int]:
    """The checkpoint numbers kept: every checkpoint_every_steps and at each
    epoch end, the last keep_checkpoints of them."""
    every = config.checkpoint_every_steps
    saved = {*range(every, epoch_ends[-1] + 1, every), *epoch_ends}
    return sorted(saved)[-config.keep_checkpoints :]


def restored_iterations(config: Config, checkpoint_path: str):
    model = build_model(config, os.path.dirname(os.path.dirname(checkpoint_path)))
    optimizer = training_run.make_optimizer(config)
    optimizer.build(model.trainable_variables)
    tf.train.Checkpoint(model=model, optimizer=optimizer).restore(
        checkpoint_path
    ).assert_existing_objects_matched()
    return int(optimizer.iterations), model


class _Counter:
    """Wraps TrainWindow.update to count (and optionally stop at) train steps."""

    class Interrupted(Exception):
        pass

    def __init__(self, stop_after: int | None = None):
        self.calls = 0
        self.stop_after = stop_after
        self.original = training_run.TrainWindow.update

    def install(self, monkeypatch) -> _Counter:
        counter = self

        def update(window, *args, **kwargs):
            counter.original(window, *args, **kwargs)
            counter.calls += 1
            if counter.stop_after is not None and counter.calls >= counter.stop_after:
                raise _Counter.Interrupted(f"simulated crash after {counter.calls} steps")

        monkeypatch.setattr(training_run.TrainWindow, "update", update)
        return self


@pytest.fixture(scope="module")
def base_run(tiny_data_dir, tmp_path_factory):
    """One epoch of the tiny config: (config, model_dir, returned metrics)."""
    config = tiny(tiny_data_dir)
    model_dir = str(tmp_path_factory.mktemp("base_run"))
    metrics = training_run.train_and_evaluate(config, model_dir)
    return config, model_dir, metrics


@pytest.fixture(scope="module")
def resumed_run(base_run, tmp_path_factory):
    """base_run's model_dir copied, then trained on with epochs=2."""
    config, base_dir, _ = base_run
    model_dir = os.path.join(str(tmp_path_factory.mktemp("resumed")), "run")
    shutil.copytree(base_dir, model_dir)
    counter = _Counter()
    with pytest.MonkeyPatch.context() as mp:
        counter.install(mp)
        metrics = training_run.train_and_evaluate(dataclasses.replace(config, epochs=2), model_dir)
    return dataclasses.replace(config, epochs=2), model_dir, metrics, counter.calls


@pytest.mark.slow
def test_config_json_holds_every_field_with_the_values_given(base_run, tiny_data_dir):
    """config.json, read as plain JSON: every Config field once (plus the
    vocabulary's fingerprint), the values make_tiny_config passed, and the
    dataclass defaults for the rest."""
    _, model_dir, _ = base_run
    with open(os.path.join(model_dir, config_lib.CONFIG_FILE)) as f:
        written = json.load(f)
    fields = {f.name: f for f in dataclasses.fields(Config)}
    assert set(written) == {*fields, "vocab_fingerprint"}
    given = dict(
        data_dir=tiny_data_dir,
        embedding_dim=4,
        tower_units=[16, 8],
        batch_size=64,
        epochs=1,
        deterministic=True,
        checkpoint_every_steps=10,
        log_every_steps=5,
        seed=3,
    )
    for name, value in given.items():
        assert written[name] == value, name
    for name, field in fields.items():
        if name not in given:
            default = field.default
            if default is dataclasses.MISSING:
                default = field.default_factory()
            expected = list(default) if isinstance(default, tuple) else default
            assert written[name] == expected, name


@pytest.mark.slow
def test_run_writes_config_checkpoints_and_metrics(base_run):
    config, model_dir, metrics = base_run
    per_epoch = epoch_steps(config, 0)
    with open(os.path.join(config.data_dir, "stats.json")) as f:
        impressions = json.load(f)["splits"]["train"]["impressions"]
    # Steps hold whole records of at most batch_size impressions.
    assert math.ceil(impressions / config.batch_size) <= per_epoch < 2 * impressions / 64
    assert per_epoch > 15  # the interruption and NaN tests stop inside epoch 1
    assert config_lib.load(model_dir) == config
    with open(os.path.join(model_dir, config_lib.CONFIG_FILE)) as f:
        assert json.load(f)["embedding_dim"] == 4
    # Every checkpoint_every_steps and at the end of the epoch.
    assert checkpoint_numbers(model_dir) == expected_checkpoints(config, [per_epoch])
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, training_run.CHECKPOINT_DIR))
    assert latest.endswith(f"ckpt-{per_epoch}")
    iterations, _ = restored_iterations(config, latest)
    assert iterations == per_epoch
    assert metrics["step"] == per_epoch
    with open(os.path.join(model_dir, training_run.EVAL_FILE)) as f:
        saved = json.load(f)
    assert_metrics_close(saved, metrics, atol=0)


@pytest.mark.slow
def test_eval_metrics_keys_and_values(base_run, tiny_data_dir):
    _, _, metrics = base_run
    for key in METRIC_KEYS:
        assert key in metrics
    for key in ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space"):
        assert 0.0 <= metrics[key] <= 1.0, key
    with open(os.path.join(tiny_data_dir, "stats.json")) as f:
        test_stats = json.load(f)["splits"]["test"]
    assert metrics["impressions"] == test_stats["impressions"]
    assert metrics["clicks"] == test_stats["clicks"]
    assert metrics["conversions"] == test_stats["conversions"]
    calibration = metrics["calibration"]
    assert set(calibration) == {"ctr", "cvr", "ctcvr"}
    assert calibration["ctr"]["observed"]["count"] == test_stats["impressions"]
    assert calibration["cvr"]["observed"]["count"] == test_stats["clicks"]  # clicked only
    assert calibration["ctr"]["observed"]["mean_target"] == pytest.approx(test_stats["ctr"])
    assert "ground_truth" in calibration["cvr"]


@pytest.mark.slow
def test_tensorboard_summaries(base_run):
    config, model_dir, metrics = base_run
    train = events(model_dir, "train")
    for tag in (
        "loss/total",
        "loss/ctr",
        "loss/ctcvr",
        "auc/ctr_auc",
        "auc/cvr_auc",
        "auc/ctcvr_auc",
        "impressions_per_second",
        "learning_rate",
    ):
        assert tag in train, tag
    per_epoch = epoch_steps(config, 0)
    every = config.log_every_steps
    assert sorted(train["loss/total"]) == sorted({*range(every, per_epoch + 1, every), per_epoch})
    for step, total in train["loss/total"].items():
        assert total == pytest.approx(train["loss/ctr"][step] + train["loss/ctcvr"][step], 1e-5)
    for value in train["learning_rate"].values():
        assert value == pytest.approx(config.learning_rate)

    evals = events(model_dir, "eval")
    # The final evaluation on the whole test split...
    for key in ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space"):
        assert evals[f"test/auc/{key}"] == {per_epoch: pytest.approx(metrics[key], abs=1e-6)}
    assert evals["test/loss/ctr"][per_epoch] == pytest.approx(
        metrics["calibration"]["ctr"]["observed"]["log_loss"], abs=1e-6
    )
    # ... and about ten evaluations during the epoch, under the train losses' tags.
    every_eval = training_run.steps_per_epoch(config) // training_run.EVALS_PER_EPOCH
    assert sorted(evals["auc/ctr_auc"])[:3] == [every_eval, 2 * every_eval, 3 * every_eval]
    assert len(evals["auc/ctr_auc"]) >= training_run.EVALS_PER_EPOCH
    for tag in ("loss/ctr", "loss/ctcvr", "calibration/ctr_mean_pred", "calibration/ctr_observed"):
        assert len(evals[tag]) == len(evals["auc/ctr_auc"]), tag
    assert "impressions_per_second" in evals


@pytest.mark.slow
def test_two_fresh_runs_are_identical(base_run, tmp_path):
    config, _, metrics = base_run
    again = training_run.train_and_evaluate(config, str(tmp_path / "run"))
    assert_metrics_close(again, metrics, atol=0)


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(resumed_run, base_run):
    config, model_dir, metrics, steps_trained = resumed_run
    first, second = epoch_steps(config, 0), epoch_steps(config, 1)
    assert steps_trained == second  # epoch 1 was not trained again
    assert metrics["step"] == first + second
    with open(os.path.join(model_dir, training_run.EVAL_FILE)) as f:
        assert json.load(f)["step"] == first + second
    assert checkpoint_numbers(model_dir) == expected_checkpoints(config, [first, first + second])
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, training_run.CHECKPOINT_DIR))
    iterations, _ = restored_iterations(config, latest)
    assert iterations == first + second
    assert sorted(events(model_dir, "eval")["test/auc/ctr_auc"]) == [first, first + second]
    assert config_lib.load(model_dir).epochs == 2
    # Training on changed the model.
    assert metrics["ctr_auc"] != base_run[2]["ctr_auc"]


@pytest.mark.slow
def test_interrupted_run_ends_like_an_uninterrupted_one(
    resumed_run, tiny_data_dir, tmp_path, monkeypatch, capsys
):
    config = tiny(tiny_data_dir, epochs=2)
    model_dir = str(tmp_path / "run")
    counter = _Counter(stop_after=15).install(monkeypatch)
    with pytest.raises(_Counter.Interrupted):
        training_run.train_and_evaluate(config, model_dir)
    assert checkpoint_numbers(model_dir) == [10]
    monkeypatch.undo()

    capsys.readouterr()
    counter = _Counter().install(monkeypatch)
    metrics = training_run.train_and_evaluate(config, model_dir)
    assert "ckpt-10 (step 10)" in capsys.readouterr().err
    total = epoch_steps(config, 0) + epoch_steps(config, 1)
    assert counter.calls == total - 10
    assert metrics["step"] == total
    # The same model as one epoch + one resumed epoch without a crash.
    assert_metrics_close(metrics, resumed_run[2], atol=1e-6)


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny_data_dir, tmp_path, monkeypatch
):
    config = tiny(tiny_data_dir, checkpoint_every_steps=2)
    model_dir = str(tmp_path / "run")
    calls = tf.Variable(0, dtype=tf.int64, trainable=False)
    real_loss = objectives.loss

    def nan_from_step_5(*args, **kwargs):
        loss = real_loss(*args, **kwargs)
        calls.assign_add(1)
        poison = tf.where(calls >= 5, tf.constant(float("nan")), tf.constant(1.0))
        return {k: v * poison for k, v in loss.items()}  # NaN loss and gradients

    monkeypatch.setattr(objectives, "loss", nan_from_step_5)
    with pytest.raises(training_run.TrainingError, match=r"not finite at step 5\b") as error:
        training_run.train_and_evaluate(config, model_dir)
    assert "ckpt-4" in str(error.value)
    assert checkpoint_numbers(model_dir) == [2, 4]
    assert not os.path.exists(os.path.join(model_dir, training_run.EVAL_FILE))
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, training_run.CHECKPOINT_DIR))
    iterations, model = restored_iterations(config, latest)
    assert iterations == 4
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)


@pytest.mark.slow
@pytest.mark.parametrize(
    "change", [{"embedding_dim": 8}, {"model": "esmm_ns"}, {"tower_units": (16, 4)}]
)
@pytest.mark.slow
def test_other_model_config_in_the_same_model_dir_is_refused(base_run, tmp_path, change):
    config, base_dir, _ = base_run
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    shutil.copy(os.path.join(base_dir, config_lib.CONFIG_FILE), model_dir)
    with pytest.raises(ValueError, match=next(iter(change))):
        training_run.train_and_evaluate(dataclasses.replace(config, **change), model_dir)
    assert config_lib.load(model_dir) == config  # not overwritten
    assert not os.path.exists(os.path.join(model_dir, training_run.CHECKPOINT_DIR))


@pytest.mark.slow  # a whole training run or export (~10 s): out of the fast loop
def test_train_step_fast_path_matches_the_tf_function(tiny_config):
    """build_training's step calls the traced function with the flat tensor
    list (a private TensorFlow API) for a batch of eager tensors: the same
    losses, outputs and variables as calling its tf.function; anything else
    goes through the tf.function."""
    from esmm_tf import data_layout, input_pipeline

    files = data_layout.shard_files(tiny_config.data_dir, "train")
    batches = list(
        input_pipeline.make_dataset(files, 64, shuffle=False, deterministic=True).take(4)
    )
    runs = []
    for fast in (True, False):
        keras.utils.set_random_seed(tiny_config.seed)
        model, _, step = training_run.build_training(tiny_config)
        if fast:
            assert step._flat(*batches[0]) is not None  # the fast path is taken
        call = step if fast else step.function
        results = [call(x, y) for x, y in batches]
        results = [tf.nest.map_structure(lambda t: t.numpy(), r) for r in results]
        runs.append((results, [v.numpy() for v in model.trainable_variables]))
    (fast_results, fast_vars), (fn_results, fn_vars) = runs
    tf.nest.map_structure(np.testing.assert_array_equal, fast_results, fn_results)
    for a, b in zip(fast_vars, fn_vars, strict=True):
        np.testing.assert_array_equal(a, b)

    # Numpy inputs, or a batch with other keys, take the tf.function.
    inputs, labels = batches[0]
    as_numpy = ({k: v.numpy() for k, v in inputs.items()}, labels)
    assert step._flat(*as_numpy) is None
    loss, outputs = step(*as_numpy)
    assert set(outputs) == set(F.OUTPUT_KEYS) and np.isfinite(loss["total"].numpy())
    extra = dict(labels, extra=labels["click"])
    assert step._flat(inputs, extra) is None
    with pytest.raises((TypeError, ValueError)):
        step(inputs, extra)


def test_train_window_counts_training_time_only(monkeypatch):
    """Impressions per second divide by the time from each resume to the
    steps' ends: a pause (evaluation, checkpoint) and the wait after the last
    step (the end of the data) do not count."""
    from esmm_tf import train_step

    clock = [100.0]
    monkeypatch.setattr(train_step.time, "monotonic", lambda: clock[0])
    window = train_step.TrainWindow()
    labels = {k: np.array([1.0, 0.0, 0.0, 1.0], np.float32) for k in F.LABEL_KEYS}
    outputs = {k: np.array([0.6, 0.2, 0.3, 0.7], np.float32) for k in F.OUTPUT_KEYS}
    for pause in (0.0, 30.0, 0.0):  # a step of 2 s, a 30 s evaluation, another 2 s step
        clock[0] += pause
        if pause:
            window.resume()
        clock[0] += 2.0
        window.update({"total": 0.5}, labels, outputs)
    clock[0] += 50.0  # the end of the data
    assert window.steps == 3 and window.impressions == 12
    assert window.seconds == pytest.approx(6.0)
