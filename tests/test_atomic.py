import os

import pytest

from alexnet.atomic import atomic_path, write_text


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
