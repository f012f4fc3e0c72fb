"""Progress lines and a final summary for frontends without widgets (terminal IPython, nbconvert).

Like the live panel, :class:`TextProgress` only observes a :class:`~tfk8s_jupyter.monitor.JobState`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .display_text import notes_of, progress_text, summary_text
from .monitor import JobState


class TextProgress:
    """Progress lines and a final summary for frontends without widgets (terminal IPython, nbconvert).

    Prints a line at every phase change and epoch end and at most every ``every`` seconds otherwise, each
    of the job's notes once, then the summary when the job ends (through ``finish`` when given, e.g. to add an HTML face).
    """

    def __init__(
        self,
        state: JobState,
        *,
        every: float = 10.0,
        write: Callable[[str], None] | None = None,
        finish: Callable[[JobState], None] | None = None,
        monitor_done: threading.Event | None = None,
    ):
        self.state = state
        self.every = every
        self.write = write or (lambda s: print(s, flush=True))
        self.finish = finish
        self.monitor_done = monitor_done
        self.summary_written = threading.Event()
        self._last_line = 0.0
        self._last_phase: str | None = None
        self._last_epoch = None
        self._finished = False
        self._notes_written: set[str] = set()
        self._lock = threading.Lock()
        state.observe(self._on_change)
        self._on_change(state)

    def _on_change(self, state: JobState) -> None:
        with self._lock:
            if self._finished:
                return
            status = state.status
            phase = status.phase if status else None
            now = time.monotonic()
            for note in notes_of(state):  # each note once, as soon as the job has it
                if note not in self._notes_written and not (status is not None and status.done):
                    self._notes_written.add(note)
                    self.write(f"[tfk8s] note: {note}")
            if status is not None and status.done:
                self._finished = True
                if self.monitor_done is None or self.monitor_done.is_set():
                    self._write_summary()
                else:
                    # The last events may follow the final status: summarize once the monitor is done.
                    threading.Thread(target=self._write_summary, args=(10.0,), daemon=True).start()
                return
            if (
                phase != self._last_phase
                or state.epoch != self._last_epoch
                or now - self._last_line >= self.every
            ):
                if phase is None and state.epoch is None:
                    return
                self._last_phase, self._last_epoch, self._last_line = phase, state.epoch, now
                self.write("[tfk8s] " + progress_text(state))

    def _write_summary(self, wait: float = 0.0) -> None:
        if wait and self.monitor_done is not None:
            self.monitor_done.wait(wait)
        if self.finish is not None:
            self.finish(self.state)
        else:
            self.write(summary_text(self.state))
        self.summary_written.set()

    @property
    def finished(self) -> bool:
        return self._finished
