"""The one interface every backend implements, and the status model they all report.

The JSON of :class:`JobStatus` (``to_json``) is the model the notebook panel, the REST API and the
JupyterLab side panel all show, whatever the backend.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from ..logtext import split_lines
from ..payload import Payload
from ..spec import JobSpec

# Job phases. Terminal phases never change again.
PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED = "pending", "running", "succeeded", "failed", "stopped"
TERMINAL = (SUCCEEDED, FAILED, STOPPED)
# Replica states.
R_PENDING, R_STARTING, R_RUNNING, R_RESTARTING = "pending", "starting", "running", "restarting"
R_SUCCEEDED, R_FAILED, R_STOPPED = "succeeded", "failed", "stopped"
R_REMOVED = "removed"  # stopped for good by a scale-down (``job.scale``): never restarted
REPLICA_DONE = (R_SUCCEEDED, R_FAILED, R_STOPPED, R_REMOVED)


class TFK8sError(Exception):
    """Base of every error this package raises on purpose; the message says what to do."""


class JobNotFound(TFK8sError, LookupError):
    pass


class JobConflict(TFK8sError):
    """The job exists already, or is in a state that forbids the action."""


class Forbidden(TFK8sError, PermissionError):
    pass


class BackendUnavailable(TFK8sError):
    """The backend cannot be reached (no kubeconfig, API down, ...)."""


@dataclass
class ReplicaStatus:
    role: str
    index: int
    state: str = R_PENDING
    restarts: int = 0
    pid: int | None = None
    host: str | None = None  # host:port locally, pod name on Kubernetes
    exit_code: int | None = None
    started: float | None = None
    message: str | None = None
    launch: str | None = None  # local: "warm" (a warm pool process became it) or "cold" (a new process)

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"


@dataclass
class JobStatus:
    name: str
    backend: str
    strategy: str
    phase: str = PENDING
    replicas: list[ReplicaStatus] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    finished: float | None = None
    message: str | None = None  # one sentence: the diagnosis or the error
    flavor: str | None = None
    owner: str | None = None
    namespace: str | None = None
    # One-line notes the panel shows under the header (e.g. "artifacts will not survive the pods").
    notes: list[str] = field(default_factory=list)
    # Each resize of the job: {"time", "from", "to", "how" ("live" or "restart"), "removed" / "added": [names]}.
    history: list[dict] = field(default_factory=list)
    # An ended job whose record the backend still completes (local kept replicas: each replica's word
    # after its reset, a second or so after the end); a follower looks again until it is False.
    settling: bool = False

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL

    def replica(self, name: str) -> ReplicaStatus | None:
        return next((r for r in self.replicas if r.name == name), None)

    def counts(self) -> dict[str, int]:
        """Replica counts by state, e.g. ``{"running": 3, "succeeded": 1}``."""
        out: dict[str, int] = {}
        for r in self.replicas:
            out[r.state] = out.get(r.state, 0) + 1
        return out

    def end(
        self,
        phase: str,
        message: str | None = None,
        *,
        replica_state: str = R_STOPPED,
        replica_message: str | None = None,
        finished: float | None = None,
    ) -> JobStatus:
        """Make the job terminal: ``phase`` with its one-sentence ``message``, and every replica that has
        not finished (not succeeded, failed or stopped) set to ``replica_state`` (with ``replica_message``
        when given). Returns ``self``.
        """
        self.phase = phase
        self.message = message
        self.finished = time.time() if finished is None else finished
        for r in self.replicas:
            if r.state not in REPLICA_DONE:
                r.state = replica_state
                if replica_message is not None:
                    r.message = replica_message
        return self

    def to_json(self) -> dict:
        d = asdict(self)
        d["counts"] = self.counts()
        return d

    @classmethod
    def from_json(cls, d: dict) -> JobStatus:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["replicas"] = [
            ReplicaStatus(**{k: v for k, v in r.items() if k in ReplicaStatus.__dataclass_fields__})
            for r in d.get("replicas", [])
        ]
        return cls(**d)


StatusCallback = Callable[[JobStatus], None]
EventsCallback = Callable[[list[dict]], None]


class Backend(ABC):
    """Runs jobs somewhere. All methods are blocking; callers use threads for streams."""

    name: str = "?"

    @abstractmethod
    def submit(self, spec: JobSpec, payload: Payload) -> JobStatus:
        """Start the job and return at once. On failure nothing is left behind and the error says why."""

    @abstractmethod
    def list(self, owner: str | None = None) -> list[JobStatus]:
        """Every job of ``owner`` (all owners when ``None``) known to this backend."""

    @abstractmethod
    def get(self, name: str) -> JobStatus:
        """The current status. Raises :class:`JobNotFound`."""

    @abstractmethod
    def spec(self, name: str) -> JobSpec:
        """The spec the job was submitted with. Raises :class:`JobNotFound`."""

    @abstractmethod
    def events(self, name: str) -> list[dict]:
        """Every protocol event recorded so far (metrics, epochs, start/end/error), in order."""

    @abstractmethod
    def watch(
        self,
        name: str,
        on_status: StatusCallback,
        on_events: EventsCallback,
        stop: threading.Event,
    ) -> None:
        """Follow the job until it is done or ``stop`` is set.

        Calls ``on_status`` with every new status and ``on_events`` with each batch of new protocol events
        (already persisted, never a duplicate). Returns when the job reaches a terminal phase (after the
        last status and events were delivered) or when ``stop`` is set.
        """

    @abstractmethod
    def logs(self, name: str, replica: str, tail: int | None = None) -> str:
        """That replica's output so far (the last ``tail`` lines when given)."""

    def follow_logs(self, name: str, replica: str, stop: threading.Event) -> Iterator[str]:
        """Yield the replica's output lines as they come, until it ends or ``stop`` is set."""
        seen = 0
        while not stop.is_set():
            lines = split_lines(self.logs(name, replica))
            yield from lines[seen:]
            seen = len(lines)
            if self.get(name).done:
                return
            stop.wait(0.5)

    @abstractmethod
    def stop(self, name: str) -> JobStatus:
        """Stop every replica; the record stays with phase ``stopped`` (a finished job stays as it was)."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Stop the job if needed and remove everything of it, record included."""

    def scale(self, name: str, workers: int) -> JobStatus:
        """Change the running job's worker count to ``workers``; returns the status showing the change."""
        raise TFK8sError(
            f"resizing a running job is not supported on the {self.name} backend yet; stop the job and "
            "submit it again with the worker count you want."
        )

    def artifacts_location(self, name: str) -> str | None:
        """Where this kernel reads the job's artifact directory (``TFK8S_ARTIFACTS``): a local path or a
        ``gs://``/``s3://`` URI; ``None`` when the artifacts did not outlive the replicas (Kubernetes
        without storage). Raises :class:`JobNotFound`."""
        return None

    def checkpoint_location(self, name: str) -> str | None:
        """The job's checkpoint directory as a new job's replicas of this backend see it (for
        ``resume_from``); ``None`` when it did not outlive the replicas. Raises :class:`JobNotFound`."""
        return None

    def workdir_location(self, name: str, replica: str | None = None) -> str | None:
        """Where this kernel reads ``replica``'s (default: the reporting replica's) working directory,
        where the cell's relative paths (``model.save("m.keras")``) land; ``None`` when it did not outlive
        the replica (a pod's). Raises :class:`JobNotFound`."""
        return None
