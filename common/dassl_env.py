"""The one place that imports Dassl, with its import side effects neutralised.

Dassl imports wilds, which (1) starts a thread asking PyPI whether wilds is outdated, through the ``outdated``
package, and (2) disables every log record up to WARNING for the whole process. wilds skips the check when
``outdated`` cannot be imported, so that import is blocked while Dassl loads; then (2) is undone.
Entry points (``train.py``, the scripts, the tests' conftest) and the packages that register with Dassl call
``import_dassl()`` before anything else of Dassl is imported.
"""
import importlib.util
import logging
import sys


def dassl_available():
    return importlib.util.find_spec("dassl") is not None


def import_dassl():
    """Import Dassl's engine once, without its side effects; a no-op after the first call."""
    if "dassl.engine" in sys.modules:
        return
    blocked = "outdated" not in sys.modules
    if blocked:
        sys.modules["outdated"] = None
    try:
        import dassl.engine  # noqa: F401
    finally:
        if blocked:
            del sys.modules["outdated"]
    logging.disable(logging.NOTSET)
