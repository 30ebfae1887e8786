"""The TensorFlow-free Example encoder and TFRecord writer equal TensorFlow's."""

from __future__ import annotations

import random

import tensorflow as tf

from data_prep.tfrecord import TFRecordWriter, encode_example


def test_examples_parse_to_what_tensorflow_builds():
    rng = random.Random(0)
    specials = [0, 1, 127, 128, 16383, 16384, 2**31, 2**40 + 5, 2**63 - 1]
    for _ in range(300):
        ints = {
            f"ids/{k}{'_14' * (k % 2)}": [
                rng.choice([*specials, rng.randrange(0, 10**12)])
                for _ in range(rng.randrange(0, 40))
            ]
            for k in range(rng.randrange(1, 6))
        }
        floats = {
            f"w/{k}": [rng.random() * 3 for _ in range(rng.randrange(0, 40))]
            for k in range(rng.randrange(0, 4))
        }
        example = tf.train.Example()
        for key, values in ints.items():
            example.features.feature[key].int64_list.value.extend(values)
        for key, values in floats.items():
            example.features.feature[key].float_list.value.extend(values)
        encoded = encode_example(ints, floats)
        assert tf.train.Example.FromString(encoded) == example
        assert encode_example(dict(reversed(ints.items())), floats) == encoded  # deterministic
    # Without keys that prefix each other, even the bytes equal protobuf's.
    example = tf.train.Example()
    example.features.feature["a"].int64_list.value.extend([1, 2**40])
    example.features.feature["b"].float_list.value.extend([0.5])
    example.features.feature["c"].int64_list.value.extend([])
    expected = example.SerializeToString(deterministic=True)
    assert encode_example({"a": [1, 2**40], "c": []}, {"b": [0.5]}) == expected


def test_tfrecord_files_read_back_with_tensorflow(tmp_path):
    path = str(tmp_path / "x.tfrecord")
    records = [b"hello", b"", bytes(range(256)) * 400]
    with TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    read = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    assert read == records
    # TensorFlow checks the CRCs: a flipped byte is reported as corruption.
    data = bytearray(open(path, "rb").read())
    data[20] ^= 0xFF
    open(path, "wb").write(bytes(data))
    try:
        list(tf.data.TFRecordDataset(path))
    except tf.errors.DataLossError:
        pass
    else:
        raise AssertionError("corruption not detected")
