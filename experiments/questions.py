"""The paper's open questions, answered with numbers from finished runs.

    python -m experiments.questions --results=DIR [--dim_results=8:DIR8,32:DIR32,64:DIR64]

Reads ``DIR/table2.json`` (``experiments.table2``), ``DIR/figure2.json``
(``experiments.figure2``) when present, and each ``--dim_results`` directory's
``table2.json`` (Table 2 of BASE and ESMM with ``--embedding_dim=<dim>``; the
main table is dimension 18). Writes ``DIR/questions.md`` and
``questions.json``: every comparison as a mean over seeds with its 95 % t
interval (paired by seed between models), so the prose that interprets them
(``experiments/results/README.md``) cites measured numbers:

1. Is the unsupervised pCVR well estimated over the entire space? ESMM's
   entire-space CVR AUC against BASE's (trained on clicked impressions' CVR
   labels), and each model's mean pCVR over all test impressions divided by
   the mean true pCVR (1 = unbiased over the entire space).
2. Does the CTCVR task help CTR? The CTR AUC of every model trained with a
   CTCVR loss (ESMM, ESMM-NS, DIVISION, ESCM²) minus BASE's (BASE's CTR tower:
   the same tower on its own embeddings, trained on clicks alone).
3. Does sharing matter more as data gets sparser? ESMM minus ESMM-NS at every
   sampling rate of Figure 2.
4. Does AMAN under-estimate? Its calibration ratio, seed by seed.
5. Is an embedding dimension of 18 enough? BASE and ESMM at every dimension,
   and each dimension minus 18.
"""

from __future__ import annotations

import json
import math
import os
import sys

if __name__ == "__main__":  # quiet before TensorFlow loads (runner imports it)
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()

from absl import app, flags  # noqa: E402

from esmm_tf import cli, files, registry  # noqa: E402
from experiments import runner  # noqa: E402

flags.DEFINE_string("results", None, "Directory with table2.json (and figure2.json).")
flags.DEFINE_list(
    "dim_results", [], "dim:DIR pairs: Table 2 of BASE and ESMM at that embedding dimension."
)
flags.DEFINE_integer("base_dim", 18, "The embedding dimension of the main table.")
FLAGS = flags.FLAGS

METRIC_NAMES = {
    "ctr_auc": "CTR AUC",
    "cvr_auc": "CVR AUC",
    "ctcvr_auc": "CTCVR AUC",
    "cvr_auc_entire_space": "entire-space CVR AUC",
    "cvr_calibration_ratio": "pCVR / true pCVR",
}


def _values(runs: list[dict], metric: str) -> list[float]:
    scale = 1.0 if metric == "cvr_calibration_ratio" else 100.0  # AUCs in points
    return [scale * r[metric] if metric in r else math.nan for r in runs]


def compare(a: list[dict], b: list[dict], metric: str) -> dict:
    """a - b on ``metric``, paired by seed (the common seeds)."""
    n = min(len(a), len(b))
    mean, low, high = runner.paired_difference(_values(a[:n], metric), _values(b[:n], metric))
    return dict(metric=metric, mean=mean, low=low, high=high, seeds=n, verdict=_verdict(low, high))


def level(runs: list[dict], metric: str, reference: float = 0.0) -> dict:
    """The mean of ``metric`` over seeds with its 95 % t interval, and how it
    stands against ``reference`` (above / below / unresolved)."""
    values = _values(runs, metric)
    mean, low, high = runner.paired_difference(values, [reference] * len(values))
    return dict(
        metric=metric,
        mean=mean + reference,
        low=low + reference,
        high=high + reference,
        seeds=len(values),
        per_seed=values,
        verdict=_verdict(low, high, "above", "below"),
    )


def _verdict(low: float, high: float, yes: str = "yes", no: str = "no") -> str:
    if math.isnan(low):
        return "n/a (one seed)"
    return yes if low > 0 else no if high < 0 else "unresolved"


def _interval(r: dict, digits: int = 2) -> str:
    if math.isnan(r["low"]):
        return f"{r['mean']:+.{digits}f} (one seed)"
    return f"{r['mean']:+.{digits}f} [{r['low']:+.{digits}f}, {r['high']:+.{digits}f}]"


def _level_text(r: dict, digits: int = 3) -> str:
    if math.isnan(r["low"]):
        return f"{r['mean']:.{digits}f}"
    return f"{r['mean']:.{digits}f} [{r['low']:.{digits}f}, {r['high']:.{digits}f}]"


class ResultsError(ValueError):
    """A result file that is not what experiments.table2/figure2 write."""


def _load(path: str) -> dict | None:
    """The JSON object in ``path``; None if there is no such file. Raises
    ResultsError, naming the file, if it is not a JSON object."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            result = json.load(f)
    except ValueError as e:  # cut short, not JSON, not UTF-8
        raise ResultsError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(result, dict):
        raise ResultsError(f"{path}: not a result file (a JSON object)")
    return result


def _check_seeds(path: str, where: str, seeds) -> None:
    if not isinstance(seeds, list) or not seeds:
        raise ResultsError(f"{path}: {where} is not a non-empty list of per-seed records")
    for i, record in enumerate(seeds):
        problem = runner.metrics_problem(record)
        if problem:
            raise ResultsError(f"{path}: {where}, seed record {i}: {problem}")


def _check_models(path: str, runs) -> None:
    if not isinstance(runs, dict) or not runs:
        raise ResultsError(f'{path}: "runs" is not an object of models')
    for model in runs:
        if model not in registry.MODELS:
            raise ResultsError(f'{path}: "runs" holds an unknown model {model!r}')


def check_table2(path: str, table2: dict) -> None:
    """``table2`` (read from ``path``) is what experiments.table2 writes:
    ``runs``, a registered model -> its per-seed records (at least one, each
    with usable AUCs: ``runner.metrics_problem``). Raises ResultsError."""
    if "runs" not in table2:
        raise ResultsError(f'{path}: no "runs" (not experiments.table2\'s output)')
    _check_models(path, table2["runs"])
    for model, seeds in table2["runs"].items():
        _check_seeds(path, f"runs.{model}", seeds)


def check_figure2(path: str, figure2: dict) -> None:
    """``figure2``'s ``runs``, when it has them (older files do not): a
    registered model -> a sampling rate -> per-seed records. Raises ResultsError."""
    if "runs" not in figure2:
        return
    _check_models(path, figure2["runs"])
    for model, by_rate in figure2["runs"].items():
        if not isinstance(by_rate, dict) or not by_rate:
            raise ResultsError(f"{path}: runs.{model} is not an object of sampling rates")
        for rate, seeds in by_rate.items():
            try:
                ok = 0 < float(rate) <= 1
            except ValueError:
                ok = False
            if not ok:
                raise ResultsError(f"{path}: runs.{model} has {rate!r}, not a sampling rate")
            _check_seeds(path, f"runs.{model}.{rate}", seeds)


def dim_results(pairs: list[str], base_dim: int) -> dict[int, dict]:
    """``--dim_results``' DIM:DIR pairs, each DIR's table2.json checked, by
    dimension. Raises ResultsError for a malformed pair, a dimension that is
    ``base_dim`` (the main table's) or given twice, or a bad table2.json."""
    dims: dict[int, dict] = {}
    for pair in pairs:
        dim, _, path = pair.partition(":")
        if not dim.isdigit() or not int(dim) or not path:
            raise ResultsError(f"--dim_results={pair}: expected DIM:DIR, DIM a positive integer")
        if int(dim) == base_dim:
            raise ResultsError(
                f"--dim_results={pair}: dimension {dim} is the main table's (--base_dim); "
                "its numbers come from --results"
            )
        if int(dim) in dims:
            raise ResultsError(f"--dim_results: dimension {dim} is given more than once")
        table = os.path.join(path, "table2.json")
        loaded = _load(table)
        if loaded is None:
            raise ResultsError(f"--dim_results={pair}: {table} not found")
        check_table2(table, loaded)
        dims[int(dim)] = loaded
    return dims


def answer(table2: dict, figure2: dict | None, dims: dict[int, dict], base_dim: int) -> dict:
    """The numbers behind each question (see the module docstring)."""
    runs = table2["runs"]
    display = {m: registry.get(m).display for m in runs}
    out: dict = {}
    if "base" in runs and "esmm" in runs:
        has_truth = "cvr_auc_entire_space" in runs["esmm"][0]
        q1 = {}
        if has_truth:
            q1["esmm_minus_base_entire_space_cvr_auc"] = compare(
                runs["esmm"], runs["base"], "cvr_auc_entire_space"
            )
            q1["calibration"] = {
                m: level(r, "cvr_calibration_ratio", 1.0)
                for m, r in runs.items()
                if "cvr_calibration_ratio" in r[0]
            }
        out["entire_space_pcvr"] = q1
        out["ctcvr_helps_ctr"] = {
            m: compare(runs[m], runs["base"], "ctr_auc")
            for m in runs
            if m != "base" and registry.get(m).ctcvr_loss
        }
    if "esmm" in runs and "esmm_ns" in runs and "base" in runs:
        out["sharing_full_size"] = {  # ESMM's gain over BASE = sharing + the structure
            pair: {metric: compare(runs[a], runs[b], metric) for metric in ("cvr_auc", "ctcvr_auc")}
            for pair, a, b in (
                ("esmm_minus_esmm_ns", "esmm", "esmm_ns"),
                ("esmm_ns_minus_base", "esmm_ns", "base"),
            )
        }
    if figure2 and "runs" in figure2:
        pts = figure2["runs"]
        if "esmm" in pts and "esmm_ns" in pts:
            out["sharing_by_rate"] = {
                rate: {
                    metric: compare(pts["esmm"][rate], pts["esmm_ns"][rate], metric)
                    for metric in ("cvr_auc", "ctcvr_auc")
                }
                for rate in pts["esmm"]
                if rate in pts["esmm_ns"]
            }
    if "aman" in runs and "cvr_calibration_ratio" in runs["aman"][0]:
        out["aman_calibration"] = level(runs["aman"], "cvr_calibration_ratio", 1.0)
    if dims:
        sweep: dict = {}
        for model in ("base", "esmm"):
            if model not in runs:
                continue
            at = {base_dim: runs[model]}
            at.update({d: t["runs"][model] for d, t in dims.items() if model in t["runs"]})
            sweep[model] = {
                str(d): {
                    "summary": {
                        metric: runner.mean_std(_values(at[d], metric))
                        for metric in ("cvr_auc", "ctcvr_auc", "ctr_auc")
                    },
                    **{
                        f"minus_{base_dim}_{metric}": compare(at[d], at[base_dim], metric)
                        for metric in ("cvr_auc", "ctcvr_auc")
                        if d != base_dim
                    },
                }
                for d in sorted(at)
            }
        out["embedding_dim"] = sweep
        out["base_dim"] = base_dim
    out["display"] = display
    return out


def to_markdown(result: dict, source: str, command: str | None = None) -> str:
    """questions.md; ``command``: the one that made it, said at the end."""
    display = result["display"]
    lines = [
        f"# The paper's open questions, measured ({source})",
        "",
        "Differences in AUC points (calibration: a ratio), mean over seeds with its 95 % t "
        "interval in brackets, paired by seed; a verdict holds when the interval excludes 0 "
        "(or 1 for a ratio).",
        "",
    ]
    q1 = result.get("entire_space_pcvr", {})
    if q1:
        r = q1["esmm_minus_base_entire_space_cvr_auc"]
        lines += [
            "## 1. Is the unsupervised pCVR well estimated over the entire space?",
            "",
            f"- ESMM minus BASE, entire-space CVR AUC: {_interval(r)} ({r['seeds']} seeds): "
            f"ESMM ranks the entire space better: **{r['verdict']}**.",
            "",
        ]
        if q1.get("calibration"):
            lines += [
                "| model | pCVR / true pCVR over all test impressions | vs 1 |",
                "|---|---|---|",
            ]
            for m, c in q1["calibration"].items():
                lines.append(f"| {display[m]} | {_level_text(c)} | {c['verdict']} |")
            lines.append("")
    q2 = result.get("ctcvr_helps_ctr")
    if q2:
        lines += [
            "## 2. Does the CTCVR task help CTR?",
            "",
            "CTR AUC minus BASE's (BASE's CTR tower is trained on clicks alone):",
            "",
        ]
        for m, r in q2.items():
            lines.append(f"- {display[m]}: {_interval(r)}: higher: **{r['verdict']}**")
        lines.append("")
    full, q3 = result.get("sharing_full_size"), result.get("sharing_by_rate")
    if full or q3:
        lines += ["## 3. Does sharing matter more as data gets sparser?", ""]
    if full:
        names = {
            "esmm_minus_esmm_ns": "ESMM minus ESMM-NS (sharing the embeddings)",
            "esmm_ns_minus_base": "ESMM-NS minus BASE (the entire-space structure, unshared)",
        }
        for pair, by_metric in full.items():
            cvr, ctcvr = by_metric["cvr_auc"], by_metric["ctcvr_auc"]
            lines.append(
                f"- Full training set, {names[pair]}: CVR AUC {_interval(cvr)} "
                f"({cvr['verdict']}), CTCVR AUC {_interval(ctcvr)} ({ctcvr['verdict']})"
            )
        lines.append("")
    if q3:
        lines += [
            "ESMM minus ESMM-NS at each training-set sampling rate (Figure 2's runs):",
            "",
            "| rate | CVR AUC | holds | CTCVR AUC | holds |",
            "|---|---|---|---|---|",
        ]
        for rate in sorted(q3, key=float):
            cvr, ctcvr = q3[rate]["cvr_auc"], q3[rate]["ctcvr_auc"]
            lines.append(
                f"| {float(rate):.0%} | {_interval(cvr)} | {cvr['verdict']} | "
                f"{_interval(ctcvr)} | {ctcvr['verdict']} |"
            )
        lines.append("")
    q4 = result.get("aman_calibration")
    if q4:
        per_seed = ", ".join(f"{v:.3f}" for v in q4["per_seed"])
        under = all(v < 1 for v in q4["per_seed"])
        lines += [
            "## 4. Does AMAN under-estimate the CVR?",
            "",
            f"- AMAN's mean pCVR / mean true pCVR over all test impressions: {_level_text(q4)} "
            f"(seeds: {per_seed}); against 1: **{q4['verdict']}**; below 1 in every seed: "
            f"**{'yes' if under else 'no'}**.",
            "",
        ]
    q5 = result.get("embedding_dim")
    if q5:
        base = result["base_dim"]
        lines += [
            f"## 5. Is an embedding dimension of {base} enough?",
            "",
            f"| model | dim | CVR AUC | CTCVR AUC | CVR AUC minus dim {base} | "
            f"CTCVR AUC minus dim {base} |",
            "|---|---|---|---|---|---|",
        ]
        for m, by_dim in q5.items():
            for d, r in by_dim.items():
                s = r["summary"]
                diffs = [r.get(f"minus_{base}_{k}") for k in ("cvr_auc", "ctcvr_auc")]
                cells = [_interval(x) if x else "" for x in diffs]
                lines.append(
                    f"| {display[m]} | {d} | {runner.fmt(s['cvr_auc'])} | "
                    f"{runner.fmt(s['ctcvr_auc'])} | {cells[0]} | {cells[1]} |"
                )
        lines.append("")
    if command:
        lines += [f"Made by `{command}`.", ""]
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    if not FLAGS.results:
        print("error: --results=DIR (with table2.json) is required", file=sys.stderr)
        sys.exit(1)
    with cli.one_line_errors("experiments.questions", (ResultsError,)):
        path = os.path.join(FLAGS.results, "table2.json")
        table2 = _load(path)
        if table2 is None:
            raise ResultsError(f"{path} not found")
        check_table2(path, table2)
        path = os.path.join(FLAGS.results, "figure2.json")
        figure2 = _load(path)
        if figure2 is not None:
            check_figure2(path, figure2)
        dims = dim_results(FLAGS.dim_results, FLAGS.base_dim)
    result = answer(table2, figure2, dims, FLAGS.base_dim)
    command = f"python -m experiments.questions --results={FLAGS.results}" + (
        f" --dim_results={','.join(FLAGS.dim_results)}" if FLAGS.dim_results else ""
    )
    if FLAGS.base_dim != flags.FLAGS["base_dim"].default:
        command += f" --base_dim={FLAGS.base_dim}"
    text = to_markdown(result, FLAGS.results, command)
    files.write_text(os.path.join(FLAGS.results, "questions.md"), text + "\n")
    files.write_json(os.path.join(FLAGS.results, "questions.json"), result)
    print(text)


if __name__ == "__main__":
    app.run(main)
