"""Field embeddings: raw ids -> vocabulary rows -> pooled, concatenated vectors.

Each field has ``vocab_size + 1`` embedding rows (row 0 is the OOV bucket, see
``esmm_tf.vocab``). The raw-id -> row lookup is a ``tf.lookup.StaticHashTable``
per field, built from the field's vocabulary file, so an exported SavedModel
takes raw ids (the files travel as assets).

Multi-valued fields are sum-pooled (weighted by their values when the field is
weighted and ``use_weights``). User-side fields are pooled once per group and
broadcast to the group's impressions.

Implementation (for speed; the math is per-field gather + sum, which
tests/test_model.py checks against): the fields' tables are blocks of one
variable, ``embeddings`` [sum of rows, dim] (field k's rows start at
``rows(field)[0]``), so a batch is one gather and one segment sum over the ids
of every field, whose segment ``row * num_side_fields + k`` lays the pooled
vectors out directly as [rows, fields * dim]. The gradient is one
``tf.IndexedSlices`` of the touched rows (see ``esmm_tf.optimizer``), and the
optimizer updates one variable instead of one per field (23 small gathers,
segment sums and lazy-Adam updates became one each; a few per cent of the
train step, see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import keras
import numpy as np
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


class _FieldBlocks(keras.initializers.Initializer):
    """Initial values of the concatenated table: field k's block is what
    ``RandomUniform(-0.05, 0.05, seed=seeds[k])`` gives a [rows[k], dim] table
    (the values of one variable per field)."""

    def __init__(self, rows: tuple[int, ...], seeds: tuple[int, ...]):
        self.rows = tuple(rows)
        self.seeds = tuple(seeds)

    def __call__(self, shape, dtype=None):
        dim = shape[1]
        blocks = [
            keras.initializers.RandomUniform(-0.05, 0.05, seed=seed)((rows, dim), dtype=dtype)
            for rows, seed in zip(self.rows, self.seeds, strict=True)
        ]
        return blocks[0] if len(blocks) == 1 else tf.concat(blocks, 0)

    def get_config(self):
        return {"rows": self.rows, "seeds": self.seeds}


class FieldEmbeddings(keras.layers.Layer):
    """Maps the flat per-field inputs to [impressions, num_fields * dim]:
    user-side fields first, then the others, each in ``fields`` order."""

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
        rows = []
        # Plain attributes (not a dict): tf.train.Checkpoint follows attributes,
        # and does not see trackables kept in a dict attribute of a Keras layer.
        for field in self.user_fields + self.item_fields:
            path = data_layout.vocab_file(data_dir, field.id)
            setattr(self, _table_attr(field), vocab_table(path))
            rows.append(vocab.vocab_size(path) + vocab.OOV_ROWS)
        offsets = [0]
        for n in rows[:-1]:
            offsets.append(offsets[-1] + n)
        self._rows = dict(zip(self.fields, zip(offsets, rows, strict=True), strict=True))
        self.embeddings = self.add_weight(
            shape=(sum(rows), dim),
            initializer=_FieldBlocks(rows, [seed * 1000 + i for i in range(len(rows))]),
            name="embeddings",
        )

    @property
    def fields(self) -> tuple[F.Field, ...]:
        """The fields in output order (user side first)."""
        return self.user_fields + self.item_fields

    def table(self, field: F.Field) -> tf.lookup.StaticHashTable:
        return getattr(self, _table_attr(field))

    def rows(self, field: F.Field) -> tuple[int, int]:
        """(first row, number of rows) of the field's block in ``embeddings``."""
        return self._rows[field]

    def embedding(self, field: F.Field) -> tf.Tensor:
        """The field's embedding table, [vocab_size + 1, dim] (a read of its
        block of the ``embeddings`` variable)."""
        start, n = self.rows(field)
        return self.embeddings.value[start : start + n]

    def _lookup(self, field: F.Field, inputs: dict) -> tf.Tensor:
        """Rows in ``embeddings`` (int64) of the field's ids in ``inputs``."""
        return self.table(field).lookup(inputs[field.ids_input]) + self.rows(field)[0]

    def touched_rows(self, inputs: dict) -> tuple[tf.Tensor, tf.Tensor]:
        """``(rows, impressions)``: the distinct rows of ``embeddings`` that the
        batch ``inputs`` reads (int32), and for each the number of impressions
        holding its id, counted as the vocabulary counts train ids (a user-side
        id once per impression of its group; an id listed twice in a row,
        twice). No gradient flows through either."""
        group_index = inputs[F.GROUP_INDEX]
        num_groups = tf.maximum(tf.reduce_max(group_index) + 1, 0)
        group_sizes = tf.math.unsorted_segment_sum(
            tf.ones_like(group_index, tf.float32), group_index, num_groups
        )
        rows, impressions = [], []
        for field in self.fields:
            rows.append(self._lookup(field, inputs))
            if field.user_side:
                impressions.append(tf.gather(group_sizes, inputs[field.rows_input]))
            else:
                impressions.append(tf.ones(tf.shape(rows[-1]), tf.float32))
        unique, position = tf.unique(tf.cast(tf.concat(rows, 0), tf.int32))
        impressions = tf.math.unsorted_segment_sum(
            tf.concat(impressions, 0), position, tf.shape(unique)[0]
        )
        return unique, impressions

    def train_counts(self) -> tuple[tf.Tensor, float]:
        """``(counts, impressions)``: float32 [rows of ``embeddings``], each
        row's train count from the vocabulary files of ``data_dir``, and the
        number of train impressions they were counted over: the largest total
        count of a single-valued field (exact when one such field, e.g. the
        user id, is present in every impression; a lower bound otherwise).
        Read once, on first use (an eager tensor, captured by the functions
        that use it)."""
        cached = self.__dict__.get("_train_counts_cache")
        if cached is None:
            parts, impressions = [], 0
            for field in self.fields:
                counts = vocab.read_counts(data_layout.vocab_file(self.data_dir, field.id))
                parts.append(counts)
                if not field.multi:
                    impressions = max(impressions, int(counts.sum()))
            with tf.init_scope():
                counts = tf.constant(np.concatenate(parts).astype(np.float32))
            cached = (counts, float(impressions))
            # Not a tracked attribute: not part of checkpoints or SavedModels.
            self.__dict__["_train_counts_cache"] = cached
        return cached

    def _side(self, fields, inputs: dict, num_rows, first_segment):
        """Table rows, segment ids and weights (None: all 1) of the ids of
        ``fields``; field k's ids pooled over ``num_rows`` rows go to segment
        ``first_segment + row * len(fields) + k``."""
        rows, segments, weights = [], [], []
        weighted = self.use_weights and any(f.weighted for f in fields)
        for k, field in enumerate(fields):
            ids = inputs[field.ids_input]
            rows.append(self._lookup(field, inputs))
            segments.append(inputs[field.rows_input] * len(fields) + (first_segment + k))
            if weighted:
                if field.weighted:
                    weights.append(inputs[field.weights_input])
                else:
                    weights.append(tf.ones(tf.shape(ids), tf.float32))
        return rows, segments, weights if weighted else None

    def call(self, inputs: dict, grouped: bool = False):
        """[impressions, num_fields * dim]; with ``grouped``, the two parts of
        it: ``(user [groups, user fields * dim], item [impressions, item
        fields * dim])``, where the full output is
        ``concat([gather(user, group_index), item], 1)``."""
        group_index = inputs[F.GROUP_INDEX]
        num_impressions = tf.shape(group_index)[0]
        num_groups = tf.maximum(tf.reduce_max(group_index) + 1, 0)
        nu, ni = len(self.user_fields), len(self.item_fields)
        user_segments = num_groups * nu
        user = self._side(self.user_fields, inputs, num_groups, 0)
        item = self._side(self.item_fields, inputs, num_impressions, user_segments)
        rows = tf.concat(user[0] + item[0], 0)
        segments = tf.concat(user[1] + item[1], 0)
        vectors = tf.gather(self.embeddings.value, tf.cast(rows, tf.int32))
        if user[2] is not None or item[2] is not None:
            weights = []
            for side in (user, item):
                if side[2] is not None:
                    weights.extend(side[2])
                else:
                    weights.extend(tf.ones(tf.shape(r), tf.float32) for r in side[0])
            vectors = vectors * tf.expand_dims(tf.concat(weights, 0), 1)
        pooled = tf.math.unsorted_segment_sum(
            vectors, segments, user_segments + num_impressions * ni
        )
        # tf.split, not slices: its gradient is a concat, a slice's a padded copy.
        user, item = tf.split(pooled, [user_segments, num_impressions * ni])
        user = tf.reshape(user, [num_groups, nu * self.dim])
        item = tf.reshape(item, [num_impressions, ni * self.dim])
        if grouped:
            return user, item
        return tf.concat([tf.gather(user, group_index), item], axis=1)

    def compute_output_spec(self, inputs, grouped: bool = False):
        user = keras.KerasTensor((None, self.dim * len(self.user_fields)))
        item = keras.KerasTensor((None, self.dim * len(self.item_fields)))
        if grouped:
            return user, item
        return keras.KerasTensor((None, self.dim * len(self.fields)))

    def get_config(self):
        return {
            **super().get_config(),
            "data_dir": self.data_dir,
            "dim": self.dim,
            "use_weights": self.use_weights,
            "seed": self.seed,
        }
