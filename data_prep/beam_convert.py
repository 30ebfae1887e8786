"""Raw Ali-CCP logs -> the dataset ``data_prep.convert`` writes, as an Apache Beam pipeline.

    python -m data_prep.beam_convert --raw_dir=RAW --out_dir=DATA [--min_count=2]
        [--max_bad_fraction=0.001] [--max_group_size=256] [--num_shards=0]
        [--keep_conversion_without_click] [--overwrite] [--read_chunk_mb=64]
        [Beam pipeline options, e.g. --runner=DirectRunner --direct_num_workers=2
         --direct_running_mode=multi_processing, or --runner=DataflowRunner ...]

The pipeline (data_prep/beam/pipeline.py) parses with ``data_prep.raw``, joins
by ``common_feature_index`` with a GroupByKey, builds records with
``data_prep.records`` and counts vocabularies with a combiner. Its shards are
the converter's partitions (``crc32(index) % num_shards``), its groups cut as
the converter cuts them (every row of an index, whatever the row order), so with the same ``--num_shards`` every shard, every
vocabulary and the stats' counts equal ``data_prep.convert``'s.

The pipeline writes under ``<out_dir>.beam-partial``; this driver then checks
the stats (``--max_bad_fraction``), writes ``stats.json`` and moves the
directory to ``<out_dir>`` (an atomic rename on a local disk; on an object
store, file by file with ``stats.json`` last). Paths may be local or any
filesystem Beam knows (``gs://``, ``s3://``, ``hdfs://``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time

from absl import flags

from esmm_tf import cli, config_flags

with cli.python_log_level(logging.ERROR):  # "apitools not found": optional GCP clients
    import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from data_prep import publish, raw, raw_layout
from data_prep import stats as stats_lib
from data_prep.beam import pipeline
from data_prep.beam import stats as S
from data_prep.stats import ConvertError, log
from esmm_tf import data_layout
from esmm_tf.config_flags import option


@dataclasses.dataclass(frozen=True)
class BeamConvertConfig:
    """The pipeline's options: one flag per field (``esmm_tf.config_flags``;
    ``read_chunk_bytes`` is given as ``--read_chunk_mb``, ``verbosity`` also
    as ``-v``); every other flag is a Beam pipeline option."""

    raw_dir: str = option(help="Directory with the raw csv(.gz) files.")
    out_dir: str = option(help="Output dataset directory.")
    min_count: int = option(2, "Ids seen fewer times map to OOV.")
    max_bad_fraction: float = option(0.001, "Fail if more rows than this are malformed.")
    max_group_size: int = option(256, "Max impressions per record.")
    num_shards: int = option(
        0,
        "Shards per split (0: one per ~256 MB of raw skeleton rows). The same value as "
        "data_prep.convert's gives byte-identical shards.",
    )
    keep_conversion_without_click: bool = option(False, "Keep rows with conversion=1 and click=0.")
    overwrite: bool = option(False, "Replace an existing out_dir.")
    read_chunk_bytes: int = 64 << 20  # raw files are read in parallel in ranges of this size
    # What Beam and its workers log (absl's scale: 0 INFO, -1 WARNING, -2 ERROR).
    verbosity: int = option(
        cli.QUIET_VERBOSITY,
        "Logs of Beam and its workers: 0 INFO, -1 WARNING, -2 (default) errors only.",
    )

    def __post_init__(self):
        stats_lib.check_options(self)


# ---------------------------------------------------------------------------
# Inputs (through Beam's FileSystems: local, gs://, s3://, hdfs://).


def _size(path: str) -> int:
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def _stat(path: str) -> tuple[int, float]:
    meta = FileSystems.match([path])[0].metadata_list[0]
    return meta.size_in_bytes, meta.last_updated_in_seconds


# The raw directory through Beam's FileSystems (local, gs://, s3://, hdfs://).
_BEAM_FS = raw_layout.FileSystem(
    exists=FileSystems.exists,
    size=_size,
    join=FileSystems.join,
    stat=_stat,
    dir_missing=lambda path: FileSystems.get_scheme(path) is None and not os.path.isdir(path),
)


def _num_shards(config: BeamConvertConfig, skeleton: str) -> int:
    if config.num_shards > 0:
        return config.num_shards
    return raw_layout.shards_by_size(skeleton, _BEAM_FS)


# ---------------------------------------------------------------------------
# Output.


def _read_json(path: str):
    with FileSystems.open(path) as f:
        return json.loads(f.read())


def _write_json(path: str, obj) -> None:
    with FileSystems.create(path) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _files_under(path: str) -> list[str]:
    return [m.path for m in FileSystems.match([path + "/**"])[0].metadata_list]


def _exists(path: str) -> bool:
    """A file or a directory; on an object store (no directories) any file under it."""
    if FileSystems.get_scheme(path) is None or FileSystems.exists(path):
        return FileSystems.exists(path)
    return bool(_files_under(path))


def _remove(path: str) -> None:
    """Removes a file or a directory tree (on an object store: every file under it)."""
    if FileSystems.get_scheme(path) is None:
        if os.path.exists(path):
            FileSystems.delete([path])
        return
    files = _files_under(path) + ([path] if FileSystems.exists(path) else [])
    if files:
        FileSystems.delete(files)


def _publish(work_dir: str, out_dir: str) -> None:
    """Moves the complete work dir to out_dir; stats.json is the last file to appear."""
    if FileSystems.get_scheme(out_dir) is None:
        publish.swap_into_place(work_dir, out_dir)  # one atomic rename
        return
    old_stats = data_layout.stats_file(out_dir)
    if FileSystems.exists(old_stats):
        FileSystems.delete([old_stats])  # first: OUT no longer reads as a dataset
    _move_files(work_dir, out_dir)


PUBLISH_MANIFEST = "publish.json"  # in the work dir: the published dataset's files


def _move_files(work_dir: str, out_dir: str) -> None:
    """Moves the work dir's files under out_dir (an object store has no atomic
    directory rename), removes out_dir's other files (an earlier dataset's),
    and moves stats.json last. The list of files is written first, so a
    publish killed at any point is finished by calling this again: what is
    left is moved, stale files are removed, stats.json is still in the work
    dir until the end."""
    manifest = FileSystems.join(work_dir, PUBLISH_MANIFEST)
    stats = data_layout.stats_file(work_dir)
    if FileSystems.exists(manifest):
        listed = set(_read_json(manifest))
    else:
        listed = {f[len(work_dir) :] for f in _files_under(work_dir)}
        _write_json(manifest, sorted(listed))
    moving = [
        f
        for f in _files_under(work_dir)
        if f not in (stats, manifest) and f[len(work_dir) :] in listed
    ]
    if moving:
        FileSystems.rename(moving, [out_dir + f[len(work_dir) :] for f in moving])
    stale = [f for f in _files_under(out_dir) if f[len(out_dir) :] not in listed and f != out_dir]
    if stale:
        FileSystems.delete(stale)
    FileSystems.rename([stats], [out_dir + stats[len(work_dir) :]])
    _remove(work_dir)


def _finish(config, plan, inputs, fingerprint, start) -> dict:
    merged = _read_json(pipeline.meta_path(plan.work_dir, "stats.json"))
    fields = {}  # no train split: no vocabulary, as data_prep.convert
    if "train" in plan.inputs:
        fields = _read_json(pipeline.meta_path(plan.work_dir, "fields.json"))
    _remove(os.path.join(plan.work_dir, pipeline.META_DIR))
    split_stats = {}
    for split in plan.inputs:
        delta = S.Delta.from_json(merged.get(split, {}))
        if delta.fatal:
            raise ConvertError(delta.fatal[0][1])
        split_stats[split] = stats_lib.summarize_split(split, delta, plan.shards[split], config)
        names = [data_layout.shard_name(i, plan.shards[split]) for i in range(plan.shards[split])]
        shard_dir = data_layout.split_dir(plan.work_dir, split)
        split_stats[split]["shard_bytes"] = [_size(FileSystems.join(shard_dir, n)) for n in names]

    raw_bytes = sum(_size(p) for files in inputs.values() for p in files.values() if p)
    # peak_rss_mb: the driver, and the DirectRunner's worker processes (0 on remote runners).
    timings = stats_lib.timing_stats(split_stats, raw_bytes, start)
    _write_json(data_layout.timings_file(plan.work_dir), timings)
    stats = stats_lib.dataset_stats(config, split_stats, fields, inputs, fingerprint)
    _write_json(data_layout.stats_file(plan.work_dir), stats)
    return stats


def _stats_of(stats_path: str, fingerprint: dict) -> dict | None:
    """The stats.json at ``stats_path`` when it records ``fingerprint`` (None:
    no such file, not readable, or another conversion)."""
    try:
        stats = _read_json(stats_path) if _exists(stats_path) else None
    except ValueError:
        return None
    return stats if isinstance(stats, dict) and stats.get("fingerprint") == fingerprint else None


def _finish_interrupted(
    work_dir: str, out_dir: str, fingerprint: dict, overwrite: bool
) -> dict | None:
    """What a run killed while publishing left, completed: the stats of the
    dataset now in ``out_dir``, or None (nothing to finish). Locally, the
    previous dataset set aside (``OUT.old-<pid>``) is removed or put back
    (``publish.finish_interrupted``); a complete work dir of the same
    conversion is published (replacing a dataset only with ``overwrite``); on
    an object store, a publish stopped part-way (``OUT`` without stats.json)
    is finished."""
    stats_path = data_layout.stats_file(out_dir)
    local = FileSystems.get_scheme(out_dir) is None
    if local and publish.finish_interrupted(work_dir, out_dir, fingerprint):
        published = _stats_of(stats_path, fingerprint)
        if published is not None:
            return published
    if not overwrite:
        published = _stats_of(stats_path, fingerprint)
        if published is not None:
            log(f"{out_dir} already holds this conversion; nothing to do (--overwrite redoes it)")
            if _exists(work_dir):  # a publish killed after its stats.json: only leftovers
                _remove(work_dir)
            return published
    stats = _stats_of(data_layout.stats_file(work_dir), fingerprint)
    if stats is None:
        return None
    if _exists(stats_path) and not overwrite:
        return None  # the usual "pass --overwrite" error follows
    if local and _exists(out_dir) and not _exists(stats_path) and _files_under(out_dir):
        return None  # not a dataset: the usual checks refuse it
    log(f"{work_dir} is complete: publishing it (an earlier run was stopped while publishing)")
    _publish(work_dir, out_dir)  # on an object store: finishes a publish stopped part-way
    return stats


def convert(config: BeamConvertConfig, pipeline_args: list[str] | tuple[str, ...] = ()) -> dict:
    """Runs the pipeline with ``pipeline_args`` (Beam options); returns the stats
    (also written to stats.json)."""
    start = time.time()
    inputs = raw_layout.find_inputs(config.raw_dir, _BEAM_FS)
    out_dir = config.out_dir.rstrip("/")
    if FileSystems.get_scheme(out_dir) is None:
        out_dir = os.path.normpath(out_dir)
    work_dir = out_dir + ".beam-partial"
    shards = {split: _num_shards(config, inputs[split]["skeleton"]) for split in inputs}
    fingerprint = raw_layout.fingerprint(config, inputs, shards, _BEAM_FS)
    finished = _finish_interrupted(work_dir, out_dir, fingerprint, config.overwrite)
    if finished is not None:
        stats_lib.print_summary(finished, out_dir)
        return finished
    holds_dataset = _exists(data_layout.stats_file(out_dir))
    empty = not _exists(out_dir) or not _files_under(out_dir)
    problem = publish.unsafe_out_dir(
        out_dir,
        [path for split in inputs.values() for path in split.values() if path],
        config.overwrite,
        holds_dataset,
        empty,
    )
    if problem:
        raise ConvertError(problem)
    if not empty and not config.overwrite:
        raise ConvertError(
            f"{out_dir} holds a converted dataset; remove it or pass --overwrite"
            if holds_dataset
            else f"--out_dir={out_dir} holds no converted dataset (no {data_layout.STATS_FILE}); "
            + (
                f"{work_dir} is an earlier run's complete output whose publish was stopped: "
                "run that conversion again with the same flags to finish it, or "
                if _exists(data_layout.stats_file(work_dir))
                else ""
            )
            + "choose another --out_dir"
        )
    if _exists(work_dir):
        log(f"discarding {work_dir}, left by an earlier run")
        _remove(work_dir)
    plan = pipeline.Plan(
        inputs=inputs,
        shards=shards,
        work_dir=work_dir,
        min_count=config.min_count,
        max_group_size=config.max_group_size,
        keep_conversion_without_click=config.keep_conversion_without_click,
        chunk_bytes=config.read_chunk_bytes,
    )
    log(f"converting {config.raw_dir} -> {out_dir} ({shards} shards) with Beam")
    try:
        with (
            _beam_logs(config.verbosity, pipeline_args) as options,
            beam.Pipeline(options=options) as p,
        ):
            pipeline.build(p, plan)
        stats = _finish(config, plan, inputs, fingerprint, start)
        _publish(work_dir, out_dir)
    except BaseException:
        _remove(work_dir)  # nothing to resume: the runner retries failed work itself
        raise
    stats_lib.print_summary(stats, out_dir, _read_json(data_layout.timings_file(out_dir)))
    return stats


@contextlib.contextmanager
def _beam_logs(verbosity: int, pipeline_args):
    """PipelineOptions whose workers log at ``verbosity`` (unless the options set
    --default_sdk_harness_log_level); below INFO, the start-up lines workers
    print before reading it are dropped from stderr too."""
    level = cli.python_level(verbosity)
    args = list(pipeline_args)
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args.append(f"--default_sdk_harness_log_level={logging.getLevelName(level)}")
    quiet = cli.filtered_stderr() if verbosity < 0 else contextlib.nullcontext()
    with cli.python_log_level(level), quiet:
        yield PipelineOptions(args)


# ---------------------------------------------------------------------------
# Entry point.


_DESCRIPTION = (
    "data_prep.convert as an Apache Beam pipeline; unknown flags are Beam pipeline "
    "options (--runner, --direct_num_workers, --project, ...)."
)


def _flag_values() -> flags.FlagValues:
    """This command's flags (its own FlagValues: Beam's options pass through)."""
    values = flags.FlagValues()
    module = "data_prep.beam_convert"
    config_flags.define_flags(
        BeamConvertConfig, values, exclude=("read_chunk_bytes", "verbosity"), module_name=module
    )
    flags.DEFINE_float(
        "read_chunk_mb",
        BeamConvertConfig.read_chunk_bytes / 2**20,
        "Uncompressed raw files are read in parallel ranges of this size.",
        flag_values=values,
        module_name=module,
    )
    verbosity = {f.name: f for f in dataclasses.fields(BeamConvertConfig)}["verbosity"]
    flags.DEFINE_integer(
        "verbosity",
        verbosity.default,
        verbosity.metadata["help"],
        short_name="v",
        flag_values=values,
        module_name=module,
    )
    return values


def _chunk_bytes(mb: float) -> int:
    if not 0 < mb < 1 << 20:  # NaN and infinity fail too
        raise ConvertError(f"--read_chunk_mb must be positive (and below 1 TiB), got {mb}")
    return max(1, int(mb * 2**20))


def parse_args(argv: list[str]) -> tuple[BeamConvertConfig, list[str]]:
    """(config, Beam pipeline options): the flags of BeamConvertConfig; everything
    else (in order) goes to Beam. ``--help`` prints the flags and exits."""
    values = _flag_values()
    if any(a in ("-h", "--help", "-help", "--helpshort", "--helpfull") for a in argv):
        print(f"usage: python -m data_prep.beam_convert [flags] [Beam options]\n\n{_DESCRIPTION}")
        print(values.get_help())
        sys.exit(0)
    try:
        pipeline_args = values(["beam_convert", *argv], known_only=True)[1:]
    except flags.Error as e:
        raise ConvertError(str(e)) from None
    config = config_flags.config_from_flags(
        BeamConvertConfig,
        values,
        read_chunk_bytes=_chunk_bytes(values.read_chunk_mb),
        verbosity=values.verbosity,
    )
    return config, pipeline_args


def main(argv: list[str]) -> None:
    try:
        convert(*parse_args(argv))
    except (ConvertError, raw.RawInputError) as e:
        log(f"error: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
