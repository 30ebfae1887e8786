"""Per-field id frequency counting in bounded memory (numpy, no Python dicts).

Ids arrive as arrays with a weight each (user-side ids count once per
impression of their group); chunks are buffered and folded into sorted
``(ids, counts)`` arrays with ``np.unique`` when the buffer fills, so memory is
O(distinct ids + buffer), and the result does not depend on arrival order.
"""

from __future__ import annotations

import numpy as np

_BUFFER = 1 << 20


def merge_counts(
    parts: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Sums counts of equal ids over several (ids, counts) pairs; sorted by id."""
    parts = [p for p in parts if p[0].size]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ids = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    unique, inverse = np.unique(ids, return_inverse=True)
    summed = np.bincount(inverse, weights=counts, minlength=unique.size)
    return unique, np.rint(summed).astype(np.int64)


class IdCounter:
    """Counts ids of one field."""

    def __init__(self) -> None:
        self._ids = np.zeros(0, np.int64)
        self._counts = np.zeros(0, np.int64)
        self._buffer: list[tuple[np.ndarray, np.ndarray]] = []
        self._buffered = 0

    def add(self, ids: np.ndarray, weight: int = 1) -> None:
        if not ids.size:
            return
        self.add_counts(ids, np.full(ids.size, weight, np.int64))

    def add_counts(self, ids: np.ndarray, counts: np.ndarray) -> None:
        """Adds (id, count) pairs, e.g. another counter's result."""
        if not ids.size:
            return
        self._buffer.append((ids, counts))
        self._buffered += ids.size
        # Fold once the buffer is as large as the folded arrays (or _BUFFER):
        # memory stays O(distinct ids) and the folds' total work O(entries),
        # however many chunks arrive.
        if self._buffered >= max(_BUFFER, self._ids.size):
            self._fold()

    def _fold(self) -> None:
        self._ids, self._counts = merge_counts([(self._ids, self._counts), *self._buffer])
        self._buffer, self._buffered = [], 0

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._fold()
        return self._ids, self._counts
