"""esmm_tf.export: the SavedModel layout and the serving signature."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import data_layout, input_pipeline, losses, training_run
from esmm_tf import features as F
from esmm_tf.model import CTR_LOGIT, CVR_LOGIT, build_model
from esmm_tf.serving import (
    DEFAULT_SIGNATURE,
    RANK_ITEMS,
    RANK_SIGNATURE,
    RANK_USER,
    SIGNATURE_INPUT,
    WARMUP_FILE,
    export_saved_model,
)
from esmm_tf.serving_requests import impression_examples, rank_request
from tests.helpers import (
    ROOT,
    make_example,
    parse_grouped,
    parse_serving,
    randomize_embeddings,
    read_records,
    small_config,
)


@pytest.fixture(scope="module")
def model(tiny_data_dir):
    """A tiny ESMM after a few Adam steps (embeddings spread out first so that
    predictions differ clearly between impressions)."""
    config = small_config(tiny_data_dir)
    model = build_model(config)
    randomize_embeddings(model, seed=3, scale=0.5)
    optimizer = training_run.make_optimizer(config)
    optimizer.build(model.trainable_variables)
    files = data_layout.shard_files(tiny_data_dir, "test")
    for inputs, labels in input_pipeline.make_dataset(files, config.batch_size, shuffle=False).take(
        3
    ):
        with tf.GradientTape() as tape:
            out = model(inputs, training=True)
            loss = losses.esmm_loss(
                labels[F.CLICK], labels[F.CONVERSION], out[CTR_LOGIT], out[CVR_LOGIT]
            )["total"]
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    assert int(optimizer.iterations) == 3
    return model


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def records(tiny_data_dir):
    return read_records(tiny_data_dir, "test", 5)


@pytest.fixture(scope="module")
def version_dir(model, export_dir, records):
    return export_saved_model(model, export_dir, warmup_records=records)


@pytest.fixture(scope="module")
def loaded(version_dir):
    return tf.saved_model.load(version_dir)


@pytest.fixture(scope="module")
def serve(loaded):
    return loaded.signatures[DEFAULT_SIGNATURE]


@pytest.fixture(scope="module")
def rank(loaded):
    return loaded.signatures[RANK_SIGNATURE]


def call_rank(rank, user: bytes, items: list[bytes]) -> dict[str, np.ndarray]:
    out = rank(**{RANK_USER: tf.constant(user), RANK_ITEMS: tf.constant(items, tf.string)})
    return {k: v.numpy() for k, v in out.items()}


def call(serve, examples: list[bytes]) -> dict[str, np.ndarray]:
    out = serve(**{SIGNATURE_INPUT: tf.constant(examples, tf.string)})
    return {k: v.numpy() for k, v in out.items()}


def in_memory(model, examples: list[bytes]) -> dict[str, np.ndarray]:
    out = model(parse_serving(examples), training=False)
    return {k: out[k].numpy() for k in F.OUTPUT_KEYS}


def test_layout(version_dir, export_dir, tiny_data_dir):
    name = os.path.basename(version_dir)
    assert os.path.dirname(version_dir) == export_dir
    assert name.isdigit() and int(name) > 0
    assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))
    assert os.path.isfile(os.path.join(version_dir, "variables", "variables.index"))
    assets = sorted(os.listdir(os.path.join(version_dir, "assets")))
    assert assets == sorted(f"{f.id}.tsv" for f in F.FIELDS)
    assert len(assets) == 23
    for asset in assets:
        field_id = asset[: -len(".tsv")]
        source = data_layout.vocab_file(tiny_data_dir, field_id)
        assert filecmp.cmp(os.path.join(version_dir, "assets", asset), source, shallow=False)
    assert not [n for n in os.listdir(export_dir) if n.startswith(".tmp")]
    assert os.path.isfile(os.path.join(version_dir, WARMUP_FILE))


def test_signature_takes_only_serialized_examples(serve):
    args, kwargs = serve.structured_input_signature
    assert args == ()
    assert list(kwargs) == [SIGNATURE_INPUT]
    spec = kwargs[SIGNATURE_INPUT]
    assert spec.dtype == tf.string
    assert spec.shape.as_list() == [None]
    assert set(serve.structured_outputs) == set(F.OUTPUT_KEYS)
    for spec in serve.structured_outputs.values():
        assert spec.dtype == tf.float32


def test_serving_outputs_equal_the_in_memory_model(serve, model, records):
    examples = [e for r in records for e in impression_examples(r)]
    grouped, _ = parse_grouped(records)
    want = model(grouped, training=False)
    got = call(serve, examples)  # no labels in the requests
    for key in F.OUTPUT_KEYS:
        assert got[key].shape == (len(examples),)
        np.testing.assert_allclose(got[key], want[key].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[F.CTCVR], got[F.CTR] * got[F.CVR], rtol=0, atol=1e-7)
    assert np.std(got[F.CTR]) > 1e-2 and np.std(got[F.CVR]) > 1e-2  # not a constant


def test_batch_of_one_equals_its_row_in_a_batch(serve, records):
    examples = impression_examples(records[0])
    batch = call(serve, examples)
    for i in (0, len(examples) - 1):
        single = call(serve, [examples[i]])
        for key in F.OUTPUT_KEYS:
            assert single[key].shape == (1,)
            np.testing.assert_allclose(single[key][0], batch[key][i], rtol=0, atol=1e-6)


def test_empty_batch(serve):
    out = call(serve, [])
    for key in F.OUTPUT_KEYS:
        assert out[key].shape == (0,)


def _misspelt(example: bytes) -> bytes:
    """The Example with every key renamed ``id/<field>`` (a client's typo)."""
    ex = tf.train.Example.FromString(example)
    renamed = tf.train.Example()
    for key, value in ex.features.feature.items():
        renamed.features.feature[key.replace("ids/", "id/")].CopyFrom(value)
    return renamed.SerializeToString()


def test_an_example_without_any_known_id_is_an_invalid_argument(serve, rank, records, version_dir):
    """An empty Example, or one whose keys are all misspelt, got the biases'
    score (~11x the base CTR on the demo), above every real candidate: now an
    error in both signatures and in the graph TF Serving runs. An empty user
    context in ``rank`` is still allowed."""
    user, items = rank_request(records[0])
    examples = impression_examples(records[0])
    empty = tf.train.Example().SerializeToString()
    server = GraphModeServer(version_dir)
    cases = [
        (lambda: call(serve, [examples[0], empty]), "examples:"),
        (lambda: call(serve, [_misspelt(examples[0])]), "examples:"),
        (lambda: call_rank(rank, user, [items[0], _misspelt(items[1])]), "items:"),
        (lambda: call_rank(rank, items[0], [user]), "items:"),  # user and items swapped
        (
            lambda: server.run(DEFAULT_SIGNATURE, {SIGNATURE_INPUT: np.array([empty])}),
            "examples:",
        ),
    ]
    for run, name in cases:
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            run()
        assert f"{name} an Example has no id of any field of the model" in error.value.message
    call(serve, examples)  # the same requests without the bad Example are scored
    assert call_rank(rank, empty, items)["ctr"].shape == (len(items),)


def test_empty_lists_score_as_absent_fields(serve, rank, records):
    """A field present with an empty id list (and empty weights) pools to zero,
    exactly like an absent field, in both signatures."""
    example = tf.train.Example.FromString(impression_examples(records[0])[0])
    emptied = tf.train.Example()
    emptied.CopyFrom(example)
    absent = tf.train.Example()
    absent.CopyFrom(example)
    for field in ("109_14", "210", "101"):
        del emptied.features.feature[f"ids/{field}"].int64_list.value[:]
        del absent.features.feature[f"ids/{field}"]
        if f"w/{field}" in example.features.feature:
            del emptied.features.feature[f"w/{field}"].float_list.value[:]
            del absent.features.feature[f"w/{field}"]
    assert len(emptied.features.feature) == len(example.features.feature)
    out = call(serve, [emptied.SerializeToString(), absent.SerializeToString()])
    for key in F.OUTPUT_KEYS:
        assert np.all(np.isfinite(out[key]))
        np.testing.assert_allclose(out[key][0], out[key][1], rtol=0, atol=1e-7)
    ranked = call_rank(rank, emptied.SerializeToString(), [emptied.SerializeToString()])
    for key in F.OUTPUT_KEYS:
        np.testing.assert_allclose(ranked[key], out[key][:1], rtol=0, atol=1e-6)


def test_unknown_ids_score_as_the_oov_row(serve, records):
    example = tf.train.Example.FromString(impression_examples(records[0])[0])

    def with_item_id(item_id):
        example.features.feature["ids/205"].int64_list.value[:] = [item_id]
        return example.SerializeToString()

    known = call(serve, [with_item_id(example.features.feature["ids/205"].int64_list.value[0])])
    unknown = call(serve, [with_item_id(10**15), with_item_id(10**15 + 7), with_item_id(-1)])
    for key in F.OUTPUT_KEYS:
        np.testing.assert_allclose(unknown[key], unknown[key][0], rtol=0, atol=1e-7)
        assert np.all(np.isfinite(unknown[key]))
    assert abs(unknown[F.CTR][0] - known[F.CTR][0]) > 1e-5


def test_very_long_lists(serve, model):
    rng = np.random.default_rng(0)
    long = make_example(
        {
            "ids/210": rng.integers(170_000, 170_100, 10_000).tolist(),
            "ids/109_14": rng.integers(100_000, 100_030, 10_000).tolist(),
            "w/109_14": rng.uniform(0.5, 3.0, 10_000).tolist(),
            "ids/205": [123],
        }
    ).SerializeToString()
    short = make_example({"ids/205": [123]}).SerializeToString()
    out = call(serve, [long, short])
    want = in_memory(model, [long, short])
    for key in F.OUTPUT_KEYS:
        assert out[key].shape == (2,)
        assert np.all(np.isfinite(out[key]))
        np.testing.assert_allclose(out[key], want[key], rtol=1e-5, atol=1e-6)


NOT_EXAMPLES = [
    b"not a serialized tf.train.Example",
    b"\xff\xfenot a serialized tf.train.Example",  # not UTF-8 either
    bytes.fromhex("0affffffff0f"),  # a features field running past the end
    tf.train.Example().SerializeToString() + b"\x0a\x05\x0a\x03\x0a\x01",  # broken inside
    # a valid structure whose packed int64 list runs past its end
    make_example({"ids/205": [7]})
    .SerializeToString()
    .replace(b"\x1a\x03\x0a\x01\x07", b"\x1a\x03\x0a\x05\x07"),
]


@pytest.mark.parametrize("bad", NOT_EXAMPLES)
def test_a_string_that_is_not_an_example_is_rejected_without_its_bytes(serve, rank, records, bad):
    """A DATA_LOSS error from the encoding check (decode_proto's message), never
    the raw bytes (which parse_example's own message would quote, so that an
    in-process caller got a UnicodeDecodeError), never scored as an empty Example."""
    good = impression_examples(records[0])[0]
    user, items = rank_request(records[0])
    for run, where in (
        (lambda: call(serve, [good, bad]), "examples: "),
        (lambda: call_rank(rank, bad, items), "user: "),
        (lambda: call_rank(rank, user, [items[0], bad]), "items: "),
    ):
        with pytest.raises(tf.errors.DataLossError) as error:
            run()
        assert "DecodeProtoV2" in error.value.message, where
        assert "Could not parse" not in error.value.message


NON_FINITE = [float("nan"), float("inf"), -float("inf")]


def _with_weight(example: bytes, field: str, value: float) -> bytes:
    ex = tf.train.Example.FromString(example)
    feature = ex.features.feature
    n = len(feature[f"ids/{field}"].int64_list.value)
    assert n > 0, field
    del feature[f"w/{field}"].float_list.value[:]
    feature[f"w/{field}"].float_list.value.extend([0.5] * (n - 1) + [value])
    return ex.SerializeToString()


def _weighted(side) -> str:
    return next(f.id for f in side if f.weighted)


@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_weights_are_an_invalid_argument_naming_the_field(
    serve, rank, records, version_dir, value
):
    record = next(
        r for r in records if all(len(e) for e in impression_examples(r))
    )  # any record: its impressions hold the weighted fields
    user, items = rank_request(record)
    item_field, user_field = _weighted(F.ITEM_FIELDS), _weighted(F.USER_FIELDS)
    bad_item = _with_weight(items[0], item_field, value)
    bad_user = _with_weight(user, user_field, value)
    examples = impression_examples(record)
    bad_example = _with_weight(examples[0], item_field, value)
    server = GraphModeServer(version_dir)  # as TensorFlow Serving runs it
    cases = [
        (lambda: call(serve, [examples[0], bad_example]), f"examples: w/{item_field}"),
        (lambda: call_rank(rank, user, [items[0], bad_item]), f"items: w/{item_field}"),
        (lambda: call_rank(rank, bad_user, items), f"user: w/{user_field}"),
        (
            lambda: server.run(DEFAULT_SIGNATURE, {SIGNATURE_INPUT: np.array([bad_example])}),
            f"examples: w/{item_field}",
        ),
        (
            lambda: server.run(RANK_SIGNATURE, {RANK_USER: bad_user, RANK_ITEMS: np.array(items)}),
            f"user: w/{user_field}",
        ),
    ]
    for run, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            run()
        assert f"{message} holds a NaN or infinite weight" in error.value.message


def test_graph_mode_loader_rejects_what_is_not_an_example(version_dir, records):
    server = GraphModeServer(version_dir)
    good = impression_examples(records[0])[0]
    assert server.run(DEFAULT_SIGNATURE, {SIGNATURE_INPUT: np.array([good])})[F.CTR].shape == (1,)
    for bad in NOT_EXAMPLES:
        with pytest.raises(tf.errors.DataLossError, match="DecodeProtoV2"):
            server.run(DEFAULT_SIGNATURE, {SIGNATURE_INPUT: np.array([good, bad], dtype=object)})


def test_a_feature_of_the_wrong_type_is_an_invalid_argument_naming_the_key(serve):
    ex = make_example({"ids/205": [7]})
    ex.features.feature["ids/205"].CopyFrom(
        tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\xff"]))
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="Key: ids/205"):
        call(serve, [ex.SerializeToString()])


@pytest.mark.slow  # a whole training run or export (~10 s): out of the fast loop
def test_two_exports_get_different_versions(model, version_dir, export_dir):
    second = export_saved_model(model, export_dir)
    assert second != version_dir
    versions = sorted(int(n) for n in os.listdir(export_dir) if not n.startswith("."))
    assert versions == sorted({int(os.path.basename(version_dir)), int(os.path.basename(second))})
    assert os.path.isfile(os.path.join(second, "saved_model.pb"))
    assert not [n for n in os.listdir(export_dir) if n.startswith(".tmp")]


def test_export_refuses_an_existing_version(model, version_dir, export_dir):
    with pytest.raises(FileExistsError):
        export_saved_model(model, export_dir, version=int(os.path.basename(version_dir)))


def _saved_model_cli() -> str:
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        cli = shutil.which("saved_model_cli")
    assert cli, "saved_model_cli not found next to the Python interpreter"
    return cli


def test_saved_model_cli_shows_the_signature(version_dir):
    cli = _saved_model_cli()
    result = subprocess.run(
        [
            cli,
            "show",
            "--dir",
            version_dir,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "inputs['examples']" in out
    assert "DT_STRING" in out
    for key in F.OUTPUT_KEYS:
        assert f"outputs['{key}']" in out
    assert "labels" not in out and "click" not in out


def test_rank_signature_inputs(rank):
    args, kwargs = rank.structured_input_signature
    assert args == ()
    assert sorted(kwargs) == sorted([RANK_USER, RANK_ITEMS])
    assert kwargs[RANK_USER].dtype == tf.string and kwargs[RANK_USER].shape.rank == 0
    assert kwargs[RANK_ITEMS].dtype == tf.string and kwargs[RANK_ITEMS].shape.as_list() == [None]
    assert set(rank.structured_outputs) == set(F.OUTPUT_KEYS)


def test_rank_agrees_with_serving_default(serve, rank, records):
    for record in records:
        user, items = rank_request(record)
        ranked = call_rank(rank, user, items)
        single = call(serve, impression_examples(record))
        for key in F.OUTPUT_KEYS:
            assert ranked[key].shape == (len(items),)
            np.testing.assert_allclose(ranked[key], single[key], rtol=0, atol=1e-6)
        one = call_rank(rank, user, items[-1:])
        for key in F.OUTPUT_KEYS:
            np.testing.assert_allclose(one[key], single[key][-1:], rtol=0, atol=1e-6)


def test_rank_edge_cases(serve, rank, records):
    user, items = rank_request(records[0])
    for key, value in call_rank(rank, user, []).items():  # no candidates
        assert value.shape == (0,), key
    empty = tf.train.Example().SerializeToString()
    no_user = call_rank(rank, empty, items)  # a user context without features
    want = call(serve, items)  # the same items as impressions without user fields
    for key in F.OUTPUT_KEYS:
        np.testing.assert_allclose(no_user[key], want[key], rtol=0, atol=1e-6)
    # fields of the other side are ignored: the user example's items, the items' users
    full = impression_examples(records[0])
    swapped = call_rank(rank, full[0], full)
    plain = call_rank(rank, user, items)
    for key in F.OUTPUT_KEYS:
        np.testing.assert_allclose(swapped[key], plain[key], rtol=0, atol=1e-6)
    with pytest.raises(tf.errors.DataLossError, match="DecodeProtoV2"):
        call_rank(rank, b"not an example", items)


class GraphModeServer:
    """Loads a SavedModel the way TensorFlow Serving's C++ loader does: a
    graph and a session, variables restored and tables initialized by the
    loader, signatures run by tensor names."""

    def __init__(self, version_dir: str):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], version_dir)
        self.signatures = meta_graph.signature_def

    def run(self, signature: str, inputs: dict) -> dict[str, np.ndarray]:
        signature_def = self.signatures[signature]
        feed = {signature_def.inputs[k].name: v for k, v in inputs.items()}
        names = sorted(signature_def.outputs)
        values = self.session.run([signature_def.outputs[k].name for k in names], feed)
        return dict(zip(names, values, strict=True))


def test_warmup_requests_replay_through_their_signatures(model, version_dir, records):
    """What TensorFlow Serving does with assets.extra: load the version in
    graph mode and replay every record through its named signature; outputs
    equal the in-memory model's."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(version_dir, WARMUP_FILE)
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(path)
    ]
    assert len(logs) == 3 * len(records)
    server = GraphModeServer(version_dir)
    assert set(server.signatures) >= {DEFAULT_SIGNATURE, RANK_SIGNATURE}
    seen = set()
    for i, log in enumerate(logs):
        request = log.predict_log.request
        signature = request.model_spec.signature_name
        seen.add(signature)
        got = server.run(signature, {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        grouped, _ = parse_grouped([records[i // 3]])
        want = model(grouped, training=False)
        n = got[F.CTR].shape[0]
        assert n == (1 if i % 3 == 1 else want[F.CTR].shape[0])
        for key in F.OUTPUT_KEYS:
            np.testing.assert_allclose(got[key], want[key].numpy()[:n], rtol=0, atol=1e-6)
    assert seen == {DEFAULT_SIGNATURE, RANK_SIGNATURE}


def test_warmup_requests_leave_out_impressions_without_ids(version_dir, records, monkeypatch):
    """The data may hold impressions without any id (a raw row without
    features): the signatures refuse them, and TF Serving does not load a
    version whose warm-up fails, so they are not in the warm-up requests."""
    from tensorflow_serving.apis import prediction_log_pb2

    from esmm_tf import serving, serving_requests

    empty = tf.train.Example().SerializeToString()
    impression_examples, rank_request = (
        serving_requests.impression_examples,
        serving_requests.rank_request,
    )
    monkeypatch.setattr(
        serving_requests, "impression_examples", lambda r: [empty, *impression_examples(r)]
    )
    monkeypatch.setattr(
        serving_requests,
        "rank_request",
        lambda r: (rank_request(r)[0], [*rank_request(r)[1], empty]),
    )
    server = GraphModeServer(version_dir)
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r)
        for r in serving.warmup_requests(records[:2]) + serving.warmup_requests([empty])
    ]
    assert len(logs) == 3 * 2  # the record of nothing but an id-less impression: none
    for log in logs:
        request = log.predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        for value in inputs.values():
            assert empty not in np.atleast_1d(value).tolist()
        server.run(request.model_spec.signature_name, inputs)  # none is refused


def test_saved_model_cli_runs_the_signature(version_dir, serve, records, tmp_path):
    """``saved_model_cli run`` builds tf.Examples from --input_examples and
    feeds them to serving_default, as a client would."""
    example = tf.train.Example.FromString(impression_examples(records[0])[0])
    values = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values[key] = list(getattr(feature, kind).value)
    out_dir = str(tmp_path / "cli_out")
    result = subprocess.run(
        [
            _saved_model_cli(),
            "run",
            "--dir",
            version_dir,
            "--tag_set",
            "serve",
            "--signature_def",
            DEFAULT_SIGNATURE,
            "--input_examples",
            f"{SIGNATURE_INPUT}=[{values!r}]",
            "--outdir",
            out_dir,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    want = call(serve, [example.SerializeToString()])
    for key in F.OUTPUT_KEYS:
        got = np.load(os.path.join(out_dir, f"{key}.npy"))
        np.testing.assert_allclose(got, want[key], rtol=0, atol=1e-6)


def test_stale_temporary_exports_are_removed(model, export_dir):
    """A killed export's temporary directory goes at the next export: this
    host's when its process is gone or is the exporter itself (PID 1 in every
    container run), any host's when untouched for a day; a live one stays."""
    from esmm_tf import serving
    from tests.helpers import dead_pid, live_pid

    with live_pid() as pid:
        stale = os.path.join(export_dir, f"{serving.tmp_prefix()}{dead_pid()}-123")
        mine = os.path.join(export_dir, f"{serving.tmp_prefix()}{os.getpid()}-124")
        live = os.path.join(export_dir, f"{serving.tmp_prefix()}{pid}-456")
        other_host = os.path.join(export_dir, ".tmp-elsewhere-1-789")
        old_other_host = os.path.join(export_dir, ".tmp-elsewhere-2-790")
        for path in (stale, mine, live, other_host, old_other_host):
            os.makedirs(os.path.join(path, "variables"))
        two_days_ago = time.time() - 2 * 24 * 3600
        os.utime(old_other_host, (two_days_ago, two_days_ago))
        export_saved_model(model, export_dir)
    for path in (stale, mine, old_other_host):
        assert not os.path.exists(path), path
    assert os.path.isdir(live) and os.path.isdir(other_host)
    for path in (live, other_host):
        shutil.rmtree(path)


def test_rerunning_an_export_with_the_same_version_is_up_to_date(model, tmp_path):
    """``--version=N`` rerun after it completed (e.g. killed after its rename):
    the same checkpoint returns the version; another checkpoint is refused."""
    checkpoint = tf.train.Checkpoint(model=model)
    first = checkpoint.save(str(tmp_path / "ckpt" / "c"))
    export_dir = str(tmp_path / "export")
    path = export_saved_model(model, export_dir, version=7, source_checkpoint=first)
    stamp = os.path.getmtime(os.path.join(path, "saved_model.pb"))
    assert export_saved_model(model, export_dir, version=7, source_checkpoint=first) == path
    assert os.path.getmtime(os.path.join(path, "saved_model.pb")) == stamp  # not rewritten
    model.trainable_variables[0].assign_add(tf.ones_like(model.trainable_variables[0]))
    second = checkpoint.save(str(tmp_path / "ckpt" / "c"))
    with pytest.raises(FileExistsError, match="exported from another checkpoint: choose another"):
        export_saved_model(model, export_dir, version=7, source_checkpoint=second)


def test_serving_api_pin_is_the_one_installed():
    """One pin: the export's error message, setup.py's dependency (a plain one:
    no --no-deps install beside it), and what is installed agree."""
    from importlib.metadata import version

    from esmm_tf.serving import SERVING_API_PIN

    name, pinned = SERVING_API_PIN.split("==")
    with open(os.path.join(ROOT, "setup.py")) as f:
        assert f'SERVING_API = "{SERVING_API_PIN}"' in f.read()
    with open(os.path.join(ROOT, "Makefile")) as f:
        assert "--no-deps" not in f.read()
    assert version(name) == pinned
