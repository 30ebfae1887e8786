"""Exact evaluation metrics in numpy: rank-based ROC AUC and calibration.

Reported AUCs are exact (Mann-Whitney U over the whole evaluation set, ties
counted as one half), not bucketed Keras AUCs and not averages of per-batch
AUCs. ``AucAccumulator`` collects scores chunk by chunk so an evaluation loop
can stream tens of millions of impressions and rank them once at the end.

No TensorFlow here: the inputs are numpy arrays or anything ``np.asarray``
accepts (eager tensors included).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

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


def _auc_from_arrays(positive: np.ndarray, scores: np.ndarray) -> float:
    """Exact AUC of validated, flat bool labels and float scores."""
    n = positive.shape[0]
    n_pos = int(np.count_nonzero(positive))
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    sorted_pos = positive[order]
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


class AucAccumulator:
    """Streams (label, score) chunks and computes one exact AUC at the end.

    Memory: scores are kept as float32 (model outputs are float32 anyway) and
    labels as uint8, i.e. 5 bytes per impression: 84M Ali-CCP test impressions
    take ~420 MB, plus ~8 bytes per impression transiently for the sort in
    ``result()``.

    Usage::

        acc = AucAccumulator()
        for batch in dataset:
            acc.update(batch["conversion"], out["cvr"], mask=batch["click"] == 1)
        cvr_auc = acc.result()
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forgets everything collected so far."""
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._count = 0
        self._positives = 0

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
        self._count += int(positive.shape[0])
        self._positives += int(np.count_nonzero(positive))

    @property
    def count(self) -> int:
        """Number of impressions collected (after masking)."""
        return self._count

    @property
    def positives(self) -> int:
        """Number of positive labels collected."""
        return self._positives

    def _consolidate(self) -> tuple[np.ndarray, np.ndarray]:
        """Concatenates the chunks once, keeping a single chunk afterwards."""
        if len(self._labels) != 1:
            labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.uint8)
            scores = np.concatenate(self._scores) if self._scores else np.zeros(0, np.float32)
            self._labels, self._scores = [labels], [scores]
        return self._labels[0], self._scores[0]

    def result(self) -> float:
        """Exact AUC over everything collected; ``nan`` if only one class."""
        labels, scores = self._consolidate()
        return _auc_from_arrays(labels.astype(bool), scores)


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
