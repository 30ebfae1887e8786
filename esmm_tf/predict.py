"""Score converted logs: ``python -m esmm_tf.predict (--model_dir=RUN |
--saved_model=EXPORT/<version>) --data_dir=DATA [--split=test]
--output=FILE.csv [--overwrite]``.

Writes ``sample_id,ctr,cvr,ctcvr`` per impression of the split (in file
order), streaming, with progress. From a run, the model is rebuilt from its
config and its own vocabulary and restored from the checkpoint it serves (the
best on the validation split when it has one, else the last); from an export,
the SavedModel's ``score_records`` function is used. ``DATA`` may be any
conversion of any day's logs (e.g. ``data_prep.convert --vocab_from=RUN`` on
a directory holding only that day's test files): ids the run never saw score
as its OOV rows. An existing ``--output`` is replaced only with
``--overwrite``, and only when it is a predictions file; a path inside the
data, the run or the export is refused.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import app

from esmm_tf import config_flags, data_layout, files
from esmm_tf import features as F
from esmm_tf.config_flags import option
from esmm_tf.run_dir import CHECKPOINT_CHOICES


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """The command line of ``python -m esmm_tf.predict`` (one flag per field)."""

    data_dir: str = option(help="Converted data to score (data_prep.convert --out_dir).")
    output: str = option(help="CSV file to write: sample_id,ctr,cvr,ctcvr.")
    model_dir: str | None = option(None, "A training run (--model_dir of esmm_tf.train).")
    saved_model: str | None = option(None, "Or an export's version directory, EXPORT/<version>.")
    split: str = option("test", "Split to score.", choices=data_layout.SPLITS)
    checkpoint: str = option(
        "auto", "With --model_dir: which checkpoint.", choices=CHECKPOINT_CHOICES
    )
    overwrite: bool = option(False, "Replace an existing --output (a predictions file only).")


def check_output(
    output: str,
    data_dir: str,
    model_dir: str | None = None,
    saved_model: str | None = None,
    overwrite: bool = False,
) -> None:
    """Refuses, before any scoring, an ``output`` that would destroy data: a
    path inside the data, the run or the export, a directory, or an existing
    file unless ``overwrite`` (and then only a predictions file, one whose
    first line is the CSV header). ValueError, one line."""
    files.check_output(
        output,
        "--output",
        {"--data_dir": data_dir, "--model_dir": model_dir, "--saved_model": saved_model},
        _is_predictions,
        f"a predictions file (its first line is not {_HEADER!r}); --overwrite replaces only one",
        overwrite=None if overwrite else False,
    )


_HEADER = ",".join(F.PREDICTION_COLUMNS)


def _is_predictions(path: str) -> bool:
    with open(path, "rb") as f:
        return f.readline().rstrip(b"\r\n") == _HEADER.encode()


def predict(
    data_dir: str,
    output: str,
    model_dir: str | None = None,
    saved_model: str | None = None,
    split: str = "test",
    checkpoint: str = "auto",
    overwrite: bool = False,
) -> int:
    """Writes the predictions file; returns the number of impressions scored."""
    import tensorflow as tf

    from esmm_tf import run_dir, scoring, shards

    if bool(model_dir) == bool(saved_model):
        raise ValueError("give exactly one of --model_dir=RUN and --saved_model=EXPORT/<version>")
    check_output(output, data_dir, model_dir, saved_model, overwrite)
    files = data_layout.shard_files(data_dir, split)
    if model_dir:
        _, model, path = run_dir.restore(model_dir, checkpoint)
        scorer = scoring.records_scorer(model)
    else:
        if not os.path.exists(os.path.join(saved_model, "saved_model.pb")):
            raise FileNotFoundError(
                f"{saved_model}/saved_model.pb not found: --saved_model takes a version "
                "directory of an export (EXPORT/<version>)"
            )
        try:
            loaded = tf.saved_model.load(saved_model)
        except (tf.errors.OpError, OSError, ValueError, IndexError) as e:  # a damaged export
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"--saved_model={saved_model} cannot be loaded ({reason}): it is damaged or "
                "incomplete; export the run again with python -m esmm_tf.export"
            ) from None
        if not hasattr(loaded, "score_records"):
            raise ValueError(
                f"{saved_model} has no score_records function (exported by an older "
                "esmm_tf); re-export it with python -m esmm_tf.export or use --model_dir"
            )
        scorer, path = loaded.score_records, saved_model
    print(f"scoring {data_dir} ({split}) with {path}", file=sys.stderr, flush=True)
    with shards.naming_corrupt_shards(files):
        return scoring.write_predictions(
            scorer, files, output, data_layout.split_impressions(data_dir, split)
        )


def main(argv) -> None:
    from esmm_tf.cli import no_arguments

    no_arguments(argv)
    from esmm_tf.cli import one_line_errors

    config = config_flags.config_from_flags(PredictConfig)
    expected = (FileNotFoundError, ValueError, data_layout.DatasetError)
    with one_line_errors(f"--output={config.output}", expected):
        n = predict(
            config.data_dir,
            config.output,
            config.model_dir,
            config.saved_model,
            config.split,
            config.checkpoint,
            config.overwrite,
        )
    print(f"wrote {n:,} predictions to {config.output}")


def define_flags() -> None:
    config_flags.define_flags(PredictConfig)


if __name__ == "__main__":
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()
    define_flags()
    app.run(main)
