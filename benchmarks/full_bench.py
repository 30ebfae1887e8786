"""Full-scale dress rehearsal: the public Ali-CCP set's size, end to end.

    python -m benchmarks.full_bench [--sizes=2000000,20000000,84000000]
        [--work_dir=DIR] [--yes] [--keep_data] [--write_results]

(``make bench-full`` prints the plan; ``make bench-full FULL_FLAGS=--yes`` runs it.)

For each size, synthetic logs of the public set's shape (``data_prep.synthetic``:
users and items in the public set's proportion to impressions, 0.4M and 4.3M
at 84M impressions; ~40 impressions per request; user behaviour fields with
~100 ids each; 30 % of requests interleaved with other requests' rows;
gzip-compressed), then the README's real-data path as a user runs it:
``data_prep.convert --min_count=10``, ``esmm_tf.train`` one epoch with
``experiments/esmm.flags``, ``esmm_tf.evaluate`` on the whole test split,
``esmm_tf.export``, and the export loaded and called through both signatures.

Each stage is a subprocess; the benchmark measures its wall time, its peak RSS
(``wait4``: the process or its largest descendant; the converter's own
``convert_timings.json`` gives the main process and the largest worker, and
the total is bounded by main + workers x largest worker), the disk its output
takes, the vocabulary sizes and the embedding tables' memory. Without
``--yes`` it only prints how long the run will take and how much disk it needs
(from rates measured on the 2-core machine, see RESULTS.md) and checks the
free space. Resumable: a finished stage's measurement (``<size>/measure/``) is
reused, and the converter and the trainer resume their own work. The raw logs,
converted data, runs and exports are removed at the end unless ``--keep_data``.
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
from esmm_tf import files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- full:begin -->", "<!-- full:end -->"
HEADING = """## Full-scale rehearsal (`make bench-full`)

Synthetic logs of the public Ali-CCP set's shape at three sizes, through the
README's real-data path (convert with `--min_count=10`, train one epoch with
`experiments/esmm.flags`, evaluate the whole test split, export); written by
`python -m benchmarks.full_bench --yes`.
"""
PUBLIC_IMPRESSIONS = 84_000_000
PUBLIC_USERS = 400_000
PUBLIC_ITEMS = 4_300_000
GENERATOR_FLAGS = [
    "--impressions_per_row=40",
    "--behaviour_ids=100",
    "--interleave_fraction=0.3",
    "--gzip",
    "--seed=17",
    "--progress_seconds=60",
]
MIN_COUNT = 10
# Goals at the public set's size (issue 17), as rates so that every size shows them.
GOALS = {
    "convert_rate": PUBLIC_IMPRESSIONS / 3600,  # 84M impressions in an hour
    "convert_rss_mb": 2048,
    "train_rate": 50_000,
    "evaluate_rate": 43_000_000 / 600,  # 43M test impressions in 10 minutes
    "evaluate_rss_mb": 2048,  # bounded: the exact AUCs' state included
}
# For the plan: seconds per impression (train + test), measured on the 2-core
# machine at 84M impressions (RESULTS.md, "Full-scale rehearsal").
PLAN_SECONDS_PER_IMPRESSION = {
    "generate": 1336 / 84e6,
    "convert": 2242 / 84e6,
    "train": 1019 / 84e6,  # the train half's epoch, then the test half's final evaluation
    "evaluate": 216 / 84e6,
    "export": 13 / 84e6,
}
# Disk: the converter's peak is the raw logs plus its partitions (the raw rows
# uncompressed, 464 B per impression at 84M), each removed once its shard is
# written; the shards (172 B), run (17 B) and export stay below that.
PLAN_BYTES_PER_IMPRESSION = {"raw": 111, "partitions": 464}
STAGES = ("generate", "convert", "train", "evaluate", "export")

flags.DEFINE_list("sizes", ["2000000", "20000000", "84000000"], "Impressions (train + test).")
flags.DEFINE_string("work_dir", "/tmp/esmm_full_bench", "Where the data, runs and exports go.")
flags.DEFINE_bool("yes", False, "Run (without it: print the plan and exit).")
flags.DEFINE_bool("keep_data", False, "Keep the raw logs, data, runs and exports.")
flags.DEFINE_bool("write_results", True, "Update benchmarks/RESULTS.md.")
FLAGS = flags.FLAGS


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def shape(impressions: int) -> dict[str, int]:
    """Users and items in the public set's proportion to impressions."""
    return {
        "users": max(1_000, round(impressions * PUBLIC_USERS / PUBLIC_IMPRESSIONS)),
        "items": max(10_000, round(impressions * PUBLIC_ITEMS / PUBLIC_IMPRESSIONS)),
    }


def plan(sizes: list[int]) -> tuple[float, int]:
    """(seconds, bytes) the run needs: each size's stages; the disk peak is the
    largest size's (sizes run one at a time, removed after unless --keep_data)."""
    seconds = sum(n * s for n in sizes for s in PLAN_SECONDS_PER_IMPRESSION.values())
    per_size = [n * sum(PLAN_BYTES_PER_IMPRESSION.values()) for n in sizes]
    return seconds, (sum(per_size) if FLAGS.keep_data else max(per_size))


def run_stage(args: list[str], log_path: str) -> dict:
    """Runs ``python -m args...`` with its output in ``log_path``; returns its
    exit code, wall seconds and peak RSS (MB, of it or its largest descendant)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.time()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(  # from the root: flagfiles include each other by relative paths
            [sys.executable, "-m", *args], stdout=out, stderr=out, env=env, cwd=ROOT
        )
        _, status, usage = os.wait4(proc.pid, 0)
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "seconds": round(time.time() - start, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def run_resumable_stage(args: list[str], log_path: str, attempts_path: str) -> dict:
    """``run_stage``, counting earlier failed attempts of a resumable stage
    (e.g. a conversion stopped by a full disk, then resumed): their seconds
    add to this one's, their peak RSS is in the maximum, ``attempts`` says
    how many runs it took."""
    attempts = []
    if os.path.exists(attempts_path):
        with open(attempts_path) as f:
            attempts = json.load(f)
    m = run_stage(args, log_path)
    if m.pop("returncode") != 0:
        files.write_json(attempts_path, [*attempts, m])
        with open(log_path) as f:
            tail = f.read()[-2000:]
        raise SystemExit(
            f"{' '.join(args)} failed; rerun to resume it (this attempt's {m['seconds']} s "
            f"count in the stage's time). End of {log_path}:\n{tail}"
        )
    if attempts:
        m["seconds"] = round(m["seconds"] + sum(a["seconds"] for a in attempts), 1)
        m["peak_rss_mb"] = max([m["peak_rss_mb"], *(a.get("peak_rss_mb") or 0 for a in attempts)])
        m["attempts"] = len(attempts) + 1
    return m


def in_child(function: str, *args):
    """``function`` (``module.name``) called with ``args`` in a fresh Python
    process; returns its JSON result. What loads TensorFlow runs there: this
    process starts every stage, and a stage's peak RSS (``wait4``) counts from
    this process's own at the fork (TensorFlow loaded here read as ~900 MB
    more for the next size's generate and convert)."""
    module, name = function.rsplit(".", 1)
    code = (
        f"import json, sys; from {module} import {name}; "
        f"print(json.dumps({name}(*json.loads(sys.argv[1]))))"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{function}{args} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_signatures(export_dir: str, data_dir: str) -> str:
    """Loads the newest export version and calls both signatures on a test
    record; returns what they answered (raises if they answer wrongly)."""
    import numpy as np
    import tensorflow as tf

    from esmm_tf import data_layout, serving_requests
    from esmm_tf import features as F
    from esmm_tf.serving import DEFAULT_SIGNATURE, RANK_SIGNATURE

    version = max((v for v in os.listdir(export_dir) if v.isdigit()), key=int)
    loaded = tf.saved_model.load(os.path.join(export_dir, version))
    record = serving_requests.read_records(data_layout.shard_files(data_dir, "test"), 1)[0]
    examples = serving_requests.impression_examples(record)
    serve = loaded.signatures[DEFAULT_SIGNATURE](examples=tf.constant(examples))
    user, items = serving_requests.rank_request(record)
    rank = loaded.signatures[RANK_SIGNATURE](user=tf.constant(user), items=tf.constant(items))
    for key in F.OUTPUT_KEYS:
        np.testing.assert_allclose(serve[key].numpy(), rank[key].numpy(), rtol=1e-5, atol=1e-6)
    ctr = serve[F.CTR].numpy()
    if ctr.shape != (len(examples),) or not np.all((ctr > 0) & (ctr < 1)):
        raise SystemExit(f"the export answered {ctr!r} for {len(examples)} impressions")
    return f"both signatures agree on {len(examples)} impressions"


def measure_size(impressions: int, work: str) -> dict:
    """Every stage at one size (a finished stage's measurement is reused)."""
    raw, data, run, export = (os.path.join(work, d) for d in ("raw", "data", "run", "export"))
    measure_dir, logs = os.path.join(work, "measure"), os.path.join(work, "logs")
    os.makedirs(measure_dir, exist_ok=True)
    os.makedirs(logs, exist_ok=True)
    sizes = shape(impressions)
    commands = {
        "generate": [
            "data_prep.synthetic",
            f"--out_dir={raw}",
            f"--impressions={impressions}",
            f"--num_users={sizes['users']}",
            f"--num_items={sizes['items']}",
            *GENERATOR_FLAGS,
        ],
        "convert": [
            "data_prep.convert",
            f"--raw_dir={raw}",
            f"--out_dir={data}",
            f"--min_count={MIN_COUNT}",
        ],
        "train": [
            "esmm_tf.train",
            "--flagfile=experiments/esmm.flags",
            f"--data_dir={data}",
            f"--model_dir={run}",
        ],
        "evaluate": [
            "esmm_tf.evaluate",
            f"--model_dir={run}",
            f"--output_json={os.path.join(work, 'evaluate.json')}",
        ],
        "export": ["esmm_tf.export", f"--model_dir={run}", f"--export_dir={export}"],
    }
    out = {"impressions": impressions, **sizes}
    for stage in STAGES:
        path = os.path.join(measure_dir, f"{stage}.json")
        if os.path.exists(path):
            with open(path) as f:
                out[stage] = json.load(f)
            continue
        log(f"{impressions:,} impressions: {stage} ...")
        m = run_resumable_stage(
            commands[stage],
            os.path.join(logs, f"{stage}.log"),
            os.path.join(measure_dir, f"{stage}.attempts.json"),
        )
        if stage == "generate":
            m["disk_bytes"] = results.dir_bytes(raw)
        elif stage == "convert":
            with open(os.path.join(data, "stats.json")) as f:
                stats = json.load(f)
            with open(os.path.join(data, "convert_timings.json")) as f:
                timings = json.load(f)
            workers = min(os.cpu_count() or 1, len(os.sched_getaffinity(0)))
            rss = timings["peak_rss_mb"]
            m.update(
                disk_bytes=results.dir_bytes(data),
                train_impressions=stats["splits"]["train"]["impressions"],
                test_impressions=stats["splits"]["test"]["impressions"],
                vocab_rows=sum(f["vocab_size"] + 1 for f in stats["fields"].values()),
                rss_main_mb=rss["main"],
                rss_largest_worker_mb=rss["largest_worker"],
                # The tree's most at once (the converter measures the main's peak
                # while its workers ran); older conversions: every peak added.
                rss_total_bound_mb=rss.get(
                    "total_bound", round(rss["main"] + workers * rss["largest_worker"], 1)
                ),
                workers=workers,
            )
        elif stage == "train":
            with open(os.path.join(run, "config.json")) as f:
                dim = json.load(f)["embedding_dim"]
            rows = out["convert"]["vocab_rows"]
            m.update(
                disk_bytes=results.dir_bytes(run),
                rate=round(in_child("benchmarks.results.median_train_rate", run)),
                embedding_mb=round(rows * dim * 4 / 2**20, 1),
                embedding_with_adam_mb=round(3 * rows * dim * 4 / 2**20, 1),
            )
        elif stage == "evaluate":
            with open(os.path.join(work, "evaluate.json")) as f:
                metrics = json.load(f)
            m.update({k: metrics[k] for k in ("ctr_auc", "cvr_auc", "ctcvr_auc")})
        elif stage == "export":
            m.update(
                disk_bytes=results.dir_bytes(export),
                signatures=in_child("benchmarks.full_bench.check_signatures", export, data),
            )
        files.write_json(path, m)
        out[stage] = m
        log(f"  {stage}: {m}")
    return out


def _attempts(m: dict) -> str:
    """A note on a stage that took more than one run (resumed)."""
    return f" in {m['attempts']} runs" if m.get("attempts", 1) > 1 else ""


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{max(1, round(seconds / 60))} min"


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f}"


def report(rows: list[dict], command: str) -> str:
    lines = [
        f"Command: `{command}` (2 cores; each stage a subprocess; RSS in MB).",
        "",
        "| impressions (train / test) | users / items | generate s | raw GB | convert s (imp/s) "
        "| convert peak RSS main / worker / total bound | data GB | vocab rows | embedding MB "
        "(+Adam) | train s (epoch imp/s) | train peak RSS | run GB | evaluate s (imp/s) "
        "| evaluate peak RSS | export s | export GB | AUC CTR / CVR / CTCVR |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        g, c, t, e, x = (r[s] for s in STAGES)
        total = c["train_impressions"] + c["test_impressions"]
        lines.append(
            f"| {c['train_impressions']:,} / {c['test_impressions']:,} "
            f"| {r['users']:,} / {r['items']:,} | {g['seconds']:,.0f}{_attempts(g)} "
            f"| {_gb(g['disk_bytes'])} "
            f"| {c['seconds']:,.0f} ({total / c['seconds']:,.0f}){_attempts(c)} "
            f"| {c['rss_main_mb']:,.0f} / {c['rss_largest_worker_mb']:,.0f} / "
            f"{c['rss_total_bound_mb']:,.0f} | {_gb(c['disk_bytes'])} | {c['vocab_rows']:,} "
            f"| {t['embedding_mb']:,.0f} ({t['embedding_with_adam_mb']:,.0f}) "
            f"| {t['seconds']:,.0f} ({t['rate']:,}){_attempts(t)} | {t['peak_rss_mb']:,.0f} "
            f"| {_gb(t['disk_bytes'])} | {e['seconds']:,.0f} "
            f"({c['test_impressions'] / e['seconds']:,.0f}){_attempts(e)} | {e['peak_rss_mb']:,.0f} "
            f"| {x['seconds']:,.0f} | {_gb(x['disk_bytes'])} "
            f"| {e['ctr_auc']:.4f} / {e['cvr_auc']:.4f} / {e['ctcvr_auc']:.4f} |"
        )
    largest = rows[-1]
    c, t, e = largest["convert"], largest["train"], largest["evaluate"]
    total = c["train_impressions"] + c["test_impressions"]
    checks = [
        ("conversion rate (imp/s)", total / c["seconds"], GOALS["convert_rate"], True),
        (
            "conversion peak RSS, total bound (MB)",
            c["rss_total_bound_mb"],
            GOALS["convert_rss_mb"],
            False,
        ),
        ("training throughput (imp/s)", t["rate"], GOALS["train_rate"], True),
        (
            "evaluation rate (imp/s)",
            c["test_impressions"] / e["seconds"],
            GOALS["evaluate_rate"],
            True,
        ),
        ("evaluation peak RSS (MB)", e["peak_rss_mb"], GOALS["evaluate_rss_mb"], False),
    ]
    lines += [
        "",
        f"Goals at the largest size ({total:,} impressions; the goals are the public set's "
        "times as rates: 84M converted in 1 h, 42M trained in 15 min, 43M evaluated in 10 min):",
        "",
        "| goal | measured | target | result |",
        "|---|---:|---:|---|",
    ]
    for name, value, target, higher in checks:
        ok = value >= target if higher else value <= target
        lines.append(f"| {name} | {value:,.0f} | {target:,.0f} | {'PASS' if ok else 'MISS'} |")
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    sizes = sorted(int(float(s)) for s in FLAGS.sizes)
    seconds, needed = plan(sizes)
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    free = shutil.disk_usage(FLAGS.work_dir).free
    # A resumed run already holds part of what it needs (raw logs, partitions).
    held = results.dir_bytes(FLAGS.work_dir)
    print(
        f"full_bench: sizes {', '.join(f'{n:,}' for n in sizes)} impressions in "
        f"{FLAGS.work_dir}: about {_duration(seconds)} on 2 cores and {needed / 1e9:.0f} GB "
        f"of disk at the peak ({free / 1e9:.0f} GB free, {held / 1e9:.0f} GB already there)."
    )
    if needed > free + held:
        raise SystemExit(
            f"error: {FLAGS.work_dir} has {free / 1e9:.0f} GB free and {held / 1e9:.0f} GB "
            f"already there, the run needs about {needed / 1e9:.0f} GB; choose another "
            "--work_dir or fewer --sizes"
        )
    if not FLAGS.yes:
        print("Pass --yes to run it (make bench-full FULL_FLAGS=--yes).")
        return
    rows = []
    for n in sizes:
        work = os.path.join(FLAGS.work_dir, str(n))
        rows.append(measure_size(n, work))
        if not FLAGS.keep_data:
            for d in ("raw", "data", "data.partial", "run", "export"):
                shutil.rmtree(os.path.join(work, d), ignore_errors=True)
    command = f"python -m benchmarks.full_bench --sizes={','.join(map(str, sizes))} --yes"
    text = report(rows, command)
    print(text)
    if FLAGS.write_results:
        results.write_section(BEGIN, END, text, HEADING)


if __name__ == "__main__":
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()
    app.run(main)
