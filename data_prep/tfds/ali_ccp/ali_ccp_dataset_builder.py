"""TFDS builder for Ali-CCP (the ESMM paper's data set), real or synthetic.

The raw rows go through the repository's own pipeline: ``data_prep.convert``
(which parses them with ``data_prep.raw``) joins each split's skeleton rows with
their common-feature rows into grouped TFRecords in a work directory, with
bounded memory (a partitioned hash join; see that module), and this builder
re-encodes those records as TFDS examples. The work directory
(``ali_ccp-work-<config>`` in the data dir) is removed after a successful
build; a killed build leaves it, and the next one resumes from it. One TFDS example is one converter
record: a user context with its impressions (at most 256), wherever they are in
the raw files. See README.md here.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from data_prep import convert as convert_lib
from data_prep import raw, raw_layout
from data_prep import synthetic as synthetic_lib
from esmm_tf import data_layout
from esmm_tf import features as F

# The raw files of one split (``.csv`` or ``.csv.gz``), and the Tianchi archive
# that holds them.
RAW_STEMS = (raw_layout.SKELETON, raw_layout.COMMON)
ARCHIVES = {split: f"sample_{split}.tar.gz" for split in data_layout.SPLITS}

# The ``synthetic`` config: 100k impressions (half train, half test) drawn with
# data_prep.synthetic's defaults and seed 0.
SYNTHETIC = synthetic_lib.SyntheticConfig(impressions=100_000, seed=0, progress_seconds=0)


@dataclasses.dataclass(eq=False)
class AliCcpConfig(tfds.core.BuilderConfig):
    """``synthetic``: generate raw logs with these settings instead of reading
    the manually downloaded Tianchi files."""

    synthetic: synthetic_lib.SyntheticConfig | None = None
    # Processes of the converter's join (0: all cores). More than one starts
    # worker processes with "spawn": a script that builds the data set then needs
    # the usual ``if __name__ == "__main__":`` guard.
    convert_workers: int = 0


class Builder(tfds.core.GeneratorBasedBuilder):
    """Ali-CCP: impressions with click and conversion labels, grouped by user context."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        AliCcpConfig(
            name="full",
            description=(
                "The real Ali-CCP logs from Tianchi (manual download; 84M impressions "
                "in the paper's count)."
            ),
        ),
        AliCcpConfig(
            name="synthetic",
            description=(
                f"{SYNTHETIC.impressions:,} synthetic impressions in the raw Ali-CCP format "
                f"(data_prep.synthetic, seed {SYNTHETIC.seed}), with the true pCTR/pCVR of "
                "every impression; generated locally, nothing to download."
            ),
            synthetic=SYNTHETIC,
            convert_workers=1,  # a few seconds; no worker processes
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "full"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Only the `full` config needs this (`synthetic` is generated locally).
    1. Download the Ali-CCP data set ("Alibaba Click and Conversion Prediction")
       from Tianchi, https://tianchi.aliyun.com/dataset/408 (a free account is
       needed): `sample_train.tar.gz` and `sample_test.tar.gz`.
    2. Put them in `manual_dir` (default `~/tensorflow_datasets/downloads/manual/`,
       or `tfds build --manual_dir=DIR`), either as the two archives or
       extracted, so that `manual_dir` holds `sample_skeleton_train.csv`,
       `common_features_train.csv`, `sample_skeleton_test.csv` and
       `common_features_test.csv` (`.csv.gz` works too). Extracted files are used
       when present; otherwise the archives are extracted into the TFDS
       extraction directory first.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        impressions = {
            "sample_id": _vector(np.int64, "raw sample_id of each impression"),
            "click": _vector(np.int64, "1 if the impression was clicked"),
            "conversion": _vector(np.int64, "1 if the click led to a purchase"),
        }
        if self.builder_config.synthetic is not None:
            impressions["ground_truth"] = {
                "pctr": _vector(np.float32, "true click probability"),
                "pcvr": _vector(np.float32, "true conversion probability given a click"),
                "conversion": _vector(
                    np.int64, "counterfactual conversion: would it convert if clicked"
                ),
            }
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "user": {f.id: _field_feature(f, per_impression=False) for f in F.USER_FIELDS},
                    "impressions": impressions,
                    "item": {f.id: _field_feature(f, per_impression=True) for f in F.ITEM_FIELDS},
                }
            ),
            supervised_keys=None,  # two labels per impression (click, conversion)
            homepage="https://tianchi.aliyun.com/dataset/408",
        )

    def _download_and_prepare(self, dl_manager, *args, **kwargs):
        # The converter's output lives only as long as the generation, in a
        # work directory next to the prepared data (same disk, sized for it).
        # Its name is fixed per config: a killed build leaves it, and the next
        # build reuses the generated logs and the converter resumes (or finds
        # its output complete) instead of starting over; removed after success.
        self._work_dir = work_dir(self.data_dir_root, self.builder_config.name)
        self._work_dir.mkdir(parents=True, exist_ok=True)
        try:
            result = super()._download_and_prepare(dl_manager, *args, **kwargs)
        finally:
            work = self._work_dir
            del self._work_dir
        shutil.rmtree(work)
        return result

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        raw_dir = self._work_dir / "raw"
        synthetic = self.builder_config.synthetic
        if synthetic is not None:
            if not _generated(raw_dir, synthetic):  # else kept from a killed build
                synthetic_lib.generate(synthetic, str(raw_dir))
        else:
            if raw_dir.exists():  # links made by a killed build: made again
                shutil.rmtree(raw_dir)
            _link_manual_files(dl_manager, raw_dir)
        data_dir = self._work_dir / "converted"
        convert_lib.convert(
            convert_lib.ConvertConfig(
                raw_dir=str(raw_dir),
                out_dir=str(data_dir),
                workers=self.builder_config.convert_workers,
            )
        )
        ground_truth = self.builder_config.synthetic is not None
        return {
            split: self._generate_examples(str(data_dir), split, ground_truth)
            for split in data_layout.SPLITS
        }

    def _generate_examples(
        self, data_dir: str, split: str, ground_truth: bool
    ) -> Iterator[tuple[str, dict]]:
        for shard, path in enumerate(data_layout.shard_files(data_dir, split)):
            for i, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
                example = tf.train.Example.FromString(record)
                yield f"{shard}-{i}", record_to_example(example, ground_truth)


def work_dir(data_dir_root, config_name: str) -> epath.Path:
    """The builder's work directory (raw logs, converter output) for a config."""
    return epath.Path(data_dir_root) / f"ali_ccp-work-{config_name}"


def _generated(raw_dir: epath.Path, config: synthetic_lib.SyntheticConfig) -> bool:
    """Whether ``raw_dir`` holds a complete synthetic output of ``config``."""
    path = raw_dir / synthetic_lib.CONFIG_FILE
    if not path.exists():
        return False
    try:
        written = json.loads(path.read_text())["config"]
    except (ValueError, KeyError, TypeError):
        return False
    return written == dataclasses.asdict(config.resolved())


def _vector(dtype, doc: str) -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=(None,), dtype=dtype, doc=doc)


def _field_feature(field: F.Field, per_impression: bool) -> dict:
    name = f"{field.id} ({field.description})"
    if per_impression:
        out = {
            "ids": _vector(np.int64, f"{name}: raw feature ids of all impressions, in order"),
            "lengths": _vector(np.int64, f"{name}: number of ids of each impression"),
        }
    else:
        out = {"ids": _vector(np.int64, f"{name}: raw feature ids")}
    if field.weighted:
        out["weights"] = _vector(np.float32, f"{name}: raw values, one per id")
    return out


def record_to_example(record: tf.train.Example, ground_truth: bool = False) -> dict:
    """One grouped converter record (layout in esmm_tf/features.py) as a TFDS
    example: the same arrays under nested keys."""
    feature = record.features.feature

    def ints(key: str) -> np.ndarray:
        return np.array(feature[key].int64_list.value, np.int64) if key in feature else _NO_INTS

    def floats(key: str) -> np.ndarray:
        return np.array(feature[key].float_list.value, np.float32) if key in feature else _NO_FLT

    def field_arrays(field: F.Field) -> dict:
        out = {"ids": ints(field.ids_key)}
        if not field.user_side:
            out["lengths"] = ints(field.lengths_key)
        if field.weighted:
            out["weights"] = floats(field.weights_key)
        return out

    impressions = {
        "sample_id": ints(F.SAMPLE_ID),
        "click": ints(F.CLICK),
        "conversion": ints(F.CONVERSION),
    }
    if ground_truth:
        impressions["ground_truth"] = {
            "pctr": floats(F.GT_PCTR),
            "pcvr": floats(F.GT_PCVR),
            "conversion": ints(F.GT_CONVERSION),
        }
    return {
        "user": {f.id: field_arrays(f) for f in F.USER_FIELDS},
        "impressions": impressions,
        "item": {f.id: field_arrays(f) for f in F.ITEM_FIELDS},
    }


_NO_INTS = np.zeros(0, np.int64)
_NO_FLT = np.zeros(0, np.float32)


def _link_manual_files(dl_manager: tfds.download.DownloadManager, raw_dir: epath.Path) -> None:
    """Links the four raw files into ``raw_dir`` (one directory, as the converter
    wants), from ``manual_dir`` or, failing that, from the extracted archive."""
    manual_dir = epath.Path(dl_manager.manual_dir)
    raw_dir.mkdir(parents=True)
    for split in data_layout.SPLITS:
        found = {stem: _find(manual_dir, f"{stem}_{split}", recursive=False) for stem in RAW_STEMS}
        if None in found.values():
            archive = manual_dir / ARCHIVES[split]
            if not archive.exists():
                missing = [f"{stem}_{split}.csv" for stem, path in found.items() if path is None]
                raise FileNotFoundError(
                    f"{manual_dir} holds neither {' nor '.join(missing)} (or .csv.gz) nor "
                    f"{ARCHIVES[split]}.\n{Builder.MANUAL_DOWNLOAD_INSTRUCTIONS}"
                )
            extracted = epath.Path(dl_manager.extract(archive))
            for stem, path in found.items():
                if path is None:
                    found[stem] = _find(extracted, f"{stem}_{split}", recursive=True)
                    if found[stem] is None:
                        raise FileNotFoundError(
                            f"{archive} holds no {stem}_{split}.csv (or .csv.gz)"
                        )
        for path in found.values():
            # The converter reads local files; epath has no symlinks.
            pathlib.Path(raw_dir, path.name).symlink_to(pathlib.Path(path).resolve())


def _find(directory: epath.Path, stem: str, recursive: bool) -> epath.Path | None:
    """``data_prep.raw.find_raw_file`` in ``directory`` or, when ``recursive``, in
    the first directory under it (sorted) that holds ``stem.csv(.gz)``."""
    directories = [pathlib.Path(directory)]
    if recursive:  # epath has no "**"
        names = (f"{stem}.csv", f"{stem}.csv.gz")
        directories = sorted({p.parent for n in names for p in pathlib.Path(directory).rglob(n)})
    for d in directories:
        path = raw.find_raw_file(str(d), stem, required=False)
        if path is not None:
            return epath.Path(path)
    return None
