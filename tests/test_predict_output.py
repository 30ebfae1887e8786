"""esmm_tf.predict's --output: nothing a user already has is overwritten by
mistake (checked before any scoring)."""

from __future__ import annotations

import pytest

from esmm_tf.predict import check_output


@pytest.fixture
def dirs(tmp_path):
    data, run, export = (tmp_path / name for name in ("data", "run", "export"))
    for d in (data / "test", run, export):
        d.mkdir(parents=True)
    shard = data / "test" / "part-00000-of-00001.tfrecord"
    shard.write_bytes(b"records")
    return data, run, export


@pytest.mark.parametrize("where", ["data", "run", "export"])
def test_a_path_inside_the_data_the_run_or_the_export_is_refused(dirs, where):
    data, run, export = dirs
    inside = {"data": data / "test" / "part-00000-of-00001.tfrecord", "run": run / "x.csv"}
    inside["export"] = export / "new" / "p.csv"
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"is inside --(data_dir|model_dir|saved_model)="):
            check_output(str(inside[where]), str(data), str(run), str(export), overwrite)
    assert (data / "test" / "part-00000-of-00001.tfrecord").read_bytes() == b"records"


def test_an_existing_file_needs_overwrite_and_must_be_predictions(dirs, tmp_path):
    data, run, _ = dirs
    out = tmp_path / "day.csv"
    check_output(str(out), str(data), str(run))  # new: fine
    out.write_text("sample_id,ctr,cvr,ctcvr\n1,0.1,0.2,0.02\n")
    with pytest.raises(ValueError, match=r"day.csv exists; pass --overwrite"):
        check_output(str(out), str(data), str(run))
    check_output(str(out), str(data), str(run), overwrite=True)  # a predictions file
    other = tmp_path / "notes.csv"
    other.write_text("user,revenue\n")
    with pytest.raises(ValueError, match=r"notes.csv is not a predictions file"):
        check_output(str(other), str(data), str(run), overwrite=True)
    with pytest.raises(ValueError, match=r"is a directory; give a file path"):
        check_output(str(tmp_path), str(data), str(run), overwrite=True)
