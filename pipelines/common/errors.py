"""Errors users see: each message names the file, row or key and how to fix it."""


class GatecastError(Exception):
    """Base class for every error gatecast raises on bad input."""


class ConfigError(GatecastError, ValueError):
    """A config file or key is invalid."""


class DataError(GatecastError, ValueError):
    """Market data is missing, malformed or too short."""
