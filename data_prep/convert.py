"""Raw Ali-CCP logs -> per-field vocabularies + grouped TFRecord shards.

    python -m data_prep.convert --raw_dir=RAW --out_dir=DATA [--min_count=N]
        [--max_bad_fraction=F] [--max_group_size=256] [--num_shards=0] [--workers=0]
        [--vocab_from=DATA_OR_RUN_DIR]

How it streams with bounded memory (a partitioned hash join):

1. *Partition*: each raw file is read once and every line is appended, with
   its line number, to one of P partition files chosen by a hash of its
   ``common_feature_index`` (skeleton lines carry their ground-truth row
   along). P is chosen so that one partition of common_features fits the
   memory budget.
2. *Join and write*: each partition is one task (tasks run on ``--workers``
   processes): load its common_features rows into a dict, read its skeleton
   rows grouped by index whatever their order (``data_prep.grouping``: an
   index of 16 bytes a line, then the lines in group order), cut each index's
   rows into records of at most ``--max_group_size`` impressions (in file
   order; records in order of their index's first row) and write one
   TFRecord shard. Train tasks also count ids per field.
3. *Finish*: merge the counts into vocabularies (train only; or copy those of
   ``--vocab_from``), write ``convert_timings.json`` then ``stats.json``, and
   rename the work directory ``<out_dir>.partial`` to ``<out_dir>``
   (``data_prep.publish``).

A raw directory may hold one split only (e.g. new logs to score: test files
only); the output then holds that split only.

Every task writes under a temporary name and renames when complete, so an
interrupted run resumes where it stopped (same inputs and options), a run
killed while publishing is completed by the rerun (``data_prep.publish``), and
``<out_dir>`` only ever appears complete. Output is deterministic: the same
input gives byte-identical shards and stats.json, whatever the number of
workers (timings and memory go to convert_timings.json).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import shutil
import time
import zlib
from collections.abc import Iterator

import numpy as np

from data_prep import duplicates, grouping, publish, raw, raw_layout
from data_prep import stats as stats_lib
from data_prep.counting import IdCounter
from data_prep.records import build_example
from data_prep.tfrecord import TFRecordWriter
from esmm_tf import config_flags, data_layout, files, vocab
from esmm_tf import features as F
from esmm_tf.config_flags import option

_PROGRESS_SECONDS = 5.0

ConvertError = stats_lib.ConvertError
log = stats_lib.log


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """The conversion's options; ``python -m data_prep.convert`` has one flag
    per field (``esmm_tf.config_flags``), with the field's name, default and help."""

    raw_dir: str = option(help="Directory with the raw Ali-CCP csv(.gz) files.")
    out_dir: str = option(help="Output dataset directory (created atomically).")
    min_count: int = option(2, "Ids seen fewer times in train map to OOV.")
    max_bad_fraction: float = option(0.001, "Fail if more rows than this are malformed.")
    max_group_size: int = option(256, "Max impressions per record.")
    num_shards: int = option(0, "Shards per split (0: automatic).")
    workers: int = option(0, "Worker processes (0: all cores).")
    memory_budget_mb: int = option(128, "Raw common_features MB held per worker.")
    keep_conversion_without_click: bool = option(
        False, "Keep rows with conversion=1 and click=0 (dropped and counted by default)."
    )
    overwrite: bool = option(False, "Replace an existing out_dir.")
    vocab_from: str | None = option(
        None,
        "Reuse the vocabularies of this converted data dir or training run dir "
        "(its vocab/<field>.tsv) instead of building them from train.",
    )

    def __post_init__(self):
        stats_lib.check_options(self)


# ---------------------------------------------------------------------------
# Stage 1: partition raw files by common_feature_index.


def _partition_task(args: tuple) -> str:
    """Splits one raw file into ``num_parts`` files; returns a progress line. A
    skeleton file's sample_ids are checked for duplicates on the way."""
    path, gt_path, out_prefix, num_parts, key_column, label = args
    sample_ids = duplicates.SampleIds() if key_column == raw_layout.SKELETON_INDEX_COLUMN else None
    add_id = sample_ids.append if sample_ids is not None else None
    start = time.time()
    tmp_paths = [f"{out_prefix}-{p:05d}.tmp" for p in range(num_parts)]
    outs = [open(p, "wb", buffering=1 << 18) for p in tmp_paths]  # noqa: SIM115 (closed below)
    gt_lines = _ground_truth_lines(gt_path) if gt_path else None
    n = 0
    last = start
    try:
        for lineno, content, has_newline in raw.read_lines(path):
            gt = b""
            if gt_lines is not None:
                gt = next(gt_lines, None)
                if gt is None:
                    raise ConvertError(
                        f"{gt_path} has fewer rows than {path} (ends before line {lineno})"
                    )
            cols = content.split(b",", key_column + 1)
            key = cols[key_column] if len(cols) > key_column else b""
            if sample_ids is not None:
                token = cols[0]
                add_id(  # raw.sample_id_or, inlined: the common case costs no call
                    int(token)
                    if len(token) < 19 and token.isdigit()
                    else raw.sample_id_or(token, duplicates.NO_ID)
                )
            out = outs[zlib.crc32(key) % num_parts]
            out.write(b"%d\t%d\t%s\t%s\n" % (lineno, has_newline, gt, content))
            n += 1
            if n % 65536 == 0 and time.time() - last > _PROGRESS_SECONDS:
                last = time.time()
                log(f"  {label}: {n:,} lines ({n / (last - start):,.0f} lines/s)")
        if gt_lines is not None and next(gt_lines, None) is not None:
            raise ConvertError(f"{gt_path} has more rows than {path}")
    finally:
        for out in outs:
            out.close()
    for p, tmp in enumerate(tmp_paths):
        os.replace(tmp, f"{out_prefix}-{p:05d}")
    if sample_ids is not None:
        sample_ids.save(_duplicates_path(out_prefix))
    _touch(out_prefix + ".done")
    return f"{label}: {n:,} lines partitioned in {time.time() - start:.1f} s"


def _duplicates_path(prefix: str) -> str:
    return prefix + "-duplicates.npy"


def _ground_truth_lines(path: str) -> Iterator[bytes]:
    for _, content, _ in raw.read_lines(path):
        yield content


def _read_partition(path: str) -> Iterator[tuple[int, bool, bytes, bytes]]:
    with open(path, "rb", buffering=1 << 20) as f:
        for line in f:
            yield _partition_fields(line[:-1])


def _partition_fields(line: bytes) -> tuple[int, bool, bytes, bytes]:
    """(line number, ends with newline, ground truth, content) of a partition line."""
    lineno, has_newline, gt, content = line.split(b"\t", 3)
    return int(lineno), has_newline == b"1", gt, content


def _skeleton_key(line: bytes) -> bytes:
    """The common_feature_index column of a skeleton partition line (raw, unparsed)."""
    return raw_layout.index_column(line.split(b"\t", 3)[3], raw_layout.SKELETON_INDEX_COLUMN)


# ---------------------------------------------------------------------------
# Stage 2: join one partition and write its shard.


@dataclasses.dataclass(frozen=True)
class _JoinTask:
    split: str
    part: int
    num_parts: int
    work_dir: str
    skeleton_path: str
    common_path: str
    ground_truth_path: str | None
    count_ids: bool
    max_group_size: int
    keep_conversion_without_click: bool

    @property
    def stats_path(self) -> str:
        return os.path.join(self.work_dir, "tasks", f"{self.split}-{self.part:05d}.json")

    @property
    def counts_path(self) -> str:
        return os.path.join(self.work_dir, "tasks", f"{self.split}-{self.part:05d}.npz")

    @property
    def shard_path(self) -> str:
        name = data_layout.shard_name(self.part, self.num_parts)
        return os.path.join(data_layout.split_dir(self.work_dir, self.split), name)

    def partition(self, kind: str) -> str:
        return os.path.join(self.work_dir, "parts", f"{self.split}-{kind}-{self.part:05d}")

    @property
    def duplicates_path(self) -> str:
        return _duplicates_path(os.path.join(self.work_dir, "parts", f"{self.split}-skeleton"))


_BAD_COMMON = object()


def _join_task(task: _JoinTask) -> dict:
    start = time.time()
    stats = stats_lib.SplitStats()
    users: dict[bytes, object] = {}
    for lineno, has_newline, _, content in _read_partition(task.partition("common")):
        stats.rows_read += 1
        try:
            cfi, feats = raw.parse_common_row(content)
        except raw.BadRow as e:
            stats.add_bad(raw.classify(e, has_newline), task.common_path, lineno, str(e))
            users.setdefault(
                raw_layout.index_column(content, raw_layout.COMMON_INDEX_COLUMN), _BAD_COMMON
            )
            continue
        if cfi in users:
            stats.add_bad(
                raw.DUPLICATE_COMMON_FEATURE_INDEX,
                task.common_path,
                lineno,
                f"common_feature_index {cfi.decode()} seen before; keeping the first",
            )
            continue
        users[cfi] = raw.PackedFeatures.pack(feats)
        stats.count_ignored(feats)

    counters = {f.id: IdCounter() for f in F.FIELDS} if task.count_ids else None
    tmp_shard = task.shard_path + ".tmp"
    skips = duplicates.Skips(task.duplicates_path)
    group_user, group_rows, group_gt = None, [], []

    def flush() -> None:
        if not group_rows:
            return
        user = group_user
        gt = group_gt if task.ground_truth_path else None
        writer.write(build_example(user, group_rows, gt))
        stats.add_record(group_rows)
        if counters is not None:
            for k, field in enumerate(F.USER_FIELDS):
                counters[field.id].add(np.array(user.field(k)[0], np.int64), len(group_rows))
            for k, field in enumerate(F.ITEM_FIELDS):
                ids = [i for r in group_rows for i in r.features.ids[k]]
                counters[field.id].add(np.array(ids, np.int64))

    # Every row of an index, wherever it is in the file: rows in group order
    # (indices by first appearance, each one's rows in file order).
    skeleton_rows = grouping.lines_by_group(task.partition("skeleton"), _skeleton_key)
    current_group = -1
    with TFRecordWriter(tmp_shard) as writer:
        for group, line in skeleton_rows:
            if group != current_group:
                flush()
                current_group, group_rows, group_gt = group, [], []
            lineno, has_newline, gt_line, content = _partition_fields(line)
            stats.rows_read += 1
            try:
                row = raw.parse_skeleton_row(content)
            except raw.BadRow as e:
                stats.add_bad(raw.classify(e, has_newline), task.skeleton_path, lineno, str(e))
                continue
            repeated = skips.check(lineno)
            if repeated is not None:
                stats.add_bad(
                    duplicates.DUPLICATE_SAMPLE_ID,
                    task.skeleton_path,
                    lineno,
                    f"sample_id {repeated[0]} seen before (line {repeated[1]}); keeping the first",
                )
                continue
            gt_row = None
            if task.ground_truth_path:
                try:
                    gt_row = raw.parse_ground_truth_row(gt_line)
                except raw.BadRow as e:
                    stats.add_bad(e.kind, task.ground_truth_path, lineno, str(e))
                    continue
                if gt_row.sample_id != row.sample_id:
                    raise ConvertError(
                        f"{task.ground_truth_path}:{lineno}: sample_id {gt_row.sample_id} "
                        f"does not match {task.skeleton_path}:{lineno} ({row.sample_id}); "
                        "ground truth rows must follow the skeleton's order"
                    )
            if row.conversion and not row.click:
                stats.conversion_without_click += 1
                if not task.keep_conversion_without_click:
                    continue
            user = users.get(row.common_feature_index)
            if user is None or user is _BAD_COMMON:
                kind = raw.UNKNOWN_COMMON_FEATURE_INDEX if user is None else raw.BAD_COMMON_ROW
                stats.add_bad(
                    kind,
                    task.skeleton_path,
                    lineno,
                    f"common_feature_index {row.common_feature_index.decode()} "
                    + ("is not in " if user is None else "refers to a bad row of ")
                    + task.common_path,
                )
                continue
            stats.count_ignored(row.features)
            if len(group_rows) >= task.max_group_size:
                flush()
                group_rows, group_gt = [], []
            group_user = user
            group_rows.append(row)
            group_gt.append(gt_row)
        flush()
    os.replace(tmp_shard, task.shard_path)

    if counters is not None:
        arrays = {}
        for field_id, counter in counters.items():
            ids, counts = counter.result()
            arrays[f"ids/{field_id}"], arrays[f"counts/{field_id}"] = ids, counts
        _atomic_npz(task.counts_path, arrays)
    out = {**stats.to_json(), "seconds": time.time() - start}
    files.write_json(task.stats_path, out)
    _remove_partitions(task)
    return out


def _remove_partitions(task: _JoinTask) -> None:
    """Removes a committed task's partitions (a rerun skips the task): doing
    it at once keeps the disk's peak near raw + partitions (the raw rows
    uncompressed, ~4x gzipped raw) rather than that plus all the shards."""
    for kind in ("skeleton", "common"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(task.partition(kind))


# ---------------------------------------------------------------------------
# Small file helpers.


def _touch(path: str) -> None:
    files.write_text(path, "")


def _atomic_npz(path: str, arrays: dict) -> None:
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_json(path: str):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# Orchestration.


def vocab_fingerprint(vocab_from: str) -> dict[str, str]:
    """sha256 of every field's vocabulary file under ``vocab_from`` (a converted
    data dir or a training run dir: both keep ``vocab/<field>.tsv``); a
    ConvertError names the first one missing or malformed."""
    try:
        digests = vocab.field_digests(vocab_from)
        vocab.check_files(vocab_from)  # before any work: the copy comes at the end
        return digests
    except data_layout.DatasetError as e:
        raise ConvertError(f"--vocab_from={vocab_from}: {e}") from None
    except FileNotFoundError as e:
        raise ConvertError(
            f"--vocab_from={vocab_from}: {e.filename} not found (expected a converted data "
            "dir or a training run dir, holding vocab/<field>.tsv for every field)"
        ) from None


def _check_out_dir(out_dir: str, inputs: dict, config: ConvertConfig) -> None:
    reads = [path for split in inputs.values() for path in split.values() if path]
    problem = publish.unsafe_out_dir(
        out_dir,
        reads + ([config.vocab_from] if config.vocab_from else []),
        config.overwrite,
        holds_dataset=os.path.exists(data_layout.stats_file(out_dir)),
        empty=not os.path.isdir(out_dir) or not os.listdir(out_dir),
    )
    if problem:
        raise ConvertError(problem)


def _same_in_earlier_format(fingerprint: dict, out_dir: str, work_dir: str) -> dict:
    """The fingerprint an earlier esmm_tf stored for these same inputs (mtimes
    in whole seconds), when ``out_dir`` or ``work_dir`` holds one: so that a
    finished conversion is still "nothing to do" and an interrupted one still
    resumes after the upgrade; else ``fingerprint``."""
    earlier = raw_layout.in_seconds(fingerprint)
    for path in (data_layout.stats_file(out_dir), os.path.join(work_dir, "fingerprint.json")):
        try:
            stored = _load_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(stored, dict) and path.endswith(data_layout.STATS_FILE):
            stored = stored.get("fingerprint")
        if stored == earlier:
            return earlier
    return fingerprint


def _prepare_work_dir(work_dir: str, fingerprint: dict) -> None:
    path = os.path.join(work_dir, "fingerprint.json")
    if os.path.isdir(work_dir):
        if os.path.exists(path) and _load_json(path) == fingerprint:
            log(f"resuming the interrupted conversion in {work_dir}")
            return
        log(f"discarding {work_dir}: it was made from other inputs or options")
        shutil.rmtree(work_dir)
    for sub in ("parts", "tasks", *fingerprint["partitions"]):  # the splits present
        os.makedirs(os.path.join(work_dir, sub), exist_ok=True)
    files.write_json(path, fingerprint)


def _run(pool, fn, tasks):
    if pool is None:
        yield from map(fn, tasks)
    else:
        yield from pool.imap_unordered(fn, tasks)


def convert(config: ConvertConfig) -> dict:
    """Runs the conversion; returns the stats (also written to stats.json)."""
    start = time.time()
    inputs = raw_layout.find_inputs(config.raw_dir)
    out_dir = os.path.normpath(config.out_dir)
    work_dir = out_dir + ".partial"
    workers = config.workers or os.cpu_count() or 1
    parts = {
        split: raw_layout.num_parts(
            files,
            num_shards=config.num_shards,
            memory_budget_mb=config.memory_budget_mb,
        )
        for split, files in inputs.items()
    }
    fingerprint = raw_layout.fingerprint(config, inputs, parts)
    if config.vocab_from:
        fingerprint["vocab_from"] = vocab_fingerprint(config.vocab_from)
    fingerprint = _same_in_earlier_format(fingerprint, out_dir, work_dir)

    _check_out_dir(out_dir, inputs, config)
    if publish.finish_interrupted(work_dir, out_dir, fingerprint):
        stats_path = data_layout.stats_file(out_dir)
        if os.path.exists(stats_path) and _load_json(stats_path).get("fingerprint") == fingerprint:
            return _load_json(stats_path)
    finished = publish.complete_stats(work_dir, fingerprint)
    if finished is not None and (config.overwrite or not os.path.exists(out_dir)):
        log(f"{work_dir} is complete: publishing it (an earlier run was killed while publishing)")
        publish.publish(work_dir, out_dir)
        stats_lib.print_summary(finished, out_dir)
        return finished

    if os.path.exists(out_dir):
        stats_path = data_layout.stats_file(out_dir)
        done = os.path.exists(stats_path) and _load_json(stats_path).get("fingerprint")
        if done == fingerprint and not config.overwrite:
            log(f"{out_dir} already holds this conversion; nothing to do (--overwrite redoes it)")
            return _load_json(stats_path)
        if not config.overwrite:
            if not os.listdir(out_dir):  # an empty directory: nothing to replace
                pass
            elif not done:
                raise ConvertError(
                    f"--out_dir={out_dir} holds no converted dataset (no "
                    f"{data_layout.STATS_FILE}); choose another --out_dir"
                )
            else:
                raise ConvertError(
                    f"{out_dir} holds another conversion (other inputs or options); "
                    "remove it or pass --overwrite"
                )
    _prepare_work_dir(work_dir, fingerprint)

    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        # Stage 1: partition.
        partition_tasks = []
        for split in inputs:
            for kind, column in (
                ("skeleton", raw_layout.SKELETON_INDEX_COLUMN),
                ("common", raw_layout.COMMON_INDEX_COLUMN),
            ):
                prefix = os.path.join(work_dir, "parts", f"{split}-{kind}")
                if os.path.exists(prefix + ".done"):
                    continue
                gt = inputs[split]["ground_truth"] if kind == "skeleton" else None
                partition_tasks.append(
                    (inputs[split][kind], gt, prefix, parts[split], column, f"{split} {kind}")
                )
        log(f"partitioning {len(partition_tasks)} raw files into {parts} partitions")
        for message in _run(pool, _partition_task, partition_tasks):
            log("  " + message)

        # Stage 2: join and write.
        join_tasks = [
            _JoinTask(
                split=split,
                part=p,
                num_parts=parts[split],
                work_dir=work_dir,
                skeleton_path=inputs[split]["skeleton"],
                common_path=inputs[split]["common"],
                ground_truth_path=inputs[split]["ground_truth"],
                count_ids=split == "train" and not config.vocab_from,
                max_group_size=config.max_group_size,
                keep_conversion_without_click=config.keep_conversion_without_click,
            )
            for split in inputs
            for p in range(parts[split])
        ]
        todo = [t for t in join_tasks if not os.path.exists(t.stats_path)]
        for task in join_tasks:  # left by a run stopped between commit and removal
            if task not in todo:
                _remove_partitions(task)
        log(f"joining and writing {len(todo)} of {len(join_tasks)} shards on {workers} workers")
        done = len(join_tasks) - len(todo)
        for stats in _run(pool, _join_task, todo):
            done += 1
            log(
                f"  [{done}/{len(join_tasks)}] {stats['impressions']:,} impressions, "
                f"{stats['records']:,} records in {stats['seconds']:.1f} s"
            )
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    # This process's peak so far: while the workers ran (the vocabulary comes after).
    main_with_workers = stats_lib.max_rss_mb()
    stats = _finish(
        config, join_tasks, inputs, work_dir, fingerprint, start, workers, main_with_workers
    )
    publish.publish(work_dir, out_dir)
    stats_lib.print_summary(stats, out_dir, _load_json(data_layout.timings_file(out_dir)))
    return stats


def _finish(
    config, join_tasks, inputs, work_dir, fingerprint, start, workers, main_with_workers
) -> dict:
    split_stats = {}
    for split in inputs:
        per_task = [_load_json(t.stats_path) for t in join_tasks if t.split == split]
        total = stats_lib.merged(stats_lib.SplitStats.from_json(s) for s in per_task)
        split_stats[split] = stats_lib.summarize_split(split, total, len(per_task), config)
        # Lets readers tell a shard deleted or emptied since (esmm_tf.data_layout).
        tasks = [t for t in join_tasks if t.split == split]
        split_stats[split]["shard_bytes"] = [os.path.getsize(t.shard_path) for t in tasks]

    if config.vocab_from:
        fields = _copy_vocab(config.vocab_from, work_dir, fingerprint["vocab_from"])
    elif "train" in inputs:
        fields = _build_vocab(config, join_tasks, work_dir)
    else:
        fields = {}  # test only: no vocabulary (a trained run owns its own)

    raw_bytes = sum(os.path.getsize(p) for files in inputs.values() for p in files.values() if p)
    files.write_json(
        data_layout.timings_file(work_dir),
        stats_lib.timing_stats(split_stats, raw_bytes, start, workers, main_with_workers),
    )
    stats = stats_lib.dataset_stats(config, split_stats, fields, inputs, fingerprint)
    files.write_json(data_layout.stats_file(work_dir), stats)  # last: the work dir is complete
    return stats


def _build_vocab(config, join_tasks, work_dir) -> dict:
    """Vocabularies from the train split's id counts."""
    os.makedirs(os.path.join(work_dir, data_layout.VOCAB_DIR), exist_ok=True)
    tasks = [t for t in join_tasks if t.count_ids]
    fields = {}
    for field in F.FIELDS:  # one field, one task's counts at a time: O(distinct ids)
        counter = IdCounter()
        for task in tasks:
            with np.load(task.counts_path) as c:
                counter.add_counts(c[f"ids/{field.id}"], c[f"counts/{field.id}"])
        ids, n = counter.result()
        size = vocab.write_vocab(
            data_layout.vocab_file(work_dir, field.id), ids, n, config.min_count
        )
        fields[field.id] = {"distinct_ids": int(ids.size), "vocab_size": size}
    return fields


def _copy_vocab(vocab_from: str, work_dir: str, digests: dict[str, str]) -> dict:
    """Copies ``vocab_from``'s vocabularies (checked against the fingerprint's digests)."""
    if vocab_fingerprint(vocab_from) != digests:
        raise ConvertError(f"--vocab_from={vocab_from}: vocabulary files changed during the run")
    vocab.copy_files(vocab_from, os.path.join(work_dir, data_layout.VOCAB_DIR))
    return {
        field.id: {"vocab_size": vocab.vocab_size(data_layout.vocab_file(work_dir, field.id))}
        for field in F.FIELDS
    }


# ---------------------------------------------------------------------------
# Entry point.


def main(argv) -> None:
    from absl import flags

    from esmm_tf.cli import no_arguments, one_line_errors

    no_arguments(argv)

    out_dir = flags.FLAGS["out_dir"].value
    with one_line_errors(f"--out_dir={out_dir}", (ConvertError, raw.RawInputError)):
        convert(config_flags.config_from_flags(ConvertConfig))


if __name__ == "__main__":
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()
    from absl import app

    config_flags.define_flags(ConvertConfig)
    app.run(main)
