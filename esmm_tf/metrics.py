"""Exact evaluation metrics in numpy: rank-based ROC AUC and calibration.

Reported AUCs are exact (Mann-Whitney U over the whole evaluation set, ties
counted as one half), not bucketed Keras AUCs and not averages of per-batch
AUCs. ``AucAccumulator`` collects scores chunk by chunk so an evaluation loop
can stream tens of millions of impressions and rank them at the end, in
bounded memory (sorted runs on disk, merged).

No TensorFlow here: the inputs are numpy arrays or anything ``np.asarray``
accepts (eager tensors included).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref

import numpy as np
from numpy.typing import ArrayLike

from esmm_tf import files

__all__ = [
    "AucAccumulator",
    "CalibrationAccumulator",
    "calibration",
    "exact_auc",
]

_DEFAULT_EPS = 1e-7


def _binary_labels(labels: ArrayLike) -> np.ndarray:
    """Flattens labels to a bool array; raises unless every value is 0 or 1."""
    y = np.asarray(labels).reshape(-1)
    if y.dtype == np.bool_:
        return y
    positive = y == 1
    if not np.all(positive | (y == 0)):
        raise ValueError("labels must be 0 or 1")
    return positive


def _scores(scores: ArrayLike, n: int) -> np.ndarray:
    """Flattens scores to a float array of length n; raises on NaN."""
    s = np.asarray(scores).reshape(-1)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if s.shape[0] != n:
        raise ValueError(f"labels and scores differ in length: {n} vs {s.shape[0]}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s


def _sorted_twice_u(sorted_scores: np.ndarray, sorted_pos: np.ndarray) -> tuple[int, int]:
    """(2U, negatives) of entries already sorted by score: U counts the
    (positive, negative) pairs ranked correctly, ties as one half."""
    n = sorted_scores.shape[0]
    if n == 0:
        return 0, 0
    # Runs of tied scores: run r covers sorted positions [starts[r], starts[r+1]).
    is_start = np.empty(n, dtype=bool)
    is_start[0] = True
    np.not_equal(sorted_scores[1:], sorted_scores[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start)
    run_len = np.diff(np.append(starts, n))
    run_pos = np.add.reduceat(sorted_pos.astype(np.int64), starts)
    run_neg = run_len - run_pos
    neg_below = np.cumsum(run_neg) - run_neg
    # 2U = sum over runs of pos * (2 * negatives strictly below + negatives tied);
    # integer arithmetic keeps it exact (2U <= 2 * n_pos * n_neg < 2**63).
    twice_u = int(np.sum(run_pos * (2 * neg_below + run_neg)))
    return twice_u, int(run_neg.sum())


def _sort(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(scores, kind="stable")
    return scores[order], positive[order]


def _auc_from_arrays(positive: np.ndarray, scores: np.ndarray) -> float:
    """Exact AUC of validated, flat bool labels and float scores."""
    n = positive.shape[0]
    n_pos = int(np.count_nonzero(positive))
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    twice_u, _ = _sorted_twice_u(*_sort(positive, scores))
    return twice_u / (2.0 * n_pos * n_neg)


def exact_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Exact ROC AUC: the Mann-Whitney U statistic with average ranks for ties.

    Equals ``sklearn.metrics.roc_auc_score(labels, scores)``; O(n log n) time
    (one sort) and O(n) extra memory.

    Args:
      labels: 0/1 (or bool) labels of any shape; flattened.
      scores: scores of the same size; higher means "more likely positive".

    Returns:
      The AUC as a Python float, or ``nan`` when only one class is present
      (including an empty input).

    Raises:
      ValueError: on labels other than 0/1, mismatched lengths or NaN scores.
    """
    positive = _binary_labels(labels)
    return _auc_from_arrays(positive, _scores(scores, positive.shape[0]))


# Entries an AucAccumulator holds in memory before it sorts them into a run on
# disk: 2M entries are ~10 MB held and ~150 MB at the peak of a sort or merge.
DEFAULT_CHUNK = 1 << 21
SPILL_PREFIX = "esmm_auc_"  # TMPDIR/esmm_auc_<pid>_<random>/, locked while in use


def _remove_spill(path: str, lock) -> None:
    shutil.rmtree(path, ignore_errors=True)
    lock.close()


class AucAccumulator:
    """Streams (label, score) chunks and computes one exact AUC at the end, in
    bounded memory whatever the number of impressions.

    Up to ``chunk`` entries are held in memory (float32 score and uint8 label,
    5 bytes each). When more arrive, the held entries are sorted by score and
    written as a *run* to a temporary directory (5 bytes per entry on disk;
    ``spill_dir``, by default the system's temporary directory, honouring
    ``TMPDIR``). ``result()`` then merges the runs in score order, at most
    ``chunk`` entries at a time, and counts tied scores across runs as one
    group, so the AUC is exactly the one of ``exact_auc`` on everything
    collected. An evaluation of at most ``chunk`` impressions never touches the
    disk. The directory is removed by ``reset()`` and when the accumulator is
    garbage-collected.

    Usage::

        acc = AucAccumulator()
        for batch in dataset:
            acc.update(batch["conversion"], out["cvr"], mask=batch["click"] == 1)
        cvr_auc = acc.result()
    """

    def __init__(self, chunk: int = DEFAULT_CHUNK, spill_dir: str | None = None) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be positive, got {chunk}")
        self.chunk = chunk
        self.spill_dir = spill_dir
        self._tmp: str | None = None
        self._finalizer = None
        self.reset()

    def reset(self) -> None:
        """Forgets everything collected so far (and removes its runs on disk)."""
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._held = 0
        self._runs: list[_Run] = []
        self._count = 0
        self._positives = 0
        if self._finalizer is not None:
            self._finalizer()  # removes the directory now
            self._finalizer = None
            self._tmp = None

    def update(self, labels: ArrayLike, scores: ArrayLike, mask: ArrayLike | None = None) -> None:
        """Appends one chunk.

        Args:
          labels: 0/1 labels, any shape (flattened).
          scores: scores of the same size.
          mask: optional bool (or 0/1) array of the same size; only entries
            where it is true are kept (e.g. ``click == 1`` for CVR AUC).
        """
        positive = _binary_labels(labels)
        scores = _scores(scores, positive.shape[0])
        if mask is not None:
            keep = np.asarray(mask).reshape(-1).astype(bool)
            if keep.shape[0] != positive.shape[0]:
                raise ValueError(
                    f"mask and labels differ in length: {keep.shape[0]} vs {positive.shape[0]}"
                )
            positive = positive[keep]
            scores = scores[keep]
        if positive.shape[0] == 0:
            return
        self._labels.append(positive.astype(np.uint8))
        self._scores.append(scores.astype(np.float32))
        self._held += int(positive.shape[0])
        self._count += int(positive.shape[0])
        self._positives += int(np.count_nonzero(positive))
        if self._held >= self.chunk:
            self._spill()

    @property
    def count(self) -> int:
        """Number of impressions collected (after masking)."""
        return self._count

    @property
    def positives(self) -> int:
        """Number of positive labels collected."""
        return self._positives

    @property
    def runs(self) -> int:
        """Number of sorted runs written to disk so far."""
        return len(self._runs)

    def _consolidate(self) -> tuple[np.ndarray, np.ndarray]:
        """Concatenates the held chunks once, keeping a single chunk afterwards."""
        if len(self._labels) != 1:
            labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.uint8)
            scores = np.concatenate(self._scores) if self._scores else np.zeros(0, np.float32)
            self._labels, self._scores = [labels], [scores]
        return self._labels[0], self._scores[0]

    def _spill(self) -> None:
        """Sorts the held entries by score and writes them as one run."""
        labels, scores = self._consolidate()
        self._labels, self._scores, self._held = [], [], 0
        if labels.shape[0] == 0:
            return
        if self._tmp is None:
            root = self.spill_dir or tempfile.gettempdir()
            files.remove_unlocked_dirs(root, SPILL_PREFIX)  # what killed evaluations left
            self._tmp, lock = files.locked_temp_dir(root, SPILL_PREFIX)
            self._finalizer = weakref.finalize(self, _remove_spill, self._tmp, lock)
        scores, labels = _sort(labels, scores)
        paths = [os.path.join(self._tmp, f"run{len(self._runs):05d}.{k}") for k in ("f4", "u1")]
        for path, array in zip(paths, (scores, labels), strict=True):
            array.tofile(path)
        self._runs.append(_Run(*paths, scores.shape[0]))

    def result(self) -> float:
        """Exact AUC over everything collected; ``nan`` if only one class."""
        n_pos, n_neg = self._positives, self._count - self._positives
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        if not self._runs:
            labels, scores = self._consolidate()
            return _auc_from_arrays(labels.astype(bool), scores)
        self._spill()
        return _merged_twice_u(self._runs, self.chunk) / (2.0 * n_pos * n_neg)


class _Run:
    """One sorted run on disk: raw float32 scores and uint8 labels, read by
    explicit reads (not memory-mapped, so pages read do not stay resident)."""

    def __init__(self, scores_path: str, labels_path: str, length: int):
        self.scores_path, self.labels_path, self.length = scores_path, labels_path, length

    def scores(self, lo: int, hi: int) -> np.ndarray:
        hi = min(hi, self.length)
        return np.fromfile(self.scores_path, np.float32, max(0, hi - lo), offset=4 * lo)

    def labels(self, lo: int, hi: int) -> np.ndarray:
        hi = min(hi, self.length)
        return np.fromfile(self.labels_path, np.uint8, max(0, hi - lo), offset=lo)


def _merged_twice_u(runs: list[_Run], chunk: int) -> int:
    """2U over sorted runs, reading at most ``chunk`` entries (plus O(1) per
    run) at a time.

    Each round takes up to ``chunk // len(runs)`` entries from the head of every
    run. ``hi``, the smallest last score taken from a run that has more, bounds
    the round: every entry below ``hi`` in any run is among those taken (runs
    are sorted), so the round's entries below ``hi`` can be ranked among
    themselves and placed above all earlier rounds'. The entries equal to
    ``hi``, however many, are then counted as one tied group, in blocks."""
    per_run = max(1, chunk // len(runs))
    start = [0] * len(runs)
    twice_u = 0
    neg_below = 0  # negatives in earlier rounds, all with lower scores
    while True:
        live = [r for r in range(len(runs)) if start[r] < runs[r].length]
        if not live:
            return twice_u
        windows = {r: runs[r].scores(start[r], start[r] + per_run) for r in live}
        more = [windows[r][-1] for r in live if start[r] + per_run < runs[r].length]
        hi = min(more) if more else None
        scores, labels = [], []
        for r in live:
            window = windows[r]
            stop = window.shape[0] if hi is None else int(np.searchsorted(window, hi, "left"))
            scores.append(window[:stop])
            labels.append(runs[r].labels(start[r], start[r] + stop))
            start[r] += stop
        del windows
        sorted_scores, sorted_pos = _sort(np.concatenate(labels), np.concatenate(scores))
        del scores, labels
        u, negatives = _sorted_twice_u(sorted_scores, sorted_pos)
        twice_u += u + 2 * neg_below * int(np.count_nonzero(sorted_pos))
        neg_below += negatives
        if hi is None:
            continue
        tied = tied_pos = 0
        for r in live:  # each run's entries equal to hi, block by block
            while start[r] < runs[r].length:
                block = runs[r].scores(start[r], start[r] + per_run)
                n = int(np.searchsorted(block, hi, "right"))
                tied += n
                tied_pos += int(np.count_nonzero(runs[r].labels(start[r], start[r] + n)))
                start[r] += n
                if n < block.shape[0]:
                    break
        tied_neg = tied - tied_pos
        twice_u += tied_pos * (2 * neg_below + tied_neg)
        neg_below += tied_neg


def _log_loss_sum(pred: np.ndarray, target: np.ndarray, eps: float) -> float:
    """Sum of cross-entropies -[t log p + (1 - t) log(1 - p)], p clipped to [eps, 1-eps]."""
    p = np.clip(pred, eps, 1.0 - eps)
    return float(-np.sum(target * np.log(p) + (1.0 - target) * np.log1p(-p)))


def _pred_target(
    pred: ArrayLike, target: ArrayLike, mask: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 predictions and targets (masked), validated."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    t = np.asarray(target, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in length: {p.shape[0]} vs {t.shape[0]}")
    if mask is not None:
        keep = np.asarray(mask).reshape(-1).astype(bool)
        if keep.shape != p.shape:
            raise ValueError(f"mask and pred differ in length: {keep.shape[0]} vs {p.shape[0]}")
        p, t = p[keep], t[keep]
    if np.any((t < 0) | (t > 1)):
        raise ValueError("target must lie in [0, 1]")
    return p, t


def _calibration_from_sums(
    n: int, sum_pred: float, sum_target: float, sum_log_loss: float
) -> dict[str, float]:
    """The calibration dict from running sums; nan where undefined."""
    if n == 0:
        nan = float("nan")
        return {"count": 0, "mean_pred": nan, "mean_target": nan, "ratio": nan, "log_loss": nan}
    mean_pred = sum_pred / n
    mean_target = sum_target / n
    ratio = mean_pred / mean_target if mean_target > 0 else float("nan")
    return {
        "count": n,
        "mean_pred": mean_pred,
        "mean_target": mean_target,
        "ratio": ratio,
        "log_loss": sum_log_loss / n,
    }


def calibration(
    pred: ArrayLike,
    target: ArrayLike,
    mask: ArrayLike | None = None,
    eps: float = _DEFAULT_EPS,
) -> dict[str, float]:
    """Calibration summary of predicted probabilities.

    Args:
      pred: predicted probabilities.
      target: 0/1 labels, or true probabilities in [0, 1] (synthetic ground
        truth); with soft targets ``log_loss`` is the cross-entropy
        H(target, pred), which is minimised (not zeroed) by pred == target.
      mask: optional bool array selecting the entries to use.
      eps: predictions are clipped to [eps, 1 - eps] inside the log loss.

    Returns:
      ``{"count", "mean_pred", "mean_target", "ratio", "log_loss"}`` where
      ``ratio = mean_pred / mean_target`` (1.0 is calibrated on average; nan if
      mean_target is 0) and ``log_loss`` is the mean natural-log cross-entropy.
      All values are nan on an empty input.
    """
    p, t = _pred_target(pred, target, mask)
    return _calibration_from_sums(
        int(p.shape[0]), float(p.sum()), float(t.sum()), _log_loss_sum(p, t, eps)
    )


class CalibrationAccumulator:
    """Streaming ``calibration``: keeps four running sums (O(1) memory)."""

    def __init__(self, eps: float = _DEFAULT_EPS) -> None:
        self.eps = eps
        self.reset()

    def reset(self) -> None:
        """Zeroes the running sums."""
        self._n = 0
        self._sum_pred = 0.0
        self._sum_target = 0.0
        self._sum_log_loss = 0.0

    def update(self, pred: ArrayLike, target: ArrayLike, mask: ArrayLike | None = None) -> None:
        """Adds one chunk; arguments as for ``calibration``."""
        p, t = _pred_target(pred, target, mask)
        self._n += int(p.shape[0])
        self._sum_pred += float(p.sum())
        self._sum_target += float(t.sum())
        self._sum_log_loss += _log_loss_sum(p, t, self.eps)

    @property
    def count(self) -> int:
        """Number of entries added (after masking)."""
        return self._n

    def result(self) -> dict[str, float]:
        """The same dict as ``calibration`` over everything added."""
        return _calibration_from_sums(self._n, self._sum_pred, self._sum_target, self._sum_log_loss)
