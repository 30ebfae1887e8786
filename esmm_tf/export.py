"""SavedModel export for TensorFlow Serving.

Layout: ``<export_dir>/<version>/`` with ``saved_model.pb``, ``variables/``
and ``assets/`` (the vocabulary files: the raw-id lookup is inside the
model). The version is an integer (seconds since the epoch unless given), as
TensorFlow Serving expects. The directory is written under a hidden temporary
name and renamed when complete, so a server polling ``export_dir`` never sees
a partial version.

Signature ``serving_default``: input ``examples``, a [batch] string tensor of
serialized per-impression ``tf.train.Example``s holding ``ids/<field>`` (int64
raw ids) and, for weighted fields, ``w/<field>`` (float) — no labels;
outputs ``ctr``, ``cvr``, ``ctcvr``, float32 of shape [batch].
"""

from __future__ import annotations

import os
import shutil
import time

import tensorflow as tf

from esmm_tf import features as F
from esmm_tf import input_pipeline

SIGNATURE_INPUT = "examples"


class ServingModule(tf.Module):
    """Wraps a trained model with the serving signature."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self._spec = input_pipeline.serving_spec()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SIGNATURE_INPUT)])
    def serve(self, examples):
        parsed = tf.io.parse_example(examples, self._spec)
        outputs = self.model(input_pipeline.serving_to_inputs(parsed), training=False)
        return {k: tf.identity(outputs[k], name=k) for k in F.OUTPUT_KEYS}


def export_saved_model(model, export_dir: str, version: int | None = None) -> str:
    """Writes ``export_dir/<version>`` atomically; returns its path."""
    os.makedirs(export_dir, exist_ok=True)
    if version is None:
        version = int(time.time())
        while os.path.exists(os.path.join(export_dir, str(version))):
            version += 1
    final = os.path.join(export_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} already exists")
    tmp = os.path.join(export_dir, f".tmp-{version}-{os.getpid()}")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    module = ServingModule(model)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
    os.rename(tmp, final)
    return final
