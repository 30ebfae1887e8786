"""A training run's directory: the one owner of its layout.

RUN/config.json          the resolved Config (+ the vocabulary's fingerprint)
RUN/vocab/<field>.tsv    the vocabulary the run was built with, copied from
                         the data (or from --warm_start_from's run) when the
                         run starts; everything that rebuilds the model reads
                         this copy, never the data's
RUN/checkpoints/ckpt-N   rolling checkpoints (model, optimizer, progress)
RUN/best/ckpt-N          the best checkpoint on the validation split (runs
                         with --validation_fraction > 0)
RUN/train/, RUN/eval/    TensorBoard event files
RUN/eval_metrics.json    the final evaluation on the test split
RUN/train_sample/        while a run trains several epochs on a sample of at
                         most half the train split (--train_fraction, the
                         validation split): the sample's records, written
                         once, removed when training ends

``restore`` rebuilds a run's model from its config and vocabulary and loads
the checkpoint that evaluation, prediction and export use: the best one when
the run has one, else the last. So a run can score any conversion of any
day's logs (ids it never saw map to its OOV rows), and the training data may
be deleted after training.
"""

from __future__ import annotations

import os
import shutil
import sys

from esmm_tf import config as config_lib
from esmm_tf import data_layout, vocab
from esmm_tf import features as F

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
EVAL_FILE = "eval_metrics.json"
SAMPLE_DIR = "train_sample"
TRAIN_EVENTS = "train"
EVAL_EVENTS = "eval"
CHECKPOINT_CHOICES = ("auto", "best", "latest")


class RunError(FileNotFoundError):
    """A directory is not (or not yet) a usable training run."""


def checkpoint_dir(model_dir: str) -> str:
    return os.path.join(model_dir, CHECKPOINT_DIR)


def best_dir(model_dir: str) -> str:
    return os.path.join(model_dir, BEST_DIR)


def sample_dir(model_dir: str) -> str:
    return os.path.join(model_dir, SAMPLE_DIR)


def eval_file(model_dir: str) -> str:
    return os.path.join(model_dir, EVAL_FILE)


def prune(model_dir: str) -> int:
    """Removes a finished run's model state (``checkpoints/``, ``best/``, a
    left-over ``train_sample/``): its metrics, config, vocabulary and events
    stay, so it still reads as finished, but it can no longer be evaluated,
    resumed or exported. Returns the bytes freed."""
    freed = 0
    for path in (checkpoint_dir(model_dir), best_dir(model_dir), sample_dir(model_dir)):
        for root, _, names in os.walk(path):
            freed += sum(os.path.getsize(os.path.join(root, n)) for n in names)
        shutil.rmtree(path, ignore_errors=True)
    return freed


def events_dir(model_dir: str, which: str) -> str:
    return os.path.join(model_dir, which)


def _newest_checkpoint(directory: str) -> str | None:
    """The newest checkpoint in ``directory`` whose files exist (None: the
    directory has none). tf.train.latest_checkpoint returns None, after
    ERROR lines, when the state file names a checkpoint whose files were
    deleted: a resumed run would then start over in its own directory. Here an
    older kept checkpoint is used instead, with a warning, and a state whose
    every checkpoint is gone is a RunError."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(directory)
    if state is None or not state.model_checkpoint_path:
        return None
    # get_checkpoint_state has already joined relative names onto ``directory``.
    paths = [p for p in state.all_model_checkpoint_paths if p != state.model_checkpoint_path]
    paths.append(state.model_checkpoint_path)
    for path in reversed(paths):
        if tf.io.gfile.exists(path + ".index"):
            if path != paths[-1]:
                print(
                    f"WARNING: the files of checkpoint {paths[-1]} are missing; "
                    f"using the newest one kept, {path}",
                    file=sys.stderr,
                    flush=True,
                )
            return path
    raise RunError(
        f"{os.path.join(directory, 'checkpoint')} names {paths[-1]}, but no checkpoint it "
        "lists has its files: they were deleted or moved. Put them back, or start over in a "
        "new --model_dir"
    )


def latest_checkpoint(model_dir: str) -> str | None:
    return _newest_checkpoint(checkpoint_dir(model_dir))


def best_checkpoint(model_dir: str) -> str | None:
    return _newest_checkpoint(best_dir(model_dir))


def serving_checkpoint(model_dir: str, which: str = "auto") -> str:
    """The checkpoint to evaluate, predict with and export: ``auto`` is the best
    one when the run has one, else the last."""
    if which not in CHECKPOINT_CHOICES:
        raise ValueError(f"--checkpoint={which!r}; choose one of {', '.join(CHECKPOINT_CHOICES)}")
    best = best_checkpoint(model_dir) if which in ("auto", "best") else None
    path = best or (latest_checkpoint(model_dir) if which in ("auto", "latest") else None)
    if not path:
        where = best_dir(model_dir) if which == "best" else checkpoint_dir(model_dir)
        raise RunError(
            f"no checkpoint in {where}: is {model_dir!r} the --model_dir of an esmm_tf.train "
            "run that has trained (and, for --checkpoint=best, validated)?"
        )
    return path


# ---------------------------------------------------------------------------
# The run's vocabulary.


def vocab_root(model_dir: str) -> str:
    """The directory whose ``vocab/<field>.tsv`` files the run's model reads
    (the run directory itself: the same layout as a converted dataset)."""
    return model_dir


def has_vocab(directory: str) -> bool:
    return all(os.path.exists(data_layout.vocab_file(directory, f.id)) for f in F.FIELDS)


def vocab_fingerprint(directory: str) -> str:
    """sha256 over the vocabulary files of ``directory`` (a run or a dataset)."""
    return vocab.fingerprint(directory)


def check_vocab(model_dir: str, expected: str | None) -> None:
    """Raises RunError when the run's vocabulary copy no longer has the
    fingerprint its config.json recorded (``expected``; None: nothing recorded)."""
    if expected and has_vocab(model_dir) and vocab_fingerprint(model_dir) != expected:
        raise RunError(
            f"{os.path.join(model_dir, data_layout.VOCAB_DIR)} does not match the fingerprint "
            "in its config.json: a vocabulary file was changed or damaged, so ids would map to "
            "the wrong embedding rows; put the run's files back, or start over in a new "
            "--model_dir"
        )


def copy_vocab(source: str, model_dir: str) -> str:
    """Copies ``source``'s vocabulary (a dataset or another run) into the run,
    atomically (a temporary directory renamed when complete); returns its
    fingerprint. A run that already has one keeps it."""
    target = os.path.join(model_dir, data_layout.VOCAB_DIR)
    if has_vocab(model_dir):
        return vocab_fingerprint(model_dir)
    if not has_vocab(source):
        for field in F.FIELDS:  # the clear error naming the first missing file
            path = data_layout.vocab_file(source, field.id)
            if not os.path.exists(path):
                vocab.read_vocab(path)
        raise data_layout.DatasetError(
            f"{source!r} has an incomplete vocabulary under "
            f"{os.path.join(source, data_layout.VOCAB_DIR)}"
        )
    tmp = target + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vocab.copy_files(source, tmp)
    shutil.rmtree(target, ignore_errors=True)  # an incomplete copy of a killed run
    os.rename(tmp, target)
    return vocab_fingerprint(model_dir)


def vocab_coverage(run_vocab: str, data_dir: str) -> tuple[int, int, int, int]:
    """How much of ``data_dir``'s train vocabulary the run's lacks (those ids map
    to the run's OOV rows): (distinct ids missing, distinct ids, occurrences
    missing, occurrences) over all fields; zeros when the data has no
    vocabulary."""
    import numpy as np

    missing = total = missing_n = total_n = 0
    if not has_vocab(data_dir):
        return 0, 0, 0, 0
    for field in F.FIELDS:
        have = vocab.read_vocab(data_layout.vocab_file(run_vocab, field.id))
        table = np.loadtxt(
            data_layout.vocab_file(data_dir, field.id), dtype=np.int64, delimiter="\t", ndmin=2
        )[1:]
        if not table.size:
            continue
        absent = ~np.isin(table[:, 0], have)
        missing += int(absent.sum())
        total += int(table.shape[0])
        missing_n += int(table[absent, 1].sum())
        total_n += int(table[:, 1].sum())
    return missing, total, missing_n, total_n


# ---------------------------------------------------------------------------
# Rebuilding a run's model.


def load_config(model_dir: str) -> config_lib.Config:
    return config_lib.load(model_dir)


def build_run_model(config: config_lib.Config, model_dir: str):
    """The (untrained) model of ``config`` on the run's vocabulary."""
    from esmm_tf.model import build_model

    if not has_vocab(model_dir):
        raise RunError(
            f"{model_dir} has no vocabulary copy ({os.path.join(model_dir, 'vocab')}): it was "
            "written by an older esmm_tf or its training never started; retrain it"
        )
    return build_model(config, vocab_root(model_dir))


def restore_checkpoint(checkpoint, path: str, partial: bool = False, hint: str = "") -> None:
    """``checkpoint.restore(path)``, every existing object matched (``partial``:
    the checkpoint may hold more, e.g. optimizer slots); a damaged file (a
    truncated variables file, a bad CRC) or one of another model is a
    RunError naming the checkpoint, with ``hint`` (what to do) appended."""
    import tensorflow as tf

    try:
        status = checkpoint.restore(path).assert_existing_objects_matched()
        if partial:
            status.expect_partial()
    except (tf.errors.OpError, IndexError, OSError) as e:
        reason = str(getattr(e, "message", e)).strip().splitlines()[0][:200]
        raise RunError(f"checkpoint {path} cannot be read: {reason}. {hint}".rstrip()) from None
    except (AssertionError, ValueError) as e:  # another structure, or other shapes
        reason = str(e).strip().splitlines()[0][:200]
        raise RunError(
            f"checkpoint {path} does not match the run's model ({reason}). {hint}".rstrip()
        ) from None


def restore(model_dir: str, which: str = "auto"):
    """(config, model, checkpoint path): a run's model rebuilt from its
    config.json and vocabulary copy, restored from ``serving_checkpoint``."""
    import tensorflow as tf

    values = config_lib.load_json(model_dir)  # the fields and the vocabulary's fingerprint
    config = config_lib.Config.from_dict(values)
    path = serving_checkpoint(model_dir, which)
    check_vocab(model_dir, values.get("vocab_fingerprint"))
    model = build_run_model(config, model_dir)
    restore_checkpoint(  # optimizer slots unused
        tf.train.Checkpoint(model=model),
        path,
        partial=True,
        hint="Choose another with --checkpoint=best or --checkpoint=latest, or retrain.",
    )
    return config, model, path
