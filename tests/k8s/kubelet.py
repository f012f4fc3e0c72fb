"""A test Job controller and kubelet beside the test API server: pods run as local processes.

Job controller: an Indexed Job gets one pod per index (``JOB_COMPLETION_INDEX`` in the env, hostname
``<job>-<index>``, ownerReference to the Job); restarts count against ``backoffLimit``; the Job gets
``Complete`` / ``Failed`` conditions; a quota (``pod_quota``) refused pod creation is a FailedCreate Event.

Kubelet: "schedules" a pod (``Insufficient <resource>`` when it asks more than the node has), "pulls" its
image (``bad_images`` fail with ErrImagePull / ImagePullBackOff; ``bare_images`` run ``python -S``, an
image without site-packages, so without TensorFlow), runs its container as a process
(``python`` → this interpreter; ConfigMap volumes written to a temp dir and every path under a mount
rewritten to it; each ``host:port`` in ``TFK8S_CLUSTER`` mapped to a free local port), restarts it per
``restartPolicy`` (CrashLoopBackOff in between), reports phases, container states, exit codes and
``terminationMessagePolicy: FallbackToLogsOnError`` messages, and serves its output as the pod log.
``oom(pod)`` kills a container the way the OOM killer does (exit 137, reason OOMKilled). A pod that breaks
a LimitRange's container max / min is refused (FailedCreate), as the LimitRanger admission plugin does.

Storage: a ``persistentVolumeClaim`` volume is one host directory per claim (:meth:`TestCluster.claim_dir`),
shared by every pod that mounts the claim and kept after they are gone; a pod whose claim does not exist
stays Pending (unschedulable), as on a real cluster. TTL controller: a finished Job with
``ttlSecondsAfterFinished`` is deleted (background propagation) that many seconds after it finished.

Suspension and deadlines: a suspended Job (``spec.suspend``) or TFJob (``spec.runPolicy.suspend``) gets no
pod until it is unsuspended (Kueue's admission: tests/k8s/kueue.py); ``activeDeadlineSeconds`` (Job) and
``runPolicy.activeDeadlineSeconds`` (TFJob), counted from the start, fail it as the Job controller
(DeadlineExceeded) and training-operator v1 (TFJobFailed, "… active longer than specified deadline") do,
deleting its running pods.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from apiserver import ApiError, ApiServer, WatchEvent, limitrange_refusal, now_rfc3339

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
STANDIN_RUNNER = Path(__file__).resolve().parent.parent / "standin_runner.py"  # the TF-free stand-in runner


NODE_NAME = "test-node"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quantity(v: str | int) -> float:
    s = str(v)
    for suffix, f in (("m", 1e-3), ("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30)):
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * f
    return float(s)


class Container:
    """One running container process of a pod."""

    def __init__(self, proc: subprocess.Popen, buf):
        self.proc = proc
        self.buf = buf
        self.oom = False
        self.reader: threading.Thread | None = None


class TestCluster:
    """Job controller + kubelet for one :class:`ApiServer`; ``start()`` / ``stop()``."""

    def __init__(
        self,
        server: ApiServer,
        workdir: Path | None = None,
        node_capacity: dict[str, str] | None = None,
        bad_images: tuple[str, ...] = (),
        pod_quota: int | None = None,
        extra_env: dict[str, str] | None = None,
        crash_backoff: float = 0.3,
        runner_override: Path | None = None,
        pull_seconds: float = 0.0,
        bare_images: tuple[str, ...] = (),
    ):
        self.server = server
        self.store = server.store
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tfk8s-kubelet-"))
        self.capacity = {"cpu": "64", "memory": "256Gi", "pods": "500", **(node_capacity or {})}
        self.bad_images = set(bad_images)
        self.bare_images = set(bare_images)
        self.pod_quota = pod_quota
        self.extra_env = dict(extra_env or {})
        self.crash_backoff = crash_backoff
        self.runner_override = runner_override
        self.pull_seconds = pull_seconds  # ContainerCreating time before a container starts
        self.ports: dict[str, int] = {}
        self.containers: dict[tuple[str, str], Container] = {}  # (ns, pod) -> running container
        self.restarts: dict[tuple[str, str], int] = {}
        self.deleted_failed: dict[str, int] = {}  # Job uid -> its pods deleted while running
        self.queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self.thread = threading.Thread(target=self._loop, name="test-kubelet", daemon=True)
        self.started_pids: list[int] = []
        self.started_jobs: set[tuple[str, str]] = set()  # Jobs whose pods were created (not suspended)
        self.ttl_timers: list[threading.Timer] = []

    # lifecycle ----------------------------------------------------------------------------------
    def start(self) -> TestCluster:
        if self.store.get("", "nodes", None, NODE_NAME) is None:
            self.server.add_node(NODE_NAME, self.capacity)  # the one node this kubelet schedules on
        self.store.subscribers.append(self.queue.put)
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.queue.put in self.store.subscribers:
            self.store.subscribers.remove(self.queue.put)
        self.queue.put(None)
        for t in self.ttl_timers:
            t.cancel()
        with self._lock:
            containers = list(self.containers.values())
        for c in containers:
            self._kill(c)
        self.thread.join(5)

    def _kill(self, c: Container, grace: float = 5.0) -> None:
        if c.proc.poll() is not None:
            return
        try:
            os.killpg(c.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            c.proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(c.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            c.proc.wait(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            ev = self.queue.get()
            if ev is None:
                return
            try:
                self._on_event(ev)
            except ApiError:
                pass  # the object went away meanwhile
            except Exception as e:  # keep the controller alive; the test sees the consequence
                print(f"test kubelet: {type(e).__name__}: {e}", file=sys.stderr)

    def _on_event(self, ev: WatchEvent) -> None:
        if (ev.group, ev.resource) == ("batch", "jobs"):
            suspended = (ev.obj.get("spec") or {}).get("suspend")
            key = (ev.namespace, ev.obj["metadata"]["name"])
            if ev.type == "DELETED":
                self.started_jobs.discard(key)
            elif ev.type == "MODIFIED" and key in self.started_jobs:
                self._trim_elastic_job(ev.obj)
            elif ev.type in ("ADDED", "MODIFIED") and not suspended and key not in self.started_jobs:
                # created running, or admitted (unsuspended, as Kueue does) after waiting suspended
                self.started_jobs.add(key)
                self._create_job_pods(ev.obj)
                deadline = ev.obj["spec"].get("activeDeadlineSeconds")
                if deadline:
                    t = threading.Timer(deadline, self._deadline_exceeded, args=key)
                    t.daemon = True
                    t.start()
        elif (ev.group, ev.resource) == ("kubeflow.org", "tfjobs"):
            run_policy = (ev.obj.get("spec") or {}).get("runPolicy") or {}
            key = ("tfjob", ev.namespace, ev.obj["metadata"]["name"])
            if ev.type == "DELETED":
                self.started_jobs.discard(key)
            elif (
                ev.type in ("ADDED", "MODIFIED")
                and not run_policy.get("suspend")
                and key not in self.started_jobs
            ):
                # created running, or admitted (runPolicy.suspend set false, as Kueue does) after waiting
                self.started_jobs.add(key)
                self._create_tfjob_pods(ev.obj)
                deadline = run_policy.get("activeDeadlineSeconds")
                if deadline:
                    t = threading.Timer(deadline, self._tfjob_deadline_exceeded, args=key[1:])
                    t.daemon = True
                    t.start()
        elif (ev.group, ev.resource) == ("", "pods"):
            if ev.type == "ADDED":
                threading.Thread(target=self._run_pod_logged, args=(ev.obj,), daemon=True).start()
            elif ev.type == "DELETED":
                key = (ev.namespace, ev.obj["metadata"]["name"])
                with self._lock:
                    c = self.containers.pop(key, None)
                if c is not None:
                    threading.Thread(target=self._kill, args=(c,), daemon=True).start()
                self._replace_deleted_pod(ev.obj)
                self._sync_job_of(ev.obj)

    # Job controller -----------------------------------------------------------------------------
    def _create_job_pods(self, job: dict) -> None:
        spec = job["spec"]
        if spec.get("completionMode") != "Indexed":
            return
        ns = job["metadata"]["namespace"]
        for index in range(spec.get("completions", 1)):
            if self.pod_quota is not None and len(self.store.list("", "pods", ns)[0]) >= self.pod_quota:
                self._event(
                    job,
                    "FailedCreate",
                    f'Error creating: pods "{job["metadata"]["name"]}-{index}-x" is forbidden: exceeded quota: '
                    f"compute-resources, requested: pods=1, used: pods={self.pod_quota}, limited: pods={self.pod_quota}",
                )
                continue
            self._create_pod(job, index)

    def _replace_deleted_pod(self, pod: dict) -> None:
        """As the Job controller: a pod of an unfinished Indexed Job deleted before it succeeded counts as a
        failed pod (against ``backoffLimit``) and its index gets a new pod."""
        owner = self._job_of(pod)
        if owner is None or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        ns, name = owner
        job = self.store.get("batch", "jobs", ns, name)
        if job is None or job["metadata"]["uid"] != self._job_uid_of(pod):
            return  # its Job is gone (a Job of the same name since is another Job, with its own count)
        if job["spec"].get("completionMode") != "Indexed" or job["spec"].get("suspend"):
            return
        conditions = (job.get("status") or {}).get("conditions") or []
        if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions):
            return
        index = int(pod["metadata"]["labels"][INDEX_KEY])
        if index >= job["spec"].get("completions", 1):
            return  # trimmed by an elastic resize
        pods = self.store.list("", "pods", ns, f"batch.kubernetes.io/job-name={name}")[0]
        if any(p["metadata"]["labels"].get(INDEX_KEY) == str(index) for p in pods):
            return
        with self._lock:
            self.deleted_failed[job["metadata"]["uid"]] = (
                self.deleted_failed.get(job["metadata"]["uid"], 0) + 1
            )
        self._create_pod(job, index)

    def _trim_elastic_job(self, job: dict) -> None:
        """An elastic Indexed Job (completions and parallelism lowered together, Kubernetes >= 1.27): the Job
        controller deletes the pods whose index is no longer below ``completions``."""
        spec = job["spec"]
        if spec.get("completionMode") != "Indexed":
            return
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        pods = self.store.list("", "pods", ns, f"batch.kubernetes.io/job-name={name}")[0]
        for pod in pods:
            if int(pod["metadata"]["labels"][INDEX_KEY]) >= spec.get("completions", 1):
                try:
                    self.store.delete("", "pods", ns, pod["metadata"]["name"], "Background")
                except ApiError:
                    pass  # gone meanwhile

    def _create_pod(self, job: dict, index: int) -> None:
        tpl = json.loads(json.dumps(job["spec"]["template"]))
        meta = tpl.setdefault("metadata", {})
        name = job["metadata"]["name"]
        labels = {
            **(meta.get("labels") or {}),
            INDEX_KEY: str(index),
            "batch.kubernetes.io/job-name": name,
            "job-name": name,
        }
        pod_spec = tpl["spec"]
        pod_spec["hostname"] = f"{name}-{index}"
        for c in pod_spec["containers"]:
            c.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
        pod = {
            "metadata": {
                "name": f"{name}-{index}-{uuid.uuid4().hex[:5]}",
                "namespace": job["metadata"]["namespace"],
                "labels": labels,
                "annotations": {INDEX_KEY: str(index)},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": pod_spec,
        }
        refused = limitrange_refusal(self.store, pod["metadata"]["namespace"], pod)
        if refused:  # the LimitRanger admission plugin, as the Job controller sees it
            self._event(
                job,
                "FailedCreate",
                f'Error creating: pods "{pod["metadata"]["name"]}" is forbidden: {refused}',
            )
            return
        self.store.create("", "pods", pod)

    def _event(self, obj: dict, reason: str, message: str) -> None:
        meta = obj["metadata"]
        self.store.create(
            "",
            "events",
            {
                "metadata": {
                    "name": f"{meta['name']}.{uuid.uuid4().hex[:8]}",
                    "namespace": meta["namespace"],
                },
                "involvedObject": {
                    "kind": obj.get("kind"),
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta.get("uid"),
                },
                "reason": reason,
                "message": message,
                "type": "Warning",
                "count": 1,
            },
        )

    # TFJob operator (the part of training-operator v1 the backend relies on) ---------------------
    def _create_tfjob_pods(self, tfjob: dict) -> None:
        """Per replica one pod and one Service, TF_CONFIG set, labels as the operator puts them."""
        meta = tfjob["metadata"]
        name, ns = meta["name"], meta["namespace"]
        specs = tfjob["spec"]["tfReplicaSpecs"]
        cluster = {
            rtype.lower(): [f"{name}-{rtype.lower()}-{i}.{ns}.svc:2222" for i in range(rs.get("replicas", 1))]
            for rtype, rs in specs.items()
        }
        owner = [
            {
                "apiVersion": "kubeflow.org/v1",
                "kind": "TFJob",
                "name": name,
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        for rtype, rs in specs.items():
            rt = rtype.lower()
            for i in range(rs.get("replicas", 1)):
                tpl = json.loads(json.dumps(rs["template"]))
                labels = {
                    **(tpl.get("metadata", {}).get("labels") or {}),
                    "training.kubeflow.org/job-name": name,
                    "training.kubeflow.org/replica-type": rt,
                    "training.kubeflow.org/replica-index": str(i),
                }
                pod_spec = tpl["spec"]
                pod_spec["restartPolicy"] = (
                    "Never"
                    if rs.get("restartPolicy") in ("Never", "ExitCode")
                    else rs.get("restartPolicy", "Never")
                )
                tf_config = {"cluster": cluster, "task": {"type": rt, "index": i}, "environment": "cloud"}
                for c in pod_spec["containers"]:
                    c.setdefault("env", []).append({"name": "TF_CONFIG", "value": json.dumps(tf_config)})
                self.store.create(
                    "",
                    "services",
                    {
                        "metadata": {
                            "name": f"{name}-{rt}-{i}",
                            "namespace": ns,
                            "labels": labels,
                            "ownerReferences": owner,
                        },
                        "spec": {"clusterIP": "None", "selector": labels, "ports": [{"port": 2222}]},
                    },
                )
                self.store.create(
                    "",
                    "pods",
                    {
                        "metadata": {
                            "name": f"{name}-{rt}-{i}",
                            "namespace": ns,
                            "labels": labels,
                            "ownerReferences": owner,
                        },
                        "spec": pod_spec,
                    },
                )

    def _sync_tfjob_of(self, pod: dict) -> None:
        """Succeeded when the chief (or worker 0 without one) succeeds, then cleanPodPolicy Running."""
        refs = [r for r in pod["metadata"].get("ownerReferences") or [] if r.get("kind") == "TFJob"]
        if not refs:
            return
        ns, name = pod["metadata"]["namespace"], refs[0]["name"]
        tfjob = self.store.get("kubeflow.org", "tfjobs", ns, name)
        if tfjob is None:
            return
        conditions = list((tfjob.get("status") or {}).get("conditions") or [])
        if any(c["type"] in ("Succeeded", "Failed") and c["status"] == "True" for c in conditions):
            return
        pods = self.store.list("", "pods", ns, f"training.kubeflow.org/job-name={name}")[0]
        decider = "chief" if "Chief" in tfjob["spec"]["tfReplicaSpecs"] else "worker"
        key = ("training.kubeflow.org/replica-type", "training.kubeflow.org/replica-index")
        main = [
            p
            for p in pods
            if (p["metadata"]["labels"][key[0]], p["metadata"]["labels"][key[1]]) == (decider, "0")
        ]
        restarts = sum((p["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0) for p in pods)
        limit = tfjob["spec"].get("runPolicy", {}).get("backoffLimit", 6)
        if main and main[0]["status"].get("phase") == "Succeeded":
            conditions.append({"type": "Succeeded", "status": "True", "reason": "TFJobSucceeded"})
        elif restarts > limit or any(p["status"].get("phase") == "Failed" for p in pods):
            conditions.append(
                {"type": "Failed", "status": "True", "reason": "TFJobFailed", "message": "a replica failed"}
            )
        else:
            return
        self.store.update(
            "kubeflow.org",
            "tfjobs",
            ns,
            name,
            lambda o: o.setdefault("status", {}).update(conditions=conditions),
        )
        for p in pods:  # cleanPodPolicy: Running
            if p["status"].get("phase") in ("Pending", "Running"):
                try:
                    self.store.delete("", "pods", ns, p["metadata"]["name"], "Background")
                except ApiError:
                    pass

    def _job_of(self, pod: dict) -> tuple[str, str] | None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job":
                return pod["metadata"]["namespace"], ref["name"]
        return None

    def _job_uid_of(self, pod: dict) -> str | None:
        """The uid of the Job that owns a pod: a Job deleted and created again under its name is another Job."""
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job":
                return ref.get("uid")
        return None

    def _deadline_exceeded(self, ns: str, name: str) -> None:
        """The Job controller past ``activeDeadlineSeconds``: Failed (DeadlineExceeded), active pods deleted."""
        job = self.store.get("batch", "jobs", ns, name)
        if job is None or self._stop.is_set():
            return
        conditions = list((job.get("status") or {}).get("conditions") or [])
        if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions):
            return
        conditions.append(
            {
                "type": "Failed",
                "status": "True",
                "lastTransitionTime": now_rfc3339(),
                "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline",
            }
        )

        def mutate(obj):
            obj["status"]["conditions"] = conditions
            obj["status"]["active"] = 0

        self.store.update("batch", "jobs", ns, name, mutate)
        pods = self.store.list("", "pods", ns, f"batch.kubernetes.io/job-name={name}")[0]
        for p in pods:
            if p["status"].get("phase") in ("Pending", "Running"):
                try:
                    self.store.delete("", "pods", ns, p["metadata"]["name"], "Background")
                except ApiError:
                    pass

    def _tfjob_deadline_exceeded(self, ns: str, name: str) -> None:
        """The training operator past ``runPolicy.activeDeadlineSeconds``: Failed (reason TFJobFailed, its
        message naming the deadline, as training-operator v1 writes it), the replicas' pods deleted."""
        tfjob = self.store.get("kubeflow.org", "tfjobs", ns, name)
        if tfjob is None or self._stop.is_set():
            return
        conditions = list((tfjob.get("status") or {}).get("conditions") or [])
        if any(c["type"] in ("Succeeded", "Failed") and c["status"] == "True" for c in conditions):
            return
        conditions.append(
            {
                "type": "Failed",
                "status": "True",
                "reason": "TFJobFailed",
                "message": f"TFJob {ns}/{name} has failed because it was active longer than specified deadline",
                "lastTransitionTime": now_rfc3339(),
            }
        )
        self.store.update(
            "kubeflow.org",
            "tfjobs",
            ns,
            name,
            lambda o: o.setdefault("status", {}).update(conditions=conditions, completionTime=now_rfc3339()),
        )
        for p in self.store.list("", "pods", ns, f"training.kubeflow.org/job-name={name}")[0]:
            if p["status"].get("phase") in ("Pending", "Running"):
                try:
                    self.store.delete("", "pods", ns, p["metadata"]["name"], "Background")
                except ApiError:
                    pass

    def admit(self, namespace: str, name: str) -> None:
        """Kueue's admission of a suspended Job: ``suspend`` set to false (the controller then starts it)."""

        def mutate(obj):
            obj["spec"]["suspend"] = False

        self.store.update("batch", "jobs", namespace, name, mutate)

    def _sync_job_of(self, pod: dict) -> None:
        """Job status from its pods: counts, Complete when every index succeeded, Failed past backoffLimit."""
        owner = self._job_of(pod)
        if owner is None:
            return
        ns, name = owner
        job = self.store.get("batch", "jobs", ns, name)
        if job is None:
            return
        pods = [p for p in self.store.list("", "pods", ns, f"batch.kubernetes.io/job-name={name}")[0]]
        done = {p["metadata"]["labels"][INDEX_KEY] for p in pods if p["status"].get("phase") == "Succeeded"}
        failed_pods = sum(1 for p in pods if p["status"].get("phase") == "Failed")
        restarts = (
            sum((p["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0) for p in pods)
            + failed_pods
            + self.deleted_failed.get(job["metadata"]["uid"], 0)
        )
        active = sum(1 for p in pods if p["status"].get("phase") in ("Pending", "Running"))
        limit = job["spec"].get("backoffLimit", 6)
        conditions = list(job.get("status", {}).get("conditions") or [])
        finished = any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)
        to_delete = []
        if not finished and len(done) >= job["spec"].get("completions", 1):
            conditions.append(
                {
                    "type": "Complete",
                    "status": "True",
                    "lastTransitionTime": now_rfc3339(),
                    "reason": "CompletionsReached",
                }
            )
        elif not finished and restarts > limit:
            conditions.append(
                {
                    "type": "Failed",
                    "status": "True",
                    "lastTransitionTime": now_rfc3339(),
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            )
            to_delete = [p for p in pods if p["status"].get("phase") in ("Pending", "Running")]

        def mutate(obj):
            obj["status"].update(
                {
                    "active": active,
                    "succeeded": len(done),
                    "failed": restarts,
                    "completedIndexes": ",".join(sorted(done, key=int)),
                    "conditions": conditions,
                }
            )
            obj["status"].setdefault("startTime", now_rfc3339())

        self.store.update("batch", "jobs", ns, name, mutate)
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if not finished and ttl is not None and any(c["status"] == "True" for c in conditions):
            t = threading.Timer(ttl, self._ttl_expired, args=(ns, name, job["metadata"]["uid"]))
            t.daemon = True
            self.ttl_timers.append(t)
            t.start()
        for p in to_delete:
            try:
                self.store.delete("", "pods", ns, p["metadata"]["name"], "Background")
            except ApiError:
                pass

    def _ttl_expired(self, namespace: str, name: str, uid: str) -> None:
        """The TTL-after-finished controller: delete the finished Job (and, by garbage collection, its pods)."""
        job = self.store.get("batch", "jobs", namespace, name)
        if job is None or job["metadata"]["uid"] != uid or self._stop.is_set():
            return
        try:
            self.store.delete("batch", "jobs", namespace, name, "Background")
        except ApiError:
            pass

    def claim_dir(self, namespace: str, claim: str) -> Path:
        """The host directory behind PersistentVolumeClaim ``claim`` (shared, kept after the pods)."""
        path = self.workdir / "claims" / namespace / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    # kubelet ------------------------------------------------------------------------------------
    def _set_status(self, pod: dict, **changes) -> dict | None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]

        def mutate(obj):
            obj.setdefault("status", {}).update(changes)

        try:
            out = self.store.update("", "pods", ns, name, mutate)
            self._sync_job_of(out)
            self._sync_tfjob_of(out)
        except ApiError:
            return None  # the pod or its Job is gone
        return out

    def _alive(self, pod: dict) -> bool:
        return (
            not self._stop.is_set()
            and self.store.get("", "pods", pod["metadata"]["namespace"], pod["metadata"]["name"]) is not None
        )

    def _schedule(self, pod: dict) -> str | None:
        ns = pod["metadata"]["namespace"]
        for vol in pod["spec"].get("volumes") or []:
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and self.store.get("", "persistentvolumeclaims", ns, claim) is None:
                return f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found.'
        short = []
        for c in pod["spec"]["containers"]:
            limits = {
                **((c.get("resources") or {}).get("requests") or {}),
                **((c.get("resources") or {}).get("limits") or {}),
            }
            for res, want in limits.items():
                have = self.capacity.get(res, "0")
                if _quantity(want) > _quantity(have):
                    short.append(res)
        if short:
            return (
                "0/1 nodes are available: "
                + ", ".join(f"1 Insufficient {r}" for r in sorted(set(short)))
                + ". preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
            )
        return None

    def _run_pod_logged(self, pod: dict) -> None:
        try:
            self._run_pod(pod)
        except Exception as e:  # a broken kubelet thread must be visible, not a silently stuck pod
            print(f"test kubelet: pod {pod['metadata']['name']}: {type(e).__name__}: {e}", file=sys.stderr)
            raise

    def _run_pod(self, pod: dict) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        reason = self._schedule(pod)
        if reason:
            self._set_status(
                pod,
                phase="Pending",
                conditions=[
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": reason}
                ],
            )
            return
        container = pod["spec"]["containers"][0]
        scheduled = [{"type": "PodScheduled", "status": "True"}]
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        self._set_status(
            pod,
            phase="Pending",
            conditions=scheduled,
            hostIP="127.0.0.1",
            containerStatuses=[self._cs(container, waiting, 0)],
        )
        time.sleep(self.pull_seconds)
        if container["image"] in self.bad_images:
            for reason in ("ErrImagePull", "ImagePullBackOff"):
                msg = (
                    f'Back-off pulling image "{container["image"]}"'
                    if reason == "ImagePullBackOff"
                    else (f'failed to pull and unpack image "{container["image"]}": not found')
                )
                self._set_status(
                    pod,
                    containerStatuses=[
                        self._cs(container, {"waiting": {"reason": reason, "message": msg}}, 0)
                    ],
                )
                time.sleep(0.2)
            return
        podroot = self.workdir / ns / name
        mounts = self._mount(pod, podroot)
        restarts = 0
        last_state: dict = {}
        start_time = now_rfc3339()
        while self._alive(pod):
            if not self._await_secret_env(pod, container, restarts, last_state):
                return
            c = self._start(pod, container, mounts, podroot, restarts > 0)
            with self._lock:
                self.containers[(ns, name)] = c
            self._set_status(
                pod,
                phase="Running",
                startTime=start_time,
                podIP="127.0.0.1",
                conditions=[*scheduled, {"type": "Ready", "status": "True"}],
                containerStatuses=[
                    self._cs(
                        container,
                        {"running": {"startedAt": now_rfc3339()}},
                        restarts,
                        last_state,
                        started=True,
                    )
                ],
            )
            code = c.proc.wait()
            if c.reader:
                c.reader.join(10)
            c.buf.close()
            with self._lock:
                if self.containers.get((ns, name)) is c:
                    del self.containers[(ns, name)]
            if not self._alive(pod):
                return
            if code < 0:
                code = 128 - code
            reason = "OOMKilled" if c.oom else ("Completed" if code == 0 else "Error")
            term = {"exitCode": code, "reason": reason, "finishedAt": now_rfc3339()}
            if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                term["message"] = "\n".join(s for _, s in c.buf.lines[-80:])[-2048:]
            policy = pod["spec"].get("restartPolicy", "Always")
            if code == 0 and policy != "Always" or policy == "Never":
                self._set_status(
                    pod,
                    phase="Succeeded" if code == 0 else "Failed",
                    conditions=[*scheduled, {"type": "Ready", "status": "False"}],
                    containerStatuses=[self._cs(container, {"terminated": term}, restarts, last_state)],
                )
                return
            restarts += 1
            last_state = {"terminated": term}
            self._set_status(
                pod,
                containerStatuses=[
                    self._cs(
                        container,
                        {
                            "waiting": {
                                "reason": "CrashLoopBackOff",
                                "message": f"back-off restarting failed container {container['name']}",
                            }
                        },
                        restarts,
                        last_state,
                    )
                ],
            )
            time.sleep(self.crash_backoff)

    def secret_env(self, pod: dict, container: dict) -> dict[str, str]:
        """The container's ``valueFrom.secretKeyRef`` variables, resolved from the API server's Secrets.

        Raises:
            ApiError: (400) a Secret or key is missing, with the message a real kubelet gives.
        """
        ns = pod["metadata"]["namespace"]
        out = {}
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                continue
            secret = self.store.get("", "secrets", ns, ref["name"])
            if secret is None:
                raise ApiError(400, f'secret "{ref["name"]}" not found')
            data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
            data.update(secret.get("stringData") or {})
            if ref["key"] not in data:
                raise ApiError(400, f"couldn't find key {ref['key']} in Secret {ns}/{ref['name']}")
            out[item["name"]] = data[ref["key"]]
        return out

    def _await_secret_env(self, pod: dict, container: dict, restarts: int, last_state: dict) -> bool:
        """As a real kubelet: a container whose secretKeyRef cannot be resolved waits in
        CreateContainerConfigError (retried until it resolves); False when the pod went away meanwhile."""
        while self._alive(pod):
            try:
                self.secret_env(pod, container)
                return True
            except ApiError as e:
                state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
                self._set_status(pod, containerStatuses=[self._cs(container, state, restarts, last_state)])
            time.sleep(1.0)
        return False

    @staticmethod
    def _cs(
        container: dict, state: dict, restarts: int, last: dict | None = None, started: bool = False
    ) -> dict:
        return {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": "running" in state,
            "started": started,
            "restartCount": restarts,
            "state": state,
            "lastState": last or {},
        }

    def _mount(self, pod: dict, podroot: Path) -> dict[str, Path]:
        """Write ConfigMap volumes, create emptyDirs, map claims to their host dirs; return mountPath -> local dir."""
        ns = pod["metadata"]["namespace"]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        out = {}
        for vm in pod["spec"]["containers"][0].get("volumeMounts") or []:
            vol = volumes[vm["name"]]
            if "persistentVolumeClaim" in vol:
                local = self.claim_dir(ns, vol["persistentVolumeClaim"]["claimName"])
                if vm.get("subPath"):
                    local = local / vm["subPath"]
                    local.mkdir(parents=True, exist_ok=True)
                out[vm["mountPath"].rstrip("/")] = local
                continue
            local = podroot / "volumes" / vm["name"]
            local.mkdir(parents=True, exist_ok=True)
            if "configMap" in vol:
                cm = self.store.get("", "configmaps", ns, vol["configMap"]["name"])
                # ``items`` projects only the listed keys, at their paths (as a kubelet does)
                items = vol["configMap"].get("items")
                paths = {i["key"]: i.get("path", i["key"]) for i in items} if items else None
                for key, value in ((cm or {}).get("data") or {}).items():
                    if paths is None or key in paths:
                        (local / (paths or {}).get(key, key)).write_text(value)
                for key, value in ((cm or {}).get("binaryData") or {}).items():
                    if paths is None or key in paths:
                        (local / (paths or {}).get(key, key)).write_bytes(base64.b64decode(value))
            out[vm["mountPath"].rstrip("/")] = local
        return out

    def _map_hosts(self, text: str) -> str:
        """``TFK8S_CLUSTER`` with each ``host:port`` replaced by its local port (the same for every pod, and
        never another host's)."""
        cluster = json.loads(text)
        out = {}
        with self._lock:
            for role, addrs in cluster.items():
                mapped = []
                for addr in addrs:
                    host = addr.rsplit(":", 1)[0]
                    while host not in self.ports:
                        # one port per host: the OS may hand out a released port again, and two replicas
                        # given one port would crash-loop on "Could not start gRPC server"
                        port = free_port()
                        if port not in self.ports.values():
                            self.ports[host] = port
                    mapped.append(f"127.0.0.1:{self.ports[host]}")
                out[role] = mapped
        return json.dumps(out)

    def _start(
        self, pod: dict, container: dict, mounts: dict[str, Path], podroot: Path, restarted: bool
    ) -> Container:
        def rewrite(value: str) -> str:
            for mount in sorted(mounts, key=len, reverse=True):
                if value == mount or value.startswith(mount + "/"):
                    return str(mounts[mount]) + value[len(mount) :]
            return value

        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOSTNAME": pod["spec"].get("hostname", pod["metadata"]["name"]),
        }
        for item in container.get("env") or []:
            if "valueFrom" in item:
                env[item["name"]] = self.secret_env(pod, container).get(item["name"], "")
                continue
            env[item["name"]] = rewrite(str(item.get("value", "")))
        if "TFK8S_CLUSTER" in env:
            env["TFK8S_CLUSTER"] = self._map_hosts(env["TFK8S_CLUSTER"])
        if "TF_CONFIG" in env:  # set by the TFJob operator
            tf_config = json.loads(env["TF_CONFIG"])
            tf_config["cluster"] = json.loads(self._map_hosts(json.dumps(tf_config["cluster"])))
            env["TF_CONFIG"] = json.dumps(tf_config)
        env.update(self.extra_env)
        argv = [rewrite(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
            if container["image"] in self.bare_images:
                argv.insert(1, "-S")  # no site-packages: an image with python but no TensorFlow
        if self.runner_override and len(argv) > 1 and argv[1].endswith("runner.py"):
            # an "image" whose runner is the TF-free stand-in (it reads TFK8S_INDEX only)
            argv[1] = str(self.runner_override)
            if "TF_CONFIG" in env and "TFK8S_CLUSTER" not in env:
                tf_config = json.loads(env["TF_CONFIG"])
                env["TFK8S_CLUSTER"] = json.dumps(tf_config["cluster"])
                env["TFK8S_INDEX"] = str(tf_config["task"]["index"])
            env.setdefault("TFK8S_INDEX", env.get("JOB_COMPLETION_INDEX", "0"))
            if env.get("TFK8S_CHECKPOINT_DIR"):
                Path(env["TFK8S_CHECKPOINT_DIR"]).mkdir(parents=True, exist_ok=True)
        meta = pod["metadata"]
        buf = self.server.log_buffer(
            meta["namespace"], meta["name"], container["name"], new=True, uid=meta["uid"]
        )
        cwd = mounts.get("/tmp", podroot)
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_pids.append(proc.pid)
        c = Container(proc, buf)

        def read():
            for raw in proc.stdout:
                buf.append(raw.decode("utf-8", "replace"))

        c.reader = threading.Thread(target=read, daemon=True)
        c.reader.start()
        return c

    def kill(self, namespace: str, pod: str) -> None:
        """SIGKILL the pod's container (a crashed process; the kubelet restarts it per restartPolicy)."""
        with self._lock:
            c = self.containers.get((namespace, pod))
        if c is None:
            raise LookupError(f"pod {pod} has no running container")
        os.killpg(c.proc.pid, signal.SIGKILL)

    def freeze(self, namespace: str, pod: str) -> int:
        """SIGSTOP the pod's container (alive and silent: a hung replica); returns its pid."""
        with self._lock:
            c = self.containers.get((namespace, pod))
        if c is None:
            raise LookupError(f"pod {pod} has no running container")
        os.killpg(c.proc.pid, signal.SIGSTOP)
        return c.proc.pid

    def oom(self, namespace: str, pod: str) -> None:
        """Kill the pod's container as the OOM killer would (SIGKILL, reported as OOMKilled)."""
        with self._lock:
            c = self.containers.get((namespace, pod))
        if c is None:
            raise LookupError(f"pod {pod} has no running container")
        c.oom = True
        os.killpg(c.proc.pid, signal.SIGKILL)

    def running(self) -> list[int]:
        with self._lock:
            return [c.proc.pid for c in self.containers.values() if c.proc.poll() is None]
