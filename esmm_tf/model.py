"""The models: shared pieces (field embeddings, towers) composed into Keras
functional models that all output the same keys.

Outputs: ``ctr_logit``, ``cvr_logit`` (for the losses) and the probabilities
``ctr``, ``cvr``, ``ctcvr`` (= ctr * cvr), each of shape [impressions].
"""

from __future__ import annotations

import keras
import tensorflow as tf

from esmm_tf import features as F
from esmm_tf.config import Config
from esmm_tf.embedding import FieldEmbeddings
from esmm_tf.towers import tower

CTR_LOGIT = "ctr_logit"
CVR_LOGIT = "cvr_logit"


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
    """Logits -> the output dict (probabilities computed from the logits)."""

    def call(self, ctr_logit, cvr_logit):
        ctr_logit = tf.squeeze(ctr_logit, -1)
        cvr_logit = tf.squeeze(cvr_logit, -1)
        ctr = tf.sigmoid(ctr_logit)
        cvr = tf.sigmoid(cvr_logit)
        return {
            CTR_LOGIT: ctr_logit,
            CVR_LOGIT: cvr_logit,
            F.CTR: ctr,
            F.CVR: cvr,
            F.CTCVR: ctr * cvr,
        }


def _embeddings(config: Config, name: str, seed: int) -> FieldEmbeddings:
    return FieldEmbeddings(
        config.data_dir,
        dim=config.embedding_dim,
        use_weights=config.use_weights,
        seed=seed,
        name=name,
    )


def build_model(config: Config) -> keras.Model:
    """ESMM (shared embeddings) or ESMM-NS (one embedding set per tower)."""
    inputs = model_inputs()
    seed = config.seed * 7919
    shared = _embeddings(config, "embeddings", seed)
    ctr_input = shared(inputs)
    if config.model == "esmm_ns":
        cvr_input = _embeddings(config, "cvr_embeddings", seed + 500)(inputs)
    else:
        cvr_input = ctr_input
    ctr_logit = tower(config.tower_units, "ctr_tower", seed + 100)(ctr_input)
    cvr_logit = tower(config.tower_units, "cvr_tower", seed + 200)(cvr_input)
    outputs = Heads(name="heads")(ctr_logit, cvr_logit)
    return keras.Model(inputs, outputs, name=config.model)
