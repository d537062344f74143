"""The trainers: pure-torch models (``*_model.py``, each declaring its trainer in ``registry``) and their thin Dassl
adapters. Importing this package imports nothing else: ``registry.register_with_dassl()`` (called by ``train.py``)
imports the adapters, and with them Dassl."""
