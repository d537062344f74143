"""Safe extraction of tar and zip archives, and placement of their contents into a dataset's layout.

Every member is checked before it is written: an absolute path, a ``..`` component, a link or a device file makes
the whole archive refused (nothing of it is placed). Archives are extracted into a staging folder inside the
dataset folder (same file system, so placing is a rename), then the members the source table names are moved to
their targets; a target that already exists is merged into, file by file.

What an archive may write is capped (``ExpansionLimits``): the members' declared sizes are checked before they
are extracted and the bytes actually written are counted while writing. A damaged archive (cut short, corrupted)
raises ``BrokenArchiveError`` naming it, whatever the reader library raised; errors on the writing side (a full
disk) are not mistaken for a damaged archive.
"""
import gzip
import json
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

from tqdm import tqdm

from ..limits import (  # noqa: F401  (the caps' names are also read from here)
    DEFAULT_MAX_RATIO,
    DEFAULT_MAX_SIZE,
    MEMBERS_ENV,
    RATIO_ENV,
    SIZE_ENV,
    default_max_members,
    human,
    parse_count,
    parse_ratio,
    parse_size,
)

try:
    from lzma import LZMAError
except ImportError:  # a Python built without lzma cannot open .tar.xz at all
    LZMAError = zlib.error

CHUNK = 1 << 20
STATE_DIR = ".prepare"  # inside a dataset folder: staging area and records of what was placed


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder, or is a link or special file."""


class ArchiveTooLarge(UnsafeArchiveError):
    """An archive would write more than ``ExpansionLimits`` allow (a decompression bomb, or a cap set too low)."""


class LayoutMismatch(RuntimeError):
    """An archive does not hold what the source table says it holds."""


class BrokenArchiveError(LayoutMismatch):
    """An archive cannot be read to its end: cut short, corrupted, or no archive at all. ``path``: the damaged
    file (the archive given to ``extract``, which is an inner one for a nested archive). The message is one line."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


# ----- damaged archives -----
# What the readers raise on a damaged archive: tarfile's errors (ReadError "unexpected end of data", ...), a cut or
# corrupted compressed stream (EOFError, zlib.error, LZMAError; OSError such as gzip.BadGzipFile or bz2's "Invalid
# data stream"), zipfile's (BadZipFile: bad CRC or header; OSError EINVAL when an offset points outside the file).
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, LZMAError, OSError)


@contextmanager
def reading(label, path=None):
    """Turns the errors of reading archive ``label`` (only the reading: wrap no write in it) into
    ``BrokenArchiveError``."""
    try:
        yield
    except READ_ERRORS as err:
        detail = " ".join(str(err).split()) or "no detail"
        raise BrokenArchiveError(f"{label} is damaged ({type(err).__name__}: {detail}): cut short or corrupted",
                                 path) from err


class WholeTarInfo(tarfile.TarInfo):
    """Member headers read strictly: tarfile takes a header that is missing, cut short or invalid after the first
    member for the end of the archive, so a tar cut at a member boundary would pass for a whole one (with members
    missing). Only the end-of-archive marker (a block of zeros) ends it here."""

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        if len(buf) != tarfile.BLOCKSIZE:
            raise tarfile.SubsequentHeaderError("unexpected end of data: no end-of-archive marker")
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.InvalidHeaderError as err:
            raise tarfile.SubsequentHeaderError(f"invalid member header ({err})") from None


def open_tar(label, path=None, **kwargs):
    """``tarfile.open(**kwargs)`` reading member headers strictly (``WholeTarInfo``); a damaged archive raises
    ``BrokenArchiveError``."""
    with reading(label, path):
        return tarfile.open(tarinfo=WholeTarInfo, **kwargs)


# ----- how much an archive may write (the caps themselves: datasets/limits.py) -----
@dataclass(frozen=True)
class ExpansionLimits:
    """How much one archive may write: at most ``ratio`` times its own size, at most ``size`` bytes, and at most
    ``members`` members (None: one per KiB of the archive, ``limits.default_max_members``)."""

    ratio: float = DEFAULT_MAX_RATIO
    size: float = DEFAULT_MAX_SIZE
    members: float = None

    @classmethod
    def from_env(cls, ratio=None, size=None, environ=None, members=None):
        """The limits from ``ratio`` / ``size`` / ``members`` (an option's text) where given, else from
        $DATASETS_PREPARE_MAX_RATIO / $DATASETS_PREPARE_MAX_SIZE / $DATASETS_PREPARE_MAX_MEMBERS, else the
        defaults; ValueError naming the bad value."""
        environ = os.environ if environ is None else environ
        ratio = ratio if ratio is not None else environ.get(RATIO_ENV) or None
        size = size if size is not None else environ.get(SIZE_ENV) or None
        members = members if members is not None else environ.get(MEMBERS_ENV) or None
        return cls(DEFAULT_MAX_RATIO if ratio is None else parse_ratio(ratio),
                   DEFAULT_MAX_SIZE if size is None else parse_size(size),
                   None if members is None else parse_count(members))


class Budget:
    """What one archive (with the archives nested in it) may still write. ``declare`` counts the sizes members
    announce, before they are extracted; ``spend`` the bytes really written (declared sizes can lie)."""

    def __init__(self, archive, limits=None):
        limits = limits or ExpansionLimits.from_env()
        self.label = os.path.basename(archive)
        self.archive_size = os.path.getsize(archive)
        by_ratio = limits.ratio * self.archive_size
        self.limit = min(by_ratio, limits.size)
        self.reason = (f"{limits.ratio:g} times its size of {human(self.archive_size)}" if by_ratio <= limits.size
                       else "the absolute cap")
        self.declared = self.written = self.members = 0
        self.max_members = default_max_members(self.archive_size) if limits.members is None else limits.members
        self.members_reason = ("one per KiB of the archive" if limits.members is None
                               else f"--max-members / ${MEMBERS_ENV}")

    def _refuse(self, what):
        raise ArchiveTooLarge(
            f"{self.label} would write more than {human(self.limit)} ({self.reason}): {what}. The archive is refused "
            "(nothing of it is placed). If you trust it, raise the cap with --max-expand-ratio / --max-expand-size "
            f"(or ${RATIO_ENV} / ${SIZE_ENV}); 'none' lifts it."
        )

    def count(self, number, member=None):
        """Count ``number`` members (the next one, named ``member``, or all of a zip's at once)."""
        self.members += number
        if self.members > self.max_members:
            where = f", up to {member!r}" if member else ""
            raise ArchiveTooLarge(
                f"{self.label} holds more than {self.max_members:,} members ({self.members_reason}){where}. The "
                "archive is refused (nothing of it is placed). If you trust it, raise the cap with --max-members "
                f"(or ${MEMBERS_ENV}); 'none' lifts it.")

    def declare(self, size, member=None):
        """Count ``size`` bytes announced by ``member`` (None: by all the members, declared at once)."""
        self.declared += size
        if self.declared > self.limit:
            self._refuse(f"its members declare {self.declared} bytes" + (f", up to {member!r}" if member else ""))

    def spend(self, size, member):
        self.written += size
        if self.written > self.limit:
            self._refuse(f"{self.written} bytes written, up to {member!r}, more than its members declared")


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


def copy_member(source, target, archive, member, budget):
    """Write the open member ``source`` to ``target``, counting the bytes against ``budget``; a read error is a
    damaged ``archive``, a write error (full disk) is left as it is."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as out:
        while True:
            with reading(archive):
                block = source.read(CHUNK)
            if not block:
                return
            budget.spend(len(block), member)
            out.write(block)


def extract_tar_stream(tar, dest, archive, budget):
    """Extract the members of an open tar (read in stream mode is fine) into ``dest``, within ``budget``."""
    members = iter(tar)
    while True:
        with reading(archive):
            member = next(members, None)
        if member is None:
            return
        budget.count(1, member.name)
        target = member_target(dest, member.name, archive)
        if member.isdir():
            os.makedirs(target, exist_ok=True)
        elif member.isfile():
            budget.declare(member.size, member.name)
            with reading(archive):
                source = tar.extractfile(member)
            copy_member(source, target, archive, member.name, budget)
        else:
            kind = "link" if member.issym() or member.islnk() else "special file"
            raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a {kind}; only files and folders are "
                                     "accepted. The archive is refused.")


ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _extract_zip(archive, dest, label, budget, progress):
    with reading(label):
        bundle = zipfile.ZipFile(archive)
    with bundle:
        infos = bundle.infolist()
        for info in infos:  # every member is checked before anything is written
            member_target(dest, info.filename, label)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"{label}: member {info.filename!r} is a link; only files and folders "
                                         "are accepted. The archive is refused.")
            if info.flag_bits & 0x1 or info.compress_type not in ZIP_METHODS:  # not damaged: kept as it is
                how = "encrypted" if info.flag_bits & 0x1 else f"compressed with method {info.compress_type}"
                raise LayoutMismatch(f"{label}: member {info.filename!r} is {how}, which Python's zipfile cannot "
                                     "read. Extract the archive with another tool and lay it out by hand.")
        budget.count(len(infos))
        budget.declare(sum(info.file_size for info in infos if not info.is_dir()))
        for info in tqdm(infos, desc=f"extracting {label}", unit="file", disable=not progress):
            target = member_target(dest, info.filename, label)
            if info.is_dir():
                os.makedirs(target, exist_ok=True)
                continue
            with reading(label):
                source = bundle.open(info)
            with source:
                copy_member(source, target, label, info.filename, budget)


def extract(archive, dest, progress=True, budget=None, limits=None):
    """Extract a .zip, .tar, .tar.gz or .tgz archive into ``dest``. ``budget``: what it may write (shared with the
    archive it came out of, for a nested one); by default a ``Budget`` of its own under ``limits`` (default:
    ``ExpansionLimits.from_env()``). Raises ``BrokenArchiveError`` (with ``path`` = ``archive``) when it is
    damaged, ``ArchiveTooLarge`` / ``UnsafeArchiveError`` when it is refused."""
    os.makedirs(dest, exist_ok=True)
    label = os.path.basename(archive)
    budget = budget or Budget(archive, limits)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest, label, budget, progress)
            return
        if not tarfile.is_tarfile(archive):
            raise BrokenArchiveError(f"{label} is neither a zip nor a tar archive (damaged, cut short, or an HTML "
                                     "error page?)")
        with open(archive, "rb") as raw, tqdm(total=os.path.getsize(archive), unit="B", unit_scale=True,
                                              desc=f"extracting {label}", disable=not progress) as bar:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            source = ProgressReader(raw, bar)
            if gzipped:  # read with gzip, which checks the CRC and length at the end (tarfile's reader does not)
                source = gzip.GzipFile(fileobj=source, mode="rb")
            with open_tar(label, fileobj=source, mode="r|" if gzipped else "r|*") as tar:
                extract_tar_stream(tar, dest, label, budget)
            if gzipped:
                with reading(label):
                    while source.read(CHUNK):  # to the end of the stream, where the checks are
                        pass
    except BrokenArchiveError as err:
        err.path = err.path or archive
        raise


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


def apply_places(places, extracted, dataset_folder, attributes, archive, progress=True, budget=None):
    """Move each ``Place`` of an extracted archive into the dataset folder; the paths placed, relative to it.
    ``budget``: what the archive may still write (nested archives are extracted within it)."""
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
            extract(source, inner, progress, budget)
            placed += apply_places(place.unpack, inner, dataset_folder, attributes, place.member, progress, budget)
            continue
        target = place.target.format(**attributes)
        destination = os.path.normpath(os.path.join(dataset_folder, target))
        if target == "" and os.path.isdir(source):
            placed += sorted(os.listdir(source))
        else:
            placed.append(os.path.normpath(target))
        merge_move(source, destination)
    return placed


def place_archive(archive, places, dataset_folder, attributes, progress=True, limits=None):
    """Extract ``archive`` into a staging folder and move its members to their places; the archive and those
    nested in it write at most what ``limits`` (default: ``ExpansionLimits.from_env()``) allow, together."""
    staging = os.path.join(dataset_folder, STATE_DIR, "staging", os.path.basename(archive))
    if os.path.exists(staging):  # left by an interrupted run: start the extraction again
        shutil.rmtree(staging)
    budget = Budget(archive, limits)
    try:
        extract(archive, staging, progress, budget)
        return apply_places(places, staging, dataset_folder, attributes, os.path.basename(archive), progress,
                            budget)
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
