"""Downloads of the dataset-preparation tool, served by a local HTTP server: verification, resume, mirrors."""
import os

import pytest
from archive_server import ArchiveServer, md5, sha256

from datasets.prepare.fetch import ChecksumError, DownloadError, Fetcher, IncompleteDownload, ManualFileNeeded
from datasets.prepare.sources import GDRIVE, Download

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
def server():
    with ArchiveServer() as running:
        yield running


def make_fetcher(tmp_path, logs=None, **kwargs):
    return Fetcher(str(tmp_path / "downloads"), progress=False, log=(logs.append if logs is not None else print),
                   **kwargs)


def test_download_is_verified_recorded_and_not_repeated(tmp_path, server):
    server.files["a.tar.gz"] = PAYLOAD
    download = Download("a.tar.gz", (server.url("a.tar.gz"),), "test", md5=md5(PAYLOAD), sha256=sha256(PAYLOAD))
    fetcher = make_fetcher(tmp_path)
    path = fetcher.fetch(download)
    assert path == str(tmp_path / "downloads" / "a.tar.gz")
    assert open(path, "rb").read() == PAYLOAD
    assert not os.path.exists(fetcher.partial_path(download))
    assert fetcher.fetch(download) == path
    assert len(server.requests) == 1  # the second fetch used the verified copy


def test_checksum_mismatch_is_a_clear_error_and_the_bad_file_is_not_used(tmp_path, server):
    good = PAYLOAD
    server.files["a.zip"] = b"an error page, not the archive"
    download = Download("a.zip", (server.url("a.zip"),), "test", sha256=sha256(good))
    fetcher = make_fetcher(tmp_path)
    with pytest.raises(ChecksumError) as caught:
        fetcher.fetch(download)
    message = str(caught.value)
    assert sha256(good) in message and sha256(b"an error page, not the archive") in message
    assert "does not match" in message and "put it at" in message
    assert not os.path.exists(fetcher.final_path(download))
    assert open(fetcher.final_path(download) + ".rejected", "rb").read() == b"an error page, not the archive"
    # Once the source serves the right bytes, the next run downloads afresh (no Range into the rejected bytes).
    server.files["a.zip"] = good
    assert open(fetcher.fetch(download), "rb").read() == good
    assert server.requests[-1] == ("a.zip", None)


def test_interrupted_download_keeps_the_partial_file_and_resumes_it(tmp_path, server):
    server.files["big.tar"] = PAYLOAD
    server.cut_after["big.tar"] = 3000
    download = Download("big.tar", (server.url("big.tar"),), "test", md5=md5(PAYLOAD))
    fetcher = make_fetcher(tmp_path)
    with pytest.raises(IncompleteDownload) as caught:
        fetcher.fetch(download)
    assert "3000 of 10240 bytes" in str(caught.value) and "again" in str(caught.value)
    partial = fetcher.partial_path(download)
    assert open(partial, "rb").read() == PAYLOAD[:3000]

    path = fetcher.fetch(download)
    assert server.requests[-1] == ("big.tar", "bytes=3000-")
    assert open(path, "rb").read() == PAYLOAD
    assert not os.path.exists(partial)


def test_a_server_that_ignores_range_gives_the_whole_file_again(tmp_path, server):
    server.files["big.tar"] = PAYLOAD
    server.ignore_range = True
    download = Download("big.tar", (server.url("big.tar"),), "test", md5=md5(PAYLOAD))
    fetcher = make_fetcher(tmp_path)
    os.makedirs(os.path.dirname(fetcher.partial_path(download)))
    with open(fetcher.partial_path(download), "wb") as handle:
        handle.write(PAYLOAD[:1000])
    assert open(fetcher.fetch(download), "rb").read() == PAYLOAD
    assert server.requests[-1] == ("big.tar", "bytes=1000-")


def test_a_complete_partial_file_is_finished_without_new_bytes(tmp_path, server):
    server.files["a.tar"] = PAYLOAD
    download = Download("a.tar", (server.url("a.tar"),), "test", md5=md5(PAYLOAD))
    fetcher = make_fetcher(tmp_path)
    os.makedirs(os.path.dirname(fetcher.partial_path(download)))
    with open(fetcher.partial_path(download), "wb") as handle:
        handle.write(PAYLOAD)  # a run stopped between the last byte and the verification
    assert open(fetcher.fetch(download), "rb").read() == PAYLOAD  # the server answered 416


def test_the_mirror_is_used_when_the_official_source_fails(tmp_path, server):
    server.files["mirror/a.tar"] = PAYLOAD
    download = Download("a.tar", (server.url("dead/a.tar"), server.url("mirror/a.tar")), "test", md5=md5(PAYLOAD))
    logs = []
    path = make_fetcher(tmp_path, logs).fetch(download)
    assert open(path, "rb").read() == PAYLOAD
    assert [request[0] for request in server.requests] == ["dead/a.tar", "mirror/a.tar"]


def test_when_every_source_fails_the_error_lists_them_and_says_where_to_put_the_file(tmp_path, server):
    download = Download("a.tar", (server.url("x/a.tar"), GDRIVE + "FILEID"), "test")

    def failing_gdrive(file_id, output, progress):
        raise DownloadError("quota exceeded")

    fetcher = make_fetcher(tmp_path, gdrive=failing_gdrive)
    with pytest.raises(DownloadError) as caught:
        fetcher.fetch(download)
    message = str(caught.value)
    assert "404" in message and "quota exceeded" in message
    assert "https://drive.google.com/file/d/FILEID/view" in message
    assert fetcher.final_path(download) in message


def test_size_from_the_table_is_checked(tmp_path, server):
    server.files["a.tar"] = PAYLOAD
    download = Download("a.tar", (server.url("a.tar"),), "test", size=len(PAYLOAD) + 5)
    with pytest.raises(ChecksumError, match=f"size {len(PAYLOAD)} bytes, expected {len(PAYLOAD) + 5}"):
        make_fetcher(tmp_path).fetch(download)


def test_without_a_known_checksum_the_sha256_is_printed(tmp_path, server):
    server.files["a.tar"] = PAYLOAD
    logs = []
    make_fetcher(tmp_path, logs).fetch(Download("a.tar", (server.url("a.tar"),), "test"))
    assert any(sha256(PAYLOAD) in line and "pin" in line for line in logs)


def test_file_urls_work(tmp_path):
    source = tmp_path / "local.tar"
    source.write_bytes(PAYLOAD)
    download = Download("a.tar", (source.as_uri(),), "test", md5=md5(PAYLOAD))
    assert open(make_fetcher(tmp_path).fetch(download), "rb").read() == PAYLOAD


def test_google_drive_sources_go_through_the_injected_downloader(tmp_path):
    calls = []

    def fake_gdrive(file_id, output, progress):
        calls.append(file_id)
        with open(output, "wb") as handle:
            handle.write(PAYLOAD)

    download = Download("split.json", (GDRIVE + "abc123",), "test", sha256=sha256(PAYLOAD))
    fetcher = make_fetcher(tmp_path, gdrive=fake_gdrive)
    assert open(fetcher.fetch(download), "rb").read() == PAYLOAD
    assert calls == ["abc123"]


def test_a_copy_put_in_place_by_hand_is_verified_before_use(tmp_path, server):
    download = Download("a.tar", (server.url("a.tar"),), "test", md5=md5(PAYLOAD))
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "a.tar").write_bytes(PAYLOAD[:-1] + b"X")
    fetcher = make_fetcher(tmp_path)
    with pytest.raises(ChecksumError, match="does not match"):
        fetcher.fetch(download, search_dirs=(str(folder),))
    (folder / "a.tar").write_bytes(PAYLOAD)
    assert fetcher.fetch(download, search_dirs=(str(folder),)) == str(folder / "a.tar")
    assert server.requests == []


def test_a_file_without_sources_must_be_put_in_place(tmp_path):
    download = Download("ILSVRC2012_img_val.tar", (), "image-net.org")
    with pytest.raises(ManualFileNeeded, match="cannot be downloaded automatically"):
        make_fetcher(tmp_path).fetch(download)


def test_a_partial_http_download_is_not_taken_for_a_finished_google_drive_one(tmp_path, server):
    def gdown_like(file_id, output, progress):
        if os.path.exists(output):  # gdown with resume=True treats an existing output as done
            return
        with open(output, "wb") as handle:
            handle.write(PAYLOAD)

    download = Download("a.zip", (GDRIVE + "abc", server.url("a.zip")), "test")  # no checksum to catch it
    fetcher = make_fetcher(tmp_path, gdrive=gdown_like)
    os.makedirs(os.path.dirname(fetcher.partial_path(download)))
    with open(fetcher.partial_path(download), "wb") as handle:  # left by the mirror in an earlier run
        handle.write(PAYLOAD[:100])
    assert open(fetcher.fetch(download), "rb").read() == PAYLOAD
