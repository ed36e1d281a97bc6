"""Errors a user can act on.

Everything raised as a ``RayddError`` is printed by the CLI as one line (no traceback):
the message must name the file, field or value at fault and say what is wrong with it.
"""


class RayddError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class DataError(RayddError):
    """A dataset file or record is missing, unreadable or inconsistent."""


class ConfigError(RayddError):
    """A configuration value is unknown or out of range."""


class RunDirError(RayddError):
    """A run directory is missing, incomplete or belongs to a different run."""
