"""The README's "Your own logs" example: a field set that is not Ali-CCP's.

``python -m tests.own_fields MODULE [FLAGS...]`` runs the entry point
``python -m MODULE`` with ``esmm_tf.features`` holding ``OWN_FIELDS`` instead
of the Ali-CCP fields: what editing ``FIELDS`` in esmm_tf/features.py does.
``write_raw_logs`` writes a small data set in the raw format with these fields.
"""

from __future__ import annotations

import os
import runpy
import sys

import numpy as np

from esmm_tf import features as F

OWN_FIELDS = (
    # User side: once per request (common_features_*.csv).
    F.Field("user", "user", False, False, "user id (a string, hashed with features.hash_id)"),
    F.Field("age", "user", False, False, "age bucket"),
    F.Field("recent", "user", True, True, "items viewed in the last week, weight = recency"),
    # Item side: once per impression (sample_skeleton_*.csv).
    F.Field("item", "item", False, False, "item id"),
    F.Field("tags", "item", True, False, "item tags"),
    F.Field("slot", "context", False, False, "position on the page"),
)


def use_fields(fields: tuple[F.Field, ...]) -> None:
    """Replaces the field set; call before any other esmm_tf/data_prep import."""
    F.FIELDS = fields
    F.FIELDS_BY_ID = {f.id: f for f in fields}
    F.USER_FIELDS = tuple(f for f in fields if f.user_side)
    F.ITEM_FIELDS = tuple(f for f in fields if not f.user_side)


def _features(items) -> bytes:
    return b"\x01".join(b"%s\x02%d\x03%s" % (f.encode(), i, repr(w).encode()) for f, i, w in items)


def write_raw_logs(raw_dir: str, requests: int = 200, seed: int = 0) -> None:
    """``requests`` page views per split, each one user and 8 candidate items;
    clicks favour the first two slots and items whose tag matches the user's
    taste, conversions favour one age bucket."""
    rng = np.random.default_rng(seed)
    os.makedirs(raw_dir, exist_ok=True)
    sample_id = 0
    for split in ("train", "test"):
        skeleton, common = [], []
        for r in range(requests):
            user = int(rng.integers(40))
            taste, age = user % 4, user % 3
            request_id = f"{split}-{r:06d}".encode()
            user_feats = [
                ("user", F.hash_id(f"user-{user}"), 1.0),
                ("age", age, 1.0),
                *[
                    ("recent", int(i), round(1.0 / (k + 1), 3))
                    for k, i in enumerate(rng.integers(100, size=3))
                ],
            ]
            common.append(b"%s,%d,%s" % (request_id, len(user_feats), _features(user_feats)))
            for slot in range(8):
                item = int(rng.integers(100))
                tag = item % 4
                item_feats = [
                    ("item", item, 1.0),
                    ("tags", 1000 + tag, 1.0),
                    ("tags", 2000 + item % 7, 1.0),
                    ("slot", slot, 1.0),
                ]
                p_click = (0.35 if slot < 2 else 0.04) + (0.2 if tag == taste else 0.0)
                click = int(rng.random() < p_click)
                conversion = int(click and rng.random() < (0.6 if age == 0 else 0.1))
                sample_id += 1
                skeleton.append(
                    b"%d,%d,%d,%s,%d,%s"
                    % (
                        sample_id,
                        click,
                        conversion,
                        request_id,
                        len(item_feats),
                        _features(item_feats),
                    )
                )
        for name, lines in (("sample_skeleton", skeleton), ("common_features", common)):
            with open(os.path.join(raw_dir, f"{name}_{split}.csv"), "wb") as f:
                f.write(b"\n".join(lines) + b"\n")


if __name__ == "__main__":
    use_fields(OWN_FIELDS)
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
