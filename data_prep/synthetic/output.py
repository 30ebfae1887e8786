"""Output files under temporary names, renamed into place when everything is written."""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from typing import Any

from data_prep.synthetic.config import CONFIG_FILE


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
        if os.path.exists(final_config):  # an old config must not vouch for a mix
            os.remove(final_config)
        for name in self._names:
            os.replace(self._tmp(name), os.path.join(self._dir, name))
        os.replace(self._tmp(CONFIG_FILE), final_config)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
