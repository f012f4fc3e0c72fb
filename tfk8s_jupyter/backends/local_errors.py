"""Which failures of a local job's replica a restart may cure: a lost peer, judged by the exception's type
(never by words in its message or traceback, which the cell controls)."""

from __future__ import annotations

import re

# Exception types that mean a peer was lost rather than a bug in the cell: restarts can cure these. The
# decision reads only the type name the runner puts first in its error event ("UnavailableError: ..."),
# never the free text of a message, which the cell controls.
TRANSIENT_ERRORS = frozenset(
    {
        "UnavailableError",
        "AbortedError",
        "DeadlineExceededError",
        "CancelledError",
        "ConnectionError",
        "ConnectionResetError",
        "ConnectionRefusedError",
        "ConnectionAbortedError",
        "BrokenPipeError",
    }
)
_TYPE_NAME = re.compile(r"([A-Za-z_][\w.]*):")


def error_type(event: dict) -> str | None:
    """The exception type name an ``error`` event starts its message with (``UnavailableError``), if any."""
    match = _TYPE_NAME.match(str(event.get("message") or event.get("error") or ""))
    return match.group(1).rsplit(".", 1)[-1] if match else None


def curable_error(event: dict) -> bool:
    """Whether a restart may cure the failure an ``error`` event reports: a lost peer, by the exception's
    type (never by words in its message or traceback). With the runner's ``error_type`` (module and
    qualified name), only TensorFlow's own error types, or a built-in connection error raised outside the
    cell's own code, count: a cell's own ``class UnavailableError`` or its ``raise ConnectionError`` does not."""
    full = event.get("error_type")
    if isinstance(full, str) and full:
        module, _, name = full.rpartition(".")
        if name not in TRANSIENT_ERRORS:
            return False
        if module.startswith("tensorflow."):
            return True
        return module == "builtins" and event.get("raised_in_cell") is False
    return error_type(event) in TRANSIENT_ERRORS
