"""Atomic writes of small local files: the text goes to a temporary name in the
same directory and is renamed over the target when complete, so a reader (or
a rerun after a crash) sees the old file or the new one, never a part.

Beam's outputs, on any filesystem, are written by ``data_prep/beam`` through
Beam's ``FileSystems`` instead."""

from __future__ import annotations

import json
import os
from collections.abc import Callable


def write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (creating its directory); on
    failure the temporary file is removed and ``path`` is untouched."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.isfile(tmp):
            os.remove(tmp)
        raise


def pid_alive(pid: int) -> bool:
    """Whether another process with this id runs, so that a temporary file or
    directory named after it may still be in use. Our own id is False: what
    carries it was left by an earlier process that had the same id (a
    container's PID 1), or by this one, which is not using it."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone; no process has such an id
        return False
    except PermissionError:  # another user's
        return True
    return True


def remove_stale_temporaries(prefix: str) -> list[str]:
    """Removes the files or directories ``<prefix><pid>`` (temporaries named
    by the writing process's pid) whose process is gone or is this one
    (``pid_alive``): what a killed earlier run left. Returns their paths."""
    import glob
    import shutil

    removed = []
    for path in sorted(glob.glob(glob.escape(prefix) + "[0-9]*")):
        pid = path[len(prefix) :]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.isfile(path):
            os.remove(path)
        removed.append(path)
    return removed


LOCK_FILE = "lock"
STALE_UNLOCKED_SECONDS = 24 * 3600  # a temporary directory of an earlier version


def locked_temp_dir(root: str, prefix: str):
    """(path, lock): a new directory ``root/<prefix><pid>_<random>`` holding a
    file locked (flock) for as long as ``lock`` stays open. Unlike a pid, the
    lock tells a live owner from a dead one in any process namespace (a
    container sharing TMPDIR, PID 1 in every run). The directory is created
    and locked under a hidden name, then renamed, so that
    ``remove_unlocked_dirs`` never sees it unlocked."""
    import fcntl
    import tempfile

    hidden = tempfile.mkdtemp(prefix=f".{prefix}{os.getpid()}_", dir=root)
    lock = open(os.path.join(hidden, LOCK_FILE), "a")  # noqa: SIM115 - held open
    fcntl.flock(lock, fcntl.LOCK_EX)
    path = os.path.join(root, os.path.basename(hidden)[1:])
    os.rename(hidden, path)
    return path, lock


def remove_unlocked_dirs(root: str, prefix: str) -> int:
    """Removes the ``locked_temp_dir`` directories under ``root`` whose lock
    is free (their process is gone: a kill skips every cleanup), hidden ones
    a kill left before their rename, and any unlocked one (an earlier
    version's) untouched for a day. Returns how many."""
    import fcntl
    import shutil
    import time

    removed = 0
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    for name in names:
        if not name.lstrip(".").startswith(prefix):
            continue
        path = os.path.join(root, name)
        try:
            with open(os.path.join(path, LOCK_FILE)) as lock:  # never creates one
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: live
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        except BlockingIOError:
            continue
        except OSError:  # no lock file: not ours to judge, unless a day old
            try:
                old = time.time() - os.path.getmtime(path) > STALE_UNLOCKED_SECONDS
            except OSError:
                continue
            if old and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    return removed


def inside(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or under it (local links resolved;
    an object store's paths compared as strings)."""
    if "://" in path or "://" in directory:
        path, directory = path.rstrip("/"), directory.rstrip("/")
        return path == directory or path.startswith(directory + "/")
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def check_output(
    path: str,
    flag: str,
    read_dirs: dict[str, str | None],
    replaceable: Callable[[str], bool],
    what: str,
    overwrite: bool | None = None,
    replaceable_inside: Callable[[str], bool] | None = None,
) -> None:
    """Refuses, before any work, an output file that would destroy data
    (ValueError, one line): a path inside one of ``read_dirs``' directories
    (``{"--data_dir": DATA, ...}``: what the command reads; with
    ``replaceable_inside``, only an existing file there that it does not
    accept), a directory or a path below a file, or an existing file that is
    not ``what`` this command writes (``replaceable``). ``overwrite``: None
    replaces such a file; False refuses any existing file (the command has an
    ``--overwrite`` flag, not given)."""
    if path.endswith(os.sep) or os.path.isdir(path):
        raise ValueError(f"{flag}={path} is a directory; give a file path")
    check_directory(os.path.dirname(path) or ".", flag)
    for name, directory in read_dirs.items():
        if directory and inside(path, directory):
            if replaceable_inside is None:
                raise ValueError(f"{flag}={path} is inside {name}={directory}; write it elsewhere")
            if os.path.lexists(path) and not replaceable_inside(path):
                raise ValueError(
                    f"{flag}={path} is a file of {name}={directory}, not one this command "
                    "wrote; write elsewhere"
                )
            return
    if not os.path.lexists(path):
        return
    if overwrite is False:
        raise ValueError(f"{flag}={path} exists; pass --overwrite to replace it")
    if not replaceable(path):
        raise ValueError(
            f"{flag}={path} exists and is not {what}; remove it yourself or choose another {flag}"
        )


def write_json(path: str, obj) -> None:
    """``obj`` as indented JSON with sorted keys and a final newline, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def check_directory(path: str, flag: str) -> None:
    """Before any work: ``path`` is a directory or can become one (no file
    at it or above it); ValueError, one line."""
    parent = path
    while parent and not os.path.lexists(parent):
        parent = os.path.dirname(parent.rstrip(os.sep))
    if parent and not os.path.isdir(parent):
        raise ValueError(
            f"{flag}={path}: {parent} is a file, not a directory; choose another {flag}"
        )
