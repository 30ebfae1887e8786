"""A small vectorised text engine: many lines formatted at once with numpy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from esmm_tf import features

# Vectorised line formatting. Strings are rows of a uint8 matrix; a boolean mask
# marks their bytes (holes allowed), so joining strings side by side is a
# column concatenation and ``mat[mask]`` writes them all out in row order.


class Text(NamedTuple):
    mat: np.ndarray  # uint8 [n, width]
    mask: np.ndarray  # bool [n, width]


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def text_table(strings: Sequence[bytes]) -> Text:
    width = max(map(len, strings))
    mat = np.zeros((len(strings), width), np.uint8)
    for i, s in enumerate(strings):
        mat[i, : len(s)] = np.frombuffer(s, np.uint8)
    lengths = np.array([len(s) for s in strings])
    return Text(mat, np.arange(width) < lengths[:, None])


def take(table: Text, codes: np.ndarray) -> Text:
    return Text(table.mat[codes], table.mask[codes])


def const(text: bytes, n: int) -> Text:
    row = np.frombuffer(text, np.uint8)
    return Text(np.broadcast_to(row, (n, len(row))), np.ones((n, len(row)), bool))


def itoa(values: np.ndarray) -> Text:
    """Decimal strings of non-negative integers (right-aligned)."""
    values = np.asarray(values, np.int64)
    width = len(str(int(values.max()))) if values.size else 1
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = np.empty((len(values), width), np.uint8)
    block = 1 << 18  # bounds the int64 temporaries (the world formats millions of ids at once)
    for lo in range(0, len(values), block):
        digits[lo : lo + block] = values[lo : lo + block, None] // powers % 10 + 48
    mask = values[:, None] >= powers
    mask[:, -1] = True  # "0"
    return Text(digits, mask)


def hcat(*parts: Text) -> Text:
    """Row-wise concatenation."""
    mats = [np.broadcast_to(p.mat, p.mask.shape) for p in parts]
    return Text(np.concatenate(mats, axis=1), np.concatenate([p.mask for p in parts], axis=1))


def vcat(parts: Sequence[Text]) -> Text:
    """All rows of all parts, padded to one width."""
    width = max(p.mat.shape[1] for p in parts)
    out = Text(*(np.zeros((sum(len(p.mat) for p in parts), width), t) for t in (np.uint8, bool)))
    row = 0
    for p in parts:  # filled in place: no padded copies of the parts
        n, w = p.mat.shape
        out.mat[row : row + n, :w], out.mask[row : row + n, :w] = p.mat, p.mask
        row += n
    return out


def hex16(values: np.ndarray) -> Text:
    """16 lowercase hex digits and a comma per value."""
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nibbles = (values.astype(np.uint64)[:, None] >> shifts) & np.uint64(15)
    return hcat(Text(_HEX[nibbles], np.ones(nibbles.shape, bool)), const(b",", len(values)))


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def value_table(max_count: int) -> Text:
    """Row 2c + last: 0x03, the value of count code c, then 0x01 or (last) a newline.

    Code 0 is ``1.0`` (unweighted fields); code c >= 1 is ``log(1 + c)``, 5 decimals.
    """
    values = [b"1.0"] + [b"%.5f" % math.log1p(c) for c in range(1, max_count + 1)]
    ends = (features.FEATURE_SEP, b"\n")
    return text_table([features.VALUE_SEP + v + end for v in values for end in ends])


def feature_lines(
    prefix: Text, line: np.ndarray, field: np.ndarray, token: np.ndarray,
    value_code: np.ndarray, tokens: Text, values: Text,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Lines ``prefix + feature_num + ',' + feature_list + '\\n'``.

    The features of all lines are listed by ``line``, ``field`` (index into
    ``features.FIELDS``), ``token`` (row of ``tokens``) and ``value_code`` (see
    ``value_table``: rows of ``values``);
    each line is written in ``features.FIELDS`` order. Returns the bytes, the
    byte offset of each line (n + 1) and the sorted ``line * len(FIELDS) + field``.
    """
    n_lines = len(prefix.mat)
    key = line * len(features.FIELDS) + field
    order = np.argsort(key, kind="stable")
    key, line, token, value_code = key[order], line[order], token[order], value_code[order]
    last = np.ones(len(line), np.int64)
    last[:-1] = line[1:] != line[:-1]
    counts = np.bincount(line, minlength=n_lines)
    if not counts.all():
        raise AssertionError("every line needs at least one feature")
    head = hcat(prefix, itoa(counts), const(b",", n_lines))
    body = hcat(take(tokens, token), take(values, 2 * value_code + last))
    # Interleave: each line's head row, then its feature rows.
    head_row = np.arange(n_lines) + offsets_from_lengths(counts)[:-1]
    body_row = np.arange(len(line)) + line + 1
    width = max(head.mat.shape[1], body.mat.shape[1])
    mat = np.zeros((n_lines + len(line), width), np.uint8)
    mask = np.zeros(mat.shape, bool)
    for rows, part in ((head_row, head), (body_row, body)):
        mat[rows, : part.mat.shape[1]] = part.mat
        mask[rows, : part.mask.shape[1]] = part.mask
    row_offsets = offsets_from_lengths(mask.sum(axis=1))
    return mat[mask], row_offsets[np.append(head_row, len(mat))], key
