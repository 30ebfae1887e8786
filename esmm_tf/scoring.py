"""Scoring grouped records and writing per-impression predictions.

``record_scores`` turns a batch of serialized grouped records (the converted
TFRecords of any day's logs) into per-impression ``sample_id`` and the model's
``ctr``, ``cvr``, ``ctcvr``; the SavedModel export carries it as the
function ``score_records`` (not a serving signature), so that
``esmm_tf.predict`` scores converted logs the same way from a run or from an
export. ``write_predictions`` streams a split's records through a scorer into
a CSV file, atomically.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import tensorflow as tf

from esmm_tf import features as F
from esmm_tf import files as files_lib
from esmm_tf import input_pipeline

PREDICTION_COLUMNS = F.PREDICTION_COLUMNS
RECORD_BATCH_IMPRESSIONS = 8192  # impressions per scoring call (whole records)
_PROGRESS_SECONDS = 10.0


def record_scores(model, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """{sample_id, ctr, cvr, ctcvr} per impression of a [n] batch of serialized
    grouped records (labels and ground truth, if present, are ignored)."""
    parsed = tf.io.parse_example(serialized, input_pipeline.grouped_spec(False))
    outputs = model(input_pipeline.grouped_to_inputs(parsed), training=False)
    scores = {F.SAMPLE_ID: parsed[F.SAMPLE_ID].values}
    scores.update({k: outputs[k] for k in F.OUTPUT_KEYS})
    return scores


def records_scorer(model):
    """``record_scores`` for ``model`` as a tf.function traced once."""
    return tf.function(
        lambda serialized: record_scores(model, serialized),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )


def _format(scores: dict) -> str:
    ids = scores[F.SAMPLE_ID].astype(np.int64)
    probs = np.stack([scores[k].astype(np.float64) for k in F.OUTPUT_KEYS], 1)
    return "".join(
        f"{i},{a:.7g},{b:.7g},{c:.7g}\n"
        for i, (a, b, c) in zip(ids.tolist(), probs.tolist(), strict=True)
    )


def write_predictions(
    scorer, files: list[str], output: str, expected_impressions: int | None = None
) -> int:
    """Scores every impression of ``files`` (in file order) with ``scorer``
    (serialized records -> ``record_scores``' dict) into the CSV ``output``
    (``sample_id,ctr,cvr,ctcvr``, a header line first), written under a
    temporary name and renamed when complete. Prints progress to stderr.
    Returns the number of impressions."""
    batches = input_pipeline.pack_records(
        tf.data.TFRecordDataset(files), RECORD_BATCH_IMPRESSIONS
    ).prefetch(2)
    tmp = f"{output}.tmp-{os.getpid()}"
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    files_lib.remove_stale_temporaries(f"{output}.tmp-")  # a killed earlier run's
    done = 0
    start = last = time.monotonic()
    try:
        with open(tmp, "w") as f:
            f.write(",".join(PREDICTION_COLUMNS) + "\n")
            for serialized in batches:
                scores = {k: v.numpy() for k, v in scorer(serialized).items()}
                f.write(_format(scores))
                done += scores[F.SAMPLE_ID].size
                if time.monotonic() - last > _PROGRESS_SECONDS:
                    last = time.monotonic()
                    _progress(done, last - start, expected_impressions)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _progress(done, time.monotonic() - start, expected_impressions, final=True)
    return done


def _progress(done: int, seconds: float, expected: int | None, final: bool = False) -> None:
    rate = done / max(seconds, 1e-9)
    line = f"  {done:,} impressions, {int(rate):,} imp/s"
    if expected and not final:
        eta = max(expected - done, 0) / max(rate, 1e-9)
        line += f", {done / expected:.0%}, ETA {int(eta)} s"
    if final:
        line = f"scored {done:,} impressions in {seconds:.1f} s ({int(rate):,} imp/s)"
    print(line, file=sys.stderr, flush=True)
