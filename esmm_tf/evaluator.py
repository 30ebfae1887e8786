"""Exact evaluation over a whole split (streaming, one pass).

Metric names (no mislabelling):

* ``ctr_auc``: pCTR vs click, all impressions;
* ``cvr_auc``: pCVR vs conversion on *clicked* impressions (the paper's CVR AUC);
* ``ctcvr_auc``: pCTCVR vs click*conversion, all impressions;
* ``cvr_auc_entire_space`` (ground truth only): pCVR vs the counterfactual
  conversion over all impressions, i.e. how well pCVR ranks the whole space;
* ``calibration``: per head, ``observed``: mean prediction vs the observed
  rate on the same impressions (``cvr``: the clicked ones), with the log loss;
  ``ground_truth`` (synthetic data only): mean prediction vs the mean true
  probability over *all* impressions (``cvr``: the entire space).

AUCs are exact (rank-based, ties averaged) over every impression of the split,
not bucketed and not averaged over batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from esmm_tf import features as F
from esmm_tf import input_pipeline
from esmm_tf.metrics import AucAccumulator, CalibrationAccumulator
from esmm_tf.progress import Progress


class Evaluator:
    """Accumulates predictions and labels batch by batch."""

    def __init__(self) -> None:
        self.auc = {k: AucAccumulator() for k in ("ctr", "cvr", "ctcvr", "cvr_entire_space")}
        self.observed = {k: CalibrationAccumulator() for k in F.OUTPUT_KEYS}
        self.truth = {k: CalibrationAccumulator() for k in F.OUTPUT_KEYS}
        self.impressions = 0
        self.clicks = 0
        self.conversions = 0
        self.has_ground_truth = False

    def update(self, labels: dict, outputs: dict) -> None:
        click = np.asarray(labels[F.CLICK]).reshape(-1)
        conversion = np.asarray(labels[F.CONVERSION]).reshape(-1)
        ctcvr_label = click * conversion
        ctr, cvr, ctcvr = (np.asarray(outputs[k]).reshape(-1) for k in F.OUTPUT_KEYS)
        clicked = click > 0
        self.impressions += click.size
        self.clicks += int(clicked.sum())
        self.conversions += int(ctcvr_label.sum())
        self.auc["ctr"].update(click, ctr)
        self.auc["cvr"].update(conversion, cvr, mask=clicked)
        self.auc["ctcvr"].update(ctcvr_label, ctcvr)
        self.observed[F.CTR].update(ctr, click)
        self.observed[F.CVR].update(cvr, conversion, mask=clicked)
        self.observed[F.CTCVR].update(ctcvr, ctcvr_label)
        if F.GT_PCTR in labels:
            self.has_ground_truth = True
            pctr = np.asarray(labels[F.GT_PCTR]).reshape(-1)
            pcvr = np.asarray(labels[F.GT_PCVR]).reshape(-1)
            self.auc["cvr_entire_space"].update(np.asarray(labels[F.GT_CONVERSION]), cvr)
            self.truth[F.CTR].update(ctr, pctr)
            self.truth[F.CVR].update(cvr, pcvr)
            self.truth[F.CTCVR].update(ctcvr, pctr * pcvr)

    def result(self) -> dict:
        metrics = {
            "ctr_auc": self.auc["ctr"].result(),
            "cvr_auc": self.auc["cvr"].result(),
            "ctcvr_auc": self.auc["ctcvr"].result(),
            "impressions": self.impressions,
            "clicks": self.clicks,
            "conversions": self.conversions,
            "calibration": {k: {"observed": self.observed[k].result()} for k in F.OUTPUT_KEYS},
        }
        if self.has_ground_truth:
            metrics["cvr_auc_entire_space"] = self.auc["cvr_entire_space"].result()
            for k in F.OUTPUT_KEYS:
                metrics["calibration"][k]["ground_truth"] = self.truth[k].result()
        return metrics


class RepeatedPasses:
    """Passes over the same finite dataset (the evaluations during training)
    without creating an iterator for each: creating one instantiates the
    pipeline's functions, ~0.6 s for the parser whatever the data size. The
    first pass counts the batches; later passes read that many from one
    iterator over ``dataset.repeat()`` (the dataset must be deterministic, so
    that every pass holds the same batches). A pass left unfinished drops that
    iterator, so the next pass starts at the beginning again. ``cache``: the
    first pass keeps the batches in memory and later passes read them from
    there, not from the files (for a small sample: the evaluations during
    training read ~10x the sample's size from train files to find their
    validation requests, ~1-2 s each at 200k impressions)."""

    def __init__(self, dataset: tf.data.Dataset, cache: bool = False):
        self.dataset = dataset.cache() if cache else dataset
        self.batches: int | None = None
        self._iterator = None

    def __iter__(self):
        return self._first_pass() if self.batches is None else self._later_pass()

    def _first_pass(self):
        n = 0
        for batch in self.dataset:
            n += 1
            yield batch
        self.batches = n

    def _later_pass(self):
        if self._iterator is None:
            self._iterator = iter(self.dataset.repeat())
        done = 0
        try:
            for _ in range(self.batches):
                yield next(self._iterator)
                done += 1
        finally:
            if done != self.batches:
                self._iterator = None


def predict_function(model):
    """``model`` in inference mode as a tf.function traced once for any batch."""
    inputs_spec, _ = input_pipeline.batch_spec()
    return tf.function(lambda x: model(x, training=False), input_signature=[inputs_spec])


def evaluate(model, dataset: Iterable, predict_fn=None, progress: Progress | None = None) -> dict:
    """Runs ``model`` over ``dataset`` ((inputs, labels) batches) once,
    reporting the impressions done to ``progress`` (and closing it) if given."""
    if predict_fn is None:
        predict_fn = predict_function(model)
    evaluator = Evaluator()
    start = time.monotonic()
    for inputs, labels in dataset:
        outputs = predict_fn(inputs)
        evaluator.update(
            {k: v.numpy() for k, v in labels.items()},
            {k: outputs[k].numpy() for k in F.OUTPUT_KEYS},
        )
        if progress is not None:
            progress.update(evaluator.impressions)
    if progress is not None:
        progress.close()
    metrics = evaluator.result()
    seconds = time.monotonic() - start
    metrics["seconds"] = round(seconds, 2)
    metrics["impressions_per_second"] = round(evaluator.impressions / max(seconds, 1e-9), 1)
    return metrics


# On which impressions each head's observed rate is measured (the labels' space).
SCORED_ON = {F.CTR: "all", F.CVR: "clicked", F.CTCVR: "all"}
NO_VALUE = "\u2013"  # an en dash where a number does not exist (no ground truth, one class)


def _number(value, digits: int) -> str:
    """``value`` with ``digits`` decimals, or an en dash for None / nan."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_VALUE
    return f"{value:.{digits}f}"


def calibration_rows(metrics: dict) -> list[tuple[str, str, str, str, str, str]]:
    """Per head: (head, scored on, mean pred, observed rate, entire-space mean
    pred, mean true probability), formatted. Each pair compares like with like:
    the observed rate with the mean prediction on the *same* impressions (for
    ``cvr`` the clicked ones), and, with ground truth, the mean true
    probability with the mean prediction over *all* impressions."""
    rows = []
    for k in F.OUTPUT_KEYS:
        cal = metrics["calibration"][k]
        truth = cal.get("ground_truth", {})
        rows.append(
            (
                k,
                SCORED_ON[k],
                _number(cal["observed"]["mean_pred"], 5),
                _number(cal["observed"]["mean_target"], 5),
                _number(truth.get("mean_pred"), 5),
                _number(truth.get("mean_target"), 5),
            )
        )
    return rows


def format_table(metrics: dict, title: str = "") -> str:
    """A plain-text results table: exact AUCs, then calibration."""
    rows = [
        ("CTR AUC (all impressions)", metrics["ctr_auc"]),
        ("CVR AUC (clicked impressions)", metrics["cvr_auc"]),
        ("CTCVR AUC (all impressions)", metrics["ctcvr_auc"]),
    ]
    if "cvr_auc_entire_space" in metrics:
        rows.append(("entire-space CVR AUC (ground truth)", metrics["cvr_auc_entire_space"]))
    width = max(len(r[0]) for r in rows)
    lines = [title] if title else []
    lines.append(
        f"{metrics['impressions']:,} impressions, {metrics['clicks']:,} clicks, "
        f"{metrics['conversions']:,} conversions"
    )
    lines += [f"  {name:<{width}}  {_number(value, 4)}" for name, value in rows]
    lines.append(
        "  calibration: mean prediction vs the observed rate on the same impressions"
        " | vs the truth on all"
    )
    header = ("", "scored on", "mean pred", "observed", "pred (all)", "true (all)")
    cells = [header] + calibration_rows(metrics)
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        left = "  ".join(
            [f"{row[0]:<{widths[0]}}", f"{row[1]:<{widths[1]}}"]
            + [f"{row[i]:>{widths[i]}}" for i in (2, 3)]
        )
        right = "  ".join(f"{row[i]:>{widths[i]}}" for i in (4, 5))
        lines.append(f"    {left}  |  {right}".rstrip())
    if "cvr_auc_entire_space" not in metrics:
        lines.append(f"    ({NO_VALUE}: no ground truth in this data)")
    return "\n".join(lines)
