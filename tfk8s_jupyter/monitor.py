"""JobState (what a face shows) and Monitor (one per job: follows a backend and fills a JobState).

JobState is observable: ``state.observe(callback)``; callbacks run on the monitor's threads, so a face
throttles and marshals as it needs. Each metric series keeps at most ``2 * max_points`` points, thinning
older points by halving its stride when full.

Log tails come the same way: a face asks the state for a replica's log (:meth:`JobState.follow_log`,
:meth:`JobState.refresh_log`); the monitor fetches it from the backend in its own log thread (at once,
then every ``LOG_REFRESH_SECONDS`` while the job runs) and puts it into the state, which notifies the
observers. A face never calls the backend.

The monitor never dies of a transient error: anything that goes wrong while following (an API error, a
dropped stream, an expired watch, a bad line, an observer raising) becomes a one-line note in the status'
``notes`` (:attr:`JobState.note`) and the monitor follows again after a backoff, first catching up on the
events the record gained meanwhile (read incrementally from an offset, never the whole history again), so
the panel loses and doubles no point. Only a job that no longer exists ends it.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from .backends.base import Backend, JobNotFound, JobStatus
from .protocol import EventDedup, note_message
from .records import record_of

LOG_REFRESH_SECONDS = 2.0  # how often a followed replica's log is fetched again while the job runs
LOG_FETCH_LINES = 200  # lines of a replica's log fetched per refresh
RETRY_FIRST, RETRY_MAX = 0.5, 30.0  # seconds before following again after an error, doubling up to the max
SETTLE_SECONDS, SETTLE_POLL = 10.0, 0.1  # an ended job still settling: looked at every 0.1 s, 10 s at most
HISTORY_BATCH_BYTES = 1 << 20  # events.jsonl bytes folded at a time when catching up


def event_to_point(event: dict) -> dict | None:
    """A metric point (``kind``, ``epoch``, ``step``, ``t``, ``values``) from a protocol event."""
    if event.get("type") not in ("metric", "epoch"):
        return None
    values = {k: v for k, v in (event.get("values") or {}).items() if isinstance(v, (int, float))}
    return {
        "kind": "step" if event["type"] == "metric" else "epoch",
        "epoch": event.get("epoch"),
        "step": event.get("step"),
        "t": event.get("t"),
        "values": values,
    }


class Series:
    """One metric's points, memory-bounded by stride doubling (keeps first, last and an even spread).

    The points live in arrays of doubles, not lists of float objects: a long run's kept points, scattered
    among the short-lived objects of millions of events, would pin the allocator's memory pools (measured:
    ~250 MB of RSS for a 1,000,000-point job with lists, see bench/bench_follow.py)."""

    def __init__(self, max_points: int = 2000):
        self.max_points = max_points
        self.x = array("d")
        self.y = array("d")
        self.stride = 1
        self._count = 0
        self.last: tuple[float, float] | None = None

    def add(self, x: float, y: float) -> None:
        self.last = (x, y)
        if self._count % self.stride == 0:
            self.x.append(x)
            self.y.append(y)
            if len(self.x) >= 2 * self.max_points:
                self.x, self.y = self.x[::2], self.y[::2]
                self.stride *= 2
        self._count += 1

    def points(self, limit: int | None = None) -> tuple[list[float], list[float]]:
        """At most ``limit`` (default ``max_points``) evenly thinned points, always ending at the last one."""
        limit = limit or self.max_points
        x, y = self.x, self.y
        if len(x) > limit:
            step = -(-len(x) // limit)
            x, y = x[::step], y[::step]
        if self.last and (not x or x[-1] != self.last[0]):
            x, y = [*x, self.last[0]], [*y, self.last[1]]
            if len(x) > limit:
                x, y = x[1:], y[1:]
        return list(x), list(y)

    def __len__(self) -> int:
        return self._count


@dataclass(frozen=True)
class LogTail:
    """The last lines of one replica's log as the monitor last fetched them (``error``: why it could not)."""

    replica: str
    text: str = ""
    error: str | None = None
    fetched: float = 0.0  # time.monotonic() of the fetch


class JobState:
    """The live view of one job: status, metric series, last values, lifecycle events, log tails."""

    def __init__(self, name: str, max_points: int = 2000):
        self.name = name
        self.max_points = max_points
        self.status: JobStatus | None = None
        self.step_series: dict[str, Series] = {}
        self.epoch_series: dict[str, Series] = {}
        self.last_values: dict[str, float] = {}
        self.last_point: dict | None = None
        self.epoch: int | None = None
        self.step: int | None = None
        self.error: str | None = None
        self.note: str | None = None  # a transient problem following the job, shown among the status' notes
        self.event_notes: list[str] = []  # the job's ``note`` events (not its error), shown among the notes
        self.checkpoints: int = 0
        self.n_points = 0
        self.version = 0  # bumps on every change; faces compare it to skip redundant renders
        self._dedup = EventDedup()
        self._lock = threading.RLock()
        self._observers: list[Callable[[JobState], None]] = []
        # log tails: what faces asked for, what the monitor fetched
        self._logs: dict[str, LogTail] = {}
        self._logs_followed: Counter[str] = Counter()
        self._log_waiters: dict[str, list[threading.Event]] = {}
        self._log_source: Callable[[], None] | None = None

    # observation ------------------------------------------------------------
    def observe(self, callback: Callable[[JobState], None]) -> None:
        self._observers.append(callback)

    def unobserve(self, callback: Callable[[JobState], None]) -> None:
        if callback in self._observers:
            self._observers.remove(callback)

    def _changed(self) -> None:
        self.version += 1
        for cb in list(self._observers):
            try:
                cb(self)
            except Exception:  # a broken face must not stop the monitor
                pass

    # updates ----------------------------------------------------------------
    def set_status(self, status: JobStatus) -> None:
        with self._lock:
            self.note = None  # a fresh status: following works again
            self.status = self._with_event_notes(status)
            if status.phase == "failed" and status.message and not self.error:
                self.error = status.message
            source = self._log_source if self._logs_followed else None
        if source is not None:  # followed tails are refreshed while the job runs
            source()
        self._changed()

    def _with_event_notes(self, status: JobStatus | None) -> JobStatus | None:
        if status is None:
            return None
        missing = [n for n in self.event_notes if n not in status.notes]
        return replace(status, notes=[*status.notes, *missing]) if missing else status

    def set_note(self, note: str | None) -> None:
        """Show (or with ``None`` clear) a transient note: appended to the current status' ``notes``."""
        with self._lock:
            if note == self.note:
                return
            status = self.status
            if status is not None and self.note in status.notes:
                status = replace(status, notes=[n for n in status.notes if n != self.note])
            if status is not None and note:
                status = replace(status, notes=[*status.notes, note])
            self.note, self.status = note, status
        self._changed()

    def add_events(self, events: list[dict]) -> int:
        """Fold new protocol events in (duplicates by ``(run, seq)`` are ignored); return how many were new."""
        added = 0
        with self._lock:
            for e in self._dedup.new(events):
                added += 1
                t = e.get("type")
                note = note_message(e)
                if note is not None:  # e.g. the model could not be saved: no error, the job succeeded
                    if note not in self.event_notes:
                        self.event_notes.append(note)
                        self.status = self._with_event_notes(self.status)
                elif t == "error":
                    self.error = e.get("message") or e.get("error") or "the training cell raised an error"
                elif t == "checkpoint":
                    self.checkpoints += 1
                point = event_to_point(e)
                if point is None:
                    continue
                self.n_points += 1
                self.last_point = point
                self.epoch = point["epoch"]
                if point["step"] is not None:
                    self.step = point["step"]
                series = self.step_series if point["kind"] == "step" else self.epoch_series
                x = point["step"] if point["kind"] == "step" else point["epoch"]
                for metric, value in point["values"].items():
                    if x is None:
                        continue
                    s = series.get(metric)
                    if s is None:
                        s = series[metric] = Series(self.max_points)
                    s.add(x, value)
                    self.last_values[metric] = value
                if point["kind"] == "epoch" and point["step"] is not None:
                    self._end_step_series_at(point["step"], point["values"])
        if added:
            self._changed()
        return added

    # log tails -------------------------------------------------------------
    def _end_step_series_at(self, step: int, values: dict[str, float]) -> None:
        """An epoch's end is also the last step reported so far: the per-step curve ends there (Keras'
        batch values are the epoch's running means, so the epoch's value is the last step's), however
        throttled the per-step points were. Validation metrics have no per-step curve."""
        for metric, value in values.items():
            if metric.startswith("val_"):
                continue
            s = self.step_series.get(metric)
            if s is None:
                s = self.step_series[metric] = Series(self.max_points)
            if s.last is None or s.last[0] < step:
                s.add(step, value)

    def follow_log(self, replica: str) -> threading.Event:
        """Keep ``replica``'s log tail current while the job runs (until :meth:`unfollow_log`).

        Returns:
            The event of :meth:`refresh_log`: set once the state holds a tail fetched after this call.
        """
        with self._lock:
            self._logs_followed[replica] += 1
        return self.refresh_log(replica)

    def unfollow_log(self, replica: str) -> None:
        """Undo one :meth:`follow_log` of ``replica``."""
        with self._lock:
            self._logs_followed[replica] -= 1
            if self._logs_followed[replica] <= 0:
                del self._logs_followed[replica]

    def refresh_log(self, replica: str) -> threading.Event:
        """Ask for a fresh tail of ``replica``'s log; the monitor fetches it in its own thread.

        Returns:
            An event set once :meth:`log_tail` holds a tail fetched after this call (at once when no
            monitor serves this state's logs).
        """
        delivered = threading.Event()
        with self._lock:
            source = self._log_source
            if source is None:
                delivered.set()
                return delivered
            self._log_waiters.setdefault(replica, []).append(delivered)
        source()
        return delivered

    def log_tail(self, replica: str | None) -> LogTail | None:
        """The last fetched tail of ``replica``'s log, or ``None`` before the first fetch."""
        with self._lock:
            return self._logs.get(replica) if replica else None

    def logs_followed(self) -> set[str]:
        """The replicas whose log a face follows."""
        with self._lock:
            return set(self._logs_followed)

    def logs_requested(self) -> set[str]:
        """The replicas whose log a face asked for and has not got yet."""
        with self._lock:
            return set(self._log_waiters)

    def set_log(self, tail: LogTail) -> None:
        """Store a fetched tail (the monitor's log thread calls this) and notify the observers."""
        with self._lock:
            self._logs[tail.replica] = tail
            waiters = self._log_waiters.pop(tail.replica, [])
        for delivered in waiters:  # before the observers, so a face waiting for it is not kept waiting
            delivered.set()
        self._changed()

    def serve_logs(self, source: Callable[[], None] | None) -> None:
        """Register the monitor that fetches log tails: ``source()`` is called after every request."""
        with self._lock:
            self._log_source = source
            waiting = bool(self._log_waiters)
        if waiting and source is not None:
            source()

    def series(self, kind: str = "step", limit: int | None = None) -> dict[str, dict[str, list[float]]]:
        """``{metric: {"x": [...], "y": [...]}}`` with at most ``limit`` points each (x = step or epoch)."""
        with self._lock:
            src = self.step_series if kind == "step" else self.epoch_series
            out = {}
            for metric, s in src.items():
                x, y = s.points(limit)
                out[metric] = {"x": x, "y": y}
            return out


class Monitor:
    """Follows one job on a backend in a daemon thread and keeps a :class:`JobState` current.

    It also serves the state's log tails from the moment it is created: a second daemon thread,
    running only while there is something to fetch, calls ``backend.logs(name, replica, tail=...)``.
    """

    def __init__(self, backend: Backend, name: str, state: JobState | None = None):
        self.backend = backend
        self.name = name
        self.state = state or JobState(name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()
        self._log_lock = threading.Lock()
        self._log_wake = threading.Event()
        self._log_thread: threading.Thread | None = None
        self.state.serve_logs(self._wake_log_thread)

    def start(self) -> Monitor:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"tfk8s-monitor-{self.name}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        backoff = RETRY_FIRST
        history = EventHistory(self.backend, self.name)
        try:
            while not self._stop.is_set():
                try:
                    history.fold_into(self.state)  # what the record gained since the last look
                    if self.state.status is None or self.state.note:
                        self.state.set_status(self.backend.get(self.name))
                    self.backend.watch(self.name, self.state.set_status, self.state.add_events, self._stop)
                    status = self.state.status
                    if status is not None and status.done:
                        self._settle(status)
                        break  # watch delivered the last events before it returned
                    backoff = RETRY_FIRST
                    self._stop.wait(1.0)  # the stream ended early: follow again
                except JobNotFound as e:
                    self.state.error = self.state.error or f"monitoring stopped: {e}"
                    self.state._changed()
                    break
                except Exception as e:  # transient until proven otherwise: say so and follow again
                    reason = " ".join(str(e).split()) or type(e).__name__
                    self.state.set_note(f"following the job failed ({reason}); retrying in {backoff:g} s")
                    if self._stop.wait(backoff):
                        break
                    backoff = min(backoff * 2, RETRY_MAX)
        finally:
            self.done.set()

    def _settle(self, status) -> None:
        """An ended job whose record its backend still completes (``status.settling``): look again until
        it is complete (at most :data:`SETTLE_SECONDS`), so a panel's last look has the replicas' last word."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while status.settling and time.monotonic() < deadline and not self._stop.wait(SETTLE_POLL):
            try:
                status = self.backend.get(self.name)
            except Exception:  # the job ended: its last word is a nicety, never a reason to retry
                return
            self.state.set_status(status)

    # log tails --------------------------------------------------------------
    def _wake_log_thread(self) -> None:
        with self._log_lock:
            self._log_wake.set()
            if self._log_thread is None:
                self._log_thread = threading.Thread(
                    target=self._serve_logs, name=f"tfk8s-logs-{self.name}", daemon=True
                )
                self._log_thread.start()

    def _serve_logs(self) -> None:
        """Fetch what was asked for, and followed tails every ``LOG_REFRESH_SECONDS`` while the job runs;
        end when there is nothing left to do (the next request starts the thread again)."""
        fetched: dict[str, float] = {}
        try:
            while True:
                self._log_wake.clear()
                status = self.state.status
                running = status is not None and not status.done and not self._stop.is_set()
                followed = self.state.logs_followed() if running else set()
                now = time.monotonic()
                due = self.state.logs_requested() | {
                    r for r in followed if r not in fetched or now - fetched[r] >= LOG_REFRESH_SECONDS
                }
                for replica in sorted(due):
                    self.state.set_log(self._fetch_log(replica))
                    fetched[replica] = time.monotonic()
                if not followed and not due:
                    with self._log_lock:
                        if not self._log_wake.is_set():
                            self._log_thread = None
                            return
                    continue
                if followed:
                    next_due = min(fetched.get(r, now) for r in followed) + LOG_REFRESH_SECONDS
                    self._log_wake.wait(max(0.05, next_due - time.monotonic()))
        finally:  # after an unexpected error, let the next request start a new thread
            with self._log_lock:
                if self._log_thread is threading.current_thread():
                    self._log_thread = None

    def _fetch_log(self, replica: str) -> LogTail:
        try:
            text = self.backend.logs(self.name, replica, tail=LOG_FETCH_LINES)
        except Exception as e:  # shown where the tail would be
            return LogTail(replica, error=str(e), fetched=time.monotonic())
        return LogTail(replica, text=text, fetched=time.monotonic())

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


class EventHistory:
    """A job's recorded events read incrementally: from the record's ``events.jsonl`` at a byte offset when
    the backend keeps the record in this file system, else from ``backend.events`` (folding only the
    events past the count seen)."""

    def __init__(self, backend: Backend, name: str):
        self.backend, self.name = backend, name
        self.record = record_of(backend, name)
        self.offset = 0  # bytes of events.jsonl folded (record) or events folded (backend.events)

    def fold_into(self, state: JobState) -> None:
        if self.record is None:
            events = self.backend.events(self.name)
            state.add_events(events[self.offset :])
            self.offset = len(events)
            return
        while True:
            events, offset = self.record.read_events_from(self.offset, HISTORY_BATCH_BYTES)
            if offset == self.offset:
                return
            self.offset = offset
            state.add_events(events)
