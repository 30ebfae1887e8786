"""``train_and_evaluate(config, model_dir)``: the custom training loop.

A small ``tf.function`` train step under a ``tf.distribute`` strategy (the
default strategy on one machine) rather than ``model.fit``: Keras 3's fit
fails under the multi-worker strategies in TF 2.21, and the same loop scales
out. Keras supplies the model and the progress bar; checkpoints use
``tf.train.CheckpointManager`` and summaries ``tf.summary``.

Resumption: the step counter lives in the checkpoint; epoch ``e`` always reads
the train split shuffled with seed ``config.seed + e``, so a restarted run
skips the batches of the current epoch that it already trained on and goes on
from there (exactly, with ``config.deterministic``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from esmm_tf import config as config_lib
from esmm_tf import data_layout, distribute, evaluation, input_pipeline, objectives, shards
from esmm_tf import features as F
from esmm_tf.config import Config
from esmm_tf.model import build_model
from esmm_tf.optimizer import Adam

CHECKPOINT_DIR = "checkpoints"
EVAL_FILE = "eval_metrics.json"


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss is not finite)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def steps_per_epoch(config: Config, files: list[str] | None = None) -> int:
    """Batches per pass over the (sampled) train split, or over ``files`` of it."""
    if config.train_fraction < 1 or files is not None:
        files = files or data_layout.shard_files(config.data_dir, "train")
        records = int(
            input_pipeline.train_records(files, config.train_fraction).reduce(0, lambda n, _: n + 1)
        )
    else:
        stats_path = data_layout.stats_file(config.data_dir)
        if not os.path.exists(stats_path):
            raise data_layout.DatasetError(
                f"{stats_path} not found; is {config.data_dir!r} a completed "
                "data_prep.convert output?"
            )
        with open(stats_path) as f:
            records = json.load(f)["splits"]["train"]["records"]
    return max(1, math.ceil(records / config.records_per_batch))


def make_optimizer(config: Config) -> Adam:
    return Adam(
        config.learning_rate,
        beta_1=config.beta_1,
        beta_2=config.beta_2,
        epsilon=config.epsilon,
        lazy=config.lazy_adam,
    )


# Evaluation batches: at least this many records (no gradients to keep, and a
# larger batch amortises each call's fixed cost: ~2x the impressions/s of
# 32-record batches on 2 cores). The metrics do not depend on the batching.
EVAL_RECORDS_PER_BATCH = 256


def eval_dataset(
    config: Config, split: str = "test", files: list[str] | None = None
) -> tf.data.Dataset:
    files = files or data_layout.shard_files(config.data_dir, split)
    return input_pipeline.make_dataset(
        files,
        max(config.records_per_batch, EVAL_RECORDS_PER_BATCH),
        shuffle=False,
        with_ground_truth=input_pipeline.has_ground_truth(files),
        deterministic=True,
    )


class _TrainWindow:
    """Labels and predictions since the last summary, for train AUCs."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.evaluator = evaluation.Evaluator()
        self.loss_sums: dict[str, float] = {}
        self.steps = 0
        self.impressions = 0
        self.start = time.time()

    def update(self, loss: dict, labels: dict, outputs: dict) -> None:
        for k, v in loss.items():
            self.loss_sums[k] = self.loss_sums.get(k, 0.0) + float(v)
        self.steps += 1
        self.impressions += int(labels[F.CLICK].shape[0])
        self.evaluator.update(labels, outputs)


def build_training(config: Config, strategy: tf.distribute.Strategy | None = None):
    """The model, its optimizer (built) and the train step, a tf.function traced
    once for any batch: ``train_step(inputs, labels) -> (losses, outputs)``."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = build_model(config)
        optimizer = make_optimizer(config)
        optimizer.build(model.trainable_variables)
    variables = model.trainable_variables

    def step_fn(inputs, labels):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = objectives.loss(config, labels, outputs)
        grads = tape.gradient(loss["total"], variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss, {k: outputs[k] for k in F.OUTPUT_KEYS}

    specs = input_pipeline.batch_spec()
    function = tf.function(lambda x, y: strategy.run(step_fn, args=(x, y)), input_signature=specs)
    return model, optimizer, _FlatCall(function, specs)


class _FlatCall:
    """Calls a ``tf.function`` with an ``input_signature`` of (inputs, labels)
    dicts, skipping its per-call Python work where it can.

    Binding ~60 tensors to the signature is Python work (canonicalising and
    casting each against its TensorSpec) that cost ~2 ms per call here, about
    a sixth of a train step. For a batch of plain eager tensors with exactly
    the signature's keys, dtypes and ranks, this calls the traced concrete
    function with the flat tensor list (the order ``tf.nest.flatten`` gives,
    which is the function's input order) through ``ConcreteFunction._call_flat``,
    a private TensorFlow API (TensorFlow is pinned in setup.py; the test
    ``test_train_step_fast_path_matches_the_tf_function`` guards it). Anything
    else (numpy arrays, distributed values, other keys, inside a graph) goes
    through the ``tf.function`` itself, with its checks and errors.
    """

    def __init__(self, function, specs: tuple[dict, dict]):
        self.function = function
        self._concrete = function.get_concrete_function()
        self._keys = tuple(tuple(sorted(s)) for s in specs)
        self._checks = [(s.dtype, s.shape.rank) for s in tf.nest.flatten(specs)]

    def _flat(self, inputs, labels) -> list | None:
        if not tf.executing_eagerly():
            return None
        for given, keys in zip((inputs, labels), self._keys, strict=True):
            if type(given) is not dict or len(given) != len(keys) or given.keys() != set(keys):
                return None
        flat = tf.nest.flatten((inputs, labels))
        for t, (dtype, rank) in zip(flat, self._checks, strict=True):
            if not isinstance(t, tf.__internal__.EagerTensor) or t.dtype != dtype:
                return None
            if t.shape.rank != rank:
                return None
        return flat

    def __call__(self, inputs, labels):
        flat = self._flat(inputs, labels)
        if flat is None:
            return self.function(inputs, labels)
        return self._concrete._call_flat(flat, self._concrete.captured_inputs)


def train_and_evaluate(
    config: Config,
    model_dir: str,
    export_dir: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> dict:
    """Trains (resuming from model_dir's last checkpoint), evaluates, exports.

    ``strategy`` defaults to the one ``config.strategy`` names. Under a
    multi-worker strategy every worker calls this with the same arguments;
    only the chief writes to ``model_dir`` and ``export_dir`` (which must be
    shared storage that every worker can read, for resumption).

    Returns the final evaluation metrics (also written to model_dir/eval_metrics.json);
    a non-chief worker returns only ``{"step": ...}``.

    A truncated or corrupted shard raises ``shards.CorruptShardError`` naming
    it (or, with ``config.corrupt_shards="skip"``, is left out and listed in
    the metrics as ``skipped_shards``).
    """
    strategy = strategy or distribute.make_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    train_files = data_layout.shard_files(config.data_dir, "train")
    test_files = data_layout.shard_files(config.data_dir, "test")
    if chief:
        config_lib.save(config, model_dir)
    with shards.naming_corrupt_shards(train_files + test_files):
        train_files, bad_train = shards.usable_shards(train_files, config.corrupt_shards)
        test_files, bad_test = shards.usable_shards(test_files, config.corrupt_shards)
        distribute.check_train_sharding(strategy, train_files, config.records_per_batch)
        scratch = None if chief else tempfile.mkdtemp(prefix="esmm-worker-")
        try:
            return _train_and_evaluate(
                config,
                model_dir,
                export_dir,
                strategy,
                chief,
                scratch,
                train_files,
                test_files,
                bad_train,
                bad_test,
            )
        finally:
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)


def _train_and_evaluate(
    config: Config,
    model_dir: str,
    export_dir: str | None,
    strategy: tf.distribute.Strategy,
    chief: bool,
    scratch: str | None,
    train_files: list[str],
    test_files: list[str],
    bad_train: list[shards.ShardCheck],
    bad_test: list[shards.ShardCheck],
) -> dict:
    """train_and_evaluate's body. ``scratch``: a non-chief worker's temporary
    directory, where it writes what the chief writes to model_dir (saving
    distributed variables may take part in collective operations)."""
    task = distribute.task_name(strategy)
    prefix = f"[{task}] " if task else ""
    per_epoch = steps_per_epoch(config, train_files if bad_train else None)
    total_steps = per_epoch * config.epochs
    keras.utils.set_random_seed(config.seed)

    model, optimizer, train_step = build_training(config, strategy)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(
        checkpoint,
        os.path.join(model_dir if chief else scratch, CHECKPOINT_DIR),
        max_to_keep=config.keep_checkpoints,
        step_counter=optimizer.iterations,
    )
    # Every worker resumes from the chief's checkpoints.
    latest = latest_checkpoint(model_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        _log(f"{prefix}resumed from {latest} (step {int(optimizer.iterations.numpy())})")

    predict = evaluation.predict_function(model)
    if chief:
        writer = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
        eval_writer = tf.summary.create_file_writer(os.path.join(model_dir, "eval"))
    else:
        writer = eval_writer = tf.summary.create_noop_writer()
    multi_worker = distribute.is_multi_worker(strategy)
    global_sum = distribute.sum_over_workers(strategy)

    step = int(optimizer.iterations.numpy())
    metrics = None
    window = _TrainWindow()
    progbar = keras.utils.Progbar(
        total_steps, verbose=1 if chief else 0, stateful_metrics=["loss", "imp/s"]
    )
    if step:
        progbar.update(min(step, total_steps))
    while step < total_steps:
        epoch = step // per_epoch
        batches = iter(_train_batches(config, strategy, train_files, epoch, step % per_epoch))
        while True:
            try:
                inputs, labels = distribute.local_value(strategy, next(batches))
            except StopIteration:
                raise TrainingError(
                    f"the train split ended after {step} steps, before the {per_epoch} steps "
                    f"per epoch that {data_layout.stats_file(config.data_dir)} implies; "
                    "was the dataset changed after conversion?"
                ) from None
            loss, outputs = train_step(inputs, labels)
            loss = {k: v.numpy() for k, v in global_sum(loss).items()}
            if not all(np.isfinite(v) for v in loss.values()):
                raise TrainingError(
                    f"loss is not finite at step {step + 1} ({loss}); stopping. The last good "
                    f"checkpoint is kept: {latest_checkpoint(model_dir) or 'none yet'}"
                )
            step += 1
            window.update(
                loss,
                {k: labels[k].numpy() for k in F.LABEL_KEYS},
                {k: v.numpy() for k, v in outputs.items()},
            )
            if step % config.log_every_steps == 0 or step == total_steps:
                rate = _write_train_summaries(writer, window, optimizer, step)
                mean_loss = window.loss_sums["total"] / window.steps
                progbar.update(step, [("loss", mean_loss), ("imp/s", rate)])
                window.reset()
            if step % config.checkpoint_every_steps == 0:
                _save_checkpoint(manager, model, step)
            if step % per_epoch == 0 or step == total_steps:
                break
        epoch_done = step // per_epoch
        if epoch_done % config.eval_every_epochs == 0 or step >= total_steps:
            _save_checkpoint(manager, model, step)
            if chief:  # the others go on to the next step's collectives and wait there
                metrics = evaluation.evaluate(
                    model, eval_dataset(config, files=test_files), predict
                )
                _write_eval_summaries(eval_writer, metrics, step)
                _log("\n" + evaluation.format_table(metrics, f"eval after epoch {epoch_done}"))

    if not chief:
        if export_dir:  # as the chief does (saving may take part in collectives), then dropped
            from esmm_tf.export import export_saved_model

            export_saved_model(model, os.path.join(scratch, "export"))
        _log(f"{prefix}done at step {step}; the chief writes {model_dir}")
        _barrier(strategy, global_sum)
        return {"step": step}
    if metrics is None:  # nothing left to train: evaluate the restored model
        metrics = evaluation.evaluate(model, eval_dataset(config, files=test_files), predict)
    metrics["step"] = step
    metrics["skipped_shards"] = [shards.describe(c) for c in bad_train + bad_test]
    with open(os.path.join(model_dir, EVAL_FILE + ".tmp"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    os.replace(os.path.join(model_dir, EVAL_FILE + ".tmp"), os.path.join(model_dir, EVAL_FILE))
    if export_dir:
        from esmm_tf import serving_requests
        from esmm_tf.export import WARMUP_RECORDS, export_saved_model

        warmup = serving_requests.read_records(test_files, WARMUP_RECORDS)
        path = export_saved_model(model, export_dir, warmup_records=warmup)
        metrics["export_path"] = path
        _log(f"exported SavedModel to {path}")
    if multi_worker:
        _barrier(strategy, global_sum)
    return metrics


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
    return tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR))


def _barrier(strategy: tf.distribute.Strategy, global_sum) -> None:
    """Waits until every worker gets here (the chief evaluates and exports
    while the others wait), so that no worker leaves the cluster early."""
    if distribute.is_multi_worker(strategy):
        global_sum({"done": tf.constant(1.0)})


def _train_batches(
    config: Config, strategy: tf.distribute.Strategy, files: list[str], epoch: int, skip: int
):
    """Epoch ``epoch``'s train batches from batch ``skip`` on: on one machine the
    split shuffled with seed ``seed + epoch``; on a cluster, each worker's files
    (every num_workers-th) the same way, batches of records_per_batch / replicas
    records, repeated so that every worker has the epoch's steps."""

    def make(num_shards: int, shard_index: int, context: tf.distribute.InputContext):
        dataset = input_pipeline.make_dataset(
            files,
            context.get_per_replica_batch_size(config.records_per_batch),
            shuffle=True,
            seed=config.seed + epoch,
            shuffle_buffer=config.shuffle_buffer,
            deterministic=config.deterministic,
            fraction=config.train_fraction,
            num_shards=num_shards,
            shard_index=shard_index,
        )
        if num_shards > 1:  # shards differ in size; the workers take the same steps
            dataset = dataset.repeat()
        return dataset.skip(skip)

    return distribute.distributed_batches(strategy, make)


def _write_train_summaries(writer, window: _TrainWindow, optimizer: Adam, step: int) -> float:
    seconds = max(time.time() - window.start, 1e-9)
    rate = window.impressions / seconds
    result = window.evaluator.result()
    with writer.as_default(step=step):
        for k, v in window.loss_sums.items():
            tf.summary.scalar(f"loss/{k}", v / window.steps)
        for k in ("ctr_auc", "cvr_auc", "ctcvr_auc"):
            if not math.isnan(result[k]):
                tf.summary.scalar(f"auc/{k}", result[k])
        tf.summary.scalar("impressions_per_second", rate)
        tf.summary.scalar("learning_rate", optimizer.learning_rate_value())
    writer.flush()
    return rate


def _write_eval_summaries(writer, metrics: dict, step: int) -> None:
    with writer.as_default(step=step):
        for k in ("ctr_auc", "cvr_auc", "ctcvr_auc", "cvr_auc_entire_space"):
            if k in metrics and not math.isnan(metrics[k]):
                tf.summary.scalar(f"auc/{k}", metrics[k])
        for head, cal in metrics["calibration"].items():
            tf.summary.scalar(f"calibration/{head}_mean_pred", cal["observed"]["mean_pred"])
            tf.summary.scalar(f"log_loss/{head}", cal["observed"]["log_loss"])
        tf.summary.scalar("impressions_per_second", metrics["impressions_per_second"])
    writer.flush()
