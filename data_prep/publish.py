"""Crash-consistent publishing of a finished conversion: ``OUT.partial`` -> ``OUT``.

The sequence, each step one filesystem operation that a kill may interrupt:

1. ``OUT.partial/stats.json`` is written (tmp + rename): the commit point,
   after which the work directory is complete;
2. the scratch (``parts/``, ``tasks/``, ``fingerprint.json``) is removed;
3. with ``--overwrite``, the old ``OUT`` is renamed to ``OUT.old-<pid>``;
4. ``OUT.partial`` is renamed to ``OUT``;
5. ``OUT.old-<pid>`` is removed.

``finish_interrupted`` reads what a killed run left at any of these steps and
completes it, so a rerun of the same command never needs a manual repair:
before step 1 the work directory resumes (its fingerprint is intact); from
step 1 on, the complete work directory is published without redoing work;
after step 3, the swap is finished and the old copy removed.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys

from esmm_tf import data_layout, files

SCRATCH = ("parts", "tasks", "fingerprint.json")
OLD_INFIX = ".old-"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def unsafe_out_dir(
    out_dir: str, reads: list[str], overwrite: bool, holds_dataset: bool, empty: bool
) -> str | None:
    """Why publishing to ``out_dir`` could destroy what is not a dataset, or
    None. Replacing ``out_dir`` removes it, so it may not hold anything the
    conversion reads (``reads``: the raw files, ``--vocab_from``), and
    ``--overwrite`` replaces only a dataset (``holds_dataset``: it has a
    stats.json) or an ``empty`` directory; a local file is never replaced."""
    if "://" not in out_dir and os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        return (
            f"{out_dir} is a file, not a dataset directory; remove it or choose another --out_dir"
        )
    for path in reads:
        if files.inside(path, out_dir):
            return (
                f"--out_dir={out_dir} holds {path}, which this conversion reads; "
                "choose another --out_dir"
            )
    if overwrite and not (holds_dataset or empty):
        return (
            f"--out_dir={out_dir} holds no converted dataset (no {data_layout.STATS_FILE}); "
            "--overwrite only replaces a dataset: remove the directory yourself or choose "
            "another --out_dir"
        )
    return None


def complete_stats(work_dir: str, fingerprint: dict) -> dict | None:
    """The stats of ``work_dir`` when it holds a complete conversion of
    ``fingerprint`` (its stats.json is written last), else None."""
    path = data_layout.stats_file(work_dir)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        stats = json.load(f)
    return stats if stats.get("fingerprint") == fingerprint else None


def remove_scratch(work_dir: str) -> None:
    """Removes what only a resumed run needs (any part may be gone already)."""
    for name in SCRATCH:
        path = os.path.join(work_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


def publish(work_dir: str, out_dir: str) -> None:
    """Steps 2-5: removes the scratch and renames ``work_dir`` into place."""
    remove_scratch(work_dir)
    swap_into_place(work_dir, out_dir)


def swap_into_place(work_dir: str, out_dir: str) -> None:
    """Renames the complete ``work_dir`` to ``out_dir`` (replacing an old one)."""
    old = None
    if os.path.exists(out_dir):
        old = f"{out_dir}{OLD_INFIX}{os.getpid()}"
        os.rename(out_dir, old)
    os.rename(work_dir, out_dir)
    if old:
        shutil.rmtree(old)


def stale_old_dirs(out_dir: str) -> list[str]:
    """``OUT.old-<pid>`` directories left by a killed swap (their process is gone)."""
    stale = []
    for path in sorted(glob.glob(glob.escape(out_dir) + OLD_INFIX + "*")):
        pid = path[len(out_dir) + len(OLD_INFIX) :]
        if pid.isdigit() and not files.pid_alive(int(pid)):
            stale.append(path)
    return stale


def finish_interrupted(work_dir: str, out_dir: str, fingerprint: dict) -> bool:
    """Completes a swap that a killed run started (steps 3-5); returns True when
    it did, so that ``out_dir`` now holds what that run published."""
    finished = False
    for old in stale_old_dirs(out_dir):
        if not os.path.exists(out_dir):
            if complete_stats(work_dir, fingerprint) is None:
                # The new copy is gone or is another conversion: put the old one back.
                _log(f"restoring {out_dir} from {old}, left by an interrupted --overwrite")
                os.rename(old, out_dir)
                continue
            _log(f"finishing the interrupted publish of {work_dir} to {out_dir}")
            remove_scratch(work_dir)
            os.rename(work_dir, out_dir)
        _log(f"removing {old}, the previous {out_dir} left by an interrupted --overwrite")
        shutil.rmtree(old)
        finished = True
    return finished
