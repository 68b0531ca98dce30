"""Issue 25, class 3 (locks): a lock cannot be turned against a file, and deleting its details file lets no
second writer in."""

from __future__ import annotations

import pytest

from nhllib.store.locks import FolderLock, LockedError, lock_path

from tests.training.test_bad_inputs import _hold_lock


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious.csv"
    target.write_text("precious\n")
    link = lock_path(tmp_path / "study")
    link.symlink_to(target)
    with pytest.raises(LockedError, match=rf"the lock file {link} is a symbolic link.*nothing was written through it"):
        FolderLock(tmp_path / "study", "study driver").acquire()
    assert target.read_text() == "precious\n" and link.is_symlink()  # neither truncated nor deleted
    lock_path(tmp_path / "x").symlink_to(tmp_path / "nowhere")
    with pytest.raises(LockedError, match="symbolic link"):
        FolderLock(tmp_path / "x", "run").acquire()
    assert not (tmp_path / "nowhere").exists()  # a dangling link is not followed to create its target


def test_a_lock_file_that_is_a_folder_is_refused(tmp_path):
    lock_path(tmp_path / "study").mkdir()
    with pytest.raises(LockedError, match="is not a regular file"):
        FolderLock(tmp_path / "study", "study driver").acquire()


def test_deleting_a_held_lock_file_lets_no_second_writer_in(tmp_path):
    holder = _hold_lock(tmp_path / "study")
    try:
        lock_path(tmp_path / "study").unlink()  # what a tidy-up script or a user might do
        with pytest.raises(LockedError, match="in use by another"):
            FolderLock(tmp_path / "study", "study driver").acquire()
    finally:
        holder.kill()
        holder.wait()
    with FolderLock(tmp_path / "study", "study driver") as lock:
        assert lock.held


def test_a_blank_folder_is_refused():
    for blank in ("", " "):
        with pytest.raises(ValueError, match="non-blank path"):
            FolderLock(blank, "study driver").acquire()
