"""One replica-aware averaging rule for every model: under a 2-replica
MirroredStrategy that splits a batch unevenly, the replicas' losses add up to
the loss of the whole batch (every term normalised by the global batch's
impressions or sample weights), which the replicas' own means would not."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import averaging, registry
from tests.helpers import run_ok


@pytest.fixture(scope="module")
def replica_losses() -> dict:
    out = run_ok(["tests.replica_loss_driver"], timeout=300).stdout
    return json.loads(out.split("RESULT ", 1)[1])


@pytest.mark.slow
@pytest.mark.parametrize("model", registry.MODELS)
def test_replicas_add_up_to_the_whole_batch(replica_losses, model):
    result = replica_losses[model]
    assert sorted(result["replicas"]) == sorted(result["whole"])
    for key, value in result["whole"].items():
        assert result["replicas"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


@pytest.mark.slow
def test_local_means_would_differ(replica_losses):
    """The test can fail: the replicas' own means do not add up to it."""
    result = replica_losses["esmm"]
    assert result["local_means"]["ctr"] != pytest.approx(result["whole"]["ctr"], rel=1e-3)


def test_mean_on_one_replica():
    values = tf.constant([1.0, 2.0, 4.0])
    assert float(averaging.mean(values)) == pytest.approx(7 / 3)
    weights = tf.constant([1.0, 0.0, 3.0])
    assert float(averaging.mean(values, weights)) == pytest.approx(13 / 4)
    assert float(averaging.mean(tf.zeros([0]))) == 0.0
    assert float(averaging.mean(values, tf.zeros([3]))) == 0.0
    np.testing.assert_allclose(float(averaging.global_sum(tf.constant(5.0))), 5.0)
