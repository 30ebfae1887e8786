"""Order-independent grouping of lines by a key, and the stats of record sizes.

A converter partition holds the skeleton rows of many requests, in file order;
logs written in time order interleave the rows of concurrent requests. Every
row of a ``common_feature_index`` belongs in the same records, wherever it
sits, so the join reads a partition in *group order*:

1. :func:`lines_by_group`, pass 1, streams the file once and keeps per line
   only its group number (groups numbered in order of first appearance, from a
   dict key -> number), byte offset and length: 16 bytes a line in numpy
   arrays, plus one dict entry per distinct key. A stable argsort by group
   gives the order.
2. Pass 2 reads the lines back in that order with ``os.pread`` (runs of lines
   that follow each other in the file in one read), and yields them with their
   group number: the first group's lines in file order, then the second's...

Nothing but the line index is held in memory, and the result depends only on
the file's content: a file whose requests are contiguous comes out in its own
order.

Records of a split are summarized by a histogram of their sizes (impressions
per record), merged by summing; :func:`size_summary` gives mean, p50, p99, max.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Iterator

import numpy as np

BYTES_PER_LINE = 128  # pass 1's worst case per line (arrays, argsort, a distinct key each)
_RUN_LINES = 4096  # most lines read by one pread
_RUN_BYTES = 1 << 20


def lines_by_group(path: str, key_of: Callable[[bytes], bytes]) -> Iterator[tuple[int, bytes]]:
    """``(group, line)`` for every line of ``path`` (without its final newline),
    grouped by ``key_of(line)``: groups in order of first appearance, lines of a
    group in file order. The file's lines must all end with a newline."""
    groups: dict[bytes, int] = {}
    group_of, offsets, lengths = array("i"), array("q"), array("i")
    offset = 0
    with open(path, "rb", buffering=1 << 20) as f:
        for line in f:
            key = key_of(line[:-1])
            group = groups.get(key)
            if group is None:
                group = groups[key] = len(groups)
            group_of.append(group)
            offsets.append(offset)
            lengths.append(len(line))
            offset += len(line)
    del groups
    if not offsets:
        return
    group_arr = np.frombuffer(group_of, np.int32)
    order = np.argsort(group_arr, kind="stable")
    starts = np.frombuffer(offsets, np.int64)[order]
    sizes = np.frombuffer(lengths, np.int32)[order]
    group_sorted = group_arr[order]
    del order, group_of, offsets, lengths, group_arr
    # Runs: consecutive positions whose lines follow each other in the file.
    breaks = np.flatnonzero(starts[1:] != starts[:-1] + sizes[:-1]) + 1
    run_starts = np.concatenate(([0], breaks, [starts.size]))
    fd = os.open(path, os.O_RDONLY)
    try:
        for a, b in zip(run_starts[:-1].tolist(), run_starts[1:].tolist(), strict=True):
            while a < b:
                end = min(b, a + _RUN_LINES)
                nbytes = int(starts[end - 1] + sizes[end - 1] - starts[a])
                while end - a > 1 and nbytes > _RUN_BYTES:
                    end = a + max(1, (end - a) // 2)
                    nbytes = int(starts[end - 1] + sizes[end - 1] - starts[a])
                data = os.pread(fd, nbytes, int(starts[a]))
                if len(data) != nbytes:
                    raise OSError(f"{path}: short read at byte {int(starts[a])}")
                lines = data.split(b"\n")
                yield from zip(group_sorted[a:end].tolist(), lines[: end - a], strict=True)
                a = end
    finally:
        os.close(fd)


def add_size(histogram: dict[str, int], size: int) -> None:
    """Counts one record of ``size`` impressions (JSON-friendly string keys)."""
    key = str(size)
    histogram[key] = histogram.get(key, 0) + 1


def merge_sizes(total: dict[str, int], part: dict[str, int]) -> None:
    for key, n in part.items():
        total[key] = total.get(key, 0) + n


def size_summary(histogram: dict[str, int]) -> dict:
    """Impressions per record over the records of a histogram: mean, p50, p99, max."""
    if not histogram:
        return {"mean": 0.0, "p50": 0, "p99": 0, "max": 0}
    sizes = np.array(sorted(int(k) for k in histogram), np.int64)
    counts = np.array([histogram[str(s)] for s in sizes.tolist()], np.int64)
    cum = np.cumsum(counts)

    def percentile(q: float) -> int:
        return int(sizes[np.searchsorted(cum, q * cum[-1], side="left")])

    return {
        "mean": round(float((sizes * counts).sum() / cum[-1]), 2),
        "p50": percentile(0.5),
        "p99": percentile(0.99),
        "max": int(sizes[-1]),
    }
