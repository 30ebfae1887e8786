"""AUC vs epochs, with and without regularization and early stopping (issue:
training longer must never make the model worse).

    python -m experiments.epochs --data_dir=DATA [--seeds=3] [--epochs=1,2,3,5]
        [--settings=none,embedding_l2,...] [--out_dir=runs/experiments]
        [--update_reference]

For every setting (a set of training flags on top of experiments/esmm.flags)
and seed, one run directory. Settings without a validation split train all
the epochs in one run that evaluates the whole test split at each epoch end
(the model after E epochs; read back from the run's TensorBoard events);
settings with early stopping are trained with ``--epochs=1``, then resumed
with ``--epochs=2``, ``3``, ``5``, each time keeping the run's final test
metrics (the best checkpoint on the validation split so far). Each point is
kept as ``metrics-epoch<E>.json``; finished points are not redone, so an
interrupted experiment resumes. Writes ``epochs.md``,
``epochs.json`` and ``epochs.png`` (mean ± std over seeds of CTR, CVR on
clicked, CTCVR and entire-space CVR AUC vs epochs) into ``--out_dir``
(``experiments/results`` with ``--update_reference``).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time

from absl import app, flags

if __name__ == "__main__":
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()

from esmm_tf import files  # noqa: E402
from experiments import runner  # noqa: E402

# Flags of each setting on top of experiments/esmm.flags. The regularizers'
# strengths are the tuned ones of experiments/esmm_tuned.flags; early
# stopping selects on a validation split carved from train by request.
# Without selection: one run of all the epochs, evaluated on the whole test
# split at each epoch end (and only then), read back from its TensorBoard events.
NO_EVAL = ["--eval_every_steps=1000000", "--eval_impressions=0"]
EARLY_STOPPING = [
    "--validation_fraction=0.1",
    "--early_stopping_metric=ctcvr_auc",
    "--early_stopping_patience=4",
    "--eval_impressions=0",
]
REGULARIZERS = {
    "embedding_l2": ["--embedding_l2=1e-5"],
    "tower_l2": ["--tower_l2=1e-5"],
    "dropout": ["--dropout=0.2"],
}
COMBINED = [f for flags_ in REGULARIZERS.values() for f in flags_]
SETTINGS = {
    "none": NO_EVAL,
    **{name: [*f, *NO_EVAL] for name, f in REGULARIZERS.items()},
    "combined": [*COMBINED, *NO_EVAL],
    "combined_early_stopping": [*COMBINED, *EARLY_STOPPING],
}
METRICS = ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space")
TITLES = {
    "ctr_auc": "CTR AUC (all impressions)",
    "cvr_auc": "CVR AUC (clicked impressions)",
    "ctcvr_auc": "CTCVR AUC (all impressions)",
    "cvr_auc_entire_space": "entire-space CVR AUC (ground truth)",
}

flags.DEFINE_string("data_dir", None, "Converted dataset.")
flags.DEFINE_integer("seeds", 3, "Seeds per setting.")
flags.DEFINE_list("epochs", ["1", "2", "3", "5"], "Epoch counts to report (increasing).")
flags.DEFINE_list("settings", list(SETTINGS), "Settings, in order.")
flags.DEFINE_string("out_dir", os.path.join(runner.ROOT, "runs", "experiments"), "Output.")
flags.DEFINE_bool(
    "update_reference", False, "Write into experiments/results (the committed reference)."
)
flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS


def _train(data_dir: str, run: str, setting: str, seed: int, epochs: int) -> None:
    seconds = runner.train_process(
        "esmm", seed, data_dir, run, [f"--epochs={epochs}", *SETTINGS[setting]]
    )
    runner.log(f"  {setting} seed {seed}: {epochs} epochs ({seconds:.0f} s)")


def _epoch_end_evaluations(run: str) -> list[dict]:
    """The run's evaluations on the test split, in step order (one per epoch)."""
    import tensorflow as tf

    by_step: dict[int, dict] = {}
    for path in sorted(glob.glob(os.path.join(run, "eval", "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith("auc/"):
                    key = value.tag.split("/", 1)[1]
                    by_step.setdefault(event.step, {})[key] = float(tf.make_ndarray(value.tensor))
    return [by_step[step] for step in sorted(by_step)]


def point(data_dir: str, run: str, setting: str, seed: int, epochs: int, last: int) -> dict:
    """The test metrics after ``epochs`` epochs (``last``: the most the
    experiment trains)."""
    path = os.path.join(run, f"metrics-epoch{epochs}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    if "--validation_fraction=0.1" in SETTINGS[setting]:  # selection: resume up to `epochs`
        _train(data_dir, run, setting, seed, epochs)
        shutil.copyfile(os.path.join(run, "eval_metrics.json"), path + ".tmp")
        os.replace(path + ".tmp", path)
    else:  # one run of every epoch; the epoch-end evaluations are the points
        evaluations = _epoch_end_evaluations(run)
        if len(evaluations) < last:
            _train(data_dir, run, setting, seed, last)
            evaluations = _epoch_end_evaluations(run)
        for e, metrics in enumerate(evaluations[:last], 1):
            files.write_text(
                os.path.join(run, f"metrics-epoch{e}.json"),
                json.dumps({**metrics, "epochs_trained": e}, indent=2) + "\n",
            )
    with open(path) as f:
        metrics = json.load(f)
    runner.log(
        f"  {setting} seed {seed} epochs {epochs}: CVR AUC {metrics['cvr_auc']:.4f}, "
        f"CTCVR AUC {metrics['ctcvr_auc']:.4f}"
    )
    return metrics


def plot(summary: dict, epochs: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4))
    for ax, key in zip(axes, METRICS, strict=True):
        for setting, by_epoch in summary.items():
            means = [by_epoch[str(e)][key][0] for e in epochs]
            stds = [by_epoch[str(e)][key][1] for e in epochs]
            ax.errorbar(epochs, means, yerr=stds, marker="o", capsize=3, label=setting)
        ax.set_title(TITLES[key])
        ax.set_xlabel("epochs")
        ax.set_ylabel("AUC (%)")
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    plt.close(fig)


def table(summary: dict, epochs: list[int]) -> str:
    lines = []
    for key in METRICS:
        lines += [f"### {TITLES[key]}", "", "| setting | " + " | ".join(f"{e} ep." for e in epochs)]
        lines[-1] += " |"
        lines.append("|---|" + "---|" * len(epochs))
        for setting, by_epoch in summary.items():
            cells = " | ".join(runner.fmt(tuple(by_epoch[str(e)][key])) for e in epochs)
            lines.append(f"| {setting} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def run_experiment(data_dir, settings, seeds, epochs, out_dir) -> dict:
    start = time.time()
    summary, raw = {}, {}
    for setting in settings:
        runner.log(f"{setting}: {seeds} seeds, epochs {epochs}")
        summary[setting], raw[setting] = {}, {}
        per_epoch = {e: [] for e in epochs}
        for seed in range(seeds):
            run = os.path.join(out_dir, "runs", "epochs", setting, f"seed{seed}")
            for e in epochs:
                per_epoch[e].append(point(data_dir, run, setting, seed, e, epochs[-1]))
        for e, runs in per_epoch.items():
            summary[setting][str(e)] = {
                k: runner.mean_std([100 * m[k] for m in runs if k in m]) for k in METRICS
            }
            summary[setting][str(e)]["epochs_trained"] = [m.get("epochs_trained") for m in runs]
            raw[setting][str(e)] = [{k: m.get(k) for k in METRICS} for m in runs]
    command = (
        f"python -m experiments.epochs --data_dir={data_dir} --seeds={seeds} "
        f"--epochs={','.join(map(str, epochs))} --settings={','.join(settings)}"
    )
    flags_text = "\n".join(f"- `{s}`: `{' '.join(SETTINGS[s])}`" for s in settings)
    text = (
        f"# AUC vs epochs on {data_dir}\n\nAUC in %, mean ± std over {seeds} seeds, on the "
        "whole test split, after 1..N epochs of `experiments/esmm.flags` plus each setting's "
        f"flags:\n\n{flags_text}\n\n{table(summary, epochs)}\n"
        f"![AUC vs epochs](epochs.png)\n\nMade by `{command}` "
        f"({time.time() - start:.0f} s for this invocation; finished points are reused).\n"
    )
    result = {"command": command, "data_dir": data_dir, "summary": summary, "runs": raw}
    files.write_text(os.path.join(out_dir, "epochs.md"), text)
    files.write_text(os.path.join(out_dir, "epochs.json"), json.dumps(result, indent=2) + "\n")
    plot(summary, epochs, os.path.join(out_dir, "epochs.png"))
    print(text)
    return result


def main(argv) -> None:
    del argv
    out_dir = FLAGS.out_dir
    if FLAGS.update_reference:
        out_dir = os.path.join(runner.ROOT, "experiments", "results")
    epochs = sorted(int(e) for e in FLAGS.epochs)
    unknown = set(FLAGS.settings) - set(SETTINGS)
    if unknown:
        raise app.UsageError(f"unknown settings {sorted(unknown)}; choose from {list(SETTINGS)}")
    run_experiment(FLAGS.data_dir, FLAGS.settings, FLAGS.seeds, epochs, out_dir)


if __name__ == "__main__":
    app.run(main)
