"""benchmarks/RESULTS.md: each benchmark owns a section between its markers;
and what several benchmarks measure the same way (a directory's bytes, a
run's training throughput)."""

from __future__ import annotations

import os
import statistics

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def write_section(begin: str, end: str, text: str, heading: str = "") -> None:
    """Replaces the text between ``begin`` and ``end`` (or appends the section,
    under ``heading``), writing the file atomically."""
    content = ""
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            content = f.read()
    block = f"{begin}\n{text}\n{end}"
    if begin in content:
        head, rest = content.split(begin, 1)
        content = head + block + rest.split(end, 1)[1]
    else:
        prefix = content.rstrip("\n") + "\n\n" if content else ""
        content = prefix + (heading + "\n" if heading else "") + block + "\n"
    with open(RESULTS + ".tmp", "w") as f:
        f.write(content)
    os.replace(RESULTS + ".tmp", RESULTS)


def dir_bytes(path: str) -> int:
    """Bytes of the files under ``path`` (0 if it does not exist)."""
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def median_train_rate(model_dir: str) -> float:
    """The median of a run's TensorBoard ``impressions_per_second`` points
    (training time only), the first left out: its window includes tracing."""
    import tensorflow as tf

    from esmm_tf import run_dir

    rates = []
    events = run_dir.events_dir(model_dir, run_dir.TRAIN_EVENTS)
    for name in sorted(n for n in os.listdir(events) if n.startswith("events.out.tfevents.")):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(events, name)):
            for value in event.summary.value:
                if value.tag == "impressions_per_second":
                    rates.append(float(tf.make_ndarray(value.tensor)))
    return statistics.median(rates[1:] or rates)
