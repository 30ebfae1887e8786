"""tf.train.Example encoding and TFRecord framing without TensorFlow.

The converter's workers write hundreds of thousands of records; importing
TensorFlow in each of them costs ~680 MB of memory and seconds of start-up
for two tiny formats. Both are fixed and documented, so they are written here
(and tested against TensorFlow's own parser and reader):

* an Example is ``Features{ map<string, Feature> feature = 1 }`` inside
  field 1; a Feature holds a ``FloatList`` (field 2) or an ``Int64List``
  (field 3), each a packed ``repeated`` field 1. Map entries are written in
  sorted key order, so the bytes are deterministic. (protobuf's own
  deterministic mode orders keys where one is a prefix of another
  differently; parsers do not care about the order.)
* a TFRecord is ``uint64 length, uint32 masked_crc32c(length), data,
  uint32 masked_crc32c(data)``, little-endian.
"""

from __future__ import annotations

import functools
import itertools
import os
import struct
from collections.abc import Sequence

import google_crc32c
import numpy as np

_LEN_DELIMITED = 2
_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)  # 10 groups of 7 bits cover 64 bits


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _packed_varints(lists: Sequence[Sequence[int]]) -> list[bytes]:
    """The packed varint encoding of each int64 list, computed in one numpy pass
    over all of them (negative values as 10-byte two's complement)."""
    lengths = np.fromiter((len(values) for values in lists), np.int64, count=len(lists))
    total = int(lengths.sum())
    if total == 0:
        return [b""] * len(lists)
    flat = np.fromiter(itertools.chain.from_iterable(lists), np.int64, count=total)
    flat = flat.view(np.uint64)
    # Bytes per value: ceil(bit_length / 7), at least 1.
    size = np.ones(total, np.int64)
    for k in range(1, len(_SHIFTS)):
        size += (flat >> _SHIFTS[k]) != 0
    start = np.cumsum(size) - size
    out = np.empty(int(size.sum()), np.uint8)
    for k in range(int(size.max())):
        sel = size > k
        byte = (flat[sel] >> _SHIFTS[k]) & np.uint64(0x7F)
        byte |= (size[sel] > k + 1).astype(np.uint64) << np.uint64(7)
        out[start[sel] + k] = byte
    data = out.tobytes()
    value_end = np.zeros(total + 1, np.int64)
    np.cumsum(size, out=value_end[1:])
    list_end = np.zeros(len(lists) + 1, np.int64)
    np.cumsum(lengths, out=list_end[1:])
    offsets = value_end[list_end].tolist()
    return [data[offsets[i] : offsets[i + 1]] for i in range(len(lists))]


_TAGS = {n: bytes(((n << 3) | _LEN_DELIMITED,)) for n in (1, 2, 3)}


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (numbers 1-3: one-byte tags)."""
    n = len(payload)
    return _TAGS[number] + (bytes((n,)) if n < 0x80 else _varint(n)) + payload


def _feature(kind: int, packed: bytes) -> bytes:
    """A Feature holding a FloatList (kind 2) or Int64List (kind 3)."""
    return _field(kind, _field(1, packed) if packed else b"")


@functools.lru_cache(maxsize=1024)
def _key(key: str) -> bytes:
    return _field(1, key.encode())


def encode_example(int64: dict[str, Sequence[int]], floats: dict[str, Sequence[float]]) -> bytes:
    """A serialized tf.train.Example (keys must not repeat across the dicts)."""
    int_keys = list(int64)
    entries = dict(
        zip(
            int_keys,
            (_feature(3, p) for p in _packed_varints([int64[k] for k in int_keys])),
            strict=True,
        )
    )
    for key, values in floats.items():
        entries[key] = _feature(2, struct.pack(f"<{len(values)}f", *values))
    features = b"".join(_field(1, _key(key) + _field(2, entries[key])) for key in sorted(entries))
    return _field(1, features)


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(record: bytes) -> bytes:
    """One record in TFRecord framing (what a TFRecord file holds per record)."""
    length = struct.pack("<Q", len(record))
    length_crc = struct.pack("<I", _masked_crc(length))
    return length + length_crc + record + struct.pack("<I", _masked_crc(record))


class TFRecordWriter:
    """Writes records to ``path`` (uncompressed TFRecord format)."""

    def __init__(self, path: str):
        self._file = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 (closed in close())

    def write(self, record: bytes) -> None:
        self._file.write(frame_record(record))

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
