"""esmm_tf.model / embedding / towers: outputs, initialisation, lookup and pooling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import data_layout, input_pipeline, losses, vocab
from esmm_tf import features as F
from esmm_tf.embedding import FieldEmbeddings
from esmm_tf.model import CTR_LOGIT, CVR_LOGIT, build_model
from esmm_tf.towers import Tower
from tests.helpers import (
    make_example,
    parse_grouped,
    parse_serving,
    randomize_embeddings,
    read_records,
    small_config,
)

SLOTS = F.USER_FIELDS + F.ITEM_FIELDS  # order of the embedding layer's output slots
ITEM_ID = F.FIELDS_BY_ID["205"]


@pytest.fixture(scope="module")
def config(tiny_data_dir):
    return small_config(tiny_data_dir)


@pytest.fixture(scope="module")
def model(config):
    model = build_model(config)
    randomize_embeddings(model, seed=11)
    return model


@pytest.fixture(scope="module")
def batches(config):
    """Three real batches (inputs, labels) of the test split."""
    files = data_layout.shard_files(config.data_dir, "test")
    return list(input_pipeline.make_dataset(files, config.batch_size, shuffle=False).take(3))


@pytest.fixture(scope="module")
def batch(tiny_data_dir):
    """One batch of 10 train records as numpy inputs."""
    inputs, _ = parse_grouped(read_records(tiny_data_dir, "train", 10))
    return inputs


@pytest.fixture(scope="module")
def vocab_rows(tiny_data_dir) -> dict[str, dict[int, int]]:
    """field -> {raw id: embedding row}, read from the vocabulary files."""
    out = {}
    for field in F.FIELDS:
        ids = vocab.read_vocab(data_layout.vocab_file(tiny_data_dir, field.id))
        out[field.id] = {int(i): k + 1 for k, i in enumerate(ids)}
    return out


def slot(values: np.ndarray, field_id: str, dim: int) -> np.ndarray:
    k = [f.id for f in SLOTS].index(field_id)
    return values[:, k * dim : (k + 1) * dim]


def hand_pooled(layer: FieldEmbeddings, inputs: dict, vocab_rows: dict, use_weights: bool):
    """The embedding layer's output computed in numpy from its variables."""
    group = np.asarray(inputs[F.GROUP_INDEX])
    n, dim = len(group), layer.dim
    num_groups = group.max() + 1
    parts = []
    for field in SLOTS:
        table = np.asarray(layer.embedding(field).numpy())
        ids = np.asarray(inputs[field.ids_input])
        rows = np.asarray(inputs[field.rows_input])
        weights = np.ones(len(ids), np.float32)
        if field.weighted and use_weights:
            weights = np.asarray(inputs[field.weights_input])
        pooled = np.zeros((num_groups if field.user_side else n, dim), np.float64)
        for raw_id, row, w in zip(ids, rows, weights, strict=True):
            pooled[row] += w * table[vocab_rows[field.id].get(int(raw_id), 0)]
        parts.append(pooled[group] if field.user_side else pooled)
    return np.concatenate(parts, axis=1)


def test_ctcvr_is_ctr_times_cvr_on_real_batches(model, batches):
    for inputs, _ in batches:
        out = {k: v.numpy() for k, v in model(inputs, training=False).items()}
        n = inputs[F.GROUP_INDEX].shape[0]
        for key in (*F.OUTPUT_KEYS, CTR_LOGIT, CVR_LOGIT):
            assert out[key].shape == (n,)
        np.testing.assert_allclose(out[F.CTCVR], out[F.CTR] * out[F.CVR], rtol=0, atol=1e-7)
        np.testing.assert_allclose(out[F.CTR], tf.sigmoid(out[CTR_LOGIT]).numpy(), atol=1e-7)
        np.testing.assert_allclose(out[F.CVR], tf.sigmoid(out[CVR_LOGIT]).numpy(), atol=1e-7)
        assert np.all((out[F.CTCVR] <= out[F.CTR]) & (out[F.CTCVR] <= out[F.CVR]))
        # The two heads are different functions of the input.
        assert np.max(np.abs(out[F.CTR] - out[F.CVR])) > 1e-3


def test_towers_do_not_start_identical(config):
    model = build_model(config)
    ctr_tower, cvr_tower = model.get_layer("ctr_tower"), model.get_layer("cvr_tower")
    assert len(ctr_tower.layers) == len(cvr_tower.layers) == len(config.tower_units) + 1
    for a, b in zip(ctr_tower.layers, cvr_tower.layers, strict=True):
        assert a.kernel.shape == b.kernel.shape
        assert not np.allclose(a.kernel.numpy(), b.kernel.numpy())
    assert [layer.units for layer in ctr_tower.layers] == [*config.tower_units, 1]


def test_same_seed_same_init_other_seed_other_init(config):
    a = build_model(config).get_layer("ctr_tower").layers[0].kernel.numpy()
    b = build_model(config).get_layer("ctr_tower").layers[0].kernel.numpy()
    c = build_model(dataclasses.replace(config, seed=4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c.get_layer("ctr_tower").layers[0].kernel.numpy())


def test_esmm_shares_one_embedding_set_esmm_ns_has_two(config, batch):
    esmm = build_model(config)
    ns = build_model(dataclasses.replace(config, model="esmm_ns"))
    esmm_sets = [x for x in esmm.layers if isinstance(x, FieldEmbeddings)]
    ns_sets = [x for x in ns.layers if isinstance(x, FieldEmbeddings)]
    assert len(esmm_sets) == 1
    assert len(ns_sets) == 2
    a, b = ns_sets
    assert a.embeddings is not b.embeddings
    assert a.embeddings.path != b.embeddings.path
    assert len(ns.trainable_variables) == len(esmm.trainable_variables) + 1

    # In ESMM-NS the CVR head depends on its own embeddings only.
    before = {k: v.numpy() for k, v in ns(batch, training=False).items()}
    var = ns.get_layer("second_embeddings").embeddings
    var.assign(var.numpy() + 0.5)
    after = {k: v.numpy() for k, v in ns(batch, training=False).items()}
    np.testing.assert_array_equal(before[F.CTR], after[F.CTR])
    assert np.max(np.abs(before[F.CVR] - after[F.CVR])) > 1e-4


def test_unknown_ids_map_to_the_oov_row(model, vocab_rows, tiny_data_dir):
    layer = model.get_layer("embeddings")
    known = list(vocab_rows["205"].items())[:3]
    unknown = [987_654_321_000, 0, vocab.OOV_ID]
    ids = tf.constant([i for i, _ in known] + unknown, tf.int64)
    rows = layer.table(ITEM_ID).lookup(ids).numpy()
    np.testing.assert_array_equal(rows, [r for _, r in known] + [0, 0, 0])
    assert max(vocab_rows["205"].values()) == layer.embedding(ITEM_ID).shape[0] - 1

    # An impression with an unknown item id gets row 0 in the 205 slot.
    example = make_example({"ids/205": [987_654_321_000]}).SerializeToString()
    out = layer(parse_serving([example])).numpy()
    np.testing.assert_allclose(slot(out, "205", layer.dim)[0], layer.embedding(ITEM_ID).numpy()[0])


def test_embedding_gradients_are_indexed_slices(model, batches):
    inputs, labels = batches[0]
    layer = model.get_layer("embeddings")
    with tf.GradientTape() as tape:
        out = model(inputs, training=True)
        loss = losses.esmm_loss(
            labels[F.CLICK], labels[F.CONVERSION], out[CTR_LOGIT], out[CVR_LOGIT]
        )["total"]
    grad = tape.gradient(loss, layer.embeddings)
    assert isinstance(grad, tf.IndexedSlices)
    assert grad.values.shape[1] == layer.dim
    # Only rows used by the batch are touched: one gradient row per id.
    assert grad.values.shape[0] == sum(inputs[f.ids_input].shape[0] for f in F.FIELDS)
    start, rows = layer.rows(ITEM_ID)
    indices = grad.indices.numpy()
    in_205 = (indices >= start) & (indices < start + rows)
    assert in_205.sum() == inputs["ids_205"].shape[0]
    assert len(np.unique(indices[in_205])) < rows


def test_both_towers_get_gradients_from_the_esmm_loss(model, batches):
    """pCVR has no loss of its own but must still be trained, through pCTCVR."""
    inputs, labels = batches[0]
    with tf.GradientTape() as tape:
        out = model(inputs, training=True)
        loss = losses.esmm_loss(
            labels[F.CLICK], labels[F.CONVERSION], out[CTR_LOGIT], out[CVR_LOGIT]
        )["total"]
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    assert all(g is not None for g in grads)
    for tower in ("ctr_tower", "cvr_tower"):
        for layer in model.get_layer(tower).layers:
            grad = grads[[v.path for v in variables].index(layer.kernel.path)]
            assert float(tf.norm(grad)) > 0, layer.name


def test_empty_rows_pool_to_zero(model, batch):
    layer = model.get_layer("embeddings")
    out = layer(batch).numpy()
    n = len(batch[F.GROUP_INDEX])
    checked = 0
    for field in F.ITEM_FIELDS:
        counts = np.bincount(batch[field.rows_input], minlength=n)
        empty = counts == 0
        np.testing.assert_array_equal(slot(out, field.id, layer.dim)[empty], 0.0)
        assert np.all(np.abs(slot(out, field.id, layer.dim)[~empty]).sum(1) > 0)
        checked += int(empty.sum())
    assert checked > 0  # the batch does have impressions with empty fields
    # Groups with an empty user field: zero for every impression of the group.
    num_groups = batch[F.GROUP_INDEX].max() + 1
    user_checked = 0
    for field in F.USER_FIELDS:
        counts = np.bincount(batch[field.rows_input], minlength=num_groups)
        empty = counts[batch[F.GROUP_INDEX]] == 0
        np.testing.assert_array_equal(slot(out, field.id, layer.dim)[empty], 0.0)
        user_checked += int(empty.sum())
    assert user_checked > 0


def test_weighted_sum_pooling_equals_hand_computation(model, batch, vocab_rows):
    layer = model.get_layer("embeddings")
    got = layer(batch).numpy()
    want = hand_pooled(layer, batch, vocab_rows, use_weights=True)
    assert got.shape == (len(batch[F.GROUP_INDEX]), len(F.FIELDS) * layer.dim)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Weights are not all 1.0, so weighting matters.
    assert not np.allclose(batch["w_853"], 1.0)
    unweighted = hand_pooled(layer, batch, vocab_rows, use_weights=False)
    assert np.max(np.abs(want - unweighted)) > 1e-2


def test_use_weights_false_ignores_weights(config, batch, vocab_rows):
    model = build_model(dataclasses.replace(config, use_weights=False))
    randomize_embeddings(model, seed=5)
    layer = model.get_layer("embeddings")
    got = layer(batch).numpy()
    np.testing.assert_allclose(
        got, hand_pooled(layer, batch, vocab_rows, use_weights=False), rtol=1e-5, atol=1e-5
    )
    scaled = dict(batch)
    for field in F.FIELDS:
        if field.weighted:
            scaled[field.weights_input] = batch[field.weights_input] * 3.0 + 1.0
    np.testing.assert_array_equal(layer(scaled).numpy(), got)


def test_field_embeddings_config(model, tiny_data_dir):
    config = model.get_layer("embeddings").get_config()
    assert config["data_dir"] == tiny_data_dir
    assert config["dim"] == 4
    assert config["use_weights"] is True


def per_field_reference(layer: FieldEmbeddings, inputs: dict) -> tf.Tensor:
    """The pooling as one gather + segment sum per field (the straightforward
    implementation), reading each field's block of the layer's table."""
    group = inputs[F.GROUP_INDEX]
    num_groups = tf.reduce_max(group) + 1
    parts = []
    for field in layer.fields:
        start, rows = layer.rows(field)
        table = layer.embeddings.value[start : start + rows]
        vectors = tf.gather(
            table, tf.cast(layer.table(field).lookup(inputs[field.ids_input]), tf.int32)
        )
        if field.weighted and layer.use_weights:
            vectors = vectors * inputs[field.weights_input][:, None]
        pooled = tf.math.unsorted_segment_sum(
            vectors, inputs[field.rows_input], num_groups if field.user_side else tf.size(group)
        )
        parts.append(tf.gather(pooled, group) if field.user_side else pooled)
    return tf.concat(parts, 1)


def random_inputs(rng, vocab_rows: dict, impressions: int, groups: int) -> dict:
    """Random flat inputs: known and unknown ids, unsorted rows, some rows and
    fields empty, random weights."""
    inputs = {F.GROUP_INDEX: np.sort(rng.integers(0, groups, impressions)).astype(np.int32)}
    inputs[F.GROUP_INDEX][:groups] = np.arange(groups)  # every group present
    for field in F.FIELDS:
        n = int(rng.integers(0, 4 * impressions)) if field.id != "301" else 0  # 301: empty
        known = np.array(list(vocab_rows[field.id]), np.int64)
        ids = np.where(rng.random(n) < 0.9, rng.choice(known, n), 10**15 + rng.integers(0, 9, n))
        inputs[field.ids_input] = ids.astype(np.int64)
        num_rows = groups if field.user_side else impressions
        inputs[field.rows_input] = rng.integers(0, num_rows, n).astype(np.int32)
        if field.weighted:
            inputs[field.weights_input] = rng.uniform(-2, 2, n).astype(np.float32)
    return inputs


@pytest.mark.parametrize("use_weights", [True, False])
def test_one_table_pooling_equals_per_field_pooling(config, vocab_rows, use_weights):
    """FieldEmbeddings' single gather + segment sum over every field gives the
    per-field reference's outputs and gradients, on random inputs."""
    model = build_model(dataclasses.replace(config, use_weights=use_weights))
    randomize_embeddings(model, seed=2)
    layer = model.get_layer("embeddings")
    rng = np.random.default_rng(7)
    for impressions, groups in ((1, 1), (40, 6), (300, 17)):
        inputs = {
            k: tf.constant(v)
            for k, v in random_inputs(rng, vocab_rows, impressions, groups).items()
        }
        cotangent = tf.constant(
            rng.normal(size=(impressions, len(F.FIELDS) * layer.dim)), tf.float32
        )
        results = []
        for fn in (layer, lambda x: per_field_reference(layer, x)):
            with tf.GradientTape() as tape:
                out = fn(inputs)
                loss = tf.reduce_sum(out * cotangent)
            grad = tape.gradient(loss, layer.embeddings.value)
            results.append((out.numpy(), tf.convert_to_tensor(grad).numpy()))
        (got, got_grad), (want, want_grad) = results
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(inputs) * cotangent)
        sparse = tape.gradient(loss, layer.embeddings.value)
        assert isinstance(sparse, tf.IndexedSlices)  # the rows touched only
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-6, atol=1e-6)
        assert np.abs(want_grad).sum() > 0


def test_tower_on_groups_equals_tower_on_broadcast_rows():
    """Tower((user, item, group_index)) is the tower of concat([gather(user,
    group_index), item], 1): the same outputs and gradients."""
    rng = np.random.default_rng(3)
    net = Tower((8, 4), seed=1, name="t")
    for impressions, groups in ((1, 1), (50, 7)):
        group = np.sort(rng.integers(0, groups, impressions)).astype(np.int32)
        user = tf.constant(rng.normal(size=(groups, 6)), tf.float32)
        item = tf.constant(rng.normal(size=(impressions, 5)), tf.float32)
        cotangent = tf.constant(rng.normal(size=(impressions, 1)), tf.float32)
        results = []
        for grouped in (True, False):
            with tf.GradientTape() as tape:
                tape.watch([user, item])
                if grouped:
                    out = net((user, item, tf.constant(group)))
                else:
                    out = net(tf.concat([tf.gather(user, group), item], 1))
                loss = tf.reduce_sum(out * cotangent)
            grads = tape.gradient(loss, [*net.trainable_variables, user, item])
            results.append([out.numpy()] + [tf.convert_to_tensor(g).numpy() for g in grads])
        for got, want in zip(*results, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
