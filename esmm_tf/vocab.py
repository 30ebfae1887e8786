"""Vocabulary files: one per field, ``raw_id<TAB>count`` lines, most frequent first.

The embedding row of a raw id is its (0-based) line number. Line 0 is the
out-of-vocabulary row: it holds the sentinel id -1 (raw ids are never
negative) and the number of train occurrences that map to OOV; every id below
the converter's ``--min_count``, and every id never seen in train, maps to row
0. So a file always has at least one line and ``rows = vocab_size + 1``.
"""

from __future__ import annotations

import os

import numpy as np

from esmm_tf.data_layout import DatasetError

OOV_ROWS = 1
OOV_ID = -1


def write_vocab(path: str, ids: np.ndarray, counts: np.ndarray, min_count: int) -> int:
    """Writes the ids with count >= min_count, by count desc then id asc.

    Written to a temporary name and renamed. Returns the vocabulary size.
    """
    keep = counts >= min_count
    oov_count = int(counts[~keep].sum())
    ids, counts = ids[keep], counts[keep]
    order = np.lexsort((ids, -counts))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{OOV_ID}\t{oov_count}\n")
        f.writelines(
            f"{i}\t{c}\n" for i, c in zip(ids[order].tolist(), counts[order].tolist(), strict=True)
        )
    os.replace(tmp, path)
    return int(ids.size)


def read_vocab(path: str) -> np.ndarray:
    """The raw ids of a vocabulary file, in row order, OOV row excluded
    (so ``ids[k]`` has row ``k + 1``)."""
    if not os.path.exists(path):
        raise DatasetError(
            f"vocabulary file {path!r} not found; data_prep.convert writes one per field "
            "under <data_dir>/vocab/"
        )
    ids = np.loadtxt(path, dtype=np.int64, usecols=0, ndmin=1, delimiter="\t")
    if not ids.size or ids[0] != OOV_ID:
        raise DatasetError(f"{path}: not a vocabulary file (line 1 must be the OOV row)")
    return ids[1:]


def read_counts(path: str) -> np.ndarray:
    """The train counts of a vocabulary file, one per embedding row (OOV row
    first): ``counts[k]`` is the number of train occurrences of row k's id
    (user-side ids count once per impression of their group)."""
    read_vocab(path)  # the clear errors
    return np.loadtxt(path, dtype=np.int64, usecols=1, ndmin=1, delimiter="\t")


def vocab_size(path: str) -> int:
    """Number of ids in a vocabulary file, OOV row excluded (a line count)."""
    if not os.path.exists(path):
        read_vocab(path)  # raises the clear error
    with open(path, "rb") as f:
        return sum(1 for _ in f) - OOV_ROWS
