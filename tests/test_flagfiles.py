"""Every experiments/<model>.flags parses (with the common settings included,
no circular-include warning) into a valid Config for that model."""

from __future__ import annotations

import dataclasses

import pytest
from absl import flags

from esmm_tf import config as config_lib
from esmm_tf import train
from tests.helpers import ROOT


@pytest.mark.parametrize("model", config_lib.MODELS)
def test_model_flagfile(model, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    values = flags.FlagValues()
    train.define_config_flags(values)
    values(["train", f"--flagfile=experiments/{model}.flags", "--data_dir=/data"])
    assert "circular" not in capsys.readouterr().err
    config = train.config_from_flags(values)
    assert config.model == model
    # The paper's settings come from common.flags.
    assert (config.embedding_dim, config.tower_units) == (18, (200, 80))
    assert (config.beta_1, config.beta_2, config.epsilon) == (0.9, 0.999, 1e-8)
    assert dataclasses.asdict(config)["data_dir"] == "/data"


def test_common_flags_sets_non_defaults(monkeypatch, capsys):
    """common.flags really is read: its lines are flags the Config knows."""
    monkeypatch.chdir(ROOT)
    with open("experiments/common.flags") as f:
        lines = [line.strip() for line in f if line.startswith("--")]
    names = {field.name for field in dataclasses.fields(config_lib.Config)}
    assert lines and all(line[2:].split("=")[0] in names for line in lines)


def test_tuned_flagfile_adds_validation_early_stopping_and_regularization(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    values = flags.FlagValues()
    train.define_config_flags(values)
    values(["train", "--flagfile=experiments/esmm_tuned.flags", "--data_dir=/data"])
    assert "circular" not in capsys.readouterr().err
    config = train.config_from_flags(values)
    assert config.model == "esmm" and config.tower_units == (200, 80)
    assert config.validation_fraction > 0 and config.early_stopping_patience > 0
    assert config.embedding_l2 > 0 and config.tower_l2 > 0 and config.dropout > 0
