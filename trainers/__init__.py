"""Importing this package registers every trainer with Dassl.

The pure-torch pieces (encoders, prompts, schedule, ``*_model`` modules) need no Dassl, so the package stays
importable for them when Dassl is not installed; the trainers themselves are registered only when it is.
"""
import importlib.util
import logging
import os

if importlib.util.find_spec("dassl") is not None:
    # Dassl imports wilds, whose version check starts a network thread at import time, and which disables all
    # log records up to WARNING for the whole process: skip the first, undo the second.
    os.environ.setdefault("OUTDATED_IGNORE", "1")
    import dassl.engine  # noqa: F401

    logging.disable(logging.NOTSET)

    from . import coop, dualmiprompt, zsclip  # noqa: F401,E402
