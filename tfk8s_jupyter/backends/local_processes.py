"""Facts about this machine's processes, read from ``/proc``: whether a pid is still the process we started,
its state (running, stopped, in uninterruptible sleep), the CPU it has used, the ports it listens on. The
local backend and its supervisor decide from these. And one act on the calling process's own memory:
:func:`release_file_pages`, which an idle warm or kept replica calls before it waits."""

from __future__ import annotations

import os
import time
from pathlib import Path


def proc_start_ticks(pid: int) -> int | None:
    """The kernel start time of ``pid`` (clock ticks since boot), or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, when given, is still the process started at ``start_ticks``."""
    if not pid:
        return False
    ticks = proc_start_ticks(pid)
    if ticks is None:
        return False
    return start_ticks is None or ticks == start_ticks


def listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (from its socket fds and ``/proc/net/tcp*``)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and parts[9] in inodes:
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name: state first, then ppid, ... (``proc(5)``, from field 3)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat[stat.rfind(")") + 1 :].split()


def process_state(pid: int) -> str | None:
    """The one-letter state of process ``pid`` (``R``, ``S``, ``D``, ``T``, ...) from ``/proc/<pid>/stat``."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds process ``pid`` has used so far."""
    fields = _stat_fields(pid)
    try:
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (IndexError, ValueError):
        return None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


MADV_DONTNEED = 4  # <sys/mman.h>, Linux


def release_file_pages(smaps: str = "/proc/self/smaps") -> int:
    """Unmap from this process the pages it holds of read-only file mappings that it never wrote (the code
    and constants of TensorFlow's libraries, for an idle replica); returns the kB released from its RSS.

    Such a page is the file's own page in the page cache: released, it stays cached for every other process,
    and a later touch maps it back (a minor fault), as after the kernel reclaimed it under memory pressure.
    Measured on this machine for a warm pool process (TensorFlow and Keras 3 imported): RSS 644 MB -> 255
    MB, and a first Keras ``fit`` afterwards mapped back only 58 MB of them, at no measurable cost. Only
    mappings that cannot be written (no ``w`` permission) and hold no private or anonymous page are
    released, so no page anyone changed is dropped; and only those still mapped as they were when read
    (``/proc/self/maps`` is read again right before), for a process whose other threads run meanwhile."""
    import ctypes

    try:
        text = Path(smaps).read_text()
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    unchanged = ("Anonymous", "Private_Dirty", "Shared_Dirty")
    candidates = [
        (header, fields)
        for header, fields in _file_mappings(text)
        if fields.get("Rss") and not any(fields.get(k, 1) for k in unchanged)
    ]
    try:
        still = set(Path(smaps).with_name("maps").read_text().splitlines())
    except OSError:
        return 0
    released = 0
    for header, fields in candidates:
        if header not in still:
            continue  # unmapped, moved or made writable since: not this mapping any more
        lo, hi = (int(x, 16) for x in header.split(None, 1)[0].split("-"))
        if madvise(lo, hi - lo, MADV_DONTNEED) == 0:
            released += fields["Rss"]
    return released


def _file_mappings(smaps: str):
    """``(header line, {field: kB})`` for each read-only mapping of a file that still exists in ``smaps``
    (the header line is the mapping's line in ``/proc/<pid>/maps``)."""
    current = None
    for line in smaps.splitlines():
        head, _, rest = line.partition(" ")
        if head.endswith(":"):
            if current is not None:
                value = rest.split()
                current[1][head[:-1]] = int(value[0]) if value and value[0].isdigit() else 0
            continue
        if current is not None:
            yield current
        current = None
        parts = line.split(None, 5)
        path = parts[5] if len(parts) == 6 else ""
        if "-" in head and "w" not in parts[1] and path.startswith("/") and not path.endswith("(deleted)"):
            current = (line, {})
    if current is not None:
        yield current


class AnswerWatch:
    """Waiting on a process asked to answer (a pool or kept process given its assignment).

    It counts as wedged once it has gone ``quiet`` seconds without running (neither runnable nor in
    uninterruptible sleep, and no CPU used): a stopped or hung process never answers, while on a loaded
    machine a healthy one may wait seconds in the run queue before it can. ``limit`` seconds in all end the
    wait either way."""

    LOOK_EVERY = 0.1

    def __init__(self, pid: int, quiet: float, limit: float) -> None:
        self.pid, self.quiet = pid, quiet
        self.moved = self.looked = time.monotonic()
        self.end = self.moved + limit
        self.cpu = process_cpu_seconds(pid)

    def moving(self) -> None:
        """Count the process as on its way now (the caller saw it working, e.g. still resetting)."""
        self.moved = time.monotonic()

    def wedged(self) -> bool:
        now = time.monotonic()
        if now - self.looked >= self.LOOK_EVERY:
            self.looked = now
            cpu = process_cpu_seconds(self.pid)
            ran = cpu is not None and self.cpu is not None and cpu > self.cpu
            if ran or process_state(self.pid) in ("R", "D"):
                self.moved = now
            self.cpu = cpu
        return now >= self.end or now - self.moved >= self.quiet
