"""The Kubernetes backend over the official ``kubernetes`` client: submit, read, list, stop and delete jobs.

Every job keeps a local :class:`~tfk8s_jupyter.records.JobRecord` (spec, payload, status, protocol events,
replica logs), so curves and logs survive pod deletion and kernel restarts; the cluster keeps the spec too
(in the parent ConfigMap), so ``attach`` works from any machine.

The connection lives in :mod:`.connection`, the error sentences in :mod:`.errors`, the job's reads in
:mod:`.job_objects`, the per-job watch in :mod:`.follower` and the end of a job in :mod:`.lifecycle`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from kubernetes import client as k8s

from ...config import current_config, current_owner
from ...logtext import read_log, split_lines
from ...payload import Payload
from ...records import JobRecord
from ...replica_env import ARTIFACT_CHECKPOINTS
from ...spec import JobSpec
from ..base import (
    PENDING,
    STOPPED,
    TERMINAL,
    Backend,
    BackendUnavailable,
    EventsCallback,
    JobNotFound,
    JobStatus,
    StatusCallback,
    TFK8sError,
)
from . import lifecycle, resize, resize_restart, storage
from . import manifests as m
from .connection import Cluster, Connections, LineStream
from .errors import ApiErrorContext, api_status
from .follower import JobFollower, active_follower
from .job_objects import JobRef, fold_outcomes, job_events, owner_of, pod_of, snapshot
from .lifecycle import (
    ANNOTATION_MESSAGE,
    ANNOTATION_PHASE,
    ANNOTATION_STOPPED,
    UNSEEN_END_AFTER,
    delete_object,
    parent_expired,
)
from .queue import describe as describe_queued
from .resize import with_history
from .resize_shape import adopt_shape, read_shaped_parent, refresh_record
from .status import compute_status, parse_time
from .storage import StorageError
from .storage_check import storage_problem


def _by_job(objs: list[dict]) -> dict[str, list[dict]]:
    """Objects of several jobs, by the job they belong to (their job label)."""
    out: dict[str, list[dict]] = {}
    for obj in objs:
        out.setdefault((obj["metadata"].get("labels") or {}).get(m.LABEL_JOB), []).append(obj)
    return out


class KubernetesBackend(Backend):
    """Jobs as native Indexed Jobs or Kubeflow TFJobs; status from one pod watch per job.

    Args:
        namespace: default namespace (flag); else ``TFK8s.namespace``, the kubeconfig context's, the
            service account's, ``default``.
        context: kubeconfig context (default: the current one).
        config_file: kubeconfig path (default: ``$KUBECONFIG`` or ``~/.kube/config``).
        api_client: an already configured ``kubernetes.client.ApiClient`` (tests, embedding).
        root: where job records live (default: :func:`tfk8s_jupyter.records.records_root`).
    """

    name = "kubernetes"

    def __init__(
        self,
        namespace: str | None = None,
        context: str | None = None,
        config_file: str | None = None,
        api_client: k8s.ApiClient | None = None,
        root: Path | None = None,
    ):
        self.namespace = namespace
        self.context = context
        self.config_file = config_file
        self.root = root
        self.connections = Connections(namespace, context, config_file)
        if api_client is not None:
            self.connections.preset(api_client)
        self.finisher = resize_restart.ResizeFinisher()  # a Finisher aware of resized jobs

    # connections --------------------------------------------------------------------------------
    def cluster(self, context: str | None = None) -> Cluster:
        return self.connections.cluster(context)

    def resolve_namespace(self, spec_namespace: str | None = None, context: str | None = None) -> str:
        """Flag (spec, then backend) → ``TFK8s.namespace`` → kubeconfig context → service account → default."""
        return self.connections.resolve_namespace(spec_namespace, context)

    def resolve_flavor(self, flavor: str, context: str | None = None) -> str:
        """``auto`` → ``tfjob`` when API discovery shows ``kubeflow.org/v1 tfjobs``, else ``native``."""
        return self.connections.resolve_flavor(flavor, context)

    def record(self, name: str) -> JobRecord:
        return JobRecord(name, self.root)

    # submit -------------------------------------------------------------------------------------
    def submit(self, spec: JobSpec, payload: Payload) -> JobStatus:
        cluster = self.cluster(spec.context)
        namespace = self.resolve_namespace(spec.namespace, spec.context)
        flavor = self.resolve_flavor(spec.flavor, spec.context)
        owner = spec.owner if spec.owner and spec.owner != "user" else current_owner()
        spec = spec.with_(namespace=namespace, flavor=flavor, backend="kubernetes", owner=owner)
        resume = self._resume_dir(spec) if spec.resume_from else ""
        objs = m.render_manifests(spec, payload, flavor=flavor, namespace=namespace, resume_from=resume)
        if spec.storage:
            usable, message = storage_problem(cluster, spec, namespace)
            if usable is False:
                raise StorageError(message)
        created: list[dict] = []
        try:
            parent = cluster.create(namespace, objs[0])
            created.append(parent)
            for obj in objs[1:]:
                created.append(cluster.create(namespace, m.set_owner(obj, parent)))
        except TFK8sError as e:
            leftovers = self._delete_created(cluster, created, namespace)
            if leftovers:
                raise type(e)(
                    f"{e} The objects created before the failure could not all be removed "
                    f"({', '.join(leftovers)}); delete them with kubectl delete configmap {spec.name} -n {namespace}."
                ) from e.__cause__
            raise
        record = self.record(spec.name)
        record.delete()  # a stale record of an old job of the same name
        record.write_spec(spec.to_json())
        record.write_payload(payload.without_data().to_json())  # as in the ConfigMap: inputs travel apart
        created_at = parse_time(created[0]["metadata"].get("creationTimestamp")) or time.time()
        status = JobStatus(
            name=spec.name,
            backend=self.name,
            strategy=spec.strategy,
            phase=PENDING,
            created=created_at,
            flavor=flavor,
            owner=spec.owner,
            namespace=namespace,
            replicas=compute_status(spec, flavor=flavor, namespace=namespace, pods=[]).replicas,
            notes=storage.storage_notes(spec),
        )
        record.write_status(status.to_json())
        return status

    def _resume_dir(self, spec: JobSpec) -> str:
        """The checkpoint dir of the job ``spec.resume_from`` as the new job's pods see it.

        Raises:
            JobNotFound: no such job.
            StorageError: its checkpoints did not outlive its pods, sit where the new pods cannot read
                them, or (when this notebook sees its storage) were never written.
        """
        name = spec.resume_from
        try:
            earlier = self.spec(name)
        except JobNotFound:
            raise JobNotFound(
                f"resume_from {name!r} names no job in namespace {spec.namespace} nor in this notebook's "
                "records; pass the name of an earlier job (see %tfk8s_jobs)."
            ) from None
        where = storage.resume_dir(spec, earlier)
        local, _ = self._artifacts(earlier)
        if local and not earlier.checkpoint_dir and "://" not in local and Path(local).parent.is_dir():
            checkpoints = Path(local) / ARTIFACT_CHECKPOINTS
            if not checkpoints.is_dir() or not any(p.is_file() for p in checkpoints.rglob("*")):
                raise StorageError(
                    f"job {name!r} left no checkpoint in {checkpoints} (it ended before its first one, or its "
                    "fit completed and removed it), so there is nothing to resume from; pass another job."
                )
        return where

    @staticmethod
    def _delete_created(cluster: Cluster, created: list[dict], namespace: str) -> list[str]:
        """Undo a partial submission, children first; return what could not be deleted."""
        left = []
        for obj in reversed(created):
            try:
                delete_object(cluster, obj["kind"], obj["metadata"]["name"], namespace)
            except TFK8sError:
                left.append(f"{obj['kind']} {obj['metadata']['name']}")
        return left

    # reading the cluster ------------------------------------------------------------------------
    def _job_context(self, name: str) -> JobRef:
        """Spec, namespace, flavor and connection of a job, from its record or (attach) its ConfigMap."""
        record = self.record(name)
        if record.exists():
            spec = JobSpec.from_json(record.read_spec())
            namespace = spec.namespace or self.resolve_namespace(None, spec.context)
            return JobRef(spec, namespace, spec.flavor, self.cluster(spec.context), record)
        cluster = self.cluster()
        namespace = self.resolve_namespace()
        cm = read_shaped_parent(cluster, namespace, name)  # a resized job's worker count folded in
        if (cm["metadata"].get("labels") or {}).get(m.LABEL_MANAGED_BY) != m.MANAGED_BY:
            raise JobNotFound(f"{name} in namespace {namespace} is not a tfk8s-jupyter job.")
        if owner_of(cm) != current_owner():
            # another user's job (shared namespace): as if it did not exist, never adopted
            raise JobNotFound(
                f"job {name} was not found in namespace {namespace}; list yours with %tfk8s_jobs."
            )
        self._adopt(cm, record)
        spec = JobSpec.from_json(record.read_spec())
        return JobRef(spec, namespace, spec.flavor, cluster, record)

    @staticmethod
    def _adopt(cm: dict, record: JobRecord) -> None:
        """Create the local record of a job first seen on the cluster (another kernel or machine)."""
        data = cm.get("data") or {}
        spec = json.loads(data["spec.json"])
        spec["namespace"] = cm["metadata"]["namespace"]
        spec["flavor"] = (cm["metadata"].get("annotations") or {}).get(m.ANNOTATION_FLAVOR, "native")
        record.write_spec(spec)
        if "payload.json" in data:
            record.write_payload(data["payload.json"])
        adopt_shape(cm, record)  # its resizes' history, when it was resized

    @staticmethod
    def _status_from(job: JobRef, snap: dict, allow_events: bool = True) -> JobStatus:
        """The status of a job from a :func:`.job_objects.snapshot` (and the parent's annotations)."""
        spec = job.spec
        prev = job.record.read_status() or {}
        if prev.get("phase") in TERMINAL:
            return JobStatus.from_json(prev)
        events = None
        if (
            allow_events
            and job.flavor == "native"
            and snap["jobs"]
            and len(snap["pods"]) < len(spec.replica_names)
        ):
            events = job_events(job)
        status = compute_status(
            spec,
            flavor=job.flavor,
            namespace=job.namespace,
            pods=snap["pods"],
            jobs=snap["jobs"],
            tfjob=snap["tfjob"],
            events=events,
            created=prev.get("created"),
        )
        status = describe_queued(job, status, snap["jobs"], snap["tfjob"])  # Kueue's position, if queued
        if "parent" not in snap:
            return status
        parent = snap["parent"]
        if parent is None:
            status.phase = STOPPED if prev else status.phase
            status.message = status.message or "the job's objects were deleted from the cluster."
            return status
        annotations = parent["metadata"].get("annotations") or {}
        age = time.time() - (parse_time(parent["metadata"].get("creationTimestamp")) or time.time())
        if annotations.get(ANNOTATION_STOPPED):
            status.phase = STOPPED
        elif annotations.get(ANNOTATION_PHASE) in TERMINAL:
            # the outcome, noted when the job ended; when it ended is not noted
            status.end(annotations[ANNOTATION_PHASE], annotations.get(ANNOTATION_MESSAGE) or None)
            status.finished = None
        elif age > UNSEEN_END_AFTER and not snap["pods"] and not snap["jobs"] and not snap["tfjob"]:
            status.phase = STOPPED
            status.message = (
                "the job's pods and Jobs are gone (ttlSecondsAfterFinished or deleted) and nobody saw it end; "
                "its outcome is unknown."
            )
        return status

    # Backend interface --------------------------------------------------------------------------
    def get(self, name: str) -> JobStatus:
        job = self._job_context(name)
        prev = job.record.read_status()
        if prev and prev.get("phase") in TERMINAL:
            return with_history(job.record, JobStatus.from_json(prev))
        status = with_history(job.record, self._status_from(job, snapshot(job)))
        if status.done:
            status = self.finisher.finalize(job, status)
        else:
            job.record.write_status(status.to_json())
        return status

    def spec(self, name: str) -> JobSpec:
        return self._job_context(name).spec

    def events(self, name: str) -> list[dict]:
        record = self.record(name)
        if not record.exists():
            self._job_context(name)
        return record.read_events()

    def list(self, owner: str | None = None, all_namespaces: bool = False) -> list[JobStatus]:
        """Jobs in the default namespace: one list of parents, of pods and of Jobs (3 requests);
        ``all_namespaces``: in every namespace where :meth:`listable_namespaces` says the user may list them."""
        cluster = self.cluster()
        if not all_namespaces:
            return self._list_in(cluster, self.resolve_namespace(), owner)
        out = []
        for namespace in self.listable_namespaces(cluster):
            out.extend(self._list_in(cluster, namespace, owner))
        return out

    def listable_namespaces(self, cluster: Cluster) -> list[str]:
        """Every namespace (when listing namespaces is allowed), else the default one and those of the
        kubeconfig's contexts on this cluster; kept where a SelfSubjectAccessReview allows listing jobs
        (list configmaps, pods and Jobs)."""
        from .preflight import can

        candidates = [self.resolve_namespace(), *self.connections.context_namespaces()]
        if can(cluster, "list", "", "namespaces", None):
            listed = cluster.raw(ApiErrorContext("list", "namespaces", None), cluster.core.list_namespace)
            candidates += [n["metadata"]["name"] for n in listed.get("items", [])]
        out = []
        for ns in dict.fromkeys(candidates):
            if all(
                can(cluster, "list", g, r, ns)
                for g, r in (("", "configmaps"), ("", "pods"), ("batch", "jobs"))
            ):
                out.append(ns)
        return out

    def _list_in(self, cluster: Cluster, namespace: str, owner: str | None) -> list[JobStatus]:
        sel = m.owner_selector(owner)
        parents = fold_outcomes(cluster.items("configmaps", namespace, label_selector=sel))
        if not parents:
            return []
        pods = _by_job(cluster.items("pods", namespace, label_selector=sel))
        jobs = _by_job(cluster.items("jobs", namespace, label_selector=sel))
        if owner is not None:
            # label values cannot hold every user name ('@' is sanitized): compare the exact annotation too
            parents = [cm for cm in parents if owner_of(cm) == owner]
        me = current_owner()
        out = []
        for cm in parents:
            name = cm["metadata"]["name"]
            if (cm["metadata"].get("labels") or {}).get(m.LABEL_JOB) != name:
                continue  # an input-files ConfigMap (<job>-data-<i>), not a job's parent
            if self._expire(cluster, cm, pods.get(name), jobs.get(name)):
                continue
            record = self.record(name)
            if owner_of(cm) != me:
                record = JobRecord(name, Path(tempfile.mkdtemp(prefix="tfk8s-foreign-")))  # seen, not adopted
            if not record.exists():
                self._adopt(cm, record)
            elif owner_of(cm) == me:
                refresh_record(record, cm)  # resized elsewhere since this record was adopted
            prev = record.read_status() or {}
            if prev.get("phase") in TERMINAL:
                out.append(JobStatus.from_json(prev))
                continue
            spec = JobSpec.from_json(record.read_spec())
            job = JobRef(spec, namespace, spec.flavor, cluster, record)
            if job.flavor == "tfjob":
                snap = {**snapshot(job), "parent": cm}
            else:
                snap = {"pods": pods.get(name, []), "jobs": jobs.get(name, []), "tfjob": None, "parent": cm}
            status = self._status_from(job, snap, allow_events=False)
            status.created = parse_time(cm["metadata"].get("creationTimestamp")) or status.created
            out.append(status)
            if record.dir.parent.name.startswith("tfk8s-foreign-"):
                shutil.rmtree(record.dir.parent, ignore_errors=True)
        return out

    @staticmethod
    def _expire(cluster: Cluster, cm: dict, pods: list[dict] | None, jobs: list[dict] | None) -> bool:
        """Retention of a listed parent: delete it when its pods and Jobs (or TFJob) are gone and the job's
        ``ttlSecondsAfterFinished`` has passed since it ended (:func:`.lifecycle.parent_expired`); the
        local record stays. Returns whether it was deleted."""
        if pods or jobs:
            return False
        name, namespace = cm["metadata"]["name"], cm["metadata"]["namespace"]
        try:
            spec = json.loads((cm.get("data") or {})["spec.json"])
            ttl = int(spec.get("ttl_seconds_after_finished", 3600))
        except (KeyError, TypeError, ValueError):
            return False
        if not parent_expired(cm, ttl):
            return False
        flavor = (cm["metadata"].get("annotations") or {}).get(m.ANNOTATION_FLAVOR, "native")
        if flavor == "tfjob":
            try:
                cluster.get("tfjobs", namespace, name)
                return False  # the TFJob is still there (its own TTL has not run out)
            except JobNotFound:
                pass
        delete_object(cluster, "ConfigMap", name, namespace)
        return True

    def _replica_job(self, name: str, replica: str) -> JobRef:
        """The job, which must have ``replica``."""
        job = self._job_context(name)
        removed = resize.read_resizes(job.record)["removed"]  # a resize's removed workers keep their logs
        if replica not in job.spec.replica_names and replica not in removed:
            raise JobNotFound(
                f"job {name} has no replica {replica}; its replicas are {', '.join(job.spec.replica_names)}."
            )
        return job

    def logs(self, name: str, replica: str, tail: int | None = None) -> str:
        job = self._replica_job(name, replica)
        status = JobStatus.from_json(
            job.record.read_status() or {"name": name, "backend": self.name, "strategy": ""}
        )
        if not status.done:
            # A job this kernel follows: its reporting replica's log is in the record already (the follower
            # streams it there), the other replicas' pods are among the pods it watches: no API call but the
            # log read itself (a panel asks every 2 s)
            follower = active_follower(job.record)
            if follower is not None and not follower.finishing:
                if replica == job.spec.reporting_replica and follower.reporting_log_current():
                    return read_log(job.record.log_path(replica), tail)
                pod = follower.current_pod(replica)
            else:
                pod = pod_of(job, replica)
            if pod is not None:
                try:
                    return job.cluster.read_log(job.namespace, pod, tail=tail)
                except (JobNotFound, BackendUnavailable):
                    pass
        return read_log(job.record.log_path(replica), tail)

    def follow_logs(self, name: str, replica: str, stop: threading.Event) -> Iterator[str]:
        """The replica's log lines as they come, over one follow stream (the record's copy once it is gone)."""
        job = self._replica_job(name, replica)
        resp = None
        while not stop.is_set() and resp is None:
            status = job.record.read_status() or {}
            if status.get("phase") in TERMINAL:
                break
            pod = pod_of(job, replica)
            if pod is not None:
                try:
                    resp = job.cluster.follow_log(job.namespace, pod)
                    break
                except TFK8sError as e:
                    if api_status(e) != 400:
                        raise  # 400: the container has not started yet
            stop.wait(1.0)
        if resp is None:
            if not stop.is_set():
                yield from split_lines(self.logs(name, replica))
            return
        with LineStream(resp, stop) as lines:
            yield from lines

    def scale(self, name: str, workers: int) -> JobStatus:
        """Resize a running job (see :mod:`.resize`: a parameter-server job's scale-down live, the rest by
        checkpoint-restart with new Indexed Jobs or a new TFJob, :mod:`.resize_restart`)."""
        return resize.scale(self, name, workers)

    def stop(self, name: str) -> JobStatus:
        job = self._job_context(name)
        status = self.get(name)
        if status.done:
            return status
        return lifecycle.stop(job, status)

    def delete(self, name: str) -> None:
        record = self.record(name)
        try:
            job = self._job_context(name)
        except JobNotFound:
            if record.exists():
                record.delete()
                return
            raise
        try:
            job.cluster.delete("configmaps", job.namespace, name)
        except JobNotFound:
            if not job.record.exists():
                raise
        job.record.delete()

    # results ------------------------------------------------------------------------------------
    @staticmethod
    def _artifacts(spec: JobSpec) -> tuple[str | None, str | None]:
        cfg = current_config()
        return storage.notebook_artifacts(spec, cfg.storage_mount, cfg.storage)

    def artifacts_location(self, name: str) -> str | None:
        """The job's artifact directory as this notebook sees it: with a claim, under
        ``c.TFK8s.storage_mount`` (else the pods' mount path when it exists here); with a URI, the URI;
        ``None`` without storage or when the claim is not mounted here (:meth:`artifacts_reason` says why)."""
        return self._artifacts(self.spec(name))[0]

    def artifacts_reason(self, name: str) -> str | None:
        """Why :meth:`artifacts_location` is ``None`` (one sentence with the fix), else ``None``."""
        return self._artifacts(self.spec(name))[1]

    def checkpoint_location(self, name: str) -> str | None:
        """The job's checkpoint dir as a new job's pods see it; ``None`` when it vanished with the pods."""
        spec = self.spec(name)
        if not spec.storage and not spec.checkpoint_dir:
            return None
        return storage.pod_checkpoints(spec)

    # following a job ----------------------------------------------------------------------------
    def watch(
        self, name: str, on_status: StatusCallback, on_events: EventsCallback, stop: threading.Event
    ) -> None:
        """One pod watch per job (label selector), resumed from the last resourceVersion, relisted after
        410 Gone; one log stream on the reporting replica for the metrics."""
        job = self._job_context(name)
        prev = job.record.read_status()
        if prev and prev.get("phase") in TERMINAL:
            new = job.record.read_events()
            if new:
                on_events(new)
            on_status(JobStatus.from_json(prev))
            return
        JobFollower(job, self.finisher, on_status, on_events, stop).run()
