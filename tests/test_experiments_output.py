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


def test_paired_difference_interval():
    """Mean of the per-seed differences and its 95 % t interval (t = 2.776 at
    4 degrees of freedom), computed by hand."""
    mean, low, high = runner.paired_difference([1, 2, 3, 4, 5], [0, 0, 1, 1, 2])
    diffs = [1, 2, 2, 3, 3]
    sd = (sum((d - 2.2) ** 2 for d in diffs) / 4) ** 0.5
    assert mean == pytest.approx(2.2)
    assert (low, high) == pytest.approx((2.2 - 2.776 * sd / 5**0.5, 2.2 + 2.776 * sd / 5**0.5))
    assert runner.paired_difference([1.0], [0.5])[0] == 0.5  # one seed: no interval
    assert all(v != v for v in runner.paired_difference([1.0], [0.5])[1:])


def test_table2_claims_hold_only_when_the_interval_excludes_zero():
    from experiments import table2

    def runs(cvr: list[float]) -> list[dict]:
        return [{"cvr_auc": v, "ctcvr_auc": v} for v in cvr]

    result = table2.claims(
        {
            "base": runs([0.60, 0.61, 0.60]),
            "esmm_ns": runs([0.60, 0.62, 0.58]),  # noisy: no clear difference to BASE
            "esmm": runs([0.65, 0.66, 0.65]),
            "escm2_ipw": runs([0.64, 0.65, 0.64]),  # below ESMM
        }
    )
    holds = {(r["claim"], r["metric"]): r["holds"] for r in result}
    assert holds[("ESMM > BASE", "cvr_auc")] == "yes"
    assert holds[("ESMM > ESMM-NS", "ctcvr_auc")] == "yes"
    assert holds[("ESCM²-IPS > ESMM", "cvr_auc")] == "no"
    assert holds[("ESMM-NS > BASE (the paper's order)", "cvr_auc")] == "unresolved"
    assert len(result) == 2 * 2 + 1 + 1  # ESMM vs each paper row x 2 metrics, ESCM², order
