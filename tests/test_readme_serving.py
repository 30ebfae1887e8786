"""The README's serving examples run as written: the Python block against the
export, the REST and gRPC blocks against a stand-in for TensorFlow Serving
that decodes requests as the server does and calls the export's signatures."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from esmm_tf import features as F
from esmm_tf.model import build_model
from esmm_tf.serving import export_saved_model
from tests.helpers import ROOT, make_tiny_config

pytestmark = pytest.mark.slow  # end-to-end runs: `make test-fast` leaves them out


def readme_block(after_heading: str, containing: str) -> str:
    """The first ```python block after ``after_heading`` that contains ``containing``."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text[text.index(after_heading) :]
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        if containing in block:
            return block
    raise AssertionError(f"no python block with {containing!r} after {after_heading!r}")


@pytest.fixture(scope="module")
def version_dir(tiny_data_dir, tmp_path_factory):
    model = build_model(make_tiny_config(tiny_data_dir))
    return export_saved_model(model, str(tmp_path_factory.mktemp("export")))


@pytest.fixture(scope="module")
def python_example(version_dir):
    """The README's Python block, run; its namespace."""
    code = readme_block("### In Python", "saved_model.load").replace(
        "EXPORT/<version>", version_dir
    )
    namespace: dict = {}
    exec(compile(code, "README.md (In Python)", "exec"), namespace)
    return namespace


def test_python_example(python_example):
    out, ranked = python_example["out"], python_example["ranked"]
    for key in F.OUTPUT_KEYS:
        assert out[key].shape == (2,)
        np.testing.assert_allclose(out[key].numpy(), ranked[key].numpy(), rtol=0, atol=1e-6)


class FakeServer:
    """TensorFlow Serving's request decoding, for one model named "esmm"."""

    def __init__(self, version_dir: str):
        self.model = tf.saved_model.load(version_dir)

    def _signature(self, name: str | None):
        return self.model.signatures[name or "serving_default"]

    @staticmethod
    def _decode(value):
        if isinstance(value, dict):
            assert list(value) == ["b64"]
            return base64.b64decode(value["b64"])
        if isinstance(value, list):
            return [FakeServer._decode(v) for v in value]
        return value

    def rest(self, url: str, body: dict) -> dict:
        assert url == "http://localhost:8501/v1/models/esmm:predict"
        signature = self._signature(body.get("signature_name"))
        _, specs = signature.structured_input_signature
        if "instances" in body:  # row format: a single input may be given bare
            rows = body["instances"]
            if len(specs) == 1:
                name = next(iter(specs))
                values = [r[name] if isinstance(r, dict) and name in r else r for r in rows]
                inputs = {name: [self._decode(v) for v in values]}
            else:
                inputs = {k: [self._decode(r[k]) for r in rows] for k in specs}
            out = signature(**{k: tf.constant(v) for k, v in inputs.items()})
            n = len(rows)
            return {
                "predictions": [{k: float(v.numpy()[i]) for k, v in out.items()} for i in range(n)]
            }
        inputs = {k: tf.constant(self._decode(v)) for k, v in body["inputs"].items()}
        out = signature(**inputs)
        return {"outputs": {k: v.numpy().tolist() for k, v in out.items()}}

    def grpc_predict(self, request, timeout=None):
        from tensorflow_serving.apis import predict_pb2

        assert request.model_spec.name == "esmm"
        signature = self._signature(request.model_spec.signature_name)
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        response = predict_pb2.PredictResponse()
        for key, value in signature(**inputs).items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


def test_rest_example(python_example, version_dir, monkeypatch, capsys):
    import urllib.request

    server = FakeServer(version_dir)

    def urlopen(request, timeout=None):
        assert request.get_header("Content-type") == "application/json"
        body = json.loads(request.data)
        return io.BytesIO(json.dumps(server.rest(request.full_url, body)).encode())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    namespace = dict(python_example)
    code = readme_block("### TensorFlow Serving", "urllib.request")
    exec(compile(code, "README.md (REST)", "exec"), namespace)
    want = python_example["out"]["ctcvr"].numpy()
    np.testing.assert_allclose(
        [p["ctcvr"] for p in namespace["predictions"]], want, rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(namespace["outputs"]["ctcvr"], want, rtol=0, atol=1e-6)


def test_grpc_example(python_example, version_dir, monkeypatch):
    server = FakeServer(version_dir)
    grpc = types.ModuleType("grpc")
    grpc.insecure_channel = lambda target: ("channel", target)
    monkeypatch.setitem(sys.modules, "grpc", grpc)
    services = types.ModuleType("tensorflow_serving.apis.prediction_service_pb2_grpc")

    class Stub:
        def __init__(self, channel):
            assert channel == ("channel", "localhost:8500")
            self.Predict = server.grpc_predict

    services.PredictionServiceStub = Stub
    monkeypatch.setitem(sys.modules, services.__name__, services)
    import tensorflow_serving.apis as apis

    monkeypatch.setattr(apis, "prediction_service_pb2_grpc", services, raising=False)
    namespace = dict(python_example)
    code = readme_block("### TensorFlow Serving", "PredictRequest")
    exec(compile(code, "README.md (gRPC)", "exec"), namespace)
    want = python_example["ranked"]["ctcvr"].numpy()
    np.testing.assert_allclose(namespace["ctcvr"], want, rtol=0, atol=1e-6)
