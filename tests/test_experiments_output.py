"""experiments.table2/figure2 write a user's runs to runs/experiments/; the
committed reference results only with --update_reference."""

from __future__ import annotations

import os
import subprocess

import pytest

from experiments import runner
from tests.helpers import run_module


def test_default_is_not_the_committed_results():
    assert runner.output_dir(None, False) == runner.DEFAULT_OUT_DIR
    assert not runner.DEFAULT_OUT_DIR.startswith(runner.REFERENCE_DIR)
    assert runner.output_dir("/tmp/mine", False) == "/tmp/mine"
    assert runner.output_dir(None, True) == runner.REFERENCE_DIR


def test_reference_dir_needs_the_flag():
    relative = os.path.relpath(runner.REFERENCE_DIR)
    with pytest.raises(ValueError, match="--update_reference"):
        runner.output_dir(relative, False)
    assert runner.output_dir(relative, True) == runner.REFERENCE_DIR
    with pytest.raises(ValueError, match="drop --out_dir"):
        runner.output_dir("/tmp/mine", True)


def test_default_output_is_ignored_by_git():
    rel = os.path.relpath(os.path.join(runner.DEFAULT_OUT_DIR, "table2.md"), runner.ROOT)
    result = subprocess.run(
        ["git", "check-ignore", "-q", rel], cwd=runner.ROOT, capture_output=True
    )
    assert result.returncode == 0, f"{rel} is not git-ignored"


@pytest.mark.parametrize("module", ["experiments.table2", "experiments.figure2"])
def test_entry_point_refuses_the_reference_dir_without_the_flag(module, tmp_path):
    before = {
        n: os.path.getmtime(os.path.join(runner.REFERENCE_DIR, n))
        for n in os.listdir(runner.REFERENCE_DIR)
    }
    result = run_module(
        [module, f"--data_dir={tmp_path}", "--out_dir=experiments/results"], timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: --out_dir=experiments/results holds the")
    after = {
        n: os.path.getmtime(os.path.join(runner.REFERENCE_DIR, n))
        for n in os.listdir(runner.REFERENCE_DIR)
    }
    assert after == before
