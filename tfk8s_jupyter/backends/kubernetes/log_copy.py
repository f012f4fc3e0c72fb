"""The reporting replica's log as the follower reads it: the copy in the record it appends to
(:class:`LogCopy`), and the lines of a log read in bounded pieces (:func:`text_lines`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from .lifecycle import AttemptLog


def text_lines(chunks: Iterable[str]) -> Iterator[str]:
    """The lines of text arriving in ``chunks`` (without their newline); what is held at any moment is one
    chunk and the line it ends in, never the whole text."""
    partial: list[str] = []
    for chunk in chunks:
        if "\n" not in chunk:
            partial.append(chunk)
            continue
        if partial:
            partial.append(chunk)
            chunk = "".join(partial)
            partial = []
        lines = chunk.split("\n")
        last = lines.pop()
        yield from lines
        if last:
            partial.append(last)
    if partial:
        yield "".join(partial)


class LogCopy:
    """The follower's writer of the reporting replica's log copy: appends only.

    Each container run is an attempt of :class:`.lifecycle.AttemptLog` (the separator before every attempt
    after the first, the index the final capture completes); a stream reconnected to the same container
    re-reads its log from the start, so the lines already copied are skipped, never written twice.
    """

    def __init__(self, log: AttemptLog):
        self.log = log
        self.key: str | None = None
        self.copied = 0  # lines of attempt ``key`` in the copy
        self.seen = 0  # lines of attempt ``key`` read by the current stream
        self.file = None

    def attempt(self, key: str) -> LogCopy:
        """Begin reading attempt ``key`` from its start (a ``with`` block around one stream)."""
        if key != self.key:
            with AttemptLog._lock:
                f = self.log.open(key)  # closes the previous attempt, writes the separator
            if f is not None:
                f.close()
            self.key, self.copied = (key if f is not None else None), 0
        self.seen = 0
        return self

    def __enter__(self) -> LogCopy:
        self.log.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.log.path, "a")
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()
        self.file = None

    def add(self, line: str) -> None:
        self.seen += 1
        if self.key is not None and self.seen > self.copied:
            self.file.write(line + "\n")
            self.copied = self.seen

    def flush(self) -> None:
        self.file.flush()

    def finish(self, key: str, lines: Iterable[str], deliver: Callable[[list[str]], None], batch: int = 1000):
        """The whole log of attempt ``key`` (a container that restarted), line by line: every line goes to
        ``deliver`` (``batch`` at a time), the lines not copied yet are appended when ``key`` is the attempt
        being copied. Nothing but one batch is held."""
        copying = key == self.key
        if copying:
            self.attempt(key)
            self.__enter__()
        try:
            out: list[str] = []
            for line in lines:
                if copying:
                    self.add(line)
                out.append(line)
                if len(out) >= batch:
                    if copying:
                        self.flush()
                    deliver(out)
                    out = []
            if copying:
                self.flush()
            deliver(out)
        finally:
            if copying:
                self.__exit__()
