"""Reading text files in parallel with exact line numbers (``file:line`` in bad-row
messages, and the ground truth joined to the skeleton by line).

``ReadFromText`` splits files but does not say which line an element was. Here
an uncompressed file is cut into byte ranges of ``chunk_bytes``; a line
belongs to the range where it starts (the rule ``ReadFromText`` uses too).

1. *Count*: each range counts the lines that start in it (newlines in the
   bytes just before each of its positions), in parallel.
2. *Number*: the counts of one file, in range order, give the number of the
   first line of each range (a prefix sum over a handful of integers).
3. *Read*: each range reads its lines and numbers them from there, in parallel.

A compressed file cannot be split: it is one range, numbered from 1. Lines are
cut as :func:`data_prep.raw.read_lines` cuts them (:func:`raw.split_line`).
Files are opened with Beam's ``FileSystems``: local paths, ``gs://``,
``s3://``, ``hdfs://`` alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from data_prep import raw

_BLOCK = 1 << 20


# A source is a plain tuple ``(split, kind, path)`` (kind: skeleton, common or
# ground_truth), a line ``(source, line_number, content, ends_with_newline)``:
# plain tuples, so that Beam encodes them compactly and deterministically.
Source = tuple[str, str, str]
Line = tuple[Source, int, bytes, bool]


def _compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


def _ranges(source: Source, chunk_bytes: int) -> Iterator[tuple[Source, tuple[int, int]]]:
    size = FileSystems.match([source[2]])[0].metadata_list[0].size_in_bytes
    if _compressed(source[2]) or size <= chunk_bytes:
        yield source, (0, -1)  # the whole file (-1: to its end)
        return
    for start in range(0, size, chunk_bytes):
        yield source, (start, min(start + chunk_bytes, size))


def _count_starts(item: tuple[Source, tuple[int, int]]) -> tuple[Source, tuple[int, int, int]]:
    """Number of lines starting in ``[start, end)``: position 0, and every
    position right after a newline, i.e. newlines in ``[start - 1, end - 1)``."""
    source, (start, end) = item
    if end < 0:
        return source, (start, end, 0)  # one range per file: nothing to count
    count = int(start == 0)
    with FileSystems.open(source[2], compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.seek(max(start - 1, 0))
        left = end - 1 - max(start - 1, 0)
        while left > 0:
            block = f.read(min(_BLOCK, left))
            if not block:
                break
            count += block.count(b"\n")
            left -= len(block)
    return source, (start, end, count)


def _number(item: tuple[Source, list[tuple[int, int, int]]]):
    source, ranges = item
    first = 1
    for start, end, count in sorted(ranges):
        yield source, (start, end, first)
        first += count


def _read_range(item: tuple[Source, tuple[int, int, int]]) -> Iterator[Line]:
    source, (start, end, lineno) = item
    if end < 0:  # the whole file, compressed or not
        with FileSystems.open(source[2]) as f:
            for line in iter(f.readline, b""):
                yield (source, lineno, *raw.split_line(line, lineno))
                lineno += 1
        return
    with FileSystems.open(source[2], compression_type=CompressionTypes.UNCOMPRESSED) as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()  # the rest of a line that started in the previous range
        pos = f.tell()
        while pos < end:
            line = f.readline()
            if not line:
                break
            pos += len(line)
            yield (source, lineno, *raw.split_line(line, lineno))
            lineno += 1


class ReadNumberedLines(beam.PTransform):
    """PCollection of sources -> PCollection of lines (see above)."""

    def __init__(self, chunk_bytes: int = 64 << 20):
        super().__init__()
        self._chunk_bytes = chunk_bytes

    def expand(self, sources):
        return (
            sources
            | "Ranges" >> beam.FlatMap(_ranges, self._chunk_bytes)
            | "SpreadRanges" >> beam.Reshuffle()
            | "CountLines" >> beam.Map(_count_starts)
            | "ByFile" >> beam.GroupByKey()
            | "Number" >> beam.FlatMap(_number)
            | "SpreadNumbered" >> beam.Reshuffle()
            | "ReadLines" >> beam.FlatMap(_read_range)
        )
