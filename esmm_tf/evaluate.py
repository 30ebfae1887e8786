"""Evaluate a trained model: ``python -m esmm_tf.evaluate --model_dir=RUN
--data_dir=DATA [--split=test] [--output_json=FILE]``.

Restores the last checkpoint of ``--model_dir`` (its config.json rebuilds the
model), streams the split once and prints exact AUCs and calibration.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS


def restore_model(model_dir: str, data_dir: str | None = None):
    """(config, model, checkpoint path): the model of a training run, rebuilt
    from its config.json and restored from its last checkpoint."""
    import tensorflow as tf

    from esmm_tf import config as config_lib
    from esmm_tf import trainer
    from esmm_tf.model import build_model

    config = config_lib.load(model_dir)
    if data_dir:
        config = dataclasses.replace(config, data_dir=data_dir)
    model = build_model(config)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model), f"{model_dir}/{trainer.CHECKPOINT_DIR}", max_to_keep=None
    )
    if not manager.latest_checkpoint:
        raise FileNotFoundError(f"no checkpoint in {model_dir}/{trainer.CHECKPOINT_DIR}")
    status = tf.train.Checkpoint(model=model).restore(manager.latest_checkpoint)
    status.assert_existing_objects_matched().expect_partial()  # optimizer slots unused
    return config, model, manager.latest_checkpoint


def split_impressions(data_dir: str, split: str) -> int | None:
    """The split's impression count from the dataset's stats.json, or None."""
    from esmm_tf import data_layout

    try:
        with open(data_layout.stats_file(data_dir)) as f:
            return int(json.load(f)["splits"][split]["impressions"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def evaluate_model_dir(
    model_dir: str, data_dir: str | None = None, split: str = "test", show_progress: bool = False
) -> dict:
    from esmm_tf import data_layout, evaluation, shards, trainer
    from esmm_tf.progress import Progress

    config, model, checkpoint = restore_model(model_dir, data_dir)
    files = data_layout.shard_files(config.data_dir, split)
    progress = Progress(
        f"evaluate {split}",
        total=split_impressions(config.data_dir, split),
        unit="imp",
        enabled=show_progress,
    )
    with shards.naming_corrupt_shards(files):
        metrics = evaluation.evaluate(
            model, trainer.eval_dataset(config, split, files), progress=progress
        )
    metrics["checkpoint"] = checkpoint
    metrics["model"] = config.model
    return metrics


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from esmm_tf import data_layout, evaluation

    try:
        metrics = evaluate_model_dir(
            FLAGS.model_dir, FLAGS.data_dir, FLAGS.split, show_progress=FLAGS.progress
        )
    except (FileNotFoundError, data_layout.DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(evaluation.format_table(metrics, f"{metrics['model']} on {FLAGS.split}"))
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(metrics, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()
    flags.DEFINE_string("model_dir", None, "The --model_dir of a training run.")
    flags.DEFINE_string("data_dir", None, "Dataset (default: the one the model trained on).")
    flags.DEFINE_enum("split", "test", ["train", "test"], "Split to evaluate.")
    flags.DEFINE_string("output_json", None, "Also write the metrics here.")
    flags.DEFINE_bool(
        "progress",
        True,
        "Report impressions done, rate and ETA on stderr (a redrawn line on a terminal, "
        "a plain line every 15 s in a log file).",
    )
    flags.mark_flag_as_required("model_dir")
    app.run(main)
