"""The Kubernetes backend over the official ``kubernetes`` client.

Every job keeps a local :class:`~tfk8s_jupyter.records.JobRecord` (spec, payload, status, protocol events,
replica logs), so curves and logs survive pod deletion and kernel restarts; the cluster keeps the spec too
(in the parent ConfigMap), so ``attach`` works from any machine.

Reads use raw JSON (``_preload_content=False``): the status functions work on plain dicts and a busy job's
pod events cost no model deserialization.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from ...config import current_config, current_owner
from ...payload import Payload
from ...protocol import event_key, parse_line
from ...records import JobRecord
from ...spec import JobSpec
from ..base import (
    PENDING,
    STOPPED,
    SUCCEEDED,
    TERMINAL,
    Backend,
    BackendUnavailable,
    EventsCallback,
    Forbidden,
    JobConflict,
    JobNotFound,
    JobStatus,
    ReplicaStatus,
    StatusCallback,
    TFK8sError,
)
from . import manifests as m
from .status import assemble_status, compute_status, parse_time, pod_replica, replica_from_pods

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
ANNOTATION_STOPPED = "tfk8s.io/stopped"
ANNOTATION_PHASE = "tfk8s.io/phase"  # the final phase, noted on the parent when the job ends
ANNOTATION_MESSAGE = "tfk8s.io/message"
WATCH_TIMEOUT = 60  # seconds per watch request; the server ends it, we resume from the last resourceVersion
READ_TIMEOUT = 90
MISSING_PODS_RECHECK = 3  # seconds between looks at the Jobs' events while pods are missing  # a stream silent for this long is considered dead
TFJOB = ("kubeflow.org", "v1", "tfjobs")
# After a success, seconds the other replicas get to end by themselves (all-reduce workers finish their fit,
# ps and workers see the chief gone) so their captured logs hold their last lines.
FINISH_GRACE = 5.0

RESOURCE_NAMES = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "Job": "jobs",
    "TFJob": "tfjobs",
}


class ApiErrorContext:
    """What a request was doing, to turn an ``ApiException`` into one sentence with the fix."""

    def __init__(self, verb: str, resource: str, namespace: str | None, name: str | None = None):
        self.verb, self.resource, self.namespace, self.name = verb, resource, namespace, name


def _status_message(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or "{}").get("message") or e.reason or "")
    except (ValueError, AttributeError):
        return str(e.reason or e.body or "")


def translate(e: Exception, ctx: ApiErrorContext) -> TFK8sError:
    """The typed error for a failed API request, with the hint the user needs."""
    ns = ctx.namespace or "?"
    if not isinstance(e, ApiException):
        return BackendUnavailable(
            f"the Kubernetes API cannot be reached ({type(e).__name__}: {e}); check the cluster address in "
            "your kubeconfig (or --context) and your network."
        )
    msg = _status_message(e)
    if e.status == 401:
        return BackendUnavailable(
            f"the Kubernetes API rejected the credentials ({msg}); refresh your kubeconfig login or token."
        )
    if e.status == 403:
        if "exceeded quota" in msg:
            quota = msg.split("exceeded quota:", 1)[1].strip()
            return Forbidden(
                f"the quota of namespace {ns} is exceeded ({quota}); ask for less (--workers/--cpu/--memory/"
                "--gpus), delete finished jobs, or ask an administrator for a larger quota."
            )
        user = re.search(r'User "([^"]+)"', msg)
        who = f"{user.group(1)}" if user else "your account"
        return Forbidden(
            f"{who} may not {ctx.verb} {ctx.resource} in namespace {ns}; ask an administrator to grant it "
            f"(a Role with verb {ctx.verb!r} on {ctx.resource!r}, see deploy/), or use a namespace where you may."
        )
    if e.status == 404:
        if f'namespaces "{ns}" not found' in msg:
            return BackendUnavailable(
                f"namespace {ns} does not exist; create it, or choose another with --namespace / "
                "TFK8s.namespace or your kubeconfig context."
            )
        if ctx.resource == "tfjobs" and "could not find the requested resource" in msg:
            return BackendUnavailable(
                "the Kubeflow training operator is not installed in this cluster (no kubeflow.org/v1 "
                "tfjobs); use --flavor native (or flavor='native'), which needs no operator."
            )
        return JobNotFound(f"{ctx.resource} {ctx.name} was not found in namespace {ns}.")
    if e.status == 409:
        return JobConflict(
            f"a job named {ctx.name} exists already in namespace {ns}; choose another name, or delete "
            f"the old one with tfk8s_jupyter.attach({ctx.name!r}, backend='kubernetes').delete()."
        )
    if e.status == 422:
        return TFK8sError(f"the cluster refused the {ctx.resource} of the job as invalid: {msg}.")
    return BackendUnavailable(
        f"the Kubernetes API answered {e.status} to {ctx.verb} {ctx.resource} in namespace {ns} ({msg}); "
        "try again in a moment."
    )


def _json(resp) -> dict:
    try:
        return json.loads(resp.data)
    finally:
        resp.release_conn()


def iter_lines(resp) -> Iterator[str]:
    """Lines of a chunked streaming response, as text."""
    buf = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode("utf-8", "replace")
    if buf:
        yield buf.decode("utf-8", "replace")


class _Cluster:
    """One API connection (one kubeconfig context or the in-cluster service account)."""

    def __init__(self, api_client: k8s.ApiClient, default_namespace: str):
        self.api_client = api_client
        self.core = k8s.CoreV1Api(api_client)
        self.batch = k8s.BatchV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self.default_namespace = default_namespace
        self._tfjob_installed: bool | None = None

    def call(self, ctx: ApiErrorContext, fn: Callable, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            raise translate(e, ctx) from e

    def raw(self, ctx: ApiErrorContext, fn: Callable, *args, **kwargs) -> dict:
        return _json(self.call(ctx, fn, *args, _preload_content=False, **kwargs))

    def tfjob_installed(self) -> bool:
        """API discovery: does the cluster serve ``kubeflow.org/v1`` ``tfjobs``?"""
        if self._tfjob_installed is None:
            try:
                resources = self.raw(
                    ApiErrorContext("get", "apis/kubeflow.org/v1", None),
                    self.custom.get_api_resources,
                    "kubeflow.org",
                    "v1",
                )
                self._tfjob_installed = any(r.get("name") == "tfjobs" for r in resources.get("resources", []))
            except JobNotFound:
                self._tfjob_installed = False
            except BackendUnavailable as e:
                if isinstance(e.__cause__, ApiException) and e.__cause__.status == 404:
                    self._tfjob_installed = False
                else:
                    raise
        return self._tfjob_installed


def load_cluster(context: str | None = None, config_file: str | None = None) -> _Cluster:
    """Connect with a kubeconfig (optionally a given ``context``) or, in a pod, the service account.

    Raises:
        BackendUnavailable: no usable configuration.
    """
    cfg = k8s.Configuration()
    namespace = None
    kubeconfig = (
        config_file
        or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        or str(Path.home() / ".kube" / "config")
    )
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    try:
        if context or Path(kubeconfig).exists() or not in_cluster:
            k8s_config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=cfg, persist_config=False
            )
            contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c["name"] == context), active) if context else active
            namespace = (chosen or {}).get("context", {}).get("namespace")
        else:
            k8s_config.load_incluster_config(client_configuration=cfg)
    except (ConfigException, OSError, TypeError, ValueError) as e:
        where = f"context {context!r} of {kubeconfig}" if context else kubeconfig
        raise BackendUnavailable(
            f"no usable Kubernetes configuration ({where}: {e}); set KUBECONFIG or pass --context, "
            "or run inside a cluster."
        ) from e
    if namespace is None and SA_NAMESPACE_FILE.exists():
        namespace = SA_NAMESPACE_FILE.read_text().strip() or None
    return _Cluster(k8s.ApiClient(cfg), namespace or "default")


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
        self._clusters: dict[str | None, _Cluster] = {}
        if api_client is not None:
            self._clusters[context] = _Cluster(api_client, namespace or "default")
        self._lock = threading.Lock()
        self._finalizing: set[str] = set()

    # connections --------------------------------------------------------------------------------
    def cluster(self, context: str | None = None) -> _Cluster:
        context = context or self.context or current_config().context
        with self._lock:
            if context not in self._clusters:
                self._clusters[context] = load_cluster(context, self.config_file)
            return self._clusters[context]

    def resolve_namespace(self, spec_namespace: str | None = None, context: str | None = None) -> str:
        """Flag (spec, then backend) → ``TFK8s.namespace`` → kubeconfig context → service account → default."""
        return (
            spec_namespace
            or self.namespace
            or current_config().namespace
            or self.cluster(context).default_namespace
        )

    def resolve_flavor(self, flavor: str, context: str | None = None) -> str:
        """``auto`` → ``tfjob`` when API discovery shows ``kubeflow.org/v1 tfjobs``, else ``native``."""
        if flavor in ("native", "tfjob"):
            return flavor
        return "tfjob" if self.cluster(context).tfjob_installed() else "native"

    def record(self, name: str) -> JobRecord:
        return JobRecord(name, self.root)

    # submit -------------------------------------------------------------------------------------
    def submit(self, spec: JobSpec, payload: Payload) -> JobStatus:
        cluster = self.cluster(spec.context)
        namespace = self.resolve_namespace(spec.namespace, spec.context)
        flavor = self.resolve_flavor(spec.flavor, spec.context)
        owner = spec.owner if spec.owner and spec.owner != "user" else current_owner()
        spec = spec.with_(namespace=namespace, flavor=flavor, backend="kubernetes", owner=owner)
        objs = m.render_manifests(spec, payload, flavor=flavor, namespace=namespace)
        created: list[dict] = []
        try:
            parent = self._create(cluster, objs[0], namespace)
            created.append(parent)
            for obj in objs[1:]:
                created.append(self._create(cluster, m.set_owner(obj, parent), namespace))
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
        record.write_payload(payload.to_json())
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
        )
        record.write_status(status.to_json())
        return status

    def _create(self, cluster: _Cluster, obj: dict, namespace: str) -> dict:
        kind = obj["kind"]
        ctx = ApiErrorContext("create", RESOURCE_NAMES[kind], namespace, obj["metadata"]["name"])
        if kind == "ConfigMap":
            return cluster.raw(ctx, cluster.core.create_namespaced_config_map, namespace, obj)
        if kind == "Service":
            return cluster.raw(ctx, cluster.core.create_namespaced_service, namespace, obj)
        if kind == "Job":
            return cluster.raw(ctx, cluster.batch.create_namespaced_job, namespace, obj)
        if kind == "TFJob":
            return cluster.raw(
                ctx, cluster.custom.create_namespaced_custom_object, *TFJOB[:2], namespace, TFJOB[2], obj
            )
        raise ValueError(kind)

    def _delete_obj(self, cluster: _Cluster, kind: str, name: str, namespace: str) -> None:
        """Delete one object and its dependents (background propagation); a missing one is fine."""
        ctx = ApiErrorContext("delete", RESOURCE_NAMES[kind], namespace, name)
        body = {"propagationPolicy": "Background"}
        try:
            if kind == "ConfigMap":
                cluster.raw(ctx, cluster.core.delete_namespaced_config_map, name, namespace, body=body)
            elif kind == "Service":
                cluster.raw(ctx, cluster.core.delete_namespaced_service, name, namespace, body=body)
            elif kind == "Job":
                cluster.raw(ctx, cluster.batch.delete_namespaced_job, name, namespace, body=body)
            elif kind == "TFJob":
                cluster.raw(
                    ctx,
                    cluster.custom.delete_namespaced_custom_object,
                    *TFJOB[:2],
                    namespace,
                    TFJOB[2],
                    name,
                    body=body,
                )
        except JobNotFound:
            pass

    def _delete_created(self, cluster: _Cluster, created: list[dict], namespace: str) -> list[str]:
        """Undo a partial submission, children first; return what could not be deleted."""
        left = []
        for obj in reversed(created):
            try:
                self._delete_obj(cluster, obj["kind"], obj["metadata"]["name"], namespace)
            except TFK8sError:
                left.append(f"{obj['kind']} {obj['metadata']['name']}")
        return left

    # reading the cluster ------------------------------------------------------------------------
    def _job_context(self, name: str) -> tuple[JobSpec, str, str, _Cluster, JobRecord]:
        """Spec, namespace, flavor and connection of a job, from its record or (attach) its ConfigMap."""
        record = self.record(name)
        if record.exists():
            spec = JobSpec.from_json(record.read_spec())
            cluster = self.cluster(spec.context)
            return (
                spec,
                spec.namespace or self.resolve_namespace(None, spec.context),
                spec.flavor,
                cluster,
                record,
            )
        cluster = self.cluster()
        namespace = self.resolve_namespace()
        cm = cluster.raw(
            ApiErrorContext("get", "configmaps", namespace, name),
            cluster.core.read_namespaced_config_map,
            name,
            namespace,
        )
        if (cm["metadata"].get("labels") or {}).get(m.LABEL_MANAGED_BY) != m.MANAGED_BY:
            raise JobNotFound(f"{name} in namespace {namespace} is not a tfk8s-jupyter job.")
        if _owner_of(cm) != current_owner():
            # another user's job (shared namespace): as if it did not exist, never adopted
            raise JobNotFound(
                f"job {name} was not found in namespace {namespace}; list yours with %tfk8s_jobs."
            )
        self._adopt(cm, record)
        spec = JobSpec.from_json(record.read_spec())
        return spec, namespace, spec.flavor, cluster, record

    def _adopt(self, cm: dict, record: JobRecord) -> None:
        """Create the local record of a job first seen on the cluster (another kernel or machine)."""
        data = cm.get("data") or {}
        spec = json.loads(data["spec.json"])
        spec["namespace"] = cm["metadata"]["namespace"]
        spec["flavor"] = (cm["metadata"].get("annotations") or {}).get(m.ANNOTATION_FLAVOR, "native")
        record.write_spec(spec)
        if "payload.json" in data:
            record.write_payload(data["payload.json"])

    def _owners(
        self, spec: JobSpec, namespace: str, flavor: str, cluster: _Cluster
    ) -> tuple[list, dict | None]:
        """The role Jobs (native) or the TFJob of a job: one request."""
        if flavor == "tfjob":
            try:
                return [], cluster.raw(
                    ApiErrorContext("get", "tfjobs", namespace, spec.name),
                    cluster.custom.get_namespaced_custom_object,
                    *TFJOB[:2],
                    namespace,
                    TFJOB[2],
                    spec.name,
                )
            except JobNotFound:
                return [], None
        jobs = cluster.raw(
            ApiErrorContext("list", "jobs", namespace),
            cluster.batch.list_namespaced_job,
            namespace,
            label_selector=m.job_selector(spec.name),
        )["items"]
        return jobs, None

    def _snapshot(self, spec: JobSpec, namespace: str, flavor: str, cluster: _Cluster) -> dict:
        """Pods, owning Jobs/TFJob and parent of one job: O(1) requests whatever the replica count."""
        sel = m.job_selector(spec.name)
        pods = cluster.raw(
            ApiErrorContext("list", "pods", namespace),
            cluster.core.list_namespaced_pod,
            namespace,
            label_selector=sel,
        )
        out = {
            "pods": pods["items"],
            "pods_rv": pods["metadata"].get("resourceVersion"),
            "jobs": [],
            "tfjob": None,
        }
        out["jobs"], out["tfjob"] = self._owners(spec, namespace, flavor, cluster)
        if not out["pods"] and not out["jobs"] and not out["tfjob"]:
            try:
                out["parent"] = cluster.raw(
                    ApiErrorContext("get", "configmaps", namespace, spec.name),
                    cluster.core.read_namespaced_config_map,
                    spec.name,
                    namespace,
                )
            except JobNotFound:
                out["parent"] = None
        return out

    def _job_events(self, spec: JobSpec, namespace: str, cluster: _Cluster) -> list[dict]:
        """Events of the role Jobs (FailedCreate: e.g. quota), asked only when pods are missing."""
        try:
            items = cluster.raw(
                ApiErrorContext("list", "events", namespace),
                cluster.core.list_namespaced_event,
                namespace,
                field_selector="involvedObject.kind=Job",
            )["items"]
        except (Forbidden, BackendUnavailable):
            return []
        prefix = f"{spec.name}-"
        return [e for e in items if (e.get("involvedObject") or {}).get("name", "").startswith(prefix)]

    def _status_from(
        self, spec, namespace, flavor, cluster, record, snap, allow_events: bool = True
    ) -> JobStatus:
        prev = record.read_status() or {}
        if prev.get("phase") in TERMINAL:
            return JobStatus.from_json(prev)
        events = None
        expected = len(spec.replica_names)
        if allow_events and flavor == "native" and snap["jobs"] and len(snap["pods"]) < expected:
            events = self._job_events(spec, namespace, cluster)
        status = compute_status(
            spec,
            flavor=flavor,
            namespace=namespace,
            pods=snap["pods"],
            jobs=snap["jobs"],
            tfjob=snap["tfjob"],
            events=events,
            created=prev.get("created"),
        )
        if "parent" in snap and snap["parent"] is None:
            status.phase = STOPPED if prev else status.phase
            status.message = status.message or "the job's objects were deleted from the cluster."
        elif "parent" in snap:
            annotations = snap["parent"]["metadata"].get("annotations") or {}
            age = time.time() - (
                parse_time(snap["parent"]["metadata"].get("creationTimestamp")) or time.time()
            )
            if annotations.get(ANNOTATION_STOPPED):
                status.phase = STOPPED
            elif annotations.get(ANNOTATION_PHASE) in TERMINAL:
                status.phase = annotations[ANNOTATION_PHASE]  # the outcome, noted when the job ended
                status.message = annotations.get(ANNOTATION_MESSAGE) or None
                status.replicas = _stopped_rest(status.replicas)
            elif age > 120 and not snap["pods"] and not snap["jobs"] and not snap["tfjob"]:
                status.phase = STOPPED
                status.message = (
                    "the job's pods and Jobs are gone (ttlSecondsAfterFinished or deleted) and nobody saw it end; "
                    "its outcome is unknown."
                )
        return status

    # Backend interface --------------------------------------------------------------------------
    def get(self, name: str) -> JobStatus:
        spec, namespace, flavor, cluster, record = self._job_context(name)
        prev = record.read_status()
        if prev and prev.get("phase") in TERMINAL:
            return JobStatus.from_json(prev)
        status = self._status_from(
            spec, namespace, flavor, cluster, record, self._snapshot(spec, namespace, flavor, cluster)
        )
        if status.done:
            status = self._finalize(spec, namespace, flavor, cluster, record, status)
        else:
            record.write_status(status.to_json())
        return status

    def spec(self, name: str) -> JobSpec:
        return self._job_context(name)[0]

    def events(self, name: str) -> list[dict]:
        record = self.record(name)
        if not record.exists():
            self._job_context(name)
        return record.read_events()

    def list(self, owner: str | None = None) -> list[JobStatus]:
        """Jobs in the default namespace: one list of parents, of pods and of Jobs (3 requests)."""
        cluster = self.cluster()
        namespace = self.resolve_namespace()
        sel = m.owner_selector(owner)
        ctx = ApiErrorContext("list", "configmaps", namespace)
        parents = cluster.raw(ctx, cluster.core.list_namespaced_config_map, namespace, label_selector=sel)[
            "items"
        ]
        if not parents:
            return []
        pods = cluster.raw(
            ApiErrorContext("list", "pods", namespace),
            cluster.core.list_namespaced_pod,
            namespace,
            label_selector=sel,
        )["items"]
        jobs = cluster.raw(
            ApiErrorContext("list", "jobs", namespace),
            cluster.batch.list_namespaced_job,
            namespace,
            label_selector=sel,
        )["items"]
        if owner is not None:
            # label values cannot hold every user name ('@' is sanitized): compare the exact annotation too
            parents = [cm for cm in parents if _owner_of(cm) == owner]
        me = current_owner()
        out = []
        for cm in parents:
            name = cm["metadata"]["name"]
            record = self.record(name)
            if _owner_of(cm) != me:
                record = JobRecord(name, Path(tempfile.mkdtemp(prefix="tfk8s-foreign-")))  # seen, not adopted
            if not record.exists():
                self._adopt(cm, record)
            prev = record.read_status() or {}
            if prev.get("phase") in TERMINAL:
                out.append(JobStatus.from_json(prev))
                continue
            spec = JobSpec.from_json(record.read_spec())
            flavor = spec.flavor
            mine = [p for p in pods if (p["metadata"].get("labels") or {}).get(m.LABEL_JOB) == name]
            snap = {
                "pods": mine,
                "jobs": [j for j in jobs if (j["metadata"].get("labels") or {}).get(m.LABEL_JOB) == name],
                "tfjob": None,
                "parent": cm,
            }
            if flavor == "tfjob":
                snap = self._snapshot(spec, namespace, flavor, cluster)
                snap["parent"] = cm
            status = self._status_from(spec, namespace, flavor, cluster, record, snap, allow_events=False)
            status.created = parse_time(cm["metadata"].get("creationTimestamp")) or status.created
            out.append(status)
            if record.dir.parent.name.startswith("tfk8s-foreign-"):
                shutil.rmtree(record.dir.parent, ignore_errors=True)
        return out

    def logs(self, name: str, replica: str, tail: int | None = None) -> str:
        spec, namespace, flavor, cluster, record = self._job_context(name)
        if replica not in spec.replica_names:
            raise JobNotFound(
                f"job {name} has no replica {replica}; its replicas are {', '.join(spec.replica_names)}."
            )
        path = record.log_path(replica)
        status = JobStatus.from_json(
            record.read_status() or {"name": name, "backend": self.name, "strategy": ""}
        )
        if not status.done:
            pod = self._pod_of(spec, namespace, cluster, replica)
            if pod is not None:
                try:
                    text = self._read_log(cluster, namespace, pod, tail=tail)
                except (JobNotFound, BackendUnavailable):
                    text = None
                if text is not None:
                    return text
        try:
            text = path.read_text()
        except FileNotFoundError:
            return ""
        if tail is not None:
            text = "\n".join(text.splitlines()[-tail:]) + ("\n" if text else "")
        return text

    def _pod_of(self, spec: JobSpec, namespace: str, cluster: _Cluster, replica: str) -> str | None:
        from .status import replicas_from_pods

        role = replica.rsplit("-", 1)[0]
        pods = cluster.raw(
            ApiErrorContext("list", "pods", namespace),
            cluster.core.list_namespaced_pod,
            namespace,
            label_selector=f"{m.job_selector(spec.name)},{m.LABEL_ROLE}={role}",
        )["items"]
        _, current = replicas_from_pods(spec, pods)
        pod = current.get(replica)
        return pod["metadata"]["name"] if pod else None

    def _read_log(
        self, cluster: _Cluster, namespace: str, pod: str, tail: int | None = None, previous: bool = False
    ) -> str:
        ctx = ApiErrorContext("get", "pods/log", namespace, pod)
        try:
            resp = cluster.call(
                ctx,
                cluster.core.read_namespaced_pod_log,
                pod,
                namespace,
                container=m.CONTAINER,
                tail_lines=tail,
                previous=previous or None,
                _preload_content=False,
            )
        except TFK8sError as e:
            cause = e.__cause__
            if isinstance(cause, ApiException) and cause.status == 400:
                return ""  # not started yet, or no previous container
            raise
        try:
            return resp.data.decode("utf-8", "replace")
        finally:
            resp.release_conn()

    def follow_logs(self, name: str, replica: str, stop: threading.Event) -> Iterator[str]:
        """The replica's log lines as they come, over one follow stream (the record's copy once it is gone)."""
        spec, namespace, _, cluster, record = self._job_context(name)
        if replica not in spec.replica_names:
            raise JobNotFound(
                f"job {name} has no replica {replica}; its replicas are {', '.join(spec.replica_names)}."
            )
        resp = None
        while not stop.is_set() and resp is None:
            status = record.read_status() or {}
            if status.get("phase") in TERMINAL:
                break
            pod = self._pod_of(spec, namespace, cluster, replica)
            if pod is not None:
                try:
                    resp = cluster.call(
                        ApiErrorContext("get", "pods/log", namespace, pod),
                        cluster.core.read_namespaced_pod_log,
                        pod,
                        namespace,
                        container=m.CONTAINER,
                        follow=True,
                        _preload_content=False,
                    )
                    break
                except TFK8sError as e:
                    cause = e.__cause__
                    if not (isinstance(cause, ApiException) and cause.status == 400):
                        raise  # 400: the container has not started yet
            stop.wait(1.0)
        if resp is None:
            if not stop.is_set():
                yield from self.logs(name, replica).splitlines()
            return
        try:
            with _closed_when(stop, resp):
                yield from iter_lines(resp)
        except Exception:
            if not stop.is_set():
                raise
        finally:
            resp.release_conn()
            resp.close()

    def stop(self, name: str) -> JobStatus:
        spec, namespace, flavor, cluster, record = self._job_context(name)
        status = self.get(name)
        if status.done:
            return status
        self._capture_logs(spec, namespace, cluster, record)
        try:
            cluster.raw(
                ApiErrorContext("patch", "configmaps", namespace, name),
                cluster.core.patch_namespaced_config_map,
                name,
                namespace,
                {"metadata": {"annotations": {ANNOTATION_STOPPED: "true"}}},
            )
        except JobNotFound:
            pass
        self._remove_replicas(spec, namespace, flavor, cluster, every=True)
        status.phase = STOPPED
        status.finished = time.time()
        status.message = None
        status.replicas = _stopped_rest(status.replicas)
        record.write_status(status.to_json())
        return status

    def delete(self, name: str) -> None:
        record = self.record(name)
        try:
            spec, namespace, flavor, cluster, record = self._job_context(name)
        except JobNotFound:
            if record.exists():
                record.delete()
                return
            raise
        try:
            cluster.raw(
                ApiErrorContext("delete", "configmaps", namespace, name),
                cluster.core.delete_namespaced_config_map,
                name,
                namespace,
                body={"propagationPolicy": "Background"},
            )
        except JobNotFound:
            if not record.exists():
                raise
        record.delete()

    # lifecycle ----------------------------------------------------------------------------------
    @staticmethod
    def _job_pods(spec: JobSpec, namespace: str, cluster: _Cluster) -> list[dict]:
        """Every pod of the job (one list request)."""
        return cluster.raw(
            ApiErrorContext("list", "pods", namespace),
            cluster.core.list_namespaced_pod,
            namespace,
            label_selector=m.job_selector(spec.name),
        )["items"]

    def _capture_logs(self, spec: JobSpec, namespace: str, cluster: _Cluster, record: JobRecord) -> None:
        """Copy every replica's log into the record (kept after the pods are gone)."""
        try:
            pods = self._job_pods(spec, namespace, cluster)
        except TFK8sError:
            return
        from .status import replicas_from_pods

        _, current = replicas_from_pods(spec, pods)
        for replica, pod in current.items():
            try:
                text = self._read_log(cluster, namespace, pod["metadata"]["name"])
            except TFK8sError:
                continue
            if text or not record.log_path(replica).exists():
                path = record.log_path(replica)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)

    def _await_replicas_ended(self, spec: JobSpec, namespace: str, cluster: _Cluster) -> None:
        """Wait up to :data:`FINISH_GRACE` seconds for every pod of the job to end on its own."""
        deadline = time.monotonic() + FINISH_GRACE
        while True:
            try:
                pods = self._job_pods(spec, namespace, cluster)
            except TFK8sError:
                return
            if all((p.get("status") or {}).get("phase") in ("Succeeded", "Failed") for p in pods):
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(0.5)

    def _remove_replicas(
        self, spec: JobSpec, namespace: str, flavor: str, cluster: _Cluster, every: bool
    ) -> None:
        """Delete the replicas still running (native: their Jobs; tfjob: the TFJob when ``every``)."""
        if flavor == "tfjob":
            if every:
                self._delete_obj(cluster, "TFJob", spec.name, namespace)
            return  # cleanPodPolicy Running removes the rest
        for r in spec.replicas:
            if every or r.role != spec.reporting_replica.rsplit("-", 1)[0]:
                self._delete_obj(cluster, "Job", f"{spec.name}-{r.role}", namespace)

    def _finalize(self, spec, namespace, flavor, cluster, record, status: JobStatus) -> JobStatus:
        """Once the job is done: capture every log, then remove what still runs; persist the final status."""
        with self._lock:
            if spec.name in self._finalizing:
                return status
            self._finalizing.add(spec.name)
        try:
            prev = record.read_status() or {}
            if prev.get("phase") in TERMINAL:
                return JobStatus.from_json(prev)
            if status.phase == SUCCEEDED and flavor != "tfjob":
                self._await_replicas_ended(spec, namespace, cluster)
            self._capture_logs(spec, namespace, cluster, record)
            # the reporting replica's log holds the protocol: keep every event even if no one followed it
            text = ""
            try:
                text = record.log_path(spec.reporting_replica).read_text()
            except FileNotFoundError:
                pass
            record.append_events([e for e in map(parse_line, text.splitlines()) if e])
            try:
                self._remove_replicas(spec, namespace, flavor, cluster, every=status.phase != SUCCEEDED)
            except TFK8sError:
                pass  # ttlSecondsAfterFinished and the ps watchdog clean up anyway
            status.finished = status.finished or time.time()
            status.replicas = _stopped_rest(status.replicas)
            record.write_status(status.to_json())
            try:  # note the outcome on the parent, for clients that attach after the Jobs' TTL
                cluster.raw(
                    ApiErrorContext("patch", "configmaps", namespace, spec.name),
                    cluster.core.patch_namespaced_config_map,
                    spec.name,
                    namespace,
                    {
                        "metadata": {
                            "annotations": {
                                ANNOTATION_PHASE: status.phase,
                                ANNOTATION_MESSAGE: (status.message or "")[:1000],
                            }
                        }
                    },
                )
            except TFK8sError:
                pass
            return status
        finally:
            with self._lock:
                self._finalizing.discard(spec.name)

    # following a job ----------------------------------------------------------------------------
    def watch(
        self, name: str, on_status: StatusCallback, on_events: EventsCallback, stop: threading.Event
    ) -> None:
        """One pod watch per job (label selector), resumed from the last resourceVersion, relisted after
        410 Gone; one log stream on the reporting replica for the metrics."""
        spec, namespace, flavor, cluster, record = self._job_context(name)
        prev = record.read_status()
        if prev and prev.get("phase") in TERMINAL:
            new = record.read_events()
            if new:
                on_events(new)
            on_status(JobStatus.from_json(prev))
            return
        follower = _JobFollower(self, spec, namespace, flavor, cluster, record, on_status, on_events, stop)
        follower.run()


class _JobFollower:
    """State of one ``watch`` call: the pods seen, the last resourceVersion, the log follower thread."""

    def __init__(self, backend, spec, namespace, flavor, cluster, record, on_status, on_events, stop):
        self.b = backend
        self.spec, self.namespace, self.flavor, self.cluster, self.record = (
            spec,
            namespace,
            flavor,
            cluster,
            record,
        )
        self.on_status, self.on_events, self.stop = on_status, on_events, stop
        self.pods: dict[str, dict] = {}
        self.jobs: list[dict] = []
        self.tfjob: dict | None = None
        self.rv: str | None = None
        self.seen_events: set = set()
        self.events_lock = threading.Lock()
        self.log_done = threading.Event()
        self.log_opened = threading.Event()  # a log stream of the reporting replica was opened once
        self.pods_changed = threading.Condition()
        self.watch_requests = 0
        self.relists = 0
        self.parent_gone = False
        self.names = spec.replica_names
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
        self.created = (record.read_status() or {}).get("created")
        self.job_events: list[dict] | None = None
        self.metrics_error: str | None = None

    # status -------------------------------------------------------------------------------------
    def _recompute(self, replica: str) -> None:
        role, index = replica.rsplit("-", 1)
        # a new object, never mutated: statuses already handed out stay consistent snapshots
        new, _ = replica_from_pods(role, int(index), list(self.by_replica[replica].values()))
        if new != self.rstatus.get(replica):
            self.rstatus[replica] = new
            self.version += 1

    def relist(self) -> None:
        snap = self.b._snapshot(self.spec, self.namespace, self.flavor, self.cluster)
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
        self.jobs, self.tfjob = self.b._owners(self.spec, self.namespace, self.flavor, self.cluster)
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
            if self.metrics_error and not status.message:
                status.message = self.metrics_error
            if self.parent_gone:
                status.phase = STOPPED
                status.message = status.message or "the job's objects were deleted from the cluster."
        if status.done and status.phase != STOPPED:
            # the metric stream reads the reporting replica to its end first (if it ever started)
            self.log_done.wait(30 if self.log_opened.is_set() else 2)
            status = self.b._finalize(
                self.spec, self.namespace, self.flavor, self.cluster, self.record, status
            )
        self.last_status = status
        sig = (status.phase, status.message, self.version)
        if sig != self.last_sig:
            self.last_sig = sig
            self.unwritten = None if status.done else status
            self.on_status(status)
        now = time.monotonic()
        if self.unwritten is not None and (force_write or now - self.last_write >= 1.0):
            self.record.write_status(self.unwritten.to_json())  # at most once a second while running
            self.last_write, self.unwritten = now, None
        return status

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
        """Native jobs whose Jobs exist but not every pod does (the Job controller may be refused)."""
        return self.flavor == "native" and bool(self.jobs) and len(self.pods) < len(self.names)

    def _stopped_elsewhere(self) -> bool:
        prev = self.record.read_status() or {}
        return prev.get("phase") in TERMINAL

    def run(self) -> None:
        log_thread = threading.Thread(
            target=self.follow_metrics, name=f"tfk8s-log-{self.spec.name}", daemon=True
        )
        stop_logs = threading.Event()
        self.stop_logs = stop_logs
        backoff = 0.2
        try:
            self.relist()
            log_thread.start()
            if self.publish().done:
                return
            while not self.stop.is_set():
                try:
                    if self.rv is None:
                        self.relist()
                        if self.publish().done:
                            return
                    expired = self.stream_once()
                    if self.pods_missing():
                        self.job_events = self.b._job_events(self.spec, self.namespace, self.cluster)
                        self.version += 1
                    backoff = 0.2
                    if expired:
                        self.rv = None
                except (Forbidden, JobNotFound):
                    raise  # retrying cannot help: the caller shows the sentence
                except (TFK8sError, urllib3.exceptions.HTTPError, OSError, ValueError):
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
                self.record.write_status(self.unwritten.to_json())

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
        try:
            with _closed_when(self.stop, resp):
                for line in iter_lines(resp):
                    if not line.strip():
                        continue
                    if not self.handle_event(json.loads(line)):
                        return True
                    if self.publish().done or self.stop.is_set():
                        return False
        except Exception:
            if self.stop.is_set():
                return False  # we closed the stream to stop promptly
            raise
        finally:
            resp.release_conn()
            resp.close()
        return False

    # metrics ------------------------------------------------------------------------------------
    def reporting_pod(self) -> tuple[str, int, bool] | None:
        """(pod name, restart count, container ended) of the reporting replica, once it has started."""
        from .status import replicas_from_pods

        with self.pods_changed:
            pods = list(self.pods.values())
        _, current = replicas_from_pods(self.spec, pods)
        pod = current.get(self.spec.reporting_replica)
        if pod is None:
            return None
        status = pod.get("status") or {}
        cs = (status.get("containerStatuses") or [{}])[0]
        state = cs.get("state") or {}
        if not ("running" in state or "terminated" in state or cs.get("restartCount")):
            return None
        ended = status.get("phase") in ("Succeeded", "Failed")
        return pod["metadata"]["name"], int(cs.get("restartCount") or 0), ended

    def deliver(self, lines) -> None:
        events = [e for e in map(parse_line, lines) if e]
        if not events:
            return
        with self.events_lock:
            new = self.record.append_events(events, self.seen_events)
        if new:
            self.on_events(new)
            if self.flavor == "tfjob" and any(e.get("type") == "end" for e in new):
                # the operator removes running replicas the moment the chief exits: copy their logs now
                threading.Thread(
                    target=self.b._capture_logs,
                    args=(self.spec, self.namespace, self.cluster, self.record),
                    daemon=True,
                ).start()

    def follow_metrics(self) -> None:
        """Follow the reporting replica's log; after a drop re-read it and keep only unseen (run, seq)."""
        with self.events_lock:
            self.seen_events.update(event_key(e) for e in self.record.read_events())
        read_restarts: dict[str, int] = {}
        backoff = 0.2
        try:
            while not self.stop_logs.is_set():
                target = self.reporting_pod()
                if target is None:
                    with self.pods_changed:
                        self.pods_changed.wait(1.0)
                    continue
                pod, restarts, ended = target
                if read_restarts.get(pod, restarts) < restarts:
                    # the container restarted since we last read it: the previous one's tail may be unread
                    self.deliver(
                        self.b._read_log(self.cluster, self.namespace, pod, previous=True).splitlines()
                    )
                read_restarts[pod] = restarts
                try:
                    resp = self.cluster.call(
                        ApiErrorContext("get", "pods/log", self.namespace, pod),
                        self.cluster.core.read_namespaced_pod_log,
                        pod,
                        self.namespace,
                        container=m.CONTAINER,
                        follow=True,
                        _preload_content=False,
                        _request_timeout=(10, READ_TIMEOUT),
                    )
                    self.log_opened.set()
                    log_path = self.record.log_path(self.spec.reporting_replica)
                    log_path.parent.mkdir(parents=True, exist_ok=True)
                    # the log is re-read whole on every (re)connect: rewrite the copy, never append twice
                    try:
                        with _closed_when(self.stop_logs, resp), open(log_path, "w") as copy:
                            batch: list[str] = []
                            for line in iter_lines(resp):
                                copy.write(line + "\n")
                                batch.append(line)
                                if len(batch) >= 50 or "@tfk8s" in line:
                                    copy.flush()
                                    self.deliver(batch)
                                    batch = []
                                if self.stop_logs.is_set():
                                    break
                            self.deliver(batch)
                    finally:
                        resp.release_conn()
                        resp.close()
                    backoff = 0.2
                    # the stream ended: the container ended (or the connection was cut); ended pods are done
                    if ended or self._pod_ended(pod):
                        return
                except Forbidden as e:
                    self.metrics_error = f"no metrics: {e}"
                    self.version += 1
                    return
                except (TFK8sError, urllib3.exceptions.HTTPError, OSError):
                    pass
                if self.stop_logs.wait(backoff):
                    return
                backoff = min(backoff * 2, 5.0)
        finally:
            self.log_done.set()

    def _pod_ended(self, pod: str) -> bool:
        with self.pods_changed:
            obj = self.pods.get(pod)
        if obj is None:
            return True
        return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class _closed_when:
    """Close a streaming response as soon as ``stop`` is set, so a blocked read returns at once."""

    def __init__(self, stop: threading.Event, resp):
        self.stop, self.resp, self.done = stop, resp, threading.Event()

    def _wait(self) -> None:
        while not self.done.is_set():
            if self.stop.wait(0.2):
                # closing alone does not wake a thread blocked in recv(); shutting the socket down does
                conn = getattr(self.resp, "connection", None) or getattr(self.resp, "_connection", None)
                sock = getattr(conn, "sock", None)
                try:
                    if sock is not None:
                        sock.shutdown(socket.SHUT_RDWR)
                    self.resp.close()
                except Exception:
                    pass
                return

    def __enter__(self) -> _closed_when:
        threading.Thread(target=self._wait, name="tfk8s-stream-stop", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()


def _owner_of(obj: dict) -> str | None:
    """The exact owner of a job's object (the annotation; the label is sanitized)."""
    meta = obj.get("metadata") or {}
    return (meta.get("annotations") or {}).get(m.ANNOTATION_OWNER) or (meta.get("labels") or {}).get(
        m.LABEL_OWNER
    )


def _stopped_rest(replicas: list[ReplicaStatus]) -> list[ReplicaStatus]:
    """Replicas that had not ended are ``stopped``: copies, since delivered statuses share these objects."""
    return [r if r.state in ("succeeded", "failed") else replace(r, state="stopped") for r in replicas]


def _terminated(pod: dict) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    return any("terminated" in (cs.get("state") or {}) for cs in status.get("containerStatuses") or [])
