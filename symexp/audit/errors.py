"""Audit input errors: one line each, printed by the CLI without a traceback (symexp.errors)."""
from __future__ import annotations

import re

from symexp.errors import UserError

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal escape codes (torch's messages bold some words)


class TraceError(UserError):
    """The model's structure cannot be read: its forward fails on the inputs given, or nothing traces."""


class CheckpointError(UserError):
    """A checkpoint or job directory that is missing, unreadable, unsafe, or does not fit the model."""


class AuditError(UserError):
    """A bad argument to the audit itself (threshold, offsets)."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, without terminal escape codes, for a one-line error."""
    return (ANSI.sub("", str(e)).strip().splitlines() or ["(no message)"])[0][:240]
