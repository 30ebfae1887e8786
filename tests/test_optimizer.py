"""Tests for esmm_tf.optimizer.Adam: dense and lazy sparse updates, checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from esmm_tf.optimizer import Adam
from tests.helpers import ROOT

ROWS, DIM = 6, 3


def _regression_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 1)) + 0.1).astype(np.float32)
    return tf.constant(x), tf.constant(y)


def _regression_grads(w, b, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(x @ w + b - y))
    return tape.gradient(loss, [w, b])


def _table(seed: int = 1) -> tf.Variable:
    return tf.Variable(np.random.default_rng(seed).normal(size=(ROWS, DIM)).astype(np.float32))


def _sparse_grad(indices, seed: int) -> tf.IndexedSlices:
    values = np.random.default_rng(seed).normal(size=(len(indices), DIM)).astype(np.float32)
    return tf.IndexedSlices(tf.constant(values), tf.constant(indices), tf.constant([ROWS, DIM]))


def test_dense_matches_keras_adam():
    x, y = _regression_data()
    init_w = np.random.default_rng(2).normal(size=(4, 1)).astype(np.float32)
    ours_w, ours_b = tf.Variable(init_w), tf.Variable([0.0])
    ref_w, ref_b = tf.Variable(init_w), tf.Variable([0.0])
    ours = Adam(learning_rate=0.05)
    ref = keras.optimizers.Adam(learning_rate=0.05, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    for _ in range(10):
        ours.apply_gradients(
            zip(_regression_grads(ours_w, ours_b, x, y), [ours_w, ours_b], strict=True)
        )
        ref.apply_gradients(zip(_regression_grads(ref_w, ref_b, x, y), [ref_w, ref_b], strict=True))
    np.testing.assert_allclose(ours_w.numpy(), ref_w.numpy(), atol=1e-6)
    np.testing.assert_allclose(ours_b.numpy(), ref_b.numpy(), atol=1e-6)
    assert int(ours.iterations) == 10


def test_learning_rate_schedule_is_called_with_step():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    opt = Adam(learning_rate=schedule)
    var = tf.Variable([1.0])
    assert float(opt.learning_rate_value()) == pytest.approx(0.1)
    opt.apply_gradients([(tf.constant([1.0]), var)])
    assert float(opt.learning_rate_value()) == pytest.approx(0.05)
    # First Adam step moves by ~lr regardless of the gradient's scale.
    assert float(var[0]) == pytest.approx(1.0 - 0.1, abs=1e-6)


def _run_table(opt: Adam, grads) -> tf.Variable:
    table = _table()
    for grad in grads:
        opt.apply_gradients([(grad, table)])
    return table


def test_lazy_touching_every_row_equals_dense():
    grads = [_sparse_grad([5, 3, 1, 0, 2, 4], seed) for seed in range(5)]
    lazy = _run_table(Adam(0.01, lazy=True), grads)
    dense = _run_table(Adam(0.01), [tf.convert_to_tensor(g) for g in grads])
    np.testing.assert_allclose(lazy.numpy(), dense.numpy(), atol=1e-6)


def test_lazy_false_on_indexed_slices_equals_dense():
    grads = [_sparse_grad([1, 1, 4], seed) for seed in range(5)]
    exact = _run_table(Adam(0.01, lazy=False), grads)
    dense = _run_table(Adam(0.01), [tf.convert_to_tensor(g) for g in grads])
    np.testing.assert_allclose(exact.numpy(), dense.numpy(), atol=1e-7)


def test_dense_moves_rows_by_momentum_lazy_does_not():
    grads = [_sparse_grad([0, 1], 0), _sparse_grad([1], 1)]  # row 0 untouched in step 2
    after_one = _run_table(Adam(0.01, lazy=False), grads[:1]).numpy()
    exact = _run_table(Adam(0.01, lazy=False), grads).numpy()
    lazy = _run_table(Adam(0.01, lazy=True), grads).numpy()
    assert not np.array_equal(exact[0], after_one[0])
    np.testing.assert_array_equal(lazy[0], after_one[0])


def test_lazy_leaves_untouched_rows_and_moments_bit_identical():
    opt = Adam(0.01)
    table = _table()
    opt.apply_gradients([(_sparse_grad([0, 1, 2, 3, 4, 5], 0), table)])  # every row moves
    before = [t.numpy().copy() for t in (table, *opt.slots(table))]
    opt.apply_gradients([(_sparse_grad([2, 4], 1), table)])
    after = [t.numpy() for t in (table, *opt.slots(table))]
    untouched = [0, 1, 3, 5]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(a[untouched], b[untouched])
        assert not np.array_equal(a[[2, 4]], b[[2, 4]])


def test_duplicate_indices_are_summed():
    values = np.random.default_rng(3).normal(size=(3, DIM)).astype(np.float32)
    dup = tf.IndexedSlices(tf.constant(values), tf.constant([4, 1, 4]), tf.constant([ROWS, DIM]))
    summed = tf.IndexedSlices(
        tf.constant(np.stack([values[0] + values[2], values[1]])),
        tf.constant([4, 1]),
        tf.constant([ROWS, DIM]),
    )
    opt_dup, opt_sum = Adam(0.01), Adam(0.01)
    a = _run_table(opt_dup, [dup, dup])
    b = _run_table(opt_sum, [summed, summed])
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(opt_dup.slots(a)[1].numpy(), opt_sum.slots(b)[1].numpy())


def test_checkpoint_restore_gives_identical_next_step(tmp_path):
    grads = [_sparse_grad([0, 2], 0), tf.convert_to_tensor(_sparse_grad([1, 2], 1))]
    table = _table()
    opt = Adam(0.01)
    for g in grads:
        opt.apply_gradients([(g, table)])
    path = tf.train.Checkpoint(table=table, optimizer=opt).save(str(tmp_path / "ckpt"))

    fresh_table = tf.Variable(tf.zeros([ROWS, DIM]))
    fresh = Adam(0.01)
    fresh.build([fresh_table])
    tf.train.Checkpoint(table=fresh_table, optimizer=fresh).restore(path).assert_consumed()
    assert int(fresh.iterations) == 2

    nxt = _sparse_grad([2, 5], 2)
    opt.apply_gradients([(nxt, table)])
    fresh.apply_gradients([(nxt, fresh_table)])
    np.testing.assert_array_equal(fresh_table.numpy(), table.numpy())
    for s, f in zip(opt.slots(table), fresh.slots(fresh_table), strict=True):
        np.testing.assert_array_equal(f.numpy(), s.numpy())


def test_runs_inside_tf_function_with_keras_variables():
    class Tower(keras.layers.Layer):
        def build(self, input_shape):
            self.table = self.add_weight(shape=(ROWS, DIM), initializer="ones", name="table")
            self.dense = keras.layers.Dense(2)
            self.dense.build(input_shape)

        def call(self, x):
            return self.dense(x)

    layer = Tower()
    layer.build((None, 3))
    table = layer.table
    opt = Adam(0.01)
    opt.build(layer.trainable_variables)
    init = table.numpy().copy()

    @tf.function
    def step(ids, x):
        with tf.GradientTape() as tape:
            emb = tf.gather(table, ids)
            loss = tf.reduce_sum(layer(x * tf.reduce_sum(emb, axis=1, keepdims=True)))
        grads = tape.gradient(loss, layer.trainable_variables)
        table_grad = next(
            g for g, v in zip(grads, layer.trainable_variables, strict=True) if v is table
        )
        assert isinstance(table_grad, tf.IndexedSlices)  # checked while tracing
        opt.apply_gradients(zip(grads, layer.trainable_variables, strict=True))

    for _ in range(3):
        step(tf.constant([1, 3, 3]), tf.ones([3, 3]))
    after = table.numpy()
    assert step.experimental_get_tracing_count() == 1
    assert int(opt.iterations) == 3
    np.testing.assert_array_equal(after[[0, 2, 4, 5]], init[[0, 2, 4, 5]])
    assert not np.allclose(after[[1, 3]], init[[1, 3]])
    m, _ = opt.slots(table)
    assert np.count_nonzero(np.abs(m.numpy()).sum(axis=1)) == 2


def test_apply_without_build_inside_tf_function_raises():
    var = tf.Variable([1.0])
    opt = Adam()

    @tf.function
    def step():
        opt.apply_gradients([(tf.constant([1.0]), var)])

    with pytest.raises(ValueError, match="build"):
        step()


_MIRRORED_SCRIPT = """
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras  # noqa: E402

from esmm_tf.optimizer import Adam  # noqa: E402


def run(strategy):
    with strategy.scope():
        table = keras.Variable(np.ones((10, 3), np.float32), name="table")
        w = keras.Variable(np.ones((3, 1), np.float32), name="w")
        opt = Adam(0.1)
        opt.build([table, w])
    ids = tf.constant([1, 3, 3, 5, 7, 1, 2, 2])
    y = tf.constant(np.linspace(0, 1, 8, dtype=np.float32))
    dist = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((ids, y)).batch(8)
    )

    @tf.function
    def step(batch):
        def replica_fn(i, t):
            with tf.GradientTape() as tape:
                pred = tf.squeeze(tf.gather(table, i) @ w, 1)
                loss = tf.reduce_sum(tf.square(pred - t)) / 8.0  # global batch size
            grads = tape.gradient(loss, [table, w])
            opt.apply_gradients(zip(grads, [table, w]))

        strategy.run(replica_fn, args=batch)

    for _ in range(3):
        for batch in dist:
            step(batch)
    parts = [strategy.experimental_local_results(x) for x in (table.value, opt.slots(table)[1])]
    for copies in parts:
        for c in copies[1:]:
            np.testing.assert_array_equal(c.numpy(), copies[0].numpy())
    return [table.numpy(), w.numpy(), opt.slots(table)[1].numpy(), opt.iterations.numpy()]


one = run(tf.distribute.get_strategy())
two = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
assert two[3] == 3, two[3]
for a, b in zip(one, two):
    np.testing.assert_allclose(a, b, atol=1e-6)
print("MIRRORED_OK")
"""


@pytest.mark.slow
def test_mirrored_strategy_two_replicas_matches_one(tmp_path):
    """Two CPU replicas: gradients summed across replicas, copies stay in sync."""
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert "MIRRORED_OK" in proc.stdout, proc.stderr[-3000:]
