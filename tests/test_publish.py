"""data_prep.publish: a kill at every filesystem step of convert's finish and
publish sequence leaves a state that the rerun of the same command completes,
with the output a clean run gives and no leftovers (no ``.partial``, no
``.old-<pid>``)."""

from __future__ import annotations

import filecmp
import os
import shutil

import pytest

from data_prep import convert as convert_lib
from data_prep import publish
from data_prep.convert import ConvertConfig, ConvertError, convert
from tests.rawrows import simple_dataset, write_raw_dir

MUTATIONS = ("rename", "replace", "remove", "unlink", "rmdir")


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the converter catches a BaseException."""


def _convert(raw_dir, out_dir, **kwargs):
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("num_shards", 2)
    return convert(ConvertConfig(raw_dir=str(raw_dir), out_dir=str(out_dir), **kwargs))


class KillAt:
    """Counts the filesystem mutations (rename, replace, remove, unlink, rmdir:
    rmtree's too) from the moment the conversion starts finishing (vocabularies,
    stats, publish) and raises Killed instead of the ``k``-th one."""

    def __init__(self, monkeypatch, k: int | None):
        self.k, self.steps, self.armed = k, [], False
        for name in MUTATIONS:
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))
        real_finish = convert_lib._finish

        def finish(*args, **kwargs):
            self.armed = True
            return real_finish(*args, **kwargs)

        monkeypatch.setattr(convert_lib, "_finish", finish)

    def _wrap(self, name, real):
        def mutate(*args, **kwargs):
            if self.armed:
                if len(self.steps) == self.k:
                    self.armed = False
                    raise Killed(f"killed before {name}{args}")
                self.steps.append((name, args[0]))
            return real(*args, **kwargs)

        return mutate


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    sk, cf = simple_dataset(users=6, impressions_per_user=3)
    return write_raw_dir(str(tmp_path_factory.mktemp("raw") / "raw"), sk, cf)


@pytest.fixture(scope="module")
def reference(raw_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "data"
    _convert(raw_dir, out)
    return str(out)


def _files(root: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names
    )


def assert_same_as_reference(out: str, reference: str) -> None:
    deterministic = [f for f in _files(reference) if f != "convert_timings.json"]
    assert [f for f in _files(out) if f != "convert_timings.json"] == deterministic
    assert os.path.exists(os.path.join(out, "convert_timings.json"))
    for name in deterministic:  # shards, vocabularies and stats.json, byte for byte
        assert filecmp.cmp(os.path.join(out, name), os.path.join(reference, name), shallow=False)
    parent = os.path.dirname(out)
    leftovers = [n for n in os.listdir(parent) if n.startswith(os.path.basename(out) + ".")]
    assert leftovers == []


def _steps(monkeypatch, raw_dir, out, **kwargs) -> list:
    with monkeypatch.context() as m:
        counter = KillAt(m, None)
        _convert(raw_dir, out, **kwargs)
    return counter.steps


def test_the_sequence_covers_every_publish_step(raw_dir, tmp_path, monkeypatch):
    old = tmp_path / "data"
    _convert(raw_dir, old, min_count=1)
    steps = _steps(monkeypatch, raw_dir, old, overwrite=True)
    names = [(op, os.path.relpath(str(path), tmp_path)) for op, path in steps]
    assert ("replace", "data.partial/stats.json.tmp") in names  # the commit point
    renames = [n for n in names if n[0] == "rename"]
    assert renames == [("rename", "data"), ("rename", "data.partial")]  # the swap
    assert names[-1] == ("rmdir", f"data.old-{os.getpid()}")  # old copy removed last


@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
def test_kill_at_every_step_then_rerun(raw_dir, reference, tmp_path, monkeypatch, overwrite):
    probe = tmp_path / "probe"
    if overwrite:
        _convert(raw_dir, probe, min_count=1)  # another conversion in the way
    n = len(_steps(monkeypatch, raw_dir, probe, overwrite=overwrite))
    assert n > 10
    for k in range(n):
        out = tmp_path / f"out{k}"
        if overwrite:
            _convert(raw_dir, out, min_count=1)
        with monkeypatch.context() as m:
            KillAt(m, k)
            with pytest.raises(Killed):
                _convert(raw_dir, out, overwrite=overwrite)
        _convert(raw_dir, out, overwrite=overwrite)  # the same command again
        assert_same_as_reference(str(out), reference)
        shutil.rmtree(out)


def test_killed_overwrite_is_finished_by_a_rerun_without_redoing_work(
    raw_dir, reference, tmp_path, monkeypatch
):
    """Killed between the swap's two renames: the rerun renames the new copy into
    place and removes OUT.old-<pid> (the old dataset), joining nothing again."""
    out = tmp_path / "data"
    _convert(raw_dir, out, min_count=1)
    with monkeypatch.context() as m:
        counter = KillAt(m, None)
        real_rename = os.rename

        def rename(src, dst):
            if str(src).endswith(".partial"):
                raise Killed("between the two renames")
            real_rename(src, dst)

        m.setattr(os, "rename", rename)
        with pytest.raises(Killed):
            _convert(raw_dir, out, overwrite=True)
    assert counter.steps
    assert not out.exists() and os.path.isdir(f"{out}.old-{os.getpid()}")
    monkeypatch.setattr(convert_lib, "_join_task", lambda task: pytest.fail("work redone"))
    _convert(raw_dir, out, overwrite=True)
    assert_same_as_reference(str(out), reference)


def test_stale_old_dir_of_a_live_process_is_left_alone(tmp_path):
    out = str(tmp_path / "data")
    os.makedirs(f"{out}.old-1")  # pid 1 is alive
    os.makedirs(f"{out}.old-999999999")
    assert publish.stale_old_dirs(out) == [f"{out}.old-999999999"]


def test_overwrite_onto_a_regular_file_is_refused(raw_dir, tmp_path):
    path = tmp_path / "data"
    path.write_text("not a dataset")
    with pytest.raises(ConvertError, match=f"{path} is a file, not a dataset directory"):
        _convert(raw_dir, path, overwrite=True)
    assert path.read_text() == "not a dataset"
    assert not os.path.exists(f"{path}.partial")


def _tree(root) -> dict:
    return {name: open(os.path.join(root, name), "rb").read() for name in _files(str(root))}


@pytest.mark.parametrize("where", ["raw_dir", "its_parent"])
def test_overwrite_never_replaces_the_raw_logs(raw_dir, tmp_path, where):
    """--out_dir at (or above) the raw logs: publishing would remove them."""
    raw = shutil.copytree(raw_dir, tmp_path / "logs" / "raw")
    before = _tree(tmp_path / "logs")
    out = raw if where == "raw_dir" else tmp_path / "logs"
    with pytest.raises(ConvertError, match=r"--out_dir=.* holds .*sample_skeleton_train"):
        _convert(raw, out, overwrite=True)
    assert _tree(tmp_path / "logs") == before  # nothing removed, nothing added
    assert sorted(os.listdir(tmp_path)) == ["logs"]  # no .partial


def test_overwrite_never_replaces_the_vocabulary_it_reads(raw_dir, reference, tmp_path):
    data = shutil.copytree(reference, tmp_path / "data")
    with pytest.raises(
        ConvertError, match=r"--out_dir=.*data holds .*data, which this conversion reads"
    ):
        _convert(raw_dir, data, vocab_from=str(data), overwrite=True)
    assert _tree(data) == _tree(reference)


def test_overwrite_replaces_only_a_dataset(raw_dir, reference, tmp_path):
    """A directory without stats.json is not a dataset: --overwrite refuses to
    remove it (a typo in --out_dir must not delete a user's files); an empty
    directory is simply filled."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(
            ConvertError, match=r"mine holds no converted dataset \(no stats.json\)"
        ):
            _convert(raw_dir, mine, overwrite=overwrite)
        assert _files(str(mine)) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _convert(raw_dir, empty)
    assert_same_as_reference(str(empty), reference)
