"""Damaged archives and decompression bombs: ``extract`` names a damaged archive in one line whatever the reader
raised; ``python -m datasets.prepare`` moves it aside, forgets its verification and goes on with the other datasets;
what an archive may write is capped (declared sizes before extracting, bytes written while writing)."""
import dataclasses
import io
import math
import os
import tarfile
import zipfile

import pytest
from archive_server import ArchiveServer, tar_bytes, zip_bytes

from datasets.prepare import ilsvrc
from datasets.prepare.fetch import Fetcher
from datasets.prepare.sources import Download, Place
from datasets.prepare.unpack import (
    DEFAULT_MAX_RATIO,
    DEFAULT_MAX_SIZE,
    RATIO_ENV,
    SIZE_ENV,
    STATE_DIR,
    ArchiveTooLarge,
    BrokenArchiveError,
    ExpansionLimits,
    LayoutMismatch,
    extract,
    parse_size,
    place_archive,
)

MB = 1 << 20


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(here, name), folder)
                  for here, _, names in os.walk(folder) for name in names)


def random_members(count=4, size=40_000, prefix="d"):
    """Incompressible members, so that a cut anywhere falls in member data."""
    return {f"{prefix}/{i}.bin": os.urandom(size) for i in range(count)}


def tar_of(files, mode):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def deflated_zip(files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def cut_middle(data, start=0.3, end=0.6):
    """Bytes missing from the middle (the zip central directory at the end stays)."""
    return data[: int(len(data) * start)] + data[int(len(data) * end):]


def flip_byte(data, at=0.4):
    position = int(len(data) * at)
    return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]


DAMAGED = {
    "cut.tar.gz": lambda: tar_of(random_members(), "w:gz")[:-60_000],
    "cut.tar": lambda: tar_of(random_members(), "w")[:70_000],
    "cut.tar.bz2": lambda: tar_of(random_members(), "w:bz2")[:-60_000],
    "cut.tar.xz": lambda: tar_of(random_members(), "w:xz")[:-60_000],
    "corrupt.tar.gz": lambda: flip_byte(tar_of(random_members(), "w:gz")),
    "middle-cut.zip": lambda: cut_middle(deflated_zip(random_members())),
    "corrupt.zip": lambda: flip_byte(deflated_zip(random_members())),
    "stored-corrupt.zip": lambda: flip_byte(zip_bytes(random_members())),
    "end-cut.zip": lambda: deflated_zip(random_members())[:-200],
}


# ----- damaged archives -----
@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_a_damaged_archive_is_named_in_one_line(tmp_path, name):
    archive = write(tmp_path / name, DAMAGED[name]())
    with pytest.raises(BrokenArchiveError) as caught:
        extract(archive, str(tmp_path / "dest"), progress=False)
    message = str(caught.value)
    assert name in message and "\n" not in message
    assert "damaged" in message or "neither a zip nor a tar" in message
    assert caught.value.path == archive


def test_an_inner_archive_that_is_damaged_is_reported_and_staging_is_removed(tmp_path):
    inner = tar_bytes({"101_ObjectCategories/a/1.jpg": os.urandom(50_000)})[:-20_000]
    archive = write(tmp_path / "caltech-101.zip", zip_bytes({"caltech-101/101_ObjectCategories.tar.gz": inner}))
    folder = tmp_path / "caltech-101"
    places = (Place("caltech-101/101_ObjectCategories.tar.gz", unpack=(Place("101_ObjectCategories", "images"),)),)
    with pytest.raises(BrokenArchiveError, match=r"101_ObjectCategories\.tar\.gz is damaged"):
        place_archive(archive, places, str(folder), {"image_dir": "images"}, progress=False)
    assert os.listdir(folder / STATE_DIR / "staging") == []
    assert not (folder / "images").exists()


def test_an_error_writing_the_files_is_not_taken_for_a_damaged_archive(tmp_path):
    archive = write(tmp_path / "good.tar.gz", tar_bytes({"d/a.bin": b"a", "d/b.bin": b"b"}))
    (tmp_path / "dest" / "d" / "b.bin").mkdir(parents=True)  # cannot be written as a file
    with pytest.raises(IsADirectoryError):
        extract(archive, str(tmp_path / "dest"), progress=False)


@pytest.mark.parametrize("how", ["encrypted", "compressed with method 9"])
def test_a_zip_that_python_cannot_read_is_refused_not_taken_for_a_damaged_one(tmp_path, how):
    data = bytearray(zip_bytes({"d/a.bin": b"a"}))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local header and central directory
        at = data.index(signature)
        if how == "encrypted":
            data[at + offset] |= 0x1  # general purpose flag, bit 0
        else:
            data[at + offset + 2] = 9  # compression method: Deflate64
    archive = write(tmp_path / "odd.zip", bytes(data))
    with pytest.raises(LayoutMismatch, match=f"is {how}, which Python's zipfile cannot read") as caught:
        extract(archive, str(tmp_path / "dest"), progress=False)
    assert not isinstance(caught.value, BrokenArchiveError)


def test_set_aside_never_replaces_a_file_and_forgets_the_verification(tmp_path):
    download = Download("x.tar.gz", ("http://127.0.0.1:9/x.tar.gz",), "test")
    fetcher = Fetcher(str(tmp_path / "downloads"), progress=False, log=lambda _: None)
    path = write(tmp_path / "downloads" / "x.tar.gz", b"third")
    write(tmp_path / "downloads" / "x.tar.gz.broken", b"first")
    write(tmp_path / "downloads" / "x.tar.gz.broken.1", b"second")
    fetcher.verify_in_place(download, path)
    assert os.path.isfile(fetcher.record_path(download))
    assert fetcher.set_aside(download, path) == path + ".broken.2"
    assert not os.path.exists(path) and not os.path.exists(fetcher.record_path(download))
    held = {name: (tmp_path / "downloads" / name).read_bytes() for name in os.listdir(tmp_path / "downloads")
            if name.startswith("x.")}
    assert held == {"x.tar.gz.broken": b"first", "x.tar.gz.broken.1": b"second", "x.tar.gz.broken.2": b"third"}


# ----- the cap on what an archive writes -----
class Zeros:
    """A file object of ``size`` zero bytes, made as it is read."""

    def __init__(self, size):
        self.left = size

    def read(self, size=-1):
        size = self.left if size is None or size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """A .zip and a .tar.gz of about 300 KB that expand to 300 MB of zeros (after a small first member)."""
    folder = tmp_path_factory.mktemp("bombs")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("bomb/first.txt", b"first")
        with bundle.open("bomb/zeros.bin", "w") as out:
            for _ in range(300):
                out.write(bytes(MB))
    paths = {"zip": write(folder / "bomb.zip", buffer.getvalue())}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        first = tarfile.TarInfo("bomb/first.txt")
        first.size = 5
        tar.addfile(first, io.BytesIO(b"first"))
        info = tarfile.TarInfo("bomb/zeros.bin")
        info.size = 300 * MB
        tar.addfile(info, Zeros(300 * MB))
    paths["tar.gz"] = write(folder / "bomb.tar.gz", buffer.getvalue())
    for path in paths.values():
        assert os.path.getsize(path) < 320_000
    return paths


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_300_kb_archive_cannot_write_300_mb_unasked(tmp_path, bombs, kind, monkeypatch):
    monkeypatch.delenv(RATIO_ENV, raising=False)
    monkeypatch.delenv(SIZE_ENV, raising=False)
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveTooLarge, match=r"bomb\..* would write more than .*--max-expand-ratio") as caught:
        extract(bombs[kind], str(dest), progress=False)
    assert "declare" in str(caught.value)  # refused from the declared sizes ...
    assert not (dest / "bomb" / "zeros.bin").exists()  # ... before the member was written
    written = sum(os.path.getsize(dest / name) for name in files_under(dest))
    assert written <= 5


def test_a_bomb_is_extracted_when_the_user_lifts_the_cap(tmp_path, bombs, monkeypatch):
    monkeypatch.setenv(RATIO_ENV, "none")
    extract(bombs["tar.gz"], str(tmp_path / "dest"), progress=False)
    assert os.path.getsize(tmp_path / "dest" / "bomb" / "zeros.bin") == 300 * MB


class Endless:
    """What a reader that trusts the data over the declared size would give: zeros without end."""

    def __init__(self, *args, **kwargs):
        pass

    def read(self, size=-1):
        return bytes(MB if size is None or size < 0 else size)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_the_cap_is_checked_while_writing_as_declared_sizes_can_lie(tmp_path, kind, monkeypatch):
    files = {"small/declared.bin": os.urandom(1000)}
    archive = write(tmp_path / f"liar.{kind}", zip_bytes(files) if kind == "zip" else tar_bytes(files))
    monkeypatch.setattr(zipfile.ZipFile, "open", Endless)
    monkeypatch.setattr(tarfile.TarFile, "extractfile", Endless)
    limits = ExpansionLimits(ratio=20, size=math.inf)
    with pytest.raises(ArchiveTooLarge, match="more than its members declared"):
        extract(archive, str(tmp_path / "dest"), progress=False, limits=limits)
    written = os.path.getsize(tmp_path / "dest" / "small" / "declared.bin")
    assert written <= 20 * os.path.getsize(archive)


def test_the_absolute_cap_refuses_an_archive_of_ordinary_ratio(tmp_path):
    archive = write(tmp_path / "photos.tar.gz", tar_bytes(random_members(count=3, size=MB)))
    with pytest.raises(ArchiveTooLarge, match="absolute cap"):
        extract(archive, str(tmp_path / "dest"), progress=False, limits=ExpansionLimits(size=2 * MB))
    extract(archive, str(tmp_path / "dest2"), progress=False, limits=ExpansionLimits(size=4 * MB))


def test_an_archive_and_the_archives_inside_it_share_one_cap(tmp_path):
    inner = tar_bytes({"101_ObjectCategories/a/1.jpg": os.urandom(MB)}, compress=False)
    archive = write(tmp_path / "caltech-101.zip", zip_bytes({"caltech-101/101_ObjectCategories.tar": inner}))
    places = (Place("caltech-101/101_ObjectCategories.tar", unpack=(Place("101_ObjectCategories", "images"),)),)
    # The outer archive writes ~1 MB (ratio ~1), the inner one ~1 MB more: ~2x the outer archive in all.
    with pytest.raises(ArchiveTooLarge, match="caltech-101.zip would write more than"):
        place_archive(archive, places, str(tmp_path / "a"), {}, progress=False, limits=ExpansionLimits(ratio=1.5))
    assert place_archive(archive, places, str(tmp_path / "b"), {}, progress=False,
                         limits=ExpansionLimits(ratio=2.5)) == ["images"]


def test_limits_come_from_the_option_else_the_environment_else_the_defaults():
    assert ExpansionLimits.from_env(environ={}) == ExpansionLimits(DEFAULT_MAX_RATIO, DEFAULT_MAX_SIZE)
    assert 10 <= DEFAULT_MAX_RATIO <= 100 and 150 << 30 <= DEFAULT_MAX_SIZE <= 1 << 40
    environ = {RATIO_ENV: "50", SIZE_ENV: "500G"}
    assert ExpansionLimits.from_env(environ=environ) == ExpansionLimits(50, 500 << 30)
    assert ExpansionLimits.from_env("7", "none", environ=environ) == ExpansionLimits(7, math.inf)
    assert [parse_size(text) for text in ("1000", "64M", "1.5k", "2GiB", "1T")] == [1000, 64 << 20, 1536, 2 << 30,
                                                                                   1 << 40]
    for ratio, size in (("0", None), ("-1", None), ("x", None), (None, "12Q"), (None, "0")):
        with pytest.raises(ValueError):
            ExpansionLimits.from_env(ratio, size, environ={})


# ----- ImageNet's own archives -----
def test_damaged_imagenet_archives_are_named_with_their_path_and_leave_no_partial_validation_folder(tmp_path):
    from test_prepare_ilsvrc import ARCHIVES, LEAF_IDS, fake_devkit, fake_train_tar, fake_val_tar, locator

    train = write(tmp_path / "train.tar", fake_train_tar()[:2500])
    with pytest.raises(BrokenArchiveError, match="train.tar") as caught:
        ilsvrc.extract_train(train, str(tmp_path / "images" / "train"), progress=False)
    assert caught.value.path == train

    devkit = write(tmp_path / "devkit.tar.gz", fake_devkit()[:-100])
    with pytest.raises(BrokenArchiveError, match="devkit.tar.gz") as caught:
        ilsvrc.labels_from_devkit(devkit)
    assert caught.value.path == devkit

    paths = {"val.tar": write(tmp_path / "val.tar", fake_val_tar()[:2500])}
    image_dir = tmp_path / "imagenet" / "images"
    classes = {wnid: wnid for wnid in LEAF_IDS.values()}
    with pytest.raises(BrokenArchiveError) as caught:
        ilsvrc.prepare_imagenet(str(tmp_path / "imagenet"), str(image_dir), classes, ARCHIVES, locator(paths),
                                False, lambda _: None)
    assert caught.value.path == paths["val.tar"]
    assert os.listdir(image_dir) == []  # neither a partial val/ (a later run would take it as extracted) nor staging


# ----- python -m datasets.prepare -----
@pytest.fixture
def world():
    pytest.importorskip("dassl")
    from fake_sources import FakeWorld

    with ArchiveServer() as server:
        yield FakeWorld(server)


def cli(root, world, sources, *args):
    from test_prepare_cli import run

    return run(root, world, sources, *args)


def unpinned(world, name, damage=None):
    """``world``'s recipe for ``name`` with no checksum for its archives (as for the table's unpinned entries), and
    with ``damage(data)`` served instead of each archive; returns (recipe, {URL path: good bytes})."""
    recipe = world.recipe(name)
    good = {}
    for path, data in list(world.server.files.items()):
        if path.startswith(name + "/") and path.endswith((".zip", ".tar.gz", ".tar", ".tgz")):
            good[path] = data
            if damage:
                world.server.files[path] = damage(data)
    downloads = tuple(dataclasses.replace(download, md5=None) if download.places else download
                      for download in recipe.downloads)
    return dataclasses.replace(recipe, downloads=downloads), good


def damage_inner(data):
    """caltech-101.zip with its inner 101_ObjectCategories.tar.gz cut short."""
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        members = {info.filename: bundle.read(info) for info in bundle.infolist()}
    inner = "caltech-101/101_ObjectCategories.tar.gz"
    members[inner] = members[inner][: len(members[inner]) // 2]
    return zip_bytes(members)


@pytest.mark.parametrize("name, archive, damage", [
    ("dtd", "dtd-r1.0.1.tar.gz", lambda data: data[: len(data) // 2]),
    ("eurosat", "EuroSAT.zip", cut_middle),
    ("caltech101", "caltech-101.zip", damage_inner),
])
def test_a_damaged_archive_is_moved_aside_and_downloaded_again_while_the_other_datasets_go_on(
        tmp_path, world, name, archive, damage):
    from test_prepare_cli import CLASSES, table_row

    other = "oxford_flowers"
    recipe, good = unpinned(world, name, damage)
    sources = {name: recipe, other: world.recipe(other)}
    root = tmp_path / "data"
    downloads = root / "downloads" / CLASSES[name].dataset_dir
    write(downloads / (archive + ".broken"), b"an earlier damaged copy")

    code, output = cli(root, world, sources, name, other)
    assert code == 1
    lines = [line for line in output.splitlines() if " is damaged (" in line]
    assert len(lines) == 2 and lines[0].startswith(f"{name}: ") and lines[1].startswith(f"  {name}: ")
    assert archive in lines[0] and f"moved aside to {downloads / archive}.broken.1" in lines[0]
    assert "the next run downloads it again" in lines[0]
    assert "Failed:" in output and "Traceback" not in output
    assert not (downloads / archive).exists()
    assert (downloads / (archive + ".broken")).read_bytes() == b"an earlier damaged copy"
    assert (downloads / (archive + ".broken.1")).is_file()
    assert not (downloads / ".verified" / (archive + ".json")).exists()
    assert table_row(output, other).split()[1] == "ok"  # the other dataset was prepared all the same
    assert table_row(output, name).split()[1] != "ok"

    world.server.files.update(good)  # the source serves a whole archive again
    requests = len(world.server.requests)
    code, output = cli(root, world, sources, name)
    assert code == 0, output
    assert any(path.endswith(archive) for path, _ in world.server.requests[requests:])
    assert table_row(output, name).split()[1] == "ok"


def bomb_dtd(data):
    """dtd's archive with 20 MB of zeros beside its members (~20 KB more compressed)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar, \
            tarfile.open(fileobj=buffer, mode="w:gz") as out:
        for member in tar:
            out.addfile(member, tar.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo("dtd/padding.bin")
        info.size = 20 * MB
        out.addfile(info, Zeros(20 * MB))
    return buffer.getvalue()


def test_an_archive_over_the_cap_is_refused_kept_verified_and_accepted_when_the_user_raises_the_cap(
        tmp_path, world, monkeypatch):
    monkeypatch.delenv(RATIO_ENV, raising=False)
    monkeypatch.delenv(SIZE_ENV, raising=False)
    recipe, _ = unpinned(world, "dtd", bomb_dtd)
    sources = {"dtd": recipe}
    root = tmp_path / "data"
    code, output = cli(root, world, sources, "dtd")
    assert code == 1 and "dtd-r1.0.1.tar.gz would write more than" in output and "--max-expand-ratio" in output
    assert not (root / "dtd" / "images").exists()
    archive = root / "downloads" / "dtd" / "dtd-r1.0.1.tar.gz"
    assert archive.is_file() and (root / "downloads" / "dtd" / ".verified" / "dtd-r1.0.1.tar.gz.json").is_file()
    requests = len(world.server.requests)

    code, output = cli(root, world, sources, "dtd", "--max-expand-size", "1K", "--max-expand-ratio", "none")
    assert code == 1 and "absolute cap" in output

    code, output = cli(root, world, sources, "dtd", "--max-expand-ratio", "2000")
    assert code == 0, output
    assert len(world.server.requests) == requests  # the verified archive was used, not downloaded again

    with pytest.raises(SystemExit):
        cli(root, world, sources, "dtd", "--max-expand-size", "lots")
    monkeypatch.setenv(RATIO_ENV, "0")
    with pytest.raises(SystemExit):
        cli(root, world, sources, "dtd")


def test_a_damaged_imagenet_archive_put_in_place_by_hand_is_moved_aside(tmp_path, world):
    from test_prepare_cli import SOURCES
    from test_prepare_ilsvrc import LEAF_IDS, fake_devkit, fake_train_tar, fake_val_tar

    from datasets.imagenet import ImageNet

    recipe = SOURCES["imagenet"]
    data = dict(zip((d.name for d in recipe.downloads), (fake_train_tar(), fake_val_tar()[:2500], fake_devkit())))
    fakes = tuple(dataclasses.replace(d, md5=None) for d in recipe.downloads)
    sources = {"imagenet": dataclasses.replace(recipe, downloads=fakes, expected_images=len(LEAF_IDS) * 2 + 7)}
    world.gdrive_files[ImageNet.classnames_file_id] = "".join(f"{w} class {w}\n" for w in LEAF_IDS.values()).encode()
    folder = tmp_path / "imagenet"
    for name, payload in data.items():
        write(folder / name, payload)

    code, output = cli(tmp_path, world, sources, "imagenet")
    assert code == 1 and "Traceback" not in output
    line = next(line for line in output.splitlines() if " is damaged (" in line)
    assert line.startswith("imagenet: ILSVRC2012_img_val.tar is damaged")
    assert f"moved aside to {folder}/ILSVRC2012_img_val.tar.broken" in line and "put a good copy in" in line
    assert not (folder / "ILSVRC2012_img_val.tar").exists()
    assert not (tmp_path / "downloads" / "imagenet" / ".verified" / "ILSVRC2012_img_val.tar.json").exists()
    assert sorted(os.listdir(folder / "images")) == ["train"]  # no partial val/ left to be taken as extracted

    write(folder / "ILSVRC2012_img_val.tar", fake_val_tar())
    code, output = cli(tmp_path, world, sources, "imagenet")
    assert code == 0, output


# ----- how many members an archive may hold -----
@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_an_archive_of_many_members_is_refused_naming_the_cap(tmp_path, kind):
    """Empty members cost a few bytes each: the byte caps never see them, the member cap does."""
    files = {f"spam/{i:05d}.txt": b"" for i in range(12_000)}
    data = tar_bytes(files) if kind == "tar.gz" else zip_bytes(files)
    archive = write(tmp_path / f"many.{kind}", data)
    assert os.path.getsize(archive) < 2 * MB  # it writes nothing: the byte caps accept it
    with pytest.raises(ArchiveTooLarge, match=r"holds more than 10,000 members \(one per KiB of the archive\).*"
                                              r"--max-members \(or \$DATASETS_PREPARE_MAX_MEMBERS\)"):
        extract(archive, str(tmp_path / "out"), progress=False, limits=ExpansionLimits())
    assert len(list((tmp_path / "out").rglob("*.txt"))) <= 10_000  # stopped at the cap, not after the whole archive


def test_the_member_cap_is_settable(tmp_path):
    archive = write(tmp_path / "few.tar.gz", tar_bytes({f"a/{i}.txt": b"x" for i in range(5)}))
    with pytest.raises(ArchiveTooLarge, match=r"more than 4 members \(--max-members / \$DATASETS_PREPARE_MAX_MEMBERS\)"):
        extract(archive, str(tmp_path / "a"), progress=False,
                limits=ExpansionLimits.from_env(environ={"DATASETS_PREPARE_MAX_MEMBERS": "4"}))
    extract(archive, str(tmp_path / "b"), progress=False, limits=ExpansionLimits.from_env(members="5", environ={}))
    assert len(list((tmp_path / "b").rglob("*.txt"))) == 5
    assert ExpansionLimits.from_env(members="none", environ={}).members == math.inf
    with pytest.raises(ValueError, match="member count"):
        ExpansionLimits.from_env(members="0", environ={})
