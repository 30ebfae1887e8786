"""The parameters of one synthetic data set and the names of the files it writes."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

SPLITS = ("train", "test")
SKELETON = "sample_skeleton"
COMMON = "common_features"
GROUND_TRUTH = "ground_truth"
CONFIG_FILE = "synthetic_config.json"

# Upper bounds of the sizes: far above the public set's shape (84M impressions,
# 0.4M users, 4.3M items), below what makes numpy fail to allocate at once.
MAX_IMPRESSIONS = 10**12
MAX_USERS = 10_000_000  # the world holds each user's behaviour lists
MAX_ITEMS = 100_000_000
MAX_BEHAVIOUR_IDS = 2000  # ids kept per user and behaviour field (world.py)
MAX_IMPRESSIONS_PER_ROW = 10_000
MAX_CHUNK_IMPRESSIONS = 1_000_000  # chunk_rows * impressions_per_row: ~3 KB of memory each
MAX_PILOT_IMPRESSIONS = 10_000_000  # their logits are held at once
MAX_INTERLEAVE_WINDOW = 10_000_000  # pending lines are held in memory
# Above it, true probabilities round to 0 or 1 in float64 and the summary's
# oracle AUCs break; 20 already gives oracle AUCs above 0.999.
MAX_SIGNAL = 20.0


def _f(default, help_text: str):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of one synthetic data set (``None`` sizes scale with impressions)."""

    impressions: int = _f(200_000, "Impressions (skeleton rows) in all, train and test.")
    seed: int = _f(0, "Random seed; equal configs give byte-identical files.")
    ctr: float = _f(0.04, "Target click rate over all impressions.")
    cvr: float = _f(0.05, "Target conversion rate among clicked impressions.")
    impressions_per_row: float = _f(
        30.0, "Mean impressions per common row (request; geometric, at least 1)."
    )
    num_users: int | None = _f(
        None, f"Users (default: impressions/100, within [100, 100k]; at most {MAX_USERS:,})."
    )
    num_items: int | None = _f(
        None, f"Items (default: impressions/20, within [1k, 1M]; at most {MAX_ITEMS:,})."
    )
    behaviour_ids: float = _f(
        60.0,
        "Mean ids per user behaviour field (4 such fields per common row; lognormal, each "
        f"user's list capped at {MAX_BEHAVIOUR_IDS} ids); at most {MAX_BEHAVIOUR_IDS}.",
    )
    test_fraction: float = _f(0.5, "Share of impressions (the last rows) in the test files.")
    gzip: bool = _f(False, "Write .csv.gz files instead of .csv.")
    gzip_level: int = _f(1, "gzip compression level (with --gzip).")
    signal: float = _f(
        1.0,
        "Scale of every logit effect; above 1 makes labels easier to predict "
        f"(at most {MAX_SIGNAL:g}).",
    )
    correlation: float = _f(0.3, "Correlation of each paired CTR/CVR effect.")
    interest_share: float = _f(
        0.5, "Share of impressions drawn from the user's favourite categories (else popular)."
    )
    behaviour_drop: float = _f(0.05, "Per visit, the share of behaviour entries left out.")
    zipf_exponent: float = _f(
        1.0, "Exponent of the Zipf popularity of items, shops, categories, brands, intentions."
    )
    interleave_fraction: float = _f(
        0.0,
        "Share of requests whose skeleton rows are scattered among other requests' rows "
        "(as in logs written in time order); 0: every request's rows are consecutive.",
    )
    interleave_window: int = _f(
        100_000, "A scattered impression moves forward by up to this many lines."
    )
    chunk_rows: int = _f(1024, "Common rows generated per step (fixes the random stream).")
    pilot_impressions: int = _f(200_000, "Impressions sampled to calibrate the intercepts.")
    progress_seconds: float = _f(5.0, "Progress to stderr at most this often; <= 0: silent.")

    def __post_init__(self):
        floats = [f.name for f in dataclasses.fields(self) if f.type == "float"]
        not_finite = [name for name in floats if not _finite(getattr(self, name))]
        if not_finite:  # nan and inf pass some of the checks below (inf >= 1)
            raise ValueError(f"SyntheticConfig: need finite {', '.join(not_finite)}; got {self}")
        n_train = round(min(self.impressions, MAX_IMPRESSIONS) * (1 - self.test_fraction))
        checks = {
            f"1 <= impressions <= {MAX_IMPRESSIONS:,}": 1 <= self.impressions <= MAX_IMPRESSIONS,
            "seed >= 0": self.seed >= 0,
            "0 < ctr < 1": 0 < self.ctr < 1,
            "0 < cvr < 1": 0 < self.cvr < 1,
            f"1 <= impressions_per_row <= {MAX_IMPRESSIONS_PER_ROW}": (
                1 <= self.impressions_per_row <= MAX_IMPRESSIONS_PER_ROW
            ),
            f"1 <= num_users <= {MAX_USERS:,}": (
                self.num_users is None or 1 <= self.num_users <= MAX_USERS
            ),
            f"1 <= num_items <= {MAX_ITEMS:,}": (
                self.num_items is None or 1 <= self.num_items <= MAX_ITEMS
            ),
            f"1 <= behaviour_ids <= {MAX_BEHAVIOUR_IDS}": (
                1 <= self.behaviour_ids <= MAX_BEHAVIOUR_IDS
            ),
            "0 < test_fraction < 1 (else a split is empty)": 0 < self.test_fraction < 1,
            "at least one impression in each split (train: impressions * (1 - test_fraction))": (
                1 <= n_train < self.impressions
            ),
            "0 <= gzip_level <= 9": 0 <= self.gzip_level <= 9,
            f"0 <= signal <= {MAX_SIGNAL:g}": 0 <= self.signal <= MAX_SIGNAL,
            "-1 <= correlation <= 1": -1 <= self.correlation <= 1,
            "0 <= interest_share <= 1": 0 <= self.interest_share <= 1,
            "0 <= behaviour_drop < 1": 0 <= self.behaviour_drop < 1,
            "zipf_exponent >= 0": self.zipf_exponent >= 0,
            "chunk_rows >= 1": self.chunk_rows >= 1,
            f"chunk_rows * impressions_per_row <= {MAX_CHUNK_IMPRESSIONS:,} (held in memory)": (
                self.chunk_rows * self.impressions_per_row <= MAX_CHUNK_IMPRESSIONS
            ),
            f"1000 <= pilot_impressions <= {MAX_PILOT_IMPRESSIONS:,}": (
                1000 <= self.pilot_impressions <= MAX_PILOT_IMPRESSIONS
            ),
            "0 <= interleave_fraction <= 1": 0 <= self.interleave_fraction <= 1,
            f"1 <= interleave_window <= {MAX_INTERLEAVE_WINDOW:,}": (
                1 <= self.interleave_window <= MAX_INTERLEAVE_WINDOW
            ),
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"SyntheticConfig: need {', '.join(failed)}; got {self}")

    def resolved(self) -> SyntheticConfig:
        """This config with the defaulted sizes filled in."""
        users = self.num_users or int(np.clip(self.impressions // 100, 100, 100_000))
        items = self.num_items or int(np.clip(self.impressions // 20, 1_000, 1_000_000))
        return dataclasses.replace(self, num_users=users, num_items=items)


def _finite(x) -> bool:
    return isinstance(x, int) or math.isfinite(x)


def file_names(gzip_output: bool = False) -> list[str]:
    """The data files ``generate`` writes, in order (plus ``CONFIG_FILE``)."""
    ext = ".csv.gz" if gzip_output else ".csv"
    return [f"{stem}_{split}{ext}" for stem in (SKELETON, COMMON, GROUND_TRUTH) for split in SPLITS]
