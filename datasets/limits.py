"""Every cap on what the datasets code reads or unpacks, with its default, its environment variable and the parsing
of a value: the one place to look up or change a limit. A cap guards against a file that is damaged or hostile (a
decompression bomb, a split file of a gigabyte): each refusal names the cap and how to raise it. "none" lifts one.

- ``DATASETS_PREPARE_MAX_RATIO`` / ``--max-expand-ratio``: an archive writes at most this many times its own size.
- ``DATASETS_PREPARE_MAX_SIZE`` / ``--max-expand-size``: an archive writes at most this many bytes.
- ``DATASETS_PREPARE_MAX_MEMBERS`` / ``--max-members``: an archive (with the archives inside it) holds at most this
  many members; by default one per KiB of the archive, and never fewer than ``MEMBER_FLOOR``.
- ``DATASETS_MAX_SPLIT_SIZE``: a split file is read only up to this size (parsing JSON takes ~20 times its size in
  memory).
"""
import math
import os
import re

from common.fileio import human_size as human  # noqa: F401  (the caps' messages say sizes as the write errors do)

# The table's archives hold images (JPEG / PNG, already compressed) and a few text files, so each writes about its
# own size: ~1x for the tars, ~2x for caltech-101.zip counting its inner tar.gz. A ratio of 20 leaves room for
# archives of annotations and text, while deflate reaches ~1000:1 on repeated bytes: a 300 KB archive may write
# 6 MB, not 300 MB. The absolute cap is above the largest archive, ILSVRC2012_img_train.tar (138 GB, ratio ~1),
# whose classes come to ~140 GB.
DEFAULT_MAX_RATIO = 20.0
DEFAULT_MAX_SIZE = 256 << 30  # 256 GiB
RATIO_ENV = "DATASETS_PREPARE_MAX_RATIO"
SIZE_ENV = "DATASETS_PREPARE_MAX_SIZE"

# Members: the densest archive of the table is EuroSAT's (64x64 JPEGs of ~3 KB each); one member per KiB of archive
# leaves three times that room, while empty members compress to a few bytes each (100,000 files in 620 KB).
MEMBERS_ENV = "DATASETS_PREPARE_MAX_MEMBERS"
BYTES_PER_MEMBER = 1024
MEMBER_FLOOR = 10_000  # small archives of annotations and splits

# Split files: CoOp's largest (SUN397's, Food-101's) are under 10 MB.
SPLIT_SIZE_ENV = "DATASETS_MAX_SPLIT_SIZE"
DEFAULT_MAX_SPLIT_SIZE = 32 << 20

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_ratio(text):
    """A positive number, or "none" (no cap); ValueError otherwise."""
    text = str(text).strip().lower()
    if text in ("none", "inf"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ValueError(f"expansion ratio {text!r}: give a positive number (e.g. 20) or 'none'")
    return value


def parse_size(text):
    """Bytes from "500G", "64M", "1.5T", "1000000" (K/M/G/T are powers of 1024), or "none" (no cap)."""
    text = str(text).strip().lower()
    if text in ("none", "inf"):
        return math.inf
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", text)
    if not match or not float(match.group(1)) > 0:
        raise ValueError(f"expansion size {text!r}: give a size such as 500G, 64M or 1000000 (bytes), or 'none'")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def parse_count(text):
    """A positive whole number, or "none" (no cap); ValueError otherwise."""
    text = str(text).strip().lower()
    if text in ("none", "inf"):
        return math.inf
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"member count {text!r}: give a positive whole number (e.g. 200000) or 'none'")
    return int(text)


def default_max_members(archive_size):
    return max(MEMBER_FLOOR, archive_size // BYTES_PER_MEMBER)


def max_split_size(environ=None):
    """The cap on a split file's size: ``$DATASETS_MAX_SPLIT_SIZE``, else the default; ValueError naming a bad
    value."""
    environ = os.environ if environ is None else environ
    text = environ.get(SPLIT_SIZE_ENV)
    if not text:
        return DEFAULT_MAX_SPLIT_SIZE
    try:
        return parse_size(text)
    except ValueError as err:
        raise ValueError(f"${SPLIT_SIZE_ENV}: {err}") from None
