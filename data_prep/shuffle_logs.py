"""A copy of raw Ali-CCP logs with the skeleton rows in random order.

    python -m data_prep.shuffle_logs --raw_dir=IN --out_dir=OUT [--seed=0] [--bucket_mb=64]

Logs written in time order interleave the rows of many concurrent requests;
this makes such logs from ones that keep a request's rows together (as the
public Ali-CCP files and ``data_prep.synthetic`` do), for tests and benchmarks.

For each split, ``sample_skeleton_<split>.csv(.gz)`` is shuffled, and
``ground_truth_<split>.csv(.gz)`` (when present) with it, so that line *n* of
both still describe the same impression. Every other file of ``IN`` (the
``common_features`` files, ``synthetic_config.json``...) is copied as it is.
Output files keep their input's name and compression.

Memory stays bounded: rows are first scattered to random bucket files of about
``--bucket_mb`` each, then each bucket is shuffled in memory and appended to
the output (a uniformly random permutation of the rows, reproducible from
``--seed`` and ``--bucket_mb``). Every output line ends with a newline (a final line without one
gets it). Files are written under a temporary name and renamed when complete.
The buckets live in ``OUT/.shuffle-<pid>``, removed when done; a killed run's
(its process gone) is removed by the next run. ``OUT`` must not be ``IN``
(also through a symbolic link): the input would be replaced as it is read.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import resource
import shutil
import sys

import numpy as np

from data_prep import raw
from esmm_tf.config_flags import option
from esmm_tf.files import remove_stale_temporaries

SPLITS = ("train", "test")
_CHUNK_LINES = 1 << 16
BUCKET_DIR_PREFIX = ".shuffle-"
# Buckets are files open at once (with a 64 KB buffer each); beyond this many,
# --bucket_mb is refused as too small for the input.
MAX_BUCKETS = 4096
_SPARE_FILES = 64  # open files kept for everything else


class ShuffleError(ValueError):
    """A flag that cannot work: one line for the user, no traceback."""


@dataclasses.dataclass(frozen=True)
class ShuffleConfig:
    """The command line of ``python -m data_prep.shuffle_logs`` (one flag per field)."""

    raw_dir: str = option(help="Directory with the raw Ali-CCP csv(.gz) files.")
    out_dir: str = option(help="Where to write the shuffled copy.")
    seed: int = option(0, "Seed of the permutation.")
    bucket_mb: float = option(64.0, "Raw (uncompressed) MB shuffled in memory at once.")

    def __post_init__(self):
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ShuffleError(f"--seed={self.seed}: need an integer >= 0")
        if not (math.isfinite(self.bucket_mb) and self.bucket_mb > 0):
            raise ShuffleError(f"--bucket_mb={self.bucket_mb}: need a positive number of MB")

    @property
    def bucket_bytes(self) -> int:
        return max(1, int(self.bucket_mb * 2**20))


def _open_out(path: str):
    if path.endswith(".gz"):
        return gzip.GzipFile(filename="", mode="wb", fileobj=open(path, "wb"), mtime=0)  # noqa: SIM115
    return open(path, "wb", buffering=1 << 20)  # noqa: SIM115


def _write_closed(path: str):
    """Writer of ``path`` (gzip when it ends in .gz), under a temporary name."""
    return _open_out(path + ".tmp" + (".gz" if path.endswith(".gz") else ""))


def _finish(path: str) -> None:
    os.replace(path + ".tmp" + (".gz" if path.endswith(".gz") else ""), path)


def _lines(path: str):
    """The file's lines, each ending in a newline, as the converter reads them
    (``raw.read_lines``: a byte order mark at the start is not data, so it
    does not travel to another line)."""
    for _, content, _ in raw.read_lines(path):
        yield content + b"\n"


def _raw_bytes(skeleton: str, truth: str | None) -> int:
    """Estimated uncompressed bytes of a split's skeleton and ground truth."""
    return sum(
        os.path.getsize(path) * (4 if path.endswith(".gz") else 1)
        for path in (skeleton, truth)
        if path
    )


def _bucket_count(size: int, bucket_bytes: int, skeleton: str) -> int:
    """Buckets for ``size`` raw bytes. Refuses more than ``MAX_BUCKETS`` (or than
    the system's open-file limit allows): --bucket_mb too small for the input;
    raises this process's open-file limit when the buckets need it."""
    buckets = max(1, math.ceil(size / bucket_bytes))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    allowed = MAX_BUCKETS
    if hard != resource.RLIM_INFINITY:
        allowed = max(1, min(allowed, hard - _SPARE_FILES))
    if buckets > allowed:
        least = math.ceil(size / allowed / 2**20 * 1000) / 1000
        raise ShuffleError(
            f"--bucket_mb is too small for {skeleton} (with its ground truth, ~{size:,} bytes "
            f"uncompressed): {buckets:,} buckets of {bucket_bytes:,} bytes, one open file "
            f"each, more than the {allowed:,} allowed; use --bucket_mb={least:g} or more"
        )
    if soft != resource.RLIM_INFINITY and buckets + _SPARE_FILES > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (buckets + _SPARE_FILES, hard))
    return buckets


def _remove_stale_bucket_dirs(out_dir: str) -> None:
    """Removes the bucket directories of killed runs (their process is gone)."""
    for path in remove_stale_temporaries(os.path.join(out_dir, BUCKET_DIR_PREFIX)):
        print(f"removed {path}, left by a killed run", file=sys.stderr, flush=True)


def _same_dir(a: str, b: str) -> bool:
    """Whether two paths name one directory (through symbolic links, bind mounts...)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist
        return False


def _shuffle_split(
    skeleton: str,
    truth: str | None,
    out_dir: str,
    rng: np.random.Generator,
    buckets: int,
) -> int:
    """Writes the shuffled skeleton (and ground truth); returns the number of rows."""
    n = 0
    tmp = os.path.join(out_dir, f"{BUCKET_DIR_PREFIX}{os.getpid()}")
    os.mkdir(tmp)
    try:
        names = [os.path.join(tmp, f"{b:05d}") for b in range(buckets)]
        outs = [open(name, "wb", buffering=1 << 16) for name in names]  # noqa: SIM115
        try:
            sk_lines = _lines(skeleton)
            gt_lines = _lines(truth) if truth else None
            chunk: list[tuple[bytes, bytes]] = []

            def scatter() -> None:
                for (sk, gt), b in zip(chunk, rng.integers(buckets, size=len(chunk)), strict=True):
                    # One bucket line: the skeleton row, then its ground-truth row.
                    outs[b].write(sk)
                    outs[b].write(gt)
                chunk.clear()

            for sk in sk_lines:
                gt = b""
                if gt_lines is not None:
                    gt = next(gt_lines, None)
                    if gt is None:
                        raise raw.RawInputError(f"{truth} has fewer rows than {skeleton}")
                chunk.append((sk, gt))
                n += 1
                if len(chunk) >= _CHUNK_LINES:
                    scatter()
            scatter()
            if gt_lines is not None and next(gt_lines, None) is not None:
                raise raw.RawInputError(f"{truth} has more rows than {skeleton}")
        finally:
            for out in outs:
                out.close()

        sk_path = os.path.join(out_dir, os.path.basename(skeleton))
        gt_path = os.path.join(out_dir, os.path.basename(truth)) if truth else None
        sk_out = _write_closed(sk_path)
        gt_out = _write_closed(gt_path) if gt_path else None
        try:
            for name in names:
                with open(name, "rb") as f:
                    lines = f.read().split(b"\n")[:-1]  # every line ended with one
                os.remove(name)
                step = 2 if gt_out is not None else 1
                for i in rng.permutation(len(lines) // step):
                    sk_out.write(lines[step * i] + b"\n")
                    if gt_out is not None:
                        gt_out.write(lines[step * i + 1] + b"\n")
        finally:
            sk_out.close()
            if gt_out is not None:
                gt_out.close()
        _finish(sk_path)
        if gt_path:
            _finish(gt_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return n


def shuffle_logs(config: ShuffleConfig) -> dict[str, int]:
    """Writes the shuffled copy; returns the number of skeleton rows per split."""
    if not os.path.isdir(config.raw_dir):
        raise raw.RawInputError(f"raw dir {config.raw_dir!r} does not exist")
    if _same_dir(config.raw_dir, config.out_dir):
        raise ShuffleError(
            f"--out_dir={config.out_dir} is --raw_dir={config.raw_dir} (the same directory): "
            "the logs would be replaced as they are read; choose another --out_dir"
        )
    if os.path.lexists(config.out_dir) and not os.path.isdir(config.out_dir):
        raise ShuffleError(f"--out_dir={config.out_dir} exists and is not a directory")
    splits = {}  # everything checked before anything is written
    for split in SPLITS:
        skeleton = raw.find_raw_file(config.raw_dir, f"sample_skeleton_{split}", required=False)
        if skeleton is None:
            continue
        truth = raw.find_raw_file(config.raw_dir, f"ground_truth_{split}", required=False)
        buckets = _bucket_count(_raw_bytes(skeleton, truth), config.bucket_bytes, skeleton)
        splits[split] = (skeleton, truth, buckets)
    if not splits:
        raise raw.RawInputError(
            f"{config.raw_dir} holds no sample_skeleton_{{train,test}}.csv(.gz)"
        )
    os.makedirs(config.out_dir, exist_ok=True)
    _remove_stale_bucket_dirs(config.out_dir)
    rng = np.random.default_rng(config.seed)
    done, rows = set(), {}
    for split, (skeleton, truth, buckets) in splits.items():
        rows[split] = _shuffle_split(skeleton, truth, config.out_dir, rng, buckets)
        done.update(os.path.basename(p) for p in (skeleton, truth) if p)
    for name in sorted(os.listdir(config.raw_dir)):
        src = os.path.join(config.raw_dir, name)
        if name not in done and os.path.isfile(src):
            dst = os.path.join(config.out_dir, name)
            shutil.copyfile(src, dst + ".tmp")
            os.replace(dst + ".tmp", dst)
    return rows


def main(argv) -> None:
    from absl import flags

    from esmm_tf import config_flags
    from esmm_tf.cli import no_arguments, one_line_errors

    no_arguments(argv)
    out_dir = flags.FLAGS["out_dir"].value
    with one_line_errors(f"--out_dir={out_dir}", (raw.RawInputError, ShuffleError)):
        rows = shuffle_logs(config_flags.config_from_flags(ShuffleConfig))
    for split, n in rows.items():
        print(f"{split}: {n:,} skeleton rows shuffled", file=sys.stderr)


if __name__ == "__main__":
    from absl import app

    from esmm_tf import config_flags

    config_flags.define_flags(ShuffleConfig)
    app.run(main)
