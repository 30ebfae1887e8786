"""The benchmark's options: one flag per field (``esmm_tf.config_flags``)."""

from __future__ import annotations

import dataclasses

from esmm_tf.config_flags import option

BIG_FIELD = "205"
BATCH = 1024  # impressions per step (the Config default)


@dataclasses.dataclass(frozen=True)
class TrainBenchConfig:
    data_dir: str = option("/tmp/esmm_convert_bench/data-2000000", "Converted dataset.")
    raw_dir: str = option(
        "/tmp/esmm_convert_bench/raw-2000000", "Synthetic raw logs (if data_dir is missing)."
    )
    impressions: int = option(2000000, "Synthetic impressions (if data_dir is missing).")
    steps: int = option(300, "Timed train steps per measurement.")
    warmup: int = option(20, "Untimed steps before each measurement.")
    batches: int = option(64, "Pre-materialised batches (cycled).")
    big_rows: int = option(10_000_000, "Rows of field 205's padded vocabulary.")
    eval_batches: int = option(0, "Evaluate on this many test batches (0: all).")
    write_results: bool = option(True, "Update benchmarks/RESULTS.md.")
    profile_dir: str = option(
        "",
        "Write the TensorFlow profiler trace of the profiled steps here (TensorBoard's "
        "profile plugin reads it); a temporary directory, deleted, when empty.",
    )
    profile_steps: int = option(20, "Train steps (on ready batches) under the profiler.")
    child: str = option("", "Internal: run the vocabulary measurement on these dirs.")
