"""The photo library: indexing folders of photos, grouping faces into people, search and export.

Nothing is imported here: the indexer's worker processes import :mod:`faceatlas.library.work` and must
not pay for SQLAlchemy; :func:`faceatlas.library.store.open_library` registers the tables.
"""
