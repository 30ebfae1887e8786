"""The models: shared pieces (field embeddings, towers) composed into Keras
functional models that all output the same keys.

Every model is field embeddings -> a CTR tower and a second tower (a CVR
tower, or for DIVISION a CTCVR tower), plus for ESCM²-DR an imputation tower
on the second tower's input, with one embedding set shared by all towers
(ESMM, ESCM²) or one per tower (the others): the model's spec in
``esmm_tf/registry.py`` says which; what each is trained on is in
``esmm_tf/objectives.py``.

Outputs: the logits (``ctr_logit`` and ``cvr_logit`` or ``ctcvr_logit``, for
the losses), ESCM²-DR's ``imputed_error`` (training only), and the
probabilities ``ctr``, ``cvr``, ``ctcvr`` (= ctr * cvr), each of shape
[impressions]; serving exports only the probabilities.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from esmm_tf import features as F
from esmm_tf import registry
from esmm_tf.config import Config
from esmm_tf.embedding import FieldEmbeddings
from esmm_tf.towers import tower

CTR_LOGIT = "ctr_logit"
CVR_LOGIT = "cvr_logit"
CTCVR_LOGIT = "ctcvr_logit"
IMPUTED_ERROR = "imputed_error"  # ESCM²-DR's δ̂ = softplus(imputation tower logit)


def model_inputs() -> dict[str, keras.KerasTensor]:
    """One flat input per tensor of ``esmm_tf.input_pipeline``'s batches."""
    inputs = {F.GROUP_INDEX: keras.Input(shape=(), dtype="int32", name=F.GROUP_INDEX)}
    for field in F.FIELDS:
        inputs[field.ids_input] = keras.Input(shape=(), dtype="int64", name=field.ids_input)
        inputs[field.rows_input] = keras.Input(shape=(), dtype="int32", name=field.rows_input)
        if field.weighted:
            inputs[field.weights_input] = keras.Input(
                shape=(), dtype="float32", name=field.weights_input
            )
    return inputs


class Heads(keras.layers.Layer):
    """Logits -> the output dict (probabilities computed from the logits).

    ``second="cvr"``: the second logit is pCVR's. ``second="ctcvr"``
    (DIVISION): it is pCTCVR's, and pCVR = pCTCVR / pCTR clipped to [0, 1].
    Either way ``ctcvr == ctr * cvr``. With an ``imputation_logit`` (ESCM²-DR)
    the output also holds ``imputed_error`` = softplus(imputation_logit) >= 0.
    """

    def __init__(self, second: str = "cvr", **kwargs):
        super().__init__(**kwargs)
        self.second = second

    def call(self, ctr_logit, second_logit, imputation_logit=None):
        ctr_logit = tf.squeeze(ctr_logit, -1)
        second_logit = tf.squeeze(second_logit, -1)
        ctr = tf.sigmoid(ctr_logit)
        if self.second == "ctcvr":
            cvr = tf.clip_by_value(tf.math.divide_no_nan(tf.sigmoid(second_logit), ctr), 0.0, 1.0)
            logits = {CTR_LOGIT: ctr_logit, CTCVR_LOGIT: second_logit}
        else:
            cvr = tf.sigmoid(second_logit)
            logits = {CTR_LOGIT: ctr_logit, CVR_LOGIT: second_logit}
        if imputation_logit is not None:
            logits[IMPUTED_ERROR] = tf.nn.softplus(tf.squeeze(imputation_logit, -1))
        return {**logits, F.CTR: ctr, F.CVR: cvr, F.CTCVR: ctr * cvr}

    def get_config(self):
        return {**super().get_config(), "second": self.second}


def _embeddings(config: Config, vocab_root: str, name: str, seed: int) -> FieldEmbeddings:
    return FieldEmbeddings(
        vocab_root,
        dim=config.embedding_dim,
        use_weights=config.use_weights,
        seed=seed,
        name=name,
    )


def build_model(config: Config, vocab_root: str | None = None) -> keras.Model:
    """The model ``config.model`` names (its spec: esmm_tf/registry.py), on the
    vocabulary files under ``vocab_root`` (a training run's copy, see
    esmm_tf/run_dir.py; default: the dataset's, ``config.data_dir``)."""
    spec = registry.get(config.model)
    vocab_root = vocab_root or config.data_dir
    inputs = model_inputs()
    seed = config.seed * 7919
    # Each tower gets (user part per group, item part, group_index): see Tower.
    group_index = inputs[F.GROUP_INDEX]
    ctr_input = (
        *_embeddings(config, vocab_root, "embeddings", seed)(inputs, grouped=True),
        group_index,
    )
    if spec.shared_embeddings:
        second_input = ctr_input
    else:
        second = _embeddings(config, vocab_root, "second_embeddings", seed + 500)(
            inputs, grouped=True
        )
        second_input = (*second, group_index)
    second = spec.second_head
    dropout = config.dropout
    ctr_logit = tower(config.tower_units, "ctr_tower", seed + 100, dropout)(ctr_input)
    second_logit = tower(config.tower_units, f"{second}_tower", seed + 200, dropout)(second_input)
    if spec.imputation_tower:
        imputation_logit = tower(config.tower_units, "imputation_tower", seed + 300, dropout)(
            second_input
        )
        outputs = Heads(second, name="heads")(ctr_logit, second_logit, imputation_logit)
    else:
        outputs = Heads(second, name="heads")(ctr_logit, second_logit)
    return keras.Model(inputs, outputs, name=config.model)
