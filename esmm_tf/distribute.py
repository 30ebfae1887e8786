"""The ``tf.distribute`` strategy of a training run (``--strategy``).

* ``default``: one process (TensorFlow's default strategy).
* ``multi_worker_mirrored``: synchronous data parallelism over the hosts that
  ``TF_CONFIG`` lists (``tf.distribute.MultiWorkerMirroredStrategy``). Every
  worker runs the same command; each reads its own train files and holds a
  full copy of the model; gradients are summed over the workers every step.
* ``mirrored``: synchronous data parallelism over this host's devices
  (``tf.distribute.MirroredStrategy``): every GPU, or, with none, every
  logical CPU device. Each step splits the global batch (``--batch_size``
  impressions) over the replicas; variables are mirrored and gradients summed.
* ``parameter_server``: not supported yet; ``make_strategy`` explains why.

``TF_CONFIG`` (one per host, the same ``cluster`` everywhere)::

    {"cluster": {"worker": ["host0:2222", "host1:2222"]},
     "task": {"type": "worker", "index": 0}}

The chief (task ``chief``, or worker 0 when there is none) writes the
checkpoints, summaries, ``config.json``, evaluation results and exports; the
other workers take part in every collective operation but write only to
temporary directories that they delete.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from esmm_tf.config import STRATEGIES

MIRRORED = "mirrored"
MULTI_WORKER = "multi_worker_mirrored"
PARAMETER_SERVER = "parameter_server"

_EXAMPLE = (
    '{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}'
)

PARAMETER_SERVER_UNSUPPORTED = (
    "--strategy=parameter_server is not supported yet. What fails (TensorFlow 2.21, "
    "Keras 3.15): {detail} Use --strategy=multi_worker_mirrored while the embedding "
    "tables fit one host's memory; README.md, 'Running on a cluster', has the path forward."
)


class ClusterConfigError(ValueError):
    """TF_CONFIG is missing or does not describe this task's cluster."""


def tf_config(strategy: str) -> dict:
    """The parsed and checked ``TF_CONFIG`` for a multi-host ``strategy``."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise ClusterConfigError(
            f"--strategy={strategy} needs the TF_CONFIG environment variable (the cluster "
            f"and this task), e.g. TF_CONFIG='{_EXAMPLE}'"
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ClusterConfigError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}") from None
    cluster = value.get("cluster") if isinstance(value, dict) else None
    task = value.get("task") if isinstance(value, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ClusterConfigError(
            f"TF_CONFIG needs a 'cluster' and a 'task' object, e.g. {_EXAMPLE}; got {raw!r}"
        )
    for job, hosts in cluster.items():
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
            raise ClusterConfigError(
                f"TF_CONFIG cluster job {job!r} must be a non-empty list of 'host:port' "
                f"strings, got {hosts!r}"
            )
    allowed = {"chief", "worker"} if strategy == MULTI_WORKER else {"chief", "worker", "ps"}
    unknown = set(cluster) - allowed
    if unknown:
        raise ClusterConfigError(
            f"TF_CONFIG cluster has jobs {sorted(unknown)}; --strategy={strategy} uses "
            f"{sorted(allowed)}"
        )
    if "worker" not in cluster and strategy == MULTI_WORKER and "chief" not in cluster:
        raise ClusterConfigError(f"TF_CONFIG cluster lists no 'worker' job: {raw!r}")
    if len(cluster.get("chief", [])) > 1:
        raise ClusterConfigError(f"TF_CONFIG cluster has more than one chief: {raw!r}")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in cluster:
        raise ClusterConfigError(
            f"TF_CONFIG task type {task_type!r} is not a job of the cluster {sorted(cluster)}"
        )
    if not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise ClusterConfigError(
            f"TF_CONFIG task index {index!r} is out of range for the "
            f"{len(cluster[task_type])} {task_type!r} task(s)"
        )
    return value


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy ``--strategy=name`` selects. Create it first thing in the
    program: MultiWorkerMirroredStrategy starts this task's server and must
    exist before TensorFlow runs any operation."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == MIRRORED:
        return tf.distribute.MirroredStrategy(local_devices())
    if name == MULTI_WORKER:
        tf_config(name)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == PARAMETER_SERVER:
        raise ClusterConfigError(
            PARAMETER_SERVER_UNSUPPORTED.format(
                detail="with a variable partitioner the embedding tables become "
                "ShardedVariables inside Keras variables; tape.gradient(loss, "
                'model.trainable_variables) then fails with "AttributeError: '
                "'ShardedVariable' object has no attribute 'handle'\", and the lazy Adam "
                "optimizer does not take sharded variables."
            )
        )
    raise ClusterConfigError(f"--strategy={name!r}; choose one of {', '.join(STRATEGIES)}")


def local_devices() -> list[str]:
    """The devices ``mirrored`` uses: every GPU of this host, or with none, every
    logical CPU device (one unless ``tf.config.set_logical_device_configuration``
    split the CPU, as the tests do)."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def _cluster(strategy: tf.distribute.Strategy) -> tuple[dict, str | None, int | None]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return {}, None, None
    return resolver.cluster_spec().as_dict(), resolver.task_type, resolver.task_id


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Worker processes that train (1 on one machine)."""
    cluster, _, _ = _cluster(strategy)
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def task_name(strategy: tf.distribute.Strategy) -> str:
    """``"worker 1"``, ``"chief 0"``; ``""`` on one machine."""
    cluster, task_type, task_id = _cluster(strategy)
    return f"{task_type} {task_id}" if cluster and task_type else ""


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the task that writes: the chief, or worker 0 when the cluster
    has no chief (and the only process on one machine)."""
    cluster, task_type, task_id = _cluster(strategy)
    if not cluster or task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def check_train_sharding(strategy: tf.distribute.Strategy, files: list[str], batch: int) -> None:
    """Clear errors before any collective starts: every worker needs at least
    one train file, and the global batch must split evenly over the replicas."""
    workers = num_workers(strategy)
    if len(files) < workers:
        raise ClusterConfigError(
            f"{len(files)} train files for {workers} workers: each worker reads whole files; "
            f"convert with --num_shards >= {workers} (a multiple of it balances the work)"
        )
    replicas = strategy.num_replicas_in_sync
    if batch % replicas:
        raise ClusterConfigError(
            f"--batch_size={batch} is the global batch (impressions) and must be a multiple of "
            f"the {replicas} replicas"
        )
    if not is_multi_worker(strategy):
        return
    local = len(strategy.extended.worker_devices)
    if local != 1:
        raise ClusterConfigError(
            f"this worker has {local} devices; run one worker process per device (the "
            "train step takes one replica's batch per process)"
        )


def distributed_batches(strategy: tf.distribute.Strategy, make_dataset):
    """``strategy.distribute_datasets_from_function`` with
    ``make_dataset(num_shards, shard_index, per_replica_batch)`` building one
    input pipeline's dataset; iterating yields this process's (local) batch."""

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(context.num_input_pipelines, context.input_pipeline_id, context)

    return strategy.distribute_datasets_from_function(dataset_fn)


def local_replicas(strategy: tf.distribute.Strategy) -> int:
    """Replicas (devices) of this process: 1 except under ``mirrored``."""
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return 1  # the default strategy has no worker_devices
    try:
        return len(strategy.extended.worker_devices)
    except RuntimeError:
        return 1


def local_value(strategy: tf.distribute.Strategy, structure):
    """The one local replica's value of each (per-replica) tensor; an error
    when this process has several replicas (``mirrored``), whose values are
    different batches (``concat_local_replicas``, or pass them to
    ``strategy.run`` as they are)."""

    def one(value):
        parts = strategy.experimental_local_results(value)
        if len(parts) != 1:
            raise ValueError(
                f"this process has {len(parts)} replicas; local_value would keep only the "
                "first one's batch"
            )
        return parts[0]

    return tf.nest.map_structure(one, structure)


def concat_local_replicas(strategy: tf.distribute.Strategy, structure):
    """Each per-replica tensor's local values concatenated along axis 0: the
    per-impression labels or outputs of this process's whole batch (under
    ``mirrored``, every replica's part; with one replica, that replica's)."""

    def concat(value):
        parts = strategy.experimental_local_results(value)
        return parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)

    return tf.nest.map_structure(concat, structure)


def sum_local_replicas(strategy: tf.distribute.Strategy, structure):
    """Each per-replica scalar summed over this process's replicas: the replicas'
    losses are shares of the global batch's mean (esmm_tf/objectives.py), so
    their sum is the batch's loss."""
    return tf.nest.map_structure(
        lambda v: tf.add_n(
            [tf.convert_to_tensor(x) for x in strategy.experimental_local_results(v)]
        ),
        structure,
    )


def sum_over_workers(strategy: tf.distribute.Strategy):
    """A function summing a structure of local scalars over all replicas (a
    collective every worker must call at the same point); the identity on one
    machine."""
    if strategy.num_replicas_in_sync == 1:
        return lambda structure: structure

    def replica_fn(structure):
        # identity: on the replica's device (all_reduce of a function input has none).
        structure = tf.nest.map_structure(tf.identity, structure)
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, structure)

    @tf.function
    def summed(structure):
        return strategy.run(replica_fn, args=(structure,))

    def first(value):  # after the all-reduce every replica holds the same sum
        return strategy.experimental_local_results(value)[0]

    return lambda structure: tf.nest.map_structure(first, summed(structure))
