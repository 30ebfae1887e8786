"""Shared set-up of the command-line entry points: quiet start-up by default,
``--verbosity`` (absl's flag; ``-v``) to bring the libraries' logs back.

What prints at start-up, and what silences it (TF 2.21, Beam 2.77):

* TensorFlow's C++ INFO/WARNING logs: ``TF_CPP_MIN_LOG_LEVEL``, read when the
  shared library loads, so it must be set before ``import tensorflow``;
* ``WARNING: All log messages before absl::InitializeLog() ...`` and
  ``oneDNN custom operations are on`` (twice, once per TF shared library):
  absl C++ logs written while TF loads, which ignore ``TF_CPP_MIN_LOG_LEVEL``;
  the only switch is ``TF_ENABLE_ONEDNN_OPTS=0``, which changes the kernels.
  So they are dropped from file descriptor 2 while TensorFlow loads
  (``filtered_stderr``), and nothing else is;
* the GPU build (``tensorflow``) on a host without a GPU: ``Could not find
  cuda drivers`` at import, ``failed call to cuInit`` at the first device
  query; dropped the same way (the latter only where no NVIDIA driver is
  loaded, so a broken driver on a GPU host still shows);
* Beam's SDK workers (one process each) log INFO lines to the inherited
  stderr: ``--default_sdk_harness_log_level`` quiets most, ``filtered_stderr``
  around the pipeline the start-up lines they print before reading it.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import threading

# absl's verbosity: 1 DEBUG, 0 INFO, -1 WARNING, -2 ERROR, -3 FATAL.
QUIET_VERBOSITY = -2

# Lines dropped from stderr when the verbosity is below INFO (all are INFO
# chatter or warnings about optional parts nobody here uses).
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on"
    r"|INFO:(__main__|root|apache_beam[\w.]*):"
    r"|WARNING:root:apitools not found"
    r"|WARNING:apache_beam.options.pipeline_options:Discarding unparseable args: "
    r"\['--direct_runner_use_stacked_bundle', '--pipeline_type_check'\]"
    r"|[IW]\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers)"
)
# The GPU build of TensorFlow on a host without an NVIDIA driver: an error-level
# line on the first device query. Dropped only where there is no NVIDIA driver,
# so that a broken driver on a GPU host still shows.
NO_GPU_NOISE = re.compile(r"^E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit")


def _start_up_noise() -> re.Pattern:
    if os.path.exists("/proc/driver/nvidia"):
        return NOISE
    return re.compile(f"{NOISE.pattern}|{NO_GPU_NOISE.pattern}")


def verbosity_from_argv(argv: list[str]) -> int | None:
    """The value of ``--verbosity``/``-v`` on a command line, or None.

    Read before the flags are parsed, because TensorFlow's log level must be
    set before TensorFlow loads."""
    value = None
    for i, arg in enumerate(argv):
        for name in ("--verbosity", "-verbosity", "-v", "--v"):
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg[len(name) + 1 :]
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None  # absl's flag parser reports it


def python_level(verbosity: int) -> int:
    """The ``logging`` level of an absl verbosity (0 INFO, -1 WARNING, ...)."""
    if verbosity >= 1:
        return logging.DEBUG
    return {0: logging.INFO, -1: logging.WARNING, -2: logging.ERROR}.get(
        verbosity, logging.CRITICAL
    )


@contextlib.contextmanager
def python_log_level(level: int, name: str = ""):
    """Sets the ``logging`` logger ``name`` (default: root) to ``level`` while
    the block runs."""
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def tf_cpp_min_log_level(verbosity: int) -> str:
    """TF_CPP_MIN_LOG_LEVEL for an absl verbosity (0 shows INFO ... 3 FATAL only)."""
    return str(min(3, max(0, -verbosity)))


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern = NOISE):
    """Drops lines matching ``noise`` from file descriptor 2 (so from C++
    libraries and child processes too) while the block runs; every other line
    passes through as it is written."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()

    def forward() -> None:
        pending = b""
        while True:
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            out = b"".join(
                line + b"\n" for line in lines if not noise.search(line.decode("utf-8", "replace"))
            )
            if out:
                os.write(saved, out)
        if pending and not noise.search(pending.decode("utf-8", "replace")):
            os.write(saved, pending)

    thread = threading.Thread(target=forward, name="filtered_stderr", daemon=True)
    thread.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end held here
        thread.join(timeout=5)  # a child still holding the pipe keeps it open
        if not thread.is_alive():  # else the thread keeps forwarding to ``saved``
            os.close(saved)
            os.close(read_end)


class _QuietTensorflowImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs the first ``import tensorflow`` inside ``filtered_stderr``."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with filtered_stderr(_start_up_noise()):
            self._loader.exec_module(module)
            # The first device query loads the GPU platform, which logs too;
            # listing physical devices still allows logical device set-up later.
            module.config.list_physical_devices()


def quiet_tensorflow(argv: list[str] | None = None) -> int:
    """Quiet start-up unless ``--verbosity`` (``-v``) is on the command line.

    Call before TensorFlow is imported (child processes inherit the
    environment). Returns the verbosity in effect. ``--verbosity=0`` shows
    every INFO log (TensorFlow's C++ ones included), ``-1`` warnings, the
    default ``-2`` errors only."""
    argv = sys.argv if argv is None else argv
    verbosity = verbosity_from_argv(argv)
    if verbosity is None:
        verbosity = QUIET_VERBOSITY
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", tf_cpp_min_log_level(verbosity))
    else:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = tf_cpp_min_log_level(verbosity)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(verbosity)
    hooked = any(isinstance(f, _QuietTensorflowImport) for f in sys.meta_path)
    if verbosity < 0 and "tensorflow" not in sys.modules and not hooked:
        sys.meta_path.insert(0, _QuietTensorflowImport())
    return verbosity


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


def no_arguments(argv: list[str]) -> None:
    """Ends the command with one ``error:`` line (not absl's page of usage)
    when it was given words that are not flags (``argv[1:]``)."""
    if len(argv) > 1:
        print(
            f"error: unexpected arguments {argv[1:]}: every option is a flag, --name=value "
            "(--help lists them)",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
