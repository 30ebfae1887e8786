"""Per-split conversion stats as a Beam side output, merged by a combiner.

A *delta* is :func:`data_prep.convert._new_stats`'s dict, with bad-row
examples kept as ``(path, line, message)`` tuples (the first
``_EXAMPLES_PER_KIND`` by file and line, whatever the order rows were
processed in) and a ``fatal`` list of ``(line, message)`` problems that stop
the conversion (the ground truth out of step with the skeleton). DoFns add to
one delta per split and bundle and emit it when the bundle finishes, so the
stats cost a few elements per bundle, not one per row.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from data_prep import convert, grouping

STATS = "stats"  # the tag of the stats side output
_KEEP = convert._EXAMPLES_PER_KIND


def new_delta() -> dict:
    delta = convert._new_stats()
    delta["fatal"] = []
    return delta


def _keep_first(items: list) -> list:
    return sorted(items)[:_KEEP]


def add_bad(delta: dict, kind: str, path: str, lineno: int, message: str) -> None:
    delta["bad_rows"][kind] = delta["bad_rows"].get(kind, 0) + 1
    examples = delta["bad_examples"].setdefault(kind, [])
    examples.append((path, lineno, message))
    if len(examples) > 2 * _KEEP:
        examples[:] = _keep_first(examples)


def add_fatal(delta: dict, lineno: int, message: str) -> None:
    delta["fatal"] = _keep_first([*delta["fatal"], (lineno, message)])


def merge_into(total: dict, delta: dict) -> dict:
    for key, value in delta.items():
        if isinstance(value, int):
            total[key] += value
    for kind, n in delta["bad_rows"].items():
        total["bad_rows"][kind] = total["bad_rows"].get(kind, 0) + n
    for kind, examples in delta["bad_examples"].items():
        merged = total["bad_examples"].get(kind, []) + list(examples)
        total["bad_examples"][kind] = _keep_first(merged)
    for field, n in delta["ignored_features"].items():
        total["ignored_features"][field] = total["ignored_features"].get(field, 0) + n
    grouping.merge_sizes(total["record_sizes"], delta["record_sizes"])
    total["fatal"] = _keep_first(total["fatal"] + list(delta["fatal"]))
    return total


class MergeStats(beam.CombineFn):
    """Merges the deltas of one split."""

    def create_accumulator(self):
        return new_delta()

    def add_input(self, accumulator, delta):
        return merge_into(accumulator, delta)

    def merge_accumulators(self, accumulators):
        total = new_delta()
        for acc in accumulators:
            merge_into(total, acc)
        return total

    def extract_output(self, accumulator):
        return accumulator


def finalize(total: dict) -> tuple[dict, list[str]]:
    """(stats in data_prep.convert's format, fatal messages) of a merged delta."""
    stats = {k: v for k, v in total.items() if k != "fatal"}
    stats["bad_rows"] = dict(sorted(total["bad_rows"].items()))
    # The same "path:line: message" strings as data_prep.convert, sorted as it sorts them.
    stats["bad_examples"] = {
        kind: sorted(f"{path}:{lineno}: {message}" for path, lineno, message in examples)
        for kind, examples in sorted(total["bad_examples"].items())
    }
    return stats, [message for _, message in total["fatal"]]


class StatsDoFn(beam.DoFn):
    """A DoFn that counts into one delta per split and bundle (``self.delta(split)``),
    emitted on the ``STATS`` output as ``(split, delta)`` when the bundle ends.
    Bad rows also go to a Beam counter (``<split>_bad_rows``), for runners' UIs."""

    def start_bundle(self):
        self._deltas: dict[str, dict] = {}

    def delta(self, split: str) -> dict:
        delta = self._deltas.get(split)
        if delta is None:
            delta = self._deltas[split] = new_delta()
        return delta

    def bad(self, split: str, kind: str, path: str, lineno: int, message: str) -> None:
        add_bad(self.delta(split), kind, path, lineno, message)
        Metrics.counter("data_prep", f"{split}_bad_rows").inc()

    def finish_bundle(self):
        for split, delta in self._deltas.items():
            yield pvalue.TaggedOutput(STATS, GlobalWindows.windowed_value((split, delta)))
        self._deltas = {}
