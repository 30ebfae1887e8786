"""Serving requests made from grouped training records.

A grouped record (one user context and its impressions, see
``esmm_tf.features``) becomes either per-impression ``serving_default``
requests (one ``tf.train.Example`` per impression holding every field's
``ids/`` and ``w/`` keys) or one ``rank`` request (one Example with the
user-side fields and one per impression with the item-side fields). Labels
are dropped. Used for the SavedModel's warm-up requests, the serving
benchmark and the tests.
"""

from __future__ import annotations

import tensorflow as tf

from esmm_tf import features as F


def _field_values(example: tf.train.Example, field: F.Field, impression: int | None):
    """(ids, weights) of ``field`` in a grouped record: the record's for a
    user-side field, the given impression's for an item-side one."""
    feats = example.features.feature
    ids = list(feats[field.ids_key].int64_list.value) if field.ids_key in feats else []
    weights = []
    if field.weighted and field.weights_key in feats:
        weights = list(feats[field.weights_key].float_list.value)
    if not field.user_side:
        lengths = list(feats[field.lengths_key].int64_list.value)
        if not lengths:  # the record lacks this field
            return [], []
        start = sum(lengths[:impression])
        ids = ids[start : start + lengths[impression]]
        weights = weights[start : start + lengths[impression]]
    return ids, weights


def _example(record: tf.train.Example, fields, impression: int | None) -> bytes:
    example = tf.train.Example()
    for field in fields:
        ids, weights = _field_values(record, field, impression)
        if not ids:
            continue
        example.features.feature[field.ids_key].int64_list.value.extend(ids)
        if weights and len(weights) == len(ids):
            example.features.feature[field.weights_key].float_list.value.extend(weights)
    return example.SerializeToString()


def num_impressions(record: tf.train.Example) -> int:
    return len(record.features.feature[F.CLICK].int64_list.value)


def impression_examples(record: bytes) -> list[bytes]:
    """``serving_default`` requests: one serialized Example per impression."""
    example = tf.train.Example.FromString(record)
    return [_example(example, F.FIELDS, i) for i in range(num_impressions(example))]


def rank_request(record: bytes) -> tuple[bytes, list[bytes]]:
    """A ``rank`` request: (user context Example, one item Example per impression)."""
    example = tf.train.Example.FromString(record)
    user = _example(example, F.USER_FIELDS, None)
    items = [_example(example, F.ITEM_FIELDS, i) for i in range(num_impressions(example))]
    return user, items


def has_an_id(example: bytes) -> bool:
    """Whether a request Example holds an id of some field: the serving
    signatures refuse one without (``input_pipeline.parse_serving``), though
    the converted data may hold such impressions (a raw row without features)."""
    features = tf.train.Example.FromString(example).features.feature
    return any(key.startswith("ids/") and len(v.int64_list.value) for key, v in features.items())


def read_records(files: list[str], n: int) -> list[bytes]:
    """The first ``n`` serialized records of ``files`` (fewer if they hold fewer)."""
    return [r.numpy() for r in tf.data.TFRecordDataset(files).take(n)]
