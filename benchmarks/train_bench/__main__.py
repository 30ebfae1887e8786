"""Training, input and evaluation throughput of esmm_tf, against a matmul ceiling.

    python -m benchmarks.train_bench [--data_dir=/tmp/esmm_convert_bench/data-2000000]

On a converted dataset (created from synthetic logs when missing), in one
process run unless noted:

1. input pipeline alone: ``input_pipeline.make_dataset(train, 1024, shuffle=True)``
   iterated once, impressions/s (counted by ``group_index`` lengths);
2. training with the paper's architecture (Config defaults): the trainer's
   step (``training_run.build_training``: build_model, lazy Adam, objectives.loss,
   a ``tf.function`` under the default strategy), iterating the
   real shuffled dataset and syncing on the loss every step like the trainer;
   also with the trainer's per-step bookkeeping (labels/outputs to numpy, train
   AUC window), and on pre-materialised batches (pure compute);
3. the compute ceiling: float32 ``tf.matmul`` GFLOP/s at the towers' shapes
   (fwd, grad wrt inputs, grad wrt weights, 2 towers, B=1024);
4. vocabulary scaling: the same step on the same pre-materialised batches with
   the dataset's vocabularies and with field 205 padded to ~10M rows (ids that
   never occur), both in one subprocess, alternating blocks of steps;
5. evaluation: ``evaluator.evaluate(model, training_run.eval_dataset(config))``
   over the test split;
6. peak RSS of that subprocess (``RUSAGE_CHILDREN``);
7. where a step's time goes: ``--profile_steps`` steps of 2's step on the
   ready batches under the TensorFlow profiler, its trace broken down by op
   category (``op_breakdown``; ``--profile_dir`` keeps the trace for
   TensorBoard's profile plugin).

The table is printed and written between markers in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

from absl import app

from benchmarks.train_bench import measure, op_profile, report, vocab_scaling
from benchmarks.train_bench.config import TrainBenchConfig
from benchmarks.train_bench.steps import make_config, materialise, tf_module
from esmm_tf import config_flags


def ensure_dataset(config: TrainBenchConfig) -> None:
    """Generates and converts synthetic logs when ``config.data_dir`` holds no dataset."""
    data_dir = config.data_dir
    if os.path.exists(os.path.join(data_dir, "stats.json")):
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if not os.path.exists(os.path.join(config.raw_dir, "synthetic_config.json")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "data_prep.synthetic",
                f"--impressions={config.impressions}",
                f"--out_dir={config.raw_dir}",
            ],
            check=True,
            env=env,
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep.convert",
            f"--raw_dir={config.raw_dir}",
            f"--out_dir={data_dir}",
        ],
        check=True,
        env=env,
    )


def main(argv) -> None:
    del argv
    bench = config_flags.config_from_flags(TrainBenchConfig)
    if bench.child:
        small, big = bench.child.split(",")
        vocab_scaling.child_main(small, big, bench)
        return
    start = time.time()
    command = "python -m benchmarks.train_bench " + " ".join(sys.argv[1:])
    ensure_dataset(bench)
    r = {"load": [os.getloadavg()[0]]}
    # First, while this process is small: a child's ru_maxrss starts from its
    # parent's peak RSS (Linux carries the high-water mark across fork/exec).
    print("vocabulary scaling (subprocess) ...", file=sys.stderr, flush=True)
    r["vocab"] = vocab_scaling.measure_vocab(bench.data_dir, bench)
    r["parent_maxrss_before_child_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tf_module()
    config = make_config(bench.data_dir)
    print("input pipeline ...", file=sys.stderr, flush=True)
    r["input"] = measure.measure_input(bench.data_dir)
    r["parse_cpu"] = measure.measure_parse_cpu(bench.data_dir)
    print("ceiling ...", file=sys.stderr, flush=True)
    r["ceiling"] = measure.measure_ceiling()
    print("training ...", file=sys.stderr, flush=True)
    batches = materialise(bench.data_dir, bench.batches)
    r["training"], model, train_step = measure.measure_training(
        config, batches, bench.steps, bench.warmup
    )
    print("profile ...", file=sys.stderr, flush=True)
    r["profile"] = op_profile.measure_profile(
        train_step, batches, bench.profile_dir, bench.profile_steps
    )
    r["executed_flops"] = measure.executed_flops(batches)
    print("evaluation ...", file=sys.stderr, flush=True)
    r["eval"] = measure.measure_eval(model, config, bench.eval_batches)
    print("ceiling again ...", file=sys.stderr, flush=True)
    second = measure.measure_ceiling()
    r["ceiling_runs"] = [r["ceiling"]["gflops"], second["gflops"]]
    if second["gflops"] > r["ceiling"]["gflops"]:
        r["ceiling"] = second
    r["load"].append(os.getloadavg()[0])
    text = report.report(r, command.strip(), time.time() - start, bench)
    print(text)
    print(json.dumps(r, indent=1, default=str), file=sys.stderr)
    if bench.write_results:
        report.write_results(text)


if __name__ == "__main__":
    config_flags.define_flags(TrainBenchConfig)
    app.run(main)
