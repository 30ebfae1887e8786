"""Runs the real training entry point once per (model, seed, setting), resumably,
and summarises the results. Shared by the Table 2 and Figure 2 commands."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

from esmm_tf import data_layout, files, registry, training_run
from esmm_tf import run_dir as run_dir_lib

# Models, display names and the paper's numbers: esmm_tf/registry.py.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The committed reference results; a user's runs go to DEFAULT_OUT_DIR (git-ignored).
REFERENCE_DIR = os.path.join(ROOT, "experiments", "results")
DEFAULT_OUT_DIR = os.path.join(ROOT, "runs", "experiments")


def output_dir(out_dir: str | None, update_reference: bool) -> str:
    """Where a table/figure command writes: ``out_dir`` (default
    ``runs/experiments/``); the committed ``experiments/results/`` only with
    ``update_reference``. Raises ValueError on a contradiction."""
    is_reference = bool(out_dir) and os.path.realpath(out_dir) == os.path.realpath(REFERENCE_DIR)
    if update_reference:
        if out_dir and not is_reference:
            raise ValueError(
                f"--update_reference writes {REFERENCE_DIR}; drop --out_dir={out_dir} or it"
            )
        return REFERENCE_DIR
    if is_reference:
        raise ValueError(
            f"--out_dir={out_dir} holds the committed reference results; "
            "pass --update_reference to refresh them, or choose another --out_dir"
        )
    return out_dir or DEFAULT_OUT_DIR


def flagfile(model: str) -> str:
    """``experiments/<model>.flags``: the model's training flags (Table 2's setting)."""
    return os.path.join(ROOT, "experiments", model + ".flags")


def check_models(models: list[str]) -> None:
    """Before anything trains or is written: ``models`` (a table or figure
    command's ``--models``) names at least one model, each once, each a
    registered model with its flagfile. Raises ValueError, one line."""
    if not models:
        raise ValueError(f"--models is empty; choose from {', '.join(registry.MODELS)}")
    for model in models:
        if model not in registry.MODELS:
            raise ValueError(
                f"--models: unknown model {model!r}; choose from {', '.join(registry.MODELS)}"
            )
        if not os.path.isfile(flagfile(model)):
            raise ValueError(f"--models: {model} has no flagfile {flagfile(model)}")
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise ValueError(f"--models names {', '.join(repeated)} more than once")


def check_runs(runs: int) -> None:
    """``--runs`` (seeds per model) is at least 1: with none, every result
    would be NaN. Raises ValueError, one line."""
    if runs < 1:
        raise ValueError(f"--runs={runs}: the seeds per model must be at least 1")


def parse_rates(values: list[str]) -> list[float]:
    """Figure 2's ``--rates``: at least one fraction of the training set,
    each a finite number in (0, 1], none twice. Raises ValueError, one line."""
    if not values:
        raise ValueError("--rates is empty; e.g. --rates=0.01,0.1,1.0")
    rates = []
    for value in values:
        try:
            rate = float(value)
        except ValueError:
            raise ValueError(f"--rates: {value!r} is not a number") from None
        if not 0 < rate <= 1:  # NaN fails it too
            raise ValueError(f"--rates: {value} is not a fraction of the training set in (0, 1]")
        if rate in rates:
            raise ValueError(f"--rates: {value} is given more than once")
        rates.append(rate)
    return rates


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_dir(out_dir: str, model: str, rate: float, seed: int, suffix: str = "") -> str:
    """Where a run lives; Table 2 runs are Figure 2's points at rate 1.0 (a
    ``suffix`` keeps another protocol's runs apart)."""
    return os.path.join(out_dir, "runs", model, f"rate{float(rate)}{suffix}", f"seed{seed}")


# Figure 2's points (experiments/figure2.py).
EVALS_PER_BUDGET = 10
ES_SUFFIX = "-es"  # the early-stopped points' run directories: rate<r>-es


def rate_flags(rate: float, equal_steps: bool, early_stopping: dict | None = None) -> list[str]:
    """The training flags of one point: its fraction, and with ``equal_steps``
    round(1/rate) epochs. Without ``early_stopping``, no evaluations during
    training (only the final test evaluation counts; at 1 % they would run
    every few steps). With ``early_stopping`` (``validation_fraction``,
    ``metric``, ``patience``, ``budget_steps``: the steps of one epoch of the whole
    non-validation split), the validation split held out, an evaluation every
    budget/10 steps, the stop after ``patience`` of them without improvement."""
    epochs = max(1, round(1 / rate)) if equal_steps else 1
    if early_stopping is None and rate == 1.0:
        return []  # one epoch of everything: a Table 2 run, the same command (and archive record)
    out = [f"--train_fraction={rate}", f"--epochs={epochs}"]
    if early_stopping is None:
        if epochs > 1:
            out.append("--eval_every_steps=1000000000")
        return out
    every = max(1, early_stopping["budget_steps"] // EVALS_PER_BUDGET)
    return out + [
        f"--validation_fraction={early_stopping['validation_fraction']}",
        f"--early_stopping_metric={early_stopping['metric']}",
        f"--early_stopping_patience={early_stopping['patience']}",
        f"--eval_every_steps={every}",
    ]


def budget_steps(data_dir: str, validation_fraction: float, extra: list[str] = ()) -> int:
    """Steps of one epoch over the train split without the validation split
    (from the data's stats.json), at the batch size of ``extra``'s
    ``--batch_size`` if it has one, else the paper's (the flagfiles'). Raises
    ValueError (a flag's value) or DatasetError (no usable dataset), one line."""
    from esmm_tf.config import Config

    batch = []
    for flag in extra:
        if flag.startswith("--batch_size="):
            try:
                batch.append(int(flag.split("=", 1)[1]))
            except ValueError:
                raise ValueError(
                    f"--extra_flags: {flag}: the batch size is not an integer"
                ) from None
    config = Config(data_dir=data_dir, validation_fraction=validation_fraction)
    if batch:
        config = dataclasses.replace(config, batch_size=batch[-1])
    return training_run.steps_per_epoch(config)


def train_process(
    model: str, seed: int, data_dir: str, run_dir: str, extra_flags: list[str] = ()
) -> float:
    """Runs ``python -m esmm_tf.train --flagfile=experiments/<model>.flags
    --data_dir --model_dir --seed [extra_flags]`` (the real entry point, which
    resumes a run it finds); returns its seconds. Raises RuntimeError with the
    end of its stderr if it fails."""
    cmd = [
        sys.executable,
        "-m",
        "esmm_tf.train",
        f"--flagfile={flagfile(model)}",
        f"--data_dir={data_dir}",
        f"--model_dir={run_dir}",
        f"--seed={seed}",
        *extra_flags,
    ]
    start = time.time()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return time.time() - start


def data_id(data_dir: str) -> str:
    """A short sha256 of the dataset's stats.json without its raw files'
    modification times (the rest is deterministic for a given input: the same
    raw logs converted the same way on any machine give the same id): which
    data an archived run was measured on."""
    stats = data_layout.read_stats(data_dir)  # a DatasetError naming a damaged file
    raw_files = stats.get("fingerprint", {}).get("files", {})
    for name, size_mtime in raw_files.items():  # [size, mtime]: keep the size
        raw_files[name] = size_mtime[0] if isinstance(size_mtime, list) else size_mtime
    text = json.dumps(stats, sort_keys=True).encode()
    return hashlib.sha256(text).hexdigest()[:16]


PRUNE_HELP = (  # the table and figure commands' --prune
    "Remove each finished run's checkpoints (its metrics stay, so it is still reused): "
    "bounded disk for many runs, at the cost of evaluating or exporting them later."
)

ARCHIVE_DIR_HELP = (  # the table and figure commands' --archive_dir
    "Keep each finished run's numbers here (one small JSON per run, with the data's id and "
    "the run's flags) and reuse them: commit it, and a fresh machine with the same data "
    "resumes where this one stopped."
)

# What an archive keeps of a run besides ``per_run``'s numbers.
ARCHIVE_STEP_KEYS = ("step", "best_step", "stopped_early")


def archive_path(archive_dir: str, model: str, rate: float, seed: int, suffix: str = "") -> str:
    """One finished run's record in an archive: the layout of ``run_dir``'s
    directories, one small JSON file per run."""
    return os.path.join(archive_dir, model, f"rate{float(rate)}{suffix}", f"seed{seed}.json")


def read_archived(path: str, data: str, flags: list[str]) -> dict | None:
    """The archived record at ``path`` if it was measured on the data ``data``
    (``data_id``) with the training flags ``flags``; None if there is none.
    Raises RuntimeError if it was measured on other data or with other flags
    (reusing it would mix two experiments)."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise RuntimeError(f"{path}: not a readable run record ({e}); remove it") from e
    if not isinstance(record, dict):
        raise RuntimeError(f"{path}: not a run record (a JSON object); remove it")
    if record.get("data") != data or record.get("flags") != list(flags):
        raise RuntimeError(
            f"{path} was measured on data {record.get('data')} with flags "
            f"{record.get('flags')}, not data {data} with {list(flags)}: "
            "remove it or choose another --archive_dir"
        )
    problem = metrics_problem(record)
    if problem:
        raise RuntimeError(f"{path}: not a run record ({problem}); remove it to redo the run")
    return record


# The AUCs every run's metrics hold (``summarise`` reads them); with ground
# truth, also cvr_auc_entire_space.
AUC_KEYS = ("ctr_auc", "cvr_auc", "ctcvr_auc")


def metrics_problem(metrics) -> str | None:
    """What makes ``metrics`` (a run's eval_metrics.json, an archived record,
    a result file's per-seed record) unusable, in words; None if nothing:
    ``AUC_KEYS`` present, and every AUC a number in [0, 1] or NaN (an AUC of
    a split with one class, which the summaries leave out), a calibration
    ratio a number >= 0 or NaN."""
    if not isinstance(metrics, dict):
        return "not a JSON object"
    missing = [k for k in AUC_KEYS if k not in metrics]
    if missing:
        return f"no {', '.join(missing)}"
    try:
        kept = per_run(metrics)
    except (AttributeError, TypeError, KeyError):  # not calibration.cvr.ground_truth.ratio
        return "its calibration is not one of a run's"
    for key, value in kept.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{key} is {value!r}, not a number"
        if math.isnan(value):
            continue
        if key == "cvr_calibration_ratio":
            if not 0 <= value < math.inf:
                return f"{key} is {value}, not a ratio >= 0"
        elif not 0 <= value <= 1:
            return f"{key} is {value}, not an AUC in [0, 1]"
    return None


def read_metrics(path: str) -> dict:
    """A run directory's eval_metrics.json (what marks the run finished).
    Raises RuntimeError, naming the file, if it is not JSON (e.g. cut short)
    or lacks usable AUCs (``metrics_problem``)."""
    try:
        with open(path) as f:
            metrics = json.load(f)
    except ValueError as e:
        problem = f"not readable JSON ({e})"
    else:
        problem = metrics_problem(metrics)
    if problem:
        raise RuntimeError(
            f"{path}: {problem}; delete it to evaluate the run again (a run pruned of its "
            "checkpoints trains again)"
        )
    return metrics


def train_once(
    model: str,
    seed: int,
    data_dir: str,
    run_dir: str,
    extra_flags: list[str] = (),
    archive: str | None = None,
    prune: bool = False,
) -> dict:
    """``train_process`` unless ``run_dir`` already holds its final metrics,
    or ``archive`` (a path from ``archive_path``) holds the record of the same
    run on the same data; returns the metrics (an archived record has
    ``per_run``'s keys and ``ARCHIVE_STEP_KEYS``). With ``archive``, a
    finished run's record is written there, so that a fresh machine with the
    same data (and the archive, e.g. committed) resumes where this one stopped.
    ``prune``: a finished run's checkpoints are removed (``run_dir.prune``;
    ~1 GB a run at the public set's vocabulary), its metrics kept. Raises
    RuntimeError, naming the file, for a failed run, an archived record of
    other data or flags, or a damaged record or eval_metrics.json."""
    metrics_path = os.path.join(run_dir, training_run.EVAL_FILE)
    data = data_id(data_dir) if archive else None
    if not os.path.exists(metrics_path) and archive:
        record = read_archived(archive, data, list(extra_flags))
        if record is not None:
            return record
    if os.path.exists(metrics_path):
        metrics = read_metrics(metrics_path)
    else:
        seconds = train_process(model, seed, data_dir, run_dir, extra_flags)
        metrics = read_metrics(metrics_path)
        log(
            f"  {model} seed {seed}: CVR AUC {metrics['cvr_auc']:.4f}, "
            f"CTCVR AUC {metrics['ctcvr_auc']:.4f} ({seconds:.0f} s)"
        )
    if archive and not os.path.exists(archive):
        files.write_json(archive, archive_record(metrics, data, list(extra_flags)))
    if prune:
        run_dir_lib.prune(run_dir)
    return metrics


def archive_record(metrics: dict, data: str, flags: list[str]) -> dict:
    """What an archive keeps of one run: ``per_run``'s numbers, its steps,
    and what it was measured on (``data_id``, the flags beyond the model's
    flagfile, seed and rate)."""
    return {
        **per_run(metrics),
        **{k: metrics[k] for k in ARCHIVE_STEP_KEYS if k in metrics},
        "data": data,
        "flags": list(flags),
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(runs: list[dict]) -> dict:
    """Mean ± std (AUCs in %) of the metrics the tables report, over the
    runs' eval_metrics (what ``per_run`` keeps of each)."""
    kept = [per_run(m) for m in runs]
    out = {"runs": len(runs)}
    for key in ("cvr_auc", "ctcvr_auc", "ctr_auc"):
        out[key] = mean_std([100 * k[key] for k in kept])
    if kept and "cvr_auc_entire_space" in kept[0]:
        out["cvr_auc_entire_space"] = mean_std([100 * k["cvr_auc_entire_space"] for k in kept])
        out["cvr_calibration_ratio"] = mean_std([k["cvr_calibration_ratio"] for k in kept])
    return out


def per_run(metrics: dict) -> dict:
    """What the result files keep of one run's eval_metrics.json: its AUCs
    (fractions) and, with ground truth, the mean pCVR over all test
    impressions divided by the mean true pCVR there."""
    out = {
        k: metrics[k]
        for k in ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space")
        if k in metrics
    }
    truth = metrics.get("calibration", {}).get("cvr", {}).get("ground_truth")
    if "cvr_calibration_ratio" in metrics:  # already a per_run record (an archive's)
        out["cvr_calibration_ratio"] = metrics["cvr_calibration_ratio"]
    elif truth:
        out["cvr_calibration_ratio"] = truth["ratio"]
    return out


# Two-sided 95 % quantiles of Student's t by degrees of freedom (1..30; above
# 30 the normal's 1.96 is within 2 %).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of a[i] - b[i] over seeds and its 95 % t interval: (mean, low,
    high); the interval is nan with fewer than two pairs."""
    d = np.asarray(
        [x - y for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    )
    if d.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan
    t = _T975[d.size - 2] if d.size - 1 <= len(_T975) else 1.96
    half = t * float(d.std(ddof=1)) / math.sqrt(d.size)
    return mean, mean - half, mean + half


def claim(text: str, metric: str, a: list[dict], b: list[dict]) -> dict:
    """The claim "a above b" on ``metric``, from per-seed metrics (``per_run``'s,
    paired by seed): the mean difference in AUC points and its 95 % t interval;
    ``holds``: "yes" when the interval is above 0, "no" when below, else
    "unresolved"."""
    mean, low, high = paired_difference([100 * r[metric] for r in a], [100 * r[metric] for r in b])
    holds = "yes" if low > 0 else "no" if high < 0 else "unresolved"
    return dict(claim=text, metric=metric, mean=mean, low=low, high=high, holds=holds)


def interval(row: dict) -> str:
    """``[+0.14, +2.75]`` of a ``claim``, or n/a with one seed."""
    if math.isnan(row["low"]):
        return "n/a (one seed)"
    return f"[{row['low']:+.2f}, {row['high']:+.2f}]"


def fmt(pair: tuple[float, float], digits: int = 2) -> str:
    mean, std = pair
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
