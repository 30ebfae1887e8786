"""Builds the grouped tf.train.Example of one user-context group.

Layout (keys from esmm_tf.features): user fields once, item-side fields as
concatenated ids with per-impression lengths, labels and optional ground truth
per impression. See esmm_tf/features.py for the full description. Encoded by
data_prep.tfrecord (no TensorFlow import), deterministically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from data_prep.raw import FeatureArrays, GroundTruthRow, PackedFeatures, SkeletonRow
from data_prep.tfrecord import encode_example
from esmm_tf import features as F


def group_key(common_feature_index: bytes) -> int:
    """A stable, non-negative int64 hash of a request's common_feature_index
    (``features.GROUP_KEY``): the same for every record of the request."""
    digest = hashlib.blake2b(common_feature_index, digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def build_example(
    user: FeatureArrays | PackedFeatures,
    rows: Sequence[SkeletonRow],
    ground_truth: Sequence[GroundTruthRow] | None = None,
) -> bytes:
    """Serialized Example for one group (user features + its impressions)."""
    ints: dict[str, list[int]] = {}
    floats: dict[str, list[float]] = {}
    for k, field in enumerate(F.USER_FIELDS):
        ids, weights = user.field(k)
        ints[field.ids_key] = ids
        if field.weighted:
            floats[field.weights_key] = weights
    for k, field in enumerate(F.ITEM_FIELDS):
        per_row = [row.features.ids[k] for row in rows]
        ints[field.ids_key] = [i for ids in per_row for i in ids]
        ints[field.lengths_key] = [len(ids) for ids in per_row]
        if field.weighted:
            floats[field.weights_key] = [w for row in rows for w in row.features.weights[k]]
    ints[F.GROUP_KEY] = [group_key(rows[0].common_feature_index)] if rows else []
    ints[F.SAMPLE_ID] = [r.sample_id for r in rows]
    ints[F.CLICK] = [r.click for r in rows]
    ints[F.CONVERSION] = [r.conversion for r in rows]
    if ground_truth is not None:
        floats[F.GT_PCTR] = [g.pctr for g in ground_truth]
        floats[F.GT_PCVR] = [g.pcvr for g in ground_truth]
        ints[F.GT_CONVERSION] = [g.conversion for g in ground_truth]
    return encode_example(ints, floats)
