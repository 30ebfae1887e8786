"""Train-step time with and without the embedding regularizers.

    python -m benchmarks.regularization_bench --data_dir=DATA [--big_rows=2000000]

On a converted dataset (the paper's architecture, lazy Adam, 32 records per
step, the same pre-materialised batches for every variant), the trainer's step
plus ``regularization.penalty``:

* ``off``: no regularization;
* ``minibatch``: ``--embedding_l2=1e-5`` (esmm_tf/regularization.py);
* ``whole_table``: for comparison, ``1e-5 * sum(square(table))`` over the
  whole table (what keras.regularizers.L2 or DeepCTR's embedding L2 does):
  its gradient is dense, so every row is updated every step;

each with the dataset's vocabularies and with field 205's padded to
``--big_rows`` rows (ids that never occur, as benchmarks/train_bench.py does).
Variants alternate in blocks of steps in one process. Prints ms/step and the
ratios to ``off``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "A converted dataset (data_prep.convert --out_dir).")
flags.DEFINE_integer("big_rows", 2_000_000, "Rows of field 205's padded vocabulary.")
flags.DEFINE_integer("steps", 60, "Timed steps per variant (in 3 blocks).")
flags.DEFINE_integer("batches", 20, "Distinct batches cycled over.")
flags.DEFINE_float("l2", 1e-5, "The λ of both embedding regularizers.")

PADDED_FIELD = "205"


def padded_copy(data_dir: str, root: str, rows: int) -> str:
    """data_dir's shards (links) with field 205's vocabulary padded to ``rows``."""
    from esmm_tf import data_layout, vocab

    d = os.path.join(root, "big")
    os.makedirs(d)
    for entry in ("train", "test", data_layout.STATS_FILE):
        os.symlink(os.path.join(os.path.abspath(data_dir), entry), os.path.join(d, entry))
    shutil.copytree(os.path.join(data_dir, data_layout.VOCAB_DIR), os.path.join(d, "vocab"))
    path = data_layout.vocab_file(d, PADDED_FIELD)
    start = vocab.vocab_size(path) + vocab.OOV_ROWS
    with open(path, "a") as f:
        f.writelines(f"{10**15 + i}\t1\n" for i in range(start, rows))
    return d


def make_step(data_dir: str, variant: str, l2: float):
    """The trainer's step (training_run.build_training's step_fn) plus the variant's
    penalty, as a tf.function over the batch signature."""
    import keras
    import tensorflow as tf

    from esmm_tf import input_pipeline, objectives, regularization, training_run
    from esmm_tf.config import Config
    from esmm_tf.embedding import FieldEmbeddings
    from esmm_tf.model import build_model

    config = Config(data_dir=data_dir, embedding_l2=l2 if variant == "minibatch" else 0.0)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    optimizer = training_run.make_optimizer(config)
    optimizer.build(model.trainable_variables)
    variables = model.trainable_variables
    tables = [x.embeddings for x in model.layers if isinstance(x, FieldEmbeddings)]

    def step(inputs, labels):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = objectives.loss(config, labels, outputs)
            loss["regularization"] = regularization.penalty(model, inputs, config)
            if variant == "whole_table":
                loss["regularization"] += l2 * tf.add_n(
                    [tf.reduce_sum(tf.square(t.value)) for t in tables]
                )
            total = loss["total"] + loss["regularization"]
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    fn = tf.function(step, input_signature=input_pipeline.batch_spec())
    return fn, sum(t.shape[0] for t in tables)


def main(argv) -> None:
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from esmm_tf import data_layout, input_pipeline

    files = data_layout.shard_files(FLAGS.data_dir, "train")
    batches = list(
        input_pipeline.make_dataset(files, 32, shuffle=False, deterministic=True).take(
            FLAGS.batches
        )
    )
    impressions = sum(int(b[0]["group_index"].shape[0]) for b in batches) / len(batches)
    root = tempfile.mkdtemp(prefix="esmm_reg_bench_")
    try:
        dirs = {
            "vocab": FLAGS.data_dir,
            "padded": padded_copy(FLAGS.data_dir, root, FLAGS.big_rows),
        }
        steps, rows = {}, {}
        for vocab_name, d in dirs.items():
            for variant in ("off", "minibatch", "whole_table"):
                fn, rows[vocab_name] = make_step(d, variant, FLAGS.l2)
                for b in batches[:3]:  # trace and warm up
                    float(fn(*b)["total"])
                steps[vocab_name, variant] = fn
        seconds = dict.fromkeys(steps, 0.0)
        per_block = max(1, FLAGS.steps // 3)
        for block in range(3):
            for key, fn in steps.items():
                t0 = time.perf_counter()
                for i in range(per_block):
                    float(fn(*batches[(block * per_block + i) % len(batches)])["total"])
                seconds[key] += time.perf_counter() - t0
        print(f"{impressions:.0f} impressions per step on average, {3 * per_block} steps each")
        print("| table rows | variant | ms/step | / off |")
        print("|---|---|---|---|")
        for (vocab_name, variant), s in seconds.items():
            ms = 1000 * s / (3 * per_block)
            off = 1000 * seconds[vocab_name, "off"] / (3 * per_block)
            print(f"| {rows[vocab_name]:,} | {variant} | {ms:.1f} | {ms / off:.2f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    flags.mark_flag_as_required("data_dir")
    app.run(main)
    sys.exit(0)
