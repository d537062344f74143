"""Importing this package registers every trainer with Dassl.

The pure-torch pieces (encoders, prompts, schedule, ...) need no Dassl, so the package stays importable for them
when Dassl is not installed; the trainers themselves are registered only when it is.
"""
import importlib.util

if importlib.util.find_spec("dassl") is not None:
    from . import coop, zsclip  # noqa: F401
