"""The benchmark's table and notes, as written to benchmarks/RESULTS.md."""

from __future__ import annotations

import os
import platform
import time

from benchmarks import results
from benchmarks.train_bench.config import BIG_FIELD, TrainBenchConfig
from benchmarks.train_bench.measure import PARTS_BATCHES, flops_per_impression
from benchmarks.train_bench.op_profile import IDLE, OP_CATEGORIES, OTHER
from benchmarks.train_bench.steps import tf_module

BEGIN, END = "<!-- train:begin -->", "<!-- train:end -->"
HEADING = """## Training (`make bench-train`)

Input pipeline, train step, evaluation and vocabulary scaling of `esmm_tf`
with the paper's architecture (embedding 18, towers 200-80, steps of whole
grouped records up to 1024 impressions, lazy Adam), compared with a float32 matmul
ceiling measured in the same run; written by `python -m benchmarks.train_bench`.
"""


def write_results(text: str) -> None:
    results.write_section(BEGIN, END, text, HEADING)


def _rate(m: dict) -> float:
    return m["impressions"] / m["seconds"]


def report(r: dict, command: str, wall: float, config: TrainBenchConfig) -> str:
    import keras

    tf = tf_module()
    fpi = flops_per_impression()
    ceiling = r["ceiling"]["gflops"] * 1e9 / fpi
    inp = _rate(r["input"])
    tr = r["training"]
    train = _rate(tr["dataset"])
    steps_ds = config.steps
    ms = {k: 1000 * v["seconds"] / steps_ds for k, v in tr.items()}
    imp_per_step = tr["dataset"]["impressions"] / steps_ds
    v = r["vocab"]
    vocab_ratio = v["ratio"]
    ev = _rate(r["eval"])
    goals = [
        ("training >= 50% of ceiling", train / ceiling, 0.5, train / ceiling >= 0.5),
        ("input pipeline >= 3x training", inp / train, 3.0, inp / train >= 3.0),
        ("10M/100k step time <= 1.2", vocab_ratio, 1.2, vocab_ratio <= 1.2),
        ("evaluation >= training", ev / train, 1.0, ev / train >= 1.0),
    ]
    machine = f"{platform.platform()}, {platform.processor() or platform.machine()}, "
    machine += f"{os.cpu_count()} cores"
    rows = [
        ("| measurement | impressions/s | ms/step | note |"),
        ("|---|---:|---:|---|"),
        (
            f"| 1. input pipeline alone (make_dataset train, 1024 impressions, shuffle) | {inp:,.0f} "
            f"| | {r['input']['impressions']:,} impressions, {r['input']['batches']} batches, "
            f"{r['input']['seconds']:.1f} s |"
        ),
        (
            f"| 1b. CPU per 32-record batch: tf.io.parse_example / whole parse function | "
            f"| {r['parse_cpu']['parse_example']:.1f} / {r['parse_cpu']['parse_fn']:.1f} "
            "| CPU ms, not wall; one batch at a time |"
        ),
        (
            f"| 2. training, real dataset, sync on loss each step | {train:,.0f} "
            f"| {ms['dataset']:.1f} | {steps_ds} steps after {config.warmup} warm-up, "
            f"{imp_per_step:.0f} impressions/step |"
        ),
        (
            f"| 2b. same + trainer's per-step bookkeeping (numpy copies, train AUC window) "
            f"| {_rate(tr['bookkeeping']):,.0f} | {ms['bookkeeping']:.1f} | |"
        ),
        (
            f"| 2c. same step, pre-materialised batches (pure compute) "
            f"| {_rate(tr['materialised']):,.0f} | {ms['materialised']:.1f} "
            f"| {config.batches} batches cycled |"
        ),
        (
            f"| 3. ceiling: float32 matmul at tower shapes | {ceiling:,.0f} | "
            f"| {r['ceiling']['gflops']:.1f} GFLOP/s, B={r['ceiling']['batch']}, "
            f"{fpi / 1e6:.3f} MFLOP/impression |"
        ),
        (
            f"| 4a. step, {v['small_rows']:,} embedding rows (dataset vocab), built 1st / 2nd "
            f"| | {v['small_first']['small_ms_per_step']:.1f} / "
            f"{v['big_first']['big_ms_per_step']:.1f} "
            f"| model build {v['small_first']['small_build_s']:.1f} s |"
        ),
        (
            f"| 4b. step, {v['big_rows']:,} rows (field {BIG_FIELD} padded to "
            f"{config.big_rows:,}), built 2nd / 1st | "
            f"| {v['small_first']['big_ms_per_step']:.1f} / "
            f"{v['big_first']['small_ms_per_step']:.1f} "
            f"| model build {v['small_first']['big_build_s']:.1f} s; ratio 4b/4a "
            f"{v['ratio_small_first']:.2f} (small built first), {v['ratio_big_first']:.2f} "
            f"(big first), geometric mean {vocab_ratio:.2f} |"
        ),
        (
            f"| 5. evaluation (evaluate over test split) | {ev:,.0f} | "
            f"| {r['eval']['impressions']:,} impressions, {r['eval']['seconds']:.1f} s |"
        ),
        (
            f"| 5a. eval breakdown, first {PARTS_BATCHES} test batches: dataset alone "
            f"| {_rate(r['eval']['eval_input']):,.0f} | | |"
        ),
        (
            f"| 5b. same + predict + numpy copies (no metric accumulation) "
            f"| {_rate(r['eval']['eval_predict']):,.0f} | | |"
        ),
        (
            f"| 6. peak RSS, subprocess training both the 100k- and 10M-row models | "
            f"| | {v['children_maxrss_mb']:,.0f} MB (RUSAGE_CHILDREN; the children's own "
            f"{v['small_first']['self_maxrss_mb']:,.0f} / {v['big_first']['self_maxrss_mb']:,.0f} MB) |"
        ),
    ]
    prof = r["profile"]
    prof_ms = prof["span_ms"]
    prof_lines = [
        f"Where a step's time goes: TensorFlow profiler trace of {prof['steps']} steps on the "
        f"ready batches of 2c ({prof_ms:.1f} ms per step traced; each moment of the trace "
        "split evenly between the ops running then, so the rows add up to the step; the "
        "profiler itself slows the step a little). The trace holds "
        f"{prof['ops_per_step']:.0f} op events per step; a trace on a quiet machine holds "
        "every op, ~530 per step: where it holds fewer, the tracer dropped short ones, and "
        "their time counts as no op running. "
        "Reproduce with `python -m benchmarks.train_bench --profile_dir=DIR` (the trace "
        "opens in TensorBoard's profile plugin).",
        "",
        "| category (op types) | ms/step | share |",
        "|---|---:|---:|",
    ]
    for name, value in prof["categories"].items():
        prof_lines.append(f"| {name} | {value:.2f} | {value / prof_ms:.0%} |")
    prof_lines += [
        "",
        "Largest op types: "
        + ", ".join(f"{t} {v:.2f} ms ({n:.0f}/step)" for t, v, n in prof["top_types"])
        + ".",
    ]
    goal_lines = ["| goal | measured | target | result |", "|---|---:|---:|---|"]
    for name, value, target, ok in goals:
        goal_lines.append(f"| {name} | {value:.2f} | {target:g} | {'pass' if ok else 'FAIL'} |")
    notes = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {machine}, Python "
        f"{platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"by `{command}` ({wall:.0f} s wall). Dataset: {config.data_dir} (train split "
        f"{r['input']['impressions']:,} impressions). Everything except 4 and 6 ran in one "
        "process; 4a/4b ran together in a subprocess, twice (sizes built in either order; started first, from a parent of "
        f"{r['parent_maxrss_before_child_mb']:,.0f} MB peak RSS that had not imported "
        "TensorFlow), alternating 3 blocks of steps, so each ratio is same-process. "
        "Other jobs may have shared the machine: 1-minute load average "
        f"{r['load'][0]:.1f} at the start, {r['load'][1]:.1f} at the end.",
        "",
        f"FLOPs per impression = 3 (fwd, grad wrt inputs, grad wrt weights) x 2 towers x "
        f"2 (FLOPs per multiply-add) x (414*200 + 200*80 + 80*1) = {fpi:,}; ceiling "
        "impressions/s = matmul GFLOP/s / that. Embedding gathers, segment sums, "
        "activations, loss and optimizer are not in the ceiling. The model executes fewer: "
        "the towers' first layer multiplies the 234 user-side columns once per group "
        "(record), not per impression (`esmm_tf.towers.Tower`; the same function), so on "
        f"these batches it runs {r['executed_flops']:,.0f} FLOPs per impression "
        f"({r['executed_flops'] / fpi:.0%} of the nominal count): the ratio to the "
        "ceiling counts that saving, it is not a matmul efficiency.",
        "",
        "\n".join(rows),
        "",
        "\n".join(prof_lines),
        "",
        "\n".join(goal_lines),
        "",
        f"Training/ceiling = {train / ceiling:.2f}; pure compute/ceiling = "
        f"{_rate(tr['materialised']) / ceiling:.2f}; real dataset/pure compute = "
        f"{train / _rate(tr['materialised']):.2f}.",
    ]
    why = []
    compute = _rate(tr["materialised"])
    if train / ceiling < 0.5:
        cats = prof["categories"]
        matmul = cats[OP_CATEGORIES[0][0]]
        why.append(
            f"- Training is {train / ceiling:.0%} of the matmul ceiling ({train:,.0f} vs "
            f"{ceiling:,.0f} impressions/s); on ready batches it is {compute / ceiling:.0%}. "
            f"Profile (table above): the towers' matmuls are {matmul:.1f} of "
            f"{prof_ms:.1f} ms per step ({matmul / prof_ms:.0%}); the rest is the step's "
            "~530 small ops (embedding gathers and segment sums "
            f"{cats[OP_CATEGORIES[1][0]] + cats[OP_CATEGORIES[2][0]]:.1f} ms, lazy-Adam "
            f"{cats[OP_CATEGORIES[4][0]]:.1f} ms, other ops {cats[OTHER]:.1f} ms) and "
            f"{cats[IDLE]:.1f} ms with no op running. With the real dataset the input "
            f"pipeline's parsing shares the 2 cores with the step: "
            f"{r['parse_cpu']['parse_fn']:.1f} ms of CPU per 32-record batch, of which "
            f"tf.io.parse_example alone is {r['parse_cpu']['parse_example']:.1f} ms "
            f"(real dataset/pure compute = {train / compute:.2f})."
        )
    if inp / train < 3:
        why.append(
            f"- The input pipeline is {inp / train:.1f}x training. Measured: "
            f"{r['parse_cpu']['parse_fn']:.1f} ms of CPU per 32-record batch, of which "
            f"tf.io.parse_example alone is {r['parse_cpu']['parse_example']:.1f} ms (the "
            "conversion to flat inputs is the rest), on the same 2 cores as the step; the "
            "1-minute load average (above) says how much of the machine other jobs took."
        )
    if vocab_ratio > 1.2:
        why.append(
            f"- 10M/100k step time is {vocab_ratio:.2f}. Hypothesis (not profiled): some "
            "per-step work still scales with the table size (a dense read or update)."
        )
    if ev / train < 1:
        e = r["eval"]
        why.append(
            f"- Evaluation is {ev / train:.2f}x training ({ev:,.0f} vs {train:,.0f} "
            f"impressions/s). Measured breakdown on the first {PARTS_BATCHES} test batches: the "
            f"eval dataset alone {_rate(e['eval_input']):,.0f}/s, plus predict and numpy copies "
            f"{_rate(e['eval_predict']):,.0f}/s, so most of the rest is `evaluator.Evaluator` "
            "(per-batch numpy accumulation in `update`, the exact-AUC sorts in `result`; "
            "evaluate's time also includes tracing the predict function once); which of "
            "these dominates is not profiled."
        )
    if why:
        notes += ["", "Goals missed, and what bounds them:", "", *why]
    return "\n".join(notes)
