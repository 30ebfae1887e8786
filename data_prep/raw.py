"""Parsing of raw Ali-CCP rows (bytes in, validated arrays out).

One place knows the raw format; the converter (and any other reader: Beam,
TFDS) calls these functions. Every malformed row raises :class:`BadRow` with a
*kind* (used for per-kind counts in the stats) and a human-readable message.

Raw format (no header, one row per line):

* ``sample_skeleton_*.csv``:
  ``sample_id,click,conversion,common_feature_index,feature_num,feature_list``
* ``common_features_*.csv``: ``common_feature_index,feature_num,feature_list``
* ``ground_truth_*.csv`` (synthetic data only, same order as the skeleton):
  ``sample_id,true_pctr,true_pcvr,counterfactual_conversion``

A feature list is ``field 0x02 id 0x03 value`` features joined by ``0x01``.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import re
import zlib
from collections.abc import Iterator, Sequence

import numpy as np

from esmm_tf import features as F

# Kinds of bad rows (stats keys). Conversion without click is *not* bad.
WRONG_COLUMN_COUNT = "wrong_column_count"
BAD_SAMPLE_ID = "bad_sample_id"
BAD_LABEL = "bad_label"
BAD_FEATURE_NUM = "bad_feature_num"
FEATURE_NUM_MISMATCH = "feature_num_mismatch"
BROKEN_SEPARATOR = "broken_separator"
BAD_FEATURE_ID = "bad_feature_id"
BAD_FEATURE_VALUE = "bad_feature_value"
BAD_COMMON_FEATURE_INDEX = "bad_common_feature_index"
UNKNOWN_COMMON_FEATURE_INDEX = "unknown_common_feature_index"
DUPLICATE_COMMON_FEATURE_INDEX = "duplicate_common_feature_index"
BAD_COMMON_ROW = "references_bad_common_row"
INVALID_BYTES = "invalid_bytes"
TRUNCATED_LAST_LINE = "truncated_last_line"
BAD_GROUND_TRUTH = "bad_ground_truth"

FLOAT32_MAX = 3.4028234663852886e38  # np.finfo(np.float32).max; weights are stored as float32
INT64_MAX = 2**63 - 1
_SEPARATORS = F.FEATURE_SEP + F.ID_SEP + F.VALUE_SEP
_NOT_SEPARATORS = bytes(b for b in range(256) if bytes([b]) not in _SEPARATORS)
_SEP_PATTERN = F.ID_SEP + F.VALUE_SEP + F.FEATURE_SEP
# The strict grammar of numbers: integers (ids, labels, feature_num) are ASCII
# digits only; values are a plain decimal with an optional exponent. Python's
# int()/float() alone would also take "+240", " 241", "242_0", "1_0.5", "nan".
_VALUE = re.compile(rb"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_VALUE_CHARS = b"0123456789.-"  # a row whose values use only these takes the fast path


class BadRow(ValueError):
    """A malformed raw row; ``kind`` is one of the module's kind constants."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class FieldIndex:
    """Maps raw field ids (bytes) of one side (user or item) to positions."""

    def __init__(self, fields: Sequence[F.Field]):
        self.fields = tuple(fields)
        self.position = {f.id.encode(): i for i, f in enumerate(self.fields)}


USER_INDEX = FieldIndex(F.USER_FIELDS)
ITEM_INDEX = FieldIndex(F.ITEM_FIELDS)


@dataclasses.dataclass
class FeatureArrays:
    """Features of one row, grouped by field.

    ``ids[k]`` and ``weights[k]`` are the ids and values of ``index.fields[k]``
    in raw order (plain lists: faster than numpy for rows this small).
    ``ignored`` counts features whose field id is not declared for this side
    (kept out of the record).
    """

    ids: list[list[int]]
    weights: list[list[float]]
    ignored: dict[bytes, int]

    def field(self, k: int) -> tuple[list[int], list[float]]:
        return self.ids[k], self.weights[k]


@dataclasses.dataclass
class PackedFeatures:
    """FeatureArrays packed into three numpy arrays (~12 bytes per feature
    instead of ~40 for Python lists): for rows held in memory by the hundred
    thousand, such as a partition's common_features rows."""

    ids: np.ndarray  # int64, all fields concatenated
    weights: np.ndarray  # float32 (what the TFRecords store)
    offsets: np.ndarray  # int64, field k is [offsets[k], offsets[k + 1])

    @classmethod
    def pack(cls, feats: FeatureArrays) -> PackedFeatures:
        offsets = np.zeros(len(feats.ids) + 1, np.int64)
        np.cumsum([len(ids) for ids in feats.ids], out=offsets[1:])
        return cls(
            np.array([i for ids in feats.ids for i in ids], np.int64),
            np.array([w for ws in feats.weights for w in ws], np.float32),
            offsets,
        )

    def field(self, k: int) -> tuple[list[int], list[float]]:
        s, e = self.offsets[k], self.offsets[k + 1]
        return self.ids[s:e].tolist(), self.weights[s:e].tolist()


def parse_feature_list(buf: bytes, feature_num: int, index: FieldIndex) -> FeatureArrays:
    """Parses and validates a feature list; raises BadRow."""
    n = feature_num
    nfields = len(index.fields)
    ids: list[list[int]] = [[] for _ in range(nfields)]
    weights: list[list[float]] = [[] for _ in range(nfields)]
    ignored: dict[bytes, int] = {}
    if not buf:
        if n != 0:
            raise BadRow(FEATURE_NUM_MISMATCH, f"feature_num={n} but the feature list is empty")
        return FeatureArrays(ids, weights, ignored)
    seps = buf.translate(None, _NOT_SEPARATORS)
    count = seps.count(F.ID_SEP)
    if count == 0 or seps != (_SEP_PATTERN * count)[:-1]:
        raise BadRow(
            BROKEN_SEPARATOR,
            "feature list separators out of order (expected field 0x02 id 0x03 value, "
            "joined by 0x01)",
        )
    if count != n:
        raise BadRow(FEATURE_NUM_MISMATCH, f"feature_num={n} but the list has {count} features")
    parts = (
        buf.replace(F.ID_SEP, F.FEATURE_SEP)
        .replace(F.VALUE_SEP, F.FEATURE_SEP)
        .split(F.FEATURE_SEP)
    )
    position = index.position
    if not (b"".join(parts[1::3]).isdigit() and _plain_values(parts[2::3])):
        _raise_bad_token(parts)
    try:
        _fill(parts, position, ids, weights, ignored)
    except ValueError:  # a bad value, or an id past int()'s 4,300 digits (zero-padded?)
        parts[1::3] = [t.lstrip(b"0") or b"0" for t in parts[1::3]]
        ids = [[] for _ in range(nfields)]
        weights = [[] for _ in range(nfields)]
        ignored = {}
        try:
            _fill(parts, position, ids, weights, ignored)
        except ValueError:
            _raise_bad_token(parts)
    for field_ids in ids:
        if field_ids and (min(field_ids) < 0 or max(field_ids) > INT64_MAX):
            bad = next(v for v in field_ids if not 0 <= v <= INT64_MAX)
            raise BadRow(
                BAD_FEATURE_ID, f"feature id {_shown(str(bad).encode())} is outside [0, 2^63)"
            )
    for field_weights in weights:
        if not field_weights:
            continue
        # One pass on the hot path: a sum of magnitudes that is a float32
        # proves every weight finite and within float32's range.
        total = sum(map(abs, field_weights))
        if total > FLOAT32_MAX or total != total:
            if not all(map(math.isfinite, field_weights)):
                raise BadRow(BAD_FEATURE_VALUE, "feature value is not finite")
            bad = next((w for w in field_weights if abs(w) > FLOAT32_MAX), None)
            if bad is not None:
                raise BadRow(BAD_FEATURE_VALUE, f"feature value {bad!r} overflows float32")
    return FeatureArrays(ids, weights, ignored)


def _fill(parts: list[bytes], position: dict, ids: list, weights: list, ignored: dict) -> None:
    """The hot loop of ``parse_feature_list``: (field, id, value) triples into
    ``ids``/``weights`` by field position; ValueError from int() or float()."""
    it = iter(parts)
    for field, fid, value in zip(it, it, it, strict=True):
        k = position.get(field)
        if k is None:
            ignored[field] = ignored.get(field, 0) + 1
            if not is_plain_value(value):  # kept values are checked by float()
                _raise_bad_token(parts)
            continue
        ids[k].append(int(fid))
        weights[k].append(float(value))


def _plain_values(tokens: list[bytes]) -> bool:
    """True when every value token is a plain decimal (with optional exponent).
    The common case (digits, '.', '-' only) is checked for the whole row at
    once; float() then rejects the misplaced '.'s and '-'s."""
    if not b"".join(tokens).translate(None, _VALUE_CHARS):
        return True
    return all(_VALUE.fullmatch(t) for t in tokens)


def is_plain_value(token: bytes) -> bool:
    return _VALUE.fullmatch(token) is not None


def to_int64(digits: bytes) -> int | None:
    """The value of an ASCII digit string of any length (zero-padded too), or
    None above 2^63 - 1, without calling int() on the whole string (int()
    refuses over 4,300 digits)."""
    significant = digits.lstrip(b"0")
    if len(significant) < 19 or (len(significant) == 19 and int(significant) <= INT64_MAX):
        return int(significant or b"0")
    return None


def sample_id_or(token: bytes, default: int) -> int:
    """The sample_id of a raw token, or ``default`` when it is not one (the
    row's own parse reports why): the duplicate finders' hot loop."""
    if token.isdigit():
        if len(token) < 19:
            return int(token)
        value = to_int64(token)
        if value is not None:
            return value
    return default


def _raise_bad_token(parts: list[bytes]) -> None:
    for token in parts[1::3]:
        if not token.isdigit():
            raise BadRow(BAD_FEATURE_ID, f"feature id {token[:40]!r} is not an integer")
        if to_int64(token) is None:
            raise BadRow(BAD_FEATURE_ID, f"feature id {_shown(token)} is outside [0, 2^63)")
    for token in parts[2::3]:
        if not is_plain_value(token):
            raise BadRow(BAD_FEATURE_VALUE, f"feature value {token[:40]!r} is not a number")
    raise AssertionError("unreachable: a token failed to parse")


def _shown(token: bytes) -> str:
    """A token in a message: whole up to 40 bytes, else its start and length."""
    if len(token) <= 40:
        return token.decode("ascii", "replace")
    return f"{token[:20].decode('ascii', 'replace')}... ({len(token)} digits)"


def _parse_int(token: bytes, kind: str, what: str) -> int:
    if not token.isdigit():  # ASCII digits only: no sign, space or '_'
        raise BadRow(kind, f"{what} {token[:40]!r} is not an integer")
    value = to_int64(token)
    if value is None:
        raise BadRow(kind, f"{what} {_shown(token)} is out of range (above 2^63 - 1)")
    return value


def _parse_cfi(token: bytes) -> bytes:
    if not token or any(s in token for s in (b"\t", F.FEATURE_SEP, F.ID_SEP, F.VALUE_SEP)):
        raise BadRow(BAD_COMMON_FEATURE_INDEX, f"bad common_feature_index {token[:40]!r}")
    return token


@dataclasses.dataclass
class SkeletonRow:
    sample_id: int
    click: int
    conversion: int
    common_feature_index: bytes
    features: FeatureArrays


def parse_skeleton_row(line: bytes) -> SkeletonRow:
    """Parses one sample_skeleton line (without its newline)."""
    _check_bytes(line)
    cols = line.split(b",", 5)
    if len(cols) != 6 or b"," in cols[5]:
        raise BadRow(
            WRONG_COLUMN_COUNT,
            f"expected 6 comma-separated columns, got {line.count(b',') + 1}",
        )
    sample_id = _parse_int(cols[0], BAD_SAMPLE_ID, "sample_id")
    click = _parse_label(cols[1], "click")
    conversion = _parse_label(cols[2], "conversion")
    cfi = _parse_cfi(cols[3])
    feature_num = _parse_int(cols[4], BAD_FEATURE_NUM, "feature_num")
    feats = parse_feature_list(cols[5], feature_num, ITEM_INDEX)
    return SkeletonRow(sample_id, click, conversion, cfi, feats)


def parse_common_row(line: bytes) -> tuple[bytes, FeatureArrays]:
    """Parses one common_features line (without its newline)."""
    _check_bytes(line)
    cols = line.split(b",", 2)
    if len(cols) != 3 or b"," in cols[2]:
        raise BadRow(
            WRONG_COLUMN_COUNT,
            f"expected 3 comma-separated columns, got {line.count(b',') + 1}",
        )
    cfi = _parse_cfi(cols[0])
    feature_num = _parse_int(cols[1], BAD_FEATURE_NUM, "feature_num")
    return cfi, parse_feature_list(cols[2], feature_num, USER_INDEX)


@dataclasses.dataclass
class GroundTruthRow:
    sample_id: int
    pctr: float
    pcvr: float
    conversion: int


def parse_ground_truth_row(line: bytes) -> GroundTruthRow:
    cols = line.split(b",")
    if len(cols) != 4:
        raise BadRow(BAD_GROUND_TRUTH, f"expected 4 columns, got {len(cols)}")
    if not (cols[0].isdigit() and cols[3].isdigit() and all(map(is_plain_value, cols[1:3]))):
        raise BadRow(BAD_GROUND_TRUTH, f"unparsable ground truth row {line[:60]!r}")
    sample_id = to_int64(cols[0])
    if sample_id is None:
        raise BadRow(BAD_GROUND_TRUTH, f"sample_id {_shown(cols[0])} is out of range")
    pctr, pcvr = float(cols[1]), float(cols[2])
    conversion = {b"0": 0, b"1": 1}.get(cols[3], -1)
    if not (0.0 <= pctr <= 1.0 and 0.0 <= pcvr <= 1.0 and conversion in (0, 1)):
        raise BadRow(BAD_GROUND_TRUTH, f"ground truth out of range: {line[:60]!r}")
    return GroundTruthRow(sample_id, pctr, pcvr, conversion)


def _parse_label(token: bytes, what: str) -> int:
    if token == b"0":
        return 0
    if token == b"1":
        return 1
    raise BadRow(BAD_LABEL, f"{what} label {token[:20]!r} is not 0 or 1")


def _check_bytes(line: bytes) -> None:
    if not line.isascii():
        pos = next(i for i, b in enumerate(line) if b > 127)
        raise BadRow(INVALID_BYTES, f"non-ASCII byte 0x{line[pos]:02x} at column {pos + 1}")


# ---------------------------------------------------------------------------
# Files.


class RawInputError(Exception):
    """A raw input problem that stops the conversion (missing/empty file...)."""


def find_raw_file(
    raw_dir: str,
    stem: str,
    required: bool = True,
    *,
    exists=os.path.exists,
    size=os.path.getsize,
    join=os.path.join,
) -> str | None:
    """Returns ``raw_dir/stem.csv`` or ``raw_dir/stem.csv.gz`` (the one raw-file
    lookup: the converter, the Beam pipeline and the TFDS builder use it).

    Refuses (RawInputError) a directory holding both, or an empty file; a
    missing file is an error when ``required``, else None. ``exists``, ``size``
    and ``join`` are the filesystem's (Beam passes its FileSystems')."""
    found = [join(raw_dir, n) for n in (f"{stem}.csv", f"{stem}.csv.gz")]
    found = [path for path in found if exists(path)]
    if len(found) == 2:
        raise RawInputError(
            f"both {found[0]} and {found[1]} exist; keep one of them (move the other away)"
        )
    if found:
        if size(found[0]) == 0:
            raise RawInputError(f"{found[0]}: file is empty")
        return found[0]
    if required:
        raise RawInputError(
            f"{join(raw_dir, stem)}.csv (or .csv.gz) not found; the raw Ali-CCP "
            "directory must hold sample_skeleton_{train,test}.csv and "
            "common_features_{train,test}.csv (see README: 'Real Ali-CCP data')"
        )
    return None


def open_raw(path: str):
    """Opens a raw file (plain or gzip) for binary reading."""
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb", buffering=1 << 20)


def read_lines(path: str) -> Iterator[tuple[int, bytes, bool]]:
    """Yields ``(line_number, content, ends_with_newline)``; content has no EOL.

    A file with no rows at all, or a ``.gz`` that is truncated, corrupt or not
    gzip at all, raises RawInputError naming the file.
    """
    any_line = False
    lineno = 0
    try:
        with open_raw(path) as f:
            first = f.readline()  # its byte order mark, if any, is not data
            if first:
                any_line, lineno = True, 1
                yield 1, *split_line(first, 1)
            for lineno, line in enumerate(f, 2):
                yield lineno, *split_eol(line)
    except GZIP_ERRORS as e:
        raise RawInputError(_gzip_error(path, e, f"after {lineno:,} lines")) from None
    if not any_line:
        raise RawInputError(f"{path}: file is empty")


GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _gzip_error(path: str, e: BaseException, where: str) -> str:
    what = "truncated" if isinstance(e, EOFError) else f"not a valid gzip file ({e})"
    return f"{path}: {what}, {where}; download or decompress it again"


def read_head(path: str, size: int) -> bytes:
    """The first ``size`` bytes of a raw file (uncompressed); a bad ``.gz``
    raises RawInputError naming the file, as ``read_lines``."""
    try:
        with open_raw(path) as f:
            return f.read(size)
    except GZIP_ERRORS as e:
        raise RawInputError(_gzip_error(path, e, f"within its first {size:,} bytes")) from None


UTF8_BOM = b"\xef\xbb\xbf"


def split_line(line: bytes, lineno: int) -> tuple[bytes, bool]:
    """``split_eol`` of the ``lineno``-th line of a file, without the UTF-8 byte
    order mark some Windows tools put at the start of a file (an encoding
    marker, not data: left in, it would make line 1's first column another
    id)."""
    if lineno == 1 and line.startswith(UTF8_BOM):
        line = line[len(UTF8_BOM) :]
    return split_eol(line)


def split_eol(line: bytes) -> tuple[bytes, bool]:
    """``(content, ends_with_newline)`` of a line as read from a file: the content
    is the line without its line break (LF or CRLF)."""
    has_newline = line.endswith(b"\n")
    return (line.rstrip(b"\r\n") if has_newline else line), has_newline


def classify(error: BadRow, has_newline: bool) -> str:
    """The stats kind of a bad row: a bad last line without EOL is truncated."""
    return error.kind if has_newline else TRUNCATED_LAST_LINE
