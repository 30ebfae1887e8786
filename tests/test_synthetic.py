"""Tests of data_prep/synthetic/: raw Ali-CCP format, labels, ground truth, splits,
interleaved requests, the command line."""

from __future__ import annotations

import collections
import dataclasses
import gzip
import importlib
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from data_prep import synthetic
from data_prep.synthetic import lines as synthetic_lines
from data_prep.synthetic import output
from esmm_tf import config_flags, features, metrics
from tests.helpers import ROOT, dead_pid

USER_IDS = {f.id for f in features.USER_FIELDS}
ITEM_IDS = {f.id for f in features.ITEM_FIELDS}
WEIGHT = re.compile(rb"\d+\.\d{5}")
HEX16 = re.compile(rb"[0-9a-f]{16}")
N = 100_000


def _config(**kw) -> synthetic.SyntheticConfig:
    return synthetic.SyntheticConfig(progress_seconds=0, **kw)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    return gzip.decompress(data) if path.endswith(".gz") else data


def _lines(path: str) -> list[bytes]:
    data = _read(path)
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def _parse_features(feature_list: bytes, num: bytes):
    """[(field, id, value bytes)], checking the separators and feature_num."""
    out = []
    for token in feature_list.split(features.FEATURE_SEP):
        field, rest = token.split(features.ID_SEP)
        feature_id, value = rest.split(features.VALUE_SEP)
        field = field.decode()
        spec = features.FIELDS_BY_ID[field]  # only known fields
        if spec.weighted:
            assert WEIGHT.fullmatch(value), value
            count = math.expm1(float(value))  # log(1 + count), count a positive integer
            assert count >= 0.99 and abs(count - round(count)) < 1e-3 * count + 1e-3, value
        else:
            assert value == b"1.0", (field, value)
        out.append((field, int(feature_id), value))
    assert len(out) == int(num)
    return out


def _load(out_dir: str, split: str):
    common = {}
    for line in _lines(os.path.join(out_dir, f"common_features_{split}.csv")):
        cfi, num, feature_list = line.split(b",")
        assert HEX16.fullmatch(cfi), cfi
        assert cfi not in common, "common_feature_index must be unique"
        common[cfi] = _parse_features(feature_list, num)
    skeleton = []
    for line in _lines(os.path.join(out_dir, f"sample_skeleton_{split}.csv")):
        sample_id, click, conversion, cfi, num, feature_list = line.split(b",")
        assert click in (b"0", b"1") and conversion in (b"0", b"1")
        skeleton.append(
            (int(sample_id), int(click), int(conversion), cfi, _parse_features(feature_list, num))
        )
    truth = []
    for line in _lines(os.path.join(out_dir, f"ground_truth_{split}.csv")):
        sample_id, pctr, pcvr, counterfactual = line.split(b",")
        assert counterfactual in (b"0", b"1")
        assert pctr == b"%.6g" % float(pctr) and pcvr == b"%.6g" % float(pcvr)
        truth.append((int(sample_id), float(pctr), float(pcvr), int(counterfactual)))
    return common, skeleton, truth


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("synthetic"))
    summary = synthetic.generate(_config(impressions=N, seed=7), out_dir)
    splits = {split: _load(out_dir, split) for split in synthetic.SPLITS}
    return out_dir, summary, splits


def _dir_bytes(path: str) -> dict[str, bytes]:
    return {name: _read(os.path.join(path, name)) for name in sorted(os.listdir(path))}


def test_same_config_gives_identical_files_and_seed_changes_them(tmp_path):
    config = _config(impressions=20_000, seed=3)
    synthetic.generate(config, str(tmp_path / "a"))
    synthetic.generate(config, str(tmp_path / "b"))
    synthetic.generate(_config(impressions=20_000, seed=4), str(tmp_path / "c"))
    a, b, c = (_dir_bytes(str(tmp_path / d)) for d in "abc")
    assert sorted(a) == sorted(synthetic.file_names() + [synthetic.CONFIG_FILE])
    assert a == b
    assert a["sample_skeleton_train.csv"] != c["sample_skeleton_train.csv"]


def test_gzip_output_holds_the_plain_bytes(tmp_path):
    synthetic.generate(_config(impressions=5_000), str(tmp_path / "plain"))
    synthetic.generate(_config(impressions=5_000, gzip=True), str(tmp_path / "gz"))
    synthetic.generate(_config(impressions=5_000, gzip=True), str(tmp_path / "gz2"))
    for plain, gz in zip(synthetic.file_names(False), synthetic.file_names(True), strict=True):
        assert gz == plain + ".gz"
        assert _read(str(tmp_path / "gz" / gz)) == _read(str(tmp_path / "plain" / plain))
        # No file name or time in the gzip header: the compressed bytes repeat too.
        assert (tmp_path / "gz" / gz).read_bytes() == (tmp_path / "gz2" / gz).read_bytes()


def test_format_and_field_placement(data):
    _, summary, splits = data
    ranges = summary["world"]["field_id_ranges"]
    ids_by_field = collections.defaultdict(set)
    for common, skeleton, _ in splits.values():
        for feats in common.values():
            fields = [f for f, _, _ in feats]
            assert set(fields) <= USER_IDS, "user fields only in common_features"
            assert fields.count("101") == 1
            for field, feature_id, _ in feats:
                ids_by_field[field].add(feature_id)
        for _, _, _, cfi, feats in skeleton:
            assert cfi in common, "every skeleton row's user context is in the same split"
            fields = [f for f, _, _ in feats]
            assert set(fields) <= ITEM_IDS, "item-side fields only in the skeleton"
            for field in ("205", "206", "207", "301"):
                assert fields.count(field) == 1
            assert 1 <= fields.count("210") <= synthetic.MAX_INTENTIONS
            for field, feature_id, _ in feats:
                ids_by_field[field].add(feature_id)
        # Single-valued fields at most once per line.
        for feats in [*common.values(), *(s[4] for s in skeleton)]:
            single = [f for f, _, _ in feats if not features.FIELDS_BY_ID[f].multi]
            assert len(single) == len(set(single))
    assert set(ids_by_field) == {f.id for f in features.FIELDS}
    for field, ids in ids_by_field.items():
        lo, hi = ranges[field]
        assert lo <= min(ids) and max(ids) <= hi, field
    all_ids = [i for ids in ids_by_field.values() for i in ids]
    assert len(all_ids) == len(set(all_ids)), "feature ids are unique across fields"


def test_user_contexts_are_consecutive_and_in_common_order(data):
    _, _, splits = data
    for common, skeleton, _ in splits.values():
        blocks = [
            cfi
            for i, (_, _, _, cfi, _) in enumerate(skeleton)
            if i == 0 or cfi != skeleton[i - 1][3]
        ]
        assert blocks == list(common), "one consecutive block per common row, in file order"
    assert not set(splits["train"][0]) & set(splits["test"][0])
    sizes = collections.Counter(s[3] for s in splits["train"][1])
    assert 20 < np.mean(list(sizes.values())) < 40


def test_some_fields_are_sometimes_absent(data):
    _, summary, splits = data
    common, skeleton, _ = splits["train"]
    for field in synthetic.PROFILE_FIELDS:
        share = np.mean([any(f == field for f, _, _ in feats) for feats in common.values()])
        assert 0.85 < share < 1.0, (field, share)
    for field in ("216", "508", "509", "702", "853"):
        share = np.mean([any(f == field for f, _, _ in s[4]) for s in skeleton])
        assert 0.3 < share < 1.0, (field, share)
    assert summary["fields"]["216"]["share_of_lines"] < 1.0


def test_combination_fields_are_the_matched_behaviour(data):
    """508/509/702/853 hold exactly the item's values found in the user's behaviour lists."""
    _, summary, splits = data
    base = {f: lo for f, (lo, _) in summary["world"]["field_id_ranges"].items()}
    common, skeleton, _ = splits["test"]
    for _, _, _, cfi, feats in skeleton[:20_000]:
        behaviour = collections.defaultdict(dict)  # field -> index -> value
        for field, feature_id, value in common[cfi]:
            behaviour[field][feature_id - base[field]] = value
        item = collections.defaultdict(list)
        for field, feature_id, value in feats:
            item[field].append((feature_id - base[field], value))
        for attr_field, behaviour_field, combination in zip(
            synthetic.ITEM_ATTRIBUTE_FIELDS,
            synthetic.BEHAVIOUR_FIELDS,
            synthetic.COMBINATION_FIELDS,
            strict=True,
        ):
            user = behaviour[behaviour_field]
            expected = sorted((i, user[i]) for i, _ in item[attr_field] if i in user)
            assert sorted(item[combination]) == expected, combination


def test_ground_truth_aligns_with_labels(data):
    _, _, splits = data
    for _, skeleton, truth in splits.values():
        assert len(truth) == len(skeleton)
        for (sample_id, click, conversion, _, _), (truth_id, pctr, pcvr, counterfactual) in zip(
            skeleton, truth, strict=True
        ):
            assert sample_id == truth_id
            assert conversion == click * counterfactual, "conversion only after a click"
            assert 0 < pctr < 1 and 0 < pcvr < 1


def test_sample_ids_and_time_split(data):
    _, summary, splits = data
    train, test = splits["train"][1], splits["test"][1]
    ids = [s[0] for s in train + test]
    assert ids == list(range(1, N + 1)), "sample ids increase over train, then test"
    largest_row = max(collections.Counter(s[3] for s in train).values())
    assert N // 2 <= len(train) < N // 2 + largest_row, "train: the rows starting in the first half"
    users = {
        split: {f[1] for feats in splits[split][0].values() for f in feats if f[0] == "101"}
        for split in splits
    }
    assert len(users["test"] & users["train"]) > 0.5 * len(users["test"]), "same users in both"
    assert summary["splits"]["train"]["impressions"] == len(train)
    assert summary["splits"]["test"]["rows"] == len(splits["test"][0])


def test_rates_match_targets_and_summary(data):
    _, summary, splits = data
    labels = np.array([(s[1], s[2]) for split in splits.values() for s in split[1]])
    clicks, conversions = labels.sum(axis=0)
    assert 0.036 < clicks / N < 0.044
    assert 0.035 < conversions / clicks < 0.065
    assert summary["total"]["clicks"] == clicks
    assert summary["total"]["conversions"] == conversions
    assert summary["total"]["impressions"] == N


def test_selection_bias_and_correlation(data):
    _, summary, splits = data
    truth = np.array([t for split in splits.values() for t in split[2]])
    click = np.array([s[1] for split in splits.values() for s in split[1]], bool)
    pctr, pcvr = truth[:, 1], truth[:, 2]
    assert pcvr[click].mean() > 1.2 * pcvr.mean(), "clicked impressions convert more"
    assert 0.1 < np.corrcoef(pctr, pcvr)[0, 1] < 0.9
    assert 0.1 < summary["calibration"]["logit_correlation"] < 0.9
    # Counterfactual conversions exist for unclicked impressions too.
    assert truth[~click, 3].sum() > 0
    # The labels carry signal: the true probabilities rank them well.
    assert summary["total"]["oracle_auc"]["ctr"] > 0.7
    assert summary["total"]["oracle_auc"]["cvr"] > 0.6


def test_oracle_auc_matches_the_exact_auc(data):
    """The streamed histogram AUC of the summary equals the exact rank AUC."""
    _, summary, splits = data
    truth = np.array([t for split in splits.values() for t in split[2]])
    labels = np.array([(s[1], s[2]) for split in splits.values() for s in split[1]])
    click, conversion = labels[:, 0], labels[:, 1]
    pctr, pcvr = truth[:, 1], truth[:, 2]
    oracle = summary["total"]["oracle_auc"]
    assert abs(oracle["ctr"] - metrics.exact_auc(click, pctr)) < 1e-4
    assert abs(oracle["cvr"] - metrics.exact_auc(conversion[click == 1], pcvr[click == 1])) < 1e-4
    assert abs(oracle["cvr_entire"] - metrics.exact_auc(truth[:, 3], pcvr)) < 1e-4


def test_behaviour_fields_are_long(data):
    _, _, splits = data
    common = splits["train"][0]
    for field in synthetic.BEHAVIOUR_FIELDS:
        lengths = [sum(f == field for f, _, _ in feats) for feats in common.values()]
        assert np.mean(lengths) >= 25, field
    longest = max(len(feats) for feats in common.values())
    assert longest > 300


def test_failure_midway_leaves_no_files(tmp_path, monkeypatch):
    calls = []
    real = synthetic_lines.skeleton_lines

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(*args)

    monkeypatch.setattr(synthetic_lines, "skeleton_lines", failing)
    out_dir = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk on fire"):
        synthetic.generate(_config(impressions=20_000, chunk_rows=64), str(out_dir))
    assert len(calls) == 3
    assert os.listdir(out_dir) == []


def _skeleton_and_truth(out_dir, split):
    skeleton = _lines(os.path.join(out_dir, f"sample_skeleton_{split}.csv"))
    truth = _lines(os.path.join(out_dir, f"ground_truth_{split}.csv"))
    return skeleton, truth


def test_interleaved_requests_keep_rows_truth_and_ids(tmp_path):
    """Some requests' rows are scattered within a bounded window; nothing else changes."""
    window = 2_000
    plain_dir, mixed_dir = str(tmp_path / "plain"), str(tmp_path / "mixed")
    synthetic.generate(_config(impressions=20_000, seed=3), plain_dir)
    summary = synthetic.generate(
        _config(impressions=20_000, seed=3, interleave_fraction=0.5, interleave_window=window),
        mixed_dir,
    )
    assert 0 < summary["interleave"]["max_pending_lines"] <= window
    first_id = 1
    for split in synthetic.SPLITS:
        common = f"common_features_{split}.csv"
        assert _read(os.path.join(plain_dir, common)) == _read(os.path.join(mixed_dir, common))
        plain = _skeleton_and_truth(plain_dir, split)
        mixed = _skeleton_and_truth(mixed_dir, split)
        # Sample ids count lines in file order; each truth line follows its skeleton line.
        ids = [int(line.split(b",", 1)[0]) for line in mixed[0]]
        assert ids == list(range(first_id, first_id + len(ids)))
        assert ids == [int(line.split(b",", 1)[0]) for line in mixed[1]]
        first_id += len(ids)

        # The same (skeleton, truth) pairs, sample ids aside.
        def pairs(skeleton, truth):
            return collections.Counter(
                (s.split(b",", 1)[1], t.split(b",", 1)[1])
                for s, t in zip(skeleton, truth, strict=True)
            )

        assert pairs(*plain) == pairs(*mixed)
        assert plain[0] != mixed[0]
        # About half the requests are split up (the others stay consecutive), none is
        # spread beyond the window.
        where = collections.defaultdict(list)
        for i, line in enumerate(mixed[0]):
            where[line.split(b",")[3]].append(i)
        sizes = {cfi: len(rows) for cfi, rows in where.items()}
        multi = [cfi for cfi in where if sizes[cfi] > 1]
        split_up = [cfi for cfi in multi if where[cfi][-1] - where[cfi][0] >= sizes[cfi]]
        assert 0.35 < len(split_up) / len(multi) < 0.65, len(split_up) / len(multi)
        assert max(where[c][-1] - where[c][0] - sizes[c] for c in multi) < 2 * window


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="0 < ctr < 1"):
        synthetic.SyntheticConfig(ctr=1.5)
    with pytest.raises(ValueError, match="test_fraction"):
        synthetic.SyntheticConfig(test_fraction=-0.1)
    with pytest.raises(ValueError, match="interleave_fraction"):
        synthetic.SyntheticConfig(interleave_fraction=2.0)


@pytest.mark.parametrize(
    "field, value, message",
    [
        # inf passed ">= 1" / ">= 0" and crashed later (OverflowError, or ctr 1.0)
        ("impressions_per_row", math.inf, "finite impressions_per_row"),
        ("signal", math.inf, "finite signal"),
        ("zipf_exponent", math.inf, "finite zipf_exponent"),
        ("behaviour_ids", math.nan, "finite behaviour_ids"),
        # sizes numpy cannot allocate (an _ArrayMemoryError traceback)
        ("num_users", 10**12, "num_users <= 10,000,000"),
        ("num_items", 10**12, "num_items <= 100,000,000"),
        ("impressions_per_row", 1e12, "impressions_per_row <= 10000"),
        ("chunk_rows", 10**10, "chunk_rows \\* impressions_per_row <= 1,000,000"),
        ("pilot_impressions", 10**14, "pilot_impressions <= 10,000,000"),
        ("interleave_window", 10**12, "interleave_window <= 10,000,000"),
        ("impressions", 10**30, "impressions <= 1,000,000,000,000"),
        # was silently capped at 2000 ids per user and field
        ("behaviour_ids", 1e30, "behaviour_ids <= 2000"),
        ("signal", 21.0, "signal <= 20"),
        # an empty sample_skeleton file that the converter rejects
        ("test_fraction", 1.0, "0 < test_fraction < 1"),
        ("test_fraction", 0.0, "0 < test_fraction < 1"),
        ("impressions", 1, "at least one impression in each split"),
    ],
)
def test_non_finite_huge_and_split_emptying_values_are_rejected(field, value, message):
    with pytest.raises(ValueError, match=message):
        synthetic.SyntheticConfig(**{field: value})


def test_a_split_left_empty_by_the_requests_writes_nothing(tmp_path):
    """3 impressions, train gets 2 by the fraction, but the first request (30
    impressions on average) takes all 3: nothing is written, not an empty file."""
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="the test split got no impressions"):
        synthetic.generate(_config(impressions=3, seed=0), str(out_dir))
    assert os.listdir(out_dir) == []


def test_command_line_refuses_bad_values_in_one_line(tmp_path):
    out_dir = tmp_path / "out"
    for flag in ("--impressions_per_row=inf", "--pilot_impressions=100000000000000"):
        result = subprocess.run(
            [sys.executable, "-m", "data_prep.synthetic", f"--out_dir={out_dir}", flag],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1, (flag, result.stderr)
        assert result.stderr.startswith("error: SyntheticConfig: need"), (flag, result.stderr)
        assert len(result.stderr.splitlines()) == 1, (flag, result.stderr)
        assert not out_dir.exists()


def test_every_config_field_is_a_flag():
    cli = importlib.import_module("data_prep.synthetic.__main__")
    values = flags.FlagValues()
    cli.define_flags(values)
    values(["synthetic", "--out_dir=/o", "--zipf_exponent=0.8", "--interleave_fraction=0.25"])
    names = [f.name for f in dataclasses.fields(synthetic.SyntheticConfig)]
    assert set(names) < set(values)
    assert all(values[name].help != name for name in names), "every field has help"
    config = config_flags.config_from_flags(synthetic.SyntheticConfig, values)
    assert config == synthetic.SyntheticConfig(zipf_exponent=0.8, interleave_fraction=0.25)


def test_command_line_without_tensorflow(tmp_path):
    out_dir = tmp_path / "cli"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep.synthetic",
            f"--out_dir={out_dir}",
            "--impressions=3000",
            "--seed=2",
            "--gzip",
            "--interleave_fraction=0.5",
            "--behaviour_drop=0.1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out_dir)) == sorted(
        synthetic.file_names(True) + [synthetic.CONFIG_FILE]
    )
    summary = json.loads((out_dir / synthetic.CONFIG_FILE).read_text())
    assert summary["config"]["seed"] == 2 and summary["total"]["impressions"] == 3000
    assert summary["config"]["interleave_fraction"] == 0.5
    assert summary["config"]["behaviour_drop"] == 0.1
    check = "import sys, data_prep.synthetic.__main__; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True)


def test_command_line_replaces_logs_it_did_not_write_only_with_overwrite(tmp_path):
    out_dir = tmp_path / "raw"
    out_dir.mkdir()
    (out_dir / "common_features_test.csv.gz").write_bytes(b"real")
    command = [sys.executable, "-m", "data_prep.synthetic", f"--out_dir={out_dir}",
               "--impressions=2000", "--pilot_impressions=2000", "--gzip"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: --out_dir={out_dir} holds raw logs"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert (out_dir / "common_features_test.csv.gz").read_bytes() == b"real"
    result = subprocess.run(
        [*command, "--overwrite"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (out_dir / synthetic.CONFIG_FILE).exists()


def test_command_line_out_of_memory_is_one_line(tmp_path):
    """Sizes within the bounds may still exceed the machine: no numpy traceback."""
    script = (
        "import sys; from absl import app; import data_prep.synthetic.__main__ as cli\n"
        "def generate(*args, **kwargs): raise MemoryError()\n"
        "cli.generate = generate; cli.define_flags(); app.run(cli.main)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, f"--out_dir={tmp_path / 'out'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: out of memory: lower --num_users"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_large_signal_still_hits_the_requested_rates(tmp_path):
    """--signal=20 needs intercepts below -30: they were clamped there, and the
    data came out at ctr ~0.6 instead of 0.04."""
    summary = synthetic.generate(
        _config(impressions=20_000, signal=20.0, pilot_impressions=20_000),
        str(tmp_path / "out"),
    )
    assert summary["calibration"]["ctr_intercept"] < -30
    assert 0.03 < summary["total"]["mean_true_pctr"] < 0.05
    assert 0.02 < summary["total"]["ctr"] < 0.06


def test_calibration_refuses_a_rate_it_cannot_reach(monkeypatch):
    """Logits so large that every true probability is 0 or 1: the click rate
    jumps past the 0.04 asked for (0, 0.25, 0.5); a clear error, no data."""
    from data_prep.synthetic import calibration

    config = _config(impressions=1000, pilot_impressions=1000, impressions_per_row=10)
    world = type("World", (), {"config": config, "user_cum": np.array([1.0])})()

    def chunk(world, rng, sizes, user):
        x = np.where(np.arange(sizes.sum()) % 2 == 0, 1e300, -1e300)
        return type("Chunk", (), {"logit_ctr": x, "logit_cvr": x, "row": x})()

    monkeypatch.setattr(calibration, "sample_chunk", chunk)
    with pytest.raises(
        ValueError, match="closest ctr .* on the pilot sample is .*, not the requested 0.04"
    ):
        calibration.calibrate(world, np.random.default_rng(0))


def test_bisection_widens_its_bracket():
    from data_prep.synthetic.calibration import _bisect

    assert _bisect(lambda b: b + 1000.0) == pytest.approx(-1000.0)  # was -30
    assert _bisect(lambda b: b - 1e6) == pytest.approx(1e6)
    with pytest.raises(ValueError, match="no intercept gives the requested cvr"):
        _bisect(lambda b: 1.0, "cvr")


def test_raw_logs_it_did_not_write_are_refused_unless_overwrite(tmp_path):
    """A real download in --out_dir (no synthetic_config.json) was replaced."""
    out_dir = tmp_path / "raw"
    out_dir.mkdir()
    real = out_dir / "sample_skeleton_train.csv"
    real.write_bytes(b"the real logs\n")
    config = _config(impressions=2_000, pilot_impressions=2_000)
    with pytest.raises(ValueError, match="sample_skeleton_train.csv; no synthetic_config.json"):
        synthetic.generate(config, str(out_dir))
    assert os.listdir(out_dir) == ["sample_skeleton_train.csv"]
    assert real.read_bytes() == b"the real logs\n"
    with pytest.raises(ValueError, match="--overwrite"):  # the other compression too
        synthetic.generate(dataclasses.replace(config, gzip=True), str(out_dir))
    synthetic.generate(config, str(out_dir), overwrite=True)
    assert real.read_bytes() != b"the real logs\n"


def test_its_own_output_is_regenerated_even_after_a_killed_commit(tmp_path):
    """make demo and the benchmarks rerun the generator into its own directory
    when synthetic_config.json is missing: a run killed while renaming its files
    into place leaves the data files without it (but with the commit marker)."""
    out_dir = tmp_path / "raw"
    synthetic.generate(_config(impressions=2_000, pilot_impressions=2_000), str(out_dir))
    synthetic.generate(_config(impressions=3_000, pilot_impressions=2_000), str(out_dir))
    (out_dir / synthetic.CONFIG_FILE).unlink()
    (out_dir / output.COMMIT_MARKER).touch()
    summary = synthetic.generate(_config(impressions=4_000, pilot_impressions=2_000), str(out_dir))
    assert summary["total"]["impressions"] == 4_000
    assert sorted(os.listdir(out_dir)) == sorted(synthetic.file_names() + [synthetic.CONFIG_FILE])


def test_temporary_files_of_a_killed_run_are_removed(tmp_path):
    """A killed run's .<name>.<pid>.tmp files (hundreds of MB) stayed forever;
    a live run's (another process) are left alone, other files too."""
    out_dir = tmp_path / "raw"
    out_dir.mkdir()
    dead, live = dead_pid(), os.getppid()
    stale = [f".sample_skeleton_train.csv.{dead}.tmp", f".synthetic_config.json.{dead}.tmp",
             f".common_features_test.csv.gz.{os.getpid()}.tmp"]  # fmt: skip
    kept = [f".sample_skeleton_train.csv.{live}.tmp", f".notes.txt.{dead}.tmp", "notes.txt"]
    for name in stale + kept:
        (out_dir / name).write_bytes(b"x" * 100)
    synthetic.generate(_config(impressions=2_000, pilot_impressions=2_000), str(out_dir))
    assert sorted(os.listdir(out_dir)) == sorted(
        synthetic.file_names() + [synthetic.CONFIG_FILE] + kept
    )
