"""Checkpoints hold every variable: a restored model predicts exactly as the
trained one (guards against variables Keras tracks but tf.train.Checkpoint
does not see, e.g. ones kept in a dict attribute)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import data_layout, input_pipeline
from esmm_tf.model import build_model
from esmm_tf.optimizer import Adam


def test_checkpoint_holds_every_variable_and_restores_predictions(tiny_config, tmp_path):
    model = build_model(tiny_config)
    optimizer = Adam()
    optimizer.build(model.trainable_variables)
    for v in model.trainable_variables:  # move away from the initial values
        v.assign(v + tf.random.stateless_normal(v.shape, seed=[1, 2]) * 0.1)
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))

    stored = [
        name
        for name in tf.train.load_checkpoint(path).get_variable_to_shape_map()
        if name.startswith("model/") and "VARIABLE_VALUE" in name
    ]
    assert len(stored) == len(model.trainable_variables)

    files = data_layout.shard_files(tiny_config.data_dir, "test")
    inputs, _ = next(iter(input_pipeline.make_dataset(files, 64, shuffle=False)))
    expected = model(inputs)
    fresh = build_model(tiny_config)
    status = tf.train.Checkpoint(model=fresh).restore(path)
    status.assert_existing_objects_matched().expect_partial()
    got = fresh(inputs)
    for key in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())


def test_a_checkpoint_of_other_shapes_is_one_error_naming_it(tmp_path):
    """TensorFlow's "Received incompatible tensor" becomes a RunError with the
    checkpoint's path and the hint."""
    import tensorflow as tf

    from esmm_tf import run_dir

    path = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0, 3.0])).save(str(tmp_path / "ckpt"))
    other = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(run_dir.RunError, match=f"checkpoint {path} does not match .* retrain"):
        run_dir.restore_checkpoint(other, path, hint="Or retrain.")
