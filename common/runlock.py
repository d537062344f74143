"""One writer per run folder: a lock file beside the folder, held by the process that trains or evaluates into it.

The lock is an ``fcntl.flock`` on ``<parent>/.<folder>.lock``: the operating system releases it when the holder
dies, however it dies, so a stale lock never blocks a rerun. The file also says who holds it (process id, host,
command, start time), for the message of a second process and for the launcher's status.
"""
import fcntl
import json
import os
import socket
import sys
import time

LOCKED_EXIT_STATUS = 75  # EX_TEMPFAIL: another process is writing this run; try again later


class RunLocked(RuntimeError):
    """Another process holds the run folder."""


def lock_path(output_dir):
    """The lock file of the run folder ``output_dir``, found from its real path: the folder reached through a
    symbolic link (or ``..``, or a bind of a parent) has the one lock of the folder itself."""
    output_dir = os.path.realpath(output_dir)
    return os.path.join(os.path.dirname(output_dir), f".{os.path.basename(output_dir)}.lock")


def read_holder(path):
    try:
        with open(path) as handle:
            holder = json.loads(handle.read() or "{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def describe(holder):
    if not holder:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"process {holder.get('pid')} on {holder.get('host')} (since {since}: {holder.get('command', '')})"


def acquire(output_dir):
    """Take the run's lock, or raise ``RunLocked`` naming the holder; nothing in ``output_dir`` is touched.
    The returned file object holds the lock: keep it referenced for as long as the run writes."""
    path = lock_path(output_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle = open(path, "a+")
    for attempt in range(20):  # a status check holds a shared lock for an instant: only a lasting holder counts
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)
    else:
        holder = read_holder(path)
        handle.close()
        raise RunLocked(f"{output_dir} is being written by {describe(holder)}; this process leaves it alone. "
                        "Wait for that run to end (or stop it) and run the command again.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                             "command": " ".join(sys.argv)[:500]}))
    handle.flush()
    return handle


def holder_of(output_dir):
    """Who holds the run's lock now (a dict, possibly empty), or ``None`` when nobody does."""
    path = lock_path(output_dir)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(path)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
