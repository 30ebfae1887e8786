"""What each model optimises (the paper's rows), from the shared loss pieces.

Every model has a CTR tower trained on all impressions with BCE(click, pCTR)
and a second tower; they differ in that tower's target and sample:

=============  ============================================================
``esmm``       BCE(click·conversion, pCTR·pCVR) on all impressions; shared
               embeddings (pCVR has no loss of its own).
``esmm_ns``    the same with separate embeddings per tower.
``base``       BCE(conversion, pCVR) on clicked impressions.
``aman``       BASE plus unclicked impressions sampled at random with
               probability ``aman_negative_rate`` as negatives (All Missing As
               Negative, with sampling).
``oversampling``  BASE with converted impressions counted
               ``oversampling_k`` times (a weight k: the same loss as k
               copies, without copying data).
``unbias``     BASE on clicked impressions kept by rejection sampling with
               pCTR as the rejection probability (below).
``division``   a CTCVR tower trained with BCE(click·conversion, pCTCVR) on all
               impressions; pCVR = pCTCVR / pCTR clipped to [0, 1].
=============  ============================================================

The baselines' CTR tower has its own embeddings, so it *is* a separate CTR
model trained on all impressions (trained in the same loop; no parameter is
shared, so neither task affects the other). Their ``ctcvr`` output is pCVR ×
that pCTR, as the paper does to score CTCVR AUC for CVR-only models.

UNBIAS (Zhang et al., 2016, as used in the ESMM paper): clicked impressions
follow p(x | click) ∝ p(x)·pCTR(x). Accepting a clicked impression with
probability ``min(1, unbias_min_ctr / pCTR(x))`` (rejecting it with
probability ≈ pCTR(x), up to scale) makes the accepted ones follow p(x), the
entire space, wherever pCTR(x) >= unbias_min_ctr. pCTR is the CTR tower's
current prediction (no gradient flows through it). Acceptance is drawn from a
hash of the sample id and the seed, so it is reproducible.

Each term is a mean: over all impressions for CTR/CTCVR terms, and a
weighted mean over the sampled impressions (sum of w·loss / sum of w) for the
CVR terms. Under a multi-replica strategy the denominators are summed over the
replicas, so the replicas' losses add up to the mean over the global batch
(and their summed gradients to its gradient).
"""

from __future__ import annotations

import tensorflow as tf

from esmm_tf import features as F
from esmm_tf import losses
from esmm_tf.config import Config

CTR_LOGIT = "ctr_logit"
CVR_LOGIT = "cvr_logit"
CTCVR_LOGIT = "ctcvr_logit"

# Models whose second tower is a CVR tower trained on (re-weighted) clicks.
CLICK_SAMPLED = ("base", "aman", "oversampling", "unbias")


def second_head(model: str) -> str:
    """What the second tower predicts: "cvr" or, for DIVISION, "ctcvr"."""
    return "ctcvr" if model == "division" else "cvr"


def shared_embeddings(model: str) -> bool:
    return model == "esmm"


def uniform_from_ids(sample_id: tf.Tensor, seed: int, salt: str) -> tf.Tensor:
    """A reproducible U[0, 1) draw per sample id (independent of batching)."""
    keys = tf.strings.join([salt, str(seed), tf.strings.as_string(sample_id)], separator=":")
    return tf.cast(tf.strings.to_hash_bucket_fast(keys, 1 << 30), tf.float32) / float(1 << 30)


def cvr_sample_weights(config: Config, labels: dict, ctr_logit: tf.Tensor) -> tf.Tensor:
    """Per-impression weight of the CVR term for the click-sampled baselines."""
    click = labels[F.CLICK]
    conversion = labels[F.CONVERSION]
    if config.model == "base":
        return click
    if config.model == "aman":
        u = uniform_from_ids(labels[F.SAMPLE_ID], config.seed, "aman")
        negative = tf.cast(u < config.aman_negative_rate, tf.float32) * (1.0 - click)
        return click + negative
    if config.model == "oversampling":
        return click * (1.0 + (config.oversampling_k - 1.0) * conversion)
    if config.model == "unbias":
        pctr = tf.stop_gradient(tf.sigmoid(ctr_logit))
        accept = tf.minimum(1.0, config.unbias_min_ctr / tf.maximum(pctr, 1e-12))
        u = uniform_from_ids(labels[F.SAMPLE_ID], config.seed, "unbias")
        return click * tf.cast(u < accept, tf.float32)
    raise ValueError(f"{config.model} is not a click-sampled model")


def _sum_over_replicas(x: tf.Tensor) -> tf.Tensor | None:
    """``x`` summed over the replicas of a multi-replica strategy (``x`` is a
    denominator: no gradient flows through it); None on one replica."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(x))


def _weighted_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """sum(w * values) / sum(w); 0 when nothing is sampled.

    Under a multi-replica strategy each replica divides its sum by the sum of
    w over ALL replicas, so the replicas' losses (and gradients) add up to the
    global batch's mean."""
    denominator = tf.reduce_sum(weights)
    global_denominator = _sum_over_replicas(denominator)
    if global_denominator is not None:
        denominator = global_denominator
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), denominator)


def _mean(values: tf.Tensor) -> tf.Tensor:
    """Mean; 0 for an empty batch."""
    return _weighted_mean(values, tf.ones_like(values))


def loss(config: Config, labels: dict, outputs: dict) -> dict[str, tf.Tensor]:
    """``{"total", "ctr", <second>}`` scalars for ``config.model``.

    ``<second>`` is "ctcvr" (ESMM, ESMM-NS, DIVISION) or "cvr" (the others).
    """
    click, conversion = labels[F.CLICK], labels[F.CONVERSION]
    if config.model in ("esmm", "esmm_ns"):
        impressions = _sum_over_replicas(tf.cast(tf.size(click), tf.float32))
        if impressions is None:  # one replica: the local mean
            return losses.esmm_loss(click, conversion, outputs[CTR_LOGIT], outputs[CVR_LOGIT])
        return losses.esmm_loss(
            click, conversion, outputs[CTR_LOGIT], outputs[CVR_LOGIT], global_batch_size=impressions
        )
    ctr = _mean(losses.bce_with_logits(click, outputs[CTR_LOGIT]))
    if config.model == "division":
        ctcvr = _mean(losses.bce_with_logits(click * conversion, outputs[CTCVR_LOGIT]))
        return {"total": ctr + ctcvr, "ctr": ctr, "ctcvr": ctcvr}
    weights = cvr_sample_weights(config, labels, outputs[CTR_LOGIT])
    cvr = _weighted_mean(losses.bce_with_logits(conversion, outputs[CVR_LOGIT]), weights)
    return {"total": ctr + cvr, "ctr": ctr, "cvr": cvr}
