"""What ends or restarts a running Kubernetes job early, judged from the reporting replica's protocol events
as the follower reads them.

A cell error (:func:`fatal_cell_error`): the cell raised something a restart cannot cure (judged by the
exception's type, as locally: :func:`..local_errors.curable_error`). The follower fails the job at once,
instead of letting the Job's backoffLimit restart the cell into the same error ``max_restarts`` times.

A stall (:class:`StallWatch`): the reporting replica's run made no progress (no metric, epoch or checkpoint
event) for ``stall_timeout`` seconds, after a start-up grace of ``setup_timeout`` before its first progress
event (the first step's compile), as the local supervisor judges it; after a fit's last epoch what follows
(tf.data teardown, the model save) is no hang. A process frozen on one node cannot be told apart from
the API (a parameter-server worker logs nothing either way), so the follower deletes every running pod of
the job: their Jobs recreate them (each counted against ``max_restarts`` by the Jobs' backoffLimit) and the
replicas resume from the last checkpoint. One note says which replica, at which step, and what happens.
"""

from __future__ import annotations

import time

from ...spec import JobSpec
from ..local_errors import curable_error

PROGRESS_EVENTS = ("metric", "epoch", "checkpoint")
STALL_CHECK_EVERY = 2.0  # seconds between the follower's looks at the reporting replica's progress


def fatal_cell_error(event: dict) -> bool:
    """An ``error`` event of the cell (not of the runner's setup) that no restart can cure."""
    return event.get("type") == "error" and event.get("phase") != "setup" and not curable_error(event)


def cell_error_message(spec: JobSpec, event: dict) -> str:
    """One sentence: the reporting replica's error, and that the job failed at once."""
    message = " ".join(str(event.get("message") or "an error").split())[:500]
    line = event.get("line")
    where = f" (cell line {line})" if isinstance(line, int) else ""
    return (
        f"{spec.reporting_replica} raised {message}{where}; a cell error is not restarted, so the job failed "
        "at once: fix the cell and run it again."
    )


class StallWatch:
    """The reporting replica's progress, from the events the follower delivers.

    Args:
        spec: the job (``stall_timeout``, 0 = off; ``setup_timeout``, the start-up grace).
        clock: monotonic seconds (tests).
    """

    def __init__(self, spec: JobSpec, clock=time.monotonic):
        self.spec = spec
        self.clock = clock
        self.timeout = float(getattr(spec, "stall_timeout", 0) or 0)
        self.progress_at: float | None = None  # the current run's start or last progress
        self.progress_seen = False
        self.fit_finished = False
        self.ended = False
        self.last_step: int | None = None
        self.restarts = 0  # stalls acted on

    def saw(self, events: list[dict]) -> None:
        """Fold in new events of the reporting replica."""
        for e in events:
            kind = e.get("type")
            if kind == "start":
                self.progress_at, self.progress_seen, self.fit_finished = self.clock(), False, False
                self.ended = False
            elif kind in PROGRESS_EVENTS:
                self.progress_at, self.progress_seen = self.clock(), True
                if kind != "checkpoint":  # a checkpoint after the last epoch is still its end
                    self.fit_finished = kind == "epoch" and e.get("last_epoch") is True
                if isinstance(e.get("step"), int):
                    self.last_step = e["step"]
            elif kind in ("end", "error"):
                self.ended = True

    def stalled(self) -> bool:
        """Has the current run gone without progress past its limit?"""
        if self.timeout <= 0 or self.progress_at is None or self.ended or self.fit_finished:
            return False
        limit = self.timeout if self.progress_seen else self.timeout + float(self.spec.setup_timeout)
        return self.clock() - self.progress_at >= limit

    def where(self) -> str:
        return f"at step {self.last_step}" if self.last_step is not None else "before its first step"

    def note(self) -> str:
        """The sentence for the status' notes, once the stalled run's pods are deleted."""
        self.restarts += 1
        return (
            f"{self.spec.reporting_replica} made no training progress for longer than "
            f"stall_timeout={self.timeout:g} s {self.where()}, so the job's running pods were deleted: their "
            "Jobs recreate them and training resumes from the last checkpoint the job's storage kept (from the "
            f"start without storage); stall restart {self.restarts}, counted in "
            f"max_restarts={self.spec.max_restarts}."
        )

    def restarted(self) -> None:
        """The pods were deleted: wait for the new run's start (its grace counts from now)."""
        self.progress_at, self.progress_seen, self.fit_finished = None, False, False
