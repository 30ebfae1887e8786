"""Writes ``dummy_data/`` (checked in): the four raw files in the Tianchi format.

    python -m data_prep.tfds.ali_ccp.make_dummy_data

Small synthetic logs (data_prep.synthetic, without its ground-truth files, as
Tianchi has none), plus rows that exercise the builder's edge cases:

* train: a row of the first user context appended at the end (not consecutive
  with its context: it still joins that context's example) and a row with
  ``conversion=1, click=0`` (dropped, as the converter does);
* test: the files are gzipped (``.csv.gz``; written with mtime 0, so the
  bytes are reproducible).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile

from data_prep import synthetic

DUMMY_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dummy_data")
CONFIG = synthetic.SyntheticConfig(
    impressions=240,
    seed=7,
    impressions_per_row=6,
    num_users=20,
    num_items=50,
    behaviour_ids=4,
    pilot_impressions=20_000,
    progress_seconds=0,
)


def _lines(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        return f.read().splitlines()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        synthetic.generate(CONFIG, tmp)
        train = _lines(os.path.join(tmp, "sample_skeleton_train.csv"))
        sid = max(int(line.split(b",", 1)[0]) for line in train)
        first = train[0].split(b",", 3)
        # Same user context as the first row, after other contexts: a new example.
        train.append(b"%d,0,0,%s" % (sid + 1000, first[3]))
        # Conversion without click: dropped.
        train.append(b"%d,0,1,%s" % (sid + 1001, first[3]))
        os.makedirs(DUMMY_DATA, exist_ok=True)
        for name in os.listdir(DUMMY_DATA):
            os.remove(os.path.join(DUMMY_DATA, name))
        with open(os.path.join(DUMMY_DATA, "sample_skeleton_train.csv"), "wb") as f:
            f.write(b"\n".join(train) + b"\n")
        shutil.copy(os.path.join(tmp, "common_features_train.csv"), DUMMY_DATA)
        for stem in ("sample_skeleton_test", "common_features_test"):
            with open(os.path.join(tmp, f"{stem}.csv"), "rb") as f:
                data = f.read()
            with open(os.path.join(DUMMY_DATA, f"{stem}.csv.gz"), "wb") as f:
                f.write(gzip.compress(data, mtime=0))


if __name__ == "__main__":
    main()
