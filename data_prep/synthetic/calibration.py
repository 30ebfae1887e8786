"""Intercepts that hit the requested click and conversion rates."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from data_prep.synthetic.sampling import sample_chunk
from data_prep.synthetic.world import World, draw, sigmoid


def _bisect(f, lo: float = -30.0, hi: float = 30.0) -> float:
    """The root of an increasing function on [lo, hi]."""
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def calibrate(world: World, rng: np.random.Generator) -> dict[str, Any]:
    """Intercepts giving the target CTR and CVR-given-click on a pilot sample.

    The pilot's users are evenly spaced quantiles of the activity distribution
    (systematic sampling) and its rows have the mean size, which removes most
    of the noise of a random pick.
    """
    config = world.config
    row_size = max(round(config.impressions_per_row), 1)  # sizes are independent of users
    n_rows = math.ceil(config.pilot_impressions / row_size)
    users = draw(world.user_cum, (np.arange(n_rows) + 0.5) / n_rows)
    ctr_parts, cvr_parts, n = [], [], 0
    for lo in range(0, n_rows, config.chunk_rows):
        user = users[lo : lo + config.chunk_rows]
        chunk = sample_chunk(world, rng, np.full(len(user), row_size), user)
        ctr_parts.append(chunk.logit_ctr)
        cvr_parts.append(chunk.logit_cvr)
        n += len(chunk.row)
    x, y = np.concatenate(ctr_parts), np.concatenate(cvr_parts)
    b_ctr = _bisect(lambda b: sigmoid(x + b).mean() - config.ctr)
    pctr = sigmoid(x + b_ctr)
    b_cvr = _bisect(lambda b: (pctr * sigmoid(y + b)).sum() / pctr.sum() - config.cvr)
    world.intercept = (b_ctr, b_cvr)
    return {
        "ctr_intercept": b_ctr,
        "cvr_intercept": b_cvr,
        "pilot_impressions": n,
        "logit_std_ctr": float(x.std()),
        "logit_std_cvr": float(y.std()),
        "logit_correlation": float(np.corrcoef(x, y)[0, 1]) if x.std() * y.std() > 0 else None,
    }
