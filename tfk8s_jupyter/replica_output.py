"""A replica's output: protocol lines kept whole on stdout, diagnostics on stderr.

Keras progress bars write ``\\r``, backspaces and ANSI codes into stdout and leave lines unfinished;
:class:`LineTrackingStdout` remembers whether the last write ended a line, so :class:`Reporter` starts each
protocol line (``@tfk8s {json}``, see ``protocol.py``) on a line of its own. :func:`log` writes the runner's
diagnostics to stderr.

Part of the runner (see ``runner.py``); stdlib only, it travels with the runner in the job's ConfigMap.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time

try:
    from tfk8s_jupyter import protocol
except ImportError:  # standalone: the shipped modules sit beside this file
    import protocol  # type: ignore[no-redef]


class LineTrackingStdout:
    """Wraps ``sys.stdout``: remembers whether the last write ended a line, serialises writers."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.lock = threading.RLock()
        self.at_line_start = True

    def write(self, text: str) -> int:
        with self.lock:
            n = self._stream.write(text)
            if text:
                self.at_line_start = text.endswith("\n")
            return n

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class Reporter:
    """Prints protocol events; only the reporting replica prints all of them, every replica prints errors."""

    def __init__(self, out: LineTrackingStdout | None, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled
        self.run = secrets.token_hex(4)
        self.seq = 0

    def emit(self, event_type: str, *, always: bool = False, **fields) -> None:
        if not (self.enabled or always) or self.out is None:
            return
        with self.out.lock:
            self.seq += 1
            line = protocol.encode(event_type, run=self.run, seq=self.seq, t=round(time.time(), 3), **fields)
            self.out.write(("" if self.out.at_line_start else "\n") + line + "\n")
            self.out.flush()


def log(message: str) -> None:
    """A runner diagnostic on stderr."""
    sys.stderr.write(f"tfk8s: {message}\n")
    sys.stderr.flush()
