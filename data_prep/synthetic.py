"""Synthetic logs in the raw Ali-CCP format, with the ground truth that made them.

``python -m data_prep.synthetic --out_dir=DIR --impressions=N --seed=S`` writes
(``.csv.gz`` instead of ``.csv`` with ``--gzip``):

* ``sample_skeleton_{train,test}.csv``: one impression per line,
  ``sample_id,click,conversion,common_feature_index,feature_num,feature_list``,
  holding the item-side fields (item, combination, context).
* ``common_features_{train,test}.csv``: one user context per line,
  ``common_feature_index,feature_num,feature_list``, holding the user fields.
* ``ground_truth_{train,test}.csv``: one line per skeleton line, same order,
  ``sample_id,true_pctr,true_pcvr,counterfactual_conversion``.
* ``synthetic_config.json``: the resolved config and a measured summary. It is
  renamed into place last: its presence marks a complete, consistent output.

A ``feature_list`` is features joined by 0x01, each ``field_id 0x02 feature_id
0x03 value`` (see ``esmm_tf.features``). Unweighted fields carry ``1.0``;
weighted fields carry ``log(1 + count)`` with 5 decimals.

The world behind the data: users with a profile, a few favourite categories and
behaviour lists (categories, shops, brands, intentions of items they interacted
with, with counts); items with a category, shop, brand (sometimes none) and 1-4
intention nodes, Zipf-distributed popularity. Each common row is one visit of a
user; it serves a geometric number of consecutive impressions, half chosen
from the user's favourite categories, half by global popularity. A combination
field (508/509/702/853) is present when the user's behaviour list of that
visit holds the item's category/shop/brand/intention; its id names the matched
category/shop/brand/intention (in its own id range) and its value is the user's
weight on it. True pCTR and pCVR are sigmoids of sums of effects of user id,
profile, item id, category, shop, brand, context and user-item affinity (the
combination weights); the two logits share correlated effects but each has its
own parts (context moves only CTR, a price-tier vs consumption-level match only
CVR), so clicked impressions convert more than average: the selection bias
ESMM addresses. The intercepts are calibrated on a pilot sample to hit the
requested CTR and conversion-given-click rates.

Feature ids: field k of ``features.FIELDS`` owns ``[(k + 1) * span, (k + 2) *
span)`` (``span`` a power of ten above the largest field); the summary lists
each field's range. The item, behaviour and combination fields of one attribute
share the shuffle of their indices, so ``id - range start`` names the same
category in 206, 109_14 and 508 (likewise 207/110_14/509, 216/127_14/702,
210/150_14/853). Within a line, features come grouped by field in
``features.FIELDS`` order; nothing else about their order is promised.

Everything is drawn from ``numpy.random.default_rng`` seeded by the config, in
fixed-size chunks of common rows, so equal configs give byte-identical files
(on one platform and numpy version).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from esmm_tf import features

SPLITS = ("train", "test")
SKELETON = "sample_skeleton"
COMMON = "common_features"
GROUND_TRUTH = "ground_truth"
CONFIG_FILE = "synthetic_config.json"

# Real Ali-CCP profile cardinalities; the share of rows missing each field.
PROFILE_FIELDS = ("121", "122", "124", "125", "126", "127", "128", "129")
PROFILE_CARDINALITY = (97, 13, 2, 7, 3, 3, 2, 4)
PROFILE_MISSING = (0.01, 0.01, 0.03, 0.03, 0.05, 0.05, 0.04, 0.02)
PROFILE_CTR_STD = (0.2, 0.15, 0.12, 0.2, 0.12, 0.12, 0.08, 0.12)
PROFILE_CVR_STD = (0.15, 0.12, 0.1, 0.15, 0.1, 0.1, 0.08, 0.1)
CONSUMPTION_FIELD = PROFILE_FIELDS.index("126")  # matched against the shop's price tier

# Item attributes, in this order everywhere below.
ATTRIBUTES = ("category", "shop", "brand", "intention")
ITEM_ATTRIBUTE_FIELDS = ("206", "207", "216", "210")
BEHAVIOUR_FIELDS = ("109_14", "110_14", "127_14", "150_14")
COMBINATION_FIELDS = ("508", "509", "702", "853")
ITEM_ID_FIELD, USER_ID_FIELD, CONTEXT_FIELD = "205", "101", "301"
# Affinity = sum over attributes of coefficient * log(1 + user's count on the item's value).
AFFINITY_CTR = (0.22, 0.15, 0.12, 0.12)
AFFINITY_CVR = (0.12, 0.1, 0.1, 0.06)
CONTEXT_PROBS = (0.55, 0.3, 0.15)
CONTEXT_CTR = (0.3, 0.0, -0.45)
CONTEXT_CVR = (0.05, 0.0, -0.05)

MAX_INTENTIONS = 4
FAVOURITES = 4  # favourite categories per user
NUM_TIERS = 3  # shop price tiers, matched against the 3 consumption levels
_AUC_BINS = 1 << 14
_AUC_RANGE = 16.0  # logits binned over [-16, 16]

_FIELD_INDEX = {f.id: i for i, f in enumerate(features.FIELDS)}


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of one synthetic data set (``None`` sizes scale with impressions)."""

    impressions: int = 200_000
    seed: int = 0
    ctr: float = 0.04  # target overall click rate
    cvr: float = 0.05  # target conversion rate among clicks
    impressions_per_row: float = 30.0  # mean impressions per common row (geometric, min 1)
    num_users: int | None = None  # default: impressions // 100, within [100, 100_000]
    num_items: int | None = None  # default: impressions // 20, within [1_000, 1_000_000]
    behaviour_ids: float = 60.0  # mean ids per behaviour field (lognormal spread)
    test_fraction: float = 0.5  # the last rows (by impressions) go to the test files
    gzip: bool = False
    gzip_level: int = 1
    signal: float = 1.0  # scales every logit effect; >1 makes labels easier to predict
    correlation: float = 0.3  # correlation of each paired CTR/CVR effect
    interest_share: float = 0.5  # impressions drawn from the user's favourite categories
    behaviour_drop: float = 0.05  # per visit, share of behaviour entries left out
    zipf_exponent: float = 1.0
    chunk_rows: int = 1024  # common rows generated per step (fixes the random stream)
    pilot_impressions: int = 200_000  # calibration sample
    progress_seconds: float = 5.0  # stderr progress at most this often; <= 0: silent

    def __post_init__(self):
        checks = {
            "impressions >= 1": self.impressions >= 1,
            "seed >= 0": self.seed >= 0,
            "0 < ctr < 1": 0 < self.ctr < 1,
            "0 < cvr < 1": 0 < self.cvr < 1,
            "impressions_per_row >= 1": self.impressions_per_row >= 1,
            "num_users >= 1": self.num_users is None or self.num_users >= 1,
            "num_items >= 1": self.num_items is None or self.num_items >= 1,
            "behaviour_ids >= 1": self.behaviour_ids >= 1,
            "0 <= test_fraction <= 1": 0 <= self.test_fraction <= 1,
            "0 <= gzip_level <= 9": 0 <= self.gzip_level <= 9,
            "signal >= 0": self.signal >= 0,
            "-1 <= correlation <= 1": -1 <= self.correlation <= 1,
            "0 <= interest_share <= 1": 0 <= self.interest_share <= 1,
            "0 <= behaviour_drop < 1": 0 <= self.behaviour_drop < 1,
            "zipf_exponent >= 0": self.zipf_exponent >= 0,
            "chunk_rows >= 1": self.chunk_rows >= 1,
            "pilot_impressions >= 1000": self.pilot_impressions >= 1000,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"SyntheticConfig: need {', '.join(failed)}; got {self}")

    def resolved(self) -> SyntheticConfig:
        """This config with the defaulted sizes filled in."""
        users = self.num_users or int(np.clip(self.impressions // 100, 100, 100_000))
        items = self.num_items or int(np.clip(self.impressions // 20, 1_000, 1_000_000))
        return dataclasses.replace(self, num_users=users, num_items=items)


def file_names(gzip_output: bool = False) -> list[str]:
    """The data files ``generate`` writes, in order (plus ``CONFIG_FILE``)."""
    ext = ".csv.gz" if gzip_output else ".csv"
    return [f"{stem}_{split}{ext}" for stem in (SKELETON, COMMON, GROUND_TRUTH) for split in SPLITS]


# ----------------------------------------------------------------------------
# Vectorised line formatting. Strings are rows of a uint8 matrix; a boolean mask
# marks their bytes (holes allowed), so joining strings side by side is a
# column concatenation and ``mat[mask]`` writes them all out in row order.


class _Text(NamedTuple):
    mat: np.ndarray  # uint8 [n, width]
    mask: np.ndarray  # bool [n, width]


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _text_table(strings: Sequence[bytes]) -> _Text:
    width = max(map(len, strings))
    mat = np.zeros((len(strings), width), np.uint8)
    for i, s in enumerate(strings):
        mat[i, : len(s)] = np.frombuffer(s, np.uint8)
    lengths = np.array([len(s) for s in strings])
    return _Text(mat, np.arange(width) < lengths[:, None])


def _take(table: _Text, codes: np.ndarray) -> _Text:
    return _Text(table.mat[codes], table.mask[codes])


def _const(text: bytes, n: int) -> _Text:
    row = np.frombuffer(text, np.uint8)
    return _Text(np.broadcast_to(row, (n, len(row))), np.ones((n, len(row)), bool))


def _itoa(values: np.ndarray) -> _Text:
    """Decimal strings of non-negative integers (right-aligned)."""
    values = np.asarray(values, np.int64)
    width = len(str(int(values.max()))) if values.size else 1
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = (values[:, None] // powers % 10 + 48).astype(np.uint8)
    mask = values[:, None] >= powers
    mask[:, -1] = True  # "0"
    return _Text(digits, mask)


def _hcat(*parts: _Text) -> _Text:
    """Row-wise concatenation."""
    mats = [np.broadcast_to(p.mat, p.mask.shape) for p in parts]
    return _Text(np.concatenate(mats, axis=1), np.concatenate([p.mask for p in parts], axis=1))


def _vcat(parts: Sequence[_Text]) -> _Text:
    """All rows of all parts, padded to one width."""
    width = max(p.mat.shape[1] for p in parts)
    pad = [((0, 0), (0, width - p.mat.shape[1])) for p in parts]
    return _Text(
        np.concatenate([np.pad(p.mat, w) for p, w in zip(parts, pad, strict=True)]),
        np.concatenate([np.pad(p.mask, w) for p, w in zip(parts, pad, strict=True)]),
    )


def _hex16(values: np.ndarray) -> _Text:
    """16 lowercase hex digits and a comma per value."""
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nibbles = (values.astype(np.uint64)[:, None] >> shifts) & np.uint64(15)
    return _hcat(_Text(_HEX[nibbles], np.ones(nibbles.shape, bool)), _const(b",", len(values)))


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_LABELS = _text_table([b",0,0,", b",0,1,", b",1,0,", b",1,1,"])  # click * 2 + conversion


def _value_table(max_count: int) -> _Text:
    """Row 2c + last: 0x03, the value of count code c, then 0x01 or (last) a newline.

    Code 0 is ``1.0`` (unweighted fields); code c >= 1 is ``log(1 + c)``, 5 decimals.
    """
    values = [b"1.0"] + [b"%.5f" % math.log1p(c) for c in range(1, max_count + 1)]
    ends = (features.FEATURE_SEP, b"\n")
    return _text_table([features.VALUE_SEP + v + end for v in values for end in ends])


def _feature_lines(
    prefix: _Text, line: np.ndarray, field: np.ndarray, token: np.ndarray,
    value_code: np.ndarray, world: _World,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Lines ``prefix + feature_num + ',' + feature_list + '\\n'``.

    The features of all lines are listed by ``line``, ``field`` (index into
    ``features.FIELDS``), ``token`` (row of ``world.tokens``) and ``value_code``;
    each line is written in ``features.FIELDS`` order. Returns the bytes, the
    byte offset of each line (n + 1) and the sorted ``line * len(FIELDS) + field``.
    """
    n_lines = len(prefix.mat)
    key = line * len(features.FIELDS) + field
    order = np.argsort(key, kind="stable")
    key, line, token, value_code = key[order], line[order], token[order], value_code[order]
    last = np.ones(len(line), np.int64)
    last[:-1] = line[1:] != line[:-1]
    counts = np.bincount(line, minlength=n_lines)
    if not counts.all():
        raise AssertionError("every line needs at least one feature")
    head = _hcat(prefix, _itoa(counts), _const(b",", n_lines))
    body = _hcat(_take(world.tokens, token), _take(world.values, 2 * value_code + last))
    # Interleave: each line's head row, then its feature rows.
    head_row = np.arange(n_lines) + _offsets(counts)[:-1]
    body_row = np.arange(len(line)) + line + 1
    width = max(head.mat.shape[1], body.mat.shape[1])
    mat = np.zeros((n_lines + len(line), width), np.uint8)
    mask = np.zeros(mat.shape, bool)
    for rows, part in ((head_row, head), (body_row, body)):
        mat[rows, : part.mat.shape[1]] = part.mat
        mask[rows, : part.mask.shape[1]] = part.mask
    row_offsets = _offsets(mask.sum(axis=1))
    return mat[mask], row_offsets[np.append(head_row, len(mat))], key


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijection on uint64: distinct inputs give distinct common_feature_index."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


# ----------------------------------------------------------------------------
# The world: users, items and their effects.


def _zipf_cum(n: int, exponent: float) -> np.ndarray:
    weights = (np.arange(n) + 1.0) ** -exponent
    return np.cumsum(weights) / weights.sum()


def _draw(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn from a cumulative distribution with uniforms ``u``."""
    return np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), len(cum) - 1)


def _pair(rng: np.random.Generator, n: int, std_ctr: float, std_cvr: float, rho: float):
    """Correlated CTR/CVR effects, each with a trailing 0 (so index -1 means none)."""
    z1, z2 = rng.standard_normal((2, n))
    ctr = np.append(std_ctr * z1, 0.0)
    cvr = np.append(std_cvr * (rho * z1 + math.sqrt(1 - rho * rho) * z2), 0.0)
    return ctr, cvr


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _Behaviour(NamedTuple):
    """One behaviour field of all users, CSR by user, sorted by value within a user."""

    ptr: np.ndarray  # int64, users + 1
    value: np.ndarray  # int32 attribute index
    count: np.ndarray  # uint16 >= 1


@dataclasses.dataclass
class _World:
    config: SyntheticConfig
    sizes: dict[str, int]  # cardinality per field id
    id_base: dict[str, int]
    id_perm: dict[str, np.ndarray]
    user_cum: np.ndarray
    user_profile: np.ndarray  # [users, 8]
    user_effect: tuple[np.ndarray, np.ndarray]
    profile_effect: list[tuple[np.ndarray, np.ndarray]]
    favourite: np.ndarray  # [users, FAVOURITES] category indices
    favourite_cum: np.ndarray  # [users, FAVOURITES]
    behaviour: list[_Behaviour]  # per attribute
    item_cum: np.ndarray
    item_attr: list[np.ndarray]  # category, shop, brand (-1: none), intentions [items, 4] (-1 pad)
    item_effect: tuple[np.ndarray, np.ndarray]
    attr_effect: list[tuple[np.ndarray, np.ndarray]]  # category, shop, brand
    shop_tier: np.ndarray
    by_category: np.ndarray  # item indices sorted by category
    by_category_cum: np.ndarray  # cumulative popularity in that order
    category_start: np.ndarray  # categories + 1 positions in by_category
    category_lo: np.ndarray  # popularity mass before each category's items
    category_mass: np.ndarray
    tokens: _Text  # "field_id 0x02 feature_id" of every field's every index
    token_start: dict[str, int]  # first row of each field in tokens
    values: _Text  # see _value_table
    intercept: tuple[float, float] = (0.0, 0.0)

    def token(self, field: str, index: np.ndarray) -> np.ndarray:
        """Rows of ``tokens`` for indices of ``field``."""
        return self.token_start[field] + index

    def items_in_categories(self, category: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Items of the given (non-empty) categories, by popularity within each."""
        target = self.category_lo[category] + u * self.category_mass[category]
        pos = np.searchsorted(self.by_category_cum, target, side="right")
        pos = np.clip(pos, self.category_start[category], self.category_start[category + 1] - 1)
        return self.by_category[pos]


def _build_world(config: SyntheticConfig, rng: np.random.Generator) -> _World:
    users, items = config.num_users, config.num_items
    n_cat = int(np.clip(items // 50, 20, 10_000))
    n_shop = int(np.clip(items // 10, 50, 200_000))
    n_brand = int(np.clip(items // 15, 30, 100_000))
    n_int = int(np.clip(items // 20, 50, 50_000))
    attr_sizes = (n_cat, n_shop, n_brand, n_int)
    sizes = {USER_ID_FIELD: users, ITEM_ID_FIELD: items, CONTEXT_FIELD: len(CONTEXT_PROBS)}
    sizes.update(zip(PROFILE_FIELDS, PROFILE_CARDINALITY, strict=True))
    for fields in (ITEM_ATTRIBUTE_FIELDS, BEHAVIOUR_FIELDS, COMBINATION_FIELDS):
        sizes.update(zip(fields, attr_sizes, strict=True))
    # Field k owns the ids [(k + 1) * span, (k + 2) * span): index i of the field is
    # id base + perm[i]. The item, behaviour and combination fields of one
    # attribute (e.g. 206, 109_14, 508) share perm, so id - base names the same
    # category in all three.
    span = 10 ** len(str(max(sizes.values())))
    id_base = {f.id: (i + 1) * span for i, f in enumerate(features.FIELDS)}
    id_perm = {f.id: rng.permutation(sizes[f.id]).astype(np.int64) for f in features.FIELDS}
    for fields in zip(ITEM_ATTRIBUTE_FIELDS, BEHAVIOUR_FIELDS, COMBINATION_FIELDS, strict=True):
        for f in fields[1:]:
            id_perm[f] = id_perm[fields[0]]
    rho, zipf = config.correlation, config.zipf_exponent

    # Items: a shop (Zipf), the shop's main category and brand (mostly), intentions.
    shop_main_cat = _draw(_zipf_cum(n_cat, zipf), rng.random(n_shop))
    shop_main_brand = _draw(_zipf_cum(n_brand, zipf), rng.random(n_shop))
    shop_tier = rng.integers(0, NUM_TIERS, n_shop)
    shop = _draw(_zipf_cum(n_shop, 0.9 * zipf), rng.random(items))
    category = np.where(
        rng.random(items) < 0.7,
        shop_main_cat[shop],
        _draw(_zipf_cum(n_cat, zipf), rng.random(items)),
    )
    brand = np.where(
        rng.random(items) < 0.6,
        shop_main_brand[shop],
        _draw(_zipf_cum(n_brand, 0.9 * zipf), rng.random(items)),
    )
    brand[rng.random(items) < 0.05] = -1
    category_intentions = _draw(_zipf_cum(n_int, zipf), rng.random((n_cat, 3)))
    intention = _draw(_zipf_cum(n_int, zipf), rng.random((items, MAX_INTENTIONS)))
    intention[:, 0] = category_intentions[category, rng.integers(0, 3, items)]
    num_int = 1 + rng.binomial(MAX_INTENTIONS - 1, 0.3, items)
    intention[np.arange(MAX_INTENTIONS) >= num_int[:, None]] = -1
    for j in range(1, MAX_INTENTIONS):  # drop repeats
        repeat = (intention[:, :j] == intention[:, j : j + 1]).any(axis=1)
        intention[repeat, j] = -1
    item_cum = _zipf_cum(items, 0.9 * zipf)
    popularity = np.diff(item_cum, prepend=0.0)
    by_category = np.argsort(category, kind="stable")
    by_category_cum = np.cumsum(popularity[by_category])
    category_start = _offsets(np.bincount(category, minlength=n_cat))
    cum_at = np.concatenate([[0.0], by_category_cum])[category_start]
    category_lo, category_mass = cum_at[:-1], np.diff(cum_at)

    # Users: activity, profile, favourite categories (by popularity), effects.
    user_cum = np.cumsum(rng.lognormal(0.0, 1.0, users))
    profile = np.stack(
        [
            _draw(np.cumsum(rng.dirichlet(np.full(k, 2.0))), rng.random(users))
            for k in PROFILE_CARDINALITY
        ],
        axis=1,
    )
    favourite = _draw(np.cumsum(category_mass), rng.random((users, FAVOURITES)))
    favourite_cum = np.cumsum(rng.gamma(1.0, 1.0, (users, FAVOURITES)), axis=1)
    favourite_cum /= favourite_cum[:, -1:]

    world = _World(
        config=config,
        sizes=sizes,
        id_base=id_base,
        id_perm=id_perm,
        user_cum=user_cum,
        user_profile=profile,
        user_effect=_pair(rng, users, 0.35, 0.35, rho),
        profile_effect=[
            _pair(rng, k, s1, s2, rho)
            for k, s1, s2 in zip(PROFILE_CARDINALITY, PROFILE_CTR_STD, PROFILE_CVR_STD, strict=True)
        ],
        favourite=favourite,
        favourite_cum=favourite_cum,
        behaviour=[],
        item_cum=item_cum,
        item_attr=[category, shop, brand, intention],
        item_effect=_pair(rng, items, 0.25, 0.25, rho),
        attr_effect=[
            _pair(rng, n_cat, 0.35, 0.3, rho),
            _pair(rng, n_shop, 0.3, 0.3, rho),
            _pair(rng, n_brand, 0.2, 0.2, rho),
        ],
        shop_tier=shop_tier,
        by_category=by_category,
        by_category_cum=by_category_cum,
        category_start=category_start,
        category_lo=category_lo,
        category_mass=category_mass,
        tokens=_vcat(
            [
                _hcat(
                    _const(f.id.encode() + features.ID_SEP, sizes[f.id]),
                    _itoa(id_base[f.id] + id_perm[f.id]),
                )
                for f in features.FIELDS
            ]
        ),
        token_start=dict(
            zip(id_base, _offsets([sizes[f] for f in id_base])[:-1].tolist(), strict=True)
        ),
        values=_value_table(1),
    )
    world.behaviour = _build_behaviour(world, rng, attr_sizes)
    max_count = max(int(b.count.max(initial=1)) for b in world.behaviour)
    world.values = _value_table(max_count)
    return world


def _build_behaviour(world: _World, rng: np.random.Generator, attr_sizes) -> list[_Behaviour]:
    """Per user, the attributes of a few hundred past interactions, top-k by count."""
    config = world.config
    users = config.num_users
    sigma = 0.8
    parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in ATTRIBUTES]
    for lo in range(0, users, 4096):
        batch = np.arange(lo, min(lo + 4096, users))
        b = len(batch)
        size = rng.lognormal(math.log(config.behaviour_ids) - sigma**2 / 2, sigma, b)
        keep = size[:, None] * rng.lognormal(-0.045, 0.3, (b, len(ATTRIBUTES)))
        keep = np.clip(np.rint(keep), 3, 2000).astype(np.int64)
        events = np.ceil(3 * keep.max(axis=1)).astype(np.int64)
        who = np.repeat(np.arange(b), events)
        item = _sample_items(world, rng, batch[who], share=0.6)
        for a, attr in enumerate(world.item_attr):
            if a < 3:
                owner, value = who, attr[item]
            else:
                owner = np.repeat(who, MAX_INTENTIONS)
                value = attr[item].ravel()
            present = value >= 0
            parts[a].append(_top_counts(owner[present], value[present], attr_sizes[a], keep[:, a]))
    out = []
    for a in range(len(ATTRIBUTES)):
        lengths = np.concatenate([p[0] for p in parts[a]])
        value = np.concatenate([p[1] for p in parts[a]])
        count = np.concatenate([p[2] for p in parts[a]])
        out.append(_Behaviour(_offsets(lengths), value, count))
    return out


def _top_counts(owner, value, size, keep):
    """Distinct values per owner with their counts; the ``keep`` most frequent.

    Ties go to the more popular value (lower index). Returns lengths per owner
    and the kept values and counts, sorted by owner, then value.
    """
    keys, count = np.unique(owner * size + value, return_counts=True)
    owner, value = keys // size, keys % size
    top = count.max(initial=0)
    by_count = np.argsort((owner * (top + 1) + top - count) * size + value)
    start = np.searchsorted(owner, np.arange(len(keep)))
    rank = np.empty(len(keys), np.int64)
    rank[by_count] = np.arange(len(keys)) - start[owner[by_count]]
    chosen = rank < keep[owner]
    # int32 values and uint16 counts (at most 4 * 2000 events per user) keep the table small.
    lengths = np.bincount(owner[chosen], minlength=len(keep))
    return lengths, value[chosen].astype(np.int32), count[chosen].astype(np.uint16)


def _sample_items(world: _World, rng: np.random.Generator, user: np.ndarray, share: float):
    """Items for users: from a favourite category w.p. ``share``, else by popularity."""
    n = len(user)
    interest = rng.random(n) < share
    by_interest, by_popularity = np.flatnonzero(interest), np.flatnonzero(~interest)
    item = np.empty(n, np.int64)
    item[by_popularity] = _draw(world.item_cum, rng.random(len(by_popularity)))
    fav_user = user[by_interest]
    k = (rng.random(len(fav_user))[:, None] >= world.favourite_cum[fav_user]).sum(axis=1)
    favourite = world.favourite[fav_user, np.minimum(k, FAVOURITES - 1)]
    item[by_interest] = world.items_in_categories(favourite, rng.random(len(fav_user)))
    return item


# ----------------------------------------------------------------------------
# One chunk of common rows and their impressions.


class _Chunk(NamedTuple):
    user: np.ndarray  # per row
    profile_present: np.ndarray  # [rows, 8] bool
    behaviour: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per attribute: row, value, count
    row: np.ndarray  # per impression: its row in the chunk
    item: np.ndarray
    context: np.ndarray
    match: list[np.ndarray]  # per attribute: user's count on the item's value (intention: [n, 4])
    logit_ctr: np.ndarray  # without intercept
    logit_cvr: np.ndarray


def _visit_behaviour(b: _Behaviour, user: np.ndarray, drop: float, rng: np.random.Generator):
    lengths = b.ptr[user + 1] - b.ptr[user]
    offsets = _offsets(lengths)
    index = np.repeat(b.ptr[user] - offsets[:-1], lengths) + np.arange(offsets[-1])
    row = np.repeat(np.arange(len(user)), lengths)
    kept = rng.random(len(index)) >= drop
    index = index[kept]
    return row[kept], b.value[index].astype(np.int64), b.count[index].astype(np.int64)


def _match(behaviour, size: int, row: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The visit's count on ``value`` (0 when absent or ``value`` is -1)."""
    b_row, b_value, b_count = behaviour
    if not len(b_row):
        return np.zeros(len(row), np.int64)
    keys = b_row * size + b_value  # sorted: rows in order, values sorted within a row
    query = row * size + value
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    found = (keys[pos] == query) & (value >= 0)
    return np.where(found, b_count[pos], 0)


def _sample_chunk(
    world: _World, rng: np.random.Generator, sizes: np.ndarray, user: np.ndarray | None = None
) -> _Chunk:
    """Rows of the given sizes (users drawn by activity unless given) and their impressions."""
    config = world.config
    n_rows = len(sizes)
    if user is None:
        user = _draw(world.user_cum, rng.random(n_rows))
    profile_present = rng.random((n_rows, len(PROFILE_FIELDS))) >= np.array(PROFILE_MISSING)
    behaviour = [_visit_behaviour(b, user, config.behaviour_drop, rng) for b in world.behaviour]
    row = np.repeat(np.arange(n_rows), sizes)
    imp_user = user[row]
    item = _sample_items(world, rng, imp_user, config.interest_share)
    context = _draw(np.cumsum(CONTEXT_PROBS), rng.random(len(row)))

    category, shop, brand, intention = (attr[item] for attr in world.item_attr)
    match = [
        _match(behaviour[a], world.sizes[BEHAVIOUR_FIELDS[a]], row, value)
        for a, value in enumerate((category, shop, brand))
    ]
    intention_rows = np.repeat(row, MAX_INTENTIONS)
    match.append(
        _match(behaviour[3], world.sizes["150_14"], intention_rows, intention.ravel()).reshape(
            -1, MAX_INTENTIONS
        )
    )
    weight = [np.log1p(m) for m in match[:3]] + [np.log1p(match[3]).max(axis=1)]

    logits = []
    for t, (affinity, context_effect) in enumerate(
        ((AFFINITY_CTR, CONTEXT_CTR), (AFFINITY_CVR, CONTEXT_CVR))
    ):
        x = world.user_effect[t][imp_user] + world.item_effect[t][item]
        for f, effect in enumerate(world.profile_effect):
            x += effect[t][world.user_profile[imp_user, f]]
        for a, value in enumerate((category, shop, brand)):
            x += world.attr_effect[a][t][value]
        x += np.array(context_effect)[context]
        x += sum(c * w for c, w in zip(affinity, weight, strict=True))
        logits.append(x)
    tier_gap = np.abs(world.shop_tier[shop] - world.user_profile[imp_user, CONSUMPTION_FIELD])
    logits[1] += 0.3 * (1.0 - tier_gap)
    return _Chunk(
        user=user,
        profile_present=profile_present,
        behaviour=behaviour,
        row=row,
        item=item,
        context=context,
        match=match,
        logit_ctr=config.signal * logits[0],
        logit_cvr=config.signal * logits[1],
    )


def _row_sizes(rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    return rng.geometric(1.0 / config.impressions_per_row, config.chunk_rows).astype(np.int64)


def _bisect(f, lo: float = -30.0, hi: float = 30.0) -> float:
    """The root of an increasing function on [lo, hi]."""
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _calibrate(world: _World, rng: np.random.Generator) -> dict[str, Any]:
    """Intercepts giving the target CTR and CVR-given-click on a pilot sample.

    The pilot's users are evenly spaced quantiles of the activity distribution
    (systematic sampling) and its rows have the mean size, which removes most
    of the noise of a random pick.
    """
    config = world.config
    row_size = max(round(config.impressions_per_row), 1)  # sizes are independent of users
    n_rows = math.ceil(config.pilot_impressions / row_size)
    users = _draw(world.user_cum, (np.arange(n_rows) + 0.5) / n_rows)
    ctr_parts, cvr_parts, n = [], [], 0
    for lo in range(0, n_rows, config.chunk_rows):
        user = users[lo : lo + config.chunk_rows]
        chunk = _sample_chunk(world, rng, np.full(len(user), row_size), user)
        ctr_parts.append(chunk.logit_ctr)
        cvr_parts.append(chunk.logit_cvr)
        n += len(chunk.row)
    x, y = np.concatenate(ctr_parts), np.concatenate(cvr_parts)
    b_ctr = _bisect(lambda b: _sigmoid(x + b).mean() - config.ctr)
    pctr = _sigmoid(x + b_ctr)
    b_cvr = _bisect(lambda b: (pctr * _sigmoid(y + b)).sum() / pctr.sum() - config.cvr)
    world.intercept = (b_ctr, b_cvr)
    return {
        "ctr_intercept": b_ctr,
        "cvr_intercept": b_cvr,
        "pilot_impressions": n,
        "logit_std_ctr": float(x.std()),
        "logit_std_cvr": float(y.std()),
        "logit_correlation": float(np.corrcoef(x, y)[0, 1]) if x.std() * y.std() > 0 else None,
    }


# ----------------------------------------------------------------------------
# Lines of one chunk.


def _lines(world: _World, prefix: _Text, columns):
    """Lines from columns ``(line, field id, field index, value code)``, one entry per feature."""
    line = np.concatenate([c[0] for c in columns])
    field = np.concatenate([np.full(len(c[0]), _FIELD_INDEX[c[1]]) for c in columns])
    token = np.concatenate([world.token(c[1], c[2]) for c in columns])
    code = np.concatenate([c[3] for c in columns])
    return _feature_lines(prefix, line, field, token, code, world)


def _common_lines(world: _World, chunk: _Chunk, cfi: _Text):
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


def _skeleton_lines(world: _World, chunk: _Chunk, prefix: _Text):
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


def _ground_truth_lines(sample_id, pctr, pcvr, counterfactual) -> bytes:
    rows = zip(
        sample_id.tolist(), pctr.tolist(), pcvr.tolist(), counterfactual.tolist(), strict=True
    )
    return b"".join(map(b"%d,%.6g,%.6g,%d\n".__mod__, rows))


# ----------------------------------------------------------------------------
# Measured summary.


def _auc_bins(logit: np.ndarray) -> np.ndarray:
    scaled = (logit + _AUC_RANGE) * (_AUC_BINS / (2 * _AUC_RANGE))
    return np.clip(scaled.astype(np.int64), 0, _AUC_BINS - 1)


def _auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """Rank AUC from score histograms (ties within a bin count one half)."""
    p, n = positive.sum(), negative.sum()
    if not p or not n:
        return None
    below = np.cumsum(negative) - negative
    return float((positive * (below + 0.5 * negative)).sum() / (p * n))


def _round(x):
    """Floats to 6 significant digits (ints and None unchanged)."""
    return x if x is None or isinstance(x, int) else float(f"{x:.6g}")


class _SplitStats:
    """Counts, means and oracle AUC histograms of one split."""

    def __init__(self):
        self.rows = self.impressions = self.clicks = self.conversions = 0
        self.counterfactual = 0
        self.sums = np.zeros(4)  # pctr, pcvr, pcvr over clicks, pctr * pcvr
        self.first_sample_id = self.last_sample_id = None
        self.moments = np.zeros(5)  # x, y, xx, yy, xy of (pctr, pcvr)
        self.hist = {k: np.zeros((2, _AUC_BINS)) for k in ("ctr", "cvr", "ctcvr", "cvr_entire")}

    def add(self, rows, sample_id, logit_ctr, logit_cvr, pctr, pcvr, click, counterfactual):
        conversion = click & counterfactual
        self.rows += rows
        self.impressions += len(sample_id)
        self.clicks += int(click.sum())
        self.conversions += int(conversion.sum())
        self.counterfactual += int(counterfactual.sum())
        self.first_sample_id = self.first_sample_id or int(sample_id[0])
        self.last_sample_id = int(sample_id[-1])
        self.sums += [pctr.sum(), pcvr.sum(), pcvr[click].sum(), (pctr * pcvr).sum()]
        self.moments += [pctr.sum(), pcvr.sum(), pctr @ pctr, pcvr @ pcvr, pctr @ pcvr]
        pctcvr = pctr * pcvr
        logit_ctcvr = np.log(pctcvr) - np.log1p(-pctcvr)
        for key, logit, label, among in (
            ("ctr", logit_ctr, click, None),
            ("cvr", logit_cvr, conversion, click),
            ("ctcvr", logit_ctcvr, conversion, None),
            ("cvr_entire", logit_cvr, counterfactual, None),
        ):
            if among is not None:
                logit, label = logit[among], label[among]
            bins = _auc_bins(logit)
            self.hist[key][1] += np.bincount(bins[label], minlength=_AUC_BINS)
            self.hist[key][0] += np.bincount(bins[~label], minlength=_AUC_BINS)

    def merged(self, other: _SplitStats) -> _SplitStats:
        out = _SplitStats()
        for name in ("rows", "impressions", "clicks", "conversions", "counterfactual"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.sums, out.moments = self.sums + other.sums, self.moments + other.moments
        out.hist = {k: self.hist[k] + other.hist[k] for k in self.hist}
        ids = [s for s in (self, other) if s.impressions]
        if ids:
            out.first_sample_id, out.last_sample_id = ids[0].first_sample_id, ids[-1].last_sample_id
        return out

    def summary(self) -> dict[str, Any]:
        n = max(self.impressions, 1)
        sx, sy, sxx, syy, sxy = self.moments
        var_x, var_y = sxx / n - (sx / n) ** 2, syy / n - (sy / n) ** 2
        corr = (sxy / n - sx * sy / n**2) / math.sqrt(var_x * var_y) if var_x * var_y > 0 else None
        return {
            "rows": self.rows,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "conversions": self.conversions,
            "counterfactual_conversions": self.counterfactual,
            "first_sample_id": self.first_sample_id,
            "last_sample_id": self.last_sample_id,
            "ctr": _round(self.clicks / n),
            "cvr_given_click": _round(self.conversions / max(self.clicks, 1)),
            "ctcvr": _round(self.conversions / n),
            "mean_true_pctr": _round(self.sums[0] / n),
            "mean_true_pcvr": _round(self.sums[1] / n),
            "mean_true_pcvr_clicked": _round(self.sums[2] / max(self.clicks, 1)),
            "mean_true_pctcvr": _round(self.sums[3] / n),
            "true_pctr_pcvr_correlation": _round(corr),
            "oracle_auc": {k: _round(_auc(h[1], h[0])) for k, h in self.hist.items()},
        }


class _FieldStats:
    """Per field: lines holding it and ids in them (over both splits)."""

    def __init__(self):
        self.lines = np.zeros(len(features.FIELDS), np.int64)
        self.ids = np.zeros(len(features.FIELDS), np.int64)
        self.total = {"common": 0, "skeleton": 0}

    def add(self, kind: str, n_lines: int, keys: np.ndarray):
        nf = len(features.FIELDS)
        first = np.ones(len(keys), bool)
        first[1:] = keys[1:] != keys[:-1]
        self.lines += np.bincount(keys[first] % nf, minlength=nf)
        self.ids += np.bincount(keys % nf, minlength=nf)
        self.total[kind] += n_lines

    def summary(self) -> dict[str, Any]:
        out = {}
        for i, f in enumerate(features.FIELDS):
            total = self.total["common" if f.user_side else "skeleton"]
            out[f.id] = {
                "share_of_lines": _round(self.lines[i] / max(total, 1)),
                "mean_ids_when_present": _round(self.ids[i] / max(self.lines[i], 1)),
            }
        return out


# ----------------------------------------------------------------------------
# Output files: temporary names, renamed into place when everything is written.


class _AtomicOutput:
    def __init__(self, out_dir: str, names: Sequence[str], gzip_level: int | None):
        self._dir = out_dir
        self._names = list(names)
        self._gzip_level = gzip_level
        self._raw: dict[str, Any] = {}
        self._files: dict[str, Any] = {}

    def _tmp(self, name: str) -> str:
        return os.path.join(self._dir, f".{name}.{os.getpid()}.tmp")

    def __enter__(self) -> _AtomicOutput:
        try:
            for name in self._names:
                raw = self._raw[name] = open(self._tmp(name), "wb", buffering=1 << 20)  # noqa: SIM115
                self._files[name] = raw
                if self._gzip_level is not None:  # no name or time in the header: reproducible
                    self._files[name] = gzip.GzipFile(
                        filename="", mode="wb", fileobj=raw, compresslevel=self._gzip_level, mtime=0
                    )
        except BaseException:
            self._abort()
            raise
        return self

    def write(self, name: str, data) -> None:
        self._files[name].write(data)

    def _close(self) -> None:
        for name in self._names:
            for files in (self._files, self._raw):
                f = files.pop(name, None)
                if f is not None:
                    f.close()

    def _abort(self) -> None:
        try:
            self._close()
        finally:
            for name in [*self._names, CONFIG_FILE]:
                if os.path.exists(self._tmp(name)):
                    os.remove(self._tmp(name))

    def commit(self, config_text: str) -> None:
        """Renames the data files into place, then writes the config file last."""
        self._close()
        with open(self._tmp(CONFIG_FILE), "w") as f:
            f.write(config_text)
        final_config = os.path.join(self._dir, CONFIG_FILE)
        if os.path.exists(final_config):  # an old config must not vouch for a mix
            os.remove(final_config)
        for name in self._names:
            os.replace(self._tmp(name), os.path.join(self._dir, name))
        os.replace(self._tmp(CONFIG_FILE), final_config)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()


# ----------------------------------------------------------------------------
# Entry points.


def generate(config: SyntheticConfig, out_dir: str) -> dict[str, Any]:
    """Writes the synthetic data set to ``out_dir``; returns the summary it records."""
    config = config.resolved()
    os.makedirs(out_dir, exist_ok=True)
    start_time = time.monotonic()
    world = _build_world(config, np.random.default_rng([config.seed, 0]))
    calibration = _calibrate(world, np.random.default_rng([config.seed, 1]))
    rng = np.random.default_rng([config.seed, 2])
    cfi_key = np.uint64(np.random.default_rng([config.seed, 3]).integers(0, 2**63))
    b_ctr, b_cvr = world.intercept
    n_total = config.impressions
    n_train = round(n_total * (1 - config.test_fraction))
    ext = ".csv.gz" if config.gzip else ".csv"
    split_stats = {s: _SplitStats() for s in SPLITS}
    field_stats = _FieldStats()
    names = file_names(config.gzip)

    with _AtomicOutput(out_dir, names, config.gzip_level if config.gzip else None) as out:
        written = rows_done = 0
        last_report = start_time
        while written < n_total:
            sizes = _row_sizes(rng, config)
            starts = written + np.cumsum(sizes) - sizes
            live = starts < n_total
            starts, sizes = starts[live], np.minimum(sizes[live], n_total - starts[live])
            chunk = _sample_chunk(world, rng, sizes)
            n, n_rows = len(chunk.row), len(sizes)
            logit_ctr, logit_cvr = chunk.logit_ctr + b_ctr, chunk.logit_cvr + b_cvr
            pctr, pcvr = _sigmoid(logit_ctr), _sigmoid(logit_cvr)
            click = rng.random(n) < pctr
            counterfactual = rng.random(n) < pcvr
            sample_id = written + 1 + np.arange(n)
            cfi = _hex16(
                _splitmix64(np.arange(n_rows, dtype=np.uint64) + np.uint64(rows_done) + cfi_key)
            )

            common, common_at, common_keys = _common_lines(world, chunk, cfi)
            labels = _take(_LABELS, 2 * click + (click & counterfactual))
            prefix = _hcat(_itoa(sample_id), labels, _take(cfi, chunk.row))
            skeleton, skeleton_at, skeleton_keys = _skeleton_lines(world, chunk, prefix)
            field_stats.add("common", n_rows, common_keys)
            field_stats.add("skeleton", n, skeleton_keys)

            k = int((starts < n_train).sum())  # rows of this chunk that go to train
            m = int(sizes[:k].sum())
            for split, rows, imps in (("train", (0, k), (0, m)), ("test", (k, n_rows), (m, n))):
                if rows[0] == rows[1]:
                    continue
                lo, hi = imps
                out.write(f"{COMMON}_{split}{ext}", common[common_at[rows[0]] : common_at[rows[1]]])
                out.write(f"{SKELETON}_{split}{ext}", skeleton[skeleton_at[lo] : skeleton_at[hi]])
                out.write(
                    f"{GROUND_TRUTH}_{split}{ext}",
                    _ground_truth_lines(
                        sample_id[lo:hi],
                        pctr[lo:hi],
                        pcvr[lo:hi],
                        counterfactual[lo:hi].astype(np.int64),
                    ),
                )
                split_stats[split].add(
                    rows[1] - rows[0], sample_id[lo:hi], logit_ctr[lo:hi], logit_cvr[lo:hi],
                    pctr[lo:hi], pcvr[lo:hi], click[lo:hi], counterfactual[lo:hi],
                )  # fmt: skip
            written += n
            rows_done += n_rows
            now = time.monotonic()
            if config.progress_seconds > 0 and now - last_report >= config.progress_seconds:
                last_report = now
                rate = written / (now - start_time)
                print(
                    f"synthetic: {written:,}/{n_total:,} impressions, {rows_done:,} common rows, "
                    f"{rate:,.0f} impressions/s",
                    file=sys.stderr,
                    flush=True,
                )

        summary = {
            "format": "Ali-CCP raw logs; see data_prep/synthetic.py",
            "config": dataclasses.asdict(config),
            "files": [*names, CONFIG_FILE],
            "world": {
                "users": config.num_users,
                "items": config.num_items,
                "categories": world.sizes["206"],
                "shops": world.sizes["207"],
                "brands": world.sizes["216"],
                "intentions": world.sizes["210"],
                "contexts": len(CONTEXT_PROBS),
                "max_behaviour_count": len(world.values.mat) // 2 - 1,
                "field_id_ranges": {
                    f.id: [world.id_base[f.id], world.id_base[f.id] + world.sizes[f.id] - 1]
                    for f in features.FIELDS
                },
            },
            "calibration": {k: _round(v) for k, v in calibration.items()},  # ints stay exact
            "splits": {s: split_stats[s].summary() for s in SPLITS},
            "total": split_stats["train"].merged(split_stats["test"]).summary(),
            "fields": field_stats.summary(),
        }
        out.commit(json.dumps(summary, indent=2) + "\n")
    seconds = time.monotonic() - start_time
    if config.progress_seconds > 0 and seconds >= config.progress_seconds:
        print(
            f"synthetic: wrote {written:,} impressions in {seconds:.1f}s to {out_dir}",
            file=sys.stderr,
            flush=True,
        )
    return summary


def _define_flags():
    from absl import flags

    d = SyntheticConfig()
    flags.DEFINE_string("out_dir", None, "Directory to write the data set to.", required=True)
    flags.DEFINE_integer("impressions", d.impressions, "Impressions (skeleton rows) in all.")
    flags.DEFINE_integer("seed", d.seed, "Random seed; equal flags give identical files.")
    flags.DEFINE_float("ctr", d.ctr, "Target click rate over all impressions.")
    flags.DEFINE_float("cvr", d.cvr, "Target conversion rate among clicked impressions.")
    flags.DEFINE_float(
        "impressions_per_row", d.impressions_per_row, "Mean impressions per common row."
    )
    flags.DEFINE_integer("num_users", None, "Users (default: impressions/100, in [100, 100k]).")
    flags.DEFINE_integer("num_items", None, "Items (default: impressions/20, in [1k, 1M]).")
    flags.DEFINE_float("behaviour_ids", d.behaviour_ids, "Mean ids per user behaviour field.")
    flags.DEFINE_float(
        "test_fraction", d.test_fraction, "Share of impressions (last rows) for test."
    )
    flags.DEFINE_bool("gzip", d.gzip, "Write .csv.gz files instead of .csv.")
    flags.DEFINE_integer("gzip_level", d.gzip_level, "gzip compression level (with --gzip).")
    flags.DEFINE_float("signal", d.signal, "Scale of all logit effects (higher: easier labels).")
    flags.DEFINE_float("correlation", d.correlation, "Correlation of paired CTR/CVR effects.")
    flags.DEFINE_float("progress_seconds", d.progress_seconds, "Progress to stderr this often.")
    return flags.FLAGS


def main(argv: Sequence[str]) -> None:
    from absl import flags

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    config = SyntheticConfig(
        impressions=f.impressions,
        seed=f.seed,
        ctr=f.ctr,
        cvr=f.cvr,
        impressions_per_row=f.impressions_per_row,
        num_users=f.num_users,
        num_items=f.num_items,
        behaviour_ids=f.behaviour_ids,
        test_fraction=f.test_fraction,
        gzip=f.gzip,
        gzip_level=f.gzip_level,
        signal=f.signal,
        correlation=f.correlation,
        progress_seconds=f.progress_seconds,
    )
    summary = generate(config, f.out_dir)
    total = summary["total"]
    print(
        f"wrote {total['impressions']:,} impressions ({total['rows']:,} common rows) to "
        f"{f.out_dir}: ctr {total['ctr']}, cvr|click {total['cvr_given_click']}, "
        f"oracle AUC {total['oracle_auc']}"
    )


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
