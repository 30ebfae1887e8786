"""What TensorBoard shows for a run at default flags: a short ESMM run
(experiments/esmm.flags with a tiny architecture) on a synthetic dataset of one
~200-step epoch (so that a train point covers a few steps: a one-step window
is at the mercy of the scheduler), read back with TensorBoard's own event reader.

Checks what a user monitors: ~50 train points and ~10 evaluations per epoch,
train and eval losses under the same tags, calibration charts with the
observed rate beside the mean prediction, a throughput curve that leaves
evaluation and checkpoint time out, the HParams dashboard's data and
the config as a text summary."""

from __future__ import annotations

import os
import statistics

import pytest
from absl import flags
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import metrics as hparams_metrics
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from esmm_tf import features as F
from esmm_tf import run_dir, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPRESSIONS = 250_000  # 80 % train: ~200 steps of 1024 impressions, 50k test impressions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    """The run directory of one epoch at experiments/esmm.flags' settings."""
    from data_prep.convert import ConvertConfig, convert
    from data_prep.synthetic import SyntheticConfig, generate
    from esmm_tf.training_run import train_and_evaluate

    tmp = tmp_path_factory.mktemp("tensorboard")
    raw, data, model_dir = (str(tmp / name) for name in ("raw", "data", "run"))
    generate(
        SyntheticConfig(
            impressions=IMPRESSIONS,
            seed=5,
            test_fraction=0.2,
            impressions_per_row=15,
            behaviour_ids=20,
            pilot_impressions=20_000,
            progress_seconds=0,
        ),
        raw,
    )
    convert(ConvertConfig(raw_dir=raw, out_dir=data, num_shards=2, workers=1))
    values = flags.FlagValues()
    train.define_config_flags(values)
    cwd = os.getcwd()
    os.chdir(ROOT)  # the flagfiles include each other by repository-relative paths
    try:
        values(
            [
                "train",
                "--flagfile=experiments/esmm.flags",
                f"--data_dir={data}",
                "--embedding_dim=4",
                "--tower_units=16,8",
            ]
        )
    finally:
        os.chdir(cwd)
    config = train.config_from_flags(values)
    assert (config.batch_size, config.log_every_steps, config.eval_every_steps) == (1024, 0, 0)
    train_and_evaluate(config, model_dir)
    return model_dir


def _read(path: str) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


def _values(acc: event_accumulator.EventAccumulator, tag: str) -> list[float]:
    return [float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]


def _run_names(logdir: str) -> set[str]:
    """The run names TensorBoard gives the event directories under logdir
    (the logdir itself is ".")."""
    return {
        os.path.relpath(path, logdir)
        for path, _, files in os.walk(logdir)
        if any(f.startswith("events.out.tfevents.") for f in files)
    }


def _plugin(acc: event_accumulator.EventAccumulator, tag: str) -> str:
    return acc.SummaryMetadata(tag).plugin_data.plugin_name


def test_train_run_has_about_50_points_per_epoch(run):
    acc = _read(run_dir.events_dir(run, run_dir.TRAIN_EVENTS))
    for tag in ("loss/total", "loss/ctr", "loss/ctcvr", "impressions_per_second", "learning_rate"):
        assert _plugin(acc, tag) == "scalars", tag
        assert len(acc.Tensors(tag)) >= 45, (tag, len(acc.Tensors(tag)))
    steps = [e.step for e in acc.Tensors("loss/total")]
    assert steps == sorted(set(steps))


def test_evaluation_time_is_not_in_throughput(run):
    """Evaluation and checkpoint time is left out of impressions_per_second.

    Each evaluation (and the checkpoint after it) takes many times a train
    point's few steps, so were its time counted, the train point after every
    evaluation would dip far below the others. The median of those points is
    compared, not each one: a window of a few steps is at the mercy of the
    scheduler (the suite runs two test processes on two cores), so a single
    point may dip for reasons that are not the run's."""
    acc = _read(run_dir.events_dir(run, run_dir.TRAIN_EVENTS))
    points = [
        (e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
        for e in acc.Tensors("impressions_per_second")
    ]
    eval_steps = [
        e.step for e in _read(run_dir.events_dir(run, run_dir.EVAL_EVENTS)).Tensors("loss/ctcvr")
    ]
    after_eval = [
        next(rate for step, rate in points if step > eval_step)
        for eval_step in eval_steps
        if eval_step < points[-1][0]
    ]
    assert len(after_eval) >= 5, (eval_steps, [step for step, _ in points])
    median = statistics.median(rate for _, rate in points)
    median_after = statistics.median(after_eval)
    assert median_after > median / 2, (
        f"median {median:.0f} imp/s, after evaluations {median_after:.0f}: {after_eval}"
    )


def test_eval_run_has_10_evaluations_under_the_train_tags(run):
    train_acc = _read(run_dir.events_dir(run, run_dir.TRAIN_EVENTS))
    acc = _read(run_dir.events_dir(run, run_dir.EVAL_EVENTS))
    tags = ["auc/ctcvr_auc", "auc/ctr_auc", "auc/cvr_auc", "loss/ctr", "loss/ctcvr"]
    for head in F.OUTPUT_KEYS:
        tags += [f"calibration/{head}_mean_pred", f"calibration/{head}_observed"]
    for tag in tags:
        assert _plugin(acc, tag) == "scalars", tag
        assert len(acc.Tensors(tag)) >= 10, (tag, len(acc.Tensors(tag)))
    shared = set(train_acc.Tags()["tensors"]) & set(acc.Tags()["tensors"])
    assert {"loss/ctr", "loss/ctcvr", "auc/ctcvr_auc"} <= shared
    # The evaluations are spread over the epoch, the last at its end.
    eval_steps = [e.step for e in acc.Tensors("loss/ctcvr")]
    last = train_acc.Tensors("loss/total")[-1].step
    assert eval_steps[-1] == last and eval_steps[0] <= last // 5
    # Observed rates are rates, beside predictions of the same scale.
    for head in F.OUTPUT_KEYS:
        observed = _values(acc, f"calibration/{head}_observed")
        assert all(0 < v < 1 for v in observed), (head, observed)
    # The final test evaluation, once.
    assert len(acc.Tensors("test/auc/ctcvr_auc")) == 1


def test_hparams_and_config_text(run):
    acc = _read(run)
    tags = acc.Tags()["tensors"]
    assert hparams_metadata.EXPERIMENT_TAG in tags, tags
    assert hparams_metadata.SESSION_START_INFO_TAG in tags, tags
    # The experiment's hparams are the config's fields; its metrics exist in their run.
    content = hparams_metadata.parse_experiment_plugin_data(
        acc.SummaryMetadata(hparams_metadata.EXPERIMENT_TAG).plugin_data.content
    )
    names = {h.name for h in content.hparam_infos}
    assert {"model", "embedding_dim", "tower_units", "learning_rate", "batch_size"} <= names
    # TensorBoard finds a session's metrics in run <session>/<group>: the
    # session is "." with --logdir=RUN and the run's name with --logdir=runs.
    metrics = [m.name for m in content.metric_infos]
    assert {m.tag for m in metrics} >= {"test/auc/ctr_auc", "test/auc/ctcvr_auc"}
    parent, name = os.path.split(run)
    for session, logdir in ((".", run), (name, parent)):
        for m in metrics:
            found, tag = hparams_metrics.run_tag_from_session_and_metric(session, m)
            runs = _run_names(logdir)
            assert found in runs, (session, m, found, runs)
            assert tag in _read(os.path.join(logdir, found)).Tags()["tensors"], (session, m)
    session = hparams_metadata.parse_session_start_info_plugin_data(
        acc.SummaryMetadata(hparams_metadata.SESSION_START_INFO_TAG).plugin_data.content
    )
    assert isinstance(session, plugin_data_pb2.SessionStartInfo)
    assert session.hparams["model"].string_value == "esmm"
    assert session.hparams["embedding_dim"].number_value == 4
    assert session.hparams["tower_units"].string_value == "16,8"
    # config.json as text.
    assert _plugin(acc, "config") == "text"
    text = tensor_util.make_ndarray(acc.Tensors("config")[0].tensor_proto)
    assert b'"embedding_dim": 4' in text.item()


def test_calibration_layout_puts_observed_beside_mean_prediction(run):
    """The Custom Scalars dashboard's layout: one chart per head with the
    eval run's observed rate and mean prediction."""
    import re

    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata

    acc = _read(run)
    layout = layout_pb2.Layout()
    layout.ParseFromString(
        tensor_util.make_ndarray(
            acc.Tensors(custom_scalar_metadata.CONFIG_SUMMARY_TAG)[0].tensor_proto
        ).item()
    )
    eval_tags = _read(run_dir.events_dir(run, run_dir.EVAL_EVENTS)).Tags()["tensors"]
    charts = {c.title: c.multiline.tag for cat in layout.category for c in cat.chart}
    for head in F.OUTPUT_KEYS:
        matched = {t for t in eval_tags for r in charts[head] if re.search(r, t)}
        assert matched == {f"calibration/{head}_observed", f"calibration/{head}_mean_pred"}
