"""Importing this package registers every trainer with Dassl.

The pure-torch pieces (encoders, prompts, schedule, ``*_model`` modules) need no Dassl, so the package stays
importable for them when Dassl is not installed; the trainers themselves are registered only when it is.
"""
import importlib.util
import logging
import sys

if importlib.util.find_spec("dassl") is not None:
    # Dassl imports wilds, which (1) starts a thread asking PyPI whether wilds is outdated, through the
    # `outdated` package, and (2) disables every log record up to WARNING for the whole process. wilds skips the
    # check when `outdated` cannot be imported, so block that import while Dassl loads; then undo (2).
    blocked = "outdated" not in sys.modules
    if blocked:
        sys.modules["outdated"] = None
    try:
        import dassl.engine  # noqa: F401
    finally:
        if blocked:
            del sys.modules["outdated"]
    logging.disable(logging.NOTSET)

    from . import cocoop, coop, dualmiprompt, maple, zsclip  # noqa: F401,E402
