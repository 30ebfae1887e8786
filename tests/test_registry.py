"""esmm_tf/registry.py is the one place that lists the models: everything else
(config, objectives, model, flagfiles, Table 2) derives from it."""

from __future__ import annotations

import dataclasses
import os

import pytest

from esmm_tf import config as config_lib
from esmm_tf import objectives, registry
from tests.helpers import ROOT

PAPER_ROWS = ("base", "aman", "oversampling", "unbias", "division", "esmm_ns", "esmm")


def test_config_models_are_the_registry():
    assert config_lib.MODELS == registry.MODELS
    assert len(set(registry.MODELS)) == len(registry.MODELS)
    assert len({s.display for s in registry.SPECS}) == len(registry.SPECS)


@pytest.mark.parametrize("spec", registry.SPECS, ids=lambda s: s.name)
def test_every_spec_resolves(spec):
    assert spec.cvr_loss is None or spec.cvr_loss in objectives.CVR_LOSSES
    assert os.path.exists(os.path.join(ROOT, "experiments", f"{spec.name}.flags"))
    config = config_lib.Config(data_dir="unused", model=spec.name)
    cvr_weight, ctcvr_weight = spec.loss_weights(config)
    assert cvr_weight >= 0 and ctcvr_weight >= 0


def test_paper_rows_carry_the_papers_numbers_in_table_order():
    assert registry.MODELS[: len(PAPER_ROWS)] == PAPER_ROWS
    for name in PAPER_ROWS:
        assert registry.get(name).paper_table2 is not None
    assert registry.get("esmm").paper_table2.cvr == (68.56, 0.37)
    assert registry.get("escm2_ipw").paper_table2 is None  # not in the ESMM paper


def test_what_tells_the_models_apart():
    esmm = registry.get("esmm")
    assert esmm.shared_embeddings and esmm.ctcvr_loss and esmm.cvr_loss is None
    assert not registry.get("esmm_ns").shared_embeddings
    assert registry.get("division").second_head == "ctcvr"
    assert registry.get("aman").cvr_loss == "aman" and not registry.get("aman").ctcvr_loss
    for name in ("escm2_ipw", "escm2_dr"):
        spec = registry.get(name)
        assert spec.shared_embeddings and spec.ctcvr_loss
        config = config_lib.Config(
            data_dir="unused", model=name, escm2_cvr_weight=0.2, escm2_ctcvr_weight=0.9
        )
        assert spec.loss_weights(config) == (0.2, 0.9)
    assert registry.get("escm2_dr").imputation_tower
    assert not any(s.imputation_tower for s in registry.SPECS if s.name != "escm2_dr")


def test_unknown_model_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"unknown model 'nope'; choose one of base, aman"):
        registry.get("nope")
    with pytest.raises(ValueError, match="--model='nope'"):
        config_lib.Config(data_dir="unused", model="nope")


def test_inconsistent_specs_are_refused():
    esmm = registry.get("esmm")
    with pytest.raises(ValueError, match="second_head"):
        dataclasses.replace(esmm, second_head="ctr")
    with pytest.raises(ValueError, match="no CVR term"):
        dataclasses.replace(registry.get("division"), cvr_loss="clicked")
    with pytest.raises(ValueError, match="needs a loss"):
        dataclasses.replace(esmm, ctcvr_loss=False)


@pytest.fixture(scope="module")
def train_batch(tiny_data_dir):
    """One real train batch (inputs, labels) of the tiny dataset."""
    from esmm_tf import data_layout, input_pipeline

    files = data_layout.shard_files(tiny_data_dir, "train")
    return next(iter(input_pipeline.make_dataset(files, 256, shuffle=False)))


@pytest.mark.slow
@pytest.mark.parametrize("model", registry.MODELS)
def test_every_model_takes_a_train_step(model, tiny_data_dir, train_batch):
    """Each registry entry builds, traces its train step and learns: finite
    losses, and a step moves the CTR tower and the second tower's weights
    (three models also run end to end in test_experiments' Table 2)."""
    import numpy as np

    from esmm_tf.train_step import build_training
    from tests.helpers import make_tiny_config

    # unbias_min_ctr=1 keeps every click: at initialisation (pCTR ~ 0.5) the
    # default rejection sampling may keep none of a small batch's few clicks.
    config = make_tiny_config(tiny_data_dir, model=model, learning_rate=0.01, unbias_min_ctr=1.0)
    net, _, train_step = build_training(config)
    before = [v.numpy().copy() for v in net.trainable_variables]
    inputs, labels = train_batch
    for _ in range(2):
        loss, outputs = train_step(inputs, labels)
    assert all(np.isfinite(float(v)) for v in loss.values()), loss
    assert float(loss["total"]) > 0
    assert set(outputs) >= {"ctr", "cvr", "ctcvr"}
    moved = {
        v.path: not np.allclose(b, v.numpy())
        for b, v in zip(before, net.trainable_variables, strict=True)
        if "tower" in v.path and "kernel" in v.path
    }
    assert moved and all(moved.values()), moved
