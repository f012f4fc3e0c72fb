"""A test Kueue beside the test API server: the part of Kueue (v0.6+) a queued job meets.

- Job integration: a ``batch/v1`` Job or a ``kubeflow.org/v1`` TFJob created suspended with the label
  ``kueue.x-k8s.io/queue-name`` gets a ``Workload`` (``kueue.x-k8s.io/v1beta1``) named
  ``<kind>-<name>-<hash>`` in its namespace, owned by it (deleted with it), labelled
  ``kueue.x-k8s.io/job-uid: <uid>``, ``spec.queueName`` and one pod set per role with its count.
- One ClusterQueue behind every LocalQueue, with a quota of ``quota_pods`` pods and StrictFIFO order (priority,
  then creation): the head Workload is admitted when its pods fit (``QuotaReserved`` and ``Admitted`` True,
  ``status.admission``), and its Job / TFJob is unsuspended, as Kueue does; a pending one carries
  ``QuotaReserved`` False, reason ``Pending`` and Kueue's sentence ("couldn't assign flavors to pod set …:
  insufficient unused quota for pods in flavor default-flavor, N more needed"); a Workload of a LocalQueue
  that does not exist is ``Inadmissible``. A finished (Complete/Failed/Succeeded) or deleted object frees
  its quota (``Finished`` True) and the next one is admitted.
- The visibility API: ``GET /apis/visibility.kueue.x-k8s.io/v1beta1/namespaces/<ns>/localqueues/<q>/
  pendingworkloads`` answers a ``PendingWorkloadsSummary`` (items with ``positionInClusterQueue`` and
  ``positionInLocalQueue`` from 0, ``localQueueName``, ``priority``, and ``metadata`` with the owning
  object's ``ownerReferences``), ``limit`` / ``offset`` honoured; 404 for a LocalQueue that does not exist.
"""

from __future__ import annotations

import hashlib
import queue
import threading

from apiserver import ApiError, ApiServer, WatchEvent, now_rfc3339

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
GROUP = "kueue.x-k8s.io"
FLAVOR = "default-flavor"
CLUSTER_QUEUE = "cluster-queue"


def _suspended(group: str, obj: dict) -> bool:
    spec = obj.get("spec") or {}
    if group == "kubeflow.org":
        return bool((spec.get("runPolicy") or {}).get("suspend"))
    return bool(spec.get("suspend"))


def _finished(obj: dict) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed", "Succeeded") and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def _pod_sets(group: str, obj: dict) -> list[dict]:
    spec = obj["spec"]
    if group == "kubeflow.org":
        return [
            {"name": role.lower(), "count": int(rs.get("replicas", 1)), "template": rs["template"]}
            for role, rs in spec["tfReplicaSpecs"].items()
        ]
    return [{"name": "main", "count": int(spec.get("parallelism", 1)), "template": spec["template"]}]


class TestKueue:
    """Kueue's controller and visibility API for one :class:`ApiServer`; ``start()`` / ``stop()``."""

    __test__ = False

    def __init__(self, server: ApiServer, quota_pods: int = 0, visibility: bool = True):
        self.server, self.store = server, server.store
        self.quota_pods = quota_pods
        self.visibility = visibility
        self.admitted: list[str] = []  # Workloads admitted, in order
        self.events: queue.Queue = queue.Queue()
        self.lock = threading.RLock()
        self.thread = threading.Thread(target=self._loop, name="test-kueue", daemon=True)

    def start(self) -> TestKueue:
        self.server.kueue = True
        if self.visibility:
            self.server.visibility = self.pending_workloads
        self.store.subscribers.append(self.events.put)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.events.put in self.store.subscribers:
            self.store.subscribers.remove(self.events.put)
        self.events.put(None)
        self.thread.join(5)
        self.server.visibility = None

    def set_quota(self, pods: int) -> None:
        """The ClusterQueue's quota, in pods; admits what now fits."""
        with self.lock:
            self.quota_pods = pods
        self.events.put("reconcile")

    def add_local_queue(self, namespace: str, name: str) -> None:
        self.store.create(
            GROUP,
            "localqueues",
            {
                "apiVersion": f"{GROUP}/v1beta1",
                "kind": "LocalQueue",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"clusterQueue": CLUSTER_QUEUE},
            },
        )

    # controller ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            ev = self.events.get()
            if ev is None:
                return
            try:
                if isinstance(ev, WatchEvent):
                    self._on_event(ev)
                self._reconcile()
            except ApiError:
                pass  # the object went away meanwhile

    def _on_event(self, ev: WatchEvent) -> None:
        if (ev.group, ev.resource) not in (("batch", "jobs"), ("kubeflow.org", "tfjobs")):
            return
        obj = ev.obj
        meta = obj["metadata"]
        queue_name = (meta.get("labels") or {}).get(QUEUE_LABEL)
        if not queue_name:
            return
        workload = self._workload_of(meta["namespace"], meta["uid"])
        if ev.type == "ADDED" and workload is None and _suspended(ev.group, obj):
            self._create_workload(ev.group, obj, queue_name)
        elif ev.type == "MODIFIED" and workload is not None and _finished(obj):
            self._set_condition(workload, "Finished", "True", "JobFinished", "Job finished")

    def _workload_of(self, namespace: str, uid: str) -> dict | None:
        items, _ = self.store.list(GROUP, "workloads", namespace, f"{JOB_UID_LABEL}={uid}")
        return items[0] if items else None

    def _create_workload(self, group: str, obj: dict, queue_name: str) -> None:
        meta = obj["metadata"]
        kind = obj.get("kind") or ("TFJob" if group == "kubeflow.org" else "Job")
        digest = hashlib.sha1(f"{meta['name']}/{kind}".encode()).hexdigest()[:5]
        self.store.create(
            GROUP,
            "workloads",
            {
                "apiVersion": f"{GROUP}/v1beta1",
                "kind": "Workload",
                "metadata": {
                    "name": f"{kind.lower()}-{meta['name']}-{digest}",
                    "namespace": meta["namespace"],
                    "labels": {JOB_UID_LABEL: meta["uid"]},
                    "ownerReferences": [
                        {
                            "apiVersion": "kubeflow.org/v1" if group == "kubeflow.org" else "batch/v1",
                            "kind": kind,
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {
                    "queueName": queue_name,
                    "podSets": _pod_sets(group, obj),
                    "priority": 0,
                    "active": True,
                },
                "status": {},
            },
        )

    def _set_condition(self, workload: dict, kind: str, status: str, reason: str, message: str) -> dict:
        meta = workload["metadata"]

        def mutate(obj):
            conditions = [c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] != kind]
            conditions.append(
                {
                    "type": kind,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": now_rfc3339(),
                }
            )
            obj.setdefault("status", {})["conditions"] = conditions

        return self.store.update(GROUP, "workloads", meta["namespace"], meta["name"], mutate)

    @staticmethod
    def _cond(workload: dict, kind: str) -> bool:
        return any(
            c["type"] == kind and c["status"] == "True"
            for c in (workload.get("status") or {}).get("conditions") or []
        )

    @staticmethod
    def _pods(workload: dict) -> int:
        return sum(int(ps["count"]) for ps in workload["spec"]["podSets"])

    def _ordered_pending(self) -> list[dict]:
        """Pending Workloads of the ClusterQueue, in StrictFIFO order."""
        workloads, _ = self.store.list(GROUP, "workloads", None)
        pending = [
            w for w in workloads if not self._cond(w, "QuotaReserved") and not self._cond(w, "Finished")
        ]
        return sorted(
            pending,
            key=lambda w: (
                -int(w["spec"].get("priority") or 0),
                w["metadata"]["creationTimestamp"],
                int(w["metadata"]["resourceVersion"]),
            ),
        )

    def _reconcile(self) -> None:
        with self.lock:
            workloads, _ = self.store.list(GROUP, "workloads", None)
            used = sum(
                self._pods(w)
                for w in workloads
                if self._cond(w, "QuotaReserved") and not self._cond(w, "Finished")
            )
            blocked = False
            for w in self._ordered_pending():
                ns, lq = w["metadata"]["namespace"], w["spec"]["queueName"]
                if self.store.get(GROUP, "localqueues", ns, lq) is None:
                    self._pending(w, "Inadmissible", f"LocalQueue {lq} doesn't exist")
                    continue
                need = self._pods(w)
                if blocked or used + need > self.quota_pods:
                    blocked = True  # StrictFIFO: nothing behind the head is admitted before it
                    more = used + need - self.quota_pods
                    self._pending(
                        w,
                        "Pending",
                        f"couldn't assign flavors to pod set {w['spec']['podSets'][0]['name']}: insufficient "
                        f"unused quota for pods in flavor {FLAVOR}, {more} more needed",
                    )
                    continue
                used += need
                self._admit(w)

    def _pending(self, workload: dict, reason: str, message: str) -> None:
        for c in (workload.get("status") or {}).get("conditions") or []:
            if c["type"] == "QuotaReserved" and (c["reason"], c["message"]) == (reason, message):
                return  # unchanged: no event
        self._set_condition(workload, "QuotaReserved", "False", reason, message)

    def _admit(self, workload: dict) -> None:
        meta = workload["metadata"]
        self.admitted.append(meta["name"])

        def admission(obj):
            obj["status"]["admission"] = {
                "clusterQueue": CLUSTER_QUEUE,
                "podSetAssignments": [
                    {"name": ps["name"], "count": ps["count"], "flavors": {"pods": FLAVOR}}
                    for ps in obj["spec"]["podSets"]
                ],
            }

        self.store.update(GROUP, "workloads", meta["namespace"], meta["name"], admission)
        workload = self._set_condition(
            workload,
            "QuotaReserved",
            "True",
            "QuotaReserved",
            f"Quota reserved in ClusterQueue {CLUSTER_QUEUE}",
        )
        self._set_condition(workload, "Admitted", "True", "Admitted", "The workload is admitted")
        owner = meta["ownerReferences"][0]
        if owner["kind"] == "TFJob":

            def unsuspend(obj):
                obj["spec"].setdefault("runPolicy", {})["suspend"] = False

            self.store.update("kubeflow.org", "tfjobs", meta["namespace"], owner["name"], unsuspend)
        else:

            def unsuspend(obj):
                obj["spec"]["suspend"] = False

            self.store.update("batch", "jobs", meta["namespace"], owner["name"], unsuspend)

    # visibility API ------------------------------------------------------------------------------
    def pending_workloads(self, namespace: str, local_queue: str, query: dict) -> dict:
        """The ``PendingWorkloadsSummary`` of one LocalQueue."""
        if self.store.get(GROUP, "localqueues", namespace, local_queue) is None:
            raise ApiError(
                404,
                f'localqueues.{GROUP} "{local_queue}" not found',
                details={"name": local_queue, "kind": "localqueues"},
            )
        with self.lock:
            ordered = [
                w
                for w in self._ordered_pending()
                if self.store.get(GROUP, "localqueues", w["metadata"]["namespace"], w["spec"]["queueName"])
            ]
        items, in_local = [], 0
        for cq_position, w in enumerate(ordered):
            meta = w["metadata"]
            if (meta["namespace"], w["spec"]["queueName"]) != (namespace, local_queue):
                continue
            items.append(
                {
                    "metadata": {
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "creationTimestamp": meta["creationTimestamp"],
                        "ownerReferences": [
                            {k: r[k] for k in ("apiVersion", "kind", "name", "uid")}
                            for r in meta["ownerReferences"]
                        ],
                    },
                    "priority": int(w["spec"].get("priority") or 0),
                    "localQueueName": local_queue,
                    "positionInClusterQueue": cq_position,
                    "positionInLocalQueue": in_local,
                }
            )
            in_local += 1
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 1000))
        return {
            "kind": "PendingWorkloadsSummary",
            "apiVersion": "visibility.kueue.x-k8s.io/v1beta1",
            "metadata": {"creationTimestamp": None},
            "items": items[offset : offset + limit],
        }
