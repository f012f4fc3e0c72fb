"""Preflight: why a job would not run on this cluster, asked before it is submitted.

Each check is a row (✓, ✗, or – when it could not be checked) with one sentence; a ✗ names the fix.

- permissions: every verb on every resource the backend uses, asked with ``SelfSubjectAccessReview``
  (allowed to every authenticated user by the default ``system:basic-user`` ClusterRole); a missing one
  names the rule of the Role ``tfk8s-jobs`` (``deploy/kubernetes/base/role.yaml``) that grants it;
- the namespace exists;
- the TFJob CRD (API discovery) when the flavor is ``tfjob`` or ``auto``;
- GPU capacity: allocatable ``gpu_resource`` on a schedulable node matching the node selector and
  tolerations (listing nodes is cluster-scoped: checked only when a review says it is allowed);
- ResourceQuota in the namespace versus the job's requests (checked only when a review says that listing
  quotas is allowed: the Role does not grant it);
- LimitRange (:mod:`.preflight_limits`): the namespace's container max/min/maxLimitRequestRatio versus
  the job's requests, and the defaults a job that sets no cpu/memory gets;
- storage (:mod:`.storage_check`): the claim exists and its access mode lets every replica mount it;
- the image (:mod:`.image_check`, only when asked: it costs a pod): a one-off pod runs the runner's image
  check and reports the TensorFlow / tf-keras versions, the pull error, or a timeout.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from kubernetes import client as k8s

from ...spec import JobSpec, parse_quantity
from ..base import TFK8sError
from .connection import Cluster
from .errors import ApiErrorContext, api_status
from .preflight_limits import limitrange_rows
from .storage_check import storage_problem

ROLE_FILE = "deploy/kubernetes/base/role.yaml"
ROLE_NAME = "tfk8s-jobs"

# The rules of the Role tfk8s-jobs, as in ROLE_FILE (tests/k8s/test_preflight.py checks they agree).
ROLE_RULES: tuple[dict, ...] = (
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get", "list", "delete"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "delete"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "list", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
    {"apiGroups": ["kubeflow.org"], "resources": ["tfjobs"], "verbs": ["create", "get", "delete"]},
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["limitranges"], "verbs": ["list"]},
)
NATIVE_ONLY = {"services", "jobs"}
TFJOB_ONLY = {"tfjobs"}
CLAIM_ONLY = {"persistentvolumeclaims"}  # asked only of jobs whose storage is a claim
IMAGE_CHECK_ONLY = {("pods", "create"), ("pods", "delete")}  # asked only when the image check runs

OK, FAIL, UNKNOWN = "✓", "✗", "–"


@dataclass
class Check:
    """One row: what was checked, its mark (✓ ✗ –) and one sentence (the fix when it failed)."""

    name: str
    mark: str
    message: str

    @property
    def ok(self) -> bool:
        return self.mark != FAIL

    def to_json(self) -> dict:
        return {"name": self.name, "mark": self.mark, "ok": self.ok, "message": self.message}


@dataclass
class PreflightReport:
    """The rows of one preflight; ``ok`` when none failed."""

    context: str
    namespace: str
    checks: list[Check] = field(default_factory=list)
    spec: JobSpec | None = field(default=None, repr=False, compare=False)  # what was checked

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, mark: str, message: str) -> None:
        self.checks.append(Check(name, mark, message))

    def to_json(self) -> dict:
        return {"namespace": self.namespace, "ok": self.ok, "checks": [c.to_json() for c in self.checks]}

    def text(self) -> str:
        width = max((len(c.name) for c in self.checks), default=0)
        head = f"preflight of namespace {self.namespace} ({self.context}): " + (
            "ready." if self.ok else f"{len(self.failed)} problem(s)."
        )
        rows = [f"{c.mark} {c.name.ljust(width)}  {c.message}" for c in self.checks]
        return "\n".join([head, *rows])

    __str__ = text

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td style='color:{'#c62828' if c.mark == FAIL else '#2e7d32'}'>{c.mark}</td>"
            f"<td>{html.escape(c.name)}</td><td style='text-align:left'>{html.escape(c.message)}</td></tr>"
            for c in self.checks
        )
        head = html.escape(self.text().splitlines()[0])
        return f"<div class='tfk8s-preflight'><b>{head}</b><table>{rows}</table></div>"

    def __repr__(self) -> str:
        return self.text()


class PreflightFailed(TFK8sError):
    """A submission refused because its preflight found why the job would not run."""

    def __init__(self, report: PreflightReport):
        self.report = report
        problems = "; ".join(c.message.rstrip(". ") for c in report.failed)
        super().__init__(f"the job would not run: {problems}; %tfk8s_check shows every check.")


def rule_text(rule: dict) -> str:
    return f"apiGroups {rule['apiGroups']}, resources {rule['resources']}, verbs {rule['verbs']}".replace(
        "'", '"'
    )


def permissions(
    flavor: str, claim: bool = False, image_check: bool = False
) -> list[tuple[str, str, str | None, str, dict]]:
    """(group, resource, subresource, verb, granting rule) of every call the backend makes for ``flavor``
    (and, with ``claim``, for a job whose storage is a PersistentVolumeClaim; with ``image_check``, the
    image check's pod)."""
    out = []
    for rule in ROLE_RULES:
        for res in rule["resources"]:
            resource, _, sub = res.partition("/")
            if (
                (flavor == "native" and resource in TFJOB_ONLY)
                or (flavor == "tfjob" and resource in NATIVE_ONLY)
                or (not claim and resource in CLAIM_ONLY)
            ):
                continue
            for verb in rule["verbs"]:
                if (resource, verb) in IMAGE_CHECK_ONLY and not image_check:
                    continue
                out.append((rule["apiGroups"][0], resource, sub or None, verb, rule))
    return out


def can(
    cluster: Cluster, verb: str, group: str, resource: str, namespace: str | None, sub: str | None = None
) -> bool:
    """A ``SelfSubjectAccessReview``: may the current user ``verb`` ``resource`` in ``namespace``?"""
    attrs = {"verb": verb, "group": group, "resource": resource}
    if namespace:
        attrs["namespace"] = namespace
    if sub:
        attrs["subresource"] = sub
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attrs},
    }
    api = k8s.AuthorizationV1Api(cluster.api_client)
    review = cluster.raw(
        ApiErrorContext("create", "selfsubjectaccessreviews", None),
        api.create_self_subject_access_review,
        body,
    )
    return bool((review.get("status") or {}).get("allowed"))


def _qty(value) -> float:
    """A quantity read from the cluster (``0`` allowed, unlike a job's flag)."""
    try:
        return parse_quantity(value) if value not in (None, "", 0, "0") else 0.0
    except ValueError:
        return 0.0


# the checks ------------------------------------------------------------------------------------
def check_permissions(
    report: PreflightReport,
    cluster: Cluster,
    namespace: str,
    flavor: str,
    claim: bool = False,
    image_check: bool = False,
) -> None:
    missing = []
    for group, resource, sub, verb, rule in permissions(flavor, claim, image_check):
        if not can(cluster, verb, group, resource, namespace, sub):
            what = f"{resource}/{sub}" if sub else resource
            missing.append((verb, what, group, rule))
    if not missing:
        report.add("permissions", OK, f"every call the backend makes is allowed in namespace {namespace}.")
        return
    for verb, what, group, rule in missing:
        report.add(
            f"{verb} {what}",
            FAIL,
            f"you cannot {verb} {what} (apiGroup {group!r}) in namespace {namespace}; bind the Role {ROLE_NAME} "
            f"({ROLE_FILE}) whose rule {rule_text(rule)} grants it.",
        )


def check_namespace(report: PreflightReport, cluster: Cluster, namespace: str) -> bool:
    try:
        cluster.list("configmaps", namespace, limit=1)
    except TFK8sError as e:
        if api_status(e) == 404:
            report.add(
                "namespace",
                FAIL,
                f"namespace {namespace} does not exist; pass --namespace with an existing one "
                "(kubectl get namespaces) or ask an administrator to create it.",
            )
            return False
        if api_status(e) != 403:  # forbidden to list: the permission rows say so
            raise
    report.add("namespace", OK, f"namespace {namespace} exists.")
    return True


def check_tfjob(report: PreflightReport, cluster: Cluster, flavor: str) -> str:
    """The row for the TFJob CRD; returns the flavor a submission would use."""
    if flavor == "native":
        return "native"
    installed = cluster.tfjob_installed()
    if installed:
        report.add("TFJob CRD", OK, "the cluster serves kubeflow.org/v1 tfjobs (Kubeflow training operator).")
        return "tfjob"
    if flavor == "tfjob":
        report.add(
            "TFJob CRD",
            FAIL,
            "the cluster does not serve kubeflow.org/v1 tfjobs; install the Kubeflow training operator, "
            "or use --flavor native (Indexed Jobs).",
        )
        return "tfjob"
    report.add(
        "TFJob CRD", OK, "kubeflow.org/v1 tfjobs is not served: --flavor auto runs native Indexed Jobs."
    )
    return "native"


def _tolerated(taint: dict, tolerations) -> bool:
    for t in tolerations:
        if t.get("key") not in (None, "", taint.get("key")) and t.get("operator") != "Exists":
            continue
        if t.get("key") and t.get("key") != taint.get("key"):
            continue
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Equal" and t.get("value", "") != taint.get("value", ""):
            continue
        return True
    return False


def check_gpus(report: PreflightReport, cluster: Cluster, spec: JobSpec) -> None:
    per_replica = max((r.resources.gpus for r in spec.replicas), default=0)
    res = spec.gpu_resource
    if per_replica == 0:
        report.add("GPUs", OK, "the job asks for no GPU.")
        return
    if not can(cluster, "list", "", "nodes", None):
        report.add(
            "GPUs",
            UNKNOWN,
            f"not checked: listing nodes (cluster-scoped) is not allowed to you; an administrator can check "
            f"allocatable {res} with kubectl describe nodes.",
        )
        return
    nodes = cluster.raw(ApiErrorContext("list", "nodes", None), k8s.CoreV1Api(cluster.api_client).list_node)
    best, where = 0.0, None
    for node in nodes.get("items", []):
        labels = node["metadata"].get("labels") or {}
        if (node.get("spec") or {}).get("unschedulable"):
            continue
        if any(labels.get(k) != v for k, v in spec.node_selector.items()):
            continue
        taints = [
            t for t in (node.get("spec") or {}).get("taints") or [] if t.get("effect") != "PreferNoSchedule"
        ]
        if not all(_tolerated(t, spec.tolerations) for t in taints):
            continue
        have = _qty(((node.get("status") or {}).get("allocatable") or {}).get(res, 0))
        if have > best:
            best, where = have, node["metadata"]["name"]
    if best >= per_replica:
        report.add(
            "GPUs", OK, f"node {where} has {best:g} allocatable {res}; each replica asks {per_replica}."
        )
        return
    selector = ", ".join(f"{k}={v}" for k, v in spec.node_selector.items())
    matching = f" matching node selector {selector} and the tolerations" if selector else ""
    report.add(
        "GPUs",
        FAIL,
        f"no schedulable node{matching} has {per_replica} allocatable {res} (the most is {best:g}); ask for "
        "fewer --gpus, fix --gpu-resource / the node selector or tolerations, or ask for GPU nodes.",
    )


def job_requests(spec: JobSpec) -> dict[str, float]:
    """The quota-counted totals the job's pods ask for (requests = limits)."""
    out: dict[str, float] = {"pods": 0, "count/pods": 0}
    for r in spec.replicas:
        out["pods"] += r.count
        out["count/pods"] += r.count
        for key, value in (("cpu", r.resources.cpu), ("memory", r.resources.memory)):
            if value is not None:
                q = parse_quantity(value) * r.count
                for name in (key, f"requests.{key}", f"limits.{key}"):
                    out[name] = out.get(name, 0) + q
        if r.resources.gpus:
            name = f"requests.{spec.gpu_resource}"
            out[name] = out.get(name, 0) + r.resources.gpus * r.count
    return out


def check_quota(report: PreflightReport, cluster: Cluster, spec: JobSpec, namespace: str) -> None:
    if not can(cluster, "list", "", "resourcequotas", namespace):
        report.add(
            "quota",
            UNKNOWN,
            f"not checked: listing resourcequotas in namespace {namespace} is not allowed to you "
            f"(kubectl describe quota -n {namespace} shows them to whoever may).",
        )
        return
    quotas = cluster.raw(
        ApiErrorContext("list", "resourcequotas", namespace),
        k8s.CoreV1Api(cluster.api_client).list_namespaced_resource_quota,
        namespace,
    )
    need = job_requests(spec)
    short = []
    for q in quotas.get("items", []):
        status = q.get("status") or {}
        hard = status.get("hard") or (q.get("spec") or {}).get("hard") or {}
        used = status.get("used") or {}
        for key, limit in hard.items():
            if key not in need:
                continue
            free = _qty(limit) - _qty(used.get(key, 0))
            if need[key] > free:
                short.append(
                    f"quota {q['metadata']['name']} leaves {max(free, 0):g} {key} (hard {limit}, used "
                    f"{used.get(key, 0)}) but the job asks {need[key]:g}"
                )
    if not short:
        n = len(quotas.get("items", []))
        report.add("quota", OK, f"the job fits the {n} ResourceQuota(s) of namespace {namespace}.")
        return
    for s in short:
        report.add(
            "quota",
            FAIL,
            f"{s}; ask for less (--workers/--ps/--cpu/--memory/--gpus), delete finished jobs, or ask an "
            "administrator for a larger quota.",
        )


def check_limitranges(report: PreflightReport, cluster: Cluster, spec: JobSpec, namespace: str) -> None:
    if not can(cluster, "list", "", "limitranges", namespace):
        return  # the permission rows name the missing rule
    for ok, message in limitrange_rows(cluster, spec, namespace):
        report.add("LimitRange", OK if ok else FAIL, message)


def check_storage(report: PreflightReport, cluster: Cluster, spec: JobSpec, namespace: str) -> None:
    ok, message = storage_problem(cluster, spec, namespace)
    report.add("storage", {True: OK, False: FAIL, None: UNKNOWN}[ok], message)


def _exists(cluster: Cluster, ctx: ApiErrorContext, fn, *args) -> bool | None:
    """Does the object exist? ``None`` when its API is not served (the CRD is not installed)."""
    try:
        cluster.raw(ctx, fn, *args)
        return True
    except TFK8sError as e:
        if api_status(e) != 404:
            raise
        # an unserved API answers "the server could not find the requested resource", a missing object names it
        return None if "could not find the requested resource" in str(e.__cause__ or e) else False


def check_priority_class(report: PreflightReport, cluster: Cluster, name: str | None) -> None:
    if not name:
        return
    if not can(cluster, "get", "scheduling.k8s.io", "priorityclasses", None):
        report.add(
            "priority class", UNKNOWN, f"not checked: reading PriorityClass {name} is not allowed to you."
        )
        return
    api = k8s.SchedulingV1Api(cluster.api_client)
    if _exists(cluster, ApiErrorContext("get", "priorityclasses", None, name), api.read_priority_class, name):
        report.add("priority class", OK, f"PriorityClass {name} exists.")
        return
    report.add(
        "priority class",
        FAIL,
        f"PriorityClass {name} does not exist, so the pods would be refused; pick one of kubectl get "
        "priorityclasses, or drop --priority-class.",
    )


def check_queue(report: PreflightReport, cluster: Cluster, queue: str | None, namespace: str) -> None:
    if not queue:
        return
    if not can(cluster, "get", "kueue.x-k8s.io", "localqueues", namespace):
        report.add("queue", UNKNOWN, f"not checked: reading Kueue LocalQueue {queue} is not allowed to you.")
        return
    api = k8s.CustomObjectsApi(cluster.api_client)
    found = _exists(
        cluster,
        ApiErrorContext("get", "localqueues", namespace, queue),
        api.get_namespaced_custom_object,
        "kueue.x-k8s.io",
        "v1beta1",
        namespace,
        "localqueues",
        queue,
    )
    if found:
        report.add("queue", OK, f"Kueue LocalQueue {queue} exists in namespace {namespace}.")
    elif found is None:
        report.add(
            "queue",
            FAIL,
            "Kueue is not installed (the cluster does not serve kueue.x-k8s.io localqueues), so a queued job "
            "would wait forever; drop --queue or ask an administrator to install Kueue.",
        )
    else:
        report.add(
            "queue",
            FAIL,
            f"Kueue LocalQueue {queue} does not exist in namespace {namespace}, so the job would wait forever; "
            f"pick one of kubectl get localqueues -n {namespace}, or drop --queue.",
        )


def preflight(
    backend, spec: JobSpec, cheap: bool = False, image: bool = False, image_timeout: float | None = None
) -> PreflightReport:
    """Every check for ``spec`` on ``backend`` (a :class:`~.client.KubernetesBackend`); ``cheap`` (before
    a first submission): all but GPU capacity and quota, which read beyond the Role (they are diagnosed on
    the job if they stop it); the priority class and queue only when the job names them; the image only
    with ``image`` (a one-off pod; ``image_timeout`` seconds at most).

    Raises:
        BackendUnavailable: no usable kubeconfig / context, or the API server cannot be reached.
    """
    cluster = backend.cluster(spec.context)
    namespace = backend.resolve_namespace(spec.namespace, spec.context)
    report = PreflightReport(spec.context or "current context", namespace)
    report.spec = spec
    if not check_namespace(report, cluster, namespace):
        return report
    flavor = check_tfjob(report, cluster, spec.flavor)
    claim = bool(spec.storage) and spec.storage.strip().startswith("pvc:")
    check_permissions(report, cluster, namespace, flavor, claim, image)
    check_limitranges(report, cluster, spec, namespace)
    check_storage(report, cluster, spec, namespace)
    if not cheap:
        check_gpus(report, cluster, spec)
        check_quota(report, cluster, spec, namespace)
    check_priority_class(report, cluster, spec.priority_class)
    check_queue(report, cluster, spec.queue, namespace)
    if image:
        check_image(report, backend, spec, image_timeout)
    return report


def check_image(report: PreflightReport, backend, spec: JobSpec, timeout: float | None = None) -> None:
    """The image row (:mod:`.image_check`): a one-off pod, always removed after."""
    from .image_check import DEFAULT_TIMEOUT, run_image_check

    cluster = backend.cluster(spec.context)
    namespace = report.namespace
    if not (can(cluster, "create", "", "pods", namespace) and can(cluster, "delete", "", "pods", namespace)):
        report.add(
            "image",
            UNKNOWN,
            f"not checked: creating and deleting pods in namespace {namespace} is not allowed to you; bind the "
            f"Role {ROLE_NAME} ({ROLE_FILE}).",
        )
        return
    try:
        ok, message = run_image_check(cluster, spec, namespace, timeout or DEFAULT_TIMEOUT)
    except TFK8sError as e:  # refused (e.g. by admission) or a read failed; the pod is already deleted
        ok, message = False, f"the image check pod could not run: {str(e).rstrip('.')}."
    report.add("image", OK if ok else FAIL, message)
