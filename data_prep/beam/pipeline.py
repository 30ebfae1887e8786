"""The Beam graph of the conversion (see data_prep/beam_convert.py for the driver).

Stages (keys in brackets; "light" elements are line numbers, "heavy" ones raw
row bytes):

1. Read every raw file in parallel with exact line numbers (``lines.py``);
   join the ground truth to the skeleton by [split, line] where there is one.
   Skeleton lines are also grouped by [split, sample_id]: every later line of
   an id is a duplicate (``data_prep.convert``'s rule), a side input of 2.
2. Parse and validate every row with ``data_prep.raw`` (bad rows, duplicate
   sample_ids, conversions without click, the ground truth's sample ids are
   counted here); each valid row goes out light and heavy, keyed by [split,
   common_feature_index]; a skeleton row left out goes out light only, as a
   marker of where its index (its raw fourth column) first appears.
3. Join and group (light) [split, index]: the index's first common_features
   row is the user row (a later valid one is a duplicate); skeleton rows of an
   index without a valid user row are bad. The index's kept rows, in file
   order, are cut into groups of at most ``max_group_size`` impressions, as
   ``data_prep.convert`` cuts them, whatever the order of the rows.
4. Build (heavy) [split, index]: CoGroupByKey of the index's user row, its
   skeleton rows and its groups -> one ``records.build_example`` per group;
   train ids are counted for the vocabularies.
5. Write [split, shard]: the shard's records in ``data_prep.convert``'s order
   (by the line where their index first appears among the skeleton rows, then
   in order within the index) -> one TFRecord file (every shard, empty ones
   too).
6. Vocabularies: ``CombinePerKey(sum)`` over [field, id] -> one file per field
   by ``esmm_tf.vocab.write_vocab``. Stats: ``CombinePerKey(MergeStats)`` over
   [split].

Shards are ``crc32(common_feature_index) % num_shards`` like the single-machine
converter's partitions, so with the same ``--num_shards`` the output is
byte-identical to ``data_prep.convert``'s.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import tempfile
import zlib

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems

from data_prep import duplicates, raw, raw_layout
from data_prep import stats as stats_lib
from data_prep.beam import stats as S
from data_prep.beam.lines import ReadNumberedLines
from data_prep.records import build_example
from data_prep.tfrecord import frame_record
from esmm_tf import data_layout, vocab
from esmm_tf import features as F

HEAVY = "heavy"
SEEN = "f"  # a skeleton row left out: only where its index first appears matters
META_DIR = "_beam"  # the pipeline's results for the driver, under the work dir


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the pipeline needs to know (picklable; shipped to workers)."""

    inputs: dict  # split -> {"skeleton": path, "common": path, "ground_truth": path | None}
    shards: dict  # split -> number of shards
    work_dir: str
    min_count: int
    max_group_size: int
    keep_conversion_without_click: bool
    chunk_bytes: int

    def path(self, split: str, kind: str) -> str:
        return self.inputs[split][kind]

    def has_ground_truth(self, split: str) -> bool:
        return bool(self.inputs[split]["ground_truth"])

    def shard_of(self, split: str, cfi: bytes) -> int:
        return zlib.crc32(cfi) % self.shards[split]


# ---------------------------------------------------------------------------
# 1. Ground truth: joined to the skeleton by line.


def _route_ground_truth(line, plan: Plan):
    source, lineno = line[0], line[1]
    split, kind = source[0], source[1]
    if plan.has_ground_truth(split) and kind in ("skeleton", "ground_truth"):
        yield pvalue.TaggedOutput("join", ((split, lineno), line))
    else:
        yield line, None


class _PairGroundTruth(S.StatsDoFn):
    def process(self, item, plan: Plan):
        (split, lineno), lines = item
        skeleton = [line for line in lines if line[0][1] == "skeleton"]
        truth = [line for line in lines if line[0][1] == "ground_truth"]
        sk_path, gt_path = plan.path(split, "skeleton"), plan.path(split, "ground_truth")
        if skeleton and truth:
            yield skeleton[0], truth[0][2]
        elif skeleton:
            message = f"{gt_path} has fewer rows than {sk_path} (ends before line {lineno})"
            self.delta(split).add_fatal(lineno, message)
        else:
            self.delta(split).add_fatal(lineno, f"{gt_path} has more rows than {sk_path}")


# ---------------------------------------------------------------------------
# 1b. Duplicate sample_ids: every later skeleton line of an id, as convert finds them.


def _sample_id(line):
    """((split, sample_id), line number) of a skeleton line whose first column is
    a sample_id (any line, a bad row too: an earlier bad row still comes first)."""
    (split, kind, _), lineno, content = line[0], line[1], line[2]
    if kind == "skeleton":
        sample_id = raw.sample_id_or(content.split(b",", 1)[0], -1)
        if sample_id >= 0:
            yield (split, sample_id), lineno


def _repeats(item):
    """((split, line), (sample_id, first line)) of every later line of an id."""
    (split, sample_id), lines = item
    lines = sorted(lines)
    for lineno in lines[1:]:
        yield (split, lineno), (sample_id, lines[0])


# ---------------------------------------------------------------------------
# 2. Parse.


class _Parse(S.StatsDoFn):
    """(line, ground truth content or None) -> light (main) and heavy outputs."""

    def process(self, item, plan: Plan, repeats: dict):
        (source, lineno, content, has_newline), truth = item
        split, kind, path = source
        self.delta(split).rows_read += 1
        if kind == "common":
            yield from self._common(split, path, lineno, content, has_newline)
        else:
            repeated = repeats.get((split, lineno))
            yield from self._skeleton(
                split, path, lineno, content, has_newline, truth, plan, repeated
            )

    def _common(self, split, path, lineno, content, has_newline):
        try:
            cfi, feats = raw.parse_common_row(content)
        except raw.BadRow as e:
            self.bad(split, raw.classify(e, has_newline), path, lineno, str(e))
            yield (
                (split, raw_layout.index_column(content, raw_layout.COMMON_INDEX_COLUMN)),
                ("c", lineno, None),
            )
            return
        ignored = stats_lib.ignored_counts(feats)
        yield (split, cfi), ("c", lineno, ignored)
        yield pvalue.TaggedOutput(HEAVY, ((split, cfi), ("c", lineno, content)))

    def _skeleton(self, split, path, lineno, content, has_newline, truth, plan: Plan, repeated):
        try:
            row = raw.parse_skeleton_row(content)
        except raw.BadRow as e:
            self.bad(split, raw.classify(e, has_newline), path, lineno, str(e))
            yield (
                (split, raw_layout.index_column(content, raw_layout.SKELETON_INDEX_COLUMN)),
                (SEEN, lineno),
            )
            return
        key = (split, row.common_feature_index)
        if repeated is not None:  # after the parse, before the ground truth: as convert
            sample_id, first = repeated
            message = f"sample_id {sample_id} seen before (line {first}); keeping the first"
            self.bad(split, duplicates.DUPLICATE_SAMPLE_ID, path, lineno, message)
            yield key, (SEEN, lineno)
            return
        if plan.has_ground_truth(split):
            gt_path = plan.path(split, "ground_truth")
            try:
                gt_row = raw.parse_ground_truth_row(truth)
            except raw.BadRow as e:
                self.bad(split, e.kind, gt_path, lineno, str(e))
                yield key, (SEEN, lineno)
                return
            if gt_row.sample_id != row.sample_id:
                message = (
                    f"{gt_path}:{lineno}: sample_id {gt_row.sample_id} "
                    f"does not match {path}:{lineno} ({row.sample_id}); "
                    "ground truth rows must follow the skeleton's order"
                )
                self.delta(split).add_fatal(lineno, message)
                return
        if row.conversion and not row.click:
            self.delta(split).conversion_without_click += 1
            if not plan.keep_conversion_without_click:
                yield key, (SEEN, lineno)
                return
        yield key, ("s", lineno)
        yield pvalue.TaggedOutput(HEAVY, (key, ("s", lineno, content, truth)))


# ---------------------------------------------------------------------------
# 3. Join the line numbers of one index and cut its groups.


class _JoinIndex(S.StatsDoFn):
    def process(self, item, plan: Plan):
        (split, cfi), values = item
        values = list(values)
        common = sorted((v for v in values if v[0] == "c"), key=lambda v: v[1])
        skeleton = sorted(v[1] for v in values if v[0] == "s")
        common_path = plan.path(split, "common")
        user_ok = bool(common) and common[0][2] is not None
        for _, lineno, ignored in common[1:]:
            if ignored is not None:  # bad rows were counted by kind when parsed
                message = f"common_feature_index {cfi.decode()} seen before; keeping the first"
                self.bad(split, raw.DUPLICATE_COMMON_FEATURE_INDEX, common_path, lineno, message)
        if user_ok:
            self.delta(split).add_ignored(common[0][2])
            if skeleton:
                first = min(v[1] for v in values if v[0] in ("s", SEEN))
                size = plan.max_group_size
                sizes = [len(skeleton[i : i + size]) for i in range(0, len(skeleton), size)]
                yield (split, cfi), ("g", common[0][1], first, sizes)
        else:
            kind = raw.BAD_COMMON_ROW if common else raw.UNKNOWN_COMMON_FEATURE_INDEX
            reason = "refers to a bad row of " if common else "is not in "
            message = f"common_feature_index {cfi.decode()} {reason}{common_path}"
            for lineno in skeleton:
                self.bad(split, kind, plan.path(split, "skeleton"), lineno, message)


# ---------------------------------------------------------------------------
# 4. Build the records of one index.


class _Build(S.StatsDoFn):
    def process(self, item, plan: Plan):
        (split, cfi), values = item
        plan_groups, skeleton, common = None, [], {}
        for v in values:
            if v[0] == "g":
                plan_groups = v
            elif v[0] == "s":
                skeleton.append(v)
            else:
                common[v[1]] = v[2]
        if plan_groups is not None:  # else no kept rows (_JoinIndex counted the bad ones)
            yield from self._records(split, cfi, plan_groups, skeleton, common, plan)

    def _records(self, split, cfi, plan_groups, skeleton, common, plan: Plan):
        _, user_line, first, groups = plan_groups
        _, feats = raw.parse_common_row(common[user_line])
        user = raw.PackedFeatures.pack(feats)
        skeleton.sort(key=lambda v: v[1])
        if sum(groups) != len(skeleton):
            raise AssertionError(f"{split} {cfi!r}: groups do not cover the kept rows")
        has_truth = plan.has_ground_truth(split)
        shard = plan.shard_of(split, cfi)
        delta = self.delta(split)
        counts: collections.Counter | None = collections.Counter() if split == "train" else None
        start = 0
        for k, size in enumerate(groups):
            group = skeleton[start : start + size]
            start += size
            rows = [raw.parse_skeleton_row(v[2]) for v in group]
            truth = [raw.parse_ground_truth_row(v[3]) for v in group] if has_truth else None
            yield (split, shard), ((first, k), build_example(user, rows, truth))
            delta.add_record(rows)
            for row in rows:
                delta.count_ignored(row.features)
                if counts is not None:
                    for k, field in enumerate(F.ITEM_FIELDS):
                        counts.update((field.id, i) for i in row.features.ids[k])
        if counts is not None:
            for k, field in enumerate(F.USER_FIELDS):
                for i in user.field(k)[0]:
                    counts[field.id, i] += len(skeleton)  # once per impression
            for key, n in counts.items():
                yield pvalue.TaggedOutput("ids", (key, n))


# ---------------------------------------------------------------------------
# 5-6. Write shards, vocabularies and the results for the driver.


def _write_shard(item, plan: Plan) -> None:
    (split, shard), records = item
    records = sorted((r for r in records if r is not None), key=lambda r: r[0])
    name = data_layout.shard_name(shard, plan.shards[split])
    with FileSystems.create(os.path.join(plan.work_dir, split, name)) as f:
        for _, record in records:
            f.write(frame_record(record))


def _write_vocab(item, plan: Plan):
    field_id, pairs = item
    pairs = [p for p in pairs if p is not None]
    ids = np.array([i for i, _ in pairs], np.int64)
    counts = np.array([n for _, n in pairs], np.int64)
    with tempfile.TemporaryDirectory() as tmp:  # write_vocab writes local files
        local = os.path.join(tmp, "vocab.tsv")
        size = vocab.write_vocab(local, ids, counts, plan.min_count)
        with open(local, "rb") as f:
            data = f.read()
    with FileSystems.create(data_layout.vocab_file(plan.work_dir, field_id)) as f:
        f.write(data)
    return field_id, {"distinct_ids": int(ids.size), "vocab_size": size}


def _write_json(items, path: str) -> None:
    with FileSystems.create(path) as f:
        f.write(json.dumps(dict(items), sort_keys=True).encode())


def meta_path(work_dir: str, name: str) -> str:
    return os.path.join(work_dir, META_DIR, name)


def build(p: beam.Pipeline, plan: Plan) -> None:
    """Adds the conversion to pipeline ``p``."""
    sources = [
        (split, kind, path)
        for split, files in plan.inputs.items()
        for kind, path in files.items()
        if path
    ]
    lines = p | "Sources" >> beam.Create(sources) | "Read" >> ReadNumberedLines(plan.chunk_bytes)

    routed = lines | "RouteTruth" >> beam.FlatMap(_route_ground_truth, plan).with_outputs(
        "join", main="alone"
    )
    paired = (
        routed.join
        | "ByLine" >> beam.GroupByKey()
        | "PairTruth" >> beam.ParDo(_PairGroundTruth(), plan).with_outputs(S.STATS, main="rows")
    )
    repeats = (
        lines
        | "SampleIds" >> beam.FlatMap(_sample_id)
        | "BySampleId" >> beam.GroupByKey()
        | "Repeats" >> beam.FlatMap(_repeats)
    )
    parsed = (
        (routed.alone, paired.rows)
        | "AllRows" >> beam.Flatten()
        | "Parse"
        >> beam.ParDo(_Parse(), plan, pvalue.AsDict(repeats)).with_outputs(
            S.STATS, HEAVY, main="light"
        )
    )
    joined = (
        parsed.light
        | "ByIndex" >> beam.GroupByKey()
        | "JoinIndex" >> beam.ParDo(_JoinIndex(), plan).with_outputs(S.STATS, main="kept")
    )
    built = (
        (parsed[HEAVY], joined.kept)
        | "HeavyAndGroups" >> beam.Flatten()
        | "ByIndexHeavy" >> beam.GroupByKey()
        | "Build" >> beam.ParDo(_Build(), plan).with_outputs(S.STATS, "ids", main="ex")
    )

    every_shard = [((split, shard), None) for split, n in plan.shards.items() for shard in range(n)]
    _ = (
        (built.ex, p | "EveryShard" >> beam.Create(every_shard))
        | "ShardRecords" >> beam.Flatten()
        | "ByShardRecords" >> beam.GroupByKey()
        | "WriteShards" >> beam.Map(_write_shard, plan)
    )

    if "train" in plan.inputs:  # vocabularies from train only (none without it)
        every_field = [(field.id, None) for field in F.FIELDS]
        _ = (
            (
                built.ids
                | "CountIds" >> beam.CombinePerKey(sum)
                | "ByField" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1]))),
                p | "EveryField" >> beam.Create(every_field),
            )
            | "FieldIds" >> beam.Flatten()
            | "GroupField" >> beam.GroupByKey()
            | "WriteVocab" >> beam.Map(_write_vocab, plan)
            | "FieldsToList" >> beam.combiners.ToList()
            | "WriteFields" >> beam.Map(_write_json, meta_path(plan.work_dir, "fields.json"))
        )

    _ = (
        (paired[S.STATS], parsed[S.STATS], joined[S.STATS], built[S.STATS])
        | "AllStats" >> beam.Flatten()
        | "MergeStats" >> beam.CombinePerKey(S.MergeStats())
        | "StatsToList" >> beam.combiners.ToList()
        | "WriteStats" >> beam.Map(_write_json, meta_path(plan.work_dir, "stats.json"))
    )
