"""What ``datasets`` and ``trainers`` both need (atomic files, image reading, the one place that imports Dassl).

This package imports neither of them, so the layers go one way: ``common`` <- ``datasets`` <- ``trainers``.
"""
