"""Measurements 1-3 and 5: input pipeline, training, the matmul ceiling, evaluation."""

from __future__ import annotations

import time

from benchmarks.train_bench.config import BATCH
from benchmarks.train_bench.steps import impressions_of, run_steps, tf_module, time_steps, trainer


def measure_input(data_dir: str) -> dict:
    from esmm_tf import data_layout, input_pipeline

    files = data_layout.shard_files(data_dir, "train")
    ds = input_pipeline.make_dataset(files, BATCH, shuffle=True)
    impressions = batches = 0
    t0 = time.perf_counter()
    for inputs, _ in ds:
        impressions += int(inputs["group_index"].shape[0])
        batches += 1
    seconds = time.perf_counter() - t0
    return {"impressions": impressions, "batches": batches, "seconds": seconds}


def measure_parse_cpu(data_dir: str, n: int = 64) -> dict:
    """CPU ms per 32-record batch of ``tf.io.parse_example`` alone and of the
    whole parse function (parse + conversion to the flat model inputs), run
    one batch at a time on already-read records."""
    tf = tf_module()
    from esmm_tf import data_layout, input_pipeline

    files = data_layout.shard_files(data_dir, "train")
    records = list(tf.data.TFRecordDataset(files).batch(32).take(n))
    spec = input_pipeline.grouped_spec(False)
    fns = {
        "parse_example": tf.function(lambda s: tf.io.parse_example(s, spec)),
        "parse_fn": tf.function(input_pipeline.make_parse_fn(False)),
    }
    out = {}
    for name, fn in fns.items():
        fn(records[0])
        c0 = time.process_time()
        for r in records:
            fn(r)  # eager calls of a tf.function run synchronously on CPU
        out[name] = 1000 * (time.process_time() - c0) / len(records)
    return out


def measure_training(config, batches: list, steps: int, warmup: int) -> tuple[dict, object]:
    from esmm_tf import data_layout, input_pipeline, training_run

    model, _, train_step = trainer(config)
    files = data_layout.shard_files(config.data_dir, "train")
    out = {}

    # (a) the real loop: shuffled dataset, sync on the loss each step.
    def dataset(seed):
        return iter(input_pipeline.make_dataset(files, config.batch_size, shuffle=True, seed=seed))

    it = dataset(0)
    run_steps(train_step, it, warmup)
    seconds, impressions = run_steps(train_step, it, steps)
    out["dataset"] = {"seconds": seconds, "impressions": impressions}

    # (b) the same plus the trainer's per-step bookkeeping (train AUC window).
    it = dataset(1)
    for _ in range(warmup):
        next(it)
    seconds, impressions = run_steps(train_step, it, steps, training_run._TrainWindow())
    out["bookkeeping"] = {"seconds": seconds, "impressions": impressions}

    # (c) pure compute: pre-materialised batches.
    time_steps(train_step, batches, 0, warmup)
    seconds, impressions = time_steps(train_step, batches, warmup, steps)
    out["materialised"] = {"seconds": seconds, "impressions": impressions}
    return out, model, train_step


TOWER = (414, 200, 80, 1)
PARTS_BATCHES = 200


def flops_per_impression(dims=TOWER) -> int:
    """3 matmuls per layer (fwd, grad wrt input, grad wrt weights) x 2 towers x
    2 FLOPs per multiply-add x sum of in*out."""
    return 3 * 2 * 2 * sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=False))


def measure_ceiling(batch: int = 1024, seconds: float = 3.0) -> dict:
    tf = tf_module()
    g = tf.random.Generator.from_seed(0)
    x = g.normal([batch, TOWER[0]])
    weights = [
        [g.normal([a, b]) for a, b in zip(TOWER[:-1], TOWER[1:], strict=False)] for _ in range(2)
    ]

    @tf.function
    def fwd_bwd(x):
        out = []
        for tower in weights:
            acts = [x]
            h = x
            for w in tower:
                h = tf.matmul(h, w)
                acts.append(h)
            grad = h  # stands in for dL/dlogit, [B, 1]
            for layer in reversed(range(len(tower))):
                out.append(tf.matmul(acts[layer], grad, transpose_a=True))  # dW
                grad = tf.matmul(grad, tower[layer], transpose_b=True)  # dX
            out.append(grad)
        return out

    for _ in range(5):
        [t.numpy() for t in fwd_bwd(x)]
    reps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            res = fwd_bwd(x)
        [t.numpy() for t in res]
        reps += 10
    elapsed = time.perf_counter() - t0
    flops = flops_per_impression() * batch * reps
    return {"gflops": flops / elapsed / 1e9, "reps": reps, "seconds": elapsed, "batch": batch}


def measure_eval(model, config, max_batches: int) -> dict:
    from esmm_tf import evaluator, training_run

    predict = evaluator.predict_function(model)
    ds = training_run.eval_dataset(config)
    if max_batches:
        ds = ds.take(max_batches)
    metrics = evaluator.evaluate(model, ds, predict)
    out = {
        "impressions": metrics["impressions"],
        "seconds": metrics["seconds"],
        "ctr_auc": metrics["ctr_auc"],
    }
    # Breakdown on the first batches: the eval dataset alone, then + predict.
    head = training_run.eval_dataset(config).take(PARTS_BATCHES)
    for name, run_predict in (("eval_input", False), ("eval_predict", True)):
        impressions = 0
        t0 = time.perf_counter()
        for inputs, labels in head:
            if run_predict:
                outputs = predict(inputs)
                {k: v.numpy() for k, v in outputs.items()}
                {k: v.numpy() for k, v in labels.items()}
            impressions += int(inputs["group_index"].shape[0])
        out[name] = {"impressions": impressions, "seconds": time.perf_counter() - t0}
    return out


def executed_flops(batches: list, dims=TOWER, user_width: int | None = None) -> float:
    """Tower FLOPs per impression the model executes on ``batches``: the first
    layer's user-side columns are multiplied once per group (see
    esmm_tf.towers.Tower), the rest per impression."""
    from esmm_tf import features as F

    if user_width is None:
        user_width = 18 * len(F.USER_FIELDS)
    impressions = sum(impressions_of(b) for b in batches)
    groups = sum(int(b[0][F.GROUP_INDEX].numpy().max()) + 1 for b in batches)
    rest = sum(a * b for a, b in zip(dims[1:-1], dims[2:], strict=False))
    macs = impressions * ((dims[0] - user_width) * dims[1] + rest) + groups * user_width * dims[1]
    return 3 * 2 * 2 * macs / impressions
