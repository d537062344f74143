"""Safe extraction and placement of archive contents into a dataset's layout."""
import io
import os
import tarfile
import zipfile

import pytest
from archive_server import tar_bytes, zip_bytes

from datasets.prepare.sources import Place
from datasets.prepare.unpack import (
    STATE_DIR,
    LayoutMismatch,
    UnsafeArchiveError,
    extract,
    is_placed,
    mark_placed,
    merge_move,
    place_archive,
)


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("member", ["../escaped.txt", "inner/../../escaped.txt", "/tmp/escaped_prepare_test.txt"])
def test_tar_members_leaving_the_folder_are_refused(tmp_path, member):
    archive = write(tmp_path / "evil.tar.gz", tar_bytes({"ok/a.txt": b"a", member: b"evil"}))
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(UnsafeArchiveError, match="outside the extraction folder"):
        extract(archive, str(dest), progress=False)
    assert not (tmp_path / "deep" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert not os.path.exists("/tmp/escaped_prepare_test.txt")


def test_zip_members_leaving_the_folder_are_refused(tmp_path):
    archive = write(tmp_path / "evil.zip", zip_bytes({"../escaped.txt": b"evil"}))
    with pytest.raises(UnsafeArchiveError, match="outside the extraction folder"):
        extract(archive, str(tmp_path / "dest"), progress=False)
    assert not (tmp_path / "escaped.txt").exists()


def test_links_in_archives_are_refused(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("images/passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    archive = write(tmp_path / "link.tar", buffer.getvalue())
    with pytest.raises(UnsafeArchiveError, match="is a link"):
        extract(archive, str(tmp_path / "dest"), progress=False)

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        info = zipfile.ZipInfo("images/passwd")
        info.external_attr = (0o120777 << 16)
        bundle.writestr(info, "/etc/passwd")
    archive = write(tmp_path / "link.zip", buffer.getvalue())
    with pytest.raises(UnsafeArchiveError, match="is a link"):
        extract(archive, str(tmp_path / "dest2"), progress=False)


def test_a_file_that_is_no_archive_is_reported(tmp_path):
    archive = write(tmp_path / "page.tar.gz", b"<html>Not found</html>")
    with pytest.raises(LayoutMismatch, match="neither a zip nor a tar"):
        extract(archive, str(tmp_path / "dest"), progress=False)


def test_members_are_placed_at_their_targets_and_staging_is_removed(tmp_path):
    archive = write(tmp_path / "dtd.tar.gz", tar_bytes({
        "dtd/images/banded/a.jpg": b"1", "dtd/images/dotted/b.jpg": b"2", "dtd/labels/labels_joint_anno.txt": b"x",
    }))
    folder = tmp_path / "data" / "dtd"
    placed = place_archive(archive, (Place("dtd", ""),), str(folder), {"image_dir": "images"}, progress=False)
    assert sorted(placed) == ["images", "labels"]
    assert (folder / "images/banded/a.jpg").read_bytes() == b"1"
    assert (folder / "labels/labels_joint_anno.txt").read_bytes() == b"x"
    assert os.listdir(folder / STATE_DIR / "staging") == []


def test_targets_name_module_attributes_and_nested_archives_are_unpacked(tmp_path):
    inner = tar_bytes({"101_ObjectCategories/accordion/image_0001.jpg": b"img"})
    archive = write(tmp_path / "caltech-101.zip", zip_bytes({
        "caltech-101/101_ObjectCategories.tar.gz": inner, "caltech-101/Annotations.tar": b"unused",
    }))
    folder = tmp_path / "caltech-101"
    places = (Place("caltech-101/101_ObjectCategories.tar.gz", unpack=(Place("101_ObjectCategories", "{image_dir}"),)),)
    placed = place_archive(archive, places, str(folder), {"image_dir": "pictures"}, progress=False)
    assert placed == ["pictures"]
    assert (folder / "pictures/accordion/image_0001.jpg").read_bytes() == b"img"
    assert sorted(os.listdir(folder)) == [STATE_DIR, "pictures"]


def test_an_archive_without_the_expected_member_says_what_it_holds(tmp_path):
    archive = write(tmp_path / "a.tar.gz", tar_bytes({"other/x.jpg": b"1"}))
    with pytest.raises(LayoutMismatch, match=r"has no 'jpg'.*\['other'\]"):
        place_archive(archive, (Place("jpg", "{image_dir}"),), str(tmp_path / "f"), {"image_dir": "jpg"},
                      progress=False)


def test_merge_move_keeps_extra_files_and_replaces_same_named_ones(tmp_path):
    write(tmp_path / "src/a/new.jpg", b"new")
    write(tmp_path / "src/a/same.jpg", b"fresh")
    write(tmp_path / "dst/a/same.jpg", b"stale")
    write(tmp_path / "dst/a/extra.jpg", b"mine")
    merge_move(str(tmp_path / "src"), str(tmp_path / "dst"))
    assert (tmp_path / "dst/a/new.jpg").read_bytes() == b"new"
    assert (tmp_path / "dst/a/same.jpg").read_bytes() == b"fresh"
    assert (tmp_path / "dst/a/extra.jpg").read_bytes() == b"mine"
    assert not (tmp_path / "src").exists()


def test_placed_marker_requires_what_was_placed_to_still_exist(tmp_path):
    folder = tmp_path / "ds"
    write(folder / "images/a.jpg", b"1")
    write(folder / "split.json", b"{}")
    assert not is_placed(str(folder), "x.tar")
    mark_placed(str(folder), "x.tar", ["images", "split.json"])
    assert is_placed(str(folder), "x.tar")
    os.remove(folder / "split.json")
    assert not is_placed(str(folder), "x.tar")
