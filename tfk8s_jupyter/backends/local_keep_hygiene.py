"""What a cell leaves behind in a kept replica's process: threads still running and regular files still open.

A kept replica runs the next job of its shape in the same process (:mod:`.local_keep_process`). Python
threads cannot be stopped from outside, and a file still open after the reset
(:func:`~.local_keep_process.reset_process`, which drops the cell's namespace and collects its objects) is
held by something alive: a thread, a ``logging`` handler, a module-level global. Either would carry into the
next job (a thread still training or writing into the previous job's folder, a log file of the previous
job), so a replica whose cell left one is not kept: it exits at its job's end as a cold replica would, with
one line in its log naming what was left and how to avoid it.

What counts is measured against a baseline of the process itself, taken before the cell runs
(:func:`snapshot`): TensorFlow, gRPC, tf.data and the runner start their own threads and open their own
files (logs, the protocol pipe, checkpoints, summaries), and those are either in the baseline or closed by
the end of the run. A thread is left behind when it is alive after the run (and after a short grace for one
that is finishing), was not alive at the baseline, and is a Python thread (``threading.Thread``, daemon or
not; threads TensorFlow's C++ runtime calls Python from are not, nor threads running this package's own
code, which the runner may start lazily after the baseline). A file is left behind when a file
descriptor of this process points at a regular file (by device and inode) it did not point at in the
baseline. Threads this package starts for keeping itself register with :func:`own` and never count.

Local-only: the runner imports this lazily, only under ``TFK8S_KEEP``.
"""

from __future__ import annotations

import os
import stat
import threading
import time
import weakref
from dataclasses import dataclass, field

FD_DIR = "/proc/self/fd"
GRACE = 0.5  # seconds threads new since the baseline get to finish before they count as left behind
MAX_NAMED = 4  # threads or files named in the line, then "and N more"


@dataclass
class Baseline:
    threads: set[int] = field(default_factory=set)  # id() of the threading.Thread objects alive
    files: dict[int, tuple[int, int]] = field(default_factory=dict)  # fd -> (st_dev, st_ino), regular files


@dataclass
class Leftovers:
    threads: list[str] = field(default_factory=list)  # thread names (daemon ones marked)
    files: list[str] = field(default_factory=list)  # paths

    def __bool__(self) -> bool:
        return bool(self.threads or self.files)


class _State:
    baseline: Baseline | None = None
    own: weakref.WeakSet = weakref.WeakSet()


def own(thread: threading.Thread) -> threading.Thread:
    """Mark ``thread`` as this package's (a keeping watch): it never counts as left behind."""
    _State.own.add(thread)
    return thread


def _regular_files() -> dict[int, tuple[int, int]]:
    out = {}
    try:
        fds = os.listdir(FD_DIR)
    except OSError:
        return out
    for name in fds:
        try:
            fd = int(name)
            st = os.stat(fd)
        except (ValueError, OSError):
            continue  # the listing's own fd, closed since
        if stat.S_ISREG(st.st_mode):
            out[fd] = (st.st_dev, st.st_ino)
    return out


PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")


def _code_file(thread: threading.Thread) -> str | None:
    """The file of the code ``thread`` runs: its target's, else its class's ``run``."""
    fn = getattr(thread, "_target", None) or getattr(type(thread), "run", None)
    for _ in range(3):  # a bound method, a functools.partial
        fn = getattr(fn, "__func__", None) or getattr(fn, "func", None) or fn
    code = getattr(fn, "__code__", None)
    return code.co_filename if code is not None else None


def _runners(thread: threading.Thread) -> bool:
    """Whether ``thread`` runs this package's code (the runner's own threads: metrics, the iterator
    reaper, keeping watches), which is never the cell's."""
    path = _code_file(thread)
    return path is not None and os.path.abspath(path).startswith(PACKAGE)


def _python_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if not isinstance(t, threading._DummyThread)  # a C++ thread that called into Python
        and t is not threading.main_thread()
        and t not in _State.own
        and not _runners(t)
    ]


def snapshot() -> Baseline:
    """Record this process's threads and open regular files: call it once the runner's own set-up is done,
    right before the cell runs. Returns the baseline (kept for :func:`leftovers`)."""
    _State.baseline = Baseline(
        threads={id(t) for t in _python_threads() if t.is_alive()}, files=_regular_files()
    )
    return _State.baseline


def baseline() -> Baseline | None:
    return _State.baseline


def leftovers(base: Baseline | None = None, grace: float = GRACE, files: bool = True) -> Leftovers:
    """What the run left since ``base`` (default: the last :func:`snapshot`; nothing is known without one):
    Python threads still alive after ``grace`` seconds, and (``files``) regular files still open."""
    base = base if base is not None else _State.baseline
    if base is None:
        return Leftovers()
    new = [t for t in _python_threads() if id(t) not in base.threads and t.is_alive()]
    deadline = time.monotonic() + grace
    for t in new:
        t.join(max(0.0, deadline - time.monotonic()))
    threads = [f"{t.name!r}" + (" (daemon)" if t.daemon else "") for t in new if t.is_alive()]
    paths: list[str] = []
    for fd, ident in sorted(_regular_files().items() if files else ()):
        if base.files.get(fd) == ident:
            continue
        try:
            path = os.readlink(f"{FD_DIR}/{fd}")
        except OSError:
            continue
        if path not in paths:
            paths.append(path)
    return Leftovers(threads, paths)


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


def sentence(replica: str, left: Leftovers) -> str:
    """The one line a replica that is not kept writes into its log."""
    what = []
    fixes = []
    if left.threads:
        what.append(f"thread(s) {_named(left.threads)} running")
        fixes.append("join or stop the threads it starts")
    if left.files:
        what.append(f"file(s) {_named(left.files)} open")
        fixes.append(
            "close the files it opens (e.g. with a `with` block; logging.FileHandler: handler.close())"
        )
    return (
        f"tfk8s: {replica} is not kept for the next run: the cell left {' and '.join(what)}; "
        f"{' and '.join(fixes)} before the cell ends to keep its replicas warm (this process exits now, as a "
        "cold replica would)."
    )


__all__ = ["Baseline", "Leftovers", "baseline", "leftovers", "own", "sentence", "snapshot"]
