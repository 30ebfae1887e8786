"""Intercepts that hit the requested click and conversion rates."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from data_prep.synthetic.sampling import sample_chunk
from data_prep.synthetic.world import World, draw, sigmoid


def _bisect(f, name: str = "rate") -> float:
    """The root of an increasing function that goes from below 0 to above it.

    The bracket starts at [-30, 30] and doubles until it holds the root (a
    large ``--signal`` scales the logits, and so the intercept, up); the
    bisection then runs until the bracket is two adjacent floats. A function
    that does not cross 0 within the floats' range is a ValueError naming
    ``name`` (the rate being calibrated)."""
    lo, hi = -30.0, 30.0
    while f(lo) > 0 or f(hi) < 0:
        lo, hi = (2 * lo, hi) if f(lo) > 0 else (lo, 2 * hi)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(
                f"calibration: no intercept gives the requested {name}: lower --signal"
            )
    for _ in range(2200):  # each halves the bracket; ~2150 span the floats
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _check(name: str, got: float, target: float) -> None:
    """Refuses an intercept whose pilot rate misses the target (by more than 1 %):
    with a huge ``--signal`` the true probabilities are all ~0 or ~1, and the
    rate jumps past the target between two adjacent intercepts."""
    if not abs(got - target) <= 0.01 * target:
        raise ValueError(
            f"calibration: the closest {name} the intercept reaches on the pilot sample is "
            f"{got:.6g}, not the requested {target:.6g}: lower --signal (the true "
            "probabilities are nearly all 0 or 1) or raise --pilot_impressions"
        )


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
    b_ctr = _bisect(lambda b: sigmoid(x + b).mean() - config.ctr, "ctr")
    pctr = sigmoid(x + b_ctr)
    _check("ctr", float(pctr.mean()), config.ctr)
    b_cvr = _bisect(lambda b: (pctr * sigmoid(y + b)).sum() / pctr.sum() - config.cvr, "cvr")
    _check("cvr", float((pctr * sigmoid(y + b_cvr)).sum() / pctr.sum()), config.cvr)
    world.intercept = (b_ctr, b_cvr)
    return {
        "ctr_intercept": b_ctr,
        "cvr_intercept": b_cvr,
        "pilot_impressions": n,
        "logit_std_ctr": float(x.std()),
        "logit_std_cvr": float(y.std()),
        "logit_correlation": float(np.corrcoef(x, y)[0, 1]) if x.std() * y.std() > 0 else None,
    }
