"""The end of a job on the cluster: copy every replica's log into the record, give the other replicas a
moment to end after a success, remove what still runs, and persist the final phase (in the record and, for
clients that attach after the Jobs' TTL, in the outcome ConfigMap ``<job>-outcome`` it creates beside the
parent, with when it ended: created, never patched, so the Role needs no patch on ConfigMaps).

The parent ConfigMap's retention (:func:`parent_expired`): once the job's Jobs and pods are gone and its
``ttlSecondsAfterFinished`` has passed since the end, the backend deletes the parent when it lists jobs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from ...protocol import EventDedup, parse_line
from ..base import STOPPED, SUCCEEDED, TERMINAL, JobConflict, JobNotFound, JobStatus, TFK8sError
from . import manifests as m
from .connection import RESOURCE_NAMES, Cluster
from .job_objects import JobRef, job_pods, outcome_name
from .status import parse_time, pod_replica

ANNOTATION_STOPPED = "tfk8s.io/stopped"
ANNOTATION_PHASE = "tfk8s.io/phase"  # the final phase, noted on the outcome ConfigMap when the job ends
ANNOTATION_MESSAGE = "tfk8s.io/message"
ANNOTATION_FINISHED = "tfk8s.io/finished"  # when the job ended (RFC 3339): the parent's TTL counts from it
UNSEEN_END_AFTER = 120  # seconds: a parent this old with no pods nor Jobs left ended unseen
# After a success, seconds the other replicas get to end by themselves (all-reduce workers finish their fit,
# ps and workers see the chief gone) so their captured logs hold their last lines.
FINISH_GRACE = 5.0
POD_ENDED = ("Succeeded", "Failed")


def delete_object(cluster: Cluster, kind: str, name: str, namespace: str) -> None:
    """Delete one object and its dependents (background propagation); a missing one is fine."""
    try:
        cluster.delete(RESOURCE_NAMES[kind], namespace, name)
    except JobNotFound:
        pass


class AttemptLog:
    """A replica's log copy in the record with every attempt (each container run, in each pod) in order,
    separated as the local backend does (``---- tfk8s: <replica> restarted (<n> of <max>) ----``).

    The attempt being written may be rewritten whole (a log stream re-reads a container's log from its
    start on every reconnect); an earlier attempt never is. ``<replica>.log.attempts.json`` beside the copy
    remembers the attempts written and where the current one starts.

    Args:
        path: the record's log file of the replica.
        replica: its name (``worker-1``).
        limit: the restarts its role allows, for the separator.
    """

    _lock = threading.Lock()  # the follower and a capture may write the same copy

    def __init__(self, path: Path, replica: str, limit: int):
        self.path, self.replica, self.limit = Path(path), replica, limit
        self.index_path = self.path.with_name(self.path.name + ".attempts.json")

    @staticmethod
    def key(pod: str, restarts: int, uid: str | None = None) -> str:
        """The attempt that is container run ``restarts`` (0 first) of ``pod``: ``<pod>@<uid>#<n>`` when the
        pod's uid is known (a TFJob's new pods take the old ones' names), else ``<pod>#<n>`` (as in records
        written before uids were kept, and by a writer that knows only the name)."""
        return f"{pod}@{uid}#{restarts}" if uid else f"{pod}#{restarts}"

    @staticmethod
    def _parts(key: str) -> tuple[str, str, int]:
        pod, _, run = key.rpartition("#")
        name, _, uid = pod.partition("@")
        return name, uid, int(run)

    def _same_pod(self, key: str, seen: str, current: bool) -> bool:
        """Whether attempts ``key`` and ``seen`` are of one pod: the same name and uid; a key without a uid
        is its name's current attempt, and an attempt noted without one is any pod of that name."""
        name, uid, _ = self._parts(key)
        seen_name, seen_uid, _ = self._parts(seen)
        return name == seen_name and (uid == seen_uid or not seen_uid or (current and not uid))

    def _current(self, index: dict, key: str) -> bool:
        """Whether ``key`` is the attempt being written (its uid noted when it was written without)."""
        current = index["current"]
        if not current or self._parts(current)[2] != self._parts(key)[2]:
            return False
        if not self._same_pod(key, current, current=True):
            return False
        if self._parts(key)[1] and not self._parts(current)[1]:
            index["current"] = key
        return True

    def _load(self) -> dict:
        try:
            index = json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            index = {}
        if not isinstance(index, dict) or not isinstance(index.get("done"), list):
            index = {"done": [], "current": None, "offset": 0}
        return index

    def _save(self, index: dict) -> None:
        tmp = self.index_path.with_name(self.index_path.name + ".tmp")
        tmp.write_text(json.dumps(index))
        os.replace(tmp, self.index_path)

    def _stale(self, index: dict, key: str) -> bool:
        """Whether ``key`` was written and closed already, or is older than an attempt of its pod seen."""
        if key in index["done"]:
            return True
        run = self._parts(key)[2]
        for seen in [*index["done"], index["current"] or ""]:
            if not seen or not self._same_pod(key, seen, current=False):
                continue
            seen_run = self._parts(seen)[2]
            if seen_run > run or (seen_run == run and seen != index["current"]):
                return True
        return False

    def retire(self, pod: str, uid: str) -> None:
        """Close every attempt of pod ``pod`` (uid ``uid``, gone) noted without its uid: a new pod of the
        same name (a TFJob created again) then writes attempts of its own after them, never over them."""
        with self._lock:
            index = self._load()
            done = []
            for seen in index["done"]:
                name, seen_uid, run = self._parts(seen)
                done.append(self.key(name, run, uid) if name == pod and not seen_uid else seen)
            current = index["current"]
            if current:
                name, seen_uid, run = self._parts(current)
                done.append(self.key(name, run, uid) if name == pod and not seen_uid else current)
                index["offset"] = self.path.stat().st_size if self.path.exists() else 0
            index["done"], index["current"] = done, None
            self._save(index)

    def open(self, key: str):
        """The copy, open for writing attempt ``key`` from its start (closing the attempt written before);
        ``None`` when ``key`` is an attempt already closed. Hold :attr:`_lock` around the writes."""
        index = self._load()
        if self._current(index, key):
            key = index["current"]
        elif self._stale(index, key):
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if index["current"] not in (None, key):
            index["done"].append(index["current"])
            index["offset"] = self.path.stat().st_size if self.path.exists() else 0
        index["current"] = key
        self._save(index)
        f = open(self.path, "r+" if self.path.exists() else "w")
        # a copy rewritten meanwhile (the follower rewrites the current container's log whole) never
        # leaves a hole
        f.seek(min(index["offset"], self.path.stat().st_size))
        f.truncate()
        if index["done"] or index["offset"]:
            n = len(index["done"])
            f.write(f"\n---- tfk8s: {self.replica} restarted ({n} of {self.limit}) ----\n")
        return f

    def write(self, key: str, text: str) -> None:
        """Attempt ``key``'s whole text so far (ignored when that attempt is closed already)."""
        with self._lock:
            f = self.open(key)
            if f is None:
                return
            with f:
                f.write(text)

    def write_stream(self, key: str, chunks, replace_empty: bool = True) -> None:
        """Attempt ``key``'s whole text so far, from an iterator of text chunks, never held whole. The
        copy is opened at the first non-empty chunk: an empty log leaves it as it was, unless there is
        none yet and ``replace_empty``."""
        f = None
        with self._lock:
            try:
                for text in chunks:
                    if not text:
                        continue
                    if f is None:
                        f = self.open(key)
                        if f is None:
                            return
                    f.write(text)
                if f is None and replace_empty and not self.path.exists():
                    f = self.open(key)
            finally:
                if f is not None:
                    f.close()


def replica_log(job: JobRef, replica: str) -> AttemptLog:
    """The record's :class:`AttemptLog` of ``replica``."""
    role = replica.rsplit("-", 1)[0]
    limit = next((r.max_restarts for r in job.spec.replicas if r.role == role), job.spec.max_restarts)
    return AttemptLog(job.record.log_path(replica), replica, limit)


def capture_logs(job: JobRef) -> None:
    """Copy every replica's log into the record (kept after the pods are gone): every pod of the replica
    in creation order, each with its previous container's log when the container restarted."""
    try:
        pods = job_pods(job)
    except TFK8sError:
        return
    by_replica: dict[str, list[dict]] = {}
    for pod in pods:
        key = pod_replica(pod)
        if key is not None:
            by_replica.setdefault(f"{key[0]}-{key[1]}", []).append(pod)
    for replica, its_pods in by_replica.items():
        log = replica_log(job, replica)
        its_pods.sort(key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
        for pod in its_pods:
            capture_pod_log(job, log, pod)


def capture_pod_log(job: JobRef, log: AttemptLog, pod: dict) -> None:
    """Copy ``pod``'s log, and its previous container's when it restarted, into ``log`` as their attempts;
    streamed: a long job's logs (hundreds of MB) never sit whole in the kernel. A pod whose log cannot be
    read is skipped."""
    name, uid = pod["metadata"]["name"], pod["metadata"].get("uid")
    cs = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]
    restarts = int(cs.get("restartCount") or 0)
    try:
        if restarts:
            previous = job.cluster.stream_log(job.namespace, name, previous=True)
            log.write_stream(log.key(name, restarts - 1, uid), previous, replace_empty=False)
        log.write_stream(log.key(name, restarts, uid), job.cluster.stream_log(job.namespace, name))
    except TFK8sError:
        pass


def await_replicas_ended(job: JobRef, grace: float = FINISH_GRACE) -> None:
    """Wait up to ``grace`` seconds for every pod of the job to end on its own."""
    deadline = time.monotonic() + grace
    while True:
        try:
            pods = job_pods(job)
        except TFK8sError:
            return
        if all((p.get("status") or {}).get("phase") in POD_ENDED for p in pods):
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(0.5)


def remove_replicas(job: JobRef, every: bool) -> None:
    """Delete the replicas still running (native: their Jobs; tfjob: the TFJob when ``every``)."""
    spec = job.spec
    if job.flavor == "tfjob":
        if every:
            delete_object(job.cluster, "TFJob", spec.name, job.namespace)
        return  # cleanPodPolicy Running removes the rest
    for r in spec.replicas:
        if every or r.role != spec.reporting_replica.rsplit("-", 1)[0]:
            delete_object(job.cluster, "Job", f"{spec.name}-{r.role}", job.namespace)


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parent_expired(parent: dict, ttl: int, now: float | None = None) -> bool:
    """A job's parent ConfigMap whose Jobs (or TFJob) and pods are all gone: has it outlived the job's
    ``ttlSecondsAfterFinished``? Counted from the end noted on it (:data:`ANNOTATION_FINISHED`), else (an end
    nobody saw: the Jobs' own TTL removed them) from its creation, and never before :data:`UNSEEN_END_AFTER`."""
    meta = parent.get("metadata") or {}
    now = time.time() if now is None else now
    finished = parse_time((meta.get("annotations") or {}).get(ANNOTATION_FINISHED))
    if finished is not None:
        return now - finished >= ttl
    created = parse_time(meta.get("creationTimestamp"))
    return created is not None and now - created >= max(ttl, UNSEEN_END_AFTER)


def _note_outcome(job: JobRef, annotations: dict[str, str]) -> None:
    """Create the job's outcome ConfigMap (:func:`.job_objects.outcome_name`), a dependent of the parent.
    A new object, never a patch: the Role grants no patch or update on what other users also reach. The
    first outcome stays (a stop noted before the end was seen)."""
    try:
        parent = job.cluster.get("configmaps", job.namespace, job.name)
    except JobNotFound:
        return  # deleted: nothing to note it on
    meta = {
        "name": outcome_name(job.name),
        "namespace": job.namespace,
        "labels": m.job_labels(job.spec),
        "annotations": {m.ANNOTATION_OWNER: str(job.spec.owner), **annotations},
    }
    obj = m.set_owner({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {}}, parent)
    try:
        job.cluster.create(job.namespace, obj)
    except JobConflict:
        pass


def stop(job: JobRef, status: JobStatus) -> JobStatus:
    """Stop a running job: capture its logs, mark the parent and the record stopped, remove every replica.
    The record says stopped before any pod goes: a follower that sees a pod deleted reads the end there."""
    capture_logs(job)
    try:
        _note_outcome(job, {ANNOTATION_STOPPED: "true", ANNOTATION_FINISHED: rfc3339(time.time())})
    except JobNotFound:
        pass
    status.end(STOPPED, None)
    job.record.write_status(status.to_json())
    remove_replicas(job, every=True)
    return status


class Finisher:
    """Ends each job once, though the follower and ``get`` may both see it done at the same moment."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._finishing: dict[str, int] = {}  # job -> the thread ending it

    def finalize(self, job: JobRef, status: JobStatus, dedup: EventDedup | None = None) -> JobStatus:
        """Once the job is done: capture every log, then remove what still runs; persist the final status.

        A second caller waits for the first to end the job and returns the final status it persisted: what
        it then reads (the logs, the record) is the finished job's, never a copy half made.

        ``dedup`` is the caller's memory of the recorded events (a follower's); without it the recorded
        events are read again to fill one."""
        me = threading.get_ident()
        with self._cond:
            if self._finishing.get(job.name) == me:
                return status  # called again from inside the end (nothing does that today)
            while job.name in self._finishing:
                self._cond.wait()
            self._finishing[job.name] = me
        try:
            return self._finalize(job, status, dedup)  # a record ended meanwhile is returned as it is
        finally:
            with self._cond:
                del self._finishing[job.name]
                self._cond.notify_all()

    def tidy_events(self, job: JobRef) -> None:
        """Called once the end has parsed the reporting replica's log copy into the record, before the final
        status is written (readers take a terminal status as a final record); nothing here."""

    def _finalize(self, job: JobRef, status: JobStatus, dedup: EventDedup | None = None) -> JobStatus:
        record = job.record
        prev = record.read_status() or {}
        if prev.get("phase") in TERMINAL:
            return JobStatus.from_json(prev)
        if status.phase == SUCCEEDED and job.flavor != "tfjob":
            await_replicas_ended(job)
        capture_logs(job)
        # the reporting replica's log holds the protocol: keep every event even if no one followed it
        key = job.spec.protocol_key  # only lines authenticated with the job's key are events
        try:
            with open(record.log_path(job.spec.reporting_replica), encoding="utf-8", errors="replace") as f:
                batch: list[dict] = []
                seen = dedup if dedup is not None else EventDedup()  # one memory for every batch
                for line in f:  # streamed, a batch at a time: a long job's log is never held whole
                    event = parse_line(line, key)
                    if event:
                        batch.append(event)
                    if len(batch) >= 1_000:
                        record.append_events(batch, seen)
                        batch = []
                record.append_events(batch, seen)
        except FileNotFoundError:
            pass
        self.tidy_events(job)
        try:
            remove_replicas(job, every=status.phase != SUCCEEDED)
        except TFK8sError:
            pass  # ttlSecondsAfterFinished and the ps watchdog clean up anyway
        # copies: statuses already delivered by a follower share these replica objects
        status.replicas = [replace(r) for r in status.replicas]
        status.end(status.phase, status.message, finished=status.finished)
        record.write_status(status.to_json())
        try:  # note the outcome on the parent, for clients that attach after the Jobs' TTL
            _note_outcome(
                job,
                {
                    ANNOTATION_PHASE: status.phase,
                    ANNOTATION_MESSAGE: (status.message or "")[:1000],
                    ANNOTATION_FINISHED: rfc3339(status.finished or time.time()),
                },
            )
        except TFK8sError:
            pass
        return status
