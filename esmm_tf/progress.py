"""Progress of a long loop, readable in a terminal and in a log file.

On a terminal the reporter redraws one line in place (carriage return and
spaces, no ANSI escape codes); anywhere else (a file, a pipe, ``nohup``) it
prints a plain line every ``interval`` seconds, so a log holds a readable
history instead of control characters. Rates are integers (``imp/s: 63205``).

    progress = Progress("evaluate", total=500_000, unit="imp")
    for batch in batches:
        ...
        progress.update(done, loss=0.1234)
    progress.close()

Time spent inside ``with progress.paused():`` (evaluation or checkpoints in a
training loop) counts neither in the rate nor in the ETA.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TextIO

TTY_INTERVAL = 0.5  # seconds between redraws on a terminal
LOG_INTERVAL = 15.0  # seconds between lines in a log file


def format_duration(seconds: float) -> str:
    """``1:02:03`` / ``2:03``: whole seconds, hours only when needed."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """Reports ``done`` out of ``total`` units, the rate and the ETA.

    Args:
      label: what is progressing (``"evaluate"``, ``"train"``), leads each line.
      total: the expected number of units, or None when unknown (no ETA).
      unit: the unit's short name (``"imp"`` gives ``imp/s``).
      stream: where to write (default: stderr, so stdout keeps the results).
      interval: seconds between outputs (default: 0.5 on a terminal, 15 in a
        log file).
      enabled: False makes every call a no-op (non-chief workers).
      clock: seconds as a float (tests pass a fake one).
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "imp",
        stream: TextIO | None = None,
        interval: float | None = None,
        enabled: bool = True,
        clock=time.monotonic,
    ) -> None:
        self.label = label
        self.total = total if total and total > 0 else None
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = (
            interval if interval is not None else (TTY_INTERVAL if self.tty else LOG_INTERVAL)
        )
        self.enabled = enabled
        self.clock = clock
        self.start = clock()
        self.paused_seconds = 0.0
        self.done = 0
        self.start_done = 0
        self.values: dict = {}
        self._last_output = self.start
        self._line_width = 0
        self._closed = False

    def restart_from(self, done: int) -> None:
        """Starts counting the rate from ``done`` (e.g. a resumed training run)."""
        self.done = self.start_done = done
        self.start = self._last_output = self.clock()
        self.paused_seconds = 0.0

    @property
    def elapsed(self) -> float:
        """Seconds of work so far (paused time left out)."""
        return max(self.clock() - self.start - self.paused_seconds, 0.0)

    @property
    def rate(self) -> float:
        """Units per second of work since the start."""
        elapsed = self.elapsed
        return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    @contextlib.contextmanager
    def paused(self):
        """Time spent in this block counts neither in the rate nor in the ETA.
        On a terminal the progress line is ended first, so what the block
        prints starts on a line of its own."""
        self.end_line()
        begin = self.clock()
        try:
            yield
        finally:
            self.paused_seconds += self.clock() - begin

    def update(self, done: int, **values) -> None:
        """Records ``done`` units so far (absolute, not an increment) and extra
        ``values`` to show (``loss=0.1234``); writes if ``interval`` has passed."""
        self.done = int(done)
        self.values.update(values)
        now = self.clock()
        if self.enabled and now - self._last_output >= self.interval:
            self._last_output = now
            self._write(self.line())

    def add(self, count: int, **values) -> None:
        """``update(done + count)``."""
        self.update(self.done + int(count), **values)

    def line(self, final: bool = False) -> str:
        """The current progress line (no newline, no control characters)."""
        parts = []
        if self.total:
            percent = min(100.0, 100.0 * self.done / self.total)
            parts.append(f"{self.done:,}/{self.total:,} {self.unit} ({percent:.0f}%)")
        else:
            parts.append(f"{self.done:,} {self.unit}")
        parts.append(f"{self.unit}/s: {self.rate:.0f}")
        if final:
            parts.append(f"in {format_duration(self.elapsed)}")
        elif self.total and self.rate > 0:
            remaining = max(self.total - self.done, 0) / self.rate
            parts.append(f"ETA {format_duration(remaining)}")
        parts += [f"{k}: {_value(v)}" for k, v in self.values.items()]
        return f"{self.label}: " + "  ".join(parts)

    def close(self) -> None:
        """Writes the final line (totals and time taken) and ends the line."""
        if self._closed or not self.enabled:
            self._closed = True
            return
        self._closed = True
        self._write(self.line(final=True))
        self.end_line()

    def end_line(self) -> None:
        """On a terminal, moves past the line being redrawn (if any)."""
        if self.tty and self._line_width:
            self.stream.write("\n")
            self.stream.flush()
            self._line_width = 0

    def _write(self, line: str) -> None:
        if self.tty:
            padding = " " * max(self._line_width - len(line), 0)
            self._line_width = len(line)
            self.stream.write("\r" + line + padding)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
