"""One chunk of common rows (visits) and their impressions, with true logits."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from data_prep.synthetic.config import SyntheticConfig
from data_prep.synthetic.text import offsets_from_lengths
from data_prep.synthetic.world import (
    AFFINITY_CTR,
    AFFINITY_CVR,
    BEHAVIOUR_FIELDS,
    CONSUMPTION_FIELD,
    CONTEXT_CTR,
    CONTEXT_CVR,
    CONTEXT_PROBS,
    MAX_INTENTIONS,
    PROFILE_FIELDS,
    PROFILE_MISSING,
    Behaviour,
    World,
    draw,
    sample_items,
)


class Chunk(NamedTuple):
    user: np.ndarray  # per row
    profile_present: np.ndarray  # [rows, 8] bool
    behaviour: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per attribute: row, value, count
    row: np.ndarray  # per impression: its row in the chunk
    item: np.ndarray
    context: np.ndarray
    match: list[np.ndarray]  # per attribute: user's count on the item's value (intention: [n, 4])
    logit_ctr: np.ndarray  # without intercept
    logit_cvr: np.ndarray


def _visit_behaviour(b: Behaviour, user: np.ndarray, drop: float, rng: np.random.Generator):
    lengths = b.ptr[user + 1] - b.ptr[user]
    offsets = offsets_from_lengths(lengths)
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


def sample_chunk(
    world: World, rng: np.random.Generator, sizes: np.ndarray, user: np.ndarray | None = None
) -> Chunk:
    """Rows of the given sizes (users drawn by activity unless given) and their impressions."""
    config = world.config
    n_rows = len(sizes)
    if user is None:
        user = draw(world.user_cum, rng.random(n_rows))
    profile_present = rng.random((n_rows, len(PROFILE_FIELDS))) >= np.array(PROFILE_MISSING)
    behaviour = [_visit_behaviour(b, user, config.behaviour_drop, rng) for b in world.behaviour]
    row = np.repeat(np.arange(n_rows), sizes)
    imp_user = user[row]
    item = sample_items(world, rng, imp_user, config.interest_share)
    context = draw(np.cumsum(CONTEXT_PROBS), rng.random(len(row)))

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
    return Chunk(
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


def row_sizes(rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    return rng.geometric(1.0 / config.impressions_per_row, config.chunk_rows).astype(np.int64)
