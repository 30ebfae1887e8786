"""Serving latency of the exported SavedModel, in process, through its signatures.

``python -m benchmarks.serving_bench [--data_dir=DATA] [--model_dir=RUN]``

Exports a model (the last checkpoint of ``--model_dir``, else a freshly
initialised ESMM on ``--data_dir``'s vocabularies: latency does not depend on
the weights' values), loads the SavedModel as a client process would and
calls its signatures with requests made from real test records
(``esmm_tf.serving_requests``):

* ``serving_default`` at batch 1, 64 and 1024 impressions;
* ``rank``: one user context and 64 / 1024 candidate items, against
  ``serving_default`` on the same impressions (the user part pooled once vs
  once per impression), measured alternately in the same run.

Each shape is warmed up first; latency percentiles are over ``--repeats``
calls (each call ends with the outputs as numpy arrays). Writes its section
of benchmarks/RESULTS.md. TensorFlow Serving adds its own RPC and batching
overheads on top; these numbers are the model's share.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks import results

BEGIN, END = "<!-- serving:begin -->", "<!-- serving:end -->"
HEADING = """## Serving (`make bench-serving`)

Latency of the exported SavedModel's signatures, called in process (loaded
with `tf.saved_model.load`, requests made from real test records); written
by `python -m benchmarks.serving_bench`. TensorFlow Serving adds its RPC and
request-batching costs on top."""

flags.DEFINE_string("data_dir", "/tmp/esmm_serving_bench/data", "Converted dataset.")
flags.DEFINE_string("model_dir", "", "A training run to export (default: an initialised ESMM).")
flags.DEFINE_integer("impressions", 200_000, "Synthetic impressions if data_dir is missing.")
flags.DEFINE_integer("repeats", 200, "Timed calls per shape (a quarter of it at batch 1024).")
flags.DEFINE_bool("write_results", True, "Update benchmarks/RESULTS.md.")
FLAGS = flags.FLAGS

BATCHES = (1, 64, 1024)
RANK_SIZES = (64, 1024)


def ensure_dataset(data_dir: str) -> None:
    if os.path.exists(os.path.join(data_dir, "stats.json")):
        return
    raw_dir = os.path.join(os.path.dirname(data_dir.rstrip("/")), "raw")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    print(f"generating {FLAGS.impressions:,} synthetic impressions in {raw_dir}", file=sys.stderr)
    if not os.path.exists(os.path.join(raw_dir, "synthetic_config.json")):
        subprocess.run(
            [sys.executable, "-m", "data_prep.synthetic", f"--out_dir={raw_dir}",
             f"--impressions={FLAGS.impressions}"],
            check=True,
            env=env,
        )  # fmt: skip
    subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep.convert",
            f"--raw_dir={raw_dir}",
            f"--out_dir={data_dir}",
        ],
        check=True,
        env=env,
    )


def export(data_dir: str, model_dir: str, export_dir: str) -> tuple[str, str]:
    """(version dir, what was exported)."""
    from esmm_tf import data_layout, serving, serving_requests

    if model_dir:
        return export.export_model_dir(model_dir, export_dir), f"last checkpoint of {model_dir}"
    from esmm_tf.config import Config
    from esmm_tf.model import build_model

    model = build_model(Config(data_dir=data_dir))
    warmup = serving_requests.read_records(
        data_layout.shard_files(data_dir, "test"), serving.WARMUP_RECORDS
    )
    path = export.export_saved_model(model, export_dir, warmup_records=warmup)
    return path, "an initialised ESMM (paper architecture) on the dataset's vocabularies"


def requests(data_dir: str, n: int):
    """n per-impression requests, and a rank request per size: one user and
    the items of the same n impressions (which come from several users)."""
    from esmm_tf import data_layout, serving_requests

    records = serving_requests.read_records(data_layout.shard_files(data_dir, "test"), n)
    examples, items = [], []
    user = None
    for record in records:
        examples += serving_requests.impression_examples(record)
        record_user, record_items = serving_requests.rank_request(record)
        user = user or record_user
        items += record_items
        if len(examples) >= n:
            break
    if len(examples) < n:
        raise SystemExit(f"the test split of {data_dir} has fewer than {n} impressions")
    return examples[:n], user, items[:n]


def time_calls(fn, repeats: int) -> list[float]:
    fn()
    fn()  # warm: traced, first-call allocations done
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def main(argv) -> None:
    del argv
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()
    start = time.time()
    command = ("python -m benchmarks.serving_bench " + " ".join(sys.argv[1:])).strip()
    ensure_dataset(FLAGS.data_dir)
    import numpy as np
    import tensorflow as tf

    from esmm_tf.serving import RANK_SIGNATURE

    with tempfile.TemporaryDirectory() as tmp:
        version_dir, what = export(FLAGS.data_dir, FLAGS.model_dir, tmp)
        loaded = tf.saved_model.load(version_dir)
        serve = loaded.signatures["serving_default"]
        rank = loaded.signatures[RANK_SIGNATURE]
        examples, user, items = requests(FLAGS.data_dir, max(BATCHES + RANK_SIZES))

        def default_call(batch):
            tensor = tf.constant(examples[:batch])
            return lambda: {k: v.numpy() for k, v in serve(examples=tensor).items()}

        def rank_call(n):
            user_t, items_t = tf.constant(user), tf.constant(items[:n])
            return lambda: {k: v.numpy() for k, v in rank(user=user_t, items=items_t).items()}

        rows = []
        for batch in BATCHES:
            repeats = FLAGS.repeats if batch < 1024 else max(10, FLAGS.repeats // 4)
            print(f"serving_default batch {batch} ...", file=sys.stderr, flush=True)
            times = time_calls(default_call(batch), repeats)
            rows.append(("serving_default", batch, times))
        rank_rows = []
        for n in RANK_SIZES:
            repeats = FLAGS.repeats if n < 1024 else max(10, FLAGS.repeats // 4)
            print(f"rank {n} items vs serving_default ...", file=sys.stderr, flush=True)
            fns = {"rank": rank_call(n), "default": default_call(n)}
            times = {k: [] for k in fns}
            for fn in fns.values():
                fn()
            for _ in range(4):  # alternating blocks: both see the same machine
                for k, fn in fns.items():
                    times[k] += time_calls(fn, max(1, repeats // 4))
            rows.append((f"rank (1 user, {n} items)", n, times["rank"]))
            rank_rows.append((n, np.median(times["default"]) / np.median(times["rank"])))

    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {platform.platform()}, "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, by `{command}` ({time.time() - start:.0f} s wall). "
        f"Model: {what}. Requests from the test split of {FLAGS.data_dir}. "
        "Other jobs may have shared the machine.",
        "",
        "| signature | impressions per call | p50 ms | p99 ms | mean ms | impressions/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, n, times in rows:
        mean = sum(times) / len(times)
        lines.append(
            f"| {name} | {n:,} | {percentile(times, 50) * 1e3:.2f} | "
            f"{percentile(times, 99) * 1e3:.2f} | {mean * 1e3:.2f} | {n / mean:,.0f} |"
        )
    lines.append("")
    for n, ratio in rank_rows:
        lines.append(
            f"- rank vs serving_default on the same {n:,} impressions (median latency, "
            f"alternating blocks in one run): serving_default / rank = {ratio:.2f}"
        )
    text = "\n".join(lines)
    print(text)
    if FLAGS.write_results:
        results.write_section(BEGIN, END, text, HEADING)


if __name__ == "__main__":
    app.run(main)
