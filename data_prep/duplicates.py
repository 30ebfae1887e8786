"""Duplicate ``sample_id``s within a split, found with bounded memory.

The partition stage reads each skeleton file once, in order: ``SampleIds``
keeps every row's sample_id in one compact int64 array (8 bytes a row: 340 MB
for Ali-CCP's 42M train rows, against several GB for a Python set), checks it
at the end (no copy at all when the ids only ever increase, as in the public
files; otherwise one copy, sorted in place) and saves the line numbers of the *later*
occurrences of each id. The join tasks read that list in line order
(``Skips``) and drop those rows as bad rows of kind ``duplicate_sample_id``:
the first occurrence is kept, as for a duplicate common_feature_index.
"""

from __future__ import annotations

import array
import os

import numpy as np

from data_prep import raw

DUPLICATE_SAMPLE_ID = "duplicate_sample_id"
NO_ID = -1  # a row whose sample_id does not parse (its join task reports it)


class SampleIds:
    """The sample_ids of one skeleton file, in line order."""

    def __init__(self):
        self._ids = array.array("q")
        # The hot loop's call, with the id of the next line, or NO_ID for a
        # token that is not a sample_id (raw.sample_id_or).
        self.append = self._ids.append

    def add(self, content: bytes) -> None:
        """Records the sample_id of the next line (``content`` without EOL)."""
        self.append(raw.sample_id_or(content[: content.find(b",")], NO_ID))

    def duplicates(self) -> np.ndarray:
        """[k, 3] int64 rows ``(line, first_line, sample_id)`` of every later
        occurrence of a sample_id, sorted by line (1-based line numbers)."""
        ids = np.frombuffer(self._ids, np.int64) if self._ids else np.zeros(0, np.int64)
        if ids.size < 2 or bool((ids[1:] > ids[:-1]).all()):
            return np.zeros((0, 3), np.int64)
        valid = ids[ids != NO_ID]  # the one copy (8 bytes a row), sorted in place
        valid.sort()
        repeated = np.unique(valid[1:][valid[1:] == valid[:-1]])
        del valid
        if repeated.size == 0:
            return np.zeros((0, 3), np.int64)
        positions = np.flatnonzero(np.isin(ids, repeated))  # in line order
        values = ids[positions]
        order = np.argsort(values, kind="stable")  # by id, then by line
        values, positions = values[order], positions[order]
        starts = np.r_[True, values[1:] != values[:-1]]
        first = positions[starts][np.cumsum(starts) - 1]
        later = ~starts
        out = np.stack([positions[later] + 1, first[later] + 1, values[later]], axis=1)
        return out[np.argsort(out[:, 0])]

    def save(self, path: str) -> None:
        """Writes ``duplicates()`` to ``path`` (.npy) atomically."""
        tmp = path + ".tmp.npy"
        np.save(tmp, self.duplicates())
        os.replace(tmp, path)


class Skips:
    """The saved duplicates of a skeleton file (sorted by line), for a join
    task that reads its rows in any order (rows come grouped by request)."""

    def __init__(self, path: str):
        self._rows = np.load(path, mmap_mode="r") if os.path.exists(path) else None
        self._lines = None if self._rows is None or not len(self._rows) else self._rows[:, 0]

    def check(self, lineno: int) -> tuple[int, int] | None:
        """``(sample_id, first_line)`` when line ``lineno`` repeats an earlier
        sample_id, else None (a binary search: no order is assumed)."""
        if self._lines is None:
            return None
        i = int(np.searchsorted(self._lines, lineno))
        if i >= len(self._lines) or int(self._lines[i]) != lineno:
            return None
        _, first, sample_id = (int(v) for v in self._rows[i])
        return sample_id, first
