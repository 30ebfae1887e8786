"""Vocabulary files: one per field, ``raw_id<TAB>count`` lines, most frequent first.

The embedding row of a raw id is its (0-based) line number. Line 0 is the
out-of-vocabulary row: it holds the sentinel id -1 (raw ids are never
negative) and the number of train occurrences that map to OOV; every id below
the converter's ``--min_count``, and every id never seen in train, maps to row
0. So a file always has at least one line and ``rows = vocab_size + 1``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil

import numpy as np

from esmm_tf import data_layout
from esmm_tf import features as F
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


def read_table(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, counts)`` of a vocabulary file, one per embedding row (the OOV
    row first), checked: every line ``raw_id<TAB>count`` (integers), line 1 the
    OOV row, ids never negative nor repeated, counts never negative. A
    DatasetError names the file and the (1-based) line; embedding rows are line
    numbers, so a file that breaks these would silently mis-map ids."""
    if not os.path.exists(path):
        raise DatasetError(
            f"vocabulary file {path!r} not found; data_prep.convert writes one per field "
            "under <data_dir>/vocab/"
        )
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline
    if not lines:
        _raise_bad_line(path, lines)
    try:
        table = np.loadtxt(
            lines, dtype=np.int64, delimiter="\t", ndmin=2, comments=None, encoding="latin-1"
        )
        ok = table.shape == (len(lines), 2)
    except ValueError:
        ok = False
    if not ok:
        _raise_bad_line(path, lines)
    ids, counts = table[:, 0], table[:, 1]
    if ids[0] != OOV_ID:
        raise DatasetError(
            f"{path}:1: not a vocabulary file (line 1 must be the OOV row, {OOV_ID}<TAB>count)"
        )
    for what, bad in (
        ("id", np.flatnonzero(ids[1:] < 0) + 1),
        ("count", np.flatnonzero(counts < 0)),
    ):
        if bad.size:
            k = int(bad[0])
            value = ids[k] if what == "id" else counts[k]
            raise DatasetError(f"{path}:{k + 1}: {what} {value} is negative")
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if repeated.size:
        k = int(order[repeated + 1].min())  # the first line that repeats an earlier id
        first = int(np.flatnonzero(ids == ids[k])[0])
        raise DatasetError(f"{path}:{k + 1}: id {ids[k]} repeats line {first + 1}")
    return ids, counts


def _raise_bad_line(path: str, lines: list[bytes]) -> None:
    if not lines:
        raise DatasetError(f"{path}: empty; a vocabulary file has at least the OOV row")
    for n, line in enumerate(lines, 1):
        cols = line.split(b"\t")
        if len(cols) != 2 or not all(_INT.fullmatch(c) for c in cols):
            raise DatasetError(f"{path}:{n}: expected raw_id<TAB>count, got {line[:60]!r}")
        if any(int(c) > 2**63 - 1 or int(c) < -(2**63) for c in cols):
            raise DatasetError(f"{path}:{n}: a number out of the int64 range")
    raise DatasetError(f"{path}: not a vocabulary file")


_INT = re.compile(rb"-?[0-9]{1,20}")


def read_vocab(path: str) -> np.ndarray:
    """The raw ids of a vocabulary file, in row order, OOV row excluded
    (so ``ids[k]`` has row ``k + 1``); checked as ``read_table``."""
    return read_table(path)[0][1:]


def read_counts(path: str) -> np.ndarray:
    """The train counts of a vocabulary file, one per embedding row (OOV row
    first): ``counts[k]`` is the number of train occurrences of row k's id
    (user-side ids count once per impression of their group)."""
    return read_table(path)[1]


def check_files(directory: str) -> None:
    """Checks every field's vocabulary file under ``directory`` (``read_table``);
    a DatasetError names the first bad or missing one."""
    for field in F.FIELDS:
        read_table(data_layout.vocab_file(directory, field.id))


def vocab_size(path: str) -> int:
    """Number of ids in a vocabulary file, OOV row excluded (a line count)."""
    if not os.path.exists(path):
        read_vocab(path)  # raises the clear error
    with open(path, "rb") as f:
        return sum(1 for _ in f) - OOV_ROWS


# A directory's vocabulary: ``vocab/<field>.tsv`` for every field, in a
# converted dataset and in a training run alike (esmm_tf/data_layout.py).


def field_digests(directory: str) -> dict[str, str]:
    """sha256 (hex) of each field's vocabulary file under ``directory``; a
    FileNotFoundError names the first file missing."""
    out = {}
    for field in F.FIELDS:
        digest = hashlib.sha256()
        with open(data_layout.vocab_file(directory, field.id), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out[field.id] = digest.hexdigest()
    return out


def fingerprint(directory: str) -> str:
    """One sha256 over every field's vocabulary under ``directory``: equal for
    a dataset and the runs that copied its vocabulary."""
    digest = hashlib.sha256()
    for field_id, hex_digest in field_digests(directory).items():
        digest.update(field_id.encode() + b"\0")
        digest.update(bytes.fromhex(hex_digest))
    return digest.hexdigest()


def copy_files(source: str, target_dir: str) -> None:
    """Copies every field's vocabulary file from ``source`` into ``target_dir``
    (a ``vocab/`` directory), each under a temporary name renamed when complete;
    every file is checked first (``check_files``)."""
    check_files(source)
    os.makedirs(target_dir, exist_ok=True)
    for field in F.FIELDS:
        dst = os.path.join(target_dir, f"{field.id}.tsv")
        shutil.copyfile(data_layout.vocab_file(source, field.id), dst + ".tmp")
        os.replace(dst + ".tmp", dst)
