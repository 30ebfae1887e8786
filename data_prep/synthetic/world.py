"""The generative world: users, items, their attributes, behaviour lists and effects."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from data_prep.synthetic.config import MAX_BEHAVIOUR_IDS, SyntheticConfig
from data_prep.synthetic.text import (
    Text,
    const,
    hcat,
    itoa,
    offsets_from_lengths,
    value_table,
    vcat,
)
from esmm_tf import features

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


def zipf_cum(n: int, exponent: float) -> np.ndarray:
    weights = (np.arange(n) + 1.0) ** -exponent
    return np.cumsum(weights) / weights.sum()


def draw(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn from a cumulative distribution with uniforms ``u``."""
    return np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), len(cum) - 1)


def pair(rng: np.random.Generator, n: int, std_ctr: float, std_cvr: float, rho: float):
    """Correlated CTR/CVR effects, each with a trailing 0 (so index -1 means none)."""
    z1, z2 = rng.standard_normal((2, n))
    ctr = np.append(std_ctr * z1, 0.0)
    cvr = np.append(std_cvr * (rho * z1 + math.sqrt(1 - rho * rho) * z2), 0.0)
    return ctr, cvr


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) = inf below -709: 0, as it should be
        return 1.0 / (1.0 + np.exp(-x))


class Behaviour(NamedTuple):
    """One behaviour field of all users, CSR by user, sorted by value within a user."""

    ptr: np.ndarray  # int64, users + 1
    value: np.ndarray  # int32 attribute index
    count: np.ndarray  # uint16 >= 1


@dataclasses.dataclass
class World:
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
    behaviour: list[Behaviour]  # per attribute
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
    tokens: Text  # "field_id 0x02 feature_id" of every field's every index
    token_start: dict[str, int]  # first row of each field in tokens
    values: Text  # see value_table
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


def build_world(config: SyntheticConfig, rng: np.random.Generator) -> World:
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
    shop_main_cat = draw(zipf_cum(n_cat, zipf), rng.random(n_shop))
    shop_main_brand = draw(zipf_cum(n_brand, zipf), rng.random(n_shop))
    shop_tier = rng.integers(0, NUM_TIERS, n_shop)
    shop = draw(zipf_cum(n_shop, 0.9 * zipf), rng.random(items))
    category = np.where(
        rng.random(items) < 0.7,
        shop_main_cat[shop],
        draw(zipf_cum(n_cat, zipf), rng.random(items)),
    )
    brand = np.where(
        rng.random(items) < 0.6,
        shop_main_brand[shop],
        draw(zipf_cum(n_brand, 0.9 * zipf), rng.random(items)),
    )
    brand[rng.random(items) < 0.05] = -1
    category_intentions = draw(zipf_cum(n_int, zipf), rng.random((n_cat, 3)))
    intention = draw(zipf_cum(n_int, zipf), rng.random((items, MAX_INTENTIONS)))
    intention[:, 0] = category_intentions[category, rng.integers(0, 3, items)]
    num_int = 1 + rng.binomial(MAX_INTENTIONS - 1, 0.3, items)
    intention[np.arange(MAX_INTENTIONS) >= num_int[:, None]] = -1
    for j in range(1, MAX_INTENTIONS):  # drop repeats
        repeat = (intention[:, :j] == intention[:, j : j + 1]).any(axis=1)
        intention[repeat, j] = -1
    # int32 halves the largest tables (4.3M items at the public set's size).
    category, shop, brand, intention = (
        a.astype(np.int32) for a in (category, shop, brand, intention)
    )
    item_cum = zipf_cum(items, 0.9 * zipf)
    popularity = np.diff(item_cum, prepend=0.0)
    by_category = np.argsort(category, kind="stable")
    by_category_cum = np.cumsum(popularity[by_category])
    del popularity
    category_start = offsets_from_lengths(np.bincount(category, minlength=n_cat))
    cum_at = np.concatenate([[0.0], by_category_cum])[category_start]
    category_lo, category_mass = cum_at[:-1], np.diff(cum_at)

    # Users: activity, profile, favourite categories (by popularity), effects.
    user_cum = np.cumsum(rng.lognormal(0.0, 1.0, users))
    profile = np.stack(
        [
            draw(np.cumsum(rng.dirichlet(np.full(k, 2.0))), rng.random(users))
            for k in PROFILE_CARDINALITY
        ],
        axis=1,
    )
    favourite = draw(np.cumsum(category_mass), rng.random((users, FAVOURITES)))
    favourite_cum = np.cumsum(rng.gamma(1.0, 1.0, (users, FAVOURITES)), axis=1)
    favourite_cum /= favourite_cum[:, -1:]

    world = World(
        config=config,
        sizes=sizes,
        id_base=id_base,
        id_perm=id_perm,
        user_cum=user_cum,
        user_profile=profile,
        user_effect=pair(rng, users, 0.35, 0.35, rho),
        profile_effect=[
            pair(rng, k, s1, s2, rho)
            for k, s1, s2 in zip(PROFILE_CARDINALITY, PROFILE_CTR_STD, PROFILE_CVR_STD, strict=True)
        ],
        favourite=favourite,
        favourite_cum=favourite_cum,
        behaviour=[],
        item_cum=item_cum,
        item_attr=[category, shop, brand, intention],
        item_effect=pair(rng, items, 0.25, 0.25, rho),
        attr_effect=[
            pair(rng, n_cat, 0.35, 0.3, rho),
            pair(rng, n_shop, 0.3, 0.3, rho),
            pair(rng, n_brand, 0.2, 0.2, rho),
        ],
        shop_tier=shop_tier,
        by_category=by_category,
        by_category_cum=by_category_cum,
        category_start=category_start,
        category_lo=category_lo,
        category_mass=category_mass,
        tokens=vcat(
            [
                hcat(
                    const(f.id.encode() + features.ID_SEP, sizes[f.id]),
                    itoa(id_base[f.id] + id_perm[f.id]),
                )
                for f in features.FIELDS
            ]
        ),
        token_start=dict(
            zip(
                id_base,
                offsets_from_lengths([sizes[f] for f in id_base])[:-1].tolist(),
                strict=True,
            )
        ),
        values=value_table(1),
    )
    world.behaviour = _build_behaviour(world, rng, attr_sizes)
    max_count = max(int(b.count.max(initial=1)) for b in world.behaviour)
    world.values = value_table(max_count)
    return world


def _build_behaviour(world: World, rng: np.random.Generator, attr_sizes) -> list[Behaviour]:
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
        keep = np.clip(np.rint(keep), 3, MAX_BEHAVIOUR_IDS).astype(np.int64)
        events = np.ceil(3 * keep.max(axis=1)).astype(np.int64)
        who = np.repeat(np.arange(b), events)
        item = sample_items(world, rng, batch[who], share=0.6)
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
        batches, parts[a] = parts[a], []  # freed as joined: at most one field held twice
        lengths = np.concatenate([p[0] for p in batches])
        value = np.concatenate([p[1] for p in batches])
        count = np.concatenate([p[2] for p in batches])
        del batches
        out.append(Behaviour(offsets_from_lengths(lengths), value, count))
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
    # int32 values and uint16 counts (at most 4 * MAX_BEHAVIOUR_IDS events per user) keep the table small.
    lengths = np.bincount(owner[chosen], minlength=len(keep))
    return lengths, value[chosen].astype(np.int32), count[chosen].astype(np.uint16)


def sample_items(world: World, rng: np.random.Generator, user: np.ndarray, share: float):
    """Items for users: from a favourite category w.p. ``share``, else by popularity."""
    n = len(user)
    interest = rng.random(n) < share
    by_interest, by_popularity = np.flatnonzero(interest), np.flatnonzero(~interest)
    item = np.empty(n, np.int64)
    item[by_popularity] = draw(world.item_cum, rng.random(len(by_popularity)))
    fav_user = user[by_interest]
    k = (rng.random(len(fav_user))[:, None] >= world.favourite_cum[fav_user]).sum(axis=1)
    favourite = world.favourite[fav_user, np.minimum(k, FAVOURITES - 1)]
    item[by_interest] = world.items_in_categories(favourite, rng.random(len(fav_user)))
    return item
