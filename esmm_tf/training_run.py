"""``TrainingRun``: the custom training loop as a small run object, and
``train_and_evaluate(config, model_dir)`` that drives it.

A small ``tf.function`` train step under a ``tf.distribute`` strategy (the
default strategy on one machine) rather than ``model.fit``: Keras 3's fit
fails under the multi-worker strategies in TF 2.21, and the same loop scales
out. Keras supplies the model; checkpoints use ``tf.train.CheckpointManager``
and summaries ``tf.summary``; the run directory's layout is
``esmm_tf.run_dir``'s.

A run: ``TrainingRun(config, model_dir)`` builds the model on the run's own
vocabulary copy and restores its last checkpoint (or warm-starts from another
run); ``train_epoch()`` trains one pass over the train split (minus the
validation split), evaluating every ``eval_every_steps`` and keeping the best
checkpoint on the validation split; ``finish()`` evaluates the selected model
on the whole test split, writes ``eval_metrics.json`` and exports.

Resumption: the checkpoint holds the epoch, the steps done in it and the
early-stopping state; epoch ``e`` always reads the train split shuffled with
seed ``config.seed + e``, so a restarted run skips the batches of the current
epoch that it already trained on and goes on from there (exactly, with
``config.deterministic``).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from esmm_tf import config as config_lib
from esmm_tf import (
    data_layout,
    distribute,
    evaluator,
    files,
    input_pipeline,
    run_dir,
    shards,
    summaries,
)
from esmm_tf import features as F
from esmm_tf.config import Config
from esmm_tf.progress import Progress
from esmm_tf.train_step import TrainWindow, build_training, make_optimizer  # noqa: F401

CHECKPOINT_DIR = run_dir.CHECKPOINT_DIR
EVAL_FILE = run_dir.EVAL_FILE
EVALS_PER_EPOCH = 10  # --eval_every_steps=0
LOGS_PER_EPOCH = 50  # --log_every_steps=0


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss is not finite)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_size(config: Config, files: list[str] | None = None) -> tuple[int, int]:
    """(impressions, records) of the train split that training reads: without
    the validation split and sampled by ``train_fraction`` (the split's counts
    from stats.json scaled by those fractions; with ``files``, a subset of the
    shards, counted)."""
    share = (1 - config.validation_fraction) * config.train_fraction
    if files is None:
        stats = data_layout.read_stats(config.data_dir)
        train = stats["splits"].get("train")
        if not isinstance(train, dict) or not {"impressions", "records"} <= set(train):
            raise data_layout.DatasetError(
                f"{data_layout.stats_file(config.data_dir)} has no train split's counts: "
                "training needs a conversion of train logs"
            )
        return int(train["impressions"] * share), int(train["records"] * share)
    records = input_pipeline.train_records(files, share, exclude=config.validation_fraction).batch(
        input_pipeline.CHUNK_RECORDS
    )
    impressions = count = 0
    for chunk in records:
        sizes = input_pipeline.record_heads(chunk)[0]
        impressions += int(tf.reduce_sum(sizes))
        count += int(tf.size(sizes))
    return impressions, count


def steps_per_epoch(config: Config, files: list[str] | None = None) -> int:
    """Steps per pass over the train split, estimated from its impressions and
    records: a step of whole records holds on average about half a record
    less than ``batch_size`` (an epoch on one process ends with the data, so
    it may take a few steps more or less; under a multi-worker strategy every
    worker takes exactly this many)."""
    impressions, records = train_size(config, files)
    mean = impressions / max(records, 1)
    fill = max(config.batch_size - mean / 2, mean) if mean < config.batch_size else mean
    return max(1, math.ceil(impressions / fill))


# Evaluation batches: at least this many impressions (no gradients to keep,
# and a larger batch amortises each call's fixed cost: ~2x the impressions/s
# of 1k-impression batches on 2 cores). The metrics do not depend on the batching.
EVAL_BATCH_SIZE = 8192


# Evaluations during training on at most this many impressions (the default
# --eval_impressions is 200k) keep their sample in memory after the first one
# (~300 bytes an impression).
EVAL_CACHE_MAX_IMPRESSIONS = 1_000_000


def eval_dataset(
    config: Config,
    split: str = "test",
    files: list[str] | None = None,
    *,
    validation: bool = False,
    impressions: int = 0,
) -> tf.data.Dataset:
    """The batches of a split in file order (deterministic); ``validation``:
    the train split's validation requests; ``impressions`` > 0: only about the
    first that many impressions (a fixed sample)."""
    files = files or data_layout.shard_files(config.data_dir, "train" if validation else split)
    batch = max(config.batch_size, EVAL_BATCH_SIZE)
    ds = input_pipeline.make_dataset(
        files,
        batch,
        shuffle=False,
        with_ground_truth=input_pipeline.has_ground_truth(files),
        deterministic=True,
        fraction=config.validation_fraction if validation else 1.0,
    )
    return ds.take(math.ceil(impressions / batch)) if impressions else ds


class _Progress(tf.Module):
    """Where training stands, saved in every checkpoint: the epoch, the steps
    done in it, and the early-stopping state (so a resumed run goes on with
    the same best value, patience and stop decision)."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_value = tf.Variable(float("nan"), dtype=tf.float64, trainable=False)
        self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.evals_without_improvement = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.stopped = tf.Variable(False, trainable=False)


def _better(metric: str, value: float, best: float) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if metric == "log_loss" else value > best


def selection_value(metrics: dict, metric: str) -> float:
    """The early-stopping metric of an evaluation (``log_loss``: CTR + CTCVR
    log loss over all impressions)."""
    if metric == "log_loss":
        cal = metrics["calibration"]
        return cal[F.CTR]["observed"]["log_loss"] + cal[F.CTCVR]["observed"]["log_loss"]
    return metrics[metric]


class TrainingRun:
    """One training run in ``model_dir``: build (or resume, or warm-start),
    ``train_epoch()`` until ``done``, then ``finish()``.

    Under a multi-worker strategy every worker builds the same run; only the
    chief writes to ``model_dir`` and ``export_dir`` (shared storage that
    every worker can read, for resumption); the others write to a temporary
    directory (saving distributed variables may take part in collectives).
    """

    def __init__(
        self,
        config: Config,
        model_dir: str,
        export_dir: str | None = None,
        strategy: tf.distribute.Strategy | None = None,
    ) -> None:
        self.config = config
        self.model_dir = model_dir
        self.export_dir = export_dir
        self.strategy = strategy or distribute.make_strategy(config.strategy)
        self.chief = distribute.is_chief(self.strategy)
        self.local_replicas = distribute.local_replicas(self.strategy)
        task = distribute.task_name(self.strategy)
        self.prefix = f"[{task}] " if task else ""
        self.scratch = None if self.chief else tempfile.mkdtemp(prefix="esmm-worker-")
        self._check_files()
        self._setup_vocab()
        keras.utils.set_random_seed(config.seed)
        self.per_epoch = steps_per_epoch(config, self.train_files if self.bad_train else None)
        self.model, self.optimizer, self.train_step = build_training(
            config, self.strategy, run_dir.vocab_root(self._vocab_dir), self.per_epoch
        )
        self.progress = _Progress()
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, progress=self.progress
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            run_dir.checkpoint_dir(self._write_dir),
            max_to_keep=config.keep_checkpoints,
            step_counter=self.optimizer.iterations,
        )
        self.best_manager = tf.train.CheckpointManager(
            self.checkpoint,
            run_dir.best_dir(self._write_dir),
            max_to_keep=1,
            step_counter=self.optimizer.iterations,
        )
        self._restore_or_warm_start()
        self.predict = evaluator.predict_function(self.model)
        if self.chief:
            self.writer = tf.summary.create_file_writer(
                run_dir.events_dir(model_dir, run_dir.TRAIN_EVENTS)
            )
            self.eval_writer = tf.summary.create_file_writer(
                run_dir.events_dir(model_dir, run_dir.EVAL_EVENTS)
            )
        else:
            self.writer = self.eval_writer = tf.summary.create_noop_writer()
        self.global_sum = distribute.sum_over_workers(self.strategy)
        if self.chief and not self.step:
            summaries.write_hparams(model_dir, config)
        self.eval_every = config.eval_every_steps or max(1, self.per_epoch // EVALS_PER_EPOCH)
        self.log_every = config.log_every_steps or max(1, self.per_epoch // LOGS_PER_EPOCH)
        self.metrics: dict | None = None
        self.window = TrainWindow()
        # Steps done of the planned ones (an epoch's count is an estimate), with
        # the loss and the training throughput: a redrawn line on a terminal,
        # plain lines in a log file (esmm_tf/progress.py).
        self.progbar = Progress(
            "train", total=self.per_epoch * config.epochs, unit="step", enabled=self.chief
        )

    # -- setup ---------------------------------------------------------------

    @property
    def _write_dir(self) -> str:
        return self.model_dir if self.chief else self.scratch

    @property
    def _vocab_dir(self) -> str:
        return self.model_dir if self.chief else self.scratch

    def _check_files(self) -> None:
        config = self.config
        self.train_files = data_layout.shard_files(config.data_dir, "train")
        self.test_files = data_layout.shard_files(config.data_dir, "test")
        self._eval_data = None  # the evaluations' during training (the same sample each time)
        self._sample_files = None  # the train sample's files, once written (_epoch_source)
        with shards.naming_corrupt_shards(self.train_files + self.test_files, can_skip=True):
            self.train_files, self.bad_train = shards.usable_shards(
                self.train_files, config.corrupt_shards
            )
            self.test_files, self.bad_test = shards.usable_shards(
                self.test_files, config.corrupt_shards
            )
        distribute.check_train_sharding(self.strategy, self.train_files, config.batch_size)

    def _setup_vocab(self) -> None:
        """The run's vocabulary copy: from --warm_start_from's run, else the data."""
        config = self.config
        source = config.warm_start_from or config.data_dir
        if config.warm_start_from:
            run_dir.serving_checkpoint(config.warm_start_from)  # a clear error if none
            _check_warm_start_config(config, run_dir.load_config(config.warm_start_from))
        if self.chief:
            # The chief's copy is every worker's (model_dir is shared storage);
            # the others copy into their scratch so that they never race it.
            fingerprint = None
            if os.path.exists(os.path.join(self.model_dir, config_lib.CONFIG_FILE)):
                fingerprint = config_lib.load_json(self.model_dir).get("vocab_fingerprint")
            config_lib.save(config, self.model_dir)  # refuses another configuration
            copied = run_dir.copy_vocab(source, self.model_dir)  # keeps an existing copy
            run_dir.check_vocab(self.model_dir, fingerprint)  # before resuming on it
            config_lib.save(config, self.model_dir, {"vocab_fingerprint": copied})
        else:
            run_dir.copy_vocab(source, self.scratch)

    def _restore_or_warm_start(self) -> None:
        latest = run_dir.latest_checkpoint(self.model_dir)  # every worker: the chief's
        if latest:
            run_dir.restore_checkpoint(
                self.checkpoint,
                latest,
                hint="To start this run over, train in a new --model_dir.",
            )
            _log(f"{self.prefix}resumed from {latest} (step {self.step})")
            return
        if os.path.exists(run_dir.eval_file(self.model_dir)):
            raise run_dir.RunError(
                f"{self.model_dir} is a finished run without checkpoints (removed by --prune, "
                "or deleted): it cannot be resumed or trained further, and starting it over "
                "would replace its results; train in a new --model_dir"
            )
        source = self.config.warm_start_from
        if not source:
            return
        path = run_dir.serving_checkpoint(source)
        run_dir.restore_checkpoint(
            tf.train.Checkpoint(model=self.model), path, partial=True, hint="(--warm_start_from)"
        )
        missing, total, missing_n, total_n = run_dir.vocab_coverage(
            self._vocab_dir, self.config.data_dir
        )
        _log(
            f"{self.prefix}warm start from {path}; its vocabulary lacks {missing:,} of the "
            f"{total:,} distinct train ids of {self.config.data_dir} "
            f"({missing_n / max(total_n, 1):.2%} of their occurrences): they map to OOV rows"
        )

    # -- state ---------------------------------------------------------------

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    @property
    def epoch(self) -> int:
        return int(self.progress.epoch.numpy())

    @property
    def stopped(self) -> bool:
        return bool(self.progress.stopped.numpy())

    @property
    def done(self) -> bool:
        return self.stopped or self.epoch >= self.config.epochs

    @property
    def has_validation(self) -> bool:
        return self.config.validation_fraction > 0

    # -- training ------------------------------------------------------------

    def _batches(self, epoch: int, skip: int):
        """Epoch ``epoch``'s train batches from batch ``skip`` on: on one machine
        the split (without the validation requests) shuffled with seed
        ``seed + epoch``, until it ends; on a cluster, each worker's files
        (every num_workers-th) the same way, in batches of batch_size / replicas
        impressions, repeated so that every worker takes ``per_epoch`` steps."""
        config = self.config
        train_files, share, exclude = self._epoch_source()

        def make(num_shards: int, shard_index: int, context: tf.distribute.InputContext):
            dataset = input_pipeline.make_dataset(
                train_files,
                context.get_per_replica_batch_size(config.batch_size),
                shuffle=True,
                seed=config.seed + epoch,
                shuffle_buffer=config.shuffle_buffer,
                deterministic=config.deterministic,
                fraction=share,
                exclude=exclude,
                num_shards=num_shards,
                shard_index=shard_index,
            )
            if num_shards > 1:  # shards differ in size; the workers take the same steps
                dataset = dataset.repeat().take(self.per_epoch)
            return dataset.skip(skip)

        return distribute.distributed_batches(self.strategy, make)

    def _epoch_source(self) -> tuple[list[str], float, float]:
        """What an epoch reads: (files, fraction, exclude) for ``make_dataset``.
        The train split without the validation requests, sampled by
        ``train_fraction``; when that keeps at most
        ``input_pipeline.SAMPLE_CACHE_MAX_SHARE`` of the split and the run
        trains several epochs on one process, the sample written once to
        ``RUN/train_sample/`` (the same records, without re-reading the whole
        split every epoch)."""
        config = self.config
        share = (1 - config.validation_fraction) * config.train_fraction
        exclude = config.validation_fraction
        if share >= 1 and exclude <= 0:
            return self.train_files, 1.0, 0.0
        if (
            config.epochs > 1
            and share <= input_pipeline.SAMPLE_CACHE_MAX_SHARE
            and not distribute.is_multi_worker(self.strategy)
        ):
            if self._sample_files is None:
                with self.progbar.paused():
                    self._sample_files = input_pipeline.cache_sample(
                        self.train_files, share, exclude, run_dir.sample_dir(self.model_dir), _log
                    )
            return self._sample_files, 1.0, 0.0
        return self.train_files, share, exclude

    def train_epoch(self) -> None:
        """Trains until the end of the current epoch (or an early stop),
        evaluating, logging and checkpointing on the way."""
        epoch = self.epoch
        skipped = int(self.progress.epoch_step.numpy())
        self.window.reset()
        for inputs, labels in self._batches(epoch, skipped):
            if not self.window.steps:  # the pipeline's start-up is not training time
                self.window.resume()
            self._train_step(inputs, labels)
            self.progress.epoch_step.assign_add(1)
            step = self.step
            self.progbar.update(step)
            if step % self.log_every == 0:
                self._log_train(step)
            if step % self.eval_every == 0:
                self._evaluate_during_training()
                if self.stopped:
                    break
            if step % self.config.checkpoint_every_steps == 0:
                self._save()
        if not self.stopped:
            self.progress.epoch.assign(epoch + 1)
            self.progress.epoch_step.assign(0)
            if self.window.steps:
                self._log_train(self.step)
            if self.step % self.eval_every:  # not evaluated at this step yet
                self._evaluate_during_training()
        self._save()

    def _train_step(self, inputs: dict, labels: dict) -> None:
        """One step on this process's batch: one replica's (one device per
        process), or, under ``mirrored``, every local replica's at once."""
        if self.local_replicas > 1:
            loss, outputs = self.train_step(inputs, labels)
            loss = distribute.sum_local_replicas(self.strategy, loss)
            labels = distribute.concat_local_replicas(self.strategy, labels)
            outputs = distribute.concat_local_replicas(self.strategy, outputs)
        else:
            inputs, labels = distribute.local_value(self.strategy, (inputs, labels))
            loss, outputs = self.train_step(inputs, labels)
            loss = self.global_sum(loss)
        loss = {k: v.numpy() for k, v in loss.items()}
        if not all(np.isfinite(v) for v in loss.values()):
            raise TrainingError(
                f"loss is not finite at step {self.step} ({loss}); stopping. The last good "
                f"checkpoint is kept: {run_dir.latest_checkpoint(self.model_dir) or 'none yet'}"
            )
        self.window.update(
            loss,
            {k: labels[k].numpy() for k in F.LABEL_KEYS},
            {k: v.numpy() for k, v in outputs.items()},
        )

    def _log_train(self, step: int) -> None:
        rate = summaries.write_train_summaries(self.writer, self.window, self.optimizer, step)
        mean_loss = self.window.loss_sums["total"] / self.window.steps
        self.progbar.update(step, loss=round(mean_loss, 4), **{"imp/s": int(rate)})
        self.window.reset()

    def _save(self) -> None:
        with self.progbar.paused():
            _save_checkpoint(self.manager, self.model, self.step)
        self.window.resume()  # throughput counts training time only

    def _evaluate_during_training(self) -> None:
        """Evaluates on the validation split (else a test sample, for monitoring
        only); with validation, keeps the best checkpoint and decides on early
        stopping. The decision is shared by every worker (a collective)."""
        config = self.config
        improved = stop = 0.0
        if self.chief:
            if self._eval_data is None:  # built once: each build traces the parser (~2 s)
                self._eval_data = evaluator.RepeatedPasses(
                    eval_dataset(
                        config,
                        files=self.train_files if self.has_validation else self.test_files,
                        validation=self.has_validation,
                        impressions=config.eval_impressions,
                    ),
                    # a fixed sample of bounded size: read from the files once
                    cache=0 < config.eval_impressions <= EVAL_CACHE_MAX_IMPRESSIONS,
                )
            with self.progbar.paused():
                metrics = evaluator.evaluate(self.model, self._eval_data, self.predict)
            summaries.write_eval_summaries(self.eval_writer, metrics, self.step)
            if self.has_validation:
                improved, stop = self._early_stopping(metrics)
        if self.has_validation:
            if distribute.is_multi_worker(self.strategy):  # the chief's decision, for all
                decision = self.global_sum(
                    {"improved": tf.constant(improved), "stop": tf.constant(stop)}
                )
                improved, stop = float(decision["improved"]), float(decision["stop"])
            if improved:
                self.progress.best_step.assign(self.step)
                self.progress.evals_without_improvement.assign(0)
            else:
                self.progress.evals_without_improvement.assign_add(1)
            if stop:
                self.progress.stopped.assign(True)
                _log(
                    f"\n{self.prefix}early stop at step {self.step}: no better validation "
                    f"{config.early_stopping_metric} in {config.early_stopping_patience} "
                    f"evaluations (best {float(self.progress.best_value.numpy()):.4f} at step "
                    f"{int(self.progress.best_step.numpy())})"
                )
            if improved:
                _save_checkpoint(self.best_manager, self.model, self.step)
            self._save()  # the early-stopping state, consistent with the best checkpoint
        self.window.resume()  # throughput counts training time only

    def _early_stopping(self, metrics: dict) -> tuple[float, float]:
        """(improved, stop) on the chief, from a validation evaluation."""
        config = self.config
        value = selection_value(metrics, config.early_stopping_metric)
        if math.isnan(value):  # no positives (or negatives) to rank: nothing to select on
            raise TrainingError(
                f"the validation {config.early_stopping_metric} is undefined at step {self.step}: "
                f"the validation sample ({metrics['impressions']:,} impressions, "
                f"{metrics['clicks']:,} clicks, {metrics['conversions']:,} conversions) lacks "
                "a positive or a negative label; raise --validation_fraction (or "
                "--eval_impressions, 0 for all of it) or choose another --early_stopping_metric, "
                "in a new --model_dir (this one keeps its configuration)"
            )
        best = float(self.progress.best_value.numpy())
        if _better(config.early_stopping_metric, value, best):
            self.progress.best_value.assign(value)
            return 1.0, 0.0
        waited = int(self.progress.evals_without_improvement.numpy()) + 1
        patience = config.early_stopping_patience
        return 0.0, 1.0 if patience and waited >= patience else 0.0

    # -- the end -------------------------------------------------------------

    def run(self) -> dict:
        """Trains what is left, then ``finish()``."""
        if self.step:
            self.progbar.restart_from(self.step)
        while not self.done:
            self.train_epoch()
        return self.finish()

    def finish(self) -> dict:
        """Evaluates the selected model (the best checkpoint on the validation
        split when there is one, else the last) on the whole test split, writes
        ``eval_metrics.json`` and exports. A non-chief worker only follows the
        collectives and returns ``{"step": ...}``."""
        config = self.config
        step = self.step
        self.progbar.update(step)
        self.progbar.close()
        if self.chief:  # training is over: its sample is not needed any more
            shutil.rmtree(run_dir.sample_dir(self.model_dir), ignore_errors=True)
        best = run_dir.best_checkpoint(self._write_dir) if self.has_validation else None
        if best:
            tf.train.Checkpoint(model=self.model).restore(best).expect_partial()
        try:
            if not self.chief:
                if self.export_dir:  # as the chief does (saving may take part in collectives)
                    from esmm_tf.serving import export_saved_model

                    export_saved_model(self.model, os.path.join(self.scratch, "export"))
                _log(f"{self.prefix}done at step {step}; the chief writes {self.model_dir}")
                _barrier(self.strategy, self.global_sum)
                return {"step": step}
            metrics = evaluator.evaluate(
                self.model, eval_dataset(config, files=self.test_files), self.predict
            )
            summaries.write_eval_summaries(self.eval_writer, metrics, step, prefix="test/")
            summaries.write_final_metrics(self.model_dir, metrics, step)
            title = "test split, " + (
                f"best checkpoint (step {int(self.progress.best_step.numpy())})"
                if best
                else f"after step {step}"
            )
            _log("\n" + evaluator.format_table(metrics, title))
            metrics["step"] = step
            metrics["checkpoint"] = best or run_dir.latest_checkpoint(self.model_dir)
            metrics["epochs_trained"] = self.epoch
            metrics["stopped_early"] = self.stopped
            if best:
                metrics["best_step"] = int(self.progress.best_step.numpy())
                metrics[f"best_validation_{config.early_stopping_metric}"] = float(
                    self.progress.best_value.numpy()
                )
            metrics["skipped_shards"] = [shards.describe(c) for c in self.bad_train + self.bad_test]
            files.write_json(run_dir.eval_file(self.model_dir), metrics)
            if self.export_dir:
                from esmm_tf import serving_requests
                from esmm_tf.serving import WARMUP_RECORDS, export_saved_model

                warmup = serving_requests.read_records(self.test_files, WARMUP_RECORDS)
                path = export_saved_model(
                    self.model,
                    self.export_dir,
                    warmup_records=warmup,
                    source_checkpoint=metrics["checkpoint"],
                )
                metrics["export_path"] = path
                _log(f"exported SavedModel to {path}")
            if distribute.is_multi_worker(self.strategy):
                _barrier(self.strategy, self.global_sum)
            return metrics
        finally:
            if self.scratch:
                shutil.rmtree(self.scratch, ignore_errors=True)


def _check_warm_start_config(config: Config, source: Config) -> None:
    """The warm-started model must have the source run's variables."""
    keys = ("model", "embedding_dim", "tower_units", "use_weights")
    diff = [k for k in keys if getattr(config, k) != getattr(source, k)]
    if diff:
        raise ValueError(
            f"--warm_start_from={config.warm_start_from}: its model differs in "
            + ", ".join(
                f"{k} ({getattr(source, k)!r} there, {getattr(config, k)!r} here)" for k in diff
            )
        )


def train_and_evaluate(
    config: Config,
    model_dir: str,
    export_dir: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> dict:
    """Trains (resuming from model_dir's last checkpoint), evaluates, exports:
    ``TrainingRun(...).run()``.

    Returns the final evaluation metrics (also written to
    model_dir/eval_metrics.json); a non-chief worker returns only
    ``{"step": ...}``. A truncated or corrupted shard raises
    ``shards.CorruptShardError`` naming it (or, with
    ``config.corrupt_shards="skip"``, is left out and listed in the metrics as
    ``skipped_shards``).
    """
    run = TrainingRun(config, model_dir, export_dir, strategy)
    with shards.naming_corrupt_shards(run.train_files + run.test_files, can_skip=True):
        return run.run()


def _save_checkpoint(manager: tf.train.CheckpointManager, model, step: int) -> None:
    """Saves, unless a variable is NaN or infinite (an update from a finite loss
    can still overflow, e.g. with an absurd input weight): a bad checkpoint
    would replace the last good one."""
    floats = [v for v in model.variables if tf.as_dtype(v.dtype).is_floating]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in floats])
    if not bool(finite):
        raise TrainingError(
            f"a model variable is not finite after step {step}; stopping without saving it. "
            f"The last good checkpoint is kept: {manager.latest_checkpoint or 'none yet'}"
        )
    manager.save(checkpoint_number=step)


def latest_checkpoint(model_dir: str) -> str | None:
    return run_dir.latest_checkpoint(model_dir)


def _barrier(strategy: tf.distribute.Strategy, global_sum) -> None:
    """Waits until every worker gets here (the chief evaluates and exports
    while the others wait), so that no worker leaves the cluster early."""
    if distribute.is_multi_worker(strategy):
        global_sum({"done": tf.constant(1.0)})
