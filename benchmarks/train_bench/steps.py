"""The trainer's train step, and timing it on batches (shared by the measurements)."""

from __future__ import annotations

import os
import time

from benchmarks.train_bench.config import BATCH


def tf_module():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def make_config(data_dir: str):
    from esmm_tf.config import Config

    return Config(data_dir=data_dir)


def trainer(config):
    """The trainer's own pieces: model, optimizer (built), and its train step."""
    import keras

    from esmm_tf import training_run

    keras.utils.set_random_seed(config.seed)
    return training_run.build_training(config)


def _sync(loss) -> None:
    import numpy as np

    values = {k: v.numpy() for k, v in loss.items()}  # as the trainer does each step
    if not all(np.isfinite(v) for v in values.values()):
        raise RuntimeError(f"loss is not finite: {values}")


def materialise(data_dir: str, n: int) -> list:
    """The first n batches of the train split, in a fixed order (the same in
    every process)."""
    from esmm_tf import data_layout, input_pipeline

    files = data_layout.shard_files(data_dir, "train")
    ds = input_pipeline.make_dataset(files, BATCH, shuffle=False, deterministic=True)
    return list(ds.take(n))


def impressions_of(batch) -> int:
    from esmm_tf import features as F

    return int(batch[0][F.GROUP_INDEX].shape[0])


def run_steps(train_step, batches, steps: int, window=None) -> tuple[float, int]:
    """Seconds and impressions for ``steps`` steps over the iterator ``batches``,
    syncing on the loss each step; with ``window`` (a training_run._TrainWindow) also
    the trainer's per-step bookkeeping and its AUCs at the end."""
    from esmm_tf import features as F

    impressions = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        inputs, labels = next(batches)
        loss, outputs = train_step(inputs, labels)
        _sync(loss)
        if window is not None:
            window.update(
                {k: v.numpy() for k, v in loss.items()},
                {k: labels[k].numpy() for k in F.LABEL_KEYS},
                {k: v.numpy() for k, v in outputs.items()},
            )
        impressions += int(inputs["group_index"].shape[0])
    if window is not None:
        window.evaluator.result()
    return time.perf_counter() - t0, impressions


def time_steps(train_step, batches: list, start: int, steps: int) -> tuple[float, int]:
    """Seconds and impressions for ``steps`` steps cycling over ``batches``."""
    cycle = (batches[i % len(batches)] for i in range(start, start + steps))
    return run_steps(train_step, cycle, steps)


def total_rows(data_dir: str) -> int:
    from esmm_tf import data_layout, vocab
    from esmm_tf import features as F

    return sum(
        vocab.vocab_size(data_layout.vocab_file(data_dir, f.id)) + vocab.OOV_ROWS for f in F.FIELDS
    )
