"""esmm_tf.progress: plain lines in a log file, a redrawn line on a terminal."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from esmm_tf import evaluator
from esmm_tf import features as F
from esmm_tf.progress import Progress, format_duration

ESCAPE = re.compile(r"\x1b|\x9b")  # ESC or CSI: the start of any ANSI sequence


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_file_gets_plain_lines_with_integer_rates_every_interval():
    clock, out = Clock(), io.StringIO()
    progress = Progress("evaluate", total=1_000_000, stream=out, interval=10, clock=clock)
    for second in range(1, 31):  # 30 s at 33,333.3 impressions/s
        clock.now += 1
        progress.update(int(second * 100_000 / 3), loss=0.123456)
    progress.close()
    text = out.getvalue()
    assert not ESCAPE.search(text)
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 4  # at 10, 20, 30 s, then the final line
    assert lines[0] == "evaluate: 333,333/1,000,000 imp (33%)  imp/s: 33333  ETA 0:20  loss: 0.1235"
    for line in lines:
        rate = re.search(r"imp/s: (\S+)", line).group(1)
        assert rate.isdigit(), line
    assert lines[-1].endswith("in 0:30  loss: 0.1235")
    assert "1,000,000/1,000,000 imp (100%)" in lines[-1]


def test_unknown_total_has_no_eta():
    clock, out = Clock(), io.StringIO()
    progress = Progress("predict", stream=out, interval=0, clock=clock)
    clock.now += 2
    progress.update(5000)
    assert out.getvalue() == "predict: 5,000 imp  imp/s: 2500\n"


def test_paused_time_counts_neither_in_rate_nor_eta():
    clock, out = Clock(), io.StringIO()
    progress = Progress("train", total=4000, stream=out, interval=1e9, clock=clock)
    clock.now += 1
    progress.update(1000)
    with progress.paused():
        clock.now += 100  # an evaluation
    clock.now += 1
    progress.update(2000)
    assert progress.rate == pytest.approx(1000)
    assert "imp/s: 1000  ETA 0:02" in progress.line()


def test_terminal_redraws_one_line_without_escape_codes():
    clock, out = Clock(), Terminal()
    progress = Progress("evaluate", total=100, stream=out, interval=0, clock=clock)
    for done in (10, 50, 100):
        clock.now += 1
        progress.update(done)
    progress.close()
    text = out.getvalue()
    assert not ESCAPE.search(text)
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1


def test_disabled_writes_nothing():
    out = io.StringIO()
    progress = Progress("x", total=10, stream=out, interval=0, enabled=False)
    progress.update(5)
    progress.close()
    assert out.getvalue() == ""


def test_format_duration():
    assert format_duration(59.6) == "1:00"
    assert format_duration(3725) == "1:02:05"


def test_evaluate_reports_impressions_to_the_progress():
    n = 600
    rng = np.random.default_rng(0)
    labels = {F.CLICK: (rng.random(n) < 0.3).astype(np.float32)}
    labels[F.CONVERSION] = labels[F.CLICK] * (rng.random(n) < 0.5)
    outputs = {k: rng.uniform(0.01, 0.99, n).astype(np.float32) for k in F.OUTPUT_KEYS}
    batches = [
        ({"row": np.arange(lo, lo + 200)}, {k: v[lo : lo + 200] for k, v in labels.items()})
        for lo in (0, 200, 400)
    ]

    class Array:  # what evaluate expects of a tensor: .numpy()
        def __init__(self, value):
            self.value = value

        def numpy(self):
            return self.value

    batches = [
        (inputs, {k: Array(v) for k, v in batch_labels.items()}) for inputs, batch_labels in batches
    ]

    def predict(inputs):
        return {k: Array(v[inputs["row"]]) for k, v in outputs.items()}

    out = io.StringIO()
    progress = Progress("evaluate test", total=n, stream=out, interval=0)
    evaluator.evaluate(None, batches, predict, progress=progress)
    lines = out.getvalue().splitlines()
    assert [re.search(r"([\d,]+)/600", line).group(1) for line in lines] == [
        "200",
        "400",
        "600",
        "600",
    ]
    assert "(100%)" in lines[-1]
