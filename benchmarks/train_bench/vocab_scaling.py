"""Measurements 4 and 6: the train step with field 205's vocabulary padded to
``--big_rows`` rows, in subprocesses (``--child``), and their peak RSS."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.train_bench.config import BIG_FIELD, TrainBenchConfig
from benchmarks.train_bench.steps import make_config, materialise, time_steps, total_rows, trainer

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_vocab_dirs(data_dir: str, root: str, big_rows: int) -> tuple[str, str]:
    """Two datasets sharing data_dir's shards: the same vocabularies, and field
    205's padded to big_rows rows with fake ids (after the real ones, so every
    real id keeps its row)."""
    from esmm_tf import data_layout, vocab

    dirs = []
    for name in ("vocab-small", "vocab-big"):
        d = os.path.join(root, name)
        os.makedirs(d)
        for entry in ("train", "test", data_layout.STATS_FILE):
            os.symlink(os.path.join(os.path.abspath(data_dir), entry), os.path.join(d, entry))
        shutil.copytree(os.path.join(data_dir, data_layout.VOCAB_DIR), os.path.join(d, "vocab"))
        dirs.append(d)
    path = data_layout.vocab_file(dirs[1], BIG_FIELD)
    rows = vocab.vocab_size(path) + vocab.OOV_ROWS
    real = set(vocab.read_vocab(path).tolist())
    base = 10**15  # far above any raw id the converter writes
    assert not any(i >= base for i in real)
    with open(path, "a") as f:
        chunk = 1_000_000
        for start in range(rows, big_rows, chunk):
            stop = min(start + chunk, big_rows)
            f.write("".join(f"{base + i}\t1\n" for i in range(start, stop)))
    return dirs[0], dirs[1]


def child_main(small_dir: str, big_dir: str, config: TrainBenchConfig) -> None:
    """In a subprocess: the train step with both vocabularies, on the same
    pre-materialised batches, alternating blocks of steps."""
    batches = materialise(small_dir, config.batches)
    result = {}
    steps = {}
    for name, d in (("small", small_dir), ("big", big_dir)):
        t0 = time.perf_counter()
        _, _, step = trainer(make_config(d))
        result[f"{name}_build_s"] = time.perf_counter() - t0
        result[f"{name}_rows"] = total_rows(d)
        time_steps(step, batches, 0, config.warmup)
        steps[name] = step
    blocks = 3
    totals = {name: [0.0, 0] for name in steps}
    for b in range(blocks):
        for name, step in steps.items():
            s, n = time_steps(step, batches, b * 100, config.steps // blocks)
            totals[name][0] += s
            totals[name][1] += config.steps // blocks
    for name, (s, n) in totals.items():
        result[f"{name}_ms_per_step"] = 1000 * s / n
    result["self_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def measure_vocab(data_dir: str, config: TrainBenchConfig) -> dict:
    root = tempfile.mkdtemp(prefix="esmm_train_bench_")
    try:
        t0 = time.perf_counter()
        small, big = make_vocab_dirs(data_dir, root, config.big_rows)
        write_s = time.perf_counter() - t0
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        result = {"earlier_children_maxrss_mb": before, "vocab_write_s": write_s}
        # Two children, small model built first then big, and the reverse: the
        # model built first in a process measured slower, whatever its size.
        for order, dirs in (("small_first", (small, big)), ("big_first", (big, small))):
            args = [
                sys.executable,
                "-m",
                "benchmarks.train_bench",
                f"--child={dirs[0]},{dirs[1]}",
                f"--steps={config.steps}",
                f"--warmup={config.warmup}",
                f"--batches={config.batches}",
            ]
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
            proc = subprocess.run(
                args,
                check=True,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
                cwd=_ROOT,
            )
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
            child = json.loads(line[len("RESULT ") :])
            result[order] = child
            result[f"{order}_children_maxrss_mb"] = (
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            )
        a, b = result["small_first"], result["big_first"]
        result["small_rows"], result["big_rows"] = a["small_rows"], a["big_rows"]
        result["ratio_small_first"] = a["big_ms_per_step"] / a["small_ms_per_step"]
        result["ratio_big_first"] = b["small_ms_per_step"] / b["big_ms_per_step"]
        result["ratio"] = (result["ratio_small_first"] * result["ratio_big_first"]) ** 0.5
        result["children_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)
