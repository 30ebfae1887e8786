"""Table 2 of the paper on your data: every model, several seeds, mean ± std.

    python -m experiments.table2 --data_dir=DATA [--runs=5] [--models=...]
        [--out_dir=runs/experiments | --update_reference] [--extra_flags=--epochs=2,...]

Each run is ``python -m esmm_tf.train --flagfile=experiments/<model>.flags
--seed=<run>`` into ``<out_dir>/runs/<model>/rate1.0/seed<run>``; a finished
run is not redone (so an interrupted table resumes, and Figure 2 reuses these
runs as its points at rate 1.0). ``--out_dir`` defaults to ``runs/experiments``;
only ``--update_reference`` writes the committed ``experiments/results``. Writes
``<out_dir>/table2.md`` and ``table2.json``: CVR AUC on clicked test
impressions and CTCVR AUC on all test impressions (%, mean ± std over runs)
beside the paper's numbers, plus CTR AUC, and, when the data has ground
truth, entire-space CVR AUC and pCVR calibration (mean pCVR / mean true pCVR
over all impressions).
"""

from __future__ import annotations

import json
import os
import sys
import time

if __name__ == "__main__":  # quiet before TensorFlow loads (runner imports it)
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()

from absl import app, flags  # noqa: E402

from esmm_tf import files, registry  # noqa: E402
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


def run_table(
    data_dir: str, models: list[str], runs: int, out_dir: str, extra_flags: list[str]
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
            )
            for seed in range(runs)
        ]
        summaries[model] = runner.summarise(metrics)
        raw[model] = [
            {k: m[k] for k in ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space") if k in m}
            for m in metrics
        ]
    table = build_table(summaries)
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
        f"{table}\n\nMade by `{command}` ({time.time() - start:.0f} s for this invocation; "
        "finished runs are reused).\n"
    )
    result = {"command": command, "data_dir": data_dir, "summaries": summaries, "runs": raw}
    files.write_text(os.path.join(out_dir, "table2.md"), text)
    files.write_text(os.path.join(out_dir, "table2.json"), json.dumps(result, indent=2) + "\n")
    print(text)
    return result


def main(argv) -> None:
    del argv
    try:
        out_dir = runner.output_dir(FLAGS.out_dir, FLAGS.update_reference)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    run_table(FLAGS.data_dir, FLAGS.models, FLAGS.runs, out_dir, FLAGS.extra_flags)


if __name__ == "__main__":
    app.run(main)
