"""Shared fixtures: a tiny synthetic raw dataset and its conversion."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_IMPRESSIONS = 6000


@pytest.fixture(scope="session")
def tiny_raw_dir(tmp_path_factory) -> str:
    """Raw Ali-CCP-format files of ~6k synthetic impressions (with ground truth)."""
    from data_prep.synthetic import SyntheticConfig, generate

    out = str(tmp_path_factory.mktemp("raw"))
    generate(
        SyntheticConfig(
            impressions=TINY_IMPRESSIONS,
            seed=1,
            impressions_per_row=15,
            behaviour_ids=20,
            pilot_impressions=20_000,
            progress_seconds=0,
        ),
        out,
    )
    return out


@pytest.fixture(scope="session")
def tiny_data_dir(tiny_raw_dir, tmp_path_factory) -> str:
    """tiny_raw_dir converted (min_count=1, 2 shards per split, in-process)."""
    from data_prep.convert import ConvertConfig, convert

    out = os.path.join(str(tmp_path_factory.mktemp("data")), "data")
    convert(ConvertConfig(raw_dir=tiny_raw_dir, out_dir=out, min_count=1, num_shards=2, workers=1))
    return out


@pytest.fixture
def tiny_config(tiny_data_dir):
    """A small, fast, deterministic training config on the tiny dataset."""
    from tests.helpers import make_tiny_config

    return make_tiny_config(tiny_data_dir)
