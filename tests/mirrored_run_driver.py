"""``python -m tests.mirrored_run_driver DATA_DIR MODEL_DIR``: a whole training
run (``TrainingRun``) under ``--strategy=mirrored`` on two logical CPU
devices, with a validation split and an export. Prints the final metrics as
JSON (the logical devices must be set before TensorFlow initialises, hence a
process of its own)."""

from __future__ import annotations

import json
import os
import sys

import tensorflow as tf


def main(data_dir: str, model_dir: str) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from esmm_tf import distribute, training_run
    from tests.helpers import make_tiny_config

    config = make_tiny_config(
        data_dir,
        strategy="mirrored",
        validation_fraction=0.2,
        eval_every_steps=5,
        early_stopping_metric="ctr_auc",  # the tiny validation split has no conversion
    )
    strategy = distribute.make_strategy(config.strategy)
    assert strategy.num_replicas_in_sync == 2
    metrics = training_run.train_and_evaluate(
        config, model_dir, os.path.join(model_dir, "export"), strategy
    )
    print(json.dumps({k: metrics[k] for k in ("step", "ctr_auc", "ctcvr_auc", "export_path")}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
