"""Following one job: a pod watch (resumed from the last resourceVersion, relisted after 410 Gone) folded
into a :class:`JobStatus` per event, and one log stream on the reporting replica whose protocol lines
(authenticated with the job's key) become events, de-duplicated by ``(run, seq)`` across reconnects and
container restarts. Any error (the first relist included) is retried with backoff; the memory kept is
O(runs), whatever the job's length. The reporting replica's log copy in the record grows by appending:
a reconnect skips the lines of the container already copied, a restarted container starts after the
local backend's separator.

When the job is done, the follower hands it to :class:`.lifecycle.Finisher` (logs captured, replicas
removed, final phase persisted) and delivers the final status.
"""

from __future__ import annotations

import json
import threading
import time
from copy import deepcopy
from dataclasses import replace
from functools import partial

import urllib3

from ...protocol import EventDedup, parse_line
from ..base import (
    FAILED,
    STOPPED,
    TERMINAL,
    BackendUnavailable,
    EventsCallback,
    Forbidden,
    JobNotFound,
    JobStatus,
    ReplicaStatus,
    StatusCallback,
    TFK8sError,
)
from . import manifests as m
from .connection import READ_TIMEOUT, LineStream
from .errors import ApiErrorContext
from .job_objects import JobRef, job_events, owners, snapshot
from .lifecycle import POD_ENDED, AttemptLog, Finisher, capture_logs, replica_log
from .log_copy import LogCopy, text_lines
from .queue import describe as describe_queued
from .resize import with_history
from .resize_restart import filter_events as resize_filter
from .stall import STALL_CHECK_EVERY, StallWatch, cell_error_message, fatal_cell_error
from .status import assemble_status, pod_replica, replica_from_pods, replicas_from_pods, suspended

WATCH_TIMEOUT = 60  # seconds per watch request; the server ends it, we resume from the last resourceVersion
MISSING_PODS_RECHECK = 3  # seconds between looks at the Jobs' events while pods are missing
CONTAINER_END_WAIT = 3.0  # seconds a log stream's end waits for the pod watch to show its container ended

_FOLLOWERS: dict[str, JobFollower] = {}  # record dir -> the follower running in this process
_FOLLOWERS_LOCK = threading.Lock()


def active_follower(record) -> JobFollower | None:
    """The follower of the job of ``record`` running in this process, if any (a resize works with it)."""
    with _FOLLOWERS_LOCK:
        return _FOLLOWERS.get(str(record.dir))


def _terminated(pod: dict) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") in POD_ENDED:
        return True
    return any("terminated" in (cs.get("state") or {}) for cs in status.get("containerStatuses") or [])


class JobFollower:
    """State of one ``watch`` call: the pods seen, the last resourceVersion, the log follower thread.

    Args:
        job: the job followed.
        finisher: ends the job once it is done (the backend's, shared with ``get``).
        on_status: called with each changed status, the final one last.
        on_events: called with each batch of new protocol events.
        stop: set to end the watch and the log stream promptly.
    """

    def __init__(
        self,
        job: JobRef,
        finisher: Finisher,
        on_status: StatusCallback,
        on_events: EventsCallback,
        stop: threading.Event,
    ):
        self.job, self.finisher = job, finisher
        self.spec, self.namespace, self.flavor = job.spec, job.namespace, job.flavor
        self.cluster, self.record = job.cluster, job.record
        self.on_status, self.on_events, self.stop = on_status, on_events, stop
        self.pods: dict[str, dict] = {}
        self.jobs: list[dict] = []
        self.tfjob: dict | None = None
        self.rv: str | None = None
        self.dedup = EventDedup()
        self.events_lock = threading.Lock()
        self.log_done = threading.Event()
        self.log_opened = threading.Event()  # a log stream of the reporting replica was opened once
        self.pods_changed = threading.Condition()
        self.watch_requests = 0
        self.relists = 0
        self.parent_gone = False
        self.names = job.spec.replica_names
        self.by_replica: dict[str, dict[str, dict]] = {n: {} for n in self.names}
        self.rstatus = {
            n: ReplicaStatus(role=n.rsplit("-", 1)[0], index=int(n.rsplit("-", 1)[1])) for n in self.names
        }
        self.last_sig: tuple | None = None
        self.version = 1  # bumps when a replica's status or the owners change
        self.last_status: JobStatus | None = None
        self.published_version = 0
        self.last_write = 0.0
        self.unwritten: JobStatus | None = None
        self.created = (self.record.read_status() or {}).get("created")
        self.job_events: list[dict] | None = None
        self.metrics_error: str | None = None
        self.finishing = False  # the job is done: the metric stream ends once nothing is left to read
        self.note: str | None = None  # a transient error of the watch, among the status' notes until it works
        self.stall = StallWatch(job.spec)  # the reporting replica's progress (stall.py)
        self.stall_notes: list[str] = []  # one sentence per stall acted on
        self.cell_error: dict | None = None  # the cell's own error: the job fails at once
        # a restart-resize (resize_restart.py): what the reporting replica reported, the pods read
        self.resize = None  # the restart-resize under way, which holds back the old run's last events
        self.checkpoints_seen = 0
        self.checkpoint_epoch: int | None = None
        self.last_step: int | None = None
        self.last_event: tuple | None = None  # (run, seq) of the last event recorded
        self.seen_runs: set = set()  # runs (replica processes) whose events were read
        self.retired_runs: set = set()  # runs of a shape replaced by a resize: their lines are ignored
        self.streaming_pod: str | None = None  # the pod whose log is being read now
        self.new_run_started = False  # the resized shape's reporting replica reported its start

    # status -------------------------------------------------------------------------------------
    def _recompute(self, replica: str) -> None:
        role, index = replica.rsplit("-", 1)
        # a new object, never mutated: statuses already handed out stay consistent snapshots
        new, _ = replica_from_pods(role, int(index), list(self.by_replica[replica].values()))
        if new != self.rstatus.get(replica):
            self.rstatus[replica] = new
            self.version += 1

    def relist(self) -> None:
        snap = snapshot(self.job)
        self.relists += 1
        with self.pods_changed:
            self.pods = {p["metadata"]["name"]: p for p in snap["pods"]}
            self.by_replica = {n: {} for n in self.names}
            for name, pod in self.pods.items():
                key = pod_replica(pod)
                if key is not None and f"{key[0]}-{key[1]}" in self.by_replica:
                    self.by_replica[f"{key[0]}-{key[1]}"][name] = pod
            self.pods_changed.notify_all()
        for n in self.names:
            self._recompute(n)
        self.jobs, self.tfjob = snap["jobs"], snap["tfjob"]
        self.rv = snap["pods_rv"]
        self.parent_gone = "parent" in snap and snap["parent"] is None
        self.version += 1

    def refresh_owners(self) -> None:
        self.jobs, self.tfjob = owners(self.job)
        self.version += 1

    def reshape(self, spec) -> None:
        """Follow the job with ``spec``'s shape from now on (a restart-resize changed its worker count)."""
        self.job = replace(self.job, spec=spec)
        self.spec = spec
        self.names = spec.replica_names
        with self.pods_changed:
            self.by_replica = {n: {} for n in self.names}
            for name, pod in self.pods.items():
                key = pod_replica(pod)
                if key is not None and f"{key[0]}-{key[1]}" in self.by_replica:
                    self.by_replica[f"{key[0]}-{key[1]}"][name] = pod
        self.rstatus = {
            n: ReplicaStatus(role=n.rsplit("-", 1)[0], index=int(n.rsplit("-", 1)[1])) for n in self.names
        }
        for n in self.names:
            self._recompute(n)
        self.stall.restarted()
        self.version += 1

    def publish(self, force_write: bool = False) -> JobStatus:
        """Deliver the status if it changed; cheap per event (no pod is re-read, O(replicas))."""
        if self.version == self.published_version and not (self.parent_gone or force_write):
            return self.last_status  # nothing changed since the last delivery
        self.published_version = self.version
        prev = None
        if self.parent_gone or force_write:
            prev = self.record.read_status() or {}
        if prev and prev.get("phase") in TERMINAL:
            status = JobStatus.from_json(prev)  # stopped (or finished) by another caller
        else:
            status = assemble_status(
                self.spec,
                [self.rstatus[n] for n in self.names],
                flavor=self.flavor,
                namespace=self.namespace,
                jobs=self.jobs,
                tfjob=self.tfjob,
                events=self.job_events,
                created=self.created,
            )
            status = describe_queued(self.job, status, self.jobs, self.tfjob)  # Kueue's position, if queued
            if self.metrics_error and not status.message:
                status.message = self.metrics_error
            if self.note:
                status.notes = [*status.notes, self.note]
            if self.stall_notes:
                status.notes = [*status.notes, *self.stall_notes]
            if self.cell_error is not None and not status.done:
                status.phase = FAILED  # not restarted: the next run would raise the same
                status.message = cell_error_message(self.spec, self.cell_error)
            if self.parent_gone:
                status.phase = STOPPED
                status.message = status.message or "the job's objects were deleted from the cluster."
        status = with_history(self.record, status)  # resizes: removed workers, the history, one under way
        if status.done and status.phase != STOPPED:
            # the metric stream reads the reporting replica to its end first (if it ever started)
            self.finishing = True
            with self.pods_changed:
                self.pods_changed.notify_all()
            behind = not self.log_done.wait(30 if self.log_opened.is_set() else 2)
            if behind:  # the stream is still far behind: stop it, the capture has the rest (delivered below)
                self.stop_logs.set()
                self.log_done.wait(10)
            offset = self.record.events_path.stat().st_size if self.record.events_path.exists() else 0
            with self.events_lock:  # a copy: what the end records after offset is still delivered below
                dedup = deepcopy(self.dedup) if len(self.dedup) else None
            status = with_history(self.record, self.finisher.finalize(self.job, status, dedup))
            if behind:
                self.deliver_recorded(offset)
        self.last_status = status
        sig = (status.phase, status.message, self.version)
        if sig != self.last_sig:
            self.last_sig = sig
            self.unwritten = None if status.done else status
            self.on_status(status)
        now = time.monotonic()
        if self.unwritten is not None and (force_write or now - self.last_write >= 1.0):
            # at most once a second while running, never over an end another caller wrote (a stop)
            written = self.record.write_status(self.unwritten.to_json(), unless=TERMINAL)
            self.last_write, self.unwritten = now, None
            if not written:
                self.parent_gone = True  # ended elsewhere: deliver that end now
                return self.publish()
        return status

    def set_note(self, note: str | None) -> None:
        if note != self.note:
            self.note = note
            self.version += 1

    def handle_event(self, event: dict) -> bool:
        """Fold one watch event in; returns ``False`` when the resourceVersion expired (relist needed)."""
        etype, obj = event.get("type"), event.get("object") or {}
        if etype == "ERROR":
            if obj.get("code") == 410:
                return False
            raise BackendUnavailable(f"the pod watch failed: {obj.get('message')}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.rv = rv
        if etype == "BOOKMARK":
            return True
        name = obj["metadata"]["name"]
        key = pod_replica(obj)
        replica = f"{key[0]}-{key[1]}" if key else None
        with self.pods_changed:
            if etype == "DELETED":
                self.pods.pop(name, None)
                if replica in self.by_replica:
                    self.by_replica[replica].pop(name, None)
            else:
                self.pods[name] = obj
                if replica in self.by_replica:
                    self.by_replica[replica][name] = obj
            self.pods_changed.notify_all()
        if replica in self.by_replica:
            self._recompute(replica)
        if etype == "DELETED" or _terminated(obj):
            self.refresh_owners()  # did the Job give up on it (backoff limit)?
            if etype == "DELETED":
                self.parent_gone = self.parent_gone or self._stopped_elsewhere()
        return True

    def pods_missing(self) -> bool:
        """Native jobs whose Jobs exist but not every pod does (the Job controller may be refused), and a
        TFJob Kueue holds suspended (its queue position changes without a pod event)."""
        if self.flavor == "tfjob":
            return self.tfjob is not None and suspended([], self.tfjob)
        return bool(self.jobs) and len(self.pods) < len(self.names)

    def _stopped_elsewhere(self) -> bool:
        prev = self.record.read_status() or {}
        return prev.get("phase") in TERMINAL

    def run(self) -> None:
        with _FOLLOWERS_LOCK:
            _FOLLOWERS.setdefault(str(self.record.dir), self)
        try:
            self._run()
        finally:
            with _FOLLOWERS_LOCK:
                if _FOLLOWERS.get(str(self.record.dir)) is self:
                    del _FOLLOWERS[str(self.record.dir)]

    def _run(self) -> None:
        log_thread = threading.Thread(
            target=self.follow_metrics, name=f"tfk8s-log-{self.spec.name}", daemon=True
        )
        stop_logs = threading.Event()
        self.stop_logs = stop_logs
        if self.stall.timeout > 0:
            threading.Thread(
                target=self.watch_progress, name=f"tfk8s-stall-{self.spec.name}", daemon=True
            ).start()
        backoff = 0.2
        try:
            while not self.stop.is_set():
                try:
                    if self.rv is None:
                        self.relist()  # the first one too: a 5xx at the start is retried like any other
                        if not log_thread.is_alive() and log_thread.ident is None:
                            log_thread.start()
                        if self.publish().done:
                            return
                    expired = self.stream_once()
                    # stopped by another caller after its last pod event (or with no pod left to delete)
                    self.parent_gone = self.parent_gone or self._stopped_elsewhere()
                    if self.pods_missing():
                        self.job_events = job_events(self.job)
                        self.version += 1
                    backoff = 0.2
                    self.set_note(None)
                    if expired:
                        self.rv = None
                except (Forbidden, JobNotFound):
                    raise  # retrying cannot help: the caller shows the sentence
                except (TFK8sError, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                    reason = " ".join(str(e).split())[:300] or type(e).__name__
                    self.set_note(f"following the job failed ({reason}); retrying in {backoff:g} s")
                    if self.last_status is not None:
                        self.publish()
                    if self.stop.wait(backoff):
                        return
                    backoff = min(backoff * 2, 5.0)
                if self.publish().done:
                    return
        finally:
            stop_logs.set()
            with self.pods_changed:
                self.pods_changed.notify_all()
            if self.unwritten is not None:
                self.record.write_status(self.unwritten.to_json(), unless=TERMINAL)

    def stream_once(self) -> bool:
        """One watch request from ``self.rv``; returns ``True`` when the server says 410 Gone."""
        ctx = ApiErrorContext("watch", "pods", self.namespace)
        self.watch_requests += 1
        resp = self.cluster.call(
            ctx,
            self.cluster.core.list_namespaced_pod,
            self.namespace,
            label_selector=m.job_selector(self.spec.name),
            watch=True,
            resource_version=self.rv,
            allow_watch_bookmarks=True,
            # pods missing (e.g. refused by a quota) make no pod event: look at the Jobs' events often
            timeout_seconds=MISSING_PODS_RECHECK if self.pods_missing() else WATCH_TIMEOUT,
            _preload_content=False,
            _request_timeout=(10, READ_TIMEOUT),
        )
        with LineStream(resp, self.stop) as lines:  # ends quietly when we close it to stop promptly
            for line in lines:
                if not line.strip():
                    continue
                if not self.handle_event(json.loads(line)):
                    return True
                if self.publish().done or self.stop.is_set():
                    return False
        return False

    # stalls -------------------------------------------------------------------------------------
    def watch_progress(self) -> None:
        """Every few seconds: has the reporting replica's running container stalled? Then delete the job's
        running pods, so their Jobs recreate them (:mod:`.stall`), with one note in the status."""
        while not self.stop_logs.wait(STALL_CHECK_EVERY):
            if self.finishing or not self.stall.stalled():
                continue
            target = self.reporting_pod()
            if target is None or target[2]:
                continue  # not running (waiting to restart, or ended): nothing hangs
            with self.pods_changed:
                running = [
                    name for name, p in self.pods.items() if (p.get("status") or {}).get("phase") == "Running"
                ]
            note = self.stall.note()
            self.stall.restarted()
            for name in running:
                try:
                    self.cluster.delete("pods", self.namespace, name)
                except JobNotFound:
                    pass
                except TFK8sError as e:
                    note = f"{note} Deleting pod {name} failed: {e}"
            self.stall_notes.append(note)
            self.version += 1

    # metrics ------------------------------------------------------------------------------------
    def reporting_pod(self) -> tuple[str, int, bool] | None:
        """(pod name, restart count, container ended) of the reporting replica, once it has started."""
        with self.pods_changed:
            pods = list(self.pods.values())
        _, current = replicas_from_pods(self.spec, pods)
        pod = current.get(self.spec.reporting_replica)
        if pod is None:
            return None
        status = pod.get("status") or {}
        cs = (status.get("containerStatuses") or [{}])[0]
        state = cs.get("state") or {}
        restarts = int(cs.get("restartCount") or 0)
        ended = status.get("phase") in POD_ENDED
        if not ("running" in state or "terminated" in state):
            if not (ended and restarts):
                return None  # not started, or waiting to restart (its log is still the previous run's)
            restarts -= 1  # ended while waiting to restart: its log is its last run's
        return pod["metadata"]["name"], restarts, ended

    def deliver(self, lines, pod: str | None = None) -> None:
        key = self.spec.protocol_key  # only lines authenticated with the job's key are events
        events = [e for e in (parse_line(line, key) for line in lines) if e]
        if not events:
            return
        with self.events_lock:
            events = resize_filter(self, events, pod)  # a restart-resize holds back the old run's last ones
            new = self.record.append_events(events, self.dedup) if events else []
        if new:
            self.stall.saw(new)
            fatal = next((e for e in new if fatal_cell_error(e)), None)
            if fatal is not None and self.cell_error is None:
                self.cell_error = fatal
                self.version += 1
            self.on_events(new)
            if self.flavor == "tfjob" and any(e.get("type") == "end" for e in new):
                # the operator removes running replicas the moment the chief exits: copy their logs now
                threading.Thread(target=capture_logs, args=(self.job,), daemon=True).start()

    def deliver_recorded(self, offset: int) -> None:
        """Deliver the events recorded after byte ``offset`` not delivered yet (the end of the job folded in
        from the log copy what the stream had not read), a batch at a time."""
        while True:
            events, next_offset = self.record.read_events_from(offset, 1 << 20)
            if next_offset == offset:
                return
            offset = next_offset
            with self.events_lock:
                new = self.dedup.new(events)
            if new:
                self.on_events(new)

    def current_pod(self, replica: str) -> str | None:
        """The name of ``replica``'s current pod among the pods this follower watches (no API call)."""
        with self.pods_changed:
            pods = list(self.pods.values())
        pod = replicas_from_pods(self.spec, pods)[1].get(replica)
        return pod["metadata"]["name"] if pod else None

    def reporting_log_current(self) -> bool:
        """Whether the record's copy of the reporting replica's log is as current as its stream (flushed
        now): a panel's log tail reads the copy instead of asking the API server again."""
        copy = getattr(self, "log_copy", None)
        if copy is None or self.finishing or not self.log_opened.is_set():
            return False
        f = copy.file
        if f is not None:
            try:
                f.flush()  # a BufferedWriter is safe to flush from another thread
            except ValueError:
                pass  # closed meanwhile: what it held is on disk
        return True

    def follow_metrics(self) -> None:
        """Follow the reporting replica's log; after a drop re-read it and keep only unseen (run, seq)."""
        read_restarts: dict[str, int] = {}
        read_whole: set[tuple[str, int]] = set()  # (pod@uid, restart count): container runs read to their end
        copy = LogCopy(replica_log(self.job, self.spec.reporting_replica))
        self.log_copy = copy
        backoff = 0.2
        seeded = False
        copied = 0
        try:
            while not self.stop_logs.is_set():
                try:
                    if not seeded:
                        with self.events_lock:  # the recorded events, a batch at a time: O(runs) memory
                            for batch in self.record.iter_events():
                                self.dedup.new(batch)
                                self.stall.saw(batch)  # attached to a running job: its quiet counts from now
                        seeded = True
                    target = self.reporting_pod()
                    if target is None and self.finishing:
                        return  # the job is done and its reporting replica has nothing to read
                    if target is None:
                        with self.pods_changed:
                            self.pods_changed.wait(1.0)
                        continue
                    pod, restarts, ended = target
                    uid = ((self.pods.get(pod) or {}).get("metadata") or {}).get("uid")
                    at = f"{pod}@{uid}"  # a pod is its name and uid: a TFJob's new pods take the old names
                    if read_restarts.get(at, restarts) < restarts and (at, restarts - 1) not in read_whole:
                        # the container restarted since we last read it: the previous one's tail may be unread
                        previous = text_lines(self.cluster.stream_log(self.namespace, pod, previous=True))
                        copy.finish(
                            AttemptLog.key(pod, restarts - 1, uid), previous, partial(self.deliver, pod=pod)
                        )
                    read_restarts[at] = restarts
                    if (at, restarts) in read_whole:  # its stream ended with the container: nothing is new
                        if ended or self.finishing or self._pod_ended(pod):
                            return
                        with self.pods_changed:  # until it restarts or its pod ends
                            self.pods_changed.wait(1.0)
                        continue
                    copied = copy.copied if copy.key == AttemptLog.key(pod, restarts, uid) else 0
                    resp = self.cluster.follow_log(self.namespace, pod, _request_timeout=(10, READ_TIMEOUT))
                    self.log_opened.set()
                    # the container's log is re-read from its start on every (re)connect: the copy skips
                    # the lines it has, and appends the rest
                    self.streaming_pod = pod
                    with (
                        LineStream(resp, self.stop_logs) as lines,
                        copy.attempt(AttemptLog.key(pod, restarts, uid)),
                    ):
                        batch: list[str] = []
                        for line in lines:
                            copy.add(line)
                            batch.append(line)
                            if len(batch) >= 50 or "@tfk8s" in line:
                                copy.flush()
                                self.deliver(batch, pod)
                                batch = []
                            if self.stop_logs.is_set():
                                break
                        self.deliver(batch, pod)
                    self.streaming_pod = None
                    backoff = 0.2
                    # the stream ended: the container ended (or the connection was cut); ended pods are done
                    with self.pods_changed:
                        gone = pod not in self.pods
                    if gone and not ended and not self.finishing:
                        continue  # deleted (a stall's restart): its Job makes a new pod, followed next
                    if self.resize is not None and self.resize.ready and not self.finishing:
                        self.stop_logs.wait(0.5)
                        continue  # stopped by a restart-resize: the new shape's reporting pod is next
                    if ended or self._pod_ended(pod):
                        return
                    if not self.stop_logs.is_set() and self._container_ended(pod, restarts):
                        # a follow stream ends when its container does: read to its end, never again (a
                        # reconnect would read the whole log again for nothing)
                        read_whole.add((at, restarts))
                        continue
                except Forbidden as e:
                    self.metrics_error = f"no metrics: {e}"
                    self.version += 1
                    return
                except Exception:  # an API error, a dropped stream, a callback raising: read again
                    self.streaming_pod = None
                    if copy.copied > copied:
                        backoff = 0.2  # it was making progress: reconnect soon
                if self.stop_logs.wait(backoff):
                    return
                backoff = min(backoff * 2, 5.0)
        finally:
            self.log_done.set()

    def _container_ended(self, pod: str, restarts: int, wait: float = CONTAINER_END_WAIT) -> bool:
        """Whether run ``restarts`` of ``pod``'s container has ended, as the pod watch shows it within ``wait``
        seconds (its log stream may end before the watch sees it); not waited for once the job is done."""
        deadline = time.monotonic() + wait
        with self.pods_changed:
            while True:
                obj = self.pods.get(pod)
                if obj is None:
                    return True
                status = obj.get("status") or {}
                cs = (status.get("containerStatuses") or [{}])[0]
                count = int(cs.get("restartCount") or 0)
                if status.get("phase") in POD_ENDED or count > restarts:
                    return True
                if count == restarts and "terminated" in (cs.get("state") or {}):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self.finishing or self.stop_logs.is_set():
                    return False
                self.pods_changed.wait(left)

    def _pod_ended(self, pod: str) -> bool:
        with self.pods_changed:
            obj = self.pods.get(pod)
        if obj is None:
            return True
        return (obj.get("status") or {}).get("phase") in POD_ENDED
