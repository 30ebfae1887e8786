"""experiments.questions: the open questions' numbers from result files,
checked against differences computed by hand."""

from __future__ import annotations

import json
import math

import pytest

from experiments import questions


def _run(ctr, cvr, ctcvr, es=None, ratio=None):
    out = dict(ctr_auc=ctr, cvr_auc=cvr, ctcvr_auc=ctcvr)
    if es is not None:
        out.update(cvr_auc_entire_space=es, cvr_calibration_ratio=ratio)
    return out


TABLE = {
    "runs": {
        "base": [
            _run(0.70, 0.60, 0.80, 0.58, 1.6),
            _run(0.71, 0.61, 0.81, 0.59, 1.7),
            _run(0.72, 0.62, 0.82, 0.60, 1.5),
        ],
        "aman": [
            _run(0.70, 0.60, 0.80, 0.58, 0.4),
            _run(0.70, 0.60, 0.80, 0.58, 0.5),
            _run(0.70, 0.60, 0.80, 0.58, 0.45),
        ],
        "esmm": [
            _run(0.71, 0.63, 0.83, 0.61, 1.0),
            _run(0.71, 0.64, 0.84, 0.63, 1.1),
            _run(0.72, 0.65, 0.85, 0.62, 0.9),
        ],
    }
}
FIGURE = {
    "runs": {
        "esmm": {"0.1": [_run(0.7, 0.60, 0.8), _run(0.7, 0.62, 0.8)]},
        "esmm_ns": {"0.1": [_run(0.7, 0.55, 0.8), _run(0.7, 0.58, 0.8)]},
    }
}
DIM8 = {"runs": {"base": TABLE["runs"]["base"][:2], "esmm": TABLE["runs"]["base"][:2]}}


def test_every_question_by_hand():
    result = questions.answer(TABLE, FIGURE, {8: DIM8}, 18)
    q1 = result["entire_space_pcvr"]["esmm_minus_base_entire_space_cvr_auc"]
    assert q1["mean"] == pytest.approx((3 + 4 + 2) / 3)  # AUC points, paired by seed
    # 95 % t interval of the differences (3, 4, 2): std 1, t(2 df) = 4.303.
    assert q1["low"] == pytest.approx(3 - 4.303 / math.sqrt(3), abs=1e-3)
    assert q1["verdict"] == "yes"
    esmm_cal = result["entire_space_pcvr"]["calibration"]["esmm"]
    assert esmm_cal["mean"] == pytest.approx(1.0) and esmm_cal["verdict"] == "unresolved"
    base_cal = result["entire_space_pcvr"]["calibration"]["base"]
    assert base_cal["mean"] == pytest.approx(1.6) and base_cal["verdict"] == "above"
    ctr = result["ctcvr_helps_ctr"]["esmm"]  # ESMM trains a CTCVR loss, AMAN does not
    assert set(result["ctcvr_helps_ctr"]) == {"esmm"}
    assert ctr["mean"] == pytest.approx(1 / 3) and ctr["verdict"] == "unresolved"
    aman = result["aman_calibration"]
    assert aman["per_seed"] == [0.4, 0.5, 0.45] and aman["verdict"] == "below"
    assert "sharing_full_size" not in result  # no ESMM-NS in the table
    sharing = result["sharing_by_rate"]["0.1"]["cvr_auc"]
    assert sharing["mean"] == pytest.approx(4.5) and sharing["seeds"] == 2
    dim = result["embedding_dim"]["esmm"]
    assert dim["8"]["minus_18_cvr_auc"]["mean"] == pytest.approx(-3.0)  # 2 common seeds
    assert dim["18"]["summary"]["cvr_auc"][0] == pytest.approx(64.0)
    text = questions.to_markdown(result, "here")
    assert "AMAN's mean pCVR / mean true pCVR" in text and "below 1 in every seed: **yes**" in text
    assert "| 10% | +4.50" in text
    json.dumps(result)  # the JSON file's content


def test_sharing_at_full_size():
    runs = dict(TABLE["runs"], esmm_ns=TABLE["runs"]["aman"])
    full = questions.answer({"runs": runs}, None, {}, 18)["sharing_full_size"]
    assert full["esmm_minus_esmm_ns"]["cvr_auc"]["mean"] == pytest.approx(4.0)
    assert full["esmm_ns_minus_base"]["cvr_auc"]["mean"] == pytest.approx(-1.0)
    text = questions.to_markdown(questions.answer({"runs": runs}, None, {}, 18), "here")
    assert "ESMM-NS minus BASE (the entire-space structure, unshared): CVR AUC -1.00" in text


def test_without_figure_or_ground_truth():
    plain = {
        "runs": {
            m: [
                {k: v for k, v in r.items() if "cvr_auc_e" not in k and "ratio" not in k}
                for r in runs
            ]
            for m, runs in TABLE["runs"].items()
        }
    }
    result = questions.answer(plain, None, {}, 18)
    assert "sharing_by_rate" not in result and "aman_calibration" not in result
    assert "## 3." not in questions.to_markdown(result, "here")
    assert questions.to_markdown(result, "here", "CMD").endswith("Made by `CMD`.\n")


def _write(directory, name, content) -> str:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return str(directory / name)


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"runs": {"esmm": [{"ctr', "not readable JSON"),  # cut short
        ([], "not a result file"),
        ({"command": 1}, 'no "runs"'),
        ({"runs": []}, '"runs" is not an object of models'),
        ({"runs": {}}, '"runs" is not an object of models'),
        ({"runs": {"esmm": "x"}}, "runs.esmm is not a non-empty list"),
        ({"runs": {"esmm": []}}, "runs.esmm is not a non-empty list"),
        ({"runs": {"esmn": TABLE["runs"]["esmm"]}}, "unknown model 'esmn'"),
        ({"runs": {"esmm": [{"cvr_auc": 0.6}]}}, "runs.esmm, seed record 0: no ctr_auc"),
        ({"runs": {"esmm": [_run(0.7, 60, 0.8)]}}, "cvr_auc is 60, not an AUC"),
    ],
)
def test_a_table_that_is_not_table2s_output_is_refused(content, problem, tmp_path):
    path = _write(tmp_path, "table2.json", content)
    with pytest.raises(questions.ResultsError, match=f"^{path}: .*{problem}"):
        questions.check_table2(path, questions._load(path))


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"runs": ', "not readable JSON"),
        ({"runs": {"esmm": []}}, "runs.esmm is not an object of sampling rates"),
        ({"runs": {"esmm": {"most": FIGURE["runs"]["esmm"]["0.1"]}}}, "'most', not a sampling"),
        ({"runs": {"esmm": {"0.1": [{"cvr_auc": "x"}]}}}, "runs.esmm.0.1, seed record 0: no"),
    ],
)
def test_a_figure_that_is_not_figure2s_output_is_refused(content, problem, tmp_path):
    path = _write(tmp_path, "figure2.json", content)
    with pytest.raises(questions.ResultsError, match=f"^{path}: .*{problem}"):
        questions.check_figure2(path, questions._load(path))
    questions.check_figure2(path, {"points": {}})  # an older figure2.json: no per-seed runs


def test_dim_results_are_other_dimensions_each_once(tmp_path):
    d8 = tmp_path / "d8"
    _write(d8, "table2.json", DIM8)
    assert questions.dim_results([f"8:{d8}"], 18) == {8: DIM8}
    empty = tmp_path / "empty"
    _write(empty, "table2.json", {})
    for pairs, problem in (
        ([f"18:{d8}"], "dimension 18 is the main table's"),  # would replace its numbers
        ([f"8:{d8}", f"8:{d8}"], "dimension 8 is given more than once"),
        ([f"8:{empty}"], 'table2.json: no "runs"'),
        ([f"8:{tmp_path / 'none'}"], "table2.json not found"),
        ([f"x:{d8}"], "expected DIM:DIR"),
        ([f"0:{d8}"], "expected DIM:DIR"),
        (["8:"], "expected DIM:DIR"),
    ):
        with pytest.raises(questions.ResultsError, match=problem):
            questions.dim_results(pairs, 18)


def test_entry_point_reports_a_bad_result_file_in_one_line(tmp_path):
    """One error line naming the file, exit status 1, nothing written."""
    from tests.helpers import run_module

    _write(tmp_path, "table2.json", TABLE)
    _write(tmp_path, "figure2.json", '{"runs": {"esmm": {"0.1": [{"ctr')
    result = run_module(["experiments.questions", f"--results={tmp_path}"], timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert f"{tmp_path}/figure2.json: not readable JSON" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure2.json", "table2.json"]
