"""A replica's output: protocol lines kept whole on stdout, diagnostics on stderr.

Keras progress bars write ``\\r``, backspaces and ANSI codes into stdout and leave lines unfinished;
:class:`LineTrackingStdout` remembers whether the last write ended a line, so :class:`Reporter` starts each
protocol line (``@tfk8s {json}``, see ``protocol.py``) on a line of its own. :func:`log` writes the runner's
diagnostics to stderr. The reporter authenticates every line with the job's protocol key, which
:func:`take_protocol_key` takes out of the environment before the cell runs. :func:`install_notebook_builtins`
gives the cell a notebook kernel's ``display()`` (plain text on stdout) and an ``input()`` that says in one
sentence why no one answers it.

Part of the runner (see ``runner.py``); stdlib only, it travels with the runner in the job's ConfigMap.
"""

from __future__ import annotations

import os
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


def take_protocol_key(name: str = "TFK8S_PROTOCOL_KEY") -> str:
    """The job's protocol key, removed from ``os.environ`` (so the cell and the processes it starts do not
    inherit it) and blanked in this process's initial environment block (so ``/proc/self/environ`` does
    not show it); ``""`` when the job has none."""
    key = os.environ.pop(name, "")
    if key:
        _blank_initial_environ(f"{name}=".encode())
    return key


def _blank_initial_environ(prefix: bytes) -> None:
    """Overwrite the value of ``prefix`` in the environment block the kernel shows as /proc/self/environ
    (best effort: Linux only; the strings are no longer referenced once the variable was unset)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50 and 51 of stat)
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            block = b"\0" + mem.read(end - start)  # a NUL in front: every variable follows a NUL
            at = block.find(b"\0" + prefix)
            if at < 0:
                return
            value_at = at + len(prefix)  # offset in the block as read (the extra NUL cancels the +1)
            value_end = block.find(b"\0", value_at + 1)
            value_end = (len(block) if value_end < 0 else value_end) - 1
            mem.seek(start + value_at)
            mem.write(b"\0" * (value_end - value_at))
    except (OSError, ValueError, IndexError):
        pass


class Reporter:
    """Prints protocol events; only the reporting replica prints all of them, every replica prints errors.
    Each line is authenticated with ``key`` (the job's protocol key) when there is one."""

    def __init__(self, out: LineTrackingStdout | None, enabled: bool, key: str = "") -> None:
        self.out = out
        self.enabled = enabled
        self._key = key
        self.run = secrets.token_hex(4)
        self.seq = 0

    def emit(self, event_type: str, *, always: bool = False, **fields) -> None:
        if not (self.enabled or always) or self.out is None:
            return
        with self.out.lock:
            self.seq += 1
            line = protocol.encode(
                event_type, self._key, run=self.run, seq=self.seq, t=round(time.time(), 3), **fields
            )
            self.out.write(("" if self.out.at_line_start else "\n") + line + "\n")
            self.out.flush()


def log(message: str) -> None:
    """A runner diagnostic on stderr."""
    sys.stderr.write(f"tfk8s: {message}\n")
    sys.stderr.flush()


class _DisplayHandle:
    """What ``display(..., display_id=True)`` returns in a notebook: ``update`` shows the new object."""

    def __init__(self, display_id) -> None:
        self.display_id = display_id

    def display(self, obj, **kwargs) -> None:
        display(obj)

    def update(self, obj, **kwargs) -> None:
        display(obj)


def display(*objs, **kwargs):
    """A notebook's ``display()`` where there is no IPython kernel: each object's plain-text form (its
    ``repr``, as a notebook's text output shows it) printed on stdout."""
    for obj in objs:
        print(repr(obj))
    display_id = kwargs.get("display_id")
    if display_id:
        return _DisplayHandle(display_id)
    return None


class InputUnavailable(EOFError):
    """``input()`` in a replica, where no one can answer (an ``EOFError``, as Python raises at end of input)."""


def _no_kernel():
    """``get_ipython()`` in a replica: no IPython shell runs here."""
    return None


def _input_with_reason(original):
    def input(prompt: object = "", /) -> str:  # noqa: A001 (the builtin's own name, as the cell calls it)
        try:
            return original(prompt)
        except EOFError:
            raise InputUnavailable(
                f"input({str(prompt)!r}) has no one to answer it in a job, whose replicas run without a "
                "terminal; set the value in the cell instead."
            ) from None

    input._tfk8s = True
    input.__wrapped__ = original
    return input


def install_notebook_builtins() -> None:
    """What a cell has in a notebook's kernel and not in a replica: the ``display`` builtin (unless one is
    there already), ``get_ipython()``, which answers None as in any plain Python process (so a cell's
    ``'google.colab' in str(get_ipython())`` works), and an ``input()`` that says why it gets no answer."""
    import builtins

    if not hasattr(builtins, "display"):
        builtins.display = display
    if not hasattr(builtins, "get_ipython"):
        builtins.get_ipython = _no_kernel
    if not getattr(builtins.input, "_tfk8s", False):
        builtins.input = _input_with_reason(builtins.input)
