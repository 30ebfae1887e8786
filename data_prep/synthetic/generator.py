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
from data_prep.synthetic.output import AtomicOutput, foreign_raw_files, remove_stale_tmp
from data_prep.synthetic.sampling import row_sizes, sample_chunk
from data_prep.synthetic.summary import FieldStats, SplitStats, round_sig
from data_prep.synthetic.text import Text, hcat, itoa, take
from data_prep.synthetic.world import CONTEXT_PROBS, build_world, sigmoid
from esmm_tf import features


def generate(config: SyntheticConfig, out_dir: str, overwrite: bool = False) -> dict[str, Any]:
    """Writes the synthetic data set to ``out_dir``; returns the summary it records.

    An earlier output of this generator in ``out_dir`` is replaced; raw logs it
    did not write (no ``synthetic_config.json``: e.g. the real data) are
    refused (ValueError) unless ``overwrite``."""
    config = config.resolved()
    foreign = foreign_raw_files(out_dir)
    if foreign and not overwrite:
        raise ValueError(
            f"--out_dir={out_dir} holds raw logs that data_prep.synthetic did not write "
            f"({', '.join(foreign)}; no {CONFIG_FILE}), which this run would replace: "
            "choose another --out_dir, or pass --overwrite to replace them"
        )
    os.makedirs(out_dir, exist_ok=True)
    remove_stale_tmp(out_dir)
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

    with AtomicOutput(out_dir, names, config.gzip_level if config.gzip else None) as out:
        skeleton_files = _SkeletonFiles(out, ext, config)
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
            labels = take(lines.LABELS, 2 * click + (click & counterfactual))
            prefix = skeleton_files.prefix(sample_id, labels, take(cfi, chunk.row))
            skeleton, skeleton_at, skeleton_keys = lines.skeleton_lines(world, chunk, prefix)
            field_stats.add("common", n_rows, common_keys)
            field_stats.add("skeleton", n, skeleton_keys)
            skeleton_files.add_chunk(
                sample_id, chunk.row, skeleton, skeleton_at, pctr, pcvr, counterfactual
            )

            k = int((starts < n_train).sum())  # rows of this chunk that go to train
            m = int(sizes[:k].sum())
            for split, rows, imps in (("train", (0, k), (0, m)), ("test", (k, n_rows), (m, n))):
                if rows[0] == rows[1]:
                    continue
                lo, hi = imps
                out.write(f"{COMMON}_{split}{ext}", common[common_at[rows[0]] : common_at[rows[1]]])
                skeleton_files.write(split, lo, hi)
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

        empty = [s for s in SPLITS if not split_stats[s].impressions]
        if empty:  # the converter refuses an empty file: write nothing
            raise ValueError(
                f"the {' and '.join(empty)} split got no impressions (a request's rows all go "
                f"to one split, and the {n_total:,} impressions fell on one side of "
                f"--test_fraction={config.test_fraction:g}): raise --impressions"
            )
        skeleton_files.close()
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
            "interleave": {"max_pending_lines": skeleton_files.max_pending},
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


class _SkeletonFiles:
    """The skeleton and ground-truth files of each split, written as drawn or, with
    ``interleave_fraction``, through a reorder window (``interleave.py``)."""

    def __init__(self, out: AtomicOutput, ext: str, config: SyntheticConfig):
        self._out, self._ext = out, ext
        self._fraction, self._window = config.interleave_fraction, config.interleave_window
        self._interleave = self._fraction > 0
        self._rng = np.random.default_rng([config.seed, 4])
        self._windows: dict[str, Interleaver] = {}  # the split being written
        self._chunk: tuple = ()
        self.max_pending = 0

    def prefix(self, sample_id: np.ndarray, labels: Text, cfi: Text) -> Text:
        """Each skeleton line's start; interleaved lines get their sample id when they leave."""
        return hcat(labels, cfi) if self._interleave else hcat(itoa(sample_id), labels, cfi)

    def add_chunk(self, sample_id, row, skeleton, skeleton_at, pctr, pcvr, counterfactual):
        """The next chunk's lines (bytes and line offsets) and ground truth."""
        if self._interleave:
            keys = scatter_keys(
                self._rng, sample_id - 1.0, row, int(row[-1]) + 1, self._fraction, self._window
            )
            truth = np.stack([pctr, pcvr, counterfactual], axis=1)
            skeleton = skeleton.tobytes()
        else:
            keys = truth = None
        self._chunk = (sample_id, skeleton, skeleton_at, pctr, pcvr, counterfactual, keys, truth)

    def write(self, split: str, lo: int, hi: int) -> None:
        """Impressions ``[lo, hi)`` of the chunk, all in ``split``."""
        sample_id, skeleton, at, pctr, pcvr, counterfactual, keys, truth = self._chunk
        if not self._interleave:
            truth_lines = lines.ground_truth_lines(
                sample_id[lo:hi], pctr[lo:hi], pcvr[lo:hi], counterfactual[lo:hi].astype(np.int64)
            )
            self._write(split, skeleton[at[lo] : at[hi]], truth_lines)
            return
        if split not in self._windows:  # the previous split is complete
            self.close()
            self._windows[split] = Interleaver(first_sample_id=int(sample_id[lo]))
        window = self._windows[split]
        frontier = float(sample_id[hi - 1])  # the next impression's position
        self._write(
            split, *window.add(keys[lo:hi], skeleton, at[lo : hi + 1], truth[lo:hi], frontier)
        )
        self.max_pending = max(self.max_pending, window.pending)

    def close(self) -> None:
        """Writes the lines still waiting in the window."""
        for split in list(self._windows):
            self._write(split, *self._windows.pop(split).flush())

    def _write(self, split: str, skeleton, truth) -> None:
        self._out.write(f"{SKELETON}_{split}{self._ext}", skeleton)
        self._out.write(f"{GROUND_TRUTH}_{split}{self._ext}", truth)
