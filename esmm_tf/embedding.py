"""Field embeddings: raw ids -> vocabulary rows -> pooled, concatenated vectors.

One table per field, ``vocab_size + 1`` rows (row 0 is the OOV bucket, see ``esmm_tf.vocab``). The
raw-id -> row lookup is a ``tf.lookup.StaticHashTable`` built from the field's
vocabulary file, so an exported SavedModel takes raw ids (the files travel as
assets). Rows are gathered from the table variable directly, so gradients are
``tf.IndexedSlices`` of the touched rows only (see ``esmm_tf.optimizer``).

Multi-valued fields are sum-pooled (weighted by their values when the field is
weighted and ``use_weights``). User-side fields are pooled once per group and
broadcast to the group's impressions.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from esmm_tf import data_layout, vocab
from esmm_tf import features as F


def vocab_table(path: str) -> tf.lookup.StaticHashTable:
    """Raw id (int64) -> embedding row (its line number in ``path``); 0 (the OOV
    row) when absent."""
    if not tf.io.gfile.exists(path):
        vocab.read_vocab(path)  # raises the clear error
    initializer = tf.lookup.TextFileInitializer(
        path,
        key_dtype=tf.int64,
        key_index=0,
        value_dtype=tf.int64,
        value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        delimiter="\t",
    )
    return tf.lookup.StaticHashTable(initializer, default_value=0)


def _table_attr(field: F.Field) -> str:
    return f"lookup_{field.id}"


def _embedding_attr(field: F.Field) -> str:
    return f"embedding_{field.id}"


class FieldEmbeddings(keras.layers.Layer):
    """Maps the flat per-field inputs to [impressions, num_fields * dim]."""

    def __init__(
        self,
        data_dir: str,
        dim: int = 18,
        use_weights: bool = True,
        seed: int = 0,
        fields: tuple[F.Field, ...] = F.FIELDS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.data_dir = data_dir
        self.dim = dim
        self.use_weights = use_weights
        self.seed = seed
        self.user_fields = tuple(f for f in fields if f.user_side)
        self.item_fields = tuple(f for f in fields if not f.user_side)
        # Plain attributes (not a dict): tf.train.Checkpoint follows attributes,
        # and does not see variables kept in a dict attribute of a Keras layer.
        for i, field in enumerate(self.user_fields + self.item_fields):
            path = data_layout.vocab_file(data_dir, field.id)
            setattr(self, _table_attr(field), vocab_table(path))
            rows = vocab.vocab_size(path) + vocab.OOV_ROWS
            table = self.add_weight(
                shape=(rows, dim),
                initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seed * 1000 + i),
                name=f"embedding_{field.id}",
            )
            setattr(self, _embedding_attr(field), table)

    def table(self, field: F.Field) -> tf.lookup.StaticHashTable:
        return getattr(self, _table_attr(field))

    def embedding(self, field: F.Field):
        """The field's embedding table variable, [vocab_size + 1, dim]."""
        return getattr(self, _embedding_attr(field))

    def _pool(self, field: F.Field, inputs: dict, num_rows) -> tf.Tensor:
        raw_ids = inputs[field.ids_input]
        rows = self.table(field).lookup(raw_ids)
        vectors = tf.gather(self.embedding(field).value, tf.cast(rows, tf.int32))
        if field.weighted and self.use_weights:
            vectors = vectors * tf.expand_dims(inputs[field.weights_input], 1)
        return tf.math.unsorted_segment_sum(vectors, inputs[field.rows_input], num_rows)

    def call(self, inputs: dict) -> tf.Tensor:
        group_index = inputs[F.GROUP_INDEX]
        num_impressions = tf.shape(group_index)[0]
        num_groups = tf.maximum(tf.reduce_max(group_index) + 1, 0)
        parts = []
        if self.user_fields:
            user = tf.concat([self._pool(f, inputs, num_groups) for f in self.user_fields], 1)
            parts.append(tf.gather(user, group_index))
        parts.extend(self._pool(f, inputs, num_impressions) for f in self.item_fields)
        return tf.concat(parts, axis=1)

    def compute_output_shape(self, input_shape):
        return (None, self.dim * (len(self.user_fields) + len(self.item_fields)))

    def get_config(self):
        return {
            **super().get_config(),
            "data_dir": self.data_dir,
            "dim": self.dim,
            "use_weights": self.use_weights,
            "seed": self.seed,
        }
