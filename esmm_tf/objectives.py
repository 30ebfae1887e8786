"""What each model optimises, from its registry spec (``esmm_tf/registry.py``)
and the shared loss pieces:

    L = L_CTR + λ_c·L_CVR + λ_g·L_CTCVR      ((λ_c, λ_g) = spec.loss_weights)

* L_CTR = mean BCE(click, pCTR) over all impressions (every model);
* L_CTCVR (``spec.ctcvr_loss``) = mean BCE(click·conversion, pCTCVR) over all
  impressions: pCTCVR = pCTR·pCVR from the logits in log space
  (``losses.ctcvr_bce``), or DIVISION's own CTCVR tower;
* L_CVR (``spec.cvr_loss``): the CVR tower's own term, one of ``CVR_LOSSES``:

=================  ========================================================
``clicked``        BASE: mean BCE(conversion, pCVR) over clicked impressions.
``aman``           plus unclicked impressions sampled with probability
                   ``aman_negative_rate`` as negatives (All Missing As
                   Negative, with sampling).
``oversampling``   converted impressions counted ``oversampling_k`` times (a
                   weight k: the same loss as k copies, without copying data).
``unbias``         clicked impressions kept by rejection sampling with pCTR as
                   the rejection probability (below).
``ipw``, ``dr``    ESCM²'s inverse-propensity-weighted and doubly robust terms
                   over all impressions (``esmm_tf/escm2.py``); ``dr`` adds
                   the imputation tower's loss, also weighted λ_c.
=================  ========================================================

The click-sampled baselines' CTR tower has its own embeddings, so it *is* a
separate CTR model trained on all impressions (trained in the same loop; no
parameter is shared, so neither task affects the other). Their ``ctcvr``
output is pCVR × that pCTR, as the paper does to score CTCVR AUC for CVR-only
models.

UNBIAS (Zhang et al., 2016, as used in the ESMM paper): clicked impressions
follow p(x | click) ∝ p(x)·pCTR(x). Accepting a clicked impression with
probability ``min(1, unbias_min_ctr / pCTR(x))`` (rejecting it with
probability ≈ pCTR(x), up to scale) makes the accepted ones follow p(x), the
entire space, wherever pCTR(x) >= unbias_min_ctr. pCTR is the CTR tower's
current prediction (no gradient flows through it). Acceptance is drawn from a
hash of the sample id and the seed, so it is reproducible.

Every term is averaged by one rule, ``esmm_tf.averaging.mean``: a weighted
mean over the global batch (weights 1 for the entire-space terms, the sample
weights for the click-sampled CVR terms), replica-aware under a multi-replica
strategy.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from esmm_tf import averaging, escm2, losses, registry
from esmm_tf import features as F
from esmm_tf.config import Config
from esmm_tf.model import CTCVR_LOGIT, CTR_LOGIT, CVR_LOGIT, IMPUTED_ERROR


def uniform_from_ids(sample_id: tf.Tensor, seed: int, salt: str) -> tf.Tensor:
    """A reproducible U[0, 1) draw per sample id (independent of batching)."""
    keys = tf.strings.join([salt, str(seed), tf.strings.as_string(sample_id)], separator=":")
    return tf.cast(tf.strings.to_hash_bucket_fast(keys, 1 << 30), tf.float32) / float(1 << 30)


def _clicked(config: Config, labels: dict, ctr_logit: tf.Tensor) -> tf.Tensor:
    del config, ctr_logit
    return labels[F.CLICK]


def _aman(config: Config, labels: dict, ctr_logit: tf.Tensor) -> tf.Tensor:
    del ctr_logit
    click = labels[F.CLICK]
    u = uniform_from_ids(labels[F.SAMPLE_ID], config.seed, "aman")
    return click + tf.cast(u < config.aman_negative_rate, tf.float32) * (1.0 - click)


def _oversampling(config: Config, labels: dict, ctr_logit: tf.Tensor) -> tf.Tensor:
    del ctr_logit
    return labels[F.CLICK] * (1.0 + (config.oversampling_k - 1.0) * labels[F.CONVERSION])


def _unbias(config: Config, labels: dict, ctr_logit: tf.Tensor) -> tf.Tensor:
    pctr = tf.stop_gradient(tf.sigmoid(ctr_logit))
    accept = tf.minimum(1.0, config.unbias_min_ctr / tf.maximum(pctr, 1e-12))
    u = uniform_from_ids(labels[F.SAMPLE_ID], config.seed, "unbias")
    return labels[F.CLICK] * tf.cast(u < accept, tf.float32)


# Per-impression weights of the click-sampled CVR terms.
CVR_SAMPLE_WEIGHTS: dict[str, Callable[[Config, dict, tf.Tensor], tf.Tensor]] = {
    "clicked": _clicked,
    "aman": _aman,
    "oversampling": _oversampling,
    "unbias": _unbias,
}


def cvr_sample_weights(config: Config, labels: dict, ctr_logit: tf.Tensor) -> tf.Tensor:
    """Per-impression weight of the CVR term of a click-sampled model."""
    kind = registry.get(config.model).cvr_loss
    if kind not in CVR_SAMPLE_WEIGHTS:
        raise ValueError(f"{config.model} is not a click-sampled model")
    return CVR_SAMPLE_WEIGHTS[kind](config, labels, ctr_logit)


def _click_sampled(config: Config, labels: dict, outputs: dict) -> dict[str, tf.Tensor]:
    weights = cvr_sample_weights(config, labels, outputs[CTR_LOGIT])
    bce = losses.bce_with_logits(labels[F.CONVERSION], outputs[CVR_LOGIT])
    return {"cvr": averaging.mean(bce, weights)}


def _ipw(config: Config, labels: dict, outputs: dict) -> dict[str, tf.Tensor]:
    per_impression = escm2.ipw_cvr_loss(
        labels[F.CLICK],
        labels[F.CONVERSION],
        outputs[CVR_LOGIT],
        outputs[CTR_LOGIT],
        config.escm2_max_ips_weight,
    )
    return {"cvr": averaging.mean(per_impression)}


def _dr(config: Config, labels: dict, outputs: dict) -> dict[str, tf.Tensor]:
    dr, imputation = escm2.dr_cvr_losses(
        labels[F.CLICK],
        labels[F.CONVERSION],
        outputs[CVR_LOGIT],
        outputs[CTR_LOGIT],
        outputs[IMPUTED_ERROR],
        config.escm2_max_ips_weight,
    )
    return {"cvr": averaging.mean(dr), "imputation": averaging.mean(imputation)}


# The CVR tower's own term, by ``ModelSpec.cvr_loss``: (config, labels,
# outputs) -> named scalar terms, each weighted λ_c in the total.
CVR_LOSSES: dict[str, Callable[[Config, dict, dict], dict[str, tf.Tensor]]] = {
    **{kind: _click_sampled for kind in CVR_SAMPLE_WEIGHTS},
    "ipw": _ipw,
    "dr": _dr,
}


def loss(config: Config, labels: dict, outputs: dict) -> dict[str, tf.Tensor]:
    """``{"total", "ctr", ...}`` scalars for ``config.model``: "ctcvr" when the
    spec has a CTCVR term, "cvr" (and "imputation" for DR) when it has a CVR
    term. Each replica's share under a multi-replica strategy (they add up)."""
    spec = registry.get(config.model)
    click, conversion = labels[F.CLICK], labels[F.CONVERSION]
    terms = {"ctr": averaging.mean(losses.bce_with_logits(click, outputs[CTR_LOGIT]))}
    cvr_weight, ctcvr_weight = spec.loss_weights(config)
    total = terms["ctr"]
    if spec.ctcvr_loss:
        if spec.second_head == "ctcvr":
            ctcvr = losses.bce_with_logits(click * conversion, outputs[CTCVR_LOGIT])
        else:
            ctcvr = losses.ctcvr_bce(click, conversion, outputs[CTR_LOGIT], outputs[CVR_LOGIT])
        terms["ctcvr"] = averaging.mean(ctcvr)
        total += ctcvr_weight * terms["ctcvr"]
    if spec.cvr_loss is not None:
        cvr_terms = CVR_LOSSES[spec.cvr_loss](config, labels, outputs)
        terms.update(cvr_terms)
        total += cvr_weight * tf.add_n(list(cvr_terms.values()))
    return {"total": total, **terms}
