"""Table 2 of the paper on your data: every model, several seeds, mean ± std.

    python -m experiments.table2 --data_dir=DATA [--runs=5] [--models=...]
        [--out_dir=runs/experiments | --update_reference] [--extra_flags=--epochs=2,...]
        [--archive_dir=DIR] [--prune]

Each run is ``python -m esmm_tf.train --flagfile=experiments/<model>.flags
--seed=<run>`` into ``<out_dir>/runs/<model>/rate1.0/seed<run>``; a finished
run is not redone (so an interrupted table resumes, and Figure 2 reuses these
runs as its points at rate 1.0); with ``--archive_dir``, nor is a run whose
numbers an archive holds (``runner.train_once``); ``--prune`` removes each
finished run's checkpoints (~1 GB a run at the public set's size), keeping its
metrics. ``--out_dir`` defaults to ``runs/experiments``;
only ``--update_reference`` writes the committed ``experiments/results``. Writes
``<out_dir>/table2.md`` and ``table2.json``: CVR AUC on clicked test
impressions and CTCVR AUC on all test impressions (%, mean ± std over runs)
beside the paper's numbers, plus CTR AUC, and, when the data has ground
truth, entire-space CVR AUC and pCVR calibration (mean pCVR / mean true pCVR
over all impressions).
"""

from __future__ import annotations

import itertools
import json
import os
import time

if __name__ == "__main__":  # quiet before TensorFlow loads (runner imports it)
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()

from absl import app, flags  # noqa: E402

from esmm_tf import cli, data_layout, files, registry  # noqa: E402
from experiments import runner  # noqa: E402

flags.DEFINE_string("data_dir", None, "Converted dataset.")
flags.DEFINE_integer("runs", 5, "Seeds per model.")
flags.DEFINE_list("models", list(registry.MODELS), "Models (rows), in order.")
flags.DEFINE_string(
    "out_dir", None, "Output directory (default: runs/experiments/, which git ignores)."
)
flags.DEFINE_bool(
    "update_reference",
    False,
    "Write the committed reference results in experiments/results/ instead.",
)
flags.DEFINE_list("extra_flags", [], "Flags passed to every training run.")
flags.DEFINE_string("archive_dir", None, runner.ARCHIVE_DIR_HELP)
flags.DEFINE_bool("prune", False, runner.PRUNE_HELP)
flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS


def build_table(summaries: dict[str, dict]) -> str:
    has_gt = any("cvr_auc_entire_space" in s for s in summaries.values())
    head = "| model | CVR AUC (clicked) | CTCVR AUC (all) | paper CVR AUC | paper CTCVR AUC | CTR AUC |"
    sep = "|---|---|---|---|---|---|"
    if has_gt:
        head += " entire-space CVR AUC | pCVR / true pCVR |"
        sep += "---|---|"
    lines = [head, sep]
    for model, s in summaries.items():
        spec = registry.get(model)
        paper = spec.paper_table2
        paper_cvr = runner.fmt(paper.cvr) if paper else "n/a"
        paper_ctcvr = runner.fmt(paper.ctcvr) if paper else "n/a"
        row = (
            f"| {spec.display} | {runner.fmt(s['cvr_auc'])} | "
            f"{runner.fmt(s['ctcvr_auc'])} | {paper_cvr} | {paper_ctcvr} | "
            f"{runner.fmt(s['ctr_auc'])} |"
        )
        if has_gt:
            row += (
                f" {runner.fmt(s.get('cvr_auc_entire_space', (float('nan'), 0)))} | "
                f"{runner.fmt(s.get('cvr_calibration_ratio', (float('nan'), 0)), 3)} |"
            )
        lines.append(row)
    return "\n".join(lines)


def claims(runs: dict[str, list[dict]]) -> list[dict]:
    """The paper's claims, each as a paired difference over seeds (AUC points,
    mean and 95 % t interval): ESMM above every other paper model on CVR AUC
    and on CTCVR AUC (ESMM-NS among them: sharing embeddings helps), ESCM²
    above ESMM on CVR AUC (later re-runs' claim), and the paper's order of its
    rows on CVR AUC, pair by pair. ``holds``: "yes" when
    the interval is above 0, "no" when below, else "unresolved"."""
    paper = [m for m in runs if registry.get(m).paper_table2]
    out = []

    def add(claim: str, metric: str, a: str, b: str) -> None:
        out.append(runner.claim(claim, metric, runs[a], runs[b]))

    if "esmm" in runs:
        for metric in ("cvr_auc", "ctcvr_auc"):
            for other in paper:
                if other != "esmm":
                    add(f"ESMM > {registry.get(other).display}", metric, "esmm", other)
        for other in ("escm2_ipw", "escm2_dr"):  # later re-runs: IPS above ESMM, DR below
            if other in runs:
                add(f"{registry.get(other).display} > ESMM", "cvr_auc", other, "esmm")
    by_paper_cvr = sorted(paper, key=lambda m: registry.get(m).paper_table2.cvr[0])
    for low_model, high_model in itertools.pairwise(by_paper_cvr):
        if "esmm" not in (low_model, high_model):  # those are the ESMM claims above
            add(
                f"{registry.get(high_model).display} > {registry.get(low_model).display} "
                "(the paper's order)",
                "cvr_auc",
                high_model,
                low_model,
            )
    return out


def claims_table(rows: list[dict], runs: int) -> str:
    lines = [
        f"Claims: mean paired difference over the {runs} seeds, AUC points, with its 95 % "
        "t interval; holds = the interval is above 0 (no = below 0).",
        "",
        "| claim | metric | difference | 95 % interval | holds |",
        "|---|---|---:|---|---|",
    ]
    for r in rows:
        metric = {"cvr_auc": "CVR AUC", "ctcvr_auc": "CTCVR AUC"}[r["metric"]]
        lines.append(
            f"| {r['claim']} | {metric} | {r['mean']:+.2f} | {runner.interval(r)} | {r['holds']} |"
        )
    return "\n".join(lines)


def run_table(
    data_dir: str,
    models: list[str],
    runs: int,
    out_dir: str,
    extra_flags: list[str],
    archive_dir: str | None = None,
    prune: bool = False,
) -> dict:
    start = time.time()
    summaries, raw = {}, {}
    for model in models:
        runner.log(f"{model}: {runs} runs")
        metrics = [
            runner.train_once(
                model,
                seed,
                data_dir,
                runner.run_dir(out_dir, model, 1.0, seed),
                extra_flags,
                runner.archive_path(archive_dir, model, 1.0, seed) if archive_dir else None,
                prune,
            )
            for seed in range(runs)
        ]
        summaries[model] = runner.summarise(metrics)
        raw[model] = [runner.per_run(m) for m in metrics]
    table = build_table(summaries)
    claim_rows = claims(raw)
    command = (
        f"python -m experiments.table2 --data_dir={data_dir} --runs={runs} "
        f"--models={','.join(models)}"
        + (f" --extra_flags={','.join(extra_flags)}" if extra_flags else "")
        + (" --update_reference" if out_dir == runner.REFERENCE_DIR else "")
    )
    text = (
        f"# Table 2 on {data_dir}\n\nAUC in %, mean ± std over {runs} runs (seeds 0..{runs - 1}); "
        "the paper's columns are its public Ali-CCP results (10 runs; n/a for the models "
        "beyond the ESMM paper, e.g. ESCM²).\n\n"
        f"{table}\n\n{claims_table(claim_rows, runs)}\n\nMade by `{command}` ({time.time() - start:.0f} s for this invocation; "
        "finished runs are reused).\n"
    )
    result = {
        "command": command,
        "data_dir": data_dir,
        "summaries": summaries,
        "claims": claim_rows,
        "runs": raw,
    }
    files.write_text(os.path.join(out_dir, "table2.md"), text)
    files.write_text(os.path.join(out_dir, "table2.json"), json.dumps(result, indent=2) + "\n")
    print(text)
    return result


def main(argv) -> None:
    del argv
    # Bad flags end the command before anything trains or is written.
    with cli.one_line_errors("experiments.table2", (ValueError,)):
        out_dir = runner.output_dir(FLAGS.out_dir, FLAGS.update_reference)
        runner.check_runs(FLAGS.runs)
        runner.check_models(FLAGS.models)
    # a failed run (its stderr's end), a mismatched archive record, an unwritable output
    with cli.one_line_errors("experiments.table2", (RuntimeError, data_layout.DatasetError)):
        run_table(
            FLAGS.data_dir,
            FLAGS.models,
            FLAGS.runs,
            out_dir,
            FLAGS.extra_flags,
            FLAGS.archive_dir,
            FLAGS.prune,
        )


if __name__ == "__main__":
    app.run(main)
