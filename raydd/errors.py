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


class StorageError(RunDirError):
    """A file could not be written: the disk is full, the directory is read-only or gone, no permission.

    The message names the file, the cause, what to do about it, and how to continue afterwards
    (``again``): a command that can resume replaces the default with its ``--resume`` line.
    """

    def __init__(self, path: str, problem: str, action: str, again: str = "run the command again") -> None:
        self.path, self.problem, self.action, self.again = path, problem, action, again
        super().__init__(f"{path}: cannot write: {problem}; {action}, then {again}")

    def __reduce__(self):  # keep the fields across processes (Ray ships exceptions pickled)
        return type(self), (self.path, self.problem, self.action, self.again)

    def continued_by(self, again: str) -> "StorageError":
        """The same failure, saying how this command continues once the cause is fixed."""
        return StorageError(self.path, self.problem, self.action, again)


class ArtifactError(RunDirError):
    """A file raydd reads is cut short (a full disk, a copy that stopped) or is not the file raydd wrote."""

    def __init__(self, path: str, what: str, detail: str, remedy: str) -> None:
        self.path, self.what, self.detail, self.remedy = path, what, detail, remedy
        super().__init__(f"{path}: cut short or not a {what} ({detail}); {remedy}")

    def __reduce__(self):
        return type(self), (self.path, self.what, self.detail, self.remedy)
