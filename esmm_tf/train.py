"""Train a model: ``python -m esmm_tf.train --flagfile=experiments/esmm.flags
--data_dir=DATA --model_dir=RUN [--export_dir=EXPORT]``.

Every field of ``esmm_tf.config.Config`` is a flag of the same name. Re-running
the same command resumes from the last checkpoint in ``--model_dir``. On a
cluster every worker runs the same command with its own ``TF_CONFIG`` and
``--strategy=multi_worker_mirrored`` (README: "Running on a cluster").
"""

from __future__ import annotations

import os

from absl import app, flags

from esmm_tf import config_flags
from esmm_tf.config import Config

FLAGS = flags.FLAGS


def define_config_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """One absl flag per Config field, with the field's default and help."""
    config_flags.define_flags(Config, flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> Config:
    data_dir = flag_values["data_dir"].value
    if data_dir:  # recorded in config.json: keep it valid from any directory
        data_dir = os.path.abspath(data_dir)
    return config_flags.config_from_flags(Config, flag_values, data_dir=data_dir)


def main(argv) -> None:
    from esmm_tf.cli import no_arguments

    no_arguments(argv)
    from esmm_tf import data_layout, distribute, files, training_run
    from esmm_tf.cli import one_line_errors

    expected = (ValueError, FileNotFoundError, data_layout.DatasetError, training_run.TrainingError)
    with one_line_errors(f"--model_dir={FLAGS.model_dir}", expected):
        config = config_from_flags()
        files.check_directory(FLAGS.model_dir, "--model_dir")
        if FLAGS.export_dir:  # before hours of training, not after
            files.check_directory(FLAGS.export_dir, "--export_dir")
        strategy = distribute.make_strategy(config.strategy)  # before any TensorFlow op
        training_run.train_and_evaluate(
            config, FLAGS.model_dir, export_dir=FLAGS.export_dir, strategy=strategy
        )


def define_flags() -> None:
    """The flags of this entry point: the Config fields, --model_dir, --export_dir."""
    define_config_flags()
    flags.DEFINE_string("model_dir", None, "Checkpoints, config.json and TensorBoard events.")
    flags.DEFINE_string("export_dir", None, "If set, export a SavedModel version here at the end.")
    flags.mark_flag_as_required("model_dir")


if __name__ == "__main__":
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()
    define_flags()
    app.run(main)
