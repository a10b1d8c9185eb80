"""Errors a user can fix. Each message is one line naming the key or file and what is allowed; the
CLI prints it without a traceback and exits with code 2 (SYMEXP_DEBUG=1 shows the traceback)."""
from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message is the whole story, in one line."""


class ConfigError(UserError):
    """A bad configuration value or combination, caught before anything is built."""


class DataError(UserError):
    """A data set that is missing, corrupt, truncated or of the wrong shape, dtype or label range."""


class FileError(UserError):
    """A file symexp wrote earlier (checkpoint, status, table) that cannot be read back."""
