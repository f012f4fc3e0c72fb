"""Resizing a Kubernetes job: ``job.scale(workers=N)`` on the Kubernetes backend.

**Parameter-server scale-down, live for the chief.** The chief's ``ClusterCoordinator`` keeps training when
a worker disappears and takes a worker back when it returns, so the backend re-creates the worker Indexed
Job with ``N`` completions: the old one is deleted (its pods with it) and an identical one with the lower
count is created under the same name. Workers ``0..N-1`` come back at once under their stable DNS names
(the coordinator reschedules their closures meanwhile); the higher indexes are never started again. The
backend never patches nor updates an object (a shared namespace's promise, see
``deploy/kubernetes/base/role.yaml``), so lowering an elastic Indexed Job's ``completions`` and
``parallelism`` in place (Kubernetes >= 1.27) is not used; the tfjob flavor, whose worker count lives in
the TFJob, is resized by checkpoint-restart instead (the TFJob deleted and created again).

The removed workers and the resize are kept in the job's record (``resize.json``: ``{"history": [...],
"removed": [...]}``) and laid over every status read (:func:`with_history`), so the replica table shows them
``removed`` and ``JobStatus.history`` the entry ``{"time", "from", "to", "how": "live", "removed",
"recreated"}``.

Adding workers, resizing an all-reduce job and any resize of a TFJob are a checkpoint-restart with new
Indexed Jobs (or a new TFJob) for the new shape (:mod:`.resize_restart`): the history entry is
``{"time", "asked", "from", "to", "how": "restart", "epoch", "step", "added" | "removed"}``, a ``resize``
event marks the curve, and while it runs the status' message says so (``resize.pending``). Workers a
restart leaves out are shown ``removed`` too.
"""

from __future__ import annotations

import json
import time

from ...records import write_json_atomic
from ..base import PENDING, R_REMOVED, RUNNING, TERMINAL, JobConflict, JobStatus, ReplicaStatus, TFK8sError
from ..local_scale import by_restart, check_count, in_progress, live_workers, refusal
from . import manifests as m
from . import resize_restart
from .job_objects import JobRef
from .resize_shape import RESIZE_FILE, note_shape

GONE_WAIT = 30.0  # seconds for the deleted worker Job to be gone before it is created again
# Labels the Job controller puts on a Job's pod template (they name the old Job's uid)
GENERATED_LABELS = (
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
)


def read_resizes(record) -> dict:
    try:
        return json.loads((record.dir / RESIZE_FILE).read_text())
    except (OSError, ValueError):
        return {"history": [], "removed": []}


def with_history(record, status: JobStatus) -> JobStatus:
    """``status`` with the job's resizes laid over it: removed workers shown ``removed`` (also those a
    restart left out of the spec), the history kept, a restart-resize under way in the message."""
    resizes = read_resizes(record)
    pending = resize_restart.read_pending(record)
    if pending is not None and (record.read_status() or {}).get("phase") not in TERMINAL:
        stage = pending.get("stage")
        if (stage == "restarting" and status.phase != RUNNING) or (
            stage == "starting" and status.phase == PENDING
        ):
            # the old shape's objects are gone and the new one's are coming: not an end
            status.phase, status.finished = RUNNING, None
        if not status.done and (not status.message or stage != "starting"):
            status.message = resize_restart.pending_message(pending)
    if resizes.get("error"):
        status.notes = [*status.notes, resizes["error"]]
    if not resizes["history"]:
        return status
    status.history = list(resizes["history"])
    removed = set(resizes["removed"])
    names = {r.name for r in status.replicas}
    for name in sorted(removed - names, key=lambda n: (n.rsplit("-", 1)[0], int(n.rsplit("-", 1)[1]))):
        role, index = name.rsplit("-", 1)
        status.replicas.append(ReplicaStatus(role=role, index=int(index)))
    for r in status.replicas:
        if r.name in removed:
            r.state = R_REMOVED
            r.message = "removed by a resize; its log is kept"
            r.exit_code = None
    return status


def record_restart(job: JobRef, resize, last_step: int | None) -> dict:
    """Append the history entry of a restart-resize to ``resize.json`` (removed workers kept there, workers
    brought back taken out); returns the entry with its ``seq`` (its place in the history, from 1)."""
    resizes = read_resizes(job.record)
    old = {f"worker-{i}" for i in range(job.spec.workers)}
    new = {f"worker-{i}" for i in range(resize.workers)}
    removed_before = set(resizes["removed"])
    added = sorted((new - old) | (new & removed_before), key=lambda n: int(n.rsplit("-", 1)[1]))
    gone = sorted((old - new) - removed_before, key=lambda n: int(n.rsplit("-", 1)[1]))
    entry = {
        "time": time.time(),
        "asked": resize.asked,
        "from": resize.before,
        "to": resize.workers,
        "how": "restart",
        "epoch": resize.epoch,
        "step": last_step,
    }
    if added:
        entry["added"] = added
    if gone:
        entry["removed"] = gone
    if resize.fallback:
        entry["note"] = "no new checkpoint in time; restarted from the last one"
    resizes["history"].append(entry)
    resizes["removed"] = sorted((removed_before | set(gone)) - new)
    if resize.cut is not None and resize.cut[0] is not None and isinstance(resize.cut[1], int):
        resizes.setdefault("superseded", []).append(list(resize.cut))  # the old run's events after it dropped
    resizes.pop("error", None)
    write_json_atomic(job.record.dir / RESIZE_FILE, resizes)
    return {**entry, "seq": len(resizes["history"])}


def note_failure(record, resize, why: str) -> None:
    """Keep why a restart-resize failed (shown among the status' notes until the next resize)."""
    resizes = read_resizes(record)
    resizes["error"] = f"the resize to {resize.workers} worker(s) failed: {why}"
    write_json_atomic(record.dir / RESIZE_FILE, resizes)


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
    if resize_restart.read_pending(job.record) is not None:
        raise JobConflict(in_progress(name))
    current = len(live_workers(status))
    if workers == current:
        return status
    if by_restart(job.spec.strategy, current, workers) or job.flavor == "tfjob":
        # a TFJob's worker count lives in the TFJob, which is never patched: it is created again
        return resize_restart.start(backend, job, status, current, workers)
    keep = live_workers(status)
    gone = [r.name for r in keep[workers:]]
    recreate_workers(job, workers)
    resizes = read_resizes(job.record)
    resizes["history"].append(
        {
            "time": time.time(),
            "from": current,
            "to": workers,
            "how": "live",
            "removed": gone,
            "recreated": [r.name for r in keep[:workers]],
        }
    )
    resizes["removed"] = sorted(set(resizes["removed"]) | set(gone))
    write_json_atomic(job.record.dir / RESIZE_FILE, resizes)
    note_shape(job, resizes, job.spec.workers)  # the removed workers, for other kernels: no patch
    return backend.get(name)


def recreate_workers(job: JobRef, workers: int) -> None:
    """Delete the worker Indexed Job (its pods with it) and create it again with ``workers`` completions."""
    cluster = job.cluster
    name = f"{job.name}-worker"
    current = next(
        (
            j
            for j in cluster.items("jobs", job.namespace, label_selector=m.job_selector(job.name))
            if j["metadata"]["name"] == name
        ),
        None,
    )
    if current is None:
        raise JobConflict(
            f"job {job.name} has no worker Job {name} on the cluster any more; it cannot be resized."
        )
    cluster.delete("jobs", job.namespace, name)
    deadline = time.monotonic() + GONE_WAIT
    while any(
        j["metadata"]["name"] == name
        for j in cluster.items("jobs", job.namespace, label_selector=m.job_selector(job.name))
    ):
        if time.monotonic() > deadline:
            raise TFK8sError(
                f"the worker Job {name} of job {job.name} was not gone within {GONE_WAIT:g} s of its deletion; "
                f"look at kubectl get job {name} -n {job.namespace}, then resize again."
            )
        time.sleep(0.2)
    cluster.create(job.namespace, worker_job(current, workers))


def worker_job(current: dict, workers: int) -> dict:
    """The manifest of ``current`` (a worker Indexed Job as the server returned it) with ``workers``
    completions, ready to create again: what the server generated (uid, selector, status) left out."""
    meta = current["metadata"]
    spec = json.loads(json.dumps(current["spec"]))
    spec.pop("selector", None)
    spec.pop("manualSelector", None)
    labels = (spec.get("template", {}).get("metadata") or {}).get("labels") or {}
    for key in GENERATED_LABELS:
        labels.pop(key, None)
    per_worker = max(1, int(spec.get("backoffLimit", 0)) // max(1, int(spec.get("completions", 1))))
    spec.update(completions=workers, parallelism=workers, backoffLimit=per_worker * workers)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "labels", "annotations", "ownerReferences")
            if key in meta
        },
        "spec": spec,
    }
