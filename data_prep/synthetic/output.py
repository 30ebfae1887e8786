"""Output files under temporary names, renamed into place when everything is written.

A data file ``NAME`` is written as ``.NAME.<pid>.tmp``; a killed run's (its
process gone) are removed by the next run (``remove_stale_tmp``). Renaming
into place starts by writing ``COMMIT_MARKER`` and ends by removing it, so a
directory this generator wrote is recognised (``foreign_raw_files``) even when
a kill interrupted the renames: it has ``synthetic_config.json`` or the marker.
"""

from __future__ import annotations

import gzip
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from data_prep.synthetic.config import CONFIG_FILE, file_names
from esmm_tf.files import pid_alive

COMMIT_MARKER = ".synthetic_commit"
_TMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")


def _all_names() -> list[str]:
    """Every file name the generator may write (either compression)."""
    return [*file_names(False), *file_names(True), CONFIG_FILE]


def foreign_raw_files(out_dir: str) -> list[str]:
    """The raw log files in ``out_dir`` that a run would replace although this
    generator did not write them (e.g. a real Tianchi download): none when
    ``out_dir`` has ``synthetic_config.json`` or ``COMMIT_MARKER``."""
    if not os.path.isdir(out_dir):
        return []
    if any(os.path.lexists(os.path.join(out_dir, n)) for n in (CONFIG_FILE, COMMIT_MARKER)):
        return []
    return [n for n in _all_names() if os.path.lexists(os.path.join(out_dir, n))]


def remove_stale_tmp(out_dir: str) -> list[str]:
    """Removes the temporary files that killed runs left in ``out_dir`` (their
    process is gone; a running generator's are kept); returns their names."""
    names = set(_all_names())
    removed = []
    for entry in sorted(os.listdir(out_dir)):
        match = _TMP.fullmatch(entry)
        if match and match["name"] in names and not pid_alive(int(match["pid"])):
            path = os.path.join(out_dir, entry)
            if os.path.isfile(path) or os.path.islink(path):
                os.remove(path)
                removed.append(entry)
    if removed:
        print(
            f"synthetic: removed {', '.join(removed)} from {out_dir}, left by a killed run",
            file=sys.stderr,
            flush=True,
        )
    return removed


class AtomicOutput:
    def __init__(self, out_dir: str, names: Sequence[str], gzip_level: int | None):
        self._dir = out_dir
        self._names = list(names)
        self._gzip_level = gzip_level
        self._raw: dict[str, Any] = {}
        self._files: dict[str, Any] = {}

    def _tmp(self, name: str) -> str:
        return os.path.join(self._dir, f".{name}.{os.getpid()}.tmp")

    def __enter__(self) -> AtomicOutput:
        try:
            for name in self._names:
                raw = self._raw[name] = open(self._tmp(name), "wb", buffering=1 << 20)  # noqa: SIM115
                self._files[name] = raw
                if self._gzip_level is not None:  # no name or time in the header: reproducible
                    self._files[name] = gzip.GzipFile(
                        filename="", mode="wb", fileobj=raw, compresslevel=self._gzip_level, mtime=0
                    )
        except BaseException:
            self._abort()
            raise
        return self

    def write(self, name: str, data) -> None:
        self._files[name].write(data)

    def _close(self) -> None:
        for name in self._names:
            for files in (self._files, self._raw):
                f = files.pop(name, None)
                if f is not None:
                    f.close()

    def _abort(self) -> None:
        try:
            self._close()
        finally:
            for name in [*self._names, CONFIG_FILE]:
                if os.path.exists(self._tmp(name)):
                    os.remove(self._tmp(name))

    def commit(self, config_text: str) -> None:
        """Renames the data files into place, then writes the config file last."""
        self._close()
        with open(self._tmp(CONFIG_FILE), "w") as f:
            f.write(config_text)
        final_config = os.path.join(self._dir, CONFIG_FILE)
        marker = os.path.join(self._dir, COMMIT_MARKER)
        with open(marker, "w"):  # the directory stays ours while it has no config
            pass
        if os.path.exists(final_config):  # an old config must not vouch for a mix
            os.remove(final_config)
        for name in self._names:
            os.replace(self._tmp(name), os.path.join(self._dir, name))
        os.replace(self._tmp(CONFIG_FILE), final_config)
        os.remove(marker)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
