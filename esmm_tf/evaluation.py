"""Exact evaluation over a whole split (streaming, one pass).

Metric names (no mislabelling):

* ``ctr_auc``: pCTR vs click, all impressions;
* ``cvr_auc``: pCVR vs conversion on *clicked* impressions (the paper's CVR AUC);
* ``ctcvr_auc``: pCTCVR vs click*conversion, all impressions;
* ``cvr_auc_entire_space`` (ground truth only): pCVR vs the counterfactual
  conversion over all impressions, i.e. how well pCVR ranks the whole space;
* ``calibration``: per head, mean prediction vs the observed rate on the same
  impressions (and vs the true probability when there is ground truth), with
  the log loss.

AUCs are exact (rank-based, ties averaged) over every impression of the split,
not bucketed and not averaged over batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from esmm_tf import features as F
from esmm_tf import input_pipeline
from esmm_tf.metrics import AucAccumulator, CalibrationAccumulator


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


def predict_function(model):
    """``model`` in inference mode as a tf.function traced once for any batch."""
    inputs_spec, _ = input_pipeline.batch_spec()
    return tf.function(lambda x: model(x, training=False), input_signature=[inputs_spec])


def evaluate(model, dataset: Iterable, predict_fn=None) -> dict:
    """Runs ``model`` over ``dataset`` ((inputs, labels) batches) once."""
    if predict_fn is None:
        predict_fn = predict_function(model)
    evaluator = Evaluator()
    start = time.time()
    for inputs, labels in dataset:
        outputs = predict_fn(inputs)
        evaluator.update(
            {k: v.numpy() for k, v in labels.items()},
            {k: outputs[k].numpy() for k in F.OUTPUT_KEYS},
        )
    metrics = evaluator.result()
    seconds = time.time() - start
    metrics["seconds"] = round(seconds, 2)
    metrics["impressions_per_second"] = round(evaluator.impressions / max(seconds, 1e-9), 1)
    return metrics


def format_table(metrics: dict, title: str = "") -> str:
    """A plain-text results table."""
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
    lines += [f"  {name:<{width}}  {value:.4f}" for name, value in rows]
    lines.append(f"  {'calibration':<{width}}  mean pred / observed / true")
    for k in F.OUTPUT_KEYS:
        cal = metrics["calibration"][k]
        true = cal.get("ground_truth", {}).get("mean_target", float("nan"))
        lines.append(
            f"    {k:<{width - 2}}  {cal['observed']['mean_pred']:.5f} / "
            f"{cal['observed']['mean_target']:.5f} / {true:.5f}"
        )
    return "\n".join(lines)
