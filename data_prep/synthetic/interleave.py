"""Skeleton rows of some requests scattered among other requests' rows, as in logs
written in time order, streamed through a bounded reorder window.

Every impression has a position: its index in the request-by-request order the
generator draws. A scattered request's impressions move each to its position
plus a uniform offset in ``[0, window)``; the other requests keep their rows
together, as one block at the request's first position (scattered rows land
between blocks, never inside one). Lines leave in the order of these keys.
Since keys never fall below a request's first position, a line whose key is
below the next piece's first position can leave at once: only the scattered
lines of about the last ``window`` positions wait, so memory is ``~ fraction *
window`` lines, whatever the file's size.

Sample ids are given in file order when lines leave (real logs number lines in
time order), and each ground-truth line leaves with its skeleton line.
"""

from __future__ import annotations

import numpy as np

from data_prep.synthetic.lines import ground_truth_lines


class Interleaver:
    """The reorder window of one split; ``first_sample_id`` numbers its first line."""

    def __init__(self, first_sample_id: int):
        self.next_sample_id = first_sample_id
        self._key = np.zeros(0)
        self._tail: list[bytes] = []  # skeleton line without its sample id
        self._truth = np.zeros((0, 3))  # true pctr, true pcvr, counterfactual conversion

    @property
    def pending(self) -> int:
        """Lines waiting in the window."""
        return len(self._tail)

    def add(
        self,
        key: np.ndarray,
        tails: bytes,
        tail_offsets: np.ndarray,
        truth: np.ndarray,
        frontier: float,
    ) -> tuple[bytes, bytes]:
        """Adds lines (``tails[tail_offsets[i]:tail_offsets[i + 1]]``, keys, [n, 3]
        truth); returns the skeleton and ground-truth text of every line with a
        key below ``frontier`` (no later line may have a smaller key)."""
        bounds = tail_offsets.tolist()
        self._tail.extend(tails[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
        self._key = np.concatenate([self._key, key])
        self._truth = np.concatenate([self._truth, truth])
        order = np.argsort(self._key, kind="stable")
        ready = int(np.searchsorted(self._key[order], frontier))
        return self._emit(order[:ready], order[ready:])

    def flush(self) -> tuple[bytes, bytes]:
        """Every waiting line, in key order (at the end of the split)."""
        return self._emit(np.argsort(self._key, kind="stable"), np.zeros(0, np.int64))

    def _emit(self, out: np.ndarray, keep: np.ndarray) -> tuple[bytes, bytes]:
        ids = range(self.next_sample_id, self.next_sample_id + len(out))
        self.next_sample_id += len(out)
        skeleton = b"".join(
            b"%d%s" % (i, self._tail[j]) for i, j in zip(ids, out.tolist(), strict=True)
        )
        pctr, pcvr, counterfactual = self._truth[out].T
        truth = ground_truth_lines(
            np.asarray(ids, np.int64), pctr, pcvr, counterfactual.astype(np.int64)
        )
        self._tail = [self._tail[j] for j in keep.tolist()]
        self._key, self._truth = self._key[keep], self._truth[keep]
        return skeleton, truth


def scatter_keys(
    rng: np.random.Generator,
    position: np.ndarray,
    row: np.ndarray,
    n_rows: int,
    fraction: float,
    window: int,
) -> np.ndarray:
    """Keys of impressions at ``position`` (their request: ``row``, sorted): a
    ``fraction`` of the requests get each impression moved by a uniform offset in
    [0, window); the others keep their request's first position."""
    scattered = (rng.random(n_rows) < fraction)[row]
    offset = rng.random(len(row)) * window
    first = position[np.searchsorted(row, np.arange(n_rows))][row]
    return np.where(scattered, position + offset, first)
