"""Shared set-up of the command-line entry points."""

from __future__ import annotations

import contextlib
import errno
import os
import sys


def quiet_tensorflow() -> None:
    """Hides TensorFlow's C++ and Python INFO/WARNING chatter (errors still
    show). Call before TensorFlow is imported; child processes inherit it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    logging.set_verbosity(logging.ERROR)


# What to do about the OS errors a command may meet while writing its output.
_DISK_FULL = (
    "free space on that disk (or choose a directory on another one), then rerun the command"
)
_NOT_WRITABLE = "choose a directory you can write to (or make this one writable)"
_ADVICE = {
    errno.ENOSPC: _DISK_FULL,
    errno.EDQUOT: _DISK_FULL,
    errno.EROFS: _NOT_WRITABLE,
    errno.EACCES: _NOT_WRITABLE,
    errno.EPERM: _NOT_WRITABLE,
}
# The same conditions as TensorFlow's C++ file system reports them (an OpError's text).
_OS_MESSAGES = {
    "No space left on device": _DISK_FULL,
    "Disk quota exceeded": _DISK_FULL,
    "Read-only file system": _NOT_WRITABLE,
    "Permission denied": _NOT_WRITABLE,
}


def os_error_line(error: BaseException, where: str) -> str | None:
    """One line for a failed file operation: an OSError, or a TensorFlow error
    caused by one; None for anything else. ``where`` names the output (e.g.
    ``--model_dir=RUN``) when the error does not name a file."""
    if isinstance(error, OSError):
        path = error.filename or where
        text = error.strerror or str(error)
        advice = _ADVICE.get(error.errno)
        return f"{path}: {text}" + (f"; {advice}" if advice else "")
    message = getattr(error, "message", None)  # tf.errors.OpError, without importing TensorFlow
    if type(error).__module__.startswith("tensorflow") and isinstance(message, str):
        for condition, advice in _OS_MESSAGES.items():
            if condition in message:
                text = message.split("}}")[-1].split(" [Op:")[0].strip()
                return f"{text} (writing {where}); {advice}"
    return None


@contextlib.contextmanager
def one_line_errors(where: str, expected: tuple[type[BaseException], ...] = ()):
    """Turns the ``expected`` errors, and failed file operations (full disk,
    read-only or unwritable directory...), into one ``error:`` line on stderr
    and exit status 1; anything else is a bug and keeps its traceback."""
    try:
        yield
    except expected as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as e:
        line = os_error_line(e, where)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr, flush=True)
        sys.exit(1)
