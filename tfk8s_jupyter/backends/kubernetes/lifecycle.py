"""The end of a job on the cluster: copy every replica's log into the record, give the other replicas a
moment to end after a success, remove what still runs, and persist the final phase (in the record and, for
clients that attach after the Jobs' TTL, on the parent ConfigMap).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from ...protocol import parse_line
from ..base import STOPPED, SUCCEEDED, TERMINAL, JobNotFound, JobStatus, TFK8sError
from .connection import RESOURCE_NAMES, Cluster
from .job_objects import JobRef, job_pods
from .status import replicas_from_pods

ANNOTATION_STOPPED = "tfk8s.io/stopped"
ANNOTATION_PHASE = "tfk8s.io/phase"  # the final phase, noted on the parent when the job ends
ANNOTATION_MESSAGE = "tfk8s.io/message"
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


def capture_logs(job: JobRef) -> None:
    """Copy every replica's log into the record (kept after the pods are gone)."""
    try:
        pods = job_pods(job)
    except TFK8sError:
        return
    _, current = replicas_from_pods(job.spec, pods)
    for replica, pod in current.items():
        try:
            text = job.cluster.read_log(job.namespace, pod["metadata"]["name"])
        except TFK8sError:
            continue
        path = job.record.log_path(replica)
        if text or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


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


def _annotate_parent(job: JobRef, annotations: dict[str, str]) -> None:
    job.cluster.patch("configmaps", job.namespace, job.name, {"metadata": {"annotations": annotations}})


def stop(job: JobRef, status: JobStatus) -> JobStatus:
    """Stop a running job: capture its logs, mark the parent stopped, remove every replica."""
    capture_logs(job)
    try:
        _annotate_parent(job, {ANNOTATION_STOPPED: "true"})
    except JobNotFound:
        pass
    remove_replicas(job, every=True)
    status.end(STOPPED, None)
    job.record.write_status(status.to_json())
    return status


class Finisher:
    """Ends each job once, though the follower and ``get`` may both see it done at the same moment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finishing: set[str] = set()

    def finalize(self, job: JobRef, status: JobStatus) -> JobStatus:
        """Once the job is done: capture every log, then remove what still runs; persist the final status."""
        with self._lock:
            if job.name in self._finishing:
                return status
            self._finishing.add(job.name)
        try:
            return self._finalize(job, status)
        finally:
            with self._lock:
                self._finishing.discard(job.name)

    @staticmethod
    def _finalize(job: JobRef, status: JobStatus) -> JobStatus:
        record = job.record
        prev = record.read_status() or {}
        if prev.get("phase") in TERMINAL:
            return JobStatus.from_json(prev)
        if status.phase == SUCCEEDED and job.flavor != "tfjob":
            await_replicas_ended(job)
        capture_logs(job)
        # the reporting replica's log holds the protocol: keep every event even if no one followed it
        text = ""
        try:
            text = record.log_path(job.spec.reporting_replica).read_text()
        except FileNotFoundError:
            pass
        record.append_events([e for e in map(parse_line, text.splitlines()) if e])
        try:
            remove_replicas(job, every=status.phase != SUCCEEDED)
        except TFK8sError:
            pass  # ttlSecondsAfterFinished and the ps watchdog clean up anyway
        # copies: statuses already delivered by a follower share these replica objects
        status.replicas = [replace(r) for r in status.replicas]
        status.end(status.phase, status.message, finished=status.finished)
        record.write_status(status.to_json())
        try:  # note the outcome on the parent, for clients that attach after the Jobs' TTL
            _annotate_parent(
                job, {ANNOTATION_PHASE: status.phase, ANNOTATION_MESSAGE: (status.message or "")[:1000]}
            )
        except TFK8sError:
            pass
        return status
