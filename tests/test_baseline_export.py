"""Every model family exports the same serving signature (ctr, cvr, ctcvr)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import data_layout
from esmm_tf import features as F
from esmm_tf.export import export_saved_model
from esmm_tf.model import build_model


def _requests(data_dir: str, n: int = 5) -> list[bytes]:
    """Per-impression serving Examples: the first impressions of a test record."""
    path = data_layout.shard_files(data_dir, "test")[0]
    record = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(path))).numpy())
    feats = record.features.feature
    out = []
    for i in range(n):
        ex = tf.train.Example()
        for field in F.FIELDS:
            ids = list(feats[field.ids_key].int64_list.value)
            weights = list(feats[field.weights_key].float_list.value) if field.weighted else []
            if not field.user_side:
                lengths = list(feats[field.lengths_key].int64_list.value)
                start = sum(lengths[:i])
                ids = ids[start : start + lengths[i]]
                weights = weights[start : start + lengths[i]] if field.weighted else []
            ex.features.feature[field.ids_key].int64_list.value.extend(ids)
            if field.weighted:
                ex.features.feature[field.weights_key].float_list.value.extend(weights)
        out.append(ex.SerializeToString())
    return out


@pytest.mark.parametrize("model_name", ["base", "division", "esmm_ns"])
def test_baselines_export_the_same_signature(model_name, tiny_config, tmp_path):
    config = dataclasses.replace(tiny_config, model=model_name)
    model = build_model(config)
    path = export_saved_model(model, str(tmp_path / "export"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    out = serve(examples=tf.constant(_requests(config.data_dir)))
    assert sorted(out) == sorted(F.OUTPUT_KEYS)
    ctr, cvr, ctcvr = (out[k].numpy() for k in (F.CTR, F.CVR, F.CTCVR))
    assert ctr.shape == (5,)
    np.testing.assert_allclose(ctcvr, ctr * cvr, rtol=1e-6)
    assert np.all((cvr >= 0) & (cvr <= 1))
