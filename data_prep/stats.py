"""The conversion's stats: one typed record a task (or a Beam bundle) counts
into, merged by summing, then summarized into stats.json.

``data_prep.convert`` (one record per join task, saved as JSON between its
stages), ``data_prep.beam`` (one per split and bundle, merged by a combiner)
and so the TFDS builder all count with :class:`SplitStats`, so their stats.json
agree by construction: the same counters, the same first bad-row examples
(by file and line, whatever the order rows were processed in), the same
summary.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import time

from data_prep import grouping
from esmm_tf import features as F

EXAMPLES_PER_KIND = 5  # bad-row examples kept per kind


class ConvertError(Exception):
    """The conversion cannot finish (too many bad rows, misaligned inputs...)."""


def check_options(config) -> None:
    """The options both converters share (``data_prep.convert``'s and
    ``data_prep.beam_convert``'s configs), each in its range; else a
    ConvertError naming the flag. NaN is never in range."""
    if not config.min_count >= 0:
        raise ConvertError(f"--min_count must be >= 0, got {config.min_count}")
    if not 0 <= config.max_bad_fraction <= 1:
        raise ConvertError(f"--max_bad_fraction must be in [0, 1], got {config.max_bad_fraction}")
    if not config.max_group_size >= 1:
        raise ConvertError(f"--max_group_size must be >= 1, got {config.max_group_size}")
    if not config.num_shards >= 0:
        raise ConvertError(f"--num_shards must be >= 0 (0: automatic), got {config.num_shards}")
    for name, low in (("workers", 0), ("memory_budget_mb", 1)):
        value = getattr(config, name, low)
        if not value >= low:
            raise ConvertError(f"--{name} must be >= {low}, got {value}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _first_examples(examples: list) -> list:
    return sorted(examples)[:EXAMPLES_PER_KIND]


def _add_counts(total: dict, part: dict) -> None:
    for key, n in part.items():
        total[key] = total.get(key, 0) + n


@dataclasses.dataclass
class SplitStats:
    """What one task counted (merge with :meth:`merge`; summarize the merged
    record of a split with :func:`summarize_split`)."""

    rows_read: int = 0
    impressions: int = 0
    records: int = 0
    clicks: int = 0
    conversions: int = 0
    conversion_without_click: int = 0
    bad_rows: dict[str, int] = dataclasses.field(default_factory=dict)  # kind -> rows
    # kind -> [(path, line, message)]: the first EXAMPLES_PER_KIND by file and line
    # (up to twice as many before a merge).
    bad_examples: dict[str, list] = dataclasses.field(default_factory=dict)
    ignored_features: dict[str, int] = dataclasses.field(default_factory=dict)  # field -> ids
    record_sizes: dict[str, int] = dataclasses.field(default_factory=dict)  # grouping.add_size

    def add_bad(self, kind: str, path: str, lineno: int, message: str) -> None:
        """Counts a bad row of ``kind`` at ``path:lineno``."""
        self.bad_rows[kind] = self.bad_rows.get(kind, 0) + 1
        examples = self.bad_examples.setdefault(kind, [])
        examples.append((path, lineno, message))
        if len(examples) > 2 * EXAMPLES_PER_KIND:
            examples[:] = _first_examples(examples)

    def count_ignored(self, feats) -> None:
        """Counts the ids of fields outside the spec (a ``raw.FeatureArrays``)."""
        _add_counts(self.ignored_features, ignored_counts(feats))

    def add_ignored(self, counts: dict[str, int]) -> None:
        _add_counts(self.ignored_features, counts)

    def add_record(self, rows) -> None:
        """Counts one written record of ``rows`` (``raw.SkeletonRow``s)."""
        self.records += 1
        grouping.add_size(self.record_sizes, len(rows))
        self.impressions += len(rows)
        self.clicks += sum(r.click for r in rows)
        self.conversions += sum(r.conversion for r in rows)

    def merge(self, other: SplitStats) -> SplitStats:
        """Adds ``other`` into this record; returns it."""
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        _add_counts(self.bad_rows, other.bad_rows)
        for kind, examples in other.bad_examples.items():
            merged = self.bad_examples.get(kind, []) + [tuple(e) for e in examples]
            self.bad_examples[kind] = _first_examples(merged)
        _add_counts(self.ignored_features, other.ignored_features)
        grouping.merge_sizes(self.record_sizes, other.record_sizes)
        return self

    def to_json(self) -> dict:
        """A JSON-able dict (:meth:`from_json` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> SplitStats:
        names = {f.name for f in dataclasses.fields(cls)}
        out = cls(**{k: v for k, v in obj.items() if k in names})
        out.bad_examples = {k: [tuple(e) for e in v] for k, v in out.bad_examples.items()}
        return out

    def counts(self) -> dict:
        """The merged counts in stats.json's form: bad rows by kind (sorted) and
        their examples as sorted ``"path:line: message"`` strings."""
        out = {name: getattr(self, name) for name in _COUNTERS}
        out["bad_rows"] = dict(sorted(self.bad_rows.items()))
        out["bad_examples"] = {
            kind: sorted(f"{p}:{n}: {m}" for p, n, m in _first_examples(examples))
            for kind, examples in sorted(self.bad_examples.items())
        }
        out["ignored_features"] = dict(self.ignored_features)
        out["record_sizes"] = self.record_sizes
        return out


_COUNTERS = tuple(f.name for f in dataclasses.fields(SplitStats) if f.type == "int")


def ignored_counts(feats) -> dict[str, int]:
    """Ids per field outside the spec in a ``raw.FeatureArrays``."""
    out: dict[str, int] = {}
    for field, n in feats.ignored.items():
        key = field.decode("ascii", "replace")  # two fields may decode alike: add them
        out[key] = out.get(key, 0) + n
    return out


def merged(parts) -> SplitStats:
    total = SplitStats()
    for part in parts:
        total.merge(part)
    return total


def summarize_split(split: str, stats: SplitStats, shards: int, config) -> dict:
    """A split's entry of stats.json: its counts, rates and totals; raises
    ConvertError when the split has no valid impression or too many bad rows
    (``config`` needs ``max_bad_fraction`` and ``keep_conversion_without_click``)."""
    s = stats.counts()
    s["bad_rows_total"] = sum(s["bad_rows"].values())
    s["bad_fraction"] = s["bad_rows_total"] / max(s["rows_read"], 1)
    s["ctr"] = s["clicks"] / max(s["impressions"], 1)
    s["cvr"] = s["conversions"] / max(s["clicks"], 1)
    s["ctcvr"] = s["conversions"] / max(s["impressions"], 1)
    s["shards"] = shards
    s["impressions_per_record"] = grouping.size_summary(s.pop("record_sizes"))
    s["conversion_without_click_kept"] = config.keep_conversion_without_click
    if s["impressions"] == 0:
        raise ConvertError(
            f"no valid impressions in the {split} split; bad rows: {s['bad_rows']}; "
            f"examples: {s['bad_examples']}"
        )
    if s["bad_fraction"] > config.max_bad_fraction:
        examples = "\n".join(e for ex in s["bad_examples"].values() for e in ex)
        raise ConvertError(
            f"{split}: {s['bad_rows_total']:,} bad rows of {s['rows_read']:,} "
            f"({s['bad_fraction']:.4%}) exceed --max_bad_fraction={config.max_bad_fraction}"
            f"\nby kind: {s['bad_rows']}\nexamples:\n{examples}"
        )
    return s


def dataset_stats(config, split_stats, fields, inputs, fingerprint) -> dict:
    """stats.json's content: per split, per field (in the spec's order), the
    settings and the inputs' fingerprint; nothing that varies between runs of
    the same command."""
    return {
        "splits": split_stats,
        "fields": {field.id: fields[field.id] for field in F.FIELDS if field.id in fields},
        "vocab_from": getattr(config, "vocab_from", None),
        "min_count": config.min_count,
        "max_group_size": config.max_group_size,
        "has_ground_truth": all(files["ground_truth"] for files in inputs.values()),
        "fingerprint": fingerprint,
    }


def timing_stats(
    split_stats, raw_bytes, start, workers: int = 0, main_with_workers: float | None = None
) -> dict:
    """convert_timings.json's content: wall time, throughput and the peak RSS of
    this process and its largest worker (child) process. With ``workers`` and
    this process's peak while they ran (``main_with_workers``), also
    ``total_bound``: the most the process tree can have held at once, every
    worker at the largest one's peak beside this process then, or this
    process's own peak after them (the vocabulary)."""
    seconds = time.time() - start
    impressions = sum(s["impressions"] for s in split_stats.values())
    rss = {"main": max_rss_mb(), "largest_worker": max_rss_mb(resource.RUSAGE_CHILDREN)}
    if main_with_workers is not None:
        rss["main_with_workers"] = main_with_workers
        rss["total_bound"] = round(
            max(main_with_workers + workers * rss["largest_worker"], rss["main"]), 1
        )
    return {
        "seconds": round(seconds, 2),
        "impressions_per_second": round(impressions / seconds, 1),
        "raw_mb_per_second": round(raw_bytes / 2**20 / seconds, 2),
        "peak_rss_mb": rss,
    }


def max_rss_mb(who=resource.RUSAGE_SELF) -> float:
    """Peak RSS in MB of this process (or of its largest waited-for child)."""
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # ru_maxrss is in KiB on Linux


def print_summary(stats: dict, out_dir: str, timings: dict | None = None) -> None:
    """Logs a table of stats.json's splits (and the timings) to stderr."""
    log(f"\nwrote {out_dir}")
    log(
        f"{'split':<6} {'impressions':>12} {'records':>9} {'imp/rec':>7} {'CTR':>7} {'CVR':>7} "
        f"{'bad rows':>9}"
    )
    for split, s in stats["splits"].items():
        log(
            f"{split:<6} {s['impressions']:>12,} {s['records']:>9,} "
            f"{s['impressions_per_record']['mean']:>7.1f} {s['ctr']:>7.4f} "
            f"{s['cvr']:>7.4f} {s['bad_rows_total']:>9,}"
        )
    if timings:
        t = timings
        log(
            f"{t['seconds']:.1f} s, {t['impressions_per_second']:,.0f} impressions/s, "
            f"{t['raw_mb_per_second']:.1f} raw MB/s, peak RSS {t['peak_rss_mb']['main']:.0f}"
            f" MB (main) / {t['peak_rss_mb']['largest_worker']:.0f} MB (largest worker)"
            + (
                f", {t['peak_rss_mb']['total_bound']:.0f} MB in all at most"
                if "total_bound" in t["peak_rss_mb"]
                else ""
            )
        )
