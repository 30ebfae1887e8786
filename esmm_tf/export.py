"""Export a training run for TensorFlow Serving: ``python -m esmm_tf.export
--model_dir=RUN --export_dir=EXPORT [--version=N] [--checkpoint=auto|best|latest]
[--warmup_records=8]``.

Exports the run's model (its best checkpoint on the validation split if it
has one, else its last) with ``esmm_tf.serving`` (the layout, the signatures
and the warm-up requests are described there). Exporting the same checkpoint
again reuses the newest version instead of writing an identical one.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # quiet before TensorFlow loads (esmm_tf/cli.py)
    from esmm_tf.cli import quiet_tensorflow

    quiet_tensorflow()

from esmm_tf import serving_requests  # noqa: E402
from esmm_tf.serving import WARMUP_RECORDS, export_saved_model  # noqa: E402


def export_model_dir(
    model_dir: str,
    export_dir: str,
    version: int | None = None,
    warmup: int = WARMUP_RECORDS,
    checkpoint: str = "auto",
) -> str:
    """Exports a training run's model (its best checkpoint on the validation
    split if it has one, else its last; see ``esmm_tf.run_dir``), with warm-up
    requests made from the first ``warmup`` records of its test split (none
    when that data is gone: the model itself needs only the run); unless the
    newest version in ``export_dir`` came from that checkpoint: its path."""
    import tensorflow as tf

    from esmm_tf import data_layout, run_dir

    config, model, path = run_dir.restore(model_dir, checkpoint)
    records = []
    if warmup:
        try:
            files = data_layout.shard_files(config.data_dir, "test")
        except data_layout.DatasetError as e:
            print(f"warning: no warm-up requests ({e})", file=sys.stderr)
        else:
            try:
                records = serving_requests.read_records(files, warmup)
            except tf.errors.OpError as e:  # a damaged test shard: the model is still good
                reason = str(e).strip().splitlines()[0][:200]
                print(
                    f"warning: no warm-up requests (reading the test split: {reason})",
                    file=sys.stderr,
                )
                records = []
    return export_saved_model(
        model, export_dir, version, warmup_records=records, source_checkpoint=path
    )


# ---------------------------------------------------------------------------
# Entry point (python -m esmm_tf.export).

import dataclasses  # noqa: E402

from esmm_tf.config_flags import option  # noqa: E402
from esmm_tf.run_dir import CHECKPOINT_CHOICES  # noqa: E402


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """The command line of ``python -m esmm_tf.export`` (one flag per field)."""

    model_dir: str = option(help="The --model_dir of a training run.")
    export_dir: str = option(help="Writes EXPORT_DIR/<version>/.")
    version: int | None = option(None, "Version number (default: seconds since the epoch).")
    warmup_records: int = option(
        WARMUP_RECORDS, "Test records whose requests go into the warm-up file (0: none)."
    )
    checkpoint: str = option(
        "auto",
        "Which checkpoint: auto = the best on the validation split if the run has one, "
        "else the last.",
        choices=CHECKPOINT_CHOICES,
    )

    def __post_init__(self):
        if self.version is not None and not 0 <= self.version < 2**63:
            raise ValueError(
                f"--version must be in [0, 2**63) (TF Serving's int64 versions), got {self.version}"
            )
        if not self.warmup_records >= 0:
            raise ValueError(f"--warmup_records must be >= 0, got {self.warmup_records}")


def main(argv) -> None:
    from absl import flags

    from esmm_tf import config_flags, data_layout, files
    from esmm_tf.cli import no_arguments

    no_arguments(argv)
    from esmm_tf.cli import one_line_errors

    expected = (
        FileNotFoundError,
        FileExistsError,
        ValueError,
        data_layout.DatasetError,
        ImportError,
    )
    export_dir = flags.FLAGS["export_dir"].value
    with one_line_errors(f"--export_dir={export_dir}", expected):
        config = config_flags.config_from_flags(ExportConfig)
        files.check_directory(config.export_dir, "--export_dir")
        before = set(os.listdir(config.export_dir)) if os.path.isdir(config.export_dir) else set()
        path = export_model_dir(
            config.model_dir,
            config.export_dir,
            config.version,
            config.warmup_records,
            config.checkpoint,
        )
    if os.path.basename(path) in before:
        print(f"{path} is up to date (exported from the same checkpoint)")
    else:
        print(f"exported SavedModel to {path}")


if __name__ == "__main__":
    from absl import app

    from esmm_tf import config_flags

    config_flags.define_flags(ExportConfig)
    app.run(main)
