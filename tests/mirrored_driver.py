"""``python -m tests.mirrored_driver DATA_DIR``: one ESMM train step under
``--strategy=mirrored`` on two logical CPU devices, against the same step on
one device over the union of the two replicas' batches. Prints a JSON report
(the logical devices must be set before TensorFlow initialises, hence a
process of its own)."""

from __future__ import annotations

import json
import sys

import numpy as np
import tensorflow as tf

from esmm_tf import data_layout, distribute, input_pipeline, objectives, training_run
from esmm_tf import features as F
from esmm_tf.config import Config
from esmm_tf.model import build_model

GLOBAL_RECORDS = 8


def step_fn(config, model, optimizer):
    def step(inputs, labels):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = objectives.loss(config, labels, outputs)
        variables = model.trainable_variables
        grads = tape.gradient(loss["total"], variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss, {k: outputs[k] for k in F.OUTPUT_KEYS}

    return step


def main(data_dir: str) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    config = Config(
        data_dir=data_dir,
        embedding_dim=4,
        tower_units=(16, 8),
        batch_size=GLOBAL_RECORDS,
        deterministic=True,
        strategy="mirrored",
    )
    strategy = distribute.make_strategy(config.strategy)
    files = data_layout.shard_files(data_dir, "train")
    distribute.check_train_sharding(strategy, files, config.batch_size)

    def make(num_shards, shard_index, context):
        batch = context.get_per_replica_batch_size(config.batch_size)
        return input_pipeline.make_dataset(
            files, batch, shuffle=False, num_shards=num_shards, shard_index=shard_index
        )

    batches = iter(distribute.distributed_batches(strategy, make))
    inputs, labels = next(batches)
    with strategy.scope():
        model = build_model(config)
        optimizer = training_run.make_optimizer(config)
        optimizer.build(model.trainable_variables)
    start = [v.numpy() for v in model.trainable_variables]
    step = tf.function(lambda x, y: strategy.run(step_fn(config, model, optimizer), args=(x, y)))
    loss, outputs = step(inputs, labels)
    loss = distribute.sum_local_replicas(strategy, loss)
    outputs = distribute.concat_local_replicas(strategy, outputs)
    replica_impressions = [
        int(t.shape[0]) for t in strategy.experimental_local_results(labels[F.CLICK])
    ]
    copies = [strategy.experimental_local_results(v.value) for v in model.trainable_variables]
    copies_agree = all(len(c) == 2 and np.array_equal(c[0].numpy(), c[1].numpy()) for c in copies)

    # The same step on one device: the mean loss over both replicas' impressions.
    parts = list(
        zip(
            strategy.experimental_local_results(inputs),
            strategy.experimental_local_results(labels),
            strict=True,
        )
    )
    one_config = Config(**{**config.__dict__, "strategy": "default"})
    one = build_model(one_config)
    one_optimizer = training_run.make_optimizer(one_config)
    one_optimizer.build(one.trainable_variables)
    for v, value in zip(one.trainable_variables, start, strict=True):
        v.assign(value)
    sizes = [float(part_labels[F.CLICK].shape[0]) for _, part_labels in parts]
    with tf.GradientTape() as tape:
        total = sum(
            size
            * objectives.loss(one_config, part_labels, one(part_inputs, training=True))["total"]
            for size, (part_inputs, part_labels) in zip(sizes, parts, strict=True)
        ) / sum(sizes)
    variables = one.trainable_variables
    one_optimizer.apply_gradients(zip(tape.gradient(total, variables), variables, strict=True))
    max_diff = max(
        float(np.max(np.abs(a.numpy() - b.numpy())))
        for a, b in zip(model.trainable_variables, one.trainable_variables, strict=True)
    )
    moved = max(
        float(np.max(np.abs(a.numpy() - s)))
        for a, s in zip(model.trainable_variables, start, strict=True)
    )
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "replica_impressions": replica_impressions,
                "outputs_rows": int(outputs[F.CTR].shape[0]),
                "loss": float(loss["total"]),
                "one_device_loss": float(total),
                "copies_agree": copies_agree,
                "max_diff_vs_one_device": max_diff,
                "max_update": moved,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
