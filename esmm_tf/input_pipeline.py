"""tf.data input: grouped TFRecords -> batches of flat model inputs.

Records are batched first and each batch is parsed at once with
``tf.io.parse_example`` and ``RaggedFeature`` row-length partitions (never one
record at a time). A parsed batch becomes the model's inputs, all flat
tensors (see ``esmm_tf.features`` for the names):

* ``group_index`` [N] int32: the group (record) of each of the N impressions;
* per field: ``ids_<f>`` [nnz] int64 raw ids, ``rows_<f>`` [nnz] int32 the row
  each id belongs to (a group for user-side fields, an impression for the
  others) and, for weighted fields, ``w_<f>`` [nnz] float32.

The same conversion serves single-impression serving requests, where every
record is one group of one impression.
"""

from __future__ import annotations

import tensorflow as tf

from esmm_tf import data_layout
from esmm_tf import features as F

AUTOTUNE = tf.data.AUTOTUNE


def grouped_spec(with_ground_truth: bool) -> dict:
    """parse_example spec of the grouped training records."""
    spec = {}
    for field in F.FIELDS:
        partitions = () if field.user_side else (tf.io.RaggedFeature.RowLengths(field.lengths_key),)
        spec[field.ids_key] = tf.io.RaggedFeature(
            tf.int64, value_key=field.ids_key, partitions=partitions, row_splits_dtype=tf.int32
        )
        if field.weighted:
            spec[field.weights_key] = tf.io.RaggedFeature(
                tf.float32,
                value_key=field.weights_key,
                partitions=partitions,
                row_splits_dtype=tf.int32,
            )
    for key in (F.SAMPLE_ID, *F.LABEL_KEYS):
        spec[key] = tf.io.RaggedFeature(tf.int64, value_key=key, row_splits_dtype=tf.int32)
    if with_ground_truth:
        for key in F.GROUND_TRUTH_FLOAT_KEYS:
            spec[key] = tf.io.RaggedFeature(tf.float32, value_key=key, row_splits_dtype=tf.int32)
        for key in F.GROUND_TRUTH_INT_KEYS:
            spec[key] = tf.io.RaggedFeature(tf.int64, value_key=key, row_splits_dtype=tf.int32)
    return spec


def serving_spec() -> dict:
    """parse_example spec of a per-impression serving request (no labels)."""
    spec = {}
    for field in F.FIELDS:
        spec[field.ids_key] = tf.io.RaggedFeature(
            tf.int64, value_key=field.ids_key, row_splits_dtype=tf.int32
        )
        if field.weighted:
            spec[field.weights_key] = tf.io.RaggedFeature(
                tf.float32, value_key=field.weights_key, row_splits_dtype=tf.int32
            )
    return spec


def _weights(ids: tf.RaggedTensor, weights: tf.RaggedTensor | None) -> tf.Tensor:
    """Weight values aligned with ``ids.values``; 1.0 where a row's weights are
    missing or do not match its ids (a serving request may omit them)."""
    ones = tf.ones_like(ids.values, tf.float32)
    if weights is None:
        return ones
    same = tf.reduce_all(tf.equal(ids.row_lengths(), weights.row_lengths()))
    same = tf.logical_and(same, tf.equal(tf.size(ids.values), tf.size(weights.values)))
    return tf.cond(same, lambda: weights.values, lambda: ones)


def _field_inputs(field: F.Field, ids: tf.RaggedTensor, weights, out: dict) -> None:
    out[field.ids_input] = ids.values
    out[field.rows_input] = tf.cast(ids.value_rowids(), tf.int32)
    if field.weighted:
        out[field.weights_input] = _weights(ids, weights)


def grouped_to_inputs(parsed: dict) -> dict:
    """Model inputs from a parsed batch of grouped records."""
    inputs = {}
    first_item = parsed[F.ITEM_FIELDS[0].ids_key]
    inputs[F.GROUP_INDEX] = tf.cast(first_item.value_rowids(), tf.int32)
    for field in F.FIELDS:
        ids = parsed[field.ids_key]
        weights = parsed.get(field.weights_key)
        if not field.user_side:  # [groups, impressions, ids] -> [impressions, ids]
            ids = ids.values
            weights = weights.values if weights is not None else None
        _field_inputs(field, ids, weights, inputs)
    return inputs


def serving_to_inputs(parsed: dict) -> dict:
    """Model inputs from parsed per-impression requests (one group each)."""
    first = parsed[F.FIELDS[0].ids_key]
    inputs = {F.GROUP_INDEX: tf.range(first.nrows(out_type=tf.int32))}
    for field in F.FIELDS:
        _field_inputs(field, parsed[field.ids_key], parsed.get(field.weights_key), inputs)
    return inputs


def grouped_to_labels(parsed: dict) -> dict:
    """Per-impression labels (and ground truth when parsed), flat [N]."""
    labels = {key: tf.cast(parsed[key].values, tf.float32) for key in F.LABEL_KEYS}
    labels[F.SAMPLE_ID] = parsed[F.SAMPLE_ID].values
    for key in (*F.GROUND_TRUTH_FLOAT_KEYS, *F.GROUND_TRUTH_INT_KEYS):
        if key in parsed:
            labels[key] = tf.cast(parsed[key].values, tf.float32)
    return labels


def make_parse_fn(with_ground_truth: bool):
    spec = grouped_spec(with_ground_truth)

    def parse(serialized: tf.Tensor):
        parsed = tf.io.parse_example(serialized, spec)
        return grouped_to_inputs(parsed), grouped_to_labels(parsed)

    return parse


def make_dataset(
    files: list[str],
    records_per_batch: int,
    *,
    shuffle: bool,
    seed: int = 0,
    shuffle_buffer: int = 4096,
    with_ground_truth: bool = False,
    deterministic: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
) -> tf.data.Dataset:
    """One pass over ``files``: batches of (inputs, labels).

    ``shuffle`` shuffles the file order and records through a buffer with
    ``seed`` (use a different seed per epoch). ``deterministic`` fixes the
    element order of the parallel stages (for tests and exact resumption).
    ``num_shards``/``shard_index`` split the files between input pipelines.
    """
    if not files:
        raise data_layout.DatasetError("no input files")
    ds = tf.data.Dataset.from_tensor_slices(files)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 4),
        block_length=16,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    ds = ds.batch(records_per_batch)
    ds = ds.map(
        make_parse_fn(with_ground_truth), num_parallel_calls=AUTOTUNE, deterministic=deterministic
    )
    options = tf.data.Options()
    options.deterministic = deterministic
    ds = ds.with_options(options)
    return ds.prefetch(AUTOTUNE)


def has_ground_truth(files: list[str]) -> bool:
    """True when the records carry synthetic ground truth (looks at one record)."""
    for record in tf.data.TFRecordDataset(files[:1]).take(1):
        example = tf.train.Example.FromString(record.numpy())
        return F.GT_PCTR in example.features.feature
    return False
