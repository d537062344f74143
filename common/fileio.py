"""Files written so that a crash leaves either the old file or the new one, never half of either.

``atomic_open`` is the one way the toolbox writes an output file (records, configs, checkpoints, caches, tables,
figures). The new file gets the mode an ordinary ``open`` would give it (``0666`` less the umask), or the mode of the
file it replaces, so colleagues sharing a folder can read it. A write that fails for want of space or permission
raises ``WriteError`` with one line naming the file and the cause; the earlier file, if any, is left as it was.
"""
import errno
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager


class WriteError(OSError):
    """An output file could not be written (disk full, file size limit, read-only or forbidden folder); the
    message is one line naming the file, and the earlier file of that name is intact."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.errno = code


# What a write meets when the place it writes to cannot take the file (other errors are left as they are).
WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


def current_umask():
    mask = os.umask(0o022)  # the only way to read the umask is to set it; it is put back at once
    os.umask(mask)
    return mask


def new_file_mode(path):
    """The mode ``path`` is written with: that of the file it replaces, else what ``open`` gives a new file."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def _os_error_in(error):
    """The ``OSError`` behind ``error``: itself, or the one it was raised from or while handling (torch wraps a
    failed write of its zip writer in a ``RuntimeError``)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in WRITE_FAILURES:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def human_size(size):
    """``"1.5 MiB"``; an infinite size (a cap that is lifted) is "no limit"."""
    if math.isinf(size):
        return "no limit"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _free_space(folder):
    try:
        return human_size(shutil.disk_usage(folder).free)
    except OSError:
        return "unknown"


def describe_write_failure(path, os_error):
    """One line: which file could not be written, why, and what to do."""
    folder = os.path.dirname(os.path.abspath(path))
    code = os_error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "quota exceeded" if code == errno.EDQUOT else "no space left on the device"
        return (f"Cannot write {path}: {what} ({_free_space(folder)} free in {folder}). Nothing was replaced; free "
                "some space (or write elsewhere) and run the command again.")
    if code == errno.EFBIG:
        return (f"Cannot write {path}: the file size limit of this shell (ulimit -f) is reached. Nothing was "
                "replaced; raise the limit and run the command again.")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "the file system is read-only" if code == errno.EROFS else "permission denied"
        return (f"Cannot write {path}: {why} ({folder}). Give a folder you can write to, or make this one "
                "writable.")
    return f"Cannot write {path}: {os_error.strerror or os_error}. Nothing was replaced."


@contextmanager
def atomic_open(path, mode="w", **kwargs):
    """Write to a temporary file beside ``path`` and rename it over ``path`` only once it is complete."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        file_mode = new_file_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        os.fchmod(fd, file_mode)  # mkstemp makes 0600: readable by its owner only
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        os_error = _os_error_in(error)
        if os_error is not None and not isinstance(error, WriteError):
            raise WriteError(describe_write_failure(path, os_error), os_error.errno) from None
        raise


def atomic_write_text(path, text):
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path, obj):
    with atomic_open(path, "w") as handle:
        json.dump(obj, handle, indent=2)
        handle.write("\n")


def atomic_torch_save(obj, path):
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
