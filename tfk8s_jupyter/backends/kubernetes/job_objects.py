"""One job's objects on the cluster, read: its pods, the role Jobs or TFJob owning them, its parent
ConfigMap, the Jobs' events, the pod of a replica.

:class:`JobRef` names a job the way every read, the follower and the end of a job need it: spec,
namespace, flavor, connection and local record. Each read is O(1) requests whatever the replica count.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...records import JobRecord
from ...spec import JobSpec
from ..base import BackendUnavailable, Forbidden, JobNotFound
from . import manifests as m
from .connection import Cluster
from .status import replicas_from_pods


@dataclass(frozen=True)
class JobRef:
    """A job as the backend works on it."""

    spec: JobSpec
    namespace: str
    flavor: str  # "native" or "tfjob"
    cluster: Cluster
    record: JobRecord

    @property
    def name(self) -> str:
        return self.spec.name


def owner_of(obj: dict) -> str | None:
    """The exact owner of a job's object (the annotation; the label is sanitized)."""
    meta = obj.get("metadata") or {}
    return (meta.get("annotations") or {}).get(m.ANNOTATION_OWNER) or (meta.get("labels") or {}).get(
        m.LABEL_OWNER
    )


OUTCOME_SUFFIX = "-outcome"


def outcome_name(job_name: str) -> str:
    """The ConfigMap ``<job>-outcome`` the backend creates when the job ends (its final phase, message and
    end time as annotations): never a patch of the parent, which every user of a shared namespace reaches."""
    return f"{job_name}{OUTCOME_SUFFIX}"


def with_outcome(parent: dict, outcome: dict | None) -> dict:
    """The parent as readers expect it: the outcome's annotations laid over its own (a copy)."""
    if not outcome:
        return parent
    meta = dict(parent.get("metadata") or {})
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        **((outcome.get("metadata") or {}).get("annotations") or {}),
    }
    return {**parent, "metadata": meta}


def fold_outcomes(configmaps: list[dict]) -> list[dict]:
    """A list of the jobs' ConfigMaps with each ``<job>-outcome`` folded into its parent (:func:`with_outcome`)
    and left out of the list, and each resized job's shape too (:func:`.resize_shape.fold_shapes`); an
    outcome whose parent is not listed is dropped."""
    from .resize_shape import fold_shapes

    outcomes, rest = {}, []
    for cm in fold_shapes(configmaps):
        meta = cm.get("metadata") or {}
        job = (meta.get("labels") or {}).get(m.LABEL_JOB)
        if job and meta.get("name") == outcome_name(job):
            outcomes[job] = cm
        else:
            rest.append(cm)
    return [with_outcome(cm, outcomes.get(cm["metadata"]["name"])) for cm in rest]


def parent_of(job: JobRef) -> dict | None:
    """The parent ConfigMap with its outcome folded in (:func:`with_outcome`); ``None`` when deleted."""
    try:
        parent = job.cluster.get("configmaps", job.namespace, job.name)
    except JobNotFound:
        return None
    try:
        outcome = job.cluster.get("configmaps", job.namespace, outcome_name(job.name))
    except JobNotFound:
        outcome = None
    return with_outcome(parent, outcome)


def job_pods(job: JobRef) -> list[dict]:
    """Every pod of the job (one list request)."""
    return job.cluster.items("pods", job.namespace, label_selector=m.job_selector(job.name))


def owners(job: JobRef) -> tuple[list[dict], dict | None]:
    """The role Jobs (native) or the TFJob of a job: one request."""
    if job.flavor == "tfjob":
        try:
            return [], job.cluster.get("tfjobs", job.namespace, job.name)
        except JobNotFound:
            return [], None
    return job.cluster.items("jobs", job.namespace, label_selector=m.job_selector(job.name)), None


def snapshot(job: JobRef) -> dict:
    """Pods, owning Jobs/TFJob and (when nothing else is left) parent of one job.

    Returns:
        ``{"pods", "pods_rv", "jobs", "tfjob"}``, and ``"parent"`` (``None`` when deleted) when the job
        has neither pods nor owners.
    """
    pods = job.cluster.list("pods", job.namespace, label_selector=m.job_selector(job.name))
    out = {"pods": pods["items"], "pods_rv": pods["metadata"].get("resourceVersion")}
    out["jobs"], out["tfjob"] = owners(job)
    if not out["pods"] and not out["jobs"] and not out["tfjob"]:
        out["parent"] = parent_of(job)
    return out


def job_events(job: JobRef) -> list[dict]:
    """Events of the role Jobs (FailedCreate: e.g. quota), asked only when pods are missing."""
    try:
        items = job.cluster.items("events", job.namespace, field_selector="involvedObject.kind=Job")
    except (Forbidden, BackendUnavailable):
        return []
    prefix = f"{job.name}-"
    return [e for e in items if (e.get("involvedObject") or {}).get("name", "").startswith(prefix)]


def pod_of(job: JobRef, replica: str) -> str | None:
    """The name of the current pod of ``replica`` (e.g. ``worker-1``), if it has one."""
    role = replica.rsplit("-", 1)[0]
    selector = f"{m.job_selector(job.name)},{m.LABEL_ROLE}={role}"
    _, current = replicas_from_pods(
        job.spec, job.cluster.items("pods", job.namespace, label_selector=selector)
    )
    pod = current.get(replica)
    return pod["metadata"]["name"] if pod else None
