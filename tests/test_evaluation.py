"""esmm_tf.evaluator: which impressions and labels each metric uses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import log_loss, roc_auc_score

from esmm_tf import evaluator
from esmm_tf import features as F


def hand_made(n: int = 4000, seed: int = 0) -> tuple[dict, dict]:
    """Labels and predictions where the masks matter.

    * pCVR is informative on clicked impressions but high on many unclicked
      ones, so an all-impression "CVR AUC" differs from the clicked-only one;
    * some unclicked impressions carry conversion=1 (as a noisy log might), so
      CTCVR's label must be click * conversion, not conversion;
    * the counterfactual gt/conversion differs from conversion.
    """
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.2).astype(np.float32)
    conversion = ((rng.random(n) < 0.3) & (click > 0)).astype(np.float32)
    noisy = (click == 0) & (rng.random(n) < 0.05)
    conversion[noisy] = 1.0
    ctr = np.clip(0.15 + 0.2 * click + 0.1 * rng.standard_normal(n), 0.01, 0.99)
    cvr = np.clip(0.2 + 0.3 * conversion + 0.2 * rng.standard_normal(n), 0.01, 0.99)
    cvr[click == 0] = np.clip(cvr[click == 0] + 0.3, 0.01, 0.99)
    cvr = np.round(cvr, 2)  # ties, averaged by an exact AUC
    gt_pctr = rng.uniform(0.05, 0.5, n)
    gt_pcvr = rng.uniform(0.05, 0.5, n)
    gt_conversion = (rng.random(n) < gt_pcvr).astype(np.float32)
    labels = {
        F.CLICK: click,
        F.CONVERSION: conversion,
        F.GT_PCTR: gt_pctr.astype(np.float32),
        F.GT_PCVR: gt_pcvr.astype(np.float32),
        F.GT_CONVERSION: gt_conversion,
    }
    outputs = {
        F.CTR: ctr.astype(np.float32),
        F.CVR: cvr.astype(np.float32),
        F.CTCVR: (ctr * cvr).astype(np.float32),
    }
    return labels, outputs


def one_shot(labels, outputs) -> dict:
    acc = evaluator.Evaluator()
    acc.update(labels, outputs)
    return acc.result()


def test_cvr_auc_uses_clicked_impressions_only():
    labels, outputs = hand_made()
    clicked = labels[F.CLICK] > 0
    got = one_shot(labels, outputs)["cvr_auc"]
    want = roc_auc_score(labels[F.CONVERSION][clicked], outputs[F.CVR][clicked])
    everywhere = roc_auc_score(labels[F.CONVERSION], outputs[F.CVR])
    assert got == pytest.approx(want, abs=1e-6)
    assert abs(everywhere - want) > 0.05  # the mask matters in this case


def test_ctr_and_ctcvr_auc_use_all_impressions_and_click_times_conversion():
    labels, outputs = hand_made()
    metrics = one_shot(labels, outputs)
    ctcvr_label = labels[F.CLICK] * labels[F.CONVERSION]
    assert metrics["ctr_auc"] == pytest.approx(
        roc_auc_score(labels[F.CLICK], outputs[F.CTR]), abs=1e-6
    )
    want = roc_auc_score(ctcvr_label, outputs[F.CTCVR])
    assert metrics["ctcvr_auc"] == pytest.approx(want, abs=1e-6)
    assert abs(roc_auc_score(labels[F.CONVERSION], outputs[F.CTCVR]) - want) > 0.01
    assert metrics["impressions"] == labels[F.CLICK].size
    assert metrics["clicks"] == int(labels[F.CLICK].sum())
    assert metrics["conversions"] == int(ctcvr_label.sum())
    assert metrics["conversions"] < int(labels[F.CONVERSION].sum())


def test_entire_space_cvr_auc_uses_ground_truth_conversion():
    labels, outputs = hand_made()
    metrics = one_shot(labels, outputs)
    want = roc_auc_score(labels[F.GT_CONVERSION], outputs[F.CVR])
    assert metrics["cvr_auc_entire_space"] == pytest.approx(want, abs=1e-6)
    assert abs(metrics["cvr_auc_entire_space"] - metrics["cvr_auc"]) > 0.05


def test_calibration_uses_the_same_impressions_as_the_aucs():
    labels, outputs = hand_made()
    cal = one_shot(labels, outputs)["calibration"]
    clicked = labels[F.CLICK] > 0
    cvr = cal[F.CVR]["observed"]
    assert cvr["count"] == int(clicked.sum())
    assert cvr["mean_pred"] == pytest.approx(outputs[F.CVR][clicked].mean(), rel=1e-6)
    assert cvr["mean_target"] == pytest.approx(labels[F.CONVERSION][clicked].mean(), rel=1e-6)
    assert cvr["log_loss"] == pytest.approx(
        log_loss(labels[F.CONVERSION][clicked], outputs[F.CVR][clicked]), rel=1e-5
    )
    ctcvr = cal[F.CTCVR]["observed"]
    assert ctcvr["count"] == labels[F.CLICK].size
    assert ctcvr["mean_target"] == pytest.approx(
        (labels[F.CLICK] * labels[F.CONVERSION]).mean(), rel=1e-6
    )
    truth = cal[F.CTCVR]["ground_truth"]
    assert truth["mean_target"] == pytest.approx(
        (labels[F.GT_PCTR] * labels[F.GT_PCVR]).mean(), rel=1e-5
    )
    assert cal[F.CVR]["ground_truth"]["count"] == labels[F.CLICK].size  # entire space


def test_chunked_updates_equal_one_shot():
    labels, outputs = hand_made()
    want = one_shot(labels, outputs)
    acc = evaluator.Evaluator()
    bounds = [0, 1, 17, 500, 501, 1999, 3000, 4000]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        acc.update(
            {k: v[lo:hi] for k, v in labels.items()}, {k: v[lo:hi] for k, v in outputs.items()}
        )
    got = acc.result()
    assert got.keys() == want.keys()
    for key in ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    for key in ("impressions", "clicks", "conversions"):
        assert got[key] == want[key]
    for head in F.OUTPUT_KEYS:
        for kind in ("observed", "ground_truth"):
            for stat, value in want["calibration"][head][kind].items():
                assert got["calibration"][head][kind][stat] == pytest.approx(value, rel=1e-9)


def test_without_ground_truth_there_is_no_entire_space_auc():
    labels, outputs = hand_made()
    labels = {k: labels[k] for k in F.LABEL_KEYS}
    metrics = one_shot(labels, outputs)
    assert "cvr_auc_entire_space" not in metrics
    assert "ground_truth" not in metrics["calibration"][F.CVR]
    table = evaluator.format_table(metrics)
    assert "entire-space" not in table
    assert "nan" not in table
    cvr_row = next(line.split() for line in table.splitlines() if line.split()[:1] == ["cvr"])
    assert cvr_row[-2:] == [evaluator.NO_VALUE, evaluator.NO_VALUE]


def test_calibration_table_compares_like_with_like():
    labels, outputs = hand_made()
    metrics = one_shot(labels, outputs)
    table = evaluator.format_table(metrics)
    cvr_row = next(line.split() for line in table.splitlines() if line.split()[:1] == ["cvr"])
    clicked = labels[F.CLICK] > 0
    # cvr, scored on clicked impressions: mean pCVR there vs the observed CVR there ...
    assert cvr_row[1] == "clicked"
    assert float(cvr_row[2]) == pytest.approx(outputs[F.CVR][clicked].mean(), abs=1e-5)
    assert float(cvr_row[3]) == pytest.approx(labels[F.CONVERSION][clicked].mean(), abs=1e-5)
    # ... and over the entire space: mean pCVR vs the mean true pCVR, all impressions.
    assert cvr_row[4] == "|"
    assert float(cvr_row[5]) == pytest.approx(outputs[F.CVR].mean(), abs=1e-5)
    assert float(cvr_row[6]) == pytest.approx(labels[F.GT_PCVR].mean(), abs=1e-5)
    assert "nan" not in table


def test_cvr_auc_is_nan_without_clicked_conversions():
    labels, outputs = hand_made()
    labels[F.CONVERSION] = np.zeros_like(labels[F.CONVERSION])
    metrics = one_shot(labels, outputs)
    assert math.isnan(metrics["cvr_auc"])
    assert math.isnan(metrics["ctcvr_auc"])
    assert not math.isnan(metrics["ctr_auc"])


def test_evaluate_streams_batches_through_the_predict_fn():
    labels, outputs = hand_made(n=600)
    batches = [
        (
            {"row": tf.range(lo, lo + 200)},
            {k: tf.constant(v[lo : lo + 200]) for k, v in labels.items()},
        )
        for lo in (0, 200, 400)
    ]

    def predict(inputs):
        rows = inputs["row"].numpy()
        return {k: tf.constant(v[rows]) for k, v in outputs.items()}

    metrics = evaluator.evaluate(None, batches, predict)
    want = one_shot(labels, outputs)
    for key in ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space", "impressions"):
        assert metrics[key] == pytest.approx(want[key], abs=1e-12)
    assert metrics["impressions_per_second"] > 0


def test_format_table_names_the_metrics_honestly():
    labels, outputs = hand_made()
    metrics = one_shot(labels, outputs)
    table = evaluator.format_table(metrics, "title")
    assert table.splitlines()[0] == "title"
    lines = table.splitlines()
    cvr_line = next(line for line in lines if "CVR AUC (clicked impressions)" in line)
    assert cvr_line.split()[-1] == f"{metrics['cvr_auc']:.4f}"
    assert "CTCVR AUC (all impressions)" in table
    assert "entire-space CVR AUC (ground truth)" in table


def test_repeated_passes_hold_the_same_batches_from_one_iterator():
    """Every pass yields the dataset's batches in order; passes after the
    first share one iterator over the repeated dataset; a pass left
    unfinished does not shift the next one."""
    from esmm_tf.evaluator import RepeatedPasses

    dataset = tf.data.Dataset.range(7).batch(3)  # [0 1 2] [3 4 5] [6]
    passes = RepeatedPasses(dataset)
    first = [b.numpy().tolist() for b in passes]
    assert first == [[0, 1, 2], [3, 4, 5], [6]] and passes.batches == 3
    second = [b.numpy().tolist() for b in passes]
    iterator = passes._iterator
    third = [b.numpy().tolist() for b in passes]
    assert second == third == first
    assert passes._iterator is iterator is not None  # not re-created
    for batch in passes:  # an unfinished pass
        assert batch.numpy().tolist() == [0, 1, 2]
        break
    assert [b.numpy().tolist() for b in passes] == first
    empty = RepeatedPasses(dataset.take(0))
    assert list(empty) == [] and list(empty) == [] and empty.batches == 0


def test_repeated_passes_with_cache_read_the_files_once(tmp_path):
    """``cache``: later passes hold the first pass's batches without reading
    the files again (they may be gone); without it, they read them."""
    from esmm_tf.evaluator import RepeatedPasses

    for cache in (True, False):
        path = tmp_path / f"lines-{cache}.txt"
        path.write_text("".join(f"{i}\n" for i in range(7)))
        passes = RepeatedPasses(tf.data.TextLineDataset(str(path)).batch(3), cache=cache)
        first = [b.numpy().tolist() for b in passes]
        assert len(first) == 3
        path.write_text("changed\n")  # what a pass that reads the file again would see
        second = [b.numpy().tolist() for b in passes]
        if cache:
            assert second == first
        else:
            assert second != first
