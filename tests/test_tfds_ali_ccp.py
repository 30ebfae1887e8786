"""The ``ali_ccp`` TFDS builder (data_prep/tfds/ali_ccp), tested the way TFDS
tests builders (``tfds.testing.DatasetBuilderTestCase`` on dummy data with the
expected split sizes), plus: the examples hold exactly what data_prep.raw parses
from the same raw rows; the Tianchi archives work as the manual download."""

from __future__ import annotations

import collections
import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import raw
from data_prep import synthetic as synthetic_lib
from data_prep.tfds.ali_ccp import ali_ccp_dataset_builder as ali_ccp
from esmm_tf import features as F
from tests.helpers import ENV, ROOT

DUMMY_DATA = os.path.join(os.path.dirname(ali_ccp.__file__), "dummy_data")
MAX_GROUP_SIZE = 256  # data_prep.convert's default

# A small synthetic config (the real one is 100k impressions).
SMALL_SYNTHETIC = ali_ccp.AliCcpConfig(
    name="synthetic_small",
    description="test config",
    synthetic=synthetic_lib.SyntheticConfig(
        impressions=300,
        seed=5,
        impressions_per_row=8,
        num_users=30,
        num_items=60,
        behaviour_ids=5,
        pilot_impressions=20_000,
        progress_seconds=0,
    ),
    convert_workers=1,
)


def expected_examples(raw_dir: str, split: str, ground_truth: bool = False) -> dict[int, dict]:
    """The examples of a split from the raw files, by the parser alone (no
    converter): every impression of one user context wherever it is in the file,
    in file order, at most 256 an example; rows with conversion but no click
    left out. Keyed by the first sample_id."""
    users: dict[bytes, raw.FeatureArrays] = {}
    for _, line, _ in raw.read_lines(raw.find_raw_file(raw_dir, f"common_features_{split}")):
        cfi, feats = raw.parse_common_row(line)
        users.setdefault(cfi, feats)
    rows = [
        raw.parse_skeleton_row(line)
        for _, line, _ in raw.read_lines(raw.find_raw_file(raw_dir, f"sample_skeleton_{split}"))
    ]
    truth = [None] * len(rows)
    if ground_truth:
        path = raw.find_raw_file(raw_dir, f"ground_truth_{split}")
        truth = [raw.parse_ground_truth_row(line) for _, line, _ in raw.read_lines(path)]
    by_index: dict[bytes, list] = {}
    for row, gt in zip(rows, truth, strict=True):
        if not (row.conversion and not row.click):
            by_index.setdefault(row.common_feature_index, []).append((row, gt))
    groups = [
        impressions[i : i + MAX_GROUP_SIZE]
        for impressions in by_index.values()
        for i in range(0, len(impressions), MAX_GROUP_SIZE)
    ]

    out = {}
    for group in groups:
        user = users[group[0][0].common_feature_index]
        example = {"user": {}, "item": {}}
        for k, field in enumerate(F.USER_FIELDS):
            example["user"][field.id] = {"ids": user.ids[k], "weights": user.weights[k]}
        for k, field in enumerate(F.ITEM_FIELDS):
            example["item"][field.id] = {
                "ids": [i for row, _ in group for i in row.features.ids[k]],
                "lengths": [len(row.features.ids[k]) for row, _ in group],
                "weights": [w for row, _ in group for w in row.features.weights[k]],
            }
        example["impressions"] = {
            "sample_id": [row.sample_id for row, _ in group],
            "click": [row.click for row, _ in group],
            "conversion": [row.conversion for row, _ in group],
        }
        if ground_truth:
            example["impressions"]["ground_truth"] = {
                "pctr": [gt.pctr for _, gt in group],
                "pcvr": [gt.pcvr for _, gt in group],
                "conversion": [gt.conversion for _, gt in group],
            }
        out[group[0][0].sample_id] = example
    return out


def assert_examples_match(builder, raw_dir: str, ground_truth: bool = False) -> None:
    for split in ("train", "test"):
        expected = expected_examples(raw_dir, split, ground_truth)
        got = {}
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            got[int(example["impressions"]["sample_id"][0])] = example
        assert sorted(got) == sorted(expected)
        for key, want in expected.items():
            have = got[key]
            for name, value in want["impressions"].items():
                if name != "ground_truth":
                    np.testing.assert_array_equal(have["impressions"][name], value)
            if ground_truth:
                for name, value in want["impressions"]["ground_truth"].items():
                    np.testing.assert_allclose(
                        have["impressions"]["ground_truth"][name], value, rtol=1e-6
                    )
            for side, fields in (("user", F.USER_FIELDS), ("item", F.ITEM_FIELDS)):
                for field in fields:
                    w, h = want[side][field.id], have[side][field.id]
                    assert h["ids"].dtype == np.int64
                    np.testing.assert_array_equal(h["ids"], w["ids"])
                    if side == "item":
                        np.testing.assert_array_equal(h["lengths"], w["lengths"])
                    if field.weighted:
                        assert h["weights"].dtype == np.float32
                        np.testing.assert_array_equal(
                            h["weights"], np.array(w["weights"], np.float32)
                        )
                    else:
                        assert "weights" not in h
                        assert all(v == 1.0 for v in w["weights"])


def count_groups(raw_dir: str, split: str) -> int:
    """Examples of a split: the rows of each common_feature_index, wherever they
    are, cut into pieces of at most 256 (conversions without click left out)."""
    rows: collections.Counter = collections.Counter()
    path = raw.find_raw_file(raw_dir, f"sample_skeleton_{split}")
    for _, line, _ in raw.read_lines(path):
        _, click, conversion, cfi = line.split(b",", 4)[:4]
        if not (conversion == b"1" and click == b"0"):
            rows[cfi] += 1
    return sum(-(-n // MAX_GROUP_SIZE) for n in rows.values())


class AliCcpFullTest(tfds.testing.DatasetBuilderTestCase):
    """The ``full`` config on dummy_data/ as the manual download (train .csv,
    test .csv.gz; see make_dummy_data.py)."""

    DATASET_CLASS = ali_ccp.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["full"]
    # The check that builders use tf.io.gfile (for cloud storage) mocks
    # numpy.load everywhere; data_prep.convert works on local files only.
    MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False
    # train: 21 user contexts (plus a row of the first one appended after the
    # others: it joins the first context's example; the row after it, a
    # conversion without a click, is dropped); test: 23 user contexts.
    SPLITS = {"train": 21, "test": 23}


class AliCcpSyntheticTest(tfds.testing.DatasetBuilderTestCase):
    """The synthetic path (generate, convert, encode), on a small config."""

    DATASET_CLASS = ali_ccp.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [SMALL_SYNTHETIC]
    MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False  # as above

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # One example per user context (none holds 256 impressions).
        with tempfile.TemporaryDirectory() as tmp:
            synthetic_lib.generate(SMALL_SYNTHETIC.synthetic, tmp)
            cls.SPLITS = {split: count_groups(tmp, split) for split in ("train", "test")}
        assert all(n > 5 for n in cls.SPLITS.values()), cls.SPLITS


def test_dummy_data_split_sizes_agree_with_the_parser():
    sizes = {split: len(expected_examples(DUMMY_DATA, split)) for split in ("train", "test")}
    assert sizes == AliCcpFullTest.SPLITS


def _tarball(path: str, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _read(path: str) -> bytes:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()


@pytest.mark.slow
def test_tianchi_archives_as_manual_download_and_examples_match_the_parser(tmp_path):
    """The manual dir holds only sample_{train,test}.tar.gz (members in a
    subdirectory); every example equals what data_prep.raw parses."""
    manual = tmp_path / "manual"
    manual.mkdir()
    for split in ("train", "test"):
        members = {}
        for stem in ("sample_skeleton", "common_features"):
            path = raw.find_raw_file(DUMMY_DATA, f"{stem}_{split}")
            members[f"sample_{split}/{stem}_{split}.csv"] = _read(path)
        _tarball(str(manual / f"sample_{split}.tar.gz"), members)
    builder = ali_ccp.Builder(config="full", data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == (
        AliCcpFullTest.SPLITS
    )
    assert_examples_match(builder, DUMMY_DATA)
    # The converter's work directory is gone.
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ali_ccp", "downloads"]


@pytest.mark.slow
def test_synthetic_examples_match_the_parser_and_ground_truth(tmp_path):
    raw_dir = str(tmp_path / "raw")
    synthetic_lib.generate(SMALL_SYNTHETIC.synthetic, raw_dir)
    builder = ali_ccp.Builder(config=SMALL_SYNTHETIC, data_dir=str(tmp_path / "data"))
    builder.download_and_prepare()
    assert_examples_match(builder, raw_dir, ground_truth=True)


def test_missing_manual_files_name_what_is_missing(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in ("sample_skeleton_train.csv", "common_features_train.csv"):
        shutil.copy(os.path.join(DUMMY_DATA, name), manual / name)
    builder = ali_ccp.Builder(config="full", data_dir=str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="sample_test.tar.gz") as error:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
        )
    assert "tianchi.aliyun.com/dataset/408" in str(error.value)


def test_configs_as_documented():
    configs = ali_ccp.Builder.builder_configs
    assert sorted(configs) == ["full", "synthetic"]
    assert configs["full"].synthetic is None
    assert configs["synthetic"].synthetic.impressions == 100_000
    assert configs["synthetic"].synthetic.seed == 0


@pytest.mark.slow
def test_tfds_command_line_builds_the_dummy_data(tmp_path):
    """``tfds build <builder dir> --config=full --manual_dir=...`` as the README says."""
    tfds_cli = os.path.join(os.path.dirname(sys.executable), "tfds")
    result = subprocess.run(
        [
            tfds_cli,
            "build",
            "data_prep/tfds/ali_ccp",
            "--config=full",
            f"--manual_dir={DUMMY_DATA}",
            f"--data_dir={tmp_path}",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    builder = tfds.builder("ali_ccp/full", data_dir=str(tmp_path))
    assert builder.info.splits["train"].num_examples == 21
    assert builder.info.splits["test"].num_examples == 23


# A build of SMALL_SYNTHETIC killed (SIGKILL, no clean-up) while encoding, after
# the logs were generated and converted.
_KILLED_BUILD = """
import os, signal, sys
from data_prep.tfds.ali_ccp import ali_ccp_dataset_builder as ali_ccp
from tests.test_tfds_ali_ccp import SMALL_SYNTHETIC

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

ali_ccp.record_to_example = killed
ali_ccp.Builder(config=SMALL_SYNTHETIC, data_dir=sys.argv[1]).download_and_prepare()
"""


@pytest.mark.slow
def test_build_after_a_killed_build_reuses_its_work_and_removes_it(tmp_path, monkeypatch):
    """The work directory had a random name: a killed build leaked it (the
    converted data, GBs for `full`) and the next one converted from scratch."""
    data_dir = tmp_path / "data"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_BUILD, str(data_dir)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    (work,) = data_dir.glob("ali_ccp-work-*")
    assert (work / "converted" / "stats.json").exists()

    from data_prep import convert

    def no_work(*args):
        raise AssertionError("generated or converted again")

    monkeypatch.setattr(synthetic_lib, "generate", no_work)
    monkeypatch.setattr(convert, "_prepare_work_dir", no_work)
    builder = ali_ccp.Builder(config=SMALL_SYNTHETIC, data_dir=str(data_dir))
    builder.download_and_prepare()
    assert builder.info.splits["train"].num_examples > 5
    assert not [p.name for p in data_dir.iterdir() if p.name.startswith("ali_ccp-work")]
