"""The exact AUC's memory: everything held and sorted at once vs sorted runs
on disk merged in bounded memory (``esmm_tf.metrics.AucAccumulator``).

Each case is a subprocess that streams ``n`` (label, score) pairs in batches
of 16,384, as ``esmm_tf.evaluate`` does, and computes the AUC; the benchmark
prints its wall time and peak RSS (``wait4``), checks that both ways give the
same AUC, and prints the ratios measured in this one run.

    python -m benchmarks.auc_bench                 # 10M and 43M entries
    python -m benchmarks.auc_bench --sizes=1000000 --write_results=false
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from benchmarks import results

flags.DEFINE_list("sizes", ["10000000", "43000000"], "Entries (impressions) per case.")
flags.DEFINE_bool("write_results", True, "Update benchmarks/RESULTS.md.")
flags.DEFINE_string("child", None, "Internal: 'held' or 'runs', to run one case.")
flags.DEFINE_integer("n", 0, "Internal: entries of the child's case.")
FLAGS = flags.FLAGS

BATCH = 16_384
BEGIN, END = "<!-- auc_bench:begin -->", "<!-- auc_bench:end -->"
HEADING = "## Exact AUC in bounded memory (`python -m benchmarks.auc_bench`)"


def child(mode: str, n: int) -> None:
    import numpy as np

    from esmm_tf.metrics import AucAccumulator

    acc = AucAccumulator() if mode == "runs" else AucAccumulator(chunk=n + 1)
    rng = np.random.default_rng(0)
    for start in range(0, n, BATCH):
        b = min(BATCH, n - start)
        labels = rng.random(b) < 0.04
        scores = (rng.random(b) * 0.5 + 0.1 * labels).astype(np.float32)
        acc.update(labels, scores)
    print(json.dumps({"auc": acc.result(), "runs": acc.runs}))


def run_case(mode: str, n: int) -> dict:
    start = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.auc_bench", f"--child={mode}", f"--n={n}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the {mode} case at {n:,} failed")
    return {
        **json.loads(out),
        "seconds": round(time.time() - start, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }


def main(argv) -> None:
    del argv
    if FLAGS.child:
        child(FLAGS.child, FLAGS.n)
        return
    lines = [
        "Command: `python -m benchmarks.auc_bench` (one accumulator; 2 cores; "
        "the held case is the accumulator before sorted runs).",
        "",
        "| entries | held: time | held: peak RSS | runs: time | runs: peak RSS | runs on disk "
        "| RSS ratio | time ratio | same AUC |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in sorted(int(float(s)) for s in FLAGS.sizes):
        held, runs = run_case("held", n), run_case("runs", n)
        same = held["auc"] == runs["auc"]
        print(f"{n:,} entries: held {held}, runs {runs}")
        lines.append(
            f"| {n:,} | {held['seconds']} s | {held['peak_rss_mb']} MB | {runs['seconds']} s "
            f"| {runs['peak_rss_mb']} MB | {runs['runs']} | "
            f"{held['peak_rss_mb'] / runs['peak_rss_mb']:.1f}x | "
            f"{runs['seconds'] / held['seconds']:.2f}x | {'yes' if same else 'NO'} |"
        )
        if not same:
            raise SystemExit(f"the AUCs differ at {n:,}: {held['auc']} vs {runs['auc']}")
    text = "\n".join(lines)
    print(text)
    if FLAGS.write_results:
        results.write_section(BEGIN, END, text, HEADING)


if __name__ == "__main__":
    app.run(main)
