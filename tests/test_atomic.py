import errno
import os

import pytest

from alexnet.atomic import atomic_path, write_text
from alexnet.errors import InputError


def test_a_written_file_gets_the_mode_open_would_give_it(tmp_path):
    previous = os.umask(0o022)
    try:
        write_text(tmp_path / "report.json", "{}")
        open(tmp_path / "plain.json", "w").close()
    finally:
        os.umask(previous)
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "report.json").stat().st_mode == (tmp_path / "plain.json").stat().st_mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_text(tmp_path / "model.json", "old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "model.json") as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed half-way")
    assert (tmp_path / "model.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
        (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1573376 vs 1573272"), "no space"),
        (OSError(errno.EROFS, "Read-only file system"), "not writable"),
    ],
)
def test_a_full_or_read_only_disk_is_one_line_naming_the_file_and_the_old_file_stays(tmp_path, error, message):
    write_text(tmp_path / "last.ckpt", "the previous checkpoint")
    with pytest.raises(InputError, match=f"last.ckpt: {message}"), atomic_path(tmp_path / "last.ckpt") as temporary:
        temporary.write_text("half a checkpoint")
        raise error
    assert (tmp_path / "last.ckpt").read_text() == "the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_folder_that_cannot_be_written_is_named(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(InputError, match="a file stands where a folder is needed"):
        write_text(tmp_path / "file" / "report.json", "{}")
