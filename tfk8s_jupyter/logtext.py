"""Replica output as text: the last lines of a log, a one-line excerpt for messages, a file tail.

Every backend and face uses these, so "the last N lines" means the same thing everywhere.
Stdlib only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .protocol import MARKER, parse_line


def last_lines(text: str, n: int | None) -> str:
    """The last ``n`` lines of ``text`` (all of it when ``n`` is None, nothing when ``n`` is 0 or less).

    Lines end at ``\n`` only: a progress bar's carriage returns and backspaces stay inside its line, for
    the face that shows it to resolve as a terminal would (``str.splitlines`` would make each ``\r`` a
    line of its own). The result ends with a newline whenever it holds a line, so pieces can be
    concatenated.
    """
    if n is None:
        return text
    if n <= 0:
        return ""
    lines = split_lines(text)[-n:]
    return "\n".join(lines) + "\n" if lines else ""


def split_lines(text: str) -> list[str]:
    """``text``'s lines, ended by ``\n`` only (a ``\r`` is part of its line: progress bars)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


# TensorFlow, absl and CUDA start-up lines every replica prints (on a CPU machine too), TensorFlow's
# notes on cells defined in a notebook, and its slow-callback warning: folded behind "show all".
_STARTUP_NOISE = re.compile(
    "|".join(
        [
            r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
            r"^[IWE]\d{4} [\d:. ]+\s+\d+ (port|cudart_stub|cuda_platform|cuda_dnn|cuda_fft|cuda_blas|"
            r"cuda_executor|cpu_feature_guard|computation_placer|tf_trt|gpu_device|dso_loader)\.cc:\d+\]",
            r"oneDNN custom operations are on",
            r"Could not find cuda drivers",
            r"failed call to cuInit",
            r"Unable to register cu(DNN|FFT|BLAS) factory",
            r"TF-TRT Warning",
            r"This TensorFlow binary is optimized to use available CPU instructions",
            r"^To enable the following instructions: .* rebuild TensorFlow",
            r"AutoGraph could not transform <",
            r"^Cause: Unable to locate the source code of <",
            r"^To silence this warning, decorate the function with @tf\.autograph",
            r"Callback method `on_train_batch_(begin|end)` is slow compared to the batch time",
        ]
    )
)


TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x08")  # colours, cursor moves, backspaces


def is_startup_noise(line: str) -> bool:
    """Whether ``line`` is TensorFlow/absl/CUDA start-up noise (not the cell's or the runner's words)."""
    return bool(_STARTUP_NOISE.search(line))


def log_excerpt(text: str | None, n: int = 3, width: int = 400) -> str:
    """The last ``n`` non-empty lines joined by `` | `` (progress-bar ``\\r`` resolved), at most ``width``
    characters: a log's end quoted inside a one-sentence message. Only words are quoted: a protocol line
    gives its error's message (other events nothing), and terminal codes and TensorFlow's start-up noise
    are left out."""
    lines = []
    for line in (text or "").replace("\r", "\n").splitlines():
        event = parse_line(line)
        words = line.split(MARKER, 1)[0]
        if event is not None and event["type"] == "error":
            words += f" {event.get('message') or ''}"
        words = TERMINAL_CODES.sub("", words).strip()
        if words and not is_startup_noise(words):
            lines.append(words)
    out = " | ".join(lines[-n:]) if n > 0 else ""
    return out if len(out) <= width else "…" + out[-width:]


def read_log(path: str | os.PathLike, tail: int | None = None, max_bytes: int = 4 << 20) -> str:
    """A log file as text (only its last ``max_bytes``), or its last ``tail`` lines; ``""`` when absent.

    With ``tail`` only the end of the file is read: blocks from the end until ``tail`` lines are in.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if tail is None:
                f.seek(max(0, size - max_bytes))
                data = f.read()
            else:
                data = _read_last_lines(f, size, max(tail, 0), max_bytes)
    except FileNotFoundError:
        return ""
    return last_lines(data.decode("utf-8", errors="replace"), tail)


def _read_last_lines(f, size: int, n: int, max_bytes: int, block: int = 64 << 10) -> bytes:
    """The bytes of the last ``n`` lines of ``f`` (``size`` bytes long), at most ``max_bytes`` of them."""
    data = b""
    pos = size
    # n + 1 newlines make n complete lines even when the file ends with one
    while pos > 0 and len(data) < max_bytes and data.count(b"\n") <= n:
        step = min(block, pos, max_bytes - len(data))
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    return data


class FileTail:
    """The complete lines appended to a file since the previous call (a file that does not exist yet is
    empty). ``max_partial`` bounds the unfinished last line kept between calls."""

    def __init__(self, path: str | os.PathLike, max_partial: int = 1 << 20):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""
        self.max_partial = max_partial

    def read_bytes(self, max_bytes: int | None = None) -> list[bytes]:
        """New complete lines, undecoded (from at most about ``max_bytes`` read: call again for more)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read() if max_bytes is None else f.read(max_bytes)
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()[-self.max_partial :]
        return lines

    def read(self) -> list[str]:
        """New complete lines as text."""
        return [line.decode("utf-8", errors="replace") for line in self.read_bytes()]

    def rest(self) -> str | None:
        """The unfinished last line (for a file that will not grow any more), once; None when there is none."""
        if not self.partial:
            return None
        text, self.partial = self.partial.decode("utf-8", errors="replace"), b""
        return text
