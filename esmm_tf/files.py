"""Atomic writes of small local files: the text goes to a temporary name in the
same directory and is renamed over the target when complete, so a reader (or
a rerun after a crash) sees the old file or the new one, never a part.

Beam's outputs, on any filesystem, are written by ``data_prep/beam`` through
Beam's ``FileSystems`` instead."""

from __future__ import annotations

import json
import os


def write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (creating its directory)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    """``obj`` as indented JSON with sorted keys and a final newline, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
