"""The Ali-CCP feature spec: every field declared once.

Everything else derives from this module: the converter's parser and TFRecord
writer, the tf.data parser, the model's inputs and the serving signature.

Raw data: a feature is ``field_id 0x02 feature_id 0x03 value``; features are
separated by 0x01. User-side fields live in ``common_features_*.csv`` and are
joined to impressions by ``common_feature_index``; the item, combination and
context fields live in ``sample_skeleton_*.csv``.

TFRecord layout (one ``tf.train.Example`` per user-context group of up to
``max_group_size`` impressions):

* user fields, once per record:   ``ids/<field>`` int64, ``w/<field>`` float
* item-side fields, per impression: ``ids/<field>`` int64 (all impressions'
  ids concatenated), ``len/<field>`` int64 (ids per impression),
  ``w/<field>`` float (weighted fields only)
* per record: ``group_key`` int64, a hash of the record's
  ``common_feature_index`` (the same for every record of a request: it splits
  train into train and validation by request);
* per impression: ``sample_id``, ``click``, ``conversion`` (int64) and, when
  the raw data has ground truth, ``gt/pctr``, ``gt/pcvr`` (float) and
  ``gt/conversion`` (int64).

A serving request is one impression per ``tf.train.Example`` with the
``ids/`` and ``w/`` keys only (no ``len/``, no labels).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Literal

Group = Literal["user", "item", "combination", "context"]


@dataclasses.dataclass(frozen=True)
class Field:
    """One Ali-CCP field."""

    id: str  # the raw field id, e.g. "101", "109_14"
    group: Group
    multi: bool  # may hold several ids per row
    weighted: bool  # raw values are weights (not all 1.0)
    description: str = ""

    @property
    def user_side(self) -> bool:
        """True for fields in common_features (pooled once per group)."""
        return self.group == "user"

    @property
    def ids_key(self) -> str:
        return f"ids/{self.id}"

    @property
    def weights_key(self) -> str:
        return f"w/{self.id}"

    @property
    def lengths_key(self) -> str:
        return f"len/{self.id}"

    # Names of the model's input tensors for this field (Keras names allow no "/").
    @property
    def ids_input(self) -> str:
        return f"ids_{self.id}"

    @property
    def rows_input(self) -> str:
        return f"rows_{self.id}"

    @property
    def weights_input(self) -> str:
        return f"w_{self.id}"


FIELDS: tuple[Field, ...] = (
    # User side (common_features_*.csv).
    Field("101", "user", False, False, "user id"),
    Field("121", "user", False, False, "user profile: categorical id"),
    Field("122", "user", False, False, "user profile: group id"),
    Field("124", "user", False, False, "user profile: gender"),
    Field("125", "user", False, False, "user profile: age"),
    Field("126", "user", False, False, "user profile: consumption level 1"),
    Field("127", "user", False, False, "user profile: consumption level 2"),
    Field("128", "user", False, False, "user profile: occupation"),
    Field("129", "user", False, False, "user profile: geography"),
    Field("109_14", "user", True, True, "user behaviour: categories"),
    Field("110_14", "user", True, True, "user behaviour: shops"),
    Field("127_14", "user", True, True, "user behaviour: brands"),
    Field("150_14", "user", True, True, "user behaviour: intentions"),
    # Item side (sample_skeleton_*.csv).
    Field("205", "item", False, False, "item id"),
    Field("206", "item", False, False, "item category"),
    Field("207", "item", False, False, "item shop"),
    Field("210", "item", True, False, "item intention nodes"),
    Field("216", "item", False, False, "item brand"),
    # Combination (sample_skeleton_*.csv).
    Field("508", "combination", False, True, "user-category x item category"),
    Field("509", "combination", False, True, "user-shop x item shop"),
    Field("702", "combination", False, True, "user-brand x item brand"),
    Field("853", "combination", True, True, "user-intention x item intention"),
    # Context (sample_skeleton_*.csv).
    Field("301", "context", False, False, "scene / position context"),
)

FIELDS_BY_ID: dict[str, Field] = {f.id: f for f in FIELDS}
USER_FIELDS: tuple[Field, ...] = tuple(f for f in FIELDS if f.user_side)
ITEM_FIELDS: tuple[Field, ...] = tuple(f for f in FIELDS if not f.user_side)

# Model input: the group (row of the user-side fields) of every impression.
GROUP_INDEX = "group_index"

# Per record: a hash of its common_feature_index (every record of a request
# has the same), which splits train into train and validation by request.
GROUP_KEY = "group_key"

# Per-impression label / id / ground-truth keys.
SAMPLE_ID = "sample_id"
CLICK = "click"
CONVERSION = "conversion"
GT_PCTR = "gt/pctr"
GT_PCVR = "gt/pcvr"
GT_CONVERSION = "gt/conversion"
LABEL_KEYS = (CLICK, CONVERSION)
GROUND_TRUTH_FLOAT_KEYS = (GT_PCTR, GT_PCVR)
GROUND_TRUTH_INT_KEYS = (GT_CONVERSION,)

# Output keys of every model and of the serving signature.
CTR = "ctr"
CVR = "cvr"
CTCVR = "ctcvr"
OUTPUT_KEYS = (CTR, CVR, CTCVR)
# The columns of esmm_tf.predict's CSV, in order (its header line).
PREDICTION_COLUMNS = (SAMPLE_ID, *OUTPUT_KEYS)


def hash_id(value: str) -> int:
    """A string id (user name, URL, SKU) as a raw feature id: the first 63 bits
    of its BLAKE2b hash, a non-negative int64 that is the same in every process
    and language. Apply it where logs are written and where serving requests
    are built, so that training and serving see the same ids."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


# Raw-format separators.
FEATURE_SEP = b"\x01"
ID_SEP = b"\x02"
VALUE_SEP = b"\x03"
