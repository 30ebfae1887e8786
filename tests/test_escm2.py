"""ESCM²-IPS and ESCM²-DR: the losses by hand (numpy), the stopped gradient
through the propensity, the clip, the imputation tower, and a tiny training run."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import config as config_lib
from esmm_tf import data_layout, escm2, input_pipeline, objectives, training_run
from esmm_tf import features as F
from esmm_tf.config import Config
from esmm_tf.model import CTR_LOGIT, CVR_LOGIT, IMPUTED_ERROR, Heads, build_model

CLICK = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
CONVERSION = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
# pCTR of impression 3 is ~0.018: its 1/pCTR (~55) is clipped.
CTR_LOGITS = np.array([0.5, -1.0, 2.0, -4.0, -0.3, 1.2])
CVR_LOGITS = np.array([1.5, 0.2, -0.7, -0.4, 0.1, 0.9])
IMPUTATION_LOGITS = np.array([0.3, -1.2, 0.8, 1.0, -0.5, 2.0])
LABELS = {
    F.CLICK: tf.constant(CLICK, tf.float32),
    F.CONVERSION: tf.constant(CONVERSION, tf.float32),
    F.SAMPLE_ID: tf.range(6, dtype=tf.int64),
}


def _config(model: str, **kwargs) -> Config:
    return Config(data_dir="unused", model=model, **kwargs)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _bce(y, p):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _outputs(ctr_logits=CTR_LOGITS, with_imputation=False) -> dict:
    column = lambda x: tf.constant(x, tf.float32)[:, None]  # noqa: E731
    extra = (column(IMPUTATION_LOGITS),) if with_imputation else ()
    return Heads("cvr")(column(ctr_logits), column(CVR_LOGITS), *extra)


def _by_hand(max_weight: float):
    """ESMM's terms, δ, the clipped inverse propensity and δ̂, in numpy float64."""
    pctr, pcvr = _sigmoid(CTR_LOGITS), _sigmoid(CVR_LOGITS)
    ctr = _bce(CLICK, pctr).mean()
    ctcvr = _bce(CLICK * CONVERSION, pctr * pcvr).mean()
    delta = _bce(CONVERSION, pcvr)
    inverse = 1 / np.maximum(pctr, 1 / max_weight)
    imputed = np.log1p(np.exp(IMPUTATION_LOGITS))  # softplus
    return ctr, ctcvr, delta, inverse, imputed


def test_ipw_loss_by_hand():
    config = _config("escm2_ipw", escm2_cvr_weight=0.3, escm2_ctcvr_weight=0.7)
    loss = objectives.loss(config, LABELS, _outputs())
    ctr, ctcvr, delta, inverse, _ = _by_hand(15.0)
    cvr = np.sum(CLICK * delta * inverse) / 6  # 1/|D|: all six impressions
    assert sorted(loss) == ["ctcvr", "ctr", "cvr", "total"]
    assert float(loss["ctr"]) == pytest.approx(ctr, rel=1e-5)
    assert float(loss["ctcvr"]) == pytest.approx(ctcvr, rel=1e-5)
    assert float(loss["cvr"]) == pytest.approx(cvr, rel=1e-5)
    assert float(loss["total"]) == pytest.approx(ctr + 0.3 * cvr + 0.7 * ctcvr, rel=1e-5)


def test_dr_loss_by_hand():
    config = _config("escm2_dr", escm2_cvr_weight=0.3, escm2_ctcvr_weight=0.7)
    outputs = _outputs(with_imputation=True)
    loss = objectives.loss(config, LABELS, outputs)
    ctr, ctcvr, delta, inverse, imputed = _by_hand(15.0)
    np.testing.assert_allclose(outputs[IMPUTED_ERROR].numpy(), imputed, rtol=1e-5)
    weight = CLICK * inverse
    dr = np.mean(imputed + weight * (delta - imputed))
    imputation = np.mean(weight * (delta - imputed) ** 2)
    # Unclicked impressions count through δ̂ alone.
    assert dr != pytest.approx(np.sum(weight * delta) / 6)
    assert sorted(loss) == ["ctcvr", "ctr", "cvr", "imputation", "total"]
    assert float(loss["ctr"]) == pytest.approx(ctr, rel=1e-5)
    assert float(loss["ctcvr"]) == pytest.approx(ctcvr, rel=1e-5)
    assert float(loss["cvr"]) == pytest.approx(dr, rel=1e-5)
    assert float(loss["imputation"]) == pytest.approx(imputation, rel=1e-5)
    total = ctr + 0.3 * (dr + imputation) + 0.7 * ctcvr
    assert float(loss["total"]) == pytest.approx(total, rel=1e-5)


def test_inverse_propensity_is_clipped_at_the_max_weight():
    pctr = np.array([0.5, 0.1, 1 / 15, 0.05, 0.001])
    logits = tf.constant(np.log(pctr / (1 - pctr)), tf.float32)
    np.testing.assert_allclose(
        escm2.inverse_propensity(logits, 15.0).numpy(), [2, 10, 15, 15, 15], rtol=1e-5
    )
    np.testing.assert_allclose(
        escm2.inverse_propensity(logits, 4.0).numpy(), [2, 4, 4, 4, 4], rtol=1e-5
    )
    # The flag reaches the loss: a lower bound lowers the clipped impression's term.
    low = objectives.loss(_config("escm2_ipw", escm2_max_ips_weight=4.0), LABELS, _outputs())
    _, _, delta, inverse, _ = _by_hand(4.0)
    assert float(low["cvr"]) == pytest.approx(np.sum(CLICK * delta * inverse) / 6, rel=1e-5)


@pytest.mark.parametrize("model", ["escm2_ipw", "escm2_dr"])
def test_no_gradient_reaches_the_ctr_logit_through_the_propensity(model):
    ctr_logits = tf.Variable(CTR_LOGITS.astype(np.float32))
    cvr_logits = tf.Variable(CVR_LOGITS.astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        outputs = Heads("cvr")(
            ctr_logits[:, None],
            cvr_logits[:, None],
            *(
                (tf.constant(IMPUTATION_LOGITS, tf.float32)[:, None],)
                if model == "escm2_dr"
                else ()
            ),
        )
        loss = objectives.loss(_config(model), LABELS, outputs)
        esmm_part = loss["ctr"] + 0.5 * loss["ctcvr"]
    grad_cvr_term = tape.gradient(loss["cvr"], ctr_logits)
    assert grad_cvr_term is None or not np.any(grad_cvr_term.numpy())
    # ... while the CVR logits get one, and the CTR logit only ESMM's.
    assert np.any(tape.gradient(loss["cvr"], cvr_logits).numpy())
    np.testing.assert_allclose(
        tape.gradient(loss["total"], ctr_logits).numpy(),
        tape.gradient(esmm_part, ctr_logits).numpy(),
        rtol=1e-6,
    )


def test_dr_gradients_reach_the_imputed_error():
    imputation_logits = tf.Variable(IMPUTATION_LOGITS.astype(np.float32))
    with tf.GradientTape() as tape:
        outputs = Heads("cvr")(
            tf.constant(CTR_LOGITS, tf.float32)[:, None],
            tf.constant(CVR_LOGITS, tf.float32)[:, None],
            imputation_logits[:, None],
        )
        loss = objectives.loss(_config("escm2_dr"), LABELS, outputs)
    assert np.all(tape.gradient(loss["total"], imputation_logits).numpy() != 0)


def test_escm2_config_flags_are_checked():
    with pytest.raises(ValueError, match="escm2_max_ips_weight"):
        _config("escm2_ipw", escm2_max_ips_weight=0.5)
    with pytest.raises(ValueError, match="escm2_cvr_weight"):
        _config("escm2_ipw", escm2_cvr_weight=-1.0)


def test_escm2_models_share_embeddings_and_only_dr_has_an_imputation_tower(tiny_config):
    files = data_layout.shard_files(tiny_config.data_dir, "test")
    inputs, _ = next(iter(input_pipeline.make_dataset(files, 4, shuffle=False)))
    for model, imputation in (("escm2_ipw", False), ("escm2_dr", True)):
        keras_model = build_model(dataclasses.replace(tiny_config, model=model))
        names = {layer.name for layer in keras_model.layers}
        assert "second_embeddings" not in names  # one embedding set for all towers
        assert ("imputation_tower" in names) == imputation
        out = keras_model(inputs)
        assert (IMPUTED_ERROR in out) == imputation
        assert {CTR_LOGIT, CVR_LOGIT, *F.OUTPUT_KEYS} <= set(out)
        if imputation:
            assert np.all(out[IMPUTED_ERROR].numpy() >= 0)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["escm2_ipw", "escm2_dr"])
def test_tiny_training_run(model, tiny_config, tmp_path):
    config = dataclasses.replace(tiny_config, model=model)
    metrics = training_run.train_and_evaluate(config, str(tmp_path / "run"))
    assert metrics["epochs_trained"] == 1
    # One pass: about the estimated steps (whole records packed per step).
    assert abs(metrics["step"] - training_run.steps_per_epoch(config)) <= 0.15 * metrics["step"]
    for key in ("ctr_auc", "cvr_auc", "ctcvr_auc"):
        assert 0 <= metrics[key] <= 1 and not math.isnan(metrics[key])
    assert config_lib.load(str(tmp_path / "run")).model == model
