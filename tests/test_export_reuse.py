"""Exporting the same checkpoint twice reuses the version (make demo re-runs)."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from esmm_tf import serving
from esmm_tf.model import build_model
from tests.helpers import small_config

# Exports SavedModels (tens of seconds).
pytestmark = pytest.mark.slow


def versions(export_dir: str) -> list[str]:
    return sorted(n for n in os.listdir(export_dir) if not n.startswith("."))


def test_same_checkpoint_reuses_the_newest_version(tiny_data_dir, tmp_path):
    model = build_model(small_config(tiny_data_dir))
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model), str(tmp_path / "ckpt"), max_to_keep=None
    )
    export_dir = str(tmp_path / "export")
    first_ckpt = manager.save()
    first = serving.export_saved_model(model, export_dir, source_checkpoint=first_ckpt)
    assert serving.export_of(export_dir, first_ckpt) == first
    again = serving.export_saved_model(model, export_dir, source_checkpoint=first_ckpt)
    assert again == first and versions(export_dir) == [os.path.basename(first)]

    # New weights, new checkpoint: a new version, and the old one no longer matches.
    model.trainable_variables[0].assign_add(tf.ones_like(model.trainable_variables[0]))
    second_ckpt = manager.save()
    second = serving.export_saved_model(model, export_dir, source_checkpoint=second_ckpt)
    assert second != first and len(versions(export_dir)) == 2
    assert serving.export_of(export_dir, first_ckpt) is None

    # Without a source (or with an explicit version) it always writes.
    third = serving.export_saved_model(model, export_dir)
    assert third not in (first, second) and len(versions(export_dir)) == 3
    assert serving.export_of(export_dir, second_ckpt) is None  # the newest has no source
