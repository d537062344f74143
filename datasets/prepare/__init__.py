"""Dataset preparation: ``python -m datasets.prepare NAME [NAME ...] --root $DATA`` downloads, verifies and lays out
each dataset the way its module in ``datasets/`` reads it; ``--check`` only verifies.

The pieces: ``sources`` (the data table: where each file comes from, its checksum, how it maps onto the layout),
``fetch`` (resumable, verified downloads), ``unpack`` (safe extraction and placement), ``ilsvrc`` (ImageNet's
archives and validation labels), ``layout`` (the check, through the dataset modules' own readers) and ``cli``.
Only ``layout`` and ``cli`` need Dassl (they import the dataset modules).
"""
