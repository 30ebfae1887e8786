"""The train step: the model, its optimizer and a ``tf.function`` step traced
once for any batch (``build_training``), and the window of steps the train
summaries cover (``TrainWindow``). Used by esmm_tf/training_run.py and the
training benchmark.
"""

from __future__ import annotations

import time

import tensorflow as tf

from esmm_tf import distribute, evaluator, input_pipeline, objectives, regularization, schedules
from esmm_tf import features as F
from esmm_tf.config import Config
from esmm_tf.model import build_model
from esmm_tf.optimizer import Adam


def make_optimizer(config: Config, steps_per_epoch: int = 1) -> Adam:
    """Adam with the config's learning rate (decayed by ``learning_rate_decay``
    every ``steps_per_epoch`` steps, see esmm_tf/schedules.py)."""
    return Adam(
        schedules.learning_rate(config, steps_per_epoch),
        beta_1=config.beta_1,
        beta_2=config.beta_2,
        epsilon=config.epsilon,
        lazy=config.lazy_adam,
    )


class TrainWindow:
    """Labels and predictions since the last summary, for train AUCs, and the
    training time they took: ``seconds`` sums the time from ``mark`` to each
    step's end, and ``resume()`` moves ``mark`` past time that is not training
    (evaluation, checkpoints, the pipeline's start-up), so neither a pause nor
    the wait for the end of the data counts."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.evaluator = evaluator.Evaluator()
        self.loss_sums: dict[str, float] = {}
        self.steps = 0
        self.impressions = 0
        self.seconds = 0.0
        self.resume()

    def resume(self) -> None:
        """Training time counts again from now."""
        self.mark = time.monotonic()

    def update(self, loss: dict, labels: dict, outputs: dict) -> None:
        for k, v in loss.items():
            self.loss_sums[k] = self.loss_sums.get(k, 0.0) + float(v)
        self.steps += 1
        self.impressions += int(labels[F.CLICK].shape[0])
        self.evaluator.update(labels, outputs)
        now = time.monotonic()
        self.seconds += now - self.mark
        self.mark = now


def build_training(
    config: Config,
    strategy: tf.distribute.Strategy | None = None,
    vocab_root: str | None = None,
    steps_per_epoch: int = 1,
):
    """The model (on the vocabulary under ``vocab_root``, default the data's),
    its optimizer (built) and the train step, a tf.function traced once for any
    batch: ``train_step(inputs, labels) -> (losses, outputs)``. The losses are
    the objective's terms, ``total`` (the data loss) and ``regularization``
    (esmm_tf/regularization.py); the gradient is of their sum."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = build_model(config, vocab_root)
        optimizer = make_optimizer(config, steps_per_epoch)
        optimizer.build(model.trainable_variables)
    variables = model.trainable_variables

    def step_fn(inputs, labels):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = objectives.loss(config, labels, outputs)
            loss["regularization"] = regularization.penalty(model, inputs, config)
            objective = loss["total"] + loss["regularization"]
        grads = tape.gradient(objective, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss, {k: outputs[k] for k in F.OUTPUT_KEYS}

    if distribute.local_replicas(strategy) > 1:  # mirrored: per-replica batches
        function = tf.function(
            lambda x, y: strategy.run(step_fn, args=(x, y)), reduce_retracing=True
        )
        return model, optimizer, function
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
