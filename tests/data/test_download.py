import hashlib

import pytest

import alexnet.data.download as downloads
from alexnet.data import cifar
from alexnet.data.download import download
from alexnet.errors import InputError


def test_download_verifies_md5_and_renames_into_place(tmp_path):
    source = tmp_path / "served.bin"
    source.write_bytes(b"official bytes")
    target = tmp_path / "out" / "file.bin"
    download([source.as_uri()], target, hashlib.md5(b"official bytes").hexdigest())
    assert target.read_bytes() == b"official bytes"
    assert not list(target.parent.glob("*.part"))


def test_checksum_mismatch_leaves_nothing(tmp_path):
    source = tmp_path / "served.bin"
    source.write_bytes(b"tampered bytes")
    target = tmp_path / "out" / "file.bin"
    with pytest.raises(InputError, match="md5 .* does not match the published 0123"):
        download([source.as_uri()], target, "0123" + "0" * 28)
    assert not target.exists()
    assert not target.parent.exists()  # the folder made for it went too


def test_a_failed_download_leaves_no_empty_folders_it_made(tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    target = kept / "made" / "deeper" / "file.bin"
    with pytest.raises(InputError, match="could not download file.bin"):
        download([(tmp_path / "missing.bin").as_uri()], target, "0" * 32, attempts=1)
    assert kept.exists() and not (kept / "made").exists()  # what was there before stays


def test_a_partial_download_keeps_its_folder_to_resume_from(tmp_path, monkeypatch):
    def interrupted(url, partial, *, timeout_s):
        partial.write_bytes(b"first half")
        raise OSError("connection reset")

    monkeypatch.setattr(downloads, "_fetch", interrupted)
    target = tmp_path / "out" / "file.bin"
    with pytest.raises(InputError, match="connection reset"):
        download(["http://mirror.invalid/file.bin"], target, "0" * 32, attempts=1)
    assert (target.parent / "file.bin.part").read_bytes() == b"first half"


def test_falls_back_to_the_next_mirror(tmp_path):
    source = tmp_path / "served.bin"
    source.write_bytes(b"data")
    target = tmp_path / "file.bin"
    download(
        [(tmp_path / "missing.bin").as_uri(), source.as_uri()], target, hashlib.md5(b"data").hexdigest(), attempts=1
    )
    assert target.read_bytes() == b"data"


def test_cifar_download_uses_the_official_url_and_md5(tmp_path, monkeypatch):
    seen = {}

    def fake_download(urls, destination, md5):
        seen.update(urls=urls, md5=md5)
        raise InputError("offline")

    monkeypatch.setattr(cifar, "download", fake_download)
    with pytest.raises(InputError, match="offline"):
        cifar.load_cifar("cifar10", tmp_path)
    assert seen == {
        "urls": ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"],
        "md5": "c58f30108f718f92721af3b95e74349a",
    }
