"""Every model family exports the same serving signature (ctr, cvr, ctcvr)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import data_layout
from esmm_tf import features as F
from esmm_tf.model import build_model
from esmm_tf.serving import export_saved_model
from esmm_tf.serving_requests import impression_examples, read_records

# Trains every model for an epoch.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model_name", ["base", "division", "esmm_ns", "escm2_dr"])
def test_baselines_export_the_same_signature(model_name, tiny_config, tmp_path):
    config = dataclasses.replace(tiny_config, model=model_name)
    model = build_model(config)
    path = export_saved_model(model, str(tmp_path / "export"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    out = serve(
        examples=tf.constant(
            impression_examples(
                read_records(data_layout.shard_files(config.data_dir, "test"), 1)[0]
            )[:5]
        )
    )
    assert sorted(out) == sorted(F.OUTPUT_KEYS)
    ctr, cvr, ctcvr = (out[k].numpy() for k in (F.CTR, F.CVR, F.CTCVR))
    assert ctr.shape == (5,)
    np.testing.assert_allclose(ctcvr, ctr * cvr, rtol=1e-6)
    assert np.all((cvr >= 0) & (cvr <= 1))
