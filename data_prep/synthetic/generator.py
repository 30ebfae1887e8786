"""``generate``: the world, calibration, then chunk after chunk streamed to the files."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

import numpy as np

from data_prep.synthetic import lines
from data_prep.synthetic.calibration import calibrate
from data_prep.synthetic.config import (
    COMMON,
    CONFIG_FILE,
    GROUND_TRUTH,
    SKELETON,
    SPLITS,
    SyntheticConfig,
    file_names,
)
from data_prep.synthetic.interleave import Interleaver, scatter_keys
from data_prep.synthetic.output import AtomicOutput
from data_prep.synthetic.sampling import row_sizes, sample_chunk
from data_prep.synthetic.summary import FieldStats, SplitStats, round_sig
from data_prep.synthetic.text import hcat, itoa, take
from data_prep.synthetic.world import CONTEXT_PROBS, build_world, sigmoid
from esmm_tf import features


def generate(config: SyntheticConfig, out_dir: str) -> dict[str, Any]:
    """Writes the synthetic data set to ``out_dir``; returns the summary it records."""
    config = config.resolved()
    os.makedirs(out_dir, exist_ok=True)
    start_time = time.monotonic()
    world = build_world(config, np.random.default_rng([config.seed, 0]))
    calibration = calibrate(world, np.random.default_rng([config.seed, 1]))
    stream_start = time.monotonic()  # world and calibration done; the rest scales with impressions
    rng = np.random.default_rng([config.seed, 2])
    cfi_key = np.uint64(np.random.default_rng([config.seed, 3]).integers(0, 2**63))
    b_ctr, b_cvr = world.intercept
    n_total = config.impressions
    n_train = round(n_total * (1 - config.test_fraction))
    ext = ".csv.gz" if config.gzip else ".csv"
    split_stats = {s: SplitStats() for s in SPLITS}
    field_stats = FieldStats()
    names = file_names(config.gzip)
    interleave = config.interleave_fraction > 0

    interleave_rng = np.random.default_rng([config.seed, 4])
    windows: dict[str, Interleaver] = {}  # per split, with --interleave_fraction
    max_pending = 0

    with AtomicOutput(out_dir, names, config.gzip_level if config.gzip else None) as out:
        written = rows_done = 0
        last_report = start_time
        while written < n_total:
            sizes = row_sizes(rng, config)
            starts = written + np.cumsum(sizes) - sizes
            live = starts < n_total
            starts, sizes = starts[live], np.minimum(sizes[live], n_total - starts[live])
            chunk = sample_chunk(world, rng, sizes)
            n, n_rows = len(chunk.row), len(sizes)
            logit_ctr, logit_cvr = chunk.logit_ctr + b_ctr, chunk.logit_cvr + b_cvr
            pctr, pcvr = sigmoid(logit_ctr), sigmoid(logit_cvr)
            click = rng.random(n) < pctr
            counterfactual = rng.random(n) < pcvr
            sample_id = written + 1 + np.arange(n)
            cfi = lines.common_feature_indexes(rows_done + np.arange(n_rows), cfi_key)

            common, common_at, common_keys = lines.common_lines(world, chunk, cfi)
            prefix = [
                take(lines.LABELS, 2 * click + (click & counterfactual)),
                take(cfi, chunk.row),
            ]
            if not interleave:  # else sample ids are given in file order, when lines leave
                prefix.insert(0, itoa(sample_id))
            skeleton, skeleton_at, skeleton_keys = lines.skeleton_lines(world, chunk, hcat(*prefix))
            field_stats.add("common", n_rows, common_keys)
            field_stats.add("skeleton", n, skeleton_keys)
            if interleave:
                skeleton = skeleton.tobytes()
                keys = scatter_keys(
                    interleave_rng, sample_id - 1.0, chunk.row, n_rows,
                    config.interleave_fraction, config.interleave_window,
                )  # fmt: skip
                truth = np.stack([pctr, pcvr, counterfactual], axis=1)

            k = int((starts < n_train).sum())  # rows of this chunk that go to train
            m = int(sizes[:k].sum())
            for split, rows, imps in (("train", (0, k), (0, m)), ("test", (k, n_rows), (m, n))):
                if rows[0] == rows[1]:
                    continue
                lo, hi = imps
                out.write(f"{COMMON}_{split}{ext}", common[common_at[rows[0]] : common_at[rows[1]]])
                if interleave:
                    if split not in windows:  # the previous split is complete
                        for done in list(windows):
                            _write_lines(out, done, ext, *windows.pop(done).flush())
                        windows[split] = Interleaver(first_sample_id=int(sample_id[lo]))
                    _write_lines(out, split, ext, *windows[split].add(
                        keys[lo:hi], skeleton, skeleton_at[lo : hi + 1],
                        truth[lo:hi], frontier=float(sample_id[hi - 1]),
                    ))  # fmt: skip
                    max_pending = max(max_pending, windows[split].pending)
                else:
                    _write_lines(
                        out,
                        split,
                        ext,
                        skeleton[skeleton_at[lo] : skeleton_at[hi]],
                        lines.ground_truth_lines(
                            sample_id[lo:hi],
                            pctr[lo:hi],
                            pcvr[lo:hi],
                            counterfactual[lo:hi].astype(np.int64),
                        ),
                    )
                split_stats[split].add(
                    rows[1] - rows[0], sample_id[lo:hi], logit_ctr[lo:hi], logit_cvr[lo:hi],
                    pctr[lo:hi], pcvr[lo:hi], click[lo:hi], counterfactual[lo:hi],
                )  # fmt: skip
            written += n
            rows_done += n_rows
            now = time.monotonic()
            if config.progress_seconds > 0 and now - last_report >= config.progress_seconds:
                last_report = now
                rate = written / (now - stream_start)
                print(
                    f"synthetic: {written:,}/{n_total:,} impressions, {rows_done:,} common rows, "
                    f"{rate:,.0f} impressions/s",
                    file=sys.stderr,
                    flush=True,
                )

        for done in list(windows):
            _write_lines(out, done, ext, *windows.pop(done).flush())
        summary = {
            "format": "Ali-CCP raw logs; see data_prep/synthetic",
            "config": dataclasses.asdict(config),
            "files": [*names, CONFIG_FILE],
            "world": {
                "users": config.num_users,
                "items": config.num_items,
                "categories": world.sizes["206"],
                "shops": world.sizes["207"],
                "brands": world.sizes["216"],
                "intentions": world.sizes["210"],
                "contexts": len(CONTEXT_PROBS),
                "max_behaviour_count": len(world.values.mat) // 2 - 1,
                "field_id_ranges": {
                    f.id: [world.id_base[f.id], world.id_base[f.id] + world.sizes[f.id] - 1]
                    for f in features.FIELDS
                },
            },
            "interleave": {"max_pending_lines": max_pending},
            "calibration": {k: round_sig(v) for k, v in calibration.items()},  # ints stay exact
            "splits": {s: split_stats[s].summary() for s in SPLITS},
            "total": split_stats["train"].merged(split_stats["test"]).summary(),
            "fields": field_stats.summary(),
        }
        out.commit(json.dumps(summary, indent=2) + "\n")
    end_time = time.monotonic()
    seconds = end_time - start_time
    if config.progress_seconds > 0 and seconds >= config.progress_seconds:
        print(
            f"synthetic: wrote {written:,} impressions in {seconds:.1f}s to {out_dir} (world and "
            f"calibration {stream_start - start_time:.1f}s, then "
            f"{written / (end_time - stream_start):,.0f} impressions/s)",
            file=sys.stderr,
            flush=True,
        )
    return summary


def _write_lines(out: AtomicOutput, split: str, ext: str, skeleton, truth) -> None:
    """Skeleton lines and their ground-truth lines (same order) of one split."""
    out.write(f"{SKELETON}_{split}{ext}", skeleton)
    out.write(f"{GROUND_TRUTH}_{split}{ext}", truth)
