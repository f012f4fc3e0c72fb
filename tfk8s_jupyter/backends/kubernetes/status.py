"""Pods (and the Jobs or TFJob owning them) → :class:`JobStatus`. Pure functions over API JSON dicts."""

from __future__ import annotations

from datetime import datetime

from ...spec import JobSpec
from ..base import (
    FAILED,
    PENDING,
    R_FAILED,
    R_PENDING,
    R_RESTARTING,
    R_RUNNING,
    R_STARTING,
    R_STOPPED,
    R_SUCCEEDED,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    JobStatus,
    ReplicaStatus,
)
from . import diagnostics
from .manifests import INDEX_ANNOTATION, LABEL_ROLE
from .storage import storage_notes

QUEUED = "queued"  # a pending job whose Jobs (or TFJob) Kueue has not admitted yet (suspend: true)


def suspended(jobs: list[dict] | None, tfjob: dict | None) -> bool:
    """Are the job's owning objects suspended (waiting for Kueue's admission)?"""
    if tfjob is not None:
        return bool((((tfjob.get("spec") or {}).get("runPolicy")) or {}).get("suspend"))
    return bool(jobs) and any((j.get("spec") or {}).get("suspend") for j in jobs)


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def pod_replica(pod: dict) -> tuple[str, int] | None:
    """``(role, index)`` of a replica pod, from our role label and the Job's or operator's index."""
    meta = pod.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    role = labels.get(LABEL_ROLE)
    index = (
        annotations.get(INDEX_ANNOTATION)
        or labels.get(INDEX_ANNOTATION)
        or labels.get("training.kubeflow.org/replica-index")
    )
    if role is None or index is None:
        return None
    try:
        return role, int(index)
    except ValueError:
        return None


def _sort_key(pod: dict) -> tuple:
    meta = pod.get("metadata") or {}
    return (parse_time(meta.get("creationTimestamp")) or 0.0, int(meta.get("resourceVersion") or 0))


def replica_state(pod: dict) -> tuple[str, int | None]:
    """The replica state and exit code a pod shows."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    cs = (status.get("containerStatuses") or [{}])[0]
    state = cs.get("state") or {}
    term = state.get("terminated") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return R_STOPPED, term.get("exitCode")
    if phase == "Succeeded":
        return R_SUCCEEDED, term.get("exitCode", 0)
    if phase == "Failed":
        return R_FAILED, term.get("exitCode")
    if phase == "Running":
        if "running" in state:
            return R_RUNNING, None
        if term and term.get("exitCode") == 0:
            return R_RUNNING, 0
        return R_RESTARTING, term.get("exitCode") or (
            (cs.get("lastState") or {}).get("terminated") or {}
        ).get("exitCode")
    if phase == "Pending":
        scheduled = any(
            c.get("type") == "PodScheduled" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        return (R_STARTING if scheduled else R_PENDING), None
    return R_PENDING, None


def replica_from_pods(role: str, index: int, candidates: list[dict]) -> tuple[ReplicaStatus, dict | None]:
    """The status of one replica from its pods (the newest wins; older failed ones count as restarts)."""
    rs = ReplicaStatus(role=role, index=index)
    if not candidates:
        return rs, None
    candidates = sorted(candidates, key=_sort_key)
    pod = candidates[-1]
    rs.state, rs.exit_code = replica_state(pod)
    cs = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]
    older_failures = sum(1 for p in candidates[:-1] if (p.get("status") or {}).get("phase") == "Failed")
    rs.restarts = int(cs.get("restartCount") or 0) + older_failures
    rs.host = pod["metadata"].get("name")
    rs.started = parse_time((pod.get("status") or {}).get("startTime"))
    rs.message = diagnostics.diagnose_pod(pod)
    return rs, pod


def replicas_from_pods(spec: JobSpec, pods: list[dict]) -> tuple[list[ReplicaStatus], dict[str, dict]]:
    """One :class:`ReplicaStatus` per expected replica (newest pod wins), and replica name → that pod."""
    by_replica: dict[tuple[str, int], list[dict]] = {}
    for pod in pods:
        key = pod_replica(pod)
        if key is not None:
            by_replica.setdefault(key, []).append(pod)
    out, current = [], {}
    for r in spec.replicas:
        for i in range(r.count):
            rs, pod = replica_from_pods(r.role, i, by_replica.get((r.role, i), []))
            if pod is not None:
                current[rs.name] = pod
            out.append(rs)
    return out, current


def compute_status(
    spec: JobSpec,
    *,
    flavor: str,
    namespace: str,
    pods: list[dict],
    jobs: list[dict] | None = None,
    tfjob: dict | None = None,
    events: list[dict] | None = None,
    created: float | None = None,
    stopped: bool = False,
) -> JobStatus:
    """The job's status from what the cluster shows now."""
    replicas, _ = replicas_from_pods(spec, pods)
    return assemble_status(
        spec,
        replicas,
        flavor=flavor,
        namespace=namespace,
        jobs=jobs,
        tfjob=tfjob,
        events=events,
        created=created,
        stopped=stopped,
    )


def assemble_status(
    spec: JobSpec,
    replicas: list[ReplicaStatus],
    *,
    flavor: str,
    namespace: str,
    jobs: list[dict] | None = None,
    tfjob: dict | None = None,
    events: list[dict] | None = None,
    created: float | None = None,
    stopped: bool = False,
) -> JobStatus:
    """The job's status from its replicas' statuses (each already diagnosed) and the owning objects."""
    status = JobStatus(
        name=spec.name,
        backend="kubernetes",
        strategy=spec.strategy,
        replicas=replicas,
        flavor=flavor,
        owner=spec.owner,
        namespace=namespace,
        notes=storage_notes(spec),
    )
    if created is not None:
        status.created = created
    role, index = spec.reporting_replica.rsplit("-", 1)
    reporting = next(r for r in replicas if r.index == int(index) and r.role == role)
    message = reporting.message
    if message is None:
        troubled = [r for r in replicas if r.message]
        if troubled:
            message = min(troubled, key=lambda r: r.name).message
    owners = list(jobs or []) + ([tfjob] if tfjob else [])
    failure = next((m for m in map(diagnostics.job_failure, owners) if m), None)
    tfjob_done = _tfjob_condition(tfjob)

    if stopped:
        status.phase = STOPPED
    elif reporting.state == R_SUCCEEDED or tfjob_done == "Succeeded":
        status.phase = SUCCEEDED
        message = None
    elif failure or reporting.state == R_FAILED or tfjob_done == "Failed":
        status.phase = FAILED
        message = message or failure or f"{reporting.name} failed."
        if failure and diagnostics.DEADLINE_EXCEEDED in failure:
            message = failure  # the deadline, not the replica its end killed
    elif reporting.state in (R_RUNNING, R_RESTARTING):
        status.phase = RUNNING
    else:
        status.phase = PENDING
    if status.phase in (PENDING, RUNNING) and not message and events:
        message = diagnostics.failed_create(events)
    if status.phase == PENDING and spec.queue and suspended(jobs, tfjob):
        status.phase = QUEUED
        message = message or (
            f"queued: waiting for Kueue to admit it from queue {spec.queue} (the cluster starts it then)."
        )
    status.message = message
    return status


def _tfjob_condition(tfjob: dict | None) -> str | None:
    if not tfjob:
        return None
    for cond in (tfjob.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Succeeded", "Failed") and cond.get("status") == "True":
            return cond["type"]
    return None
