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


def make_tiny_config(data_dir: str, **overrides):
    """A small, fast, deterministic training config (the ``tiny_config`` fixture's
    values; module-scoped fixtures call this directly)."""
    from esmm_tf.config import Config

    values = dict(
        data_dir=data_dir,
        embedding_dim=4,
        tower_units=(16, 8),
        batch_size=64,
        epochs=1,
        deterministic=True,
        checkpoint_every_steps=10,
        log_every_steps=5,
        seed=3,
    )
    values.update(overrides)
    return Config(**values)


@pytest.fixture
def tiny_config(tiny_data_dir):
    """A small, fast, deterministic training config on the tiny dataset."""
    return make_tiny_config(tiny_data_dir)
