"""tf.data input: grouped TFRecords -> batches of flat model inputs.

Records are batched first and each batch is parsed at once with
``tf.io.parse_example`` and ``RaggedFeature`` row-length partitions (never one
record at a time). A parsed batch becomes the model's inputs, all flat
tensors (see ``esmm_tf.features`` for the names):

* ``group_index`` [N] int32: the group (record) of each of the N impressions;
* per field: ``ids_<f>`` [nnz] int64 raw ids, ``rows_<f>`` [nnz] int32 the row
  each id belongs to (a group for user-side fields, an impression for the
  others) and, for weighted fields, ``w_<f>`` [nnz] float32.

The same conversion serves single-impression serving requests, where every
record is one group of one impression, and ranking requests, where one user
context is one group of N candidate items.
"""

from __future__ import annotations

import functools
import json
import os
import shutil

import tensorflow as tf

from esmm_tf import data_layout
from esmm_tf import features as F
from esmm_tf import files as files_lib

AUTOTUNE = tf.data.AUTOTUNE


def grouped_spec(with_ground_truth: bool) -> dict:
    """parse_example spec of the grouped training records."""
    spec = {}
    for field in F.FIELDS:
        partitions = () if field.user_side else (tf.io.RaggedFeature.RowLengths(field.lengths_key),)
        spec[field.ids_key] = tf.io.RaggedFeature(
            tf.int64, value_key=field.ids_key, partitions=partitions, row_splits_dtype=tf.int32
        )
        if field.weighted:  # per record; aligned with the ids in _weights
            spec[field.weights_key] = tf.io.RaggedFeature(
                tf.float32, value_key=field.weights_key, row_splits_dtype=tf.int32
            )
    for key in (F.SAMPLE_ID, *F.LABEL_KEYS):
        spec[key] = tf.io.RaggedFeature(tf.int64, value_key=key, row_splits_dtype=tf.int32)
    if with_ground_truth:
        for key in F.GROUND_TRUTH_FLOAT_KEYS:
            spec[key] = tf.io.RaggedFeature(tf.float32, value_key=key, row_splits_dtype=tf.int32)
        for key in F.GROUND_TRUTH_INT_KEYS:
            spec[key] = tf.io.RaggedFeature(tf.int64, value_key=key, row_splits_dtype=tf.int32)
    return spec


def serving_spec(fields: tuple[F.Field, ...] = F.FIELDS) -> dict:
    """parse_example spec of a per-impression serving request (no labels), or
    of the part of one that ``fields`` names (a ranking request's user context
    or its items)."""
    spec = {}
    for field in fields:
        spec[field.ids_key] = tf.io.RaggedFeature(
            tf.int64, value_key=field.ids_key, row_splits_dtype=tf.int32
        )
        if field.weighted:
            spec[field.weights_key] = tf.io.RaggedFeature(
                tf.float32, value_key=field.weights_key, row_splits_dtype=tf.int32
            )
    return spec


def _decode(serialized: tf.Tensor, message: str, fields: list[str], types: list) -> list:
    """``decode_proto`` of every string of ``serialized`` (any shape), each output
    flattened to [n]. decode_proto checks the whole wire encoding and fails with
    DATA_LOSS and a message that does not quote the bytes."""
    flat = tf.concat([tf.reshape(serialized, [-1]), [""]], 0)  # it refuses an empty batch
    _, values = tf.io.decode_proto(flat, f"tensorflow.{message}", fields, types)
    return [tf.reshape(v, [-1]) for v in values]


def check_encoding(serialized: tf.Tensor) -> tf.Tensor:
    """``serialized`` itself, once every string has been decoded as a
    tf.train.Example down to its value lists (Example, Features, map entries,
    Feature, Int64List/FloatList/BytesList). ``parse_example`` reads some broken
    encodings as an empty Example (e.g. a ``features`` field whose length runs
    past the end) and quotes the raw bytes in its errors for others (which an
    in-process Python caller cannot even decode: UnicodeDecodeError)."""
    (features,) = _decode(serialized, "Example", ["features"], [tf.string])
    (entries,) = _decode(features, "Features", ["feature"], [tf.string])
    (values,) = _decode(entries, "Features.FeatureEntry", ["value"], [tf.string])
    lists = _decode(values, "Feature", ["bytes_list", "float_list", "int64_list"], [tf.string] * 3)
    decoded = [
        _decode(lists[0], "BytesList", ["value"], [tf.string])[0],
        _decode(lists[1], "FloatList", ["value"], [tf.float32])[0],
        _decode(lists[2], "Int64List", ["value"], [tf.int64])[0],
    ]
    # The strings, through a data dependency on every decoded value (Grappler
    # drops control dependencies on stateless ops): the parse runs after the check.
    total = tf.add_n([tf.size(v) for v in decoded])
    return tf.strings.substr(serialized, 0, tf.maximum(total, tf.int32.max))


def parse_serving(
    serialized: tf.Tensor, fields: tuple[F.Field, ...], name: str, need_an_id: bool = True
) -> dict:
    """``tf.io.parse_example(serialized, serving_spec(fields))`` for a serving
    request, strict:

    * a string that is not a valid serialized tf.train.Example is a DATA_LOSS
      error from ``check_encoding`` (never scored, never quoted);
    * a NaN or infinite weight ``w/<field>`` is an INVALID_ARGUMENT error
      naming the field (finite weights are used as sent);
    * with ``need_an_id``, an Example with no id of any of ``fields`` (an
      empty one, or one whose keys are all misspelt: it would get a
      plausible-looking score from the biases alone) is an INVALID_ARGUMENT
      error.

    ``name`` is the request input (``examples``, ``user``, ``items``)."""
    parsed = tf.io.parse_example(check_encoding(serialized), serving_spec(fields))
    for key, value in parsed.items():
        if value.dtype == tf.float32:
            finite = tf.debugging.check_numerics(
                value.values, f"{name}: {key} holds a NaN or infinite weight"
            )
            parsed[key] = value.with_values(finite)
    if not need_an_id:
        return parsed
    ids = tf.add_n([parsed[f.ids_key].row_lengths() for f in fields])
    check = tf.debugging.Assert(
        tf.reduce_all(ids > 0),
        [
            f"{name}: an Example has no id of any field of the model "
            f"({fields[0].ids_key}, ..., {fields[-1].ids_key}): are its keys misspelt, "
            "or is it empty?"
        ],
    )
    with tf.control_dependencies([check]):
        return {key: value.with_values(tf.identity(value.values)) for key, value in parsed.items()}


def _weights(ids: tf.RaggedTensor, weights: tf.RaggedTensor | None) -> tf.Tensor:
    """Weight values aligned with ``ids.values``, row by row: a row whose weights
    are missing or do not match its ids gets 1.0 (a serving request may omit
    them); other rows keep theirs."""
    ones = tf.ones_like(ids.values, tf.float32)
    if weights is None:
        return ones
    row = ids.value_rowids()
    ok = tf.gather(tf.equal(ids.row_lengths(), weights.row_lengths()), row)
    position = tf.range(tf.size(ids.values, out_type=row.dtype), dtype=row.dtype) - tf.gather(
        ids.row_starts(), row
    )
    index = tf.gather(weights.row_starts(), row) + position
    padded = tf.concat([weights.values, [1.0]], 0)  # index of the pad: size(weights.values)
    fallback = tf.size(weights.values, out_type=index.dtype)
    return tf.where(ok, tf.gather(padded, tf.where(ok, index, fallback)), ones)


def _field_inputs(field: F.Field, ids: tf.RaggedTensor, rows, weights, out: dict) -> None:
    """Flat inputs of one field. ``ids`` is [rows, ids] (user fields, serving)
    or [records, impressions, ids] with ``rows`` the batch row of each
    impression row; ``weights`` is [records (or rows), weights]."""
    if isinstance(ids.values, tf.RaggedTensor):
        row_of_id = tf.gather(rows, ids.values.value_rowids())
        per_record = ids.merge_dims(1, 2)
    else:
        row_of_id = ids.value_rowids()
        per_record = ids
    out[field.ids_input] = per_record.values
    out[field.rows_input] = tf.cast(row_of_id, tf.int32)
    if field.weighted:
        out[field.weights_input] = _weights(per_record, weights)


def _impression_rows(field: F.Field, ids: tf.RaggedTensor, impressions: tf.RaggedTensor):
    """For an item field parsed as [records, impressions, ids]: the impression
    (row of the batch) of each of its inner rows. A record may lack the field
    entirely (zero rows: its impressions get no ids); any other mismatch with
    the record's impression count is an error."""
    field_rows = ids.row_lengths()
    ok = tf.logical_or(tf.equal(field_rows, impressions.row_lengths()), tf.equal(field_rows, 0))
    check = tf.debugging.Assert(
        tf.reduce_all(ok),
        [f"a record's {field.lengths_key} does not match its number of impressions"],
    )
    record = ids.value_rowids()
    position = tf.range(tf.size(record, out_type=record.dtype), dtype=record.dtype) - tf.gather(
        ids.row_starts(), record
    )
    with tf.control_dependencies([check]):
        return tf.gather(impressions.row_starts(), record) + position


def grouped_to_inputs(parsed: dict) -> dict:
    """Model inputs from a parsed batch of grouped records."""
    impressions = parsed[F.CLICK]  # [records, impressions]
    inputs = {F.GROUP_INDEX: tf.cast(impressions.value_rowids(), tf.int32)}
    for field in F.FIELDS:
        ids = parsed[field.ids_key]
        rows = None if field.user_side else _impression_rows(field, ids, impressions)
        _field_inputs(field, ids, rows, parsed.get(field.weights_key), inputs)
    return inputs


def serving_to_inputs(parsed: dict) -> dict:
    """Model inputs from parsed per-impression requests (one group each)."""
    first = parsed[F.FIELDS[0].ids_key]
    inputs = {F.GROUP_INDEX: tf.range(first.nrows(out_type=tf.int32))}
    for field in F.FIELDS:
        _field_inputs(field, parsed[field.ids_key], None, parsed.get(field.weights_key), inputs)
    return inputs


def rank_to_inputs(user: dict, items: dict) -> dict:
    """Model inputs of a ranking request: ``user`` holds the user-side fields
    of one context parsed as a batch of one (``serving_spec(F.USER_FIELDS)``),
    ``items`` the item-side fields of N candidates (``serving_spec(F.ITEM_FIELDS)``).
    The N impressions form one group, so the user fields are pooled once."""
    num_items = items[F.ITEM_FIELDS[0].ids_key].nrows(out_type=tf.int32)
    inputs = {F.GROUP_INDEX: tf.zeros([num_items], tf.int32)}
    for field in F.ITEM_FIELDS:
        _field_inputs(field, items[field.ids_key], None, items.get(field.weights_key), inputs)
    keep = tf.minimum(num_items, 1)  # no items: no group, so drop the user's ids
    for field in F.USER_FIELDS:
        ids = user[field.ids_key][:keep]
        weights = user.get(field.weights_key)
        _field_inputs(field, ids, None, None if weights is None else weights[:keep], inputs)
    return inputs


def grouped_to_labels(parsed: dict) -> dict:
    """Per-impression labels (and ground truth when parsed), flat [N]."""
    labels = {key: tf.cast(parsed[key].values, tf.float32) for key in F.LABEL_KEYS}
    labels[F.SAMPLE_ID] = parsed[F.SAMPLE_ID].values
    for key in (*F.GROUND_TRUTH_FLOAT_KEYS, *F.GROUND_TRUTH_INT_KEYS):
        if key in parsed:
            labels[key] = tf.cast(parsed[key].values, tf.float32)
    return labels


def batch_spec(with_ground_truth: bool = False) -> tuple[dict, dict]:
    """(inputs, labels) TensorSpecs of a parsed batch, every dimension unknown:
    the ``input_signature`` that lets step functions trace once. (New
    containers each call; the specs are computed once per process: it traces
    the parser, ~3 s on 2 cores.)"""
    return tf.nest.map_structure(lambda s: s, _batch_spec(with_ground_truth))


@functools.cache
def _batch_spec(with_ground_truth: bool) -> tuple[dict, dict]:
    spec = (
        tf.data.Dataset.from_tensors(tf.constant([], tf.string))
        .map(make_parse_fn(with_ground_truth))
        .element_spec
    )
    return tf.nest.map_structure(
        lambda s: tf.TensorSpec([None] * s.shape.rank, s.dtype, name=s.name), spec
    )


def make_parse_fn(with_ground_truth: bool):
    spec = grouped_spec(with_ground_truth)

    def parse(serialized: tf.Tensor):
        parsed = tf.io.parse_example(serialized, spec)
        return grouped_to_inputs(parsed), grouped_to_labels(parsed)

    return parse


# ---------------------------------------------------------------------------
# Records -> steps of whole records, counted in impressions.

# The part of a record parsed before batching: its impressions (the length
# of its click list) and its request key (see ``record_keys``).
_HEAD_SPEC = {
    F.CLICK: tf.io.RaggedFeature(tf.int64, value_key=F.CLICK, row_splits_dtype=tf.int32),
    F.SAMPLE_ID: tf.io.RaggedFeature(tf.int64, value_key=F.SAMPLE_ID, row_splits_dtype=tf.int32),
    F.GROUP_KEY: tf.io.RaggedFeature(tf.int64, value_key=F.GROUP_KEY, row_splits_dtype=tf.int32),
}
# Records read and measured at a time before packing (any value gives the
# same steps; larger amortises the per-chunk work).
CHUNK_RECORDS = 1024
_KEY_RANGE = 1 << 30


def record_heads(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(impressions [n] int32, request key [n] int64 in [0, 2**30)) of a batch
    of serialized records. The key is the record's ``group_key`` (a hash of its
    ``common_feature_index`` written by data_prep.convert, so every record of a
    request shares it), or, in datasets written without one, a hash of its
    first ``sample_id``."""
    head = tf.io.parse_example(serialized, _HEAD_SPEC)
    sizes = head[F.CLICK].row_lengths()
    group = head[F.GROUP_KEY]
    first_sample = head[F.SAMPLE_ID][:, :1].to_tensor(default_value=0)[:, 0]
    fallback = tf.strings.to_hash_bucket_fast(tf.strings.as_string(first_sample), _KEY_RANGE)
    has_key = tf.greater(group.row_lengths(), 0)
    key = tf.where(has_key, group[:, :1].to_tensor(default_value=0)[:, 0], fallback)
    return sizes, tf.math.floormod(key, _KEY_RANGE)


def key_filter(fraction: float, exclude: float = 0.0):
    """A predicate on request keys: keeps the requests in the key range
    [exclude, exclude + fraction) of [0, 1). Disjoint ranges give disjoint
    sets of requests (the validation split takes [0, v), training [v, 1))."""
    lo = int(round(exclude * _KEY_RANGE))
    hi = int(round(min(1.0, exclude + fraction) * _KEY_RANGE))
    return lambda key: tf.logical_and(key >= lo, key < hi)


def _greedy_bounds(sizes: tf.Tensor, batch_size: int) -> tf.Tensor:
    """Start indices of greedy steps over records of ``sizes`` impressions,
    plus ``len(sizes)``: each step takes whole records while the total stays
    within ``batch_size`` (a record larger than that is a step of its own).
    ``next[i]``, the end of a step that starts at record i, is one binary
    search; the chain of steps is then followed one step per loop iteration."""
    n = tf.size(sizes)
    ends = tf.cumsum(sizes)
    starts = ends - sizes
    nxt = tf.searchsorted(ends, starts + batch_size, side="right", out_type=tf.int32)
    nxt = tf.maximum(nxt, tf.range(n) + 1)
    nxt = tf.concat([nxt, [n]], 0)

    def body(i, bounds):
        return nxt[i], bounds.write(bounds.size(), nxt[i])

    _, bounds = tf.while_loop(
        lambda i, _: i < n,
        body,
        (tf.constant(0), tf.TensorArray(tf.int32, size=1, dynamic_size=True).write(0, 0)),
    )
    return bounds.stack()


def pack_records(records: tf.data.Dataset, batch_size: int, keep=None) -> tf.data.Dataset:
    """Serialized records -> [k] string batches of whole records holding at most
    ``batch_size`` impressions each (greedy in stream order; a larger record is
    a batch of its own). ``keep``: an optional predicate on request keys
    (``key_filter``). Deterministic: the same stream gives the same batches.

    Records are measured ``CHUNK_RECORDS`` at a time; the last, still open,
    batch of a chunk is carried over to the next one (a ``scan`` state), so
    batches do not depend on the chunking."""

    def measure(serialized):
        sizes, keys = record_heads(serialized)
        if keep is not None:
            mask = keep(keys)
            serialized, sizes = tf.boolean_mask(serialized, mask), tf.boolean_mask(sizes, mask)
        return serialized, sizes, False

    chunks = records.batch(CHUNK_RECORDS).map(measure)
    end = tf.data.Dataset.from_tensors(
        (tf.constant([], tf.string), tf.constant([], tf.int32), True)
    )
    chunks = chunks.concatenate(end)

    def step(carry, chunk):
        carried, carried_sizes = carry
        serialized, sizes, final = chunk
        serialized = tf.concat([carried, serialized], 0)
        sizes = tf.concat([carried_sizes, sizes], 0)
        bounds = _greedy_bounds(sizes, batch_size)
        # All steps are complete at the end; otherwise the last one stays open.
        last = tf.size(bounds) - 1
        closed = tf.cond(final, lambda: last, lambda: tf.maximum(last - 1, 0))
        split = bounds[closed]
        batches = tf.RaggedTensor.from_row_splits(serialized[:split], bounds[: closed + 1])
        return (serialized[split:], sizes[split:]), batches

    initial = (tf.constant([], tf.string), tf.constant([], tf.int32))
    packed = chunks.scan(initial, step)
    return packed.flat_map(tf.data.Dataset.from_tensor_slices)


def train_records(files: list[str], fraction: float = 1.0, exclude: float = 0.0):
    """The serialized records of ``files`` whose request key is in the range
    ``[exclude, exclude + fraction)`` (all of them by default), in file order."""
    ds = tf.data.TFRecordDataset(files)
    if fraction >= 1 and exclude <= 0:
        return ds
    keep = key_filter(fraction, exclude)
    return (
        ds.batch(CHUNK_RECORDS)
        .map(lambda s: tf.boolean_mask(s, keep(record_heads(s)[1])))
        .unbatch()
    )


# A sample kept by key (--train_fraction, or train minus the validation split)
# is written once to its own files when at most this share of the split is
# kept and the run trains more than one epoch: each epoch then reads the
# sample, not the whole split (at 1 %, ~100x less to read and filter).
SAMPLE_CACHE_MAX_SHARE = 0.5
_SAMPLE_KEY = "sample.json"


def cache_sample(
    files: list[str], fraction: float, exclude: float, out_dir: str, log=None
) -> list[str]:
    """The records of each of ``files`` whose key is in ``[exclude, exclude +
    fraction)`` (``train_records``), written to ``out_dir/<file's name>``,
    one output per input in the same order (so file-level shuffling and
    sharding work as on the split). Reuses the outputs when ``out_dir`` holds
    them for the same files (paths, sizes, mtimes) and range; otherwise
    rebuilds. Each output is written under a temporary name and renamed when
    complete, so a crash leaves whole files or none. Returns the outputs."""
    key = {
        "files": [[os.path.abspath(f), os.path.getsize(f), os.path.getmtime(f)] for f in files],
        "fraction": fraction,
        "exclude": exclude,
    }
    key_path = os.path.join(out_dir, _SAMPLE_KEY)
    try:
        with open(key_path) as f:
            same = json.load(f) == key
    except (OSError, ValueError):
        same = False
    if not same:
        shutil.rmtree(out_dir, ignore_errors=True)
        files_lib.write_json(key_path, key)
    outputs = [os.path.join(out_dir, os.path.basename(f)) for f in files]
    todo = [(f, o) for f, o in zip(files, outputs, strict=True) if not os.path.exists(o)]
    if todo and log:
        log(
            f"writing the train sample ({fraction:.2%} of the split's requests, once per run) "
            f"to {out_dir}: {len(todo)} file(s)"
        )
    for source, out in todo:
        tmp = f"{out}.tmp-{os.getpid()}"
        with tf.io.TFRecordWriter(tmp) as writer:
            for chunk in train_records([source], fraction, exclude).batch(CHUNK_RECORDS):
                for record in chunk.numpy():
                    writer.write(record)
        os.replace(tmp, out)
    return outputs


def make_dataset(
    files: list[str],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    shuffle_buffer: int = 4096,
    with_ground_truth: bool = False,
    deterministic: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    fraction: float = 1.0,
    exclude: float = 0.0,
) -> tf.data.Dataset:
    """One pass over ``files``: batches of (inputs, labels), each of whole
    records holding at most ``batch_size`` impressions (see ``pack_records``).

    ``shuffle`` shuffles the file order and records through a buffer with
    ``seed`` (use a different seed per epoch). ``deterministic`` fixes the
    element order of the parallel stages (for tests and exact resumption).
    ``num_shards``/``shard_index`` split the files between input pipelines.
    ``fraction``/``exclude`` keep the requests whose key falls in
    ``[exclude, exclude + fraction)`` (see ``key_filter``): a sample of the
    split, or the part of train that is not the validation split.
    """
    if not files:
        raise data_layout.DatasetError("no input files")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    ds = tf.data.Dataset.from_tensor_slices(files)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 4),
        block_length=16,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    keep = key_filter(fraction, exclude) if fraction < 1 or exclude > 0 else None
    ds = pack_records(ds, batch_size, keep)
    ds = ds.map(
        make_parse_fn(with_ground_truth), num_parallel_calls=AUTOTUNE, deterministic=deterministic
    )
    options = tf.data.Options()
    options.deterministic = deterministic
    ds = ds.with_options(options)
    return ds.prefetch(AUTOTUNE)


def has_ground_truth(files: list[str]) -> bool:
    """True when the records carry synthetic ground truth (looks at one record)."""
    for record in tf.data.TFRecordDataset(files[:1]).take(1):
        example = tf.train.Example.FromString(record.numpy())
        return F.GT_PCTR in example.features.feature
    return False
