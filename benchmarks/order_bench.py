"""Logs in file order vs the same rows shuffled (requests interleaved).

    python -m benchmarks.order_bench [--impressions=1000000] [--work_dir=DIR]

Generates synthetic logs of ~20 impressions per request, makes a copy whose
skeleton rows are shuffled within each split (``data_prep.shuffle_logs``: the
rows of a request scattered through the file, as logs written in time order
are), then for both copies, in one run: converts (``data_prep.convert``, wall
time), trains one epoch with ``experiments/esmm.flags`` (``esmm_tf.train``;
training throughput = the median of the run's TensorBoard
``impressions_per_second`` points, which leave evaluation and checkpoints
out) and evaluates on the test split. Prints, and writes between markers in
benchmarks/RESULTS.md, the shuffled/ordered ratios of converter and training
throughput (goal >= 0.8) and both runs' AUCs, next to a Keras ESMM peer's
training throughput on such logs measured on this machine (DeepCTR, batch
1024: 26k impressions/s; the goal is at least 2x in either order).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from absl import app, flags

from benchmarks import results

BEGIN, END = "<!-- order:begin -->", "<!-- order:end -->"
HEADING = """## Row order (`make bench-order`)

The same synthetic logs in file order and with skeleton rows shuffled within
each split (requests interleaved), converted, trained one epoch with
`experiments/esmm.flags` and evaluated; written by
`python -m benchmarks.order_bench`.
"""
PEER_IMPRESSIONS_PER_SECOND = 26_000  # DeepCTR ESMM, batch 1024, measured on this machine

flags.DEFINE_integer("impressions", 1_000_000, "Synthetic impressions (train + test).")
flags.DEFINE_float("impressions_per_row", 20.0, "Mean impressions per request.")
flags.DEFINE_string("work_dir", "/tmp/esmm_order_bench", "Raw logs, data and runs.")
flags.DEFINE_integer("seed", 0, "Generator and shuffle seed.")
flags.DEFINE_bool("write_results", True, "Update benchmarks/RESULTS.md.")
FLAGS = flags.FLAGS


def _run(args: list[str]) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.time()
    subprocess.run([sys.executable, "-m", *args], check=True, env=env)
    return time.time() - start


def measure(name: str, raw_dir: str, work: str) -> dict:
    data, run = os.path.join(work, f"data-{name}"), os.path.join(work, f"run-{name}")
    for path in (data, data + ".partial", run):
        shutil.rmtree(path, ignore_errors=True)
    convert_s = _run(["data_prep.convert", f"--raw_dir={raw_dir}", f"--out_dir={data}"])
    with open(os.path.join(data, "stats.json")) as f:
        stats = json.load(f)
    impressions = sum(s["impressions"] for s in stats["splits"].values())
    train_s = _run(
        [
            "esmm_tf.train",
            "--flagfile=experiments/esmm.flags",
            f"--data_dir={data}",
            f"--model_dir={run}",
        ]
    )
    with open(os.path.join(run, "eval_metrics.json")) as f:
        metrics = json.load(f)
    train = stats["splits"]["train"]
    return {
        "convert_s": convert_s,
        "convert_rate": impressions / convert_s,
        "records": train["records"],
        "impressions_per_record": train["impressions"] / train["records"],
        "train_wall_s": train_s,
        "train_rate": results.median_train_rate(run),
        **{k: metrics[k] for k in ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space")},
    }


def report(ordered: dict, shuffled: dict, command: str) -> str:
    conv = shuffled["convert_rate"] / ordered["convert_rate"]
    train = shuffled["train_rate"] / ordered["train_rate"]
    slowest = min(ordered["train_rate"], shuffled["train_rate"])
    peer = slowest / PEER_IMPRESSIONS_PER_SECOND
    lines = [
        f"Command: `{command}` ({FLAGS.impressions:,} impressions, "
        f"~{FLAGS.impressions_per_row:g} per request).",
        "",
        "| rows | convert (imp/s) | train records | impressions/record | train (imp/s) "
        "| CTR AUC | CVR AUC (clicked) | CTCVR AUC | entire-space CVR AUC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("in file order", ordered), ("shuffled within each split", shuffled)):
        lines.append(
            f"| {name} | {r['convert_rate']:,.0f} | {r['records']:,} "
            f"| {r['impressions_per_record']:.1f} | {r['train_rate']:,.0f} | {r['ctr_auc']:.4f} "
            f"| {r['cvr_auc']:.4f} | {r['ctcvr_auc']:.4f} | {r['cvr_auc_entire_space']:.4f} |"
        )
    lines += [
        "",
        "| goal | measured | target | result |",
        "|---|---:|---:|---|",
        f"| converter shuffled / ordered | {conv:.2f} | 0.8 | {'PASS' if conv >= 0.8 else 'FAIL'} |",
        f"| training shuffled / ordered | {train:.2f} | 0.8 | {'PASS' if train >= 0.8 else 'FAIL'} |",
        f"| training (slower order) / peer's {PEER_IMPRESSIONS_PER_SECOND:,} imp/s | {peer:.2f} "
        f"| 2.0 | {'PASS' if peer >= 2.0 else 'FAIL'} |",
    ]
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    work = FLAGS.work_dir
    raw = os.path.join(work, "raw")
    shuffled_raw = os.path.join(work, "raw-shuffled")
    if not os.path.exists(os.path.join(raw, "synthetic_config.json")):
        _run(
            [
                "data_prep.synthetic",
                f"--out_dir={raw}",
                f"--impressions={FLAGS.impressions}",
                f"--impressions_per_row={FLAGS.impressions_per_row}",
                f"--seed={FLAGS.seed}",
            ]
        )
    if not os.path.isdir(shuffled_raw):
        _run(
            [
                "data_prep.shuffle_logs",
                f"--raw_dir={raw}",
                f"--out_dir={shuffled_raw}",
                f"--seed={FLAGS.seed}",
            ]
        )
    ordered = measure("ordered", raw, work)
    shuffled = measure("shuffled", shuffled_raw, work)
    command = "python -m benchmarks.order_bench " + " ".join(
        f"--{k}={getattr(FLAGS, k)}" for k in ("impressions", "impressions_per_row")
    )
    text = report(ordered, shuffled, command)
    print(text)
    if FLAGS.write_results:
        results.write_section(BEGIN, END, text, HEADING)


if __name__ == "__main__":
    app.run(main)
