"""The photo library: indexing folders of photos, grouping faces into people, search and export."""

from faceatlas.library import tables  # noqa: F401  (registers the library tables on Base)
