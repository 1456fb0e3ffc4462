"""The ``faceatlas`` command line."""
