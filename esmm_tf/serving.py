"""SavedModel export for TensorFlow Serving (the library; the entry point that
exports a training run is ``esmm_tf/export.py``).

Layout: ``<export_dir>/<version>/`` with ``saved_model.pb``, ``variables/``,
``assets/`` (the vocabulary files: the raw-id lookup is inside the model) and,
when warm-up records are given, ``assets.extra/tf_serving_warmup_requests``
(``PredictionLog`` records that TensorFlow Serving replays before it serves
the version). The version is an integer (seconds since the epoch unless
given), as TensorFlow Serving expects. The directory is written under a
hidden temporary name and renamed when complete, so a server polling
``export_dir`` never sees a partial version. ``assets.extra/export_source.json``
names the checkpoint a version was made from (its path and the sha256 of its
index, which holds every tensor's checksum): exporting the same checkpoint
again reuses the newest version instead of writing an identical one.

Signatures, both returning ``ctr``, ``cvr``, ``ctcvr`` (float32, one per
impression):

* ``serving_default``: input ``examples``, a [batch] string tensor of
  serialized per-impression ``tf.train.Example``s holding ``ids/<field>``
  (int64 raw ids) and, for weighted fields, ``w/<field>`` (float) — no labels.
* ``rank``: inputs ``user``, one serialized Example with the user-side fields
  (a scalar string), and ``items``, a [N] string tensor of Examples with the
  item-side fields of N candidates. The user fields are pooled once for all
  N, as in the grouped training records; fields of the other side are ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time

import tensorflow as tf

from esmm_tf import features as F
from esmm_tf import files, input_pipeline, scoring, serving_requests

SIGNATURE_INPUT = "examples"
DEFAULT_SIGNATURE = "serving_default"
RANK_SIGNATURE = "rank"
RANK_USER = "user"
RANK_ITEMS = "items"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
SERVING_API_PIN = "tensorflow-serving-api==2.21.0"
WARMUP_RECORDS = 8  # default: test records whose requests warm up TensorFlow Serving
SOURCE_FILE = os.path.join("assets.extra", "export_source.json")


class ServingModule(tf.Module):
    """Wraps a trained model with the serving signatures."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        # The model's tf.Variables, tracked by this module. Keras 3 variables
        # are not tf.Variables: without this list the SavedModel's functions
        # still capture them (so tf.saved_model.load works) but the graph-mode
        # loader of TensorFlow Serving and saved_model_cli does not restore
        # them ("Could not find variable ...").
        self.model_variables = [getattr(v, "value", v) for v in model.variables]

    def _outputs(self, inputs: dict) -> dict:
        outputs = self.model(inputs, training=False)
        return {k: tf.identity(outputs[k], name=k) for k in F.OUTPUT_KEYS}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SIGNATURE_INPUT)])
    def serve(self, examples):
        parsed = input_pipeline.parse_serving(examples, F.FIELDS, SIGNATURE_INPUT)
        return self._outputs(input_pipeline.serving_to_inputs(parsed))

    @tf.function(
        input_signature=[
            tf.TensorSpec([], tf.string, name=RANK_USER),
            tf.TensorSpec([None], tf.string, name=RANK_ITEMS),
        ]
    )
    def rank(self, user, items):
        user = tf.reshape(user, [1])
        # An empty user context is allowed (e.g. a visitor without a profile).
        parsed_user = input_pipeline.parse_serving(user, F.USER_FIELDS, RANK_USER, False)
        parsed_items = input_pipeline.parse_serving(items, F.ITEM_FIELDS, RANK_ITEMS)
        return self._outputs(input_pipeline.rank_to_inputs(parsed_user, parsed_items))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="records")])
    def score_records(self, records):
        """Not a serving signature: per-impression scores of serialized grouped
        training-format records (esmm_tf.predict --saved_model)."""
        return scoring.record_scores(self.model, records)

    def signatures(self) -> dict:
        return {DEFAULT_SIGNATURE: self.serve, RANK_SIGNATURE: self.rank}


def warmup_requests(records: list[bytes], model_name: str = "esmm") -> list[bytes]:
    """Serialized ``PredictionLog``s made from grouped records: per record, a
    ``serving_default`` request with all its impressions, one with its first
    impression alone, and a ``rank`` request."""
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as e:
        raise ImportError(
            "writing TensorFlow Serving warm-up requests needs the tensorflow-serving-api "
            f"protos: pip install {SERVING_API_PIN} (a dependency of esmm_tf)"
        ) from e

    def log(signature: str, inputs: dict) -> bytes:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=tf.string))
        predict_log = prediction_log_pb2.PredictLog(request=request)
        return prediction_log_pb2.PredictionLog(predict_log=predict_log).SerializeToString()

    has_an_id = serving_requests.has_an_id
    out = []
    for record in records:
        # Impressions without ids are left out: the signatures refuse them, and
        # TensorFlow Serving does not load a version whose warm-up fails.
        examples = [e for e in serving_requests.impression_examples(record) if has_an_id(e)]
        user, items = serving_requests.rank_request(record)
        items = [e for e in items if has_an_id(e)]
        if examples:
            out.append(log(DEFAULT_SIGNATURE, {SIGNATURE_INPUT: examples}))
            out.append(log(DEFAULT_SIGNATURE, {SIGNATURE_INPUT: examples[:1]}))
        if items:
            out.append(log(RANK_SIGNATURE, {RANK_USER: user, RANK_ITEMS: items}))
    return out


def _write_warmup(version_dir: str, requests: list[bytes]) -> None:
    path = os.path.join(version_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            writer.write(request)


def tmp_prefix() -> str:
    return f".tmp-{socket.gethostname()}-"


STALE_TMP_SECONDS = 24 * 3600  # no export takes a day: older temporaries are leftovers


def _remove_stale_tmp_dirs(export_dir: str) -> None:
    """Removes temporary export directories that killed exports left behind:
    this host's whose process is gone or is this one (a container's exporter
    is often PID 1 in every run), and any untouched for a day (another pod on
    shared storage, or a reused PID). A live export's is left alone."""
    prefix = tmp_prefix()
    for name in os.listdir(export_dir):
        if not name.startswith(".tmp-"):
            continue
        path = os.path.join(export_dir, name)
        pid = name[len(prefix) :].split("-")[0] if name.startswith(prefix) else ""
        stale = pid.isdigit() and not files.pid_alive(int(pid))
        try:
            stale = stale or time.time() - os.path.getmtime(path) > STALE_TMP_SECONDS
        except OSError:  # removed meanwhile
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)


def checkpoint_source(checkpoint: str) -> dict:
    """What identifies a checkpoint's weights: its path and its index's sha256."""
    with open(checkpoint + ".index", "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"checkpoint": os.path.abspath(checkpoint), "index_sha256": digest}


def export_of(export_dir: str, source_checkpoint: str) -> str | None:
    """The newest version in ``export_dir`` if it was exported from
    ``source_checkpoint`` (same weights), else None."""
    if not os.path.isdir(export_dir):
        return None
    versions = [n for n in os.listdir(export_dir) if n.isdigit()]
    if not versions:
        return None
    newest = os.path.join(export_dir, max(versions, key=int))
    return newest if _source_of(newest) == checkpoint_source(source_checkpoint) else None


def _source_of(version_dir: str) -> dict | None:
    """The checkpoint a version was exported from (``checkpoint_source``), if recorded."""
    try:
        with open(os.path.join(version_dir, SOURCE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def export_saved_model(
    model,
    export_dir: str,
    version: int | None = None,
    warmup_records: list[bytes] | None = None,
    model_name: str = "esmm",
    source_checkpoint: str | None = None,
) -> str:
    """Writes ``export_dir/<version>`` atomically; returns its path.

    ``warmup_records``: grouped training records (``esmm_tf.serving_requests``)
    from which the TensorFlow Serving warm-up requests are made; none: no
    warm-up file. ``source_checkpoint``: the checkpoint ``model`` was restored
    from (or just saved to); recorded in the version, and when the newest
    version already came from it (and no ``version`` is asked for), that
    version's path is returned and nothing is written.
    """
    os.makedirs(export_dir, exist_ok=True)
    _remove_stale_tmp_dirs(export_dir)
    if source_checkpoint and version is None:
        existing = export_of(export_dir, source_checkpoint)
        if existing:
            return existing
    if version is None:
        version = int(time.time())
        while os.path.exists(os.path.join(export_dir, str(version))):
            version += 1
    final = os.path.join(export_dir, str(version))
    if os.path.exists(final):
        if source_checkpoint and _source_of(final) == checkpoint_source(source_checkpoint):
            return final  # a rerun of this export (e.g. killed after its rename)
        raise FileExistsError(
            f"{final} already exists"
            + (" and was exported from another checkpoint" if source_checkpoint else "")
            + ": choose another --version"
        )
    requests = warmup_requests(warmup_records, model_name) if warmup_records else []
    tmp = os.path.join(export_dir, f"{tmp_prefix()}{os.getpid()}-{version}")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    try:
        module = ServingModule(model)
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        if requests:
            _write_warmup(tmp, requests)
        if source_checkpoint:
            os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
            with open(os.path.join(tmp, SOURCE_FILE), "w") as f:
                json.dump(checkpoint_source(source_checkpoint), f, indent=2, sort_keys=True)
        os.rename(tmp, final)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk or an error: no partial copy
        raise
    return final
