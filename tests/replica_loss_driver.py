"""Prints, per model, each loss term two ways as JSON: summed over the two
replicas of a MirroredStrategy on two logical CPUs that split one batch
unevenly, and computed on the whole batch in one replica (run as a
subprocess by tests/test_averaging.py: logical devices must be set before
TensorFlow starts)."""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

from esmm_tf import features as F  # noqa: E402
from esmm_tf import objectives, registry  # noqa: E402
from esmm_tf.config import Config  # noqa: E402
from esmm_tf.model import Heads  # noqa: E402

N, SPLIT = 9, 3  # replica 0 gets impressions [0, 3), replica 1 [3, 9)
rng = np.random.default_rng(0)
DATA = {
    F.CLICK: np.array([1, 0, 0, 1, 1, 0, 1, 0, 1], np.float32),
    F.CONVERSION: np.array([1, 0, 0, 0, 1, 0, 0, 0, 1], np.float32),
    F.SAMPLE_ID: np.arange(N, dtype=np.int64),
    "ctr": rng.normal(size=N).astype(np.float32) * 2,
    "second": rng.normal(size=N).astype(np.float32),
    "imputation": rng.normal(size=N).astype(np.float32),
}


def loss(config: Config, data: dict) -> dict:
    spec = registry.get(config.model)
    extra = (data["imputation"][:, None],) if spec.imputation_tower else ()
    outputs = Heads(spec.second_head)(data["ctr"][:, None], data["second"][:, None], *extra)
    labels = {k: data[k] for k in (F.CLICK, F.CONVERSION, F.SAMPLE_ID)}
    return objectives.loss(config, labels, outputs)


def main() -> None:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    parts = [{k: v[:SPLIT] for k, v in DATA.items()}, {k: v[SPLIT:] for k, v in DATA.items()}]
    result = {}
    for model in registry.MODELS:
        config = Config(data_dir="unused", model=model, aman_negative_rate=0.5)
        per_replica_data = strategy.experimental_distribute_values_from_function(
            lambda ctx: {k: tf.constant(v) for k, v in parts[ctx.replica_id_in_sync_group].items()}
        )

        def replica_fn(data, config=config):
            return loss(config, data)

        run = tf.function(lambda d, fn=replica_fn: strategy.run(fn, (d,)))
        per_replica = run(per_replica_data)
        summed = {
            k: float(strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None))
            for k, v in per_replica.items()
        }
        whole = {k: float(v) for k, v in loss(config, DATA).items()}
        local = [loss(config, {k: tf.constant(v) for k, v in p.items()}) for p in parts]
        naive = {k: sum(float(x[k]) for x in local) for k in whole}  # each replica's own mean
        result[model] = {"replicas": summed, "whole": whole, "local_means": naive}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
