"""Shared set-up of the command-line entry points."""

from __future__ import annotations

import os


def quiet_tensorflow() -> None:
    """Hides TensorFlow's C++ and Python INFO/WARNING chatter (errors still
    show). Call before TensorFlow is imported; child processes inherit it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    logging.set_verbosity(logging.ERROR)
