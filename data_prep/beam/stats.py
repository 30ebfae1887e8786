"""Per-split conversion stats as a Beam side output, merged by a combiner.

A *delta* is a :class:`data_prep.stats.SplitStats` (the record
``data_prep.convert``'s tasks count into) with a ``fatal`` list of
``(line, message)`` problems that stop the conversion (the ground truth out
of step with the skeleton). DoFns add to one delta per split and bundle and
emit it when the bundle finishes, so the stats cost a few elements per
bundle, not one per row.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from data_prep import stats as stats_lib

STATS = "stats"  # the tag of the stats side output


def _keep_first(items: list) -> list:
    return sorted(items)[: stats_lib.EXAMPLES_PER_KIND]


@dataclasses.dataclass
class Delta(stats_lib.SplitStats):
    fatal: list = dataclasses.field(default_factory=list)  # [(line, message)], the first

    def add_fatal(self, lineno: int, message: str) -> None:
        self.fatal = _keep_first([*self.fatal, (lineno, message)])

    def merge(self, other: Delta) -> Delta:
        super().merge(other)
        self.fatal = _keep_first(self.fatal + [tuple(f) for f in other.fatal])
        return self

    @classmethod
    def from_json(cls, obj: dict) -> Delta:
        out = super().from_json(obj)
        out.fatal = [tuple(f) for f in out.fatal]
        return out


class MergeStats(beam.CombineFn):
    """Merges the deltas of one split."""

    def create_accumulator(self):
        return Delta()

    def add_input(self, accumulator, delta):
        return accumulator.merge(delta)

    def merge_accumulators(self, accumulators):
        total = Delta()
        for acc in accumulators:
            total.merge(acc)
        return total

    def extract_output(self, accumulator):
        return accumulator.to_json()  # JSON-able (Delta.from_json reads it back)


class StatsDoFn(beam.DoFn):
    """A DoFn that counts into one delta per split and bundle (``self.delta(split)``),
    emitted on the ``STATS`` output as ``(split, delta)`` when the bundle ends.
    Bad rows also go to a Beam counter (``<split>_bad_rows``), for runners' UIs."""

    def start_bundle(self):
        self._deltas: dict[str, Delta] = {}

    def delta(self, split: str) -> Delta:
        delta = self._deltas.get(split)
        if delta is None:
            delta = self._deltas[split] = Delta()
        return delta

    def bad(self, split: str, kind: str, path: str, lineno: int, message: str) -> None:
        self.delta(split).add_bad(kind, path, lineno, message)
        Metrics.counter("data_prep", f"{split}_bad_rows").inc()

    def finish_bundle(self):
        for split, delta in self._deltas.items():
            yield pvalue.TaggedOutput(STATS, GlobalWindows.windowed_value((split, delta)))
        self._deltas = {}
