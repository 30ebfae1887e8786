"""The raw Ali-CCP lines of one chunk: common_features, sample_skeleton, ground truth."""

from __future__ import annotations

import numpy as np

from data_prep.synthetic.sampling import Chunk
from data_prep.synthetic.text import Text, feature_lines, hex16, text_table
from data_prep.synthetic.world import (
    BEHAVIOUR_FIELDS,
    COMBINATION_FIELDS,
    CONTEXT_FIELD,
    ITEM_ID_FIELD,
    PROFILE_FIELDS,
    USER_ID_FIELD,
    World,
)
from esmm_tf import features

_FIELD_INDEX = {f.id: i for i, f in enumerate(features.FIELDS)}
LABELS = text_table([b",0,0,", b",0,1,", b",1,0,", b",1,1,"])  # click * 2 + conversion


def common_feature_indexes(rows: np.ndarray, key: np.uint64) -> Text:
    """The common_feature_index (16 hex digits and a comma) of the given row numbers."""
    return hex16(_splitmix64(rows.astype(np.uint64) + key))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijection on uint64: distinct inputs give distinct common_feature_index."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _lines(world: World, prefix: Text, columns):
    """Lines from columns ``(line, field id, field index, value code)``, one entry per feature."""
    line = np.concatenate([c[0] for c in columns])
    field = np.concatenate([np.full(len(c[0]), _FIELD_INDEX[c[1]]) for c in columns])
    token = np.concatenate([world.token(c[1], c[2]) for c in columns])
    code = np.concatenate([c[3] for c in columns])
    return feature_lines(prefix, line, field, token, code, world.tokens, world.values)


def common_lines(world: World, chunk: Chunk, cfi: Text):
    """common_features lines of a chunk's rows: bytes, line offsets, (line, field) keys."""
    n_rows = len(chunk.user)
    columns = [(np.arange(n_rows), USER_ID_FIELD, chunk.user, np.zeros(n_rows, np.int64))]
    for f, name in enumerate(PROFILE_FIELDS):
        row = np.flatnonzero(chunk.profile_present[:, f])
        value = world.user_profile[chunk.user[row], f]
        columns.append((row, name, value, np.zeros(len(row), np.int64)))
    for name, (row, value, count) in zip(BEHAVIOUR_FIELDS, chunk.behaviour, strict=True):
        columns.append((row, name, value, count))
    return _lines(world, cfi, columns)


def skeleton_lines(world: World, chunk: Chunk, prefix: Text):
    """sample_skeleton lines of a chunk's impressions: bytes, line offsets, (line, field) keys."""
    n = len(chunk.row)
    everyone, zeros = np.arange(n), np.zeros(n, np.int64)
    category, shop, brand, intention = (attr[chunk.item] for attr in world.item_attr)
    has_brand = np.flatnonzero(brand >= 0)
    item_has, item_slot = np.nonzero(intention >= 0)
    columns = [
        (everyone, ITEM_ID_FIELD, chunk.item, zeros),
        (everyone, "206", category, zeros),
        (everyone, "207", shop, zeros),
        (item_has, "210", intention[item_has, item_slot], zeros[item_has]),
        (has_brand, "216", brand[has_brand], zeros[has_brand]),
        (everyone, CONTEXT_FIELD, chunk.context, zeros),
    ]
    # A combination feature wherever the visit's behaviour holds the item's value.
    single = zip(COMBINATION_FIELDS[:3], (category, shop, brand), chunk.match[:3], strict=True)
    for name, value, count in single:
        matched = np.flatnonzero(count > 0)
        columns.append((matched, name, value[matched], count[matched]))
    has, slot = np.nonzero(chunk.match[3] > 0)
    columns.append((has, "853", intention[has, slot], chunk.match[3][has, slot]))
    return _lines(world, prefix, columns)


def ground_truth_lines(sample_id, pctr, pcvr, counterfactual) -> bytes:
    rows = zip(
        sample_id.tolist(), pctr.tolist(), pcvr.tolist(), counterfactual.tolist(), strict=True
    )
    return b"".join(map(b"%d,%.6g,%.6g,%d\n".__mod__, rows))
