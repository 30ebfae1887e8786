"""Per-model objectives (the paper's rows) on hand-made batches."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import features as F
from esmm_tf import losses, objectives, registry
from esmm_tf.config import Config
from esmm_tf.model import Heads


def _config(model: str, **kwargs) -> Config:
    return Config(data_dir="unused", model=model, **kwargs)


def _bce(y, logit):
    p = 1 / (1 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


LABELS = {
    F.CLICK: tf.constant([1.0, 1.0, 0.0, 0.0]),
    F.CONVERSION: tf.constant([1.0, 0.0, 0.0, 0.0]),
    F.SAMPLE_ID: tf.constant([11, 12, 13, 14], tf.int64),
}
CTR_LOGITS = [0.5, -1.0, 2.0, -0.3]
SECOND_LOGITS = [1.5, 0.2, -0.7, 0.1]


def _outputs(model: str) -> dict:
    second = registry.get(model).second_head
    return Heads(second)(tf.constant(CTR_LOGITS)[:, None], tf.constant(SECOND_LOGITS)[:, None])


def test_base_trains_cvr_on_clicked_only():
    loss = objectives.loss(_config("base"), LABELS, _outputs("base"))
    ctr = np.mean([_bce(y, a) for y, a in zip([1, 1, 0, 0], CTR_LOGITS, strict=True)])
    cvr = (_bce(1, SECOND_LOGITS[0]) + _bce(0, SECOND_LOGITS[1])) / 2
    assert float(loss["ctr"]) == pytest.approx(ctr, rel=1e-5)
    assert float(loss["cvr"]) == pytest.approx(cvr, rel=1e-5)
    assert float(loss["total"]) == pytest.approx(ctr + cvr, rel=1e-5)


def test_oversampling_counts_conversions_k_times():
    loss = objectives.loss(_config("oversampling", oversampling_k=3), LABELS, _outputs("base"))
    cvr = (3 * _bce(1, SECOND_LOGITS[0]) + _bce(0, SECOND_LOGITS[1])) / 4
    assert float(loss["cvr"]) == pytest.approx(cvr, rel=1e-5)


def test_aman_adds_sampled_unclicked_negatives():
    config = _config("aman", aman_negative_rate=0.5)
    n = 20000
    labels = {
        F.CLICK: tf.concat([tf.ones(100), tf.zeros(n)], 0),
        F.CONVERSION: tf.zeros(n + 100),
        F.SAMPLE_ID: tf.range(n + 100, dtype=tf.int64),
    }
    w = objectives.cvr_sample_weights(config, labels, tf.zeros(n + 100)).numpy()
    assert np.all(w[:100] == 1)  # every click
    assert set(np.unique(w[100:])) == {0.0, 1.0}
    assert w[100:].mean() == pytest.approx(0.5, abs=0.02)
    # Reproducible, and a different seed samples differently.
    again = objectives.cvr_sample_weights(config, labels, tf.zeros(n + 100)).numpy()
    np.testing.assert_array_equal(w, again)
    other = objectives.cvr_sample_weights(
        dataclasses.replace(config, seed=1), labels, tf.zeros(n + 100)
    ).numpy()
    assert not np.array_equal(w, other)


def test_unbias_keeps_clicks_with_probability_min_ctr_over_pctr():
    config = _config("unbias", unbias_min_ctr=0.05)
    n = 20000
    labels = {
        F.CLICK: tf.ones(n),
        F.CONVERSION: tf.zeros(n),
        F.SAMPLE_ID: tf.range(n, dtype=tf.int64),
    }
    pctr = np.where(np.arange(n) < n // 2, 0.5, 0.01).astype(np.float32)
    logits = tf.constant(np.log(pctr / (1 - pctr)))
    w = objectives.cvr_sample_weights(config, labels, logits).numpy()
    assert w[: n // 2].mean() == pytest.approx(0.1, abs=0.015)  # 0.05 / 0.5
    assert np.all(w[n // 2 :] == 1)  # pCTR below the floor: always kept
    unclicked = dict(labels, **{F.CLICK: tf.zeros(n)})
    assert objectives.cvr_sample_weights(config, unclicked, logits).numpy().sum() == 0


def test_unbias_gives_no_gradient_through_pctr():
    config = _config("unbias")
    logits = tf.Variable([0.1, 0.2, 0.3, 0.4])
    with tf.GradientTape() as tape:
        w = objectives.cvr_sample_weights(config, LABELS, logits)
    assert tape.gradient(w, logits) is None


def test_division_predicts_ctcvr_and_derives_clipped_cvr():
    out = _outputs("division")
    ctr = tf.sigmoid(tf.constant(CTR_LOGITS))
    ctcvr_net = tf.sigmoid(tf.constant(SECOND_LOGITS))
    np.testing.assert_allclose(
        out[F.CVR].numpy(), np.clip((ctcvr_net / ctr).numpy(), 0, 1), rtol=1e-6
    )
    np.testing.assert_allclose(out[F.CTCVR].numpy(), (out[F.CTR] * out[F.CVR]).numpy(), rtol=1e-6)
    loss = objectives.loss(_config("division"), LABELS, out)
    ctcvr = np.mean([_bce(y, b) for y, b in zip([1, 0, 0, 0], SECOND_LOGITS, strict=True)])
    assert float(loss["ctcvr"]) == pytest.approx(ctcvr, rel=1e-5)


def test_esmm_objective_is_the_esmm_loss():
    loss = objectives.loss(_config("esmm"), LABELS, _outputs("esmm"))
    expected = 0.0
    for y, z, a, b in zip([1, 1, 0, 0], [1, 0, 0, 0], CTR_LOGITS, SECOND_LOGITS, strict=True):
        p = 1 / (1 + math.exp(-a)) / (1 + math.exp(-b))
        expected += -(y * z * math.log(p) + (1 - y * z) * math.log(1 - p)) / 4
    assert float(loss["ctcvr"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("model", ["base", "division", "esmm"])
def test_empty_batch_gives_zero_loss(model):
    labels = {k: v[:0] for k, v in LABELS.items()}
    out = Heads(registry.get(model).second_head)(tf.zeros([0, 1]), tf.zeros([0, 1]))
    loss = objectives.loss(_config(model), labels, out)
    assert all(float(v) == 0.0 for v in loss.values())


@pytest.mark.parametrize("model", ["esmm", "esmm_ns"])
def test_esmm_objective_equals_losses_esmm_loss(model):
    """The objective (averaging.mean of the elementwise terms) and the
    self-contained losses.esmm_loss agree."""
    out = _outputs(model)
    loss = objectives.loss(_config(model), LABELS, out)
    ref = losses.esmm_loss(
        LABELS[F.CLICK], LABELS[F.CONVERSION], tf.constant(CTR_LOGITS), tf.constant(SECOND_LOGITS)
    )
    assert sorted(loss) == ["ctcvr", "ctr", "total"]
    for k in ref:
        assert float(loss[k]) == pytest.approx(float(ref[k]), rel=1e-6)


def test_cvr_sample_weights_refuses_models_without_click_sampling():
    with pytest.raises(ValueError, match="not a click-sampled model"):
        objectives.cvr_sample_weights(_config("esmm"), LABELS, tf.zeros(4))
