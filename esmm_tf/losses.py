"""The ESMM loss, computed stably from logits.

ESMM (Ma et al. 2018, eq. 2-3) trains over all impressions with

    L = BCE(click, pCTR) + BCE(click * conversion, pCTCVR),
    pCTR = sigmoid(a),  pCVR = sigmoid(b),  pCTCVR = pCTR * pCVR,

where a and b are the CTR and CVR towers' logits. pCVR has no loss term of
its own.

Reduction: each term is the MEAN over the impressions of the batch (or over
``global_batch_size`` under a distribution strategy). The paper writes sums;
a mean differs only by a constant factor (the batch size), i.e. a learning-rate
scale, and keeps the loss comparable across batch sizes. (``esmm_loss`` is the
self-contained form; the training objectives, ``esmm_tf/objectives.py``, take
the elementwise terms and average them with ``esmm_tf.averaging.mean``, the
replica-aware rule every model shares.)

Numerics: everything is computed in log space from the logits, never as
log(p1 * p2) on rounded probabilities:

    log pCTCVR       = log_sigmoid(a) + log_sigmoid(b)
    log(1 - pCTCVR)  = logaddexp(log_sigmoid(-a), log_sigmoid(a) + log_sigmoid(-b))

using 1 - s(a)s(b) = s(-a) + s(a)s(-b), a sum of two positive terms (no
cancellation). Loss and gradients are finite for logits of +-1e4 in any
combination.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["bce_with_logits", "ctcvr_bce", "ctcvr_log_probs", "esmm_loss"]


def _as_logits(logits: tf.Tensor) -> tf.Tensor:
    """Flattens logits to [n] and computes in float32 (float64 is kept)."""
    logits = tf.convert_to_tensor(logits)
    if logits.dtype != tf.float64:
        logits = tf.cast(logits, tf.float32)
    return tf.reshape(logits, [-1])


def _as_labels(labels: tf.Tensor, like: tf.Tensor, name: str) -> tf.Tensor:
    """Flattens labels to [n] in the logits' dtype; checks static sizes."""
    labels = tf.reshape(tf.cast(labels, like.dtype), [-1])
    if not labels.shape.is_compatible_with(like.shape):
        raise ValueError(
            f"{name} has {labels.shape[0]} entries but the logits have {like.shape[0]}"
        )
    return labels


def _logaddexp(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """log(exp(x) + exp(y)) with the softmax gradient (correct at x == y too)."""
    m = tf.stop_gradient(tf.maximum(x, y))
    return m + tf.math.log(tf.exp(x - m) + tf.exp(y - m))


def bce_with_logits(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Elementwise binary cross-entropy -[y log s(x) + (1 - y) log s(-x)].

    Args:
      labels: 0/1 (or soft, in [0, 1]) labels, any numeric dtype, shape [n].
      logits: logits, shape [n] (flattened).

    Returns:
      Per-example losses, shape [n], float32 (float64 for float64 logits).
    """
    logits = _as_logits(logits)
    labels = _as_labels(labels, logits, "labels")
    return -(labels * tf.math.log_sigmoid(logits) + (1.0 - labels) * tf.math.log_sigmoid(-logits))


def ctcvr_log_probs(ctr_logit: tf.Tensor, cvr_logit: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """log pCTCVR and log(1 - pCTCVR) for pCTCVR = sigmoid(a) * sigmoid(b).

    Args:
      ctr_logit: CTR logits a, shape [n].
      cvr_logit: CVR logits b, shape [n].

    Returns:
      ``(log_p, log_1mp)``, each shape [n], finite for any finite logits.
    """
    a = _as_logits(ctr_logit)
    b = _as_logits(cvr_logit)
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(f"ctr_logit has {a.shape[0]} entries but cvr_logit has {b.shape[0]}")
    log_sig_a = tf.math.log_sigmoid(a)
    log_p = log_sig_a + tf.math.log_sigmoid(b)
    log_1mp = _logaddexp(tf.math.log_sigmoid(-a), log_sig_a + tf.math.log_sigmoid(-b))
    return log_p, log_1mp


def ctcvr_bce(
    click: tf.Tensor, conversion: tf.Tensor, ctr_logit: tf.Tensor, cvr_logit: tf.Tensor
) -> tf.Tensor:
    """Elementwise BCE(click * conversion, pCTR * pCVR), in log space.

    Args:
      click, conversion: 0/1 labels, shape [n] (a conversion without a click
        is a CTCVR negative).
      ctr_logit, cvr_logit: the towers' logits a, b, shape [n].

    Returns:
      Per-impression losses, shape [n], finite for any finite logits.
    """
    a = _as_logits(ctr_logit)
    label = _as_labels(click, a, "click") * _as_labels(conversion, a, "conversion")
    log_p, log_1mp = ctcvr_log_probs(a, cvr_logit)
    return -(label * log_p + (1.0 - label) * log_1mp)


def _mean(
    per_example: tf.Tensor,
    sample_weight: tf.Tensor | None,
    global_batch_size: int | tf.Tensor | None,
) -> tf.Tensor:
    """sum(w * loss) / batch size; 0 for an empty batch."""
    if sample_weight is not None:
        per_example = per_example * _as_labels(sample_weight, per_example, "sample_weight")
    if global_batch_size is None:
        denom = tf.cast(tf.size(per_example), per_example.dtype)
    else:
        denom = tf.cast(global_batch_size, per_example.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_example), denom)


def esmm_loss(
    click: tf.Tensor,
    conversion: tf.Tensor,
    ctr_logit: tf.Tensor,
    cvr_logit: tf.Tensor,
    sample_weight: tf.Tensor | None = None,
    global_batch_size: int | tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """The ESMM loss over a batch of impressions.

    Args:
      click: click labels y (0/1, int or float), shape [n].
      conversion: conversion labels z (0/1), shape [n]; the CTCVR label is
        ``click * conversion``, so a stray conversion without a click counts
        as a CTCVR negative.
      ctr_logit: CTR tower logits, shape [n] (a trailing [n, 1] is flattened).
      cvr_logit: CVR tower logits, shape [n].
      sample_weight: optional per-impression weights, shape [n]. The weighted
        sum is divided by the number of impressions (Keras'
        "sum_over_batch_size"), not by the sum of the weights.
      global_batch_size: divide by this instead of the local n; pass the
        global batch size when each replica of a ``tf.distribute`` strategy
        computes its share (as ``tf.nn.compute_average_loss`` does).

    Returns:
      ``{"total": ctr + ctcvr, "ctr": mean BCE(click, pCTR),
      "ctcvr": mean BCE(click * conversion, pCTCVR)}``, scalar float32 tensors;
      all 0 for an empty batch.
    """
    a = _as_logits(ctr_logit)
    click = _as_labels(click, a, "click")
    ctr = _mean(bce_with_logits(click, a), sample_weight, global_batch_size)
    ctcvr = _mean(ctcvr_bce(click, conversion, a, cvr_logit), sample_weight, global_batch_size)
    return {"total": ctr + ctcvr, "ctr": ctr, "ctcvr": ctcvr}
