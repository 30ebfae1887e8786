"""Measurement 7: where a train step's time goes, from the TensorFlow profiler's trace."""

from __future__ import annotations

import os
import shutil
import tempfile

from benchmarks.train_bench.steps import tf_module, time_steps

# Op type -> category of the step's time breakdown (first match; else "other").
OP_CATEGORIES = (
    ("matmul (towers, fwd + bwd)", ("MatMul",)),
    ("segment sums (pooling, its grads, Adam dedup)", ("SegmentSum",)),
    ("gathers (embedding rows, group broadcast, Adam slot reads)", ("Gather",)),
    ("hash-table lookups (raw id -> row)", ("LookupTable",)),
    ("lazy-Adam unique + scatter updates", ("Unique", "Scatter")),
)
OTHER = "other ops (elementwise, bias/ReLU grads, concat/split, loss, dense Adam)"
IDLE = "no op running (Python, dispatch, waiting on the loss)"


def _category(op_type: str) -> str:
    for name, keys in OP_CATEGORIES:
        if any(k in op_type for k in keys):
            return name
    return OTHER


def profile_steps(train_step, batches: list, steps: int, logdir: str) -> None:
    """``steps`` train steps on ready batches under the TensorFlow profiler."""
    tf = tf_module()
    time_steps(train_step, batches, 0, 5)
    tf.profiler.experimental.start(logdir)
    try:
        time_steps(train_step, batches, 0, steps)
    finally:
        tf.profiler.experimental.stop()


def op_breakdown(logdir: str, steps: int) -> dict:
    """Wall time per step by op category, from the profiler's XPlane: each
    interval of the trace is split evenly between the ops running in it (the
    executor runs up to one op per inter-op thread), so the categories and
    the time when no op runs add up to the traced span."""
    import glob

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    events = []  # (start ps, end ps, category, op type)
    for line in plane.lines:
        if not line.name.startswith("tf_Compute"):
            continue
        for e in line.events:
            name = plane.event_metadata[e.metadata_id].name  # "op name:op type"
            if ":" not in name or name.startswith("ThreadpoolListener"):
                continue
            op_type = name.rsplit(":", 1)[1]
            if op_type == "Process":  # the executor's wrapper around ops
                continue
            start = line.timestamp_ns * 1000 + e.offset_ps
            events.append((start, start + e.duration_ps, _category(op_type), op_type))
    points = sorted(
        [(a, 1, i) for i, (a, _, _, _) in enumerate(events)]
        + [(b, -1, i) for i, (_, b, _, _) in enumerate(events)]
    )
    share: dict[str, float] = {}
    by_type: dict[str, float] = {}
    count: dict[str, int] = {}
    for _, _, _, op_type in events:
        count[op_type] = count.get(op_type, 0) + 1
    active: set[int] = set()
    idle = 0.0
    last = points[0][0]
    for t, kind, i in points:
        if active:
            dt = (t - last) / len(active)
            for j in active:
                share[events[j][2]] = share.get(events[j][2], 0.0) + dt
                by_type[events[j][3]] = by_type.get(events[j][3], 0.0) + dt
        else:
            idle += t - last
        last = t
        if kind == 1:
            active.add(i)
        else:
            active.discard(i)
    ms = 1e9 * steps  # ps -> ms per step
    span = (points[-1][0] - points[0][0]) / ms
    categories = {name: share.get(name, 0.0) / ms for name, _ in OP_CATEGORIES}
    categories[OTHER] = share.get(OTHER, 0.0) / ms
    categories[IDLE] = idle / ms
    top = sorted(by_type.items(), key=lambda kv: -kv[1])[:12]
    return {
        "span_ms": span,
        "categories": categories,
        "top_types": [(t, v / ms, count[t] / steps) for t, v in top],
        "ops_per_step": len(events) / steps,
        "steps": steps,
    }


def measure_profile(train_step, batches: list, profile_dir: str, steps: int) -> dict:
    """``op_breakdown`` of ``steps`` profiled steps; the trace is kept in ``profile_dir``
    when given."""
    logdir = profile_dir or tempfile.mkdtemp(prefix="esmm_train_profile_")
    try:
        profile_steps(train_step, batches, steps, logdir)
        out = op_breakdown(logdir, steps)
    finally:
        if not profile_dir:
            shutil.rmtree(logdir, ignore_errors=True)
    out["logdir"] = profile_dir
    return out
