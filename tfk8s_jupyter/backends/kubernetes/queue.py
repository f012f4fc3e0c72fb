"""A queued job (``--queue``: Kueue) as Kueue sees it: its place in the LocalQueue and why it waits.

A job submitted with ``--queue Q`` carries the label ``kueue.x-k8s.io/queue-name: Q`` on its Jobs (native)
or its TFJob, created suspended. Kueue makes one ``Workload`` per such object (label
``kueue.x-k8s.io/job-uid: <uid>``, owned by it) and admits it by unsuspending the object; until then the
job's status is "queued" (:data:`.status.QUEUED`). This module adds what Kueue reports:

- the position: Kueue's on-demand visibility API (``visibility.kueue.x-k8s.io``, Kueue 0.6+), ``GET
  /apis/visibility.kueue.x-k8s.io/<v>/namespaces/<ns>/localqueues/<q>/pendingworkloads`` answers a
  ``PendingWorkloadsSummary`` whose items carry ``positionInLocalQueue`` (from 0) and the owning object's
  ``ownerReferences``. A job of several Jobs (PS: chief, ps, worker) starts once its last Workload is
  admitted, so its position is its Workloads' largest one, counted from 1 for the user;
- the reason: the Workload's ``QuotaReserved`` condition (``Pending``: e.g. "insufficient unused quota for
  cpu in flavor default-flavor, 1 more needed"; ``Inadmissible``: e.g. the LocalQueue does not exist), and
  ``Admitted`` once admitted (the pods are on their way: the job is "pending" again, not "queued").

Both reads are optional: the Role ``tfk8s-jobs`` does not grant them; each is asked only when a
``SelfSubjectAccessReview`` says it is allowed (an administrator may bind ``list workloads`` and ``get
localqueues/pendingworkloads``: see ``deploy/README.md``), and only when the cluster serves the API (API
discovery). Without them a queued job still shows "queued", without a position. Answers are kept a few
seconds, so a follower publishing often costs no extra requests.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from ..base import PENDING, TFK8sError
from .connection import Cluster
from .errors import ApiErrorContext
from .manifests import LABEL_KUEUE_QUEUE
from .status import QUEUED

KUEUE_GROUP = "kueue.x-k8s.io"
VISIBILITY_GROUP = "visibility.kueue.x-k8s.io"
LABEL_JOB_UID = "kueue.x-k8s.io/job-uid"  # Kueue's label on the Workload of a Job / TFJob
DISCOVERY_TTL = 60.0  # seconds API discovery and access reviews are kept
ANSWER_TTL = 2.0  # seconds a job's queue state is kept

__all__ = ["LABEL_KUEUE_QUEUE", "QueueState", "describe", "queue_state", "queued_message"]


@dataclass
class QueueState:
    """What Kueue reports about a queued job."""

    position: int | None = None  # in the LocalQueue, from 1 (None: not reported)
    cluster_position: int | None = None  # in the ClusterQueue, from 1
    reason: str | None = None  # Kueue's sentence on why it waits
    inadmissible: bool = False  # Kueue cannot admit it as it is (e.g. no such LocalQueue)
    admitted: bool = False  # every Workload admitted: the objects are being unsuspended
    workloads: int = 0  # Workloads found


_lock = threading.Lock()
_apis: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Cluster -> (time, {group: version})
# Cluster -> {namespace: (time, may list workloads, may get pendingworkloads)}
_access: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Cluster -> {(namespace, job): (time, state)}; entries older than ANSWER_TTL dropped as new ones come
_answers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def served_versions(cluster: Cluster) -> dict[str, str]:
    """``{group: preferred version}`` of Kueue's two API groups the cluster serves (API discovery)."""
    with _lock:
        cached = _apis.get(cluster)
    if cached and time.monotonic() - cached[0] < DISCOVERY_TTL:
        return cached[1]
    groups = cluster.raw(
        ApiErrorContext("get", "apis", None), k8s.ApisApi(cluster.api_client).get_api_versions
    )
    out = {
        g["name"]: (g.get("preferredVersion") or g["versions"][0])["version"]
        for g in groups.get("groups") or []
        if g.get("name") in (KUEUE_GROUP, VISIBILITY_GROUP)
        and (g.get("preferredVersion") or g.get("versions"))
    }
    with _lock:
        _apis[cluster] = (time.monotonic(), out)
    return out


def _allowed(cluster: Cluster, namespace: str) -> tuple[bool, bool]:
    """(may list Workloads, may get the LocalQueue's pending workloads) in ``namespace``: two reviews."""
    from .preflight import can

    with _lock:
        cached = _access.get(cluster, {}).get(namespace)
    if cached and time.monotonic() - cached[0] < DISCOVERY_TTL:
        return cached[1], cached[2]
    workloads = can(cluster, "list", KUEUE_GROUP, "workloads", namespace)
    pending = can(cluster, "get", VISIBILITY_GROUP, "localqueues", namespace, sub="pendingworkloads")
    with _lock:
        _access.setdefault(cluster, {})[namespace] = (time.monotonic(), workloads, pending)
    return workloads, pending


def _get_path(api_client: k8s.ApiClient, path: str, _preload_content: bool = False, **_):
    """A GET of ``path`` (a subresource the generated client has no method for), the raw response."""
    method, url, headers, body, post = api_client.param_serialize(
        "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
    )
    resp = api_client.call_api(method, url, headers, body, post, _request_timeout=(10, 30))
    if not 200 <= resp.status <= 299:
        resp.read()
        raise ApiException.from_response(http_resp=resp, body=None, data=None)
    return resp.response


def _condition(workload: dict, kind: str) -> dict | None:
    return next(
        (c for c in (workload.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None
    )


def queue_state(cluster: Cluster, namespace: str, queue: str, owners: list[dict]) -> QueueState | None:
    """What Kueue reports about the job whose suspended objects are ``owners`` (its Jobs or its TFJob).

    Returns ``None`` when Kueue is not served or its reads are not allowed to the user.
    """
    uids = {o["metadata"]["uid"] for o in owners if (o.get("metadata") or {}).get("uid")}
    if not uids:
        return None
    versions = served_versions(cluster)
    if KUEUE_GROUP not in versions:
        return None
    may_list, may_see_queue = _allowed(cluster, namespace)
    if not may_list and not may_see_queue:
        return None
    state = QueueState()
    names: set[str] = set()
    if may_list:
        api = k8s.CustomObjectsApi(cluster.api_client)
        workloads = cluster.raw(
            ApiErrorContext("list", "workloads", namespace),
            api.list_namespaced_custom_object,
            KUEUE_GROUP,
            versions[KUEUE_GROUP],
            namespace,
            "workloads",
            label_selector=f"{LABEL_JOB_UID} in ({','.join(sorted(uids))})",
        ).get("items", [])
        state.workloads = len(workloads)
        names = {w["metadata"]["name"] for w in workloads}
        admitted = [w for w in workloads if (_condition(w, "Admitted") or {}).get("status") == "True"]
        state.admitted = bool(workloads) and len(admitted) == len(workloads)
        for w in sorted(workloads, key=lambda w: w["metadata"]["name"]):
            cond = _condition(w, "QuotaReserved") or {}
            if cond.get("status") == "False" and cond.get("message"):
                state.reason = state.reason or cond["message"].strip().rstrip(".")
                state.inadmissible = state.inadmissible or cond.get("reason") == "Inadmissible"
    if may_see_queue and VISIBILITY_GROUP in versions and not state.admitted:
        path = (
            f"/apis/{VISIBILITY_GROUP}/{versions[VISIBILITY_GROUP]}/namespaces/{namespace}"
            f"/localqueues/{queue}/pendingworkloads"
        )
        try:
            summary = cluster.raw(
                ApiErrorContext("get", "localqueues/pendingworkloads", namespace, queue),
                _get_path,
                cluster.api_client,
                path,
            )
        except TFK8sError:
            summary = {}  # no such LocalQueue, or the visibility server is down: no position
        mine = [
            item
            for item in summary.get("items") or []
            if item.get("metadata", {}).get("name") in names
            or any(ref.get("uid") in uids for ref in item.get("metadata", {}).get("ownerReferences") or [])
        ]
        if mine:
            state.position = max(int(i.get("positionInLocalQueue") or 0) for i in mine) + 1
            state.cluster_position = max(int(i.get("positionInClusterQueue") or 0) for i in mine) + 1
    return state


def queued_message(queue: str, namespace: str, state: QueueState | None) -> str:
    """The queued job's one sentence."""
    if state is None or (state.position is None and not state.reason):
        return f"queued: waiting for Kueue to admit it from queue {queue} (the cluster starts it then)."
    if state.inadmissible:
        return (
            f"queued, but Kueue cannot admit it from queue {queue} ({state.reason}); fix the queue (kubectl get "
            f"localqueues -n {namespace}) or stop the job and submit it with another --queue."
        )
    if state.position is None:
        return f"queued: waiting for Kueue to admit it from queue {queue} ({state.reason})."
    ahead = state.position - 1
    detail = f"{ahead} job{'s' if ahead != 1 else ''} ahead" + (
        f"; Kueue: {state.reason}" if state.reason else ""
    )
    return f"queued: position {state.position} in Kueue queue {queue} ({detail}); it starts once Kueue admits it."


def describe(job, status, jobs: list[dict] | None, tfjob: dict | None):
    """``status`` with Kueue's position and reason when the job is queued (a :class:`~.job_objects.JobRef`).

    A job Kueue has admitted whose objects still read suspended is "pending" (its pods are on their way).
    Errors never fail a status: the job then shows "queued" without a position.
    """
    if status.phase != QUEUED or not job.spec.queue:
        return status
    key = (job.namespace, job.spec.name)
    with _lock:
        cached = _answers.get(job.cluster, {}).get(key)
    if cached and time.monotonic() - cached[0] < ANSWER_TTL:
        state = cached[1]
    else:
        owners = [tfjob] if tfjob else list(jobs or [])
        try:
            state = queue_state(job.cluster, job.namespace, job.spec.queue, owners)
        except TFK8sError:
            state = None
        with _lock:
            answers = _answers.setdefault(job.cluster, {})
            now = time.monotonic()
            for old in [k for k, (t, _) in answers.items() if now - t >= ANSWER_TTL]:
                del answers[old]
            answers[key] = (now, state)
    if state is not None and state.admitted:
        status.phase = PENDING
        status.message = f"admitted by Kueue from queue {job.spec.queue}; its pods are starting."
        return status
    if not status.message or status.message.startswith("queued"):
        status.message = queued_message(job.spec.queue, job.namespace, state)
    return status
