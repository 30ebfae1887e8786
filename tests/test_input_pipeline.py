"""esmm_tf.input_pipeline: grouped records and serving requests -> flat model inputs.

The per-impression values of a parsed batch are compared with the records read
back independently with ``tf.train.Example.FromString``; serving requests
built from a grouped record must give the model the same impressions (same
outputs), which also checks that pooling the user side once per group and
broadcasting it equals pooling it per impression.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import data_layout, input_pipeline
from esmm_tf import features as F
from esmm_tf.model import build_model
from esmm_tf.serving_requests import impression_examples
from tests.helpers import (
    floats,
    ints,
    make_example,
    parse_grouped,
    parse_serving,
    randomize_embeddings,
    read_records,
    small_config,
)

# ---------------------------------------------------------------- helpers


def num_impressions(example: tf.train.Example) -> int:
    return len(ints(example, F.CLICK))


def expected_inputs(records: list[bytes]) -> dict[str, np.ndarray]:
    """The flat model inputs of a batch of grouped records, computed from the
    protos in plain Python."""
    out: dict[str, list] = {F.GROUP_INDEX: []}
    for field in F.FIELDS:
        out[field.ids_input] = []
        out[field.rows_input] = []
        if field.weighted:
            out[field.weights_input] = []
    offset = 0
    for g, record in enumerate(records):
        example = tf.train.Example.FromString(record)
        n = num_impressions(example)
        out[F.GROUP_INDEX] += [g] * n
        for field in F.FIELDS:
            ids = ints(example, field.ids_key)
            out[field.ids_input] += ids
            if field.user_side:
                out[field.rows_input] += [g] * len(ids)
            else:
                lengths = ints(example, field.lengths_key)
                assert sum(lengths) == len(ids)
                for i, length in enumerate(lengths):
                    out[field.rows_input] += [offset + i] * length
            if field.weighted:
                weights = floats(example, field.weights_key)
                out[field.weights_input] += (
                    weights if len(weights) == len(ids) else [1.0] * len(ids)
                )
        offset += n
    return {k: np.asarray(v) for k, v in out.items()}


def expected_labels(records: list[bytes]) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    for record in records:
        example = tf.train.Example.FromString(record)
        for key in (F.SAMPLE_ID, *F.LABEL_KEYS, *F.GROUND_TRUTH_INT_KEYS):
            out.setdefault(key, []).extend(ints(example, key))
        for key in F.GROUND_TRUTH_FLOAT_KEYS:
            out.setdefault(key, []).extend(floats(example, key))
    return {k: np.asarray(v) for k, v in out.items()}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def records(tiny_data_dir) -> list[bytes]:
    """Twelve grouped train records."""
    return read_records(tiny_data_dir, "train", 12)


@pytest.fixture(scope="module")
def model(tiny_data_dir):
    model = build_model(small_config(tiny_data_dir))
    randomize_embeddings(model, seed=7)
    return model


# ---------------------------------------------------------------- grouped records


def test_grouped_batch_equals_records_read_back(records):
    inputs, labels = parse_grouped(records)
    want = expected_inputs(records)
    assert set(inputs) == set(want)
    for key, value in want.items():
        if key.startswith("w_"):
            np.testing.assert_array_equal(inputs[key], value.astype(np.float32), err_msg=key)
        else:
            np.testing.assert_array_equal(inputs[key], value, err_msg=key)
    assert inputs[F.GROUP_INDEX].dtype == np.int32
    assert inputs["rows_205"].dtype == np.int32
    assert inputs["ids_205"].dtype == np.int64

    want_labels = expected_labels(records)
    assert set(labels) == set(want_labels)
    np.testing.assert_array_equal(labels[F.SAMPLE_ID], want_labels[F.SAMPLE_ID])
    for key in (*F.LABEL_KEYS, *F.GROUND_TRUTH_INT_KEYS):
        np.testing.assert_array_equal(labels[key], want_labels[key].astype(np.float32))
    for key in F.GROUND_TRUTH_FLOAT_KEYS:
        np.testing.assert_array_equal(labels[key], want_labels[key].astype(np.float32))
    n = len(inputs[F.GROUP_INDEX])
    assert all(len(v) == n for v in labels.values())
    # The batch is not trivial: several groups, several impressions per group,
    # multi-valued rows of different lengths, some empty.
    assert inputs[F.GROUP_INDEX].max() == len(records) - 1
    assert n > 2 * len(records)
    lengths_210 = np.bincount(inputs["rows_210"], minlength=n)
    assert len(set(lengths_210.tolist())) > 1
    lengths_853 = np.bincount(inputs["rows_853"], minlength=n)
    assert (lengths_853 == 0).any()


def test_labels_without_ground_truth(records):
    _, labels = parse_grouped(records[:3], with_ground_truth=False)
    assert set(labels) == {F.SAMPLE_ID, *F.LABEL_KEYS}


def test_make_dataset_covers_the_split_once(tiny_data_dir):
    with open(data_layout.stats_file(tiny_data_dir)) as f:
        stats = json.load(f)["splits"]["test"]
    files = data_layout.shard_files(tiny_data_dir, "test")
    ds = input_pipeline.make_dataset(
        files, 16, shuffle=False, with_ground_truth=True, deterministic=True
    )
    sample_ids, clicks, conversions = [], 0, 0
    for inputs, labels in ds:
        assert inputs[F.GROUP_INDEX].shape[0] == labels[F.CLICK].shape[0]
        sample_ids.append(labels[F.SAMPLE_ID].numpy())
        clicks += int(labels[F.CLICK].numpy().sum())
        conversions += int((labels[F.CLICK] * labels[F.CONVERSION]).numpy().sum())
        assert F.GT_PCTR in labels
    sample_ids = np.concatenate(sample_ids)
    assert sample_ids.size == stats["impressions"]
    assert np.unique(sample_ids).size == sample_ids.size
    assert clicks == stats["clicks"]
    assert conversions == stats["conversions"]


def test_make_dataset_shuffle_is_seeded(tiny_data_dir):
    files = data_layout.shard_files(tiny_data_dir, "train")

    def order(seed):
        ds = input_pipeline.make_dataset(
            files, 8, shuffle=True, seed=seed, shuffle_buffer=64, deterministic=True
        )
        return np.concatenate([labels[F.SAMPLE_ID].numpy() for _, labels in ds.take(6)])

    first = order(1)
    np.testing.assert_array_equal(first, order(1))
    assert not np.array_equal(first, order(2))


def _greedy(sizes: list[int], batch_size: int) -> list[list[int]]:
    """The reference packing: whole records, in order, while they fit."""
    batches, current, total = [], [], 0
    for i, n in enumerate(sizes):
        if current and total + n > batch_size:
            batches.append(current)
            current, total = [], 0
        current.append(i)
        total += n
    return batches + ([current] if current else [])


def _fake_record(index: int, impressions: int, key: int | None = None) -> bytes:
    feature = {
        F.CLICK: tf.train.Feature(int64_list=tf.train.Int64List(value=[0] * impressions)),
        F.SAMPLE_ID: tf.train.Feature(int64_list=tf.train.Int64List(value=[index] * impressions)),
    }
    if key is not None:
        feature[F.GROUP_KEY] = tf.train.Feature(int64_list=tf.train.Int64List(value=[key]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pack_records_is_greedy_over_whole_records(seed, monkeypatch):
    """Any record sizes, batch size and chunking: the batches are the greedy
    packing of whole records (a record larger than the batch alone)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 80, int(rng.integers(1, 700))).tolist()
    batch_size = int(rng.integers(1, 200))
    monkeypatch.setattr(input_pipeline, "CHUNK_RECORDS", int(rng.integers(1, 64)))
    records = [_fake_record(i, n) for i, n in enumerate(sizes)]
    packed = input_pipeline.pack_records(tf.data.Dataset.from_tensor_slices(records), batch_size)
    got = [
        [
            tf.train.Example.FromString(r).features.feature[F.SAMPLE_ID].int64_list.value[0]
            for r in b
        ]
        for b in packed.as_numpy_iterator()
    ]
    assert got == _greedy(sizes, batch_size)


def test_pack_records_of_an_empty_stream_is_empty():
    empty = tf.data.Dataset.from_tensor_slices(tf.constant([], tf.string))
    assert list(input_pipeline.pack_records(empty, 10)) == []


def test_key_filters_split_requests_disjointly():
    """Validation [0, v) and training [v, 1) take every record exactly once,
    and all records of a request (one key) go to the same side."""
    keys = np.random.default_rng(0).integers(0, 1 << 62, 400)
    records = [_fake_record(i, 1 + i % 3, int(keys[i // 2])) for i in range(800)]
    _, record_keys = input_pipeline.record_heads(tf.constant(records))
    validation = input_pipeline.key_filter(0.2)(record_keys).numpy()
    train = input_pipeline.key_filter(0.8, exclude=0.2)(record_keys).numpy()
    assert not np.any(validation & train) and np.all(validation | train)
    assert 0.1 < validation.mean() < 0.3
    np.testing.assert_array_equal(validation[0::2], validation[1::2])  # by request


def test_make_dataset_batches_hold_at_most_batch_size_impressions(tiny_data_dir):
    files = data_layout.shard_files(tiny_data_dir, "train")
    sizes = []
    for inputs, labels in input_pipeline.make_dataset(files, 50, shuffle=True, seed=1):
        sizes.append((labels[F.CLICK].shape[0], int(tf.reduce_max(inputs[F.GROUP_INDEX])) + 1))
    for impressions, records in sizes:
        assert impressions <= 50 or records == 1
    assert np.mean([n for n, _ in sizes[:-1]]) > 35  # packed, not one record per step


def test_make_dataset_without_files_is_an_error():
    with pytest.raises(data_layout.DatasetError, match="no input files"):
        input_pipeline.make_dataset([], 8, shuffle=False)


def test_has_ground_truth(tiny_data_dir):
    assert input_pipeline.has_ground_truth(data_layout.shard_files(tiny_data_dir, "test"))


def test_grouped_record_without_weights_gets_weight_one(records):
    example = tf.train.Example.FromString(records[1])
    del example.features.feature["w/853"]  # item side, per impression
    del example.features.feature["w/109_14"]  # user side
    stripped = example.SerializeToString()
    inputs, _ = parse_grouped([records[0], stripped])
    full, _ = parse_grouped(records[:2])
    n0 = len(ints(tf.train.Example.FromString(records[0]), "ids/853"))
    # The weights of the stripped record are 1.0 (its ids are kept) ...
    assert inputs["w_853"].size == full["w_853"].size
    np.testing.assert_array_equal(inputs["w_853"][n0:], 1.0)
    np.testing.assert_array_equal(inputs["ids_853"], full["ids_853"])
    assert inputs["w_109_14"].size == full["w_109_14"].size
    # ... and the other fields are untouched.
    for key in ("w_508", "ids_205", "rows_210", F.GROUP_INDEX):
        np.testing.assert_array_equal(inputs[key], full[key])


def test_grouped_record_missing_an_item_field_keeps_rows_aligned(records):
    first = tf.train.Example.FromString(records[0])
    for key in ("ids/508", "len/508", "w/508"):
        del first.features.feature[key]
    n0 = num_impressions(first)
    inputs, _ = parse_grouped([first.SerializeToString(), records[1]])
    second = tf.train.Example.FromString(records[1])
    want_rows = [n0 + i for i, n in enumerate(ints(second, "len/508")) for _ in range(n)]
    assert inputs["ids_508"].tolist() == ints(second, "ids/508")
    # Record 1's field-508 ids belong to record 1's impressions (rows >= n0).
    assert inputs["rows_508"].tolist() == want_rows


# ---------------------------------------------------------------- serving requests


def test_serving_inputs_equal_grouped_inputs_per_impression(records):
    grouped, _ = parse_grouped(records[:4])
    examples = [e for r in records[:4] for e in impression_examples(r)]
    serving = {k: v.numpy() for k, v in parse_serving(examples).items()}
    n = len(examples)
    assert set(serving) == set(grouped)
    np.testing.assert_array_equal(serving[F.GROUP_INDEX], np.arange(n))
    for field in F.ITEM_FIELDS:  # item side: identical flat tensors
        np.testing.assert_array_equal(serving[field.ids_input], grouped[field.ids_input])
        np.testing.assert_array_equal(serving[field.rows_input], grouped[field.rows_input])
        if field.weighted:
            np.testing.assert_array_equal(
                serving[field.weights_input], grouped[field.weights_input]
            )
    group = grouped[F.GROUP_INDEX]
    for field in F.USER_FIELDS:  # user side: each impression repeats its group's ids
        want = [
            i
            for impression in range(n)
            for i in grouped[field.ids_input][grouped[field.rows_input] == group[impression]]
        ]
        np.testing.assert_array_equal(serving[field.ids_input], want)


def test_serving_outputs_equal_grouped_outputs(model, records):
    batch = records[:6]
    grouped, _ = parse_grouped(batch)
    examples = [e for r in batch for e in impression_examples(r)]
    serving = parse_serving(examples)
    assert len(examples) == len(grouped[F.GROUP_INDEX])

    embeddings = model.get_layer("embeddings")
    np.testing.assert_allclose(
        embeddings(serving).numpy(), embeddings(grouped).numpy(), rtol=0, atol=1e-6
    )
    want = model(grouped, training=False)
    got = model(serving, training=False)
    for key in F.OUTPUT_KEYS:
        assert got[key].shape == (len(examples),)
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=0, atol=1e-5)
    # The comparison is not vacuous: predictions differ between impressions.
    assert np.std(want[F.CTR].numpy()) > 1e-2
    assert np.std(want[F.CVR].numpy()) > 1e-2


def test_serving_request_without_weights_gets_weight_one():
    example = make_example({"ids/109_14": [5, 6, 7], "ids/853": [1, 2], "ids/205": [3]})
    inputs = {k: v.numpy() for k, v in parse_serving([example.SerializeToString()]).items()}
    np.testing.assert_array_equal(inputs["ids_109_14"], [5, 6, 7])
    np.testing.assert_array_equal(inputs["w_109_14"], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(inputs["w_853"], [1.0, 1.0])
    np.testing.assert_array_equal(inputs["rows_853"], [0, 0])
    assert inputs["w_508"].size == 0  # no ids, no weights


def test_serving_request_with_mismatched_weights_gets_weight_one():
    example = make_example({"ids/109_14": [5, 6, 7], "w/109_14": [2.0, 3.0]})
    inputs = parse_serving([example.SerializeToString()])
    np.testing.assert_array_equal(inputs["w_109_14"].numpy(), [1.0, 1.0, 1.0])


def test_serving_request_with_missing_fields(model):
    only_item = make_example({"ids/205": [123]}).SerializeToString()
    empty = tf.train.Example().SerializeToString()
    inputs = parse_serving([only_item, empty])
    np.testing.assert_array_equal(inputs[F.GROUP_INDEX].numpy(), [0, 1])
    np.testing.assert_array_equal(inputs["ids_205"].numpy(), [123])
    np.testing.assert_array_equal(inputs["rows_205"].numpy(), [0])
    for field in F.FIELDS:
        if field.id != "205":
            assert inputs[field.ids_input].shape == (0,)
    outputs = model(inputs, training=False)
    for key in F.OUTPUT_KEYS:
        values = outputs[key].numpy()
        assert values.shape == (2,)
        assert np.all((values > 0) & (values < 1))


def test_one_request_without_weights_does_not_change_the_others():
    with_weights = make_example({"ids/109_14": [1, 2], "w/109_14": [2.0, 3.0]})
    without = make_example({"ids/109_14": [5]})
    batch = parse_serving([with_weights.SerializeToString(), without.SerializeToString()])
    np.testing.assert_array_equal(batch["w_109_14"].numpy(), [2.0, 3.0, 1.0])


# ------------------------------------------------------------ sample cache


def test_cache_sample_holds_the_sampled_records_and_is_rebuilt_on_change(tiny_data_dir, tmp_path):
    """One output per input, holding exactly the records ``train_records``
    keeps; reused while the inputs and range are the same, rebuilt when the
    range changes; a crash's temporary file is never taken for an output."""
    files = data_layout.shard_files(tiny_data_dir, "train")
    out = str(tmp_path / "sample")

    def expected(fraction, exclude):
        return sorted(r.numpy() for r in input_pipeline.train_records(files, fraction, exclude))

    def cached(outputs):
        return sorted(r.numpy() for r in tf.data.TFRecordDataset(outputs))

    outputs = input_pipeline.cache_sample(files, 0.3, 0.2, out)
    assert [o.rsplit("/", 1)[1] for o in outputs] == [f.rsplit("/", 1)[1] for f in files]
    want = expected(0.3, 0.2)
    assert 0 < len(want) < len(expected(1.0, 0.0))
    assert cached(outputs) == want
    stamp = [os.path.getmtime(o) for o in outputs]
    open(outputs[0] + ".tmp-1", "wb").write(b"partial")  # a crashed writer's leftover
    assert input_pipeline.cache_sample(files, 0.3, 0.2, out) == outputs
    assert [os.path.getmtime(o) for o in outputs] == stamp  # reused, not rewritten
    os.remove(outputs[-1])  # a crash before this output was renamed into place
    assert cached(input_pipeline.cache_sample(files, 0.3, 0.2, out)) == want
    again = input_pipeline.cache_sample(files, 0.1, 0.0, out)  # another range: rebuilt
    assert cached(again) == expected(0.1, 0.0)
    assert not any(
        name.startswith(os.path.basename(outputs[0]) + ".tmp") for name in os.listdir(out)
    )
