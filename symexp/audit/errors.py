"""Audit input errors: one line each, printed by the CLI without a traceback (symexp.errors)."""
from __future__ import annotations

from symexp.errors import UserError


class TraceError(UserError):
    """The model's structure cannot be read: its forward fails on the inputs given, or nothing traces."""


class CheckpointError(UserError):
    """A checkpoint or job directory that is missing, unreadable, unsafe, or does not fit the model."""


class AuditError(UserError):
    """A bad argument to the audit itself (threshold, offsets)."""
