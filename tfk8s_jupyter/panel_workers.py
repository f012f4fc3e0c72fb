"""The −/+ worker controls of a job's cell panel: ``job.scale(workers=N)`` from two buttons.

The controls observe the job's state (passed in by the panel's render, so their updates count against
the panel's message budget); the buttons' handler calls the job API in a thread. A refusal (a finished
job, 0 workers, a resize in progress, beyond the machine...) is shown as its one sentence beside the
buttons, never as a traceback. The buttons are disabled while the job is not running, while a resize
this panel asked for is under way, and once the panel can no longer act on the job.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable

import ipywidgets as W

from .backends.base import RUNNING, JobStatus


def worker_count(status: JobStatus | None) -> int | None:
    """The job's workers that are not removed (None before the job's replicas are known)."""
    if status is None or not status.replicas:
        return None
    return len([r for r in status.replicas if r.role == "worker" and r.state != "removed"])


def outcome(name: str, before: int | None, status: JobStatus) -> str:
    """One line saying what a resize did, from the status ``job.scale`` returned."""
    after = worker_count(status)
    if status.message and status.message.startswith("resizing") and after == before:
        return f"job {name} is {status.message}."
    if after == before:
        return f"{after} worker(s) already; nothing changed."
    removed = status.history[-1].get("removed", []) if status.history else []
    how = f", live ({', '.join(removed)} removed)" if removed else ""
    return f"scaled from {before} to {after} worker(s){how}."


class WorkerControls(W.HBox):
    """``workers − N +`` and a one-line message; the panel calls :meth:`update` on each render."""

    def __init__(self, job, on_done: Callable[[], None] | None = None) -> None:
        self.job = job
        self._on_done = on_done or (lambda: None)
        self._busy = False
        self._gone = False
        self._count: int | None = None
        button = {"layout": W.Layout(width="30px", padding="0"), "disabled": True}
        self.minus = W.Button(description="−", tooltip="Remove a worker (job.scale)", **button)
        self.plus = W.Button(description="+", tooltip="Add a worker (job.scale)", **button)
        self.minus.add_class("tfk8s-workers-minus")
        self.plus.add_class("tfk8s-workers-plus")
        self.count = W.Label("", layout=W.Layout(width="auto", min_width="1.5em"))
        self.count.add_class("tfk8s-workers-count")
        self.message = W.HTML("", layout=W.Layout(width="auto", flex="1 1 auto"))
        self.message.add_class("tfk8s-workers-message")
        self.minus.on_click(lambda _b: self.scale_by(-1))
        self.plus.on_click(lambda _b: self.scale_by(+1))
        label = W.Label("workers", layout=W.Layout(width="auto", margin="0 4px 0 12px"))
        super().__init__([label, self.minus, self.count, self.plus, self.message])
        self.add_class("tfk8s-worker-controls")
        self.layout = W.Layout(align_items="center", flex="1 1 auto")

    def update(self, status: JobStatus | None, set_traits: Callable[..., bool]) -> int:
        """Bring the controls up to ``status`` through the panel's ``set_traits``; the messages sent."""
        self._count = worker_count(status)
        running = status is not None and status.phase == RUNNING and self._count is not None
        enabled = running and self.job is not None and not self._busy and not self._gone
        sent = 0
        for button in (self.minus, self.plus):
            sent += set_traits(button, disabled=not enabled)
        sent += set_traits(self.count, value="" if self._count is None else str(self._count))
        return sent

    def disable(self) -> None:
        """The panel can no longer act on the job (deleted, its kernel gone)."""
        self._gone = True
        self.minus.disabled = self.plus.disabled = True

    def scale_by(self, delta: int) -> None:
        """The buttons' handler: ask the job for ``delta`` more (or fewer) workers in a thread."""
        if self.job is None or self._busy or self._count is None:
            return
        before, wanted = self._count, self._count + delta
        self._busy = True
        self.minus.disabled = self.plus.disabled = True
        self._say(f"resizing to {wanted} worker(s)…")

        def resize() -> None:
            from .backends.base import TFK8sError

            try:
                status = self.job.scale(workers=wanted)
                self._say(outcome(self.job.name, before, status))
            except (TFK8sError, ValueError) as e:  # the backend's one sentence
                self._say(str(e), error=True)
            except Exception as e:  # shown, never a traceback in the panel
                self._say(f"resize failed: {type(e).__name__}: {e}", error=True)
            finally:
                self._busy = False
                self._on_done()

        threading.Thread(target=resize, name=f"tfk8s-scale-{self.job.name}", daemon=True).start()

    def _say(self, text: str, error: bool = False) -> None:
        color = "#b02a37" if error else "#555"
        self.message.value = f"<span style='color:{color}'>{html.escape(text)}</span>"
