"""Atomic writes: all or nothing under the final name, with the umask's ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from keras_cvae.atomic import atomic_directory, atomic_path, atomic_write_text, publish_numbered_directory


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_get_the_umask_permissions_not_mkstemps_0600(tmp_path, umask_022):
    """Run-dir files get the umask's permissions, not mkstemp's 0600."""
    atomic_write_text(tmp_path / "history.csv", "epoch\n")
    with atomic_path(tmp_path / "model.keras") as tmp:
        tmp.write_bytes(b"x")
    for name in ("history.csv", "model.keras"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_directories_get_the_umask_permissions_not_mkdtemps_0700(tmp_path, umask_022):
    with atomic_directory(tmp_path / "1") as tmp:
        (tmp / "inner").mkdir()
        (tmp / "inner" / "file").write_text("x")
    assert stat.S_IMODE((tmp_path / "1").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "1" / "inner").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "1" / "inner" / "file").stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "good")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert (tmp_path / "a.txt").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_numbered_directory_skips_numbers_taken_meanwhile(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "keep").write_text("first")
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "keep").write_text("second")
    published = publish_numbered_directory(tmp_path, lambda d: (d / "new").write_text("third"), first=1)
    assert published == tmp_path / "3" and (published / "new").read_text() == "third"
    assert (tmp_path / "1" / "keep").read_text() == "first" and (tmp_path / "2" / "keep").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2", "3"]
