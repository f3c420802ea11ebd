"""Tools for the docs (not part of the library)."""
