"""ESCM²'s counterfactual CVR terms (Wang et al., "ESCM²: Entire Space
Counterfactual Multi-Task Model for Post-Click Conversion Rate Estimation",
SIGIR 2022, arXiv 2204.05125), elementwise; ``esmm_tf/objectives.py`` averages
them over the global batch (1/|D|: every impression counts, clicked or not).

With o = click, r = conversion, δ = BCE(r, pCVR) and the propensity
q̂ = pCTR, taken from the CTR tower with its gradient stopped and clipped from
below at 1 / ``max_weight`` (so no weight exceeds ``max_weight``):

* IPS: L_CVR = (1/|D|) Σ_D o · δ / q̂.
* DR:  L_CVR = (1/|D|) Σ_D [ δ̂ + o · (δ − δ̂) / q̂ ], where δ̂ ≥ 0 is the imputed
  error from an extra imputation tower, itself trained with
  L_IMP = (1/|D|) Σ_D o · (δ − δ̂)² / q̂.

The full ESCM² loss is L_CTR + λ_c·L_CVR + λ_g·L_CTCVR (λ_c also weighs L_IMP
for DR), with L_CTR and L_CTCVR ESMM's terms over all impressions.

Sources: the paper's risks R_IPS, R_DR and imputation loss (section 4) as
summarised in lowellth.com/notes/escm2 and the project's ESCM² issue, checked
against PaddleRec's public
implementation (PaddlePaddle/PaddleRec, models/multitask/escm2,
``counterfact_ipw`` / ``counterfact_dr`` in static_model.py and
dygraph_model.py; λ_c = λ_g = 0.5 in its config_bigdata.yaml). As there: the
weight is clipped at 15, no gradient reaches the CTR tower through q̂, and in
DR gradients flow through both δ and δ̂ in both terms. Two differences:
PaddleRec's IPS divides by pCTR times the batch's click count and multiplies
by the batch size (a per-batch renormalisation); this follows the paper's
1/|D| form, which averages the same over any batching and over replicas.
PaddleRec's δ̂ is a probability in (0, 1); here δ̂ = softplus(logit), which can
reach the BCE of a conversion (> 1) while staying ≥ 0 like the error it imputes.
"""

from __future__ import annotations

import tensorflow as tf

from esmm_tf import losses


def inverse_propensity(ctr_logit: tf.Tensor, max_weight: float) -> tf.Tensor:
    """1 / q̂ with q̂ = pCTR (no gradient) clipped from below at 1 / max_weight."""
    pctr = tf.stop_gradient(tf.sigmoid(tf.reshape(tf.cast(ctr_logit, tf.float32), [-1])))
    return 1.0 / tf.maximum(pctr, 1.0 / max_weight)


def ipw_cvr_loss(
    click: tf.Tensor,
    conversion: tf.Tensor,
    cvr_logit: tf.Tensor,
    ctr_logit: tf.Tensor,
    max_weight: float,
) -> tf.Tensor:
    """o · BCE(r, pCVR) / q̂ per impression, shape [n]."""
    delta = losses.bce_with_logits(conversion, cvr_logit)
    click = tf.reshape(tf.cast(click, delta.dtype), [-1])
    return click * inverse_propensity(ctr_logit, max_weight) * delta


def dr_cvr_losses(
    click: tf.Tensor,
    conversion: tf.Tensor,
    cvr_logit: tf.Tensor,
    ctr_logit: tf.Tensor,
    imputed_error: tf.Tensor,
    max_weight: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """``(dr, imputation)`` per impression, each shape [n]:
    dr = δ̂ + o·(δ − δ̂)/q̂ and imputation = o·(δ − δ̂)²/q̂."""
    delta = losses.bce_with_logits(conversion, cvr_logit)
    imputed = tf.reshape(tf.cast(imputed_error, delta.dtype), [-1])
    weight = tf.reshape(tf.cast(click, delta.dtype), [-1]) * inverse_propensity(
        ctr_logit, max_weight
    )
    deviation = delta - imputed
    return imputed + weight * deviation, weight * tf.square(deviation)
