"""Tests for esmm_tf.losses: a hand-computed batch, extreme logits, edge cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf.losses import bce_with_logits, ctcvr_log_probs, esmm_loss


def test_hand_computed_tiny_batch():
    # pCTR = 3/4, 1/2, 1/5 and pCVR = 1/2, 3/4, 1/3, so pCTCVR = 3/8, 3/8, 1/15.
    ctr_logit = tf.constant([math.log(3.0), 0.0, -math.log(4.0)])
    cvr_logit = tf.constant([0.0, math.log(3.0), -math.log(2.0)])
    click = tf.constant([1, 1, 0])
    conversion = tf.constant([1, 0, 0])  # CTCVR labels 1, 0, 0
    out = esmm_loss(click, conversion, ctr_logit, cvr_logit)
    ctr = -(math.log(3 / 4) + math.log(1 / 2) + math.log(4 / 5)) / 3
    ctcvr = -(math.log(3 / 8) + math.log(5 / 8) + math.log(14 / 15)) / 3
    assert float(out["ctr"]) == pytest.approx(ctr, rel=1e-6)
    assert float(out["ctcvr"]) == pytest.approx(ctcvr, rel=1e-6)
    assert float(out["total"]) == pytest.approx(ctr + ctcvr, rel=1e-6)

    weighted = esmm_loss(click, conversion, ctr_logit, cvr_logit, sample_weight=[2.0, 0.0, 1.0])
    ctr_w = -(2 * math.log(3 / 4) + math.log(4 / 5)) / 3  # divided by n, not sum(w)
    assert float(weighted["ctr"]) == pytest.approx(ctr_w, rel=1e-6)
    per_replica = esmm_loss(click, conversion, ctr_logit, cvr_logit, global_batch_size=6)
    assert float(per_replica["ctr"]) == pytest.approx(ctr / 2, rel=1e-6)


def test_ctcvr_log_probs_and_bce_hand_values():
    log_p, log_1mp = ctcvr_log_probs([math.log(3.0)], [0.0])
    np.testing.assert_allclose(log_p.numpy(), [math.log(3 / 8)], rtol=1e-6)
    np.testing.assert_allclose(log_1mp.numpy(), [math.log(5 / 8)], rtol=1e-6)
    bce = bce_with_logits(tf.constant([1.0, 0.0]), tf.constant([[math.log(3.0)], [0.0]]))
    np.testing.assert_allclose(bce.numpy(), [-math.log(3 / 4), math.log(2.0)], rtol=1e-6)


def _naive(click, conversion, a, b):
    p_ctr = 1 / (1 + np.exp(-a))
    p_ctcvr = p_ctr / (1 + np.exp(-b))
    y, yz = click, click * conversion
    ctr = -np.mean(y * np.log(p_ctr) + (1 - y) * np.log(1 - p_ctr))
    ctcvr = -np.mean(yz * np.log(p_ctcvr) + (1 - yz) * np.log(1 - p_ctcvr))
    return ctr, ctcvr


def test_equals_naive_formula_for_moderate_logits():
    rng = np.random.default_rng(0)
    n = 1000
    a = rng.normal(scale=3.0, size=n)
    b = rng.normal(scale=3.0, size=n)
    click = (rng.random(n) < 0.4).astype(np.float64)
    conversion = click * (rng.random(n) < 0.3)
    out = esmm_loss(click, conversion, a.astype(np.float32), b.astype(np.float32))
    ctr, ctcvr = _naive(click, conversion, a.astype(np.float32), b.astype(np.float32))
    assert float(out["ctr"]) == pytest.approx(ctr, rel=1e-5)
    assert float(out["ctcvr"]) == pytest.approx(ctcvr, rel=1e-5)


def test_extreme_logits_give_finite_loss_and_gradients():
    values = [-1e4, -30.0, 0.0, 30.0, 1e4]
    combos = list(itertools.product(values, values, [0, 1], [0, 1]))
    a = tf.Variable([c[0] for c in combos], dtype=tf.float32)
    b = tf.Variable([c[1] for c in combos], dtype=tf.float32)
    click = tf.constant([c[2] for c in combos])
    conversion = tf.constant([c[3] for c in combos])
    with tf.GradientTape() as tape:
        out = esmm_loss(click, conversion, a, b)
    grads = tape.gradient(out["total"], [a, b])
    assert all(np.isfinite(float(out[k])) for k in ("total", "ctr", "ctcvr"))
    for g in grads:
        assert np.all(np.isfinite(g.numpy()))
    # Confident and right costs ~0; confident and wrong costs ~|logit|.
    right = esmm_loss([1], [1], [1e4], [1e4])["total"]
    wrong = esmm_loss([0], [0], [1e4], [1e4])
    assert float(right) == pytest.approx(0.0, abs=1e-6)
    assert float(wrong["ctr"]) == pytest.approx(1e4, rel=1e-6)
    assert float(wrong["ctcvr"]) == pytest.approx(1e4 - math.log(2.0), rel=1e-6)


def test_gradient_matches_naive_at_moderate_logits():
    a = tf.Variable([0.3, -1.2, 2.0])
    b = tf.Variable([-0.5, 0.7, 0.0])
    click, conversion = tf.constant([1.0, 0.0, 1.0]), tf.constant([1.0, 0.0, 0.0])
    with tf.GradientTape(persistent=True) as tape:
        stable = esmm_loss(click, conversion, a, b)["total"]
        p_ctr, p_ctcvr = tf.sigmoid(a), tf.sigmoid(a) * tf.sigmoid(b)
        yz = click * conversion
        naive = -tf.reduce_mean(click * tf.math.log(p_ctr) + (1 - click) * tf.math.log(1 - p_ctr))
        naive -= tf.reduce_mean(yz * tf.math.log(p_ctcvr) + (1 - yz) * tf.math.log(1 - p_ctcvr))
    for s, n in zip(tape.gradient(stable, [a, b]), tape.gradient(naive, [a, b]), strict=True):
        np.testing.assert_allclose(s.numpy(), n.numpy(), rtol=1e-5, atol=1e-7)


def test_empty_batch_is_zero_not_nan():
    empty = tf.zeros([0])
    out = esmm_loss(empty, empty, empty, empty)
    for key in ("total", "ctr", "ctcvr"):
        assert float(out[key]) == 0.0


def test_works_in_tf_function_with_unknown_batch():
    spec = tf.TensorSpec([None], tf.float32)
    fn = tf.function(lambda y, z, a, b: esmm_loss(y, z, a, b)["total"]).get_concrete_function(
        spec, spec, spec, spec
    )
    assert np.isfinite(float(fn(tf.ones([2]), tf.zeros([2]), tf.ones([2]), tf.ones([2]))))
    assert float(fn(tf.zeros([0]), tf.zeros([0]), tf.zeros([0]), tf.zeros([0]))) == 0.0


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="click"):
        esmm_loss(tf.ones([3]), tf.ones([3]), tf.ones([4]), tf.ones([4]))
    with pytest.raises(ValueError, match="cvr_logit"):
        ctcvr_log_probs(tf.ones([3]), tf.ones([2]))
