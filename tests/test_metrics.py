"""Tests for esmm_tf.metrics: exact AUC against sklearn, calibration by hand."""

from __future__ import annotations

import gc
import math
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from esmm_tf.metrics import AucAccumulator, CalibrationAccumulator, calibration, exact_auc


def test_auc_hand_computed_with_ties():
    # Pairs (pos, neg): (0.8,0.1)=1, (0.8,0.8)=.5, (0.8,0.4)=1, (0.4,0.1)=1,
    # (0.4,0.8)=0, (0.4,0.4)=.5 -> 4 / 6.
    labels = [1, 0, 0, 1, 0]
    scores = [0.8, 0.1, 0.8, 0.4, 0.4]
    assert exact_auc(labels, scores) == pytest.approx(4 / 6, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_random(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    labels = rng.random(n) < 0.1
    scores = rng.normal(size=n) + labels
    assert exact_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)


@pytest.mark.parametrize("levels", [1, 2, 5, 50])
def test_auc_matches_sklearn_heavy_ties(levels):
    rng = np.random.default_rng(levels)
    n = 20000
    labels = (rng.random(n) < 0.3).astype(np.int64)
    scores = rng.integers(0, levels, size=n) / levels + 0.05 * labels * rng.integers(0, 2, size=n)
    assert exact_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)


def test_auc_float32_scores_and_2d_shapes():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, size=(100, 3))
    scores = rng.random((100, 3)).astype(np.float32)
    expected = roc_auc_score(labels.ravel(), scores.ravel())
    assert exact_auc(labels, scores) == pytest.approx(expected, abs=1e-6)


def test_auc_nan_on_one_class_or_empty():
    assert math.isnan(exact_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(exact_auc([0, 0], [0.1, 0.2]))
    assert math.isnan(exact_auc([], []))


def test_auc_bad_input():
    with pytest.raises(ValueError, match="0 or 1"):
        exact_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="length"):
        exact_auc([0, 1], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        exact_auc([0, 1], [0.1, float("nan")])


def test_accumulator_in_chunks_equals_one_shot():
    rng = np.random.default_rng(3)
    n = 10000
    labels = (rng.random(n) < 0.2).astype(np.int64)
    scores = (rng.random(n) + 0.3 * labels).astype(np.float32)
    scores[::7] = 0.5  # ties across chunks
    acc = AucAccumulator()
    for start in range(0, n, 999):
        acc.update(labels[start : start + 999], scores[start : start + 999])
    assert acc.count == n
    assert acc.positives == int(labels.sum())
    assert acc.result() == pytest.approx(exact_auc(labels, scores), abs=1e-12)
    assert acc.result() == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    # A second result() (after consolidation) and further updates still work.
    acc.update([1, 0], [0.9, 0.1])
    expected = exact_auc(np.append(labels, [1, 0]), np.append(scores, [0.9, 0.1]))
    assert acc.result() == pytest.approx(expected, abs=1e-12)


def test_accumulator_mask_selects_subset():
    rng = np.random.default_rng(4)
    click = rng.random(3000) < 0.5
    conversion = click & (rng.random(3000) < 0.3)
    score = rng.random(3000) + 0.2 * conversion
    acc = AucAccumulator()
    for start in range(0, 3000, 1000):
        sl = slice(start, start + 1000)
        acc.update(conversion[sl], score[sl], mask=click[sl])
    assert acc.count == int(click.sum())
    expected = roc_auc_score(conversion[click], score[click])
    assert acc.result() == pytest.approx(expected, abs=1e-6)


def test_accumulator_empty_and_one_class():
    acc = AucAccumulator()
    assert math.isnan(acc.result())
    acc.update([0, 0], [0.1, 0.2])
    assert math.isnan(acc.result())
    acc.reset()
    assert acc.count == 0


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1000, 50_000])
def test_spilled_runs_give_the_exact_auc(tmp_path, chunk):
    """Past ``chunk`` entries the accumulator sorts them into runs on disk and
    merges the runs at the end: the AUC is exactly the in-memory one, with
    ties inside a run, across runs and across the merge's rounds, and with
    update sizes that do not divide the chunk."""
    rng = np.random.default_rng(chunk)
    n = 5000
    labels = rng.random(n) < 0.3
    # Few distinct scores, so that large tied groups straddle runs and rounds.
    scores = np.round(rng.random(n) + 0.4 * labels, 1).astype(np.float32)
    scores[rng.random(n) < 0.3] = 0.5
    acc = AucAccumulator(chunk=chunk, spill_dir=str(tmp_path))
    start = 0
    while start < n:
        step = int(rng.integers(1, 300))
        acc.update(labels[start : start + step], scores[start : start + step])
        start += step
    # A run is written each time the held entries reach the chunk.
    assert n // (chunk + 299) <= acc.runs <= n // chunk
    assert acc.result() == exact_auc(labels, scores)  # exactly: integer counts, one division
    assert acc.result() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_spilled_runs_with_masks_and_continuous_scores(tmp_path):
    rng = np.random.default_rng(5)
    n = 20_000
    click = rng.random(n) < 0.4
    conversion = click & (rng.random(n) < 0.25)
    score = (rng.random(n) + 0.3 * conversion).astype(np.float32)
    acc = AucAccumulator(chunk=999, spill_dir=str(tmp_path))
    for start in range(0, n, 512):
        sl = slice(start, start + 512)
        acc.update(conversion[sl], score[sl], mask=click[sl])
    assert acc.count == int(click.sum())
    assert acc.count // (999 + 512) <= acc.runs <= acc.count // 999
    assert acc.result() == exact_auc(conversion[click], score[click])
    # Updates after a result() go on accumulating (the held entries became a run).
    acc.update([1, 0], [0.01, 0.99])
    expected = exact_auc(
        np.append(conversion[click], [1, 0]), np.append(score[click], [0.01, 0.99])
    )
    assert acc.result() == expected


def test_one_score_everywhere_is_one_tied_group(tmp_path):
    """A model that outputs one constant: every entry ties, in every run; the
    tied group is counted in blocks, never loaded whole."""
    labels = np.arange(10_001) % 3 == 0
    acc = AucAccumulator(chunk=100, spill_dir=str(tmp_path))
    for start in range(0, labels.size, 1000):
        acc.update(labels[start : start + 1000], np.full(labels[start : start + 1000].size, 0.25))
    assert acc.runs == 10
    assert acc.result() == 0.5


def test_runs_on_disk_are_removed(tmp_path):
    acc = AucAccumulator(chunk=10, spill_dir=str(tmp_path))
    for start in range(0, 100, 10):
        acc.update(np.arange(start, start + 10) % 2, np.linspace(0, 1, 100)[start : start + 10])
    assert acc.runs == 10 and len(os.listdir(tmp_path)) == 1
    assert acc.result() == 1275 / 2500  # the positive 2k+1 ranks above k+1 negatives
    acc.reset()
    assert acc.runs == 0 and os.listdir(tmp_path) == []
    acc.update(np.arange(100) % 2, np.linspace(0, 1, 100))
    assert len(os.listdir(tmp_path)) == 1
    del acc
    gc.collect()
    assert os.listdir(tmp_path) == []


def test_what_a_killed_evaluation_spilled_is_removed(tmp_path):
    """A SIGKILL skips the finalizer: the next accumulator to spill removes a
    spill directory whose lock is free (its owner is gone, whatever its pid
    or process namespace), never one locked by a live process (another
    process's, or another accumulator of this one); an unlocked one of an
    earlier version only once a day old."""
    import subprocess
    import sys
    import time

    from esmm_tf import files

    left = tmp_path / "esmm_auc_1_killed"  # pid 1: a container's, in every run
    left.mkdir()
    (left / "lock").write_text("")
    (tmp_path / "esmm_auc_1_live").mkdir()
    held = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)",
            str(tmp_path / "esmm_auc_1_live" / "lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert held.stdout.readline().strip() == "locked"
        mine = AucAccumulator(chunk=10, spill_dir=str(tmp_path))
        mine.update(np.arange(20) % 2, np.linspace(0, 1, 20))  # this process's, locked
        old, fresh = tmp_path / "esmm_auc_abc_old", tmp_path / "esmm_auc_def_fresh"
        for path in (old, fresh):
            path.mkdir()
        two_days_ago = time.time() - 2 * 24 * 3600
        os.utime(old, (two_days_ago, two_days_ago))
        acc = AucAccumulator(chunk=10, spill_dir=str(tmp_path))
        acc.update(np.arange(20) % 2, np.linspace(0, 1, 20))
        assert acc.runs >= 1 and mine.runs >= 1
        assert not left.exists() and not old.exists()
        assert (tmp_path / "esmm_auc_1_live").exists() and fresh.exists()
        assert os.path.isdir(mine._tmp) and os.path.isdir(acc._tmp)
        assert os.path.basename(acc._tmp).startswith(f"esmm_auc_{os.getpid()}_")
        assert mine.result() == acc.result()
    finally:
        held.kill()
        held.wait()
    assert files.remove_unlocked_dirs(str(tmp_path), "esmm_auc_") == 1  # the live one's, now
    del mine, acc
    gc.collect()
    assert sorted(os.listdir(tmp_path)) == ["esmm_auc_def_fresh"]


def test_chunk_must_be_positive():
    with pytest.raises(ValueError, match="chunk must be positive"):
        AucAccumulator(chunk=0)


def test_calibration_by_hand():
    pred = [0.2, 0.5, 0.8]
    target = [0, 1, 1]
    out = calibration(pred, target)
    assert out["count"] == 3
    assert out["mean_pred"] == pytest.approx(0.5)
    assert out["mean_target"] == pytest.approx(2 / 3)
    assert out["ratio"] == pytest.approx(0.75)
    expected = -(math.log(0.8) + math.log(0.5) + math.log(0.8)) / 3
    assert out["log_loss"] == pytest.approx(expected, rel=1e-9)


def test_calibration_soft_targets_and_clipping():
    out = calibration([0.25, 0.5], [0.5, 0.1])
    expected = (
        -(0.5 * math.log(0.25) + 0.5 * math.log(0.75) + 0.1 * math.log(0.5) + 0.9 * math.log(0.5))
        / 2
    )
    assert out["log_loss"] == pytest.approx(expected, rel=1e-9)
    assert out["ratio"] == pytest.approx(0.375 / 0.3)
    clipped = calibration([0.0, 1.0], [1, 0], eps=1e-7)
    assert clipped["log_loss"] == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert math.isnan(calibration([0.1], [0])["ratio"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration([0.1], [2])


def test_calibration_accumulator_equals_one_shot():
    rng = np.random.default_rng(5)
    pred = rng.random(1000)
    target = (rng.random(1000) < pred).astype(np.int64)
    mask = rng.random(1000) < 0.7
    acc = CalibrationAccumulator()
    for start in range(0, 1000, 300):
        sl = slice(start, start + 300)
        acc.update(pred[sl], target[sl], mask=mask[sl])
    one_shot = calibration(pred, target, mask=mask)
    got = acc.result()
    assert got["count"] == one_shot["count"] == int(mask.sum())
    for key in ("mean_pred", "mean_target", "ratio", "log_loss"):
        assert got[key] == pytest.approx(one_shot[key], rel=1e-12)
    assert math.isnan(CalibrationAccumulator().result()["log_loss"])
