"""Helpers shared by the tests (fixtures live in conftest.py): the repository
root, running the entry points as subprocesses, small training configs, and
reading and building records."""

from __future__ import annotations

import collections
import contextlib
import filecmp
import json
import os
import signal
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The test suite's environment for child processes: TensorFlow's C++ logs off.
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
# The user's environment (the entry points quiet TensorFlow themselves).
USER_ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

# ---------------------------------------------------------------- subprocesses


def run_module(
    args: list[str], timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python -m <args>`` in the repository root (``ENV`` by default),
    output captured as text; any exit status."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=ENV if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_ok(args: list[str], timeout: float = 600, env: dict | None = None):
    """``run_module`` that asserts the exit status is 0."""
    result = run_module(args, timeout, env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def start_module(args: list[str], env: dict | None = None, **popen_kwargs) -> subprocess.Popen:
    """``python -m <args>`` started in the repository root in a session of its
    own (so that ``kill_session`` kills it and its children, nothing else);
    stdout discarded and stderr piped as text unless ``popen_kwargs`` say
    otherwise."""
    kwargs = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    kwargs.update(popen_kwargs)
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=ENV if env is None else env,
        start_new_session=True,
        **kwargs,
    )


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL to the session ``start_module`` started, then reap it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# ---------------------------------------------------------------- configs


def dead_pid() -> int:
    """The pid of a process that has exited: what a killed run's temporaries carry."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(child.stdout)


@contextlib.contextmanager
def live_pid():
    """The pid of another process, alive for the duration of the block."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()


def make_tiny_config(data_dir: str, **overrides):
    """A small, fast, deterministic training config (the ``tiny_config``
    fixture's values)."""
    from esmm_tf.config import Config

    values = dict(
        data_dir=data_dir,
        embedding_dim=4,
        tower_units=(16, 8),
        batch_size=64,
        epochs=1,
        deterministic=True,
        checkpoint_every_steps=10,
        log_every_steps=5,
        seed=3,
    )
    values.update(overrides)
    return Config(**values)


def small_config(data_dir: str, **overrides):
    """A small model's config with the training defaults (for building models)."""
    from esmm_tf.config import Config

    values = dict(
        data_dir=data_dir,
        embedding_dim=4,
        tower_units=(16, 8),
        batch_size=64,
        deterministic=True,
        seed=3,
    )
    values.update(overrides)
    return Config(**values)


# ---------------------------------------------------------------- records


def read_records(data_dir: str, split: str = "train", n: int | None = None) -> list[bytes]:
    """The first ``n`` serialized records of the split's first shard."""
    import tensorflow as tf

    from esmm_tf import data_layout

    files = data_layout.shard_files(data_dir, split)
    ds = tf.data.TFRecordDataset(files[:1])
    if n is not None:
        ds = ds.take(n)
    return [r.numpy() for r in ds]


def ints(example, key: str) -> list[int]:
    feature = example.features.feature
    return list(feature[key].int64_list.value) if key in feature else []


def floats(example, key: str) -> list[float]:
    feature = example.features.feature
    return list(feature[key].float_list.value) if key in feature else []


def make_example(values: dict):
    """A tf.train.Example from {key: list of ints or floats}."""
    import tensorflow as tf

    example = tf.train.Example()
    for key, vals in values.items():
        vals = list(vals)
        feature = example.features.feature[key]
        if any(isinstance(v, float) for v in vals):
            feature.float_list.value.extend(vals)
        else:
            feature.int64_list.value.extend(vals)
    return example


def parse_grouped(records: list[bytes], with_ground_truth: bool = True):
    """(inputs, labels) numpy dicts of a batch of grouped records, parsed by
    the input pipeline."""
    import tensorflow as tf

    from esmm_tf import input_pipeline

    parse = input_pipeline.make_parse_fn(with_ground_truth)
    inputs, labels = parse(tf.constant(records))
    return {k: v.numpy() for k, v in inputs.items()}, {k: v.numpy() for k, v in labels.items()}


def parse_serving(examples: list[bytes]) -> dict:
    """Model inputs of per-impression serving requests."""
    import tensorflow as tf

    from esmm_tf import input_pipeline

    parsed = tf.io.parse_example(tf.constant(examples, tf.string), input_pipeline.serving_spec())
    return input_pipeline.serving_to_inputs(parsed)


def randomize_embeddings(model, seed: int = 0, scale: float = 1.0) -> None:
    """Replaces every embedding table by uniform(-scale, scale) values so that
    predictions differ clearly between impressions (the default +-0.05
    initialisation makes almost every prediction the same)."""
    from esmm_tf.embedding import FieldEmbeddings

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, FieldEmbeddings):
            var = layer.embeddings  # every field's table
            var.assign(rng.uniform(-scale, scale, size=var.shape).astype(np.float32))


# ---------------------------------------------------------------- converted datasets

BEAM_IN_MEMORY = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]


def beam_convert_dir(raw_dir, out_dir, pipeline_args=None, **kwargs) -> dict:
    """data_prep.beam_convert of ``raw_dir`` (DirectRunner in memory by default)."""
    from data_prep import beam_convert

    config = beam_convert.BeamConvertConfig(raw_dir=str(raw_dir), out_dir=str(out_dir), **kwargs)
    return beam_convert.convert(config, pipeline_args or BEAM_IN_MEMORY)


def record_counts(data_dir, split: str) -> collections.Counter:
    """The multiset of serialized records of a converted split."""
    import tensorflow as tf

    from esmm_tf import data_layout

    files = data_layout.shard_files(str(data_dir), split)
    return collections.Counter(r.numpy() for r in tf.data.TFRecordDataset(files))


def assert_same_dataset(a, b, same_fingerprint: bool = True) -> None:
    """Same shards (names and bytes), records, vocabularies and stats.json (timings
    live in convert_timings.json)."""
    from esmm_tf import data_layout
    from esmm_tf import features as F

    a, b = str(a), str(b)
    for split in data_layout.SPLITS:
        shards_a, shards_b = data_layout.shard_files(a, split), data_layout.shard_files(b, split)
        assert [os.path.basename(p) for p in shards_a] == [os.path.basename(p) for p in shards_b]
        # the same multiset of serialized examples...
        assert record_counts(a, split) == record_counts(b, split)
        for x, y in zip(shards_a, shards_b, strict=True):
            assert filecmp.cmp(x, y, shallow=False), (x, y)  # ...even in the same order
    for field in F.FIELDS:
        assert filecmp.cmp(
            data_layout.vocab_file(a, field.id), data_layout.vocab_file(b, field.id), shallow=False
        ), field.id
    with open(data_layout.stats_file(a)) as fa, open(data_layout.stats_file(b)) as fb:
        stats_a, stats_b = json.load(fa), json.load(fb)
    assert set(stats_a) == set(stats_b)
    if not same_fingerprint:
        del stats_a["fingerprint"], stats_b["fingerprint"]
    assert stats_a == stats_b
