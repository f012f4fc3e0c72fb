"""Resizing a Kubernetes job: ``job.scale(workers=N)`` on the Kubernetes backend.

**Parameter-server scale-down, live for the chief.** The chief's ``ClusterCoordinator`` keeps training when
a worker disappears and takes a worker back when it returns, so the backend re-creates the worker Indexed
Job with ``N`` completions: the old one is deleted (its pods with it) and an identical one with the lower
count is created under the same name. Workers ``0..N-1`` come back at once under their stable DNS names
(the coordinator reschedules their closures meanwhile); the higher indexes are never started again. The
backend never patches nor updates an object (a shared namespace's promise, see
``deploy/kubernetes/base/role.yaml``), so lowering an elastic Indexed Job's ``completions`` and
``parallelism`` in place (Kubernetes >= 1.27) is not used; the tfjob flavor, whose worker count lives in
the TFJob, is refused for the same reason.

The removed workers and the resize are kept in the job's record (``resize.json``: ``{"history": [...],
"removed": [...]}``) and laid over every status read (:func:`with_history`), so the replica table shows them
``removed`` and ``JobStatus.history`` the entry ``{"time", "from", "to", "how": "live", "removed",
"recreated"}``.

Adding workers, or resizing an all-reduce job, needs a checkpoint-restart (new Indexed Jobs for the new
shape): not built on this backend yet, refused in one sentence.
"""

from __future__ import annotations

import json
import time

from ...records import write_json_atomic
from ..base import R_REMOVED, JobConflict, JobStatus, TFK8sError
from ..local_scale import by_restart, check_count, live_workers, refusal
from . import manifests as m
from .job_objects import JobRef

RESIZE_FILE = "resize.json"
GONE_WAIT = 30.0  # seconds for the deleted worker Job to be gone before it is created again
# Labels the Job controller puts on a Job's pod template (they name the old Job's uid)
GENERATED_LABELS = (
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
)
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
    if job.flavor == "tfjob":
        raise JobConflict(
            f"job {name} is a TFJob, whose worker count only a patch of the TFJob changes, and this backend "
            "never patches an object in a shared namespace; stop the job and submit it again with the workers "
            "you want."
        )
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
