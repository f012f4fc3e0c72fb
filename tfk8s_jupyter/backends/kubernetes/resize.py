"""Resizing a Kubernetes job: ``job.scale(workers=N)`` on the Kubernetes backend.

**Parameter-server scale-down, live.** The chief's ``ClusterCoordinator`` keeps training when a worker
disappears, so the highest-index workers go for good:

- native flavor: the worker Indexed Job's ``completions`` and ``parallelism`` are lowered together (an
  *elastic Indexed Job*: since Kubernetes 1.27 ``spec.completions`` of an Indexed Job may change, but only
  together with ``parallelism`` and to the same value); the Job controller deletes the pods whose index is
  no longer below ``completions``, and never starts them again;
- tfjob flavor: ``tfReplicaSpecs.Worker.replicas`` is patched; the training operator deletes the extra pods.

Both are one JSON-patch request. The removed workers and the resize are kept in the job's record
(``resize.json``: ``{"history": [...], "removed": [...]}``) and laid over every status read
(:func:`with_history`), so the replica table shows them ``removed`` and ``JobStatus.history`` the entry
``{"time", "from", "to", "how": "live", "removed"}``.

Adding workers, or resizing an all-reduce job, needs a checkpoint-restart (new Indexed Jobs for the new
shape): not built on this backend yet, refused in one sentence.
"""

from __future__ import annotations

import json
import time

from ...records import write_json_atomic
from ..base import R_REMOVED, JobConflict, JobStatus
from ..local_scale import by_restart, check_count, live_workers, refusal
from .errors import ApiErrorContext
from .job_objects import JobRef

RESIZE_FILE = "resize.json"
RESTART_NOT_BUILT = (
    "needs a checkpoint-restart with new Indexed Jobs, which the Kubernetes backend does not do yet; stop "
    "the job and submit it again with the shape you want (resume_from keeps its training)"
)


def read_resizes(record) -> dict:
    try:
        return json.loads((record.dir / RESIZE_FILE).read_text())
    except (OSError, ValueError):
        return {"history": [], "removed": []}


def with_history(record, status: JobStatus) -> JobStatus:
    """``status`` with the job's resizes laid over it: removed workers shown ``removed``, the history kept."""
    resizes = read_resizes(record)
    if not resizes["history"]:
        return status
    status.history = list(resizes["history"])
    removed = set(resizes["removed"])
    for r in status.replicas:
        if r.name in removed:
            r.state = R_REMOVED
            r.message = "removed by a scale-down; its log is kept"
            r.exit_code = None
    return status


def scale(backend, name: str, workers) -> JobStatus:
    """Resize the job ``name`` to ``workers`` workers (see the module doc); returns the status showing it.

    Raises:
        BadScale: ``workers`` is not a count.
        JobConflict: the job cannot be resized now, or this resize is not built on Kubernetes.
    """
    workers = check_count(workers)
    job = backend._job_context(name)
    status = backend.get(name)
    why = refusal(name, status, job.spec.strategy, workers)
    if why:
        raise JobConflict(why)
    current = len(live_workers(status))
    if workers == current:
        return status
    if by_restart(job.spec.strategy, current, workers):
        kind = "adding workers to" if workers > current else "resizing"
        kind += " an all-reduce job" if job.spec.strategy != "parameter_server" else f" job {name}"
        raise JobConflict(f"{kind} {RESTART_NOT_BUILT}.")
    keep = live_workers(status)
    gone = [r.name for r in keep[workers:]]
    patch_workers(job, workers)
    resizes = read_resizes(job.record)
    resizes["history"].append(
        {"time": time.time(), "from": current, "to": workers, "how": "live", "removed": gone}
    )
    resizes["removed"] = sorted(set(resizes["removed"]) | set(gone))
    write_json_atomic(job.record.dir / RESIZE_FILE, resizes)
    return backend.get(name)


def patch_workers(job: JobRef, workers: int) -> None:
    """One JSON-patch request giving the job ``workers`` workers (native: the elastic Indexed Job's
    completions and parallelism together; tfjob: the Worker replica count)."""
    cluster = job.cluster
    if job.flavor == "tfjob":
        from .connection import TFJOB

        group, version, plural = TFJOB
        body = [{"op": "replace", "path": "/spec/tfReplicaSpecs/Worker/replicas", "value": workers}]
        cluster.raw(
            ApiErrorContext("patch", "tfjobs", job.namespace, job.name),
            cluster.custom.patch_namespaced_custom_object,
            group,
            version,
            job.namespace,
            plural,
            job.name,
            body,
        )
        return
    body = [
        {"op": "replace", "path": "/spec/completions", "value": workers},
        {"op": "replace", "path": "/spec/parallelism", "value": workers},
    ]
    name = f"{job.name}-worker"
    cluster.raw(
        ApiErrorContext("patch", "jobs", job.namespace, name),
        cluster.batch.patch_namespaced_job,
        name,
        job.namespace,
        body,
    )
