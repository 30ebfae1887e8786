"""TensorBoard summaries of a training run (esmm_tf/training_run.py).

* ``train`` events: each window's losses, AUCs, impressions per second
  (training time only) and learning rate (``write_train_summaries``);
* ``eval`` events: each evaluation under the same loss tags, AUCs and
  calibration (mean prediction beside the observed rate), and the final test
  evaluation under ``test/`` (``write_eval_summaries``);
* the run's root events: the HParams dashboard (config fields as hparams,
  the final test AUCs as metrics), config.json as text, and a Custom Scalars
  layout with one calibration chart per head (``write_hparams``,
  ``write_final_metrics``).
"""

from __future__ import annotations

import dataclasses
import math
import os

import tensorflow as tf

from esmm_tf.config import Config


def write_train_summaries(writer, window, optimizer, step: int) -> float:
    """A train window's scalars (``window``: the run's ``TrainWindow``); returns
    its impressions per second."""
    rate = window.impressions / max(window.seconds, 1e-9)
    result = window.evaluator.result()
    with writer.as_default(step=step):
        for k, v in window.loss_sums.items():
            tf.summary.scalar(f"loss/{k}", v / window.steps)
        for k in ("ctr_auc", "cvr_auc", "ctcvr_auc"):
            if not math.isnan(result[k]):
                tf.summary.scalar(f"auc/{k}", result[k])
        tf.summary.scalar("impressions_per_second", rate)
        tf.summary.scalar("learning_rate", optimizer.learning_rate_value())
    writer.flush()
    return rate


def write_eval_summaries(writer, metrics: dict, step: int, prefix: str = "") -> None:
    """An evaluation's scalars. The losses use the train summaries' tags
    (``loss/<head>``: the log loss of that head on the impressions its train
    loss covers), so one chart compares train and evaluation; calibration
    charts show the mean prediction beside the observed rate."""
    with writer.as_default(step=step):
        for k in ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space"):
            if k in metrics and not math.isnan(metrics[k]):
                tf.summary.scalar(f"{prefix}auc/{k}", metrics[k])
        for head, cal in metrics["calibration"].items():
            observed = cal["observed"]
            if not math.isnan(observed["log_loss"]):
                tf.summary.scalar(f"{prefix}loss/{head}", observed["log_loss"])
            tf.summary.scalar(f"{prefix}calibration/{head}_mean_pred", observed["mean_pred"])
            tf.summary.scalar(f"{prefix}calibration/{head}_observed", observed["mean_target"])
        tf.summary.scalar(f"{prefix}impressions_per_second", metrics["impressions_per_second"])
    writer.flush()


HPARAMS_METRICS = ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space")


def write_hparams(model_dir: str, config: Config) -> None:
    """The run's configuration in TensorBoard: the HParams dashboard (the config
    fields as hparams; the final test AUCs, ``test/auc/*`` in the run's root
    events written by ``write_final_metrics``, as metrics, so several runs
    compare in one table), config.json as text, and a Custom Scalars layout
    that draws each head's observed rate and mean prediction in one chart."""
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import summary as custom_scalar
    from tensorboard.plugins.hparams import api as hp

    values = {}
    for key, value in dataclasses.asdict(config).items():
        if isinstance(value, bool | int | float | str):
            values[key] = value
        else:
            values[key] = ",".join(str(v) for v in value)
    heads = ("ctr", "cvr", "ctcvr")
    layout = layout_pb2.Layout(
        category=[
            layout_pb2.Category(
                title="calibration: observed rate vs mean prediction (eval run)",
                chart=[
                    layout_pb2.Chart(
                        title=head,
                        multiline=layout_pb2.MultilineChartContent(
                            tag=[rf"^calibration/{head}_(observed|mean_pred)$"]
                        ),
                    )
                    for head in heads
                ],
            )
        ]
    )
    writer = tf.summary.create_file_writer(model_dir)
    with writer.as_default(step=0):
        # The metrics are in the session's own run (group ""): TensorBoard looks
        # them up in <session>/<group>, and the session of --logdir=RUN is "."
        # ("./eval" would match no run).
        hp.hparams_config(
            hparams=[hp.HParam(k) for k in sorted(values)],
            metrics=[hp.Metric(f"test/auc/{k}", display_name=k) for k in HPARAMS_METRICS],
        )
        hp.hparams(values, trial_id=os.path.basename(os.path.abspath(model_dir)))
        tf.summary.text("config", "```\n" + config.to_json() + "```")
        tf.summary.experimental.write_raw_pb(custom_scalar.pb(layout).SerializeToString())
    writer.flush()
    writer.close()


def write_final_metrics(model_dir: str, metrics: dict, step: int) -> None:
    """The final test AUCs in the run's root events, beside its hparams: the
    HParams dashboard's metrics (also under the same tags in the eval run)."""
    writer = tf.summary.create_file_writer(model_dir)
    with writer.as_default(step=step):
        for k in HPARAMS_METRICS:
            if k in metrics and not math.isnan(metrics[k]):
                tf.summary.scalar(f"test/auc/{k}", metrics[k])
    writer.flush()
    writer.close()
