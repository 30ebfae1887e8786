"""Evaluate a trained model: ``python -m esmm_tf.evaluate --model_dir=RUN
[--data_dir=DATA] [--split=test] [--checkpoint=auto] [--output_json=FILE]``.

Rebuilds the run's model from its config.json and its own vocabulary copy
(esmm_tf/run_dir.py), restores the checkpoint it serves (the best on the
validation split when it has one, else the last), streams the split once and
prints exact AUCs and calibration. ``--data_dir`` may be any conversion of
any day's logs: raw ids the run never saw map to its OOV rows.
"""

from __future__ import annotations

import dataclasses
import os

from absl import app

from esmm_tf import config_flags, data_layout, files
from esmm_tf.config_flags import option
from esmm_tf.run_dir import CHECKPOINT_CHOICES


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The command line of ``python -m esmm_tf.evaluate`` (one flag per field)."""

    model_dir: str = option(help="The --model_dir of a training run.")
    data_dir: str | None = option(None, "Dataset (default: the one the model trained on).")
    split: str = option("test", "Split to evaluate.", choices=data_layout.SPLITS)
    checkpoint: str = option(
        "auto",
        "Which checkpoint: auto = the best on the validation split if the run has one, "
        "else the last.",
        choices=CHECKPOINT_CHOICES,
    )
    output_json: str | None = option(None, "Also write the metrics here.")
    progress: bool = option(
        True,
        "Report impressions done, rate and ETA on stderr (a redrawn line on a terminal, "
        "a plain line every 15 s in a log file).",
    )


def restore_model(model_dir: str, data_dir: str | None = None, checkpoint: str = "auto"):
    """(config, model, checkpoint path): see ``esmm_tf.run_dir.restore``;
    ``data_dir`` replaces the config's dataset (the data to score)."""
    from esmm_tf import run_dir

    config, model, path = run_dir.restore(model_dir, checkpoint)
    if data_dir:
        config = dataclasses.replace(config, data_dir=data_dir)
    return config, model, path


def evaluate_model_dir(
    model_dir: str,
    data_dir: str | None = None,
    split: str = "test",
    show_progress: bool = False,
    checkpoint: str = "auto",
) -> dict:
    from esmm_tf import evaluator, shards, training_run
    from esmm_tf.progress import Progress

    config, model, path = restore_model(model_dir, data_dir, checkpoint)
    files = data_layout.shard_files(config.data_dir, split)
    progress = Progress(
        f"evaluate {split}",
        total=data_layout.split_impressions(config.data_dir, split),
        unit="imp",
        enabled=show_progress,
    )
    with shards.naming_corrupt_shards(files):
        metrics = evaluator.evaluate(
            model, training_run.eval_dataset(config, split, files), progress=progress
        )
    metrics["checkpoint"] = path
    metrics["model"] = config.model
    metrics["data_dir"] = config.data_dir
    return metrics


def check_output_json(path: str, model_dir: str, data_dir: str | None = None) -> None:
    """Refuses, before evaluating, an ``--output_json`` that would destroy data:
    an existing file of the run or of the data it scores (e.g. the run's
    config.json or eval_metrics.json, the data's stats.json; a new file there,
    or metrics this command wrote there, are fine), a directory, or an existing
    file elsewhere that is not metrics written by this command (those are
    replaced: a rerun updates them)."""
    from esmm_tf import run_dir

    if data_dir is None:
        data_dir = run_dir.load_config(model_dir).data_dir
    files.check_output(
        path,
        "--output_json",
        {"--model_dir": model_dir, "--data_dir": data_dir},
        _is_metrics,
        "metrics written by esmm_tf.evaluate",
        replaceable_inside=_is_own_metrics,
    )


def _is_own_metrics(path: str) -> bool:
    """A file of the run or the data that evaluate may replace: metrics it
    wrote there (e.g. RUN/test.json), never the run's own eval_metrics.json."""
    from esmm_tf import run_dir

    return os.path.basename(path) != run_dir.EVAL_FILE and _is_metrics(path)


def _is_metrics(path: str) -> bool:
    import json

    try:
        with open(path) as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(metrics, dict) and {"ctcvr_auc", "checkpoint", "model"} <= set(metrics)


def main(argv) -> None:
    from esmm_tf.cli import no_arguments

    no_arguments(argv)
    from esmm_tf import evaluator
    from esmm_tf.cli import one_line_errors

    config = config_flags.config_from_flags(EvaluateConfig)
    expected = (FileNotFoundError, ValueError, data_layout.DatasetError)
    with one_line_errors(f"--model_dir={config.model_dir}", expected):
        if config.output_json:
            check_output_json(config.output_json, config.model_dir, config.data_dir)
        metrics = evaluate_model_dir(
            config.model_dir,
            config.data_dir,
            config.split,
            show_progress=config.progress,
            checkpoint=config.checkpoint,
        )
    print(evaluator.format_table(metrics, f"{metrics['model']} on {config.split}"))
    if config.output_json:
        with one_line_errors(f"--output_json={config.output_json}"):
            files.write_json(config.output_json, metrics)


def define_flags() -> None:
    config_flags.define_flags(EvaluateConfig)


if __name__ == "__main__":
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()
    define_flags()
    app.run(main)
