"""Converter throughput and memory on synthetic logs of the real data's shape.

    python -m benchmarks.convert_bench [--impressions=2000000,10000000] [--work_dir=DIR]

For each size: generates the raw logs (once, kept in work_dir), runs
``python -m data_prep.convert`` as a separate process on a fresh output
directory, and reads what it measured itself (convert_timings.json): wall time,
impressions/s, raw MB/s, peak RSS of the main process and of the largest
worker. The table is printed and written between markers in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time

from absl import app, flags

from benchmarks import results

BEGIN, END = "<!-- convert:begin -->", "<!-- convert:end -->"

flags.DEFINE_list("impressions", ["2000000", "10000000"], "Sizes to measure.")
flags.DEFINE_string("work_dir", "/tmp/esmm_convert_bench", "Raw logs and outputs (large).")
flags.DEFINE_integer("workers", 0, "Converter workers (0: all cores).")
flags.DEFINE_bool("write_results", True, "Update benchmarks/RESULTS.md.")
FLAGS = flags.FLAGS


def _run(args: list[str]) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-m", *args], check=True, env=env)


def measure(impressions: int, work_dir: str, workers: int) -> dict:
    raw_dir = os.path.join(work_dir, f"raw-{impressions}")
    if not os.path.exists(os.path.join(raw_dir, "synthetic_config.json")):
        _run(["data_prep.synthetic", f"--out_dir={raw_dir}", f"--impressions={impressions}"])
    out_dir = os.path.join(work_dir, f"data-{impressions}")
    for path in (out_dir, out_dir + ".partial"):
        shutil.rmtree(path, ignore_errors=True)
    start = time.time()
    _run(
        [
            "data_prep.convert",
            f"--raw_dir={raw_dir}",
            f"--out_dir={out_dir}",
            f"--workers={workers}",
        ]
    )
    wall = time.time() - start
    with open(os.path.join(out_dir, "convert_timings.json")) as f:
        stats = json.load(f)
    raw_mb = (
        sum(os.path.getsize(os.path.join(raw_dir, n)) for n in os.listdir(raw_dir) if ".csv" in n)
        / 2**20
    )
    data_mb = results.dir_bytes(out_dir) / 2**20
    return {
        "impressions": impressions,
        "wall_s": round(wall, 1),
        "impressions_per_s": stats["impressions_per_second"],
        "raw_mb": round(raw_mb, 1),
        "raw_mb_per_s": stats["raw_mb_per_second"],
        "tfrecord_mb": round(data_mb, 1),
        "rss_main_mb": stats["peak_rss_mb"]["main"],
        "rss_worker_mb": stats["peak_rss_mb"]["largest_worker"],
        "workers": workers or os.cpu_count(),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| impressions | wall s | impressions/s | raw MB | raw MB/s | TFRecord MB "
        "| peak RSS main MB | peak RSS largest worker MB | workers |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['impressions']:,} | {r['wall_s']} | {r['impressions_per_s']:,.0f} | "
            f"{r['raw_mb']:,.0f} | {r['raw_mb_per_s']} | {r['tfrecord_mb']:,.0f} | "
            f"{r['rss_main_mb']:,.0f} | {r['rss_worker_mb']:,.0f} | {r['workers']} |"
        )
    return "\n".join(lines)


def write_results(text: str) -> None:
    results.write_section(BEGIN, END, text)


def main(argv) -> None:
    del argv
    rows = [measure(int(n), FLAGS.work_dir, FLAGS.workers) for n in FLAGS.impressions]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    text = (
        f"Measured {time.strftime('%Y-%m-%d')} on {machine}, Python {platform.python_version()}, "
        f"by `python -m benchmarks.convert_bench --impressions={','.join(FLAGS.impressions)}` "
        "(synthetic logs of the real shape: ~30 impressions per user row, behaviour fields "
        "with tens to hundreds of weighted ids). Total peak memory is at most main + workers "
        "x largest worker.\n\n" + table(rows)
    )
    print(text)
    if FLAGS.write_results:
        write_results(text)


if __name__ == "__main__":
    app.run(main)
