"""esmm_tf.regularization, tower dropout and esmm_tf.schedules: the penalties
and their gradients by hand, sparsity under lazy and dense Adam, dropout at
training time only, the per-epoch learning-rate decay."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import data_layout, input_pipeline, objectives, regularization, schedules, training_run
from esmm_tf import features as F
from esmm_tf.embedding import FieldEmbeddings
from esmm_tf.model import build_model
from esmm_tf.optimizer import Adam
from esmm_tf.serving import SIGNATURE_INPUT, export_saved_model
from esmm_tf.serving_requests import impression_examples
from esmm_tf.towers import Tower
from tests.helpers import (
    ROOT,
    parse_grouped,
    randomize_embeddings,
    read_records,
    small_config,
)

USER_ID, ITEM_ID, INTENTIONS = (F.FIELDS_BY_ID[k] for k in ("101", "205", "210"))

# field -> [(raw id, train count)], line 0 the OOV row (205 has no OOV ids: count 0).
VOCAB = {
    USER_ID: [(-1, 2), (7, 10), (8, 5), (9, 3)],
    ITEM_ID: [(-1, 0), (100, 12), (101, 6), (102, 2)],
    INTENTIONS: [(-1, 1), (50, 30), (51, 4)],  # multi-valued: not a count of impressions
}
TRAIN_IMPRESSIONS = 20  # the largest single-valued field total (101 and 205: 20)

# Two groups: group 0 holds impressions 0-2, group 1 impression 3.
BATCH = {
    F.GROUP_INDEX: [0, 0, 0, 1],
    USER_ID: ([7, 999], [0, 1]),  # (ids, group or impression of each id); 999: OOV
    ITEM_ID: ([100, 100, 102, 555], [0, 1, 2, 3]),
    INTENTIONS: ([50, 51, 50, 50, 51], [0, 0, 2, 2, 3]),  # 50 twice in impression 2
}
# (field, vocabulary line) -> impressions holding the id, counted as the
# vocabulary counts: a user-side id once per impression of its group.
TOUCHED = {
    (USER_ID, 1): 3,
    (USER_ID, 0): 1,
    (ITEM_ID, 1): 2,
    (ITEM_ID, 3): 1,
    (ITEM_ID, 0): 1,
    (INTENTIONS, 1): 3,
    (INTENTIONS, 2): 2,
}


@pytest.fixture
def layer(tmp_path) -> FieldEmbeddings:
    os.makedirs(tmp_path / data_layout.VOCAB_DIR)
    for field, lines in VOCAB.items():
        with open(data_layout.vocab_file(str(tmp_path), field.id), "w") as f:
            f.writelines(f"{i}\t{c}\n" for i, c in lines)
    layer = FieldEmbeddings(str(tmp_path), dim=3, fields=tuple(VOCAB))
    rng = np.random.default_rng(0)
    layer.embeddings.assign(rng.normal(size=layer.embeddings.shape).astype(np.float32))
    return layer


def batch_inputs() -> dict[str, tf.Tensor]:
    inputs = {F.GROUP_INDEX: tf.constant(BATCH[F.GROUP_INDEX], tf.int32)}
    for field in VOCAB:
        ids, rows = BATCH[field]
        inputs[field.ids_input] = tf.constant(ids, tf.int64)
        inputs[field.rows_input] = tf.constant(rows, tf.int32)
    return inputs


def hand_penalty_and_gradient(layer: FieldEmbeddings, l2: float):
    """The penalty and its dense gradient in numpy, from the tables above."""
    table = layer.embeddings.numpy()
    grad = np.zeros_like(table)
    total = 0.0
    impressions = len(BATCH[F.GROUP_INDEX])
    for (field, line), c in TOUCHED.items():
        row = layer.rows(field)[0] + line
        n = max(VOCAB[field][line][1], 1)
        scale = l2 * TRAIN_IMPRESSIONS / impressions * c / n
        total += scale * np.sum(table[row] ** 2)
        grad[row] = 2 * scale * table[row]
    return total, grad


def test_train_counts_are_the_vocabulary_counts(layer):
    counts, impressions = layer.train_counts()
    want = [c for field in layer.fields for _, c in VOCAB[field]]
    np.testing.assert_array_equal(counts.numpy(), want)
    assert impressions == TRAIN_IMPRESSIONS


def test_touched_rows_count_impressions(layer):
    rows, impressions = layer.touched_rows(batch_inputs())
    got = dict(zip(rows.numpy().tolist(), impressions.numpy().tolist(), strict=True))
    want = {layer.rows(field)[0] + line: c for (field, line), c in TOUCHED.items()}
    assert got == want


def test_embedding_penalty_and_gradient_by_hand(layer):
    l2 = 1e-3
    with tf.GradientTape() as tape:
        got = regularization.embedding_penalty(layer, batch_inputs(), l2)
    grad = tape.gradient(got, layer.embeddings)
    want, want_grad = hand_penalty_and_gradient(layer, l2)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    # Sparse: the gradient names exactly the touched rows, no others.
    assert isinstance(grad, tf.IndexedSlices)
    touched = {layer.rows(field)[0] + line for field, line in TOUCHED}
    assert set(grad.indices.numpy().tolist()) == touched
    np.testing.assert_allclose(tf.convert_to_tensor(grad).numpy(), want_grad, rtol=1e-5, atol=1e-9)


def test_rarer_ids_are_penalised_more(layer):
    """Rows 7 (10 train impressions) and 8 (5) held by the same batch
    impressions: with equal vectors, row 8's gradient is twice row 7's."""
    inputs = batch_inputs()
    inputs[USER_ID.ids_input] = tf.constant([7, 8], tf.int64)
    inputs[F.GROUP_INDEX] = tf.constant([0, 1], tf.int32)
    start = layer.rows(USER_ID)[0]
    layer.embeddings.assign(tf.ones_like(layer.embeddings))
    with tf.GradientTape() as tape:
        penalty = regularization.embedding_penalty(layer, inputs, 1.0)
    grad = tf.convert_to_tensor(tape.gradient(penalty, layer.embeddings)).numpy()
    np.testing.assert_allclose(grad[start + 2], 2 * grad[start + 1], rtol=1e-6)
    assert np.all(grad[start + 1] > 0)


def test_empty_batch_has_no_penalty(layer):
    inputs = {F.GROUP_INDEX: tf.zeros([0], tf.int32)}
    for field in VOCAB:
        inputs[field.ids_input] = tf.zeros([0], tf.int64)
        inputs[field.rows_input] = tf.zeros([0], tf.int32)
    assert float(regularization.embedding_penalty(layer, inputs, 1.0)) == 0.0


def test_tower_penalty_and_gradient_by_hand():
    tower = Tower((4, 3), seed=1)
    tower.build((None, 5))
    l2 = 0.01
    with tf.GradientTape() as tape:
        penalty = regularization.tower_penalty(tower, l2)
    variables = [v for layer in tower.layers for v in (layer.kernel, layer.bias)]
    grads = tape.gradient(penalty, variables)
    kernels = [layer.kernel.numpy() for layer in tower.layers]
    np.testing.assert_allclose(penalty.numpy(), l2 * sum(np.sum(k**2) for k in kernels), rtol=1e-6)
    for layer, k, g_kernel, g_bias in zip(
        tower.layers, kernels, grads[::2], grads[1::2], strict=True
    ):
        np.testing.assert_allclose(g_kernel.numpy(), 2 * l2 * k, rtol=1e-6, err_msg=layer.name)
        assert g_bias is None  # biases are not penalised


# ---------------------------------------------------------------- whole models


@pytest.fixture(scope="module")
def batch(tiny_data_dir):
    files = data_layout.shard_files(tiny_data_dir, "train")
    return next(iter(input_pipeline.make_dataset(files, 8, shuffle=False)))


def test_the_vocabulary_counts_impressions(tiny_data_dir):
    """N from the vocabulary files is the converter's train impressions."""
    model = build_model(small_config(tiny_data_dir))
    layer = next(x for x in model.layers if isinstance(x, FieldEmbeddings))
    with open(data_layout.stats_file(tiny_data_dir)) as f:
        stats = json.load(f)
    assert layer.train_counts()[1] == stats["splits"]["train"]["impressions"]


def test_an_epoch_of_penalties_is_the_whole_table_l2(tiny_data_dir):
    """With the weights fixed, the batches' penalties of one pass over the
    train split, each weighted by its share |B| / N of the impressions, add
    up to λ · Σ ||w||² over every row with train occurrences: the batch counts
    are in the vocabulary's unit (user-side ids once per impression)."""
    model = build_model(small_config(tiny_data_dir))
    randomize_embeddings(model, seed=2)
    layer = next(x for x in model.layers if isinstance(x, FieldEmbeddings))
    counts, train_impressions = layer.train_counts()
    files = data_layout.shard_files(tiny_data_dir, "train")
    got = 0.0
    for inputs, _ in input_pipeline.make_dataset(files, 32, shuffle=False):
        share = inputs[F.GROUP_INDEX].shape[0] / train_impressions
        got += share * float(regularization.embedding_penalty(layer, inputs, 0.01))
    table = layer.embeddings.numpy()
    want = 0.01 * np.sum(table[counts.numpy() > 0] ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_penalty_sums_the_terms_of_every_layer(tiny_data_dir, batch):
    inputs, _ = batch
    config = small_config(tiny_data_dir, model="esmm_ns", embedding_l2=1e-4, tower_l2=1e-3)
    model = build_model(config)
    embeddings = [x for x in model.layers if isinstance(x, FieldEmbeddings)]
    towers = [x for x in model.layers if isinstance(x, Tower)]
    assert len(embeddings) == 2 and len(towers) == 2
    want = sum(float(regularization.embedding_penalty(x, inputs, 1e-4)) for x in embeddings)
    want += sum(float(regularization.tower_penalty(x, 1e-3)) for x in towers)
    np.testing.assert_allclose(
        float(regularization.penalty(model, inputs, config)), want, rtol=1e-5
    )
    off = small_config(tiny_data_dir, model="esmm_ns")
    assert float(regularization.penalty(model, inputs, off)) == 0.0


@pytest.mark.parametrize("lazy", [True, False])
def test_train_steps_with_the_penalty(tiny_data_dir, lazy):
    """The trainer's step plus the penalty, under tf.function: the embedding
    gradient stays a tf.IndexedSlices; lazy Adam leaves the rows no batch
    touched bit-identical; dense Adam trains too; the losses are finite."""
    config = small_config(
        tiny_data_dir, embedding_l2=1e-3, tower_l2=1e-4, dropout=0.2, lazy_adam=lazy
    )
    model = build_model(config)
    optimizer = training_run.make_optimizer(config)
    optimizer.build(model.trainable_variables)
    variables = model.trainable_variables
    embeddings = next(x for x in model.layers if isinstance(x, FieldEmbeddings))
    before = embeddings.embeddings.numpy()
    gradient_types = []

    @tf.function
    def step(inputs, labels):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = objectives.loss(config, labels, outputs)
            loss["regularization"] = regularization.penalty(model, inputs, config)
            total = loss["total"] + loss["regularization"]
        grads = tape.gradient(total, variables)
        gradient_types.append(type(grads[0]))  # at trace time
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    files = data_layout.shard_files(tiny_data_dir, "train")
    touched = set()
    for inputs, labels in input_pipeline.make_dataset(files, 8, shuffle=False).take(3):
        touched |= set(embeddings.touched_rows(inputs)[0].numpy().tolist())
        loss = step(inputs, labels)
        assert float(loss["regularization"]) > 0
        assert all(np.isfinite(float(v)) for v in loss.values())
    assert gradient_types[0] is tf.IndexedSlices
    after = embeddings.embeddings.numpy()
    changed = set(np.flatnonzero(np.any(after != before, axis=1)).tolist())
    if lazy:
        assert changed == touched
    else:
        assert changed >= touched


_MIRRORED_SCRIPT = """
import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from esmm_tf import data_layout, input_pipeline, regularization  # noqa: E402
from esmm_tf import features as F  # noqa: E402
from esmm_tf.config import Config  # noqa: E402
from esmm_tf.model import build_model  # noqa: E402

config = Config(data_dir=sys.argv[1], embedding_dim=4, tower_units=(8,), embedding_l2=1e-3,
                tower_l2=1e-2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = build_model(config)
files = data_layout.shard_files(config.data_dir, "train")
batches = [b[0] for b in input_pipeline.make_dataset(files, 4, shuffle=False).take(2)]
sizes = [float(b[F.GROUP_INDEX].shape[0]) for b in batches]
one = [float(regularization.penalty(model, b, config)) for b in batches]
towers = float(regularization.penalty(model, batches[0], Config(**{**config.__dict__,
                                                                     "embedding_l2": 0.0})))
embeddings = [p - towers for p in one]
want = (sizes[0] * embeddings[0] + sizes[1] * embeddings[1]) / sum(sizes) + towers
inputs = strategy.experimental_distribute_values_from_function(
    lambda context: batches[context.replica_id_in_sync_group]
)
per_replica = strategy.run(
    tf.function(lambda x: regularization.penalty(model, x, config)), args=(inputs,)
)
got = float(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
np.testing.assert_allclose(got, want, rtol=1e-5)
print("MIRRORED_OK", got, want)
"""


@pytest.mark.slow
def test_replicas_penalties_add_up_to_the_global_batchs(tiny_data_dir, tmp_path):
    """Two CPU replicas, a batch each: their penalties sum to the penalty of
    the two batches as one (embedding terms weighted by batch size, the tower
    term once)."""
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, str(script), tiny_data_dir],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "MIRRORED_OK" in proc.stdout, proc.stderr[-3000:]


# ---------------------------------------------------------------- dropout


def copy_weights(source, target) -> None:
    for s, t in zip(source.trainable_variables, target.trainable_variables, strict=True):
        assert s.path == t.path
        t.assign(s)


def test_dropout_only_at_training_time(tiny_data_dir, batch):
    inputs, _ = batch
    plain = build_model(small_config(tiny_data_dir))
    randomize_embeddings(plain, seed=5)
    dropped = build_model(small_config(tiny_data_dir, dropout=0.5))
    copy_weights(plain, dropped)
    want = plain(inputs, training=False)
    for training in (False, None):
        got = dropped(inputs, training=training)
        for key in F.OUTPUT_KEYS:
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
    # Without dropout, training=True is the same function.
    got = plain(inputs, training=True)
    np.testing.assert_array_equal(got[F.CTR].numpy(), want[F.CTR].numpy())
    first, second = (dropped(inputs, training=True)[F.CTR].numpy() for _ in range(2))
    assert np.any(first != want[F.CTR].numpy()) and np.any(first != second)


@pytest.mark.slow  # a whole training run or export (~10 s): out of the fast loop
def test_exported_model_is_unaffected_by_dropout(tiny_data_dir, tmp_path, batch):
    """Also: the counts the embedding penalty caches are not saved."""
    records = read_records(tiny_data_dir, "test", 3)
    plain = build_model(small_config(tiny_data_dir))
    randomize_embeddings(plain, seed=6)
    config = small_config(tiny_data_dir, dropout=0.5, embedding_l2=1e-3)
    dropped = build_model(config)
    copy_weights(plain, dropped)
    saved = {}
    for name, model in (("plain", plain), ("dropped", dropped)):
        path = tf.train.Checkpoint(model=model).save(str(tmp_path / name / "ckpt"))
        saved[name] = tf.train.list_variables(path)
    assert float(regularization.penalty(dropped, batch[0], config)) > 0  # caches the counts
    path = tf.train.Checkpoint(model=dropped).save(str(tmp_path / "after" / "ckpt"))
    after = tf.train.list_variables(path)
    assert after == saved["dropped"] == saved["plain"]
    version_dir = export_saved_model(dropped, str(tmp_path / "export"))
    serve = tf.saved_model.load(version_dir).signatures["serving_default"]
    examples = [e for r in records for e in impression_examples(r)]
    got = serve(**{SIGNATURE_INPUT: tf.constant(examples, tf.string)})
    want = plain(parse_grouped(records)[0], training=False)
    for key in F.OUTPUT_KEYS:
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- learning rate


def test_learning_rate_decays_after_each_epoch(tiny_data_dir):
    assert schedules.learning_rate(small_config(tiny_data_dir), 10) == 1e-3
    config = small_config(tiny_data_dir, learning_rate_decay=0.5)
    optimizer = Adam(schedules.learning_rate(config, 10))
    for step, want in ((0, 1e-3), (9, 1e-3), (10, 5e-4), (19, 5e-4), (25, 2.5e-4)):
        optimizer.iterations.assign(step)  # as restored from a checkpoint
        np.testing.assert_allclose(float(optimizer.learning_rate_value()), want, rtol=1e-6)


@pytest.mark.parametrize(
    "field, value",
    [
        ("embedding_l2", -1e-5),
        ("tower_l2", float("nan")),
        ("dropout", 1.0),
        ("learning_rate_decay", 0.0),
        ("learning_rate_decay", 1.5),
    ],
)
def test_bad_values_are_refused(tiny_data_dir, field, value):
    with pytest.raises(ValueError, match=f"--{field}"):
        small_config(tiny_data_dir, **{field: value})
