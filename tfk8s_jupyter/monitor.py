"""JobState (what a face shows) and Monitor (one per job: follows a backend and fills a JobState).

JobState is observable: ``state.observe(callback)``; callbacks run on the monitor's thread, so a face
throttles and marshals as it needs. Memory is bounded whatever the run length: each metric series keeps
at most ``2 * max_points`` points, thinning older points by halving its stride when full.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .backends.base import Backend, JobStatus
from .protocol import event_key


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
    """One metric's points, memory-bounded by stride doubling (keeps first, last and an even spread)."""

    def __init__(self, max_points: int = 2000):
        self.max_points = max_points
        self.x: list[float] = []
        self.y: list[float] = []
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


class JobState:
    """The live view of one job: status, metric series, last values, lifecycle events."""

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
        self.checkpoints: int = 0
        self.n_points = 0
        self.version = 0  # bumps on every change; faces compare it to skip redundant renders
        self._seen: set = set()  # keys of events without an integer seq
        self._last_seq: dict = {}  # run -> highest seq folded in (a run's events arrive in order)
        self._lock = threading.RLock()
        self._observers: list[Callable[[JobState], None]] = []

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
            self.status = status
            if status.phase == "failed" and status.message and not self.error:
                self.error = status.message
        self._changed()

    def add_events(self, events: list[dict]) -> int:
        """Fold new protocol events in (duplicates by ``(run, seq)`` are ignored); return how many were new."""
        added = 0
        with self._lock:
            for e in events:
                k = event_key(e)
                run, seq = k
                if isinstance(seq, int) and not isinstance(seq, bool):
                    # Memory stays O(runs), not O(events): a re-read log repeats a run's events in order.
                    if seq <= self._last_seq.get(run, -1):
                        continue
                    self._last_seq[run] = seq
                elif seq is not None:
                    if k in self._seen:
                        continue
                    self._seen.add(k)
                added += 1
                t = e.get("type")
                if t == "error":
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
        if added:
            self._changed()
        return added

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
    """Follows one job on a backend in a daemon thread and keeps a :class:`JobState` current."""

    def __init__(self, backend: Backend, name: str, state: JobState | None = None):
        self.backend = backend
        self.name = name
        self.state = state or JobState(name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()

    def start(self) -> Monitor:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"tfk8s-monitor-{self.name}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.state.add_events(self.backend.events(self.name))
            self.state.set_status(self.backend.get(self.name))
            while not self._stop.is_set():
                self.backend.watch(self.name, self.state.set_status, self.state.add_events, self._stop)
                status = self.state.status
                if status is not None and status.done:
                    break
                self._stop.wait(1.0)  # the stream ended early: follow again
        except Exception as e:  # keep the face informed instead of dying silently
            self.state.error = self.state.error or f"monitoring stopped: {e}"
            self.state._changed()
        finally:
            self.done.set()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
