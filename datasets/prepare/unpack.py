"""Safe extraction of tar and zip archives, and placement of their contents into a dataset's layout.

Every member is checked before it is written: an absolute path, a ``..`` component, a link or a device file makes
the whole archive refused (nothing of it is placed). Archives are extracted into a staging folder inside the
dataset folder (same file system, so placing is a rename), then the members the source table names are moved to
their targets; a target that already exists is merged into, file by file.
"""
import json
import os
import re
import shutil
import stat
import tarfile
import zipfile

from tqdm import tqdm

CHUNK = 1 << 20
STATE_DIR = ".prepare"  # inside a dataset folder: staging area and records of what was placed


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder, or is a link or special file."""


class LayoutMismatch(RuntimeError):
    """An archive does not hold what the source table says it holds."""


def member_target(dest, name, archive):
    """The path ``name`` extracts to under ``dest``; refuses absolute paths and ``..``."""
    normalized = name.replace("\\", "/")
    parts = [part for part in normalized.split("/") if part not in ("", ".")]
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized) or ".." in parts:
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} would be written outside the extraction folder (absolute path or '..'). "
            "The archive is refused; get it again from the official source."
        )
    return os.path.join(dest, *parts) if parts else dest


class ProgressReader:
    """A file object that advances a progress bar by the bytes read (for streamed, compressed tars)."""

    def __init__(self, handle, bar):
        self.handle, self.bar = handle, bar

    def read(self, size=-1):
        block = self.handle.read(size)
        self.bar.update(len(block))
        return block


def _write(source, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK)


def extract_tar_stream(tar, dest, archive):
    """Extract the members of an open tar (read in stream mode is fine) into ``dest``."""
    for member in tar:
        target = member_target(dest, member.name, archive)
        if member.isdir():
            os.makedirs(target, exist_ok=True)
        elif member.isfile():
            _write(tar.extractfile(member), target)
        else:
            kind = "link" if member.issym() or member.islnk() else "special file"
            raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a {kind}; only files and folders are "
                                     "accepted. The archive is refused.")


def extract(archive, dest, progress=True):
    """Extract a .zip, .tar, .tar.gz or .tgz archive into ``dest``."""
    os.makedirs(dest, exist_ok=True)
    label = os.path.basename(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            for info in tqdm(bundle.infolist(), desc=f"extracting {label}", unit="file", disable=not progress):
                target = member_target(dest, info.filename, label)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise UnsafeArchiveError(f"{label}: member {info.filename!r} is a link; only files and folders "
                                             "are accepted. The archive is refused.")
                if info.is_dir():
                    os.makedirs(target, exist_ok=True)
                else:
                    with bundle.open(info) as source:
                        _write(source, target)
        return
    if not tarfile.is_tarfile(archive):
        raise LayoutMismatch(f"{archive} is neither a zip nor a tar archive (damaged or an HTML error page?). "
                             "Delete it and run again.")
    with open(archive, "rb") as raw, tqdm(total=os.path.getsize(archive), unit="B", unit_scale=True,
                                          desc=f"extracting {label}", disable=not progress) as bar:
        with tarfile.open(fileobj=ProgressReader(raw, bar), mode="r|*") as tar:
            extract_tar_stream(tar, dest, label)


def merge_move(source, target):
    """Move ``source`` to ``target``; when both are folders, move the contents in (files replace files)."""
    if os.path.isdir(target) and not os.path.islink(target):
        if not os.path.isdir(source):
            raise LayoutMismatch(f"Cannot place file {source} at {target}: a folder is there.")
        for name in os.listdir(source):
            merge_move(os.path.join(source, name), os.path.join(target, name))
        os.rmdir(source)
        return
    if os.path.isdir(source) and os.path.lexists(target):
        raise LayoutMismatch(f"Cannot place folder {source} at {target}: a file is there.")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(source, target)


def apply_places(places, extracted, dataset_folder, attributes, archive, progress=True):
    """Move each ``Place`` of an extracted archive into the dataset folder; the paths placed, relative to it."""
    placed = []
    for place in places:
        source = member_target(extracted, place.member, archive)
        if not os.path.exists(source):
            held = sorted(os.listdir(extracted))[:10]
            raise LayoutMismatch(
                f"{archive} has no {place.member!r} (its top level holds {held}). The archive differs from what "
                "datasets/prepare/sources.py expects: it may have changed at the source."
            )
        if place.unpack:
            inner = source + ".contents"
            extract(source, inner, progress)
            placed += apply_places(place.unpack, inner, dataset_folder, attributes, place.member, progress)
            continue
        target = place.target.format(**attributes)
        destination = os.path.normpath(os.path.join(dataset_folder, target))
        if target == "" and os.path.isdir(source):
            placed += sorted(os.listdir(source))
        else:
            placed.append(os.path.normpath(target))
        merge_move(source, destination)
    return placed


def place_archive(archive, places, dataset_folder, attributes, progress=True):
    """Extract ``archive`` into a staging folder and move its members to their places."""
    staging = os.path.join(dataset_folder, STATE_DIR, "staging", os.path.basename(archive))
    if os.path.exists(staging):  # left by an interrupted run: start the extraction again
        shutil.rmtree(staging)
    try:
        extract(archive, staging, progress)
        return apply_places(places, staging, dataset_folder, attributes, os.path.basename(archive), progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----- what was placed (so that a rerun skips it) -----
def _marker(dataset_folder, name):
    return os.path.join(dataset_folder, STATE_DIR, name + ".placed.json")


def mark_placed(dataset_folder, name, placed):
    path = _marker(dataset_folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump({"placed": placed}, handle)


def is_placed(dataset_folder, name):
    """True when ``name`` was placed by an earlier run and everything it placed is still there."""
    try:
        with open(_marker(dataset_folder, name)) as handle:
            placed = json.load(handle)["placed"]
    except (OSError, ValueError, KeyError):
        return False
    return all(os.path.exists(os.path.join(dataset_folder, path)) for path in placed)
