"""Builds the grouped tf.train.Example of one user-context group.

Layout (keys from esmm_tf.features): user fields once, item-side fields as
concatenated ids with per-impression lengths, labels and optional ground truth
per impression. See esmm_tf/features.py for the full description.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from data_prep.raw import FeatureArrays, GroundTruthRow, PackedFeatures, SkeletonRow
from esmm_tf import features as F


def _int64(feature_map, key: str, values) -> None:
    feature_map[key].int64_list.value.extend(values)


def _float(feature_map, key: str, values) -> None:
    feature_map[key].float_list.value.extend(values)


def build_example(
    user: FeatureArrays | PackedFeatures,
    rows: Sequence[SkeletonRow],
    ground_truth: Sequence[GroundTruthRow] | None = None,
) -> bytes:
    """Serialized Example for one group (user features + its impressions)."""
    example = tf.train.Example()
    fmap = example.features.feature
    for k, field in enumerate(F.USER_FIELDS):
        ids, weights = user.field(k)
        _int64(fmap, field.ids_key, ids)
        if field.weighted:
            _float(fmap, field.weights_key, weights)
    for k, field in enumerate(F.ITEM_FIELDS):
        per_row = [row.features.ids[k] for row in rows]
        _int64(fmap, field.ids_key, [i for ids in per_row for i in ids])
        _int64(fmap, field.lengths_key, [len(ids) for ids in per_row])
        if field.weighted:
            _float(fmap, field.weights_key, [w for row in rows for w in row.features.weights[k]])
    _int64(fmap, F.SAMPLE_ID, [r.sample_id for r in rows])
    _int64(fmap, F.CLICK, [r.click for r in rows])
    _int64(fmap, F.CONVERSION, [r.conversion for r in rows])
    if ground_truth is not None:
        _float(fmap, F.GT_PCTR, [g.pctr for g in ground_truth])
        _float(fmap, F.GT_PCVR, [g.pcvr for g in ground_truth])
        _int64(fmap, F.GT_CONVERSION, [g.conversion for g in ground_truth])
    return example.SerializeToString(deterministic=True)  # sorted keys: byte-identical output
