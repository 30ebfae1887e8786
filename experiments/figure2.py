"""Figure 2 of the paper (Figure 3 in the arXiv version): AUC vs the fraction
of the training set used, one line per model.

    python -m experiments.figure2 --data_dir=DATA [--rates=0.01,0.05,0.1,0.2,0.5,1]
        [--models=...] [--runs=1] [--out_dir=runs/experiments | --update_reference]
        [--early_stopping] [--archive_dir=DIR] [--prune]

Each point is ``python -m esmm_tf.train --flagfile=experiments/<model>.flags
--train_fraction=<rate>`` (the same records at a rate for every model: kept by
a hash of the record), trained round(1/rate) epochs so that every rate takes
about the same number of steps (``--noequal_steps``: one epoch each),
evaluated on the whole test split, mean ± std over ``--runs`` seeds (the
error bars). With ``--early_stopping``, that many steps are a budget: every
point holds out the same validation split (``--validation_fraction`` of the
train requests) and samples its rate from the rest, is evaluated on it ten
times over the budget (every budget/10 steps, whatever the rate), stops after
``--patience`` evaluations without a better ``--metric`` (CTCVR AUC), and its
best checkpoint is the one tested; each rate gets the same steps at most and
no model is scored past the point where it overfits its sample (its runs
live in ``rate<r>-es``, apart from Table 2's). Finished runs are not redone (nor, with
``--archive_dir``, runs an archive holds; ``--prune`` removes each finished
run's checkpoints, keeping its metrics).
``--out_dir`` defaults to ``runs/experiments``; only ``--update_reference`` writes the committed
``experiments/results``. Writes
``<out_dir>/figure2.png`` (CVR AUC and CTCVR AUC panels), ``figure2.md`` (the
points, and ESMM minus every other line at every rate with a 95 % interval
over seeds: does the paper's claim hold) and ``figure2.json`` with the numbers.
"""

from __future__ import annotations

import json
import os
import time

if __name__ == "__main__":  # quiet before TensorFlow loads (runner imports it)
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()

from absl import app, flags  # noqa: E402

from esmm_tf import cli, data_layout, files, registry  # noqa: E402
from experiments import figure2_report, runner  # noqa: E402

flags.DEFINE_string("data_dir", None, "Converted dataset.")
flags.DEFINE_list("rates", ["0.01", "0.05", "0.1", "0.2", "0.5", "1.0"], "Training fractions.")
flags.DEFINE_list("models", list(registry.MODELS), "Models (lines).")
flags.DEFINE_integer("runs", 1, "Seeds per point.")
flags.DEFINE_string(
    "out_dir", None, "Output directory (default: runs/experiments/, which git ignores)."
)
flags.DEFINE_bool(
    "update_reference",
    False,
    "Write the committed reference results in experiments/results/ instead.",
)
flags.DEFINE_bool(
    "equal_steps",
    True,
    "Train each rate for round(1/rate) epochs, so that every point takes about as many "
    "steps as one epoch of the whole training set (comparable convergence); "
    "--noequal_steps: one epoch at every rate, as the paper's figure is often read.",
)
flags.DEFINE_bool(
    "early_stopping",
    False,
    "Hold out a validation split, evaluate every budget/10 steps and keep each point's best "
    "checkpoint (the equal steps are then a budget).",
)
flags.DEFINE_float("validation_fraction", 0.1, "With --early_stopping: the validation split.")
flags.DEFINE_string(
    "metric", "ctcvr_auc", "With --early_stopping: the validation metric that selects."
)
flags.DEFINE_integer(
    "patience", 3, "With --early_stopping: evaluations without improvement before stopping."
)
flags.DEFINE_list("extra_flags", [], "Flags passed to every training run.")
flags.DEFINE_string("archive_dir", None, runner.ARCHIVE_DIR_HELP)
flags.DEFINE_bool("prune", False, runner.PRUNE_HELP)
flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    rates = result["rates"]
    for ax, metric, title in (
        (axes[0], "cvr_auc", "CVR AUC (clicked test impressions)"),
        (axes[1], "ctcvr_auc", "CTCVR AUC (all test impressions)"),
    ):
        for model, points in result["points"].items():
            ax.errorbar(  # mean ± std over the seeds
                [100 * r for r in rates],
                [points[str(r)][metric][0] for r in rates],
                yerr=[points[str(r)][metric][1] for r in rates],
                marker="o",
                capsize=3,
                label=registry.get(model).display,
            )
        ax.set_xscale("log")
        ax.set_xlabel("training set sampling rate (%)")
        ax.set_ylabel("AUC (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"AUC vs training-set sampling rate ({result['data_dir']})")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def run_figure(
    data_dir: str,
    models: list[str],
    rates: list[float],
    runs: int,
    out_dir: str,
    extra: list[str],
    equal_steps: bool = True,
    early_stopping: dict | None = None,
    archive_dir: str | None = None,
    prune: bool = False,
) -> dict:
    """``early_stopping``: None, or ``validation_fraction``, ``metric``,
    ``patience`` and optionally ``budget_steps`` (else computed from the
    data). ``archive_dir``: see ``runner.train_once``."""
    start = time.time()
    if early_stopping is not None and "budget_steps" not in early_stopping:
        early_stopping = dict(
            early_stopping,
            budget_steps=runner.budget_steps(
                data_dir, early_stopping["validation_fraction"], extra
            ),
        )
    suffix = runner.ES_SUFFIX if early_stopping else ""
    points: dict[str, dict] = {}
    steps: dict[str, dict] = {}
    per_seed: dict[str, dict] = {}
    for model in models:
        points[model], steps[model], per_seed[model] = {}, {}, {}
        for rate in rates:
            runner.log(f"{model} at {rate:.0%} of the training set")
            metrics = [
                runner.train_once(
                    model,
                    seed,
                    data_dir,
                    runner.run_dir(out_dir, model, rate, seed, suffix),
                    [*runner.rate_flags(rate, equal_steps, early_stopping), *extra],
                    runner.archive_path(archive_dir, model, rate, seed, suffix)
                    if archive_dir
                    else None,
                    prune,
                )
                for seed in range(runs)
            ]
            points[model][str(rate)] = runner.summarise(metrics)
            per_seed[model][str(rate)] = [runner.per_run(m) for m in metrics]
            steps[model][str(rate)] = [
                {k: m[k] for k in ("step", "best_step", "stopped_early") if k in m} for m in metrics
            ]
    command = (
        f"python -m experiments.figure2 --data_dir={data_dir} --rates={','.join(map(str, rates))} "
        f"--models={','.join(models)} --runs={runs}"
        + ("" if equal_steps else " --noequal_steps")
        + (
            f" --early_stopping --validation_fraction={early_stopping['validation_fraction']} "
            f"--metric={early_stopping['metric']} --patience={early_stopping['patience']}"
            if early_stopping
            else ""
        )
        + (f" --extra_flags={','.join(extra)}" if extra else "")
        + (" --update_reference" if out_dir == runner.REFERENCE_DIR else "")
    )
    result = {
        "command": command,
        "data_dir": data_dir,
        "rates": rates,
        "equal_steps": equal_steps,
        "early_stopping": early_stopping,
        "points": points,
        "steps": steps,  # per seed: steps trained, and the tested (best) step
        "runs": per_seed,  # per seed: the AUCs (for paired differences between models)
        "claims": figure2_report.claims(per_seed, rates),
        "invocation_seconds": round(time.time() - start),  # reused runs cost ~0
    }
    files.write_text(os.path.join(out_dir, "figure2.json"), json.dumps(result, indent=2) + "\n")
    files.write_text(os.path.join(out_dir, "figure2.md"), figure2_report.to_markdown(result))
    plot(result, os.path.join(out_dir, "figure2.png"))
    print(
        f"wrote {out_dir}/figure2.png, figure2.md and figure2.json "
        f"({result['invocation_seconds']} s)"
    )
    return result


def main(argv) -> None:
    del argv
    # Bad flags or data end the command before anything trains or is written.
    with cli.one_line_errors("experiments.figure2", (ValueError, data_layout.DatasetError)):
        out_dir = runner.output_dir(FLAGS.out_dir, FLAGS.update_reference)
        runner.check_runs(FLAGS.runs)
        runner.check_models(FLAGS.models)
        rates = runner.parse_rates(FLAGS.rates)
        early_stopping = None
        if FLAGS.early_stopping:
            if not 0 < FLAGS.validation_fraction < 1:  # NaN fails it too
                raise ValueError(
                    f"--validation_fraction={FLAGS.validation_fraction}: with --early_stopping "
                    "it must be in (0, 1)"
                )
            early_stopping = dict(
                validation_fraction=FLAGS.validation_fraction,
                metric=FLAGS.metric,
                patience=FLAGS.patience,
                budget_steps=runner.budget_steps(
                    FLAGS.data_dir, FLAGS.validation_fraction, FLAGS.extra_flags
                ),
            )
    # a failed run (its stderr's end), a mismatched archive record, an unwritable output
    with cli.one_line_errors("experiments.figure2", (RuntimeError, data_layout.DatasetError)):
        run_figure(
            FLAGS.data_dir,
            FLAGS.models,
            rates,
            FLAGS.runs,
            out_dir,
            FLAGS.extra_flags,
            FLAGS.equal_steps,
            early_stopping,
            FLAGS.archive_dir,
            FLAGS.prune,
        )


if __name__ == "__main__":
    app.run(main)
