"""Downloads that resume, fall back to mirrors and are verified before anything uses them.

A file is written to ``<downloads>/.partial/<name>`` while it arrives; an interrupted transfer leaves it there
and the next run continues it with an HTTP Range request. Only a file whose size and checksum match (where the
source table knows them) is moved to ``<downloads>/<name>``; a record of that verification is kept in
``<downloads>/.verified/`` so that a file is hashed once, not on every run. A copy the user put in place by hand
(in the downloads folder, the dataset folder or the data root) is verified the same way before it is used.
"""
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import urllib.error
import urllib.request

from tqdm import tqdm

from .sources import GDRIVE

SOURCES_FILE = "datasets/prepare/sources.py"
CHUNK = 1 << 20
USER_AGENT = "dualmiprompt-datasets-prepare/1"


class DownloadError(RuntimeError):
    """A file could not be obtained or verified; the message says what to do."""


class IncompleteDownload(DownloadError):
    """The transfer stopped early; the partial file is kept and the next run resumes it."""


class ChecksumError(DownloadError):
    """The file's size or checksum differs from the source table's."""


class ManualFileNeeded(DownloadError):
    """The file has no automatic source and is not in place."""


def browser_url(source):
    if source.startswith(GDRIVE):
        return f"https://drive.google.com/file/d/{source[len(GDRIVE):]}/view"
    return source


def hash_file(path, progress=False):
    """``{"md5": hex, "sha256": hex}`` of the file, read once."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    bar = tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, desc=f"verifying {os.path.basename(path)}",
               disable=not progress, leave=False)
    with open(path, "rb") as handle, bar:
        for block in iter(lambda: handle.read(CHUNK), b""):
            md5.update(block)
            sha256.update(block)
            bar.update(len(block))
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def mismatches(download, size, digests):
    """What differs between a file (its size and digests) and the table's entry, as readable phrases."""
    found = []
    if download.size is not None and size != download.size:
        found.append(f"size {size} bytes, expected {download.size}")
    for kind in ("md5", "sha256"):
        expected = getattr(download, kind)
        if expected and digests[kind] != expected.lower():
            found.append(f"{kind} {digests[kind]}, expected {expected.lower()}")
    return found


# ----- transports -----
def _range_start(content_range):
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def http_download(url, partial, expected_size=None, progress=True, timeout=60):
    """Fetch ``url`` into ``partial``, continuing the bytes already there when the server honours Range.

    Raises ``IncompleteDownload`` (partial file kept) when the transfer stops before the announced length,
    and lets ``urllib.error.URLError`` / ``OSError`` through when the source cannot be reached."""
    have = os.path.getsize(partial) if os.path.isfile(partial) else 0
    if expected_size is not None and have > expected_size:
        have = 0  # longer than the real file: not a prefix of it
    if expected_size is not None and have == expected_size:
        return
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the partial file is already whole
            return
        raise
    with response:
        if have and (response.getcode() != 206 or _range_start(response.headers.get("Content-Range")) != have):
            have = 0  # the server sends the whole file again
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else expected_size
        os.makedirs(os.path.dirname(partial), exist_ok=True)
        with open(partial, "ab" if have else "wb") as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=os.path.basename(partial),
            disable=not progress,
        ) as bar:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
            except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError):
                pass  # judged below from the file's size
    got = os.path.getsize(partial)
    if total is not None and got < total:
        raise IncompleteDownload(
            f"The download of {url} stopped after {got} of {total} bytes. The partial file {partial} is kept: "
            "run the same command again to continue it."
        )


def gdown_download(file_id, output, progress=True):
    """A Google Drive file by its public id, with gdown (which resumes its own partial file beside ``output``)."""
    import gdown

    try:
        result = gdown.download(id=file_id, output=output, quiet=not progress, resume=True)
    except Exception as err:  # gdown raises its own types for quota pages, permission errors, network errors
        raise DownloadError(f"gdown could not fetch Google Drive file {file_id}: {err}") from err
    if not result or not os.path.isfile(output):
        raise DownloadError(f"gdown could not fetch Google Drive file {file_id}")


# ----- the fetcher -----
class Fetcher:
    """Obtains the files of the source table into ``downloads_dir``, verified. ``gdrive(file_id, output,
    progress)`` fetches a Google Drive file (gdown by default; tests pass their own)."""

    def __init__(self, downloads_dir, gdrive=None, progress=True, log=print, timeout=60):
        self.downloads_dir = downloads_dir
        self.gdrive = gdrive or gdown_download
        self.progress = progress
        self.log = log
        self.timeout = timeout

    def final_path(self, download):
        return os.path.join(self.downloads_dir, download.name)

    def partial_path(self, download, source=""):
        # gdown keeps its own partial file beside its output: a folder of its own keeps it apart from ours.
        transport = "gdrive" if source.startswith(GDRIVE) else ""
        return os.path.join(self.downloads_dir, ".partial", transport, download.name)

    def record_path(self, download):
        return os.path.join(self.downloads_dir, ".verified", download.name + ".json")

    def fetch(self, download, search_dirs=()):
        """The path of a verified copy of ``download``: one already here, or one downloaded now."""
        for candidate in [self.final_path(download)] + [os.path.join(d, download.name) for d in search_dirs]:
            if os.path.isfile(candidate):
                self.verify_in_place(download, candidate)
                return candidate
        if not download.sources:
            raise ManualFileNeeded(f"{download.name} is needed and cannot be downloaded automatically "
                                   f"({download.origin}). Put it in {self.downloads_dir}.")
        failures = []
        for source in download.sources:
            try:
                return self._download_from(source, download)
            except IncompleteDownload:
                raise
            except ChecksumError as err:
                failures.append(err)
            except (DownloadError, urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
                failures.append(DownloadError(f"{source}: {err}"))
        error_class = ChecksumError if any(isinstance(err, ChecksumError) for err in failures) else DownloadError
        tried = "\n".join(f"  - {err}" for err in failures)
        places = "\n".join(f"  {browser_url(source)}" for source in download.sources)
        raise error_class(
            f"Could not obtain {download.name}. Every source failed:\n{tried}\n"
            f"Run the command again later, or download the file yourself from\n{places}\n"
            f"and put it at {self.final_path(download)}: the next run verifies it and goes on."
        )

    def _download_from(self, source, download):
        partial = self.partial_path(download, source)
        os.makedirs(os.path.dirname(partial), exist_ok=True)
        self.log(f"Downloading {download.name} from {browser_url(source)}")
        if source.startswith(GDRIVE):
            self.gdrive(source[len(GDRIVE):], partial, self.progress)
        else:
            http_download(source, partial, download.size, self.progress, self.timeout)
        size, digests = os.path.getsize(partial), hash_file(partial, self.progress)
        problems = mismatches(download, size, digests)
        if problems:
            rejected = self.final_path(download) + ".rejected"
            os.replace(partial, rejected)
            raise ChecksumError(
                f"{browser_url(source)} gave a file that does not match {SOURCES_FILE} ({'; '.join(problems)}). "
                f"It was moved aside to {rejected} (not used); the next run downloads it afresh."
            )
        final = self.final_path(download)
        os.replace(partial, final)
        self._record(download, final, digests)
        return final

    def verify_in_place(self, download, path):
        """Check a file that is already on disk against the table (its digests are computed once and remembered
        for as long as the file keeps its size and time stamp)."""
        record = self._read_record(download)
        stat = os.stat(path)
        unchanged = record and record.get("path") == os.path.abspath(path) and record.get("size") == stat.st_size \
            and record.get("mtime") == stat.st_mtime
        digests = {kind: record[kind] for kind in ("md5", "sha256")} if unchanged else hash_file(path, self.progress)
        problems = mismatches(download, stat.st_size, digests)
        if problems:
            raise ChecksumError(
                f"{path} does not match {SOURCES_FILE} ({'; '.join(problems)}). Delete it (or replace it with a "
                f"good copy from {', '.join(browser_url(s) for s in download.sources) or download.origin}) and "
                "run again."
            )
        if not unchanged:
            self._record(download, path, digests)

    def _record(self, download, path, digests):
        if not (download.md5 or download.sha256):
            self.log(f"sha256 {digests['sha256']}  {download.name} (the source table has no checksum for it: pin "
                     f"this value in {SOURCES_FILE} once you trust the file)")
        stat = os.stat(path)
        record_path = self.record_path(download)
        os.makedirs(os.path.dirname(record_path), exist_ok=True)
        with open(record_path, "w") as handle:
            json.dump({"path": os.path.abspath(path), "size": stat.st_size, "mtime": stat.st_mtime, **digests},
                      handle)

    def _read_record(self, download):
        try:
            with open(self.record_path(download)) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def set_aside(self, download, path):
        """Move ``path``, a verified copy of ``download`` that turned out unusable (a damaged archive), to
        ``<path>.broken`` (``.broken.1``, ``.broken.2``, ...: never over another file) and forget its verification,
        so that the next run fetches it afresh. Returns where it went; OSError if it could not be moved (the
        record is forgotten all the same)."""
        record = self.record_path(download)
        if os.path.isfile(record):
            os.remove(record)
        index = 0
        while True:
            aside = f"{path}.broken" + (f".{index}" if index else "")
            if not os.path.lexists(aside):
                break
            index += 1
        os.rename(path, aside)
        return aside

    def discard(self, download, path):
        """Remove a verified download (``--delete-archives``) and its record."""
        for stale in (path, self.record_path(download)):
            if os.path.isfile(stale):
                os.remove(stale)


def copy_file(source, target):
    if os.path.abspath(source) == os.path.abspath(target):
        return
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    tmp = target + ".tmp"
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
