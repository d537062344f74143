"""Files written so that a crash leaves either the old file or the new one, never half of either."""
import json
import os
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_open(path, mode="w"):
    """Write to a temporary file beside ``path`` and rename it over ``path`` only once it is complete."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, obj):
    with atomic_open(path, "w") as handle:
        json.dump(obj, handle, indent=2)
        handle.write("\n")


def atomic_torch_save(obj, path):
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
