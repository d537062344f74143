"""The benchmark tables as a library: reading records (``reading``), statistics (``statistics``), building the
tables (``builders``), writing them (``render``, ``plots``) and the papers' published numbers (``published``).
``scripts/tables.py`` is its command line; the suite and the sweep use the same code."""
