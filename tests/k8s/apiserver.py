"""A small, stateful Kubernetes API server for tests (stdlib HTTP on 127.0.0.1).

It speaks what the official ``kubernetes`` client sends and expects: creates answer 201 with uid,
resourceVersion, creationTimestamp and namespace filled in; get/list with label and field selectors; merge
and JSON patches (``/status`` too); PUT with resourceVersion conflicts; delete with propagation
(ownerReference cascade, Jobs orphan by default as on a real server); watch with ``resourceVersion``,
``timeoutSeconds`` and ``labelSelector`` as chunked JSON lines, an ERROR event with a 410 Status for an
expired resourceVersion; pod logs (``follow``, ``sinceTime``, ``timestamps``, ``tailLines``) as chunked
text; API discovery incl. ``kubeflow.org/v1`` once the TFJob CRD is "installed"; PersistentVolumeClaims
(bound at once, ``status.accessModes`` from ``spec.accessModes``; :meth:`ApiServer.add_claim`).

Fault injection: :meth:`ApiServer.fail` (any status, e.g. 403/404/409/500 on the n-th matching request),
:meth:`ApiServer.drop_streams` (cut watch or log streams after n items), :meth:`ApiServer.delay` (slow
responses), :meth:`ApiServer.expire` (compact history: older resourceVersions answer 410).

For the deploy tooling: ``request_log`` (every request served: verb, group, resource, subresource,
namespace, name, status) and :meth:`ApiServer.enforce_rules` (RBAC PolicyRules; anything outside them is a
real 403 Status).
"""

from __future__ import annotations

import bisect
import copy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml

DATA = Path(__file__).parent / "data"

# (group, resource) -> (version, kind, namespaced, has status subresource)
RESOURCES: dict[tuple[str, str], tuple[str, str, bool, bool]] = {
    ("", "pods"): ("v1", "Pod", True, True),
    ("", "services"): ("v1", "Service", True, True),
    ("", "configmaps"): ("v1", "ConfigMap", True, False),
    ("", "secrets"): ("v1", "Secret", True, False),
    ("", "events"): ("v1", "Event", True, False),
    ("", "namespaces"): ("v1", "Namespace", False, True),
    ("", "nodes"): ("v1", "Node", False, True),
    ("", "resourcequotas"): ("v1", "ResourceQuota", True, True),
    ("", "limitranges"): ("v1", "LimitRange", True, False),
    ("", "serviceaccounts"): ("v1", "ServiceAccount", True, False),
    ("", "persistentvolumeclaims"): ("v1", "PersistentVolumeClaim", True, True),
    ("batch", "jobs"): ("v1", "Job", True, True),
    ("kubeflow.org", "tfjobs"): ("v1", "TFJob", True, True),
    ("scheduling.k8s.io", "priorityclasses"): ("v1", "PriorityClass", False, False),
    ("kueue.x-k8s.io", "localqueues"): ("v1beta1", "LocalQueue", True, True),
    ("kueue.x-k8s.io", "workloads"): ("v1beta1", "Workload", True, True),
    ("rbac.authorization.k8s.io", "roles"): ("v1", "Role", True, False),
    ("rbac.authorization.k8s.io", "rolebindings"): ("v1", "RoleBinding", True, False),
}
NOT_JOB_OBJECTS = (
    "namespaces",
    "nodes",
    "events",
    "serviceaccounts",
    "resourcequotas",
    "limitranges",
    "priorityclasses",
    "localqueues",
    "persistentvolumeclaims",  # storage the cluster has, not a job's object
    "roles",
    "rolebindings",
)
# The default ClusterRole system:basic-user, bound to every authenticated user on a real cluster.
BASIC_USER_RULES = [
    {
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        "verbs": ["create"],
    }
]
# The User-Agent of a test's own client: its requests are logged as not the backend's (granted_by test-client)
TEST_CLIENT_AGENT = "tfk8s-test-client"
SINGULAR = {"pods": "pod", "services": "service", "configmaps": "configmap", "events": "event"}


def now_rfc3339(t: float | None = None) -> str:
    return (
        datetime.fromtimestamp(t if t is not None else time.time(), timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def now_rfc3339_nano(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> float:
    text = text.replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "AlreadyExists",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


# label selectors ----------------------------------------------------------------------------------
_SET_RE = re.compile(r"^\s*(!?)([A-Za-z0-9./_-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def selector_matches(selector: str | None, labels: dict | None) -> bool:
    """Kubernetes label selector semantics: ``=``, ``==``, ``!=``, ``in``, ``notin``, exists, ``!key``."""
    if not selector:
        return True
    labels = labels or {}
    for term in _split_selector(selector):
        term = term.strip()
        if "!=" in term:
            k, v = (s.strip() for s in term.split("!=", 1))
            if labels.get(k) == v:
                return False
        elif "==" in term or ("=" in term and " in " not in term):
            k, v = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(k) != v:
                return False
        else:
            m = _SET_RE.match(term)
            if not m:
                raise ValueError(f"unable to parse requirement: {term!r}")
            neg, key, op, values = m.groups()
            if op:
                vals = {v.strip() for v in values.split(",")}
                inside = labels.get(key) in vals
                if (op == "in") != inside:
                    return False
            elif bool(neg) == (key in labels):
                return False
    return True


def field_matches(selector: str | None, obj: dict) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        neg = "!=" in term
        k, v = term.replace("!=", "=").replace("==", "=").split("=", 1)
        cur = obj
        for part in k.strip().split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (str(cur) == v.strip()) == neg:
            return False
    return True


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(target: dict, ops: list[dict]) -> dict:
    """RFC 6902 JSON patch (add, replace, remove, test)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(idx, op["value"])
            elif kind == "replace":
                parent[idx] = op["value"]
            elif kind == "remove":
                parent.pop(idx)
        elif kind in ("add", "replace"):
            parent[last] = op["value"]
        elif kind == "remove":
            parent.pop(last, None)
        elif kind == "test" and parent.get(last) != op["value"]:
            raise ValueError(f"test failed at {op['path']}")
    return doc


KUBERNETES_VERSION = "1.33"
_tfjob_schema: dict | None = None


def schema_check(group: str, obj: dict) -> None:
    """Validate a created object as a real API server would (strict for core kinds; the CRD for TFJobs)."""
    global _tfjob_schema
    if group == "kubeflow.org":
        import jsonschema

        if _tfjob_schema is None:
            crd = yaml.safe_load((DATA / "kubeflow.org_tfjobs.v1.9.0.yaml").read_text())
            _tfjob_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        try:
            jsonschema.validate(obj, _tfjob_schema)
        except jsonschema.ValidationError as e:
            raise ApiError(422, f"TFJob is invalid: {e.message}", reason="Invalid") from None
        return
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        raise ApiError(422, f"{obj.get('kind')} is invalid: {e.message}", reason="Invalid") from None


# the store ----------------------------------------------------------------------------------------
@dataclass
class WatchEvent:
    rv: int
    group: str
    resource: str
    namespace: str | None
    type: str
    obj: dict


def _qualified(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


class Store:
    """Objects by (group, resource, namespace, name), a global resourceVersion and the event history."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str | None, str], dict] = {}
        self.rv = 100
        self.history: list[WatchEvent] = []
        self.compacted = 0  # watches from a resourceVersion below this answer 410
        self.cond = threading.Condition()
        self.subscribers: list = []

    def _emit(self, group: str, resource: str, etype: str, obj: dict) -> None:
        ev = WatchEvent(self.rv, group, resource, obj["metadata"].get("namespace"), etype, copy.deepcopy(obj))
        self.history.append(ev)
        if len(self.history) > 50_000:
            del self.history[:10_000]
            self.compacted = self.history[0].rv - 1
        self.cond.notify_all()
        return ev

    def _notify(self, events: list[WatchEvent]) -> None:
        for ev in events:
            for cb in list(self.subscribers):
                cb(ev)

    def since(self, rv: int, group: str, resource: str, namespace: str | None) -> list[WatchEvent]:
        """Events after ``rv`` of one resource (caller holds ``cond``)."""
        i = bisect.bisect_right(self.history, rv, key=lambda e: e.rv)
        return [
            e
            for e in self.history[i:]
            if e.group == group and e.resource == resource and (namespace is None or e.namespace == namespace)
        ]

    def get(self, group: str, resource: str, namespace: str | None, name: str) -> dict | None:
        with self.cond:
            obj = self.objects.get((group, resource, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def list(
        self,
        group: str,
        resource: str,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict], int]:
        with self.cond:
            out = [
                copy.deepcopy(o)
                for (g, r, ns, _), o in self.objects.items()
                if g == group
                and r == resource
                and (namespace is None or ns == namespace)
                and selector_matches(label_selector, o["metadata"].get("labels"))
                and field_matches(field_selector, o)
            ]
            return out, self.rv

    def create(self, group: str, resource: str, obj: dict) -> dict:
        version, kind, namespaced, _ = RESOURCES[(group, resource)]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        key = (group, resource, meta.get("namespace") if namespaced else None, meta["name"])
        with self.cond:
            if key in self.objects:
                raise ApiError(409, f'{_qualified(group, resource)} "{meta["name"]}" already exists')
            self.rv += 1
            obj["apiVersion"] = f"{group}/{version}" if group else version
            obj["kind"] = kind
            meta["uid"] = str(uuid.uuid4())
            meta["resourceVersion"] = str(self.rv)
            meta["creationTimestamp"] = now_rfc3339()
            meta["generation"] = 1
            if resource == "pods":
                obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})
            elif resource == "persistentvolumeclaims":
                # bound at once to a volume of the requested size and access modes
                spec = obj.get("spec") or {}
                obj.setdefault(
                    "status",
                    {
                        "phase": "Bound",
                        "accessModes": list(spec.get("accessModes") or []),
                        "capacity": dict((spec.get("resources") or {}).get("requests") or {}),
                    },
                )
            elif resource in ("jobs", "tfjobs", "services"):
                obj.setdefault("status", {})
            self.objects[key] = obj
            ev = self._emit(group, resource, "ADDED", obj)
            out = copy.deepcopy(obj)
        self._notify([ev])
        return out

    def replace(self, group: str, resource: str, obj: dict, check_rv: bool = True) -> dict:
        meta = obj["metadata"]
        namespaced = RESOURCES[(group, resource)][2]
        key = (group, resource, meta.get("namespace") if namespaced else None, meta["name"])
        with self.cond:
            cur = self.objects.get(key)
            if cur is None:
                raise ApiError(404, f'{resource} "{meta["name"]}" not found')
            if check_rv and meta.get("resourceVersion") not in (None, cur["metadata"]["resourceVersion"]):
                raise ApiError(
                    409,
                    f'Operation cannot be fulfilled on {resource} "{meta["name"]}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    reason="Conflict",
                )
            obj = copy.deepcopy(obj)
            self.rv += 1
            for k in ("uid", "creationTimestamp", "generation"):
                obj["metadata"][k] = cur["metadata"][k]
            obj["metadata"]["resourceVersion"] = str(self.rv)
            obj["apiVersion"], obj["kind"] = cur["apiVersion"], cur["kind"]
            self.objects[key] = obj
            ev = self._emit(group, resource, "MODIFIED", obj)
            out = copy.deepcopy(obj)
        self._notify([ev])
        return out

    def update(self, group: str, resource: str, namespace: str | None, name: str, mutate) -> dict:
        """Apply ``mutate(obj)`` (in place) atomically; for controllers."""
        with self.cond:
            cur = self.objects.get((group, resource, namespace, name))
            if cur is None:
                raise ApiError(404, f'{resource} "{name}" not found')
            obj = copy.deepcopy(cur)
            mutate(obj)
            if obj == cur:
                return obj
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.objects[(group, resource, namespace, name)] = obj
            ev = self._emit(group, resource, "MODIFIED", obj)
            out = copy.deepcopy(obj)
        self._notify([ev])
        return out

    def delete(
        self, group: str, resource: str, namespace: str | None, name: str, propagation: str | None
    ) -> dict:
        if propagation is None:
            # As on a real server: deleting a Job through the API orphans its pods unless told otherwise.
            propagation = "Orphan" if (group, resource) == ("batch", "jobs") else "Background"
        events = []
        with self.cond:
            obj = self.objects.pop((group, resource, namespace, name), None)
            if obj is None:
                raise ApiError(404, f'{_qualified(group, resource)} "{name}" not found')
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            events.append(self._emit(group, resource, "DELETED", obj))
            if propagation == "Orphan":
                uid = obj["metadata"]["uid"]
                for (g, r, _ns, _n), child in list(self.objects.items()):
                    refs = child["metadata"].get("ownerReferences") or []
                    if any(ref.get("uid") == uid for ref in refs):
                        child["metadata"]["ownerReferences"] = [ref for ref in refs if ref.get("uid") != uid]
                        self.rv += 1
                        child["metadata"]["resourceVersion"] = str(self.rv)
                        events.append(self._emit(g, r, "MODIFIED", child))
            else:
                self._collect_garbage(events)
        self._notify(events)
        return obj

    def _collect_garbage(self, events: list) -> None:
        """Delete every object all of whose owners are gone (repeat until nothing changes)."""
        while True:
            uids = {o["metadata"]["uid"] for o in self.objects.values()}
            orphans = [
                (k, o)
                for k, o in self.objects.items()
                if o["metadata"].get("ownerReferences")
                and not any(ref.get("uid") in uids for ref in o["metadata"]["ownerReferences"])
            ]
            if not orphans:
                return
            for k, o in orphans:
                del self.objects[k]
                self.rv += 1
                o["metadata"]["resourceVersion"] = str(self.rv)
                events.append(self._emit(k[0], k[1], "DELETED", o))

    def count(self, namespace: str | None = None) -> int:
        """Objects other than namespaces/events (what a test counts as "left behind")."""
        with self.cond:
            return sum(
                1
                for (g, r, ns, _) in self.objects
                if r not in NOT_JOB_OBJECTS and (namespace is None or ns == namespace)
            )


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def body(self) -> dict:
        return status_body(self.code, self.reason, str(self), self.details)


class LogBuffer:
    """One container's output: ``(timestamp, line)`` pairs, plus whether the container has ended."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self.closed = False
        self.cond = threading.Condition()

    def append(self, line: str, t: float | None = None) -> None:
        with self.cond:
            self.lines.append((t if t is not None else time.time(), line.rstrip("\n")))
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


@dataclass
class Fault:
    status: int | None = None
    verb: str | None = None
    resource: str | None = None
    subresource: str | None = None
    name: str | None = None
    namespace: str | None = None
    times: int = 1
    skip: int = 0
    message: str | None = None
    reason: str | None = None
    delay: float = 0.0
    drop_after: int | None = None  # streams: cut the connection after this many items
    seen: int = field(default=0)

    def matches(self, req: dict) -> bool:
        for key in ("verb", "resource", "subresource", "name", "namespace"):
            want = getattr(self, key)
            if want is not None and req.get(key) != want and not (key == "verb" and want == "*"):
                return False
        return True


# the server ---------------------------------------------------------------------------------------


def _rules_allow(rules: list[dict], req: dict) -> bool:
    resource = req["resource"] + (f"/{req['subresource']}" if req.get("subresource") else "")
    for rule in rules:
        groups = rule.get("apiGroups") or []
        if "*" not in groups and req["group"] not in groups:
            continue
        resources = rule.get("resources") or []
        if "*" not in resources and resource not in resources:
            continue
        verbs = rule.get("verbs") or []
        if "*" not in verbs and req["verb"] not in verbs:
            continue
        names = rule.get("resourceNames")
        if names and req.get("name") not in names:
            continue
        return True
    return False


class ApiServer:
    """The test API server. ``with ApiServer() as s: ...`` or ``s.start()`` / ``s.stop()``."""

    def __init__(
        self, namespaces: tuple[str, ...] = ("default",), tfjob_crd: bool = False, validate: bool = False
    ):
        self.store = Store()
        self.request_log: list[dict] = []
        self.faults: list[Fault] = []
        self.rules: list[dict] | None = None
        self.cluster_rules: list[dict] = []  # granted beyond the Role (ClusterRoleBindings), e.g. list nodes
        self.user = "system:serviceaccount:default:tester"
        self.tfjob_crd = tfjob_crd
        self.kueue = False  # Kueue's CRDs installed (localqueues served)
        # Kueue's visibility API (visibility.kueue.x-k8s.io/v1beta1 localqueues/pendingworkloads): a callable
        # (namespace, localqueue, query) -> PendingWorkloadsSummary, set by tests/k8s/kueue.py's TestKueue
        self.visibility = None
        # ServiceAccount tokens (TokenRequest: POST .../serviceaccounts/{name}/token) -> (namespace, name): a
        # request bearing one is authorized by the Roles bound to that ServiceAccount (RoleBindings), alone
        self.tokens: dict[str, tuple[str, str]] = {}
        # bearer tokens of an administrator (the tests' own reads and setup): kept out of the backend's
        # requests in the log (granted_by "cluster-admin"), always allowed
        self.admin_tokens: set[str] = set()
        self._caller = (
            threading.local()
        )  # the bearer token (and User-Agent) of the request this thread serves
        self.validate = validate  # check created objects against the real schemas (422 when invalid)
        self.watch_versions: list[str | None] = []  # the resourceVersion of every watch request
        self.gone_sent = 0  # watches answered with 410 Gone
        # (pod uid, container) -> runs: a pod's logs are the pod object's, so a new pod given an old pod's name
        # starts with no log history (``previous`` is never the old pod's)
        self.logs: dict[tuple[str, str], list[LogBuffer]] = {}
        self.log_pods: dict[str, str] = {}  # pod uid -> "namespace/name", kept after the pod is deleted
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        for ns in namespaces:
            self.add_namespace(ns)

    # lifecycle -------------------------------------------------------------------------------------
    def start(self) -> ApiServer:
        server = self

        class Handler(_Handler):
            api = server

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="test-apiserver", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self.store.cond:
            self.store.cond.notify_all()
        for runs in list(self.logs.values()):
            for buf in runs:
                with buf.cond:
                    buf.cond.notify_all()
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def kubeconfig(
        self, path: Path, namespace: str = "default", contexts: dict[str, str] | None = None
    ) -> Path:
        """Write a kubeconfig pointing at this server; ``contexts`` maps extra context names to namespaces."""
        contexts = {"test": namespace, **(contexts or {})}
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [
                {"name": n, "context": {"cluster": "test", "user": "tester", "namespace": ns}}
                for n, ns in contexts.items()
            ],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(cfg))
        return path

    # state helpers ---------------------------------------------------------------------------------
    def add_namespace(self, name: str) -> None:
        self.store.create("", "namespaces", {"metadata": {"name": name}, "status": {"phase": "Active"}})

    def objects(
        self, resource: str | None = None, namespace: str | None = None, group: str | None = None
    ) -> list[dict]:
        with self.store.cond:
            return [
                copy.deepcopy(o)
                for (g, r, ns, _), o in self.store.objects.items()
                if (resource is None or r == resource)
                and (group is None or g == group)
                and (namespace is None or ns == namespace)
                and r not in NOT_JOB_OBJECTS
            ]

    def count(self, namespace: str | None = None) -> int:
        return self.store.count(namespace)

    def log_buffer(
        self, namespace: str, pod: str, container: str, new: bool = False, uid: str | None = None
    ) -> LogBuffer:
        """The current (or, with ``new``, a fresh) log of a container; the test kubelet writes into it.

        ``uid`` names the pod object (the test kubelet passes it); without it, the current pod of that name."""
        if uid is None:
            obj = self.store.get("", "pods", namespace, pod)
            uid = obj["metadata"]["uid"] if obj is not None else f"{namespace}/{pod}"
        with self._lock:
            self.log_pods.setdefault(uid, f"{namespace}/{pod}")
            runs = self.logs.setdefault((uid, container), [])
            if new or not runs:
                runs.append(LogBuffer())
            return runs[-1]

    # fault injection -------------------------------------------------------------------------------
    def fail(self, status: int, **match) -> Fault:
        """Answer the matching request(s) with ``status`` (a real Status body).

        ``match`` takes verb, resource, subresource, name, namespace, ``times`` (default 1), ``skip``
        (let that many matching requests pass first), ``message`` and ``reason``.
        """
        f = Fault(status=status, **match)
        self.faults.append(f)
        return f

    def delay(self, seconds: float, **match) -> Fault:
        f = Fault(delay=seconds, **match)
        self.faults.append(f)
        return f

    def drop_streams(self, after: int, verb: str = "watch", **match) -> Fault:
        """Cut matching streams (``watch`` events or pod ``log`` lines) mid-way after ``after`` items."""
        f = Fault(drop_after=after, verb=verb, **match)
        self.faults.append(f)
        return f

    def expire(self) -> None:
        """Compact the history: every watch resumed from a resourceVersion seen so far gets 410 Gone."""
        with self.store.cond:
            self.store.compacted = self.store.rv + 1
            self.store.cond.notify_all()

    def enforce_rules(self, rules: list[dict] | None) -> None:
        """Allow only what these RBAC PolicyRules allow (``None``: allow everything), plus what the default
        ClusterRole ``system:basic-user`` allows (``SelfSubjectAccessReview``) and :attr:`cluster_rules`."""
        self.rules = rules

    def grant_cluster_rules(self, rules: list[dict]) -> None:
        """Rules bound cluster-wide beyond the Role (a ClusterRoleBinding), e.g. ``list nodes``."""
        self.cluster_rules = list(rules)

    def granted_by(self, req: dict) -> str | None:
        """Which grant allows ``req`` when the Role does not: ``system:basic-user``, ``clusterrole`` or None."""
        if _rules_allow(BASIC_USER_RULES, req):
            return "system:basic-user"
        if (
            self.rules is not None
            and not _rules_allow(self.rules, req)
            and _rules_allow(self.cluster_rules, req)
        ):
            return "clusterrole"
        return None

    def _bearer(self) -> str | None:
        return getattr(self._caller, "token", None)

    def service_account_rules(self, token: str, namespace: str | None) -> list[dict]:
        """The rules of the Roles bound to the token's ServiceAccount in ``namespace`` (RoleBindings)."""
        sa_ns, sa = self.tokens[token]
        rules: list[dict] = []
        if namespace is None:
            return rules
        for binding in self.store.list("rbac.authorization.k8s.io", "rolebindings", namespace)[0]:
            subjects = binding.get("subjects") or []
            if not any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == sa
                and s.get("namespace", namespace) == sa_ns
                for s in subjects
            ):
                continue
            ref = binding.get("roleRef") or {}
            role = self.store.get("rbac.authorization.k8s.io", "roles", namespace, ref.get("name", ""))
            if ref.get("kind") == "Role" and role:
                rules.extend(role.get("rules") or [])
        return rules

    def allowed(self, req: dict) -> bool:
        token = self._bearer()
        if token in self.admin_tokens:
            return True
        if token in self.tokens:
            rules = self.service_account_rules(token, req.get("namespace"))
            return _rules_allow(rules, req) or _rules_allow(BASIC_USER_RULES, req)
        if self.rules is None:
            return True
        return any(_rules_allow(r, req) for r in (self.rules, BASIC_USER_RULES, self.cluster_rules))

    def review(self, body: dict) -> dict:
        """The answer to a SelfSubjectAccessReview, from the same rules that authorize requests."""
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        req = {
            "verb": attrs.get("verb", ""),
            "group": attrs.get("group", ""),
            "resource": attrs.get("resource", ""),
            "subresource": attrs.get("subresource") or None,
            "namespace": attrs.get("namespace") or None,
            "name": attrs.get("name") or None,
        }
        allowed = self.allowed(req)
        status = {"allowed": allowed}
        if allowed and self.rules is not None:
            status["reason"] = "RBAC: allowed by the test server's rules"
        return {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "metadata": {"creationTimestamp": None},
            "spec": body.get("spec") or {},
            "status": status,
        }

    def add_claim(
        self, namespace: str, name: str, access_modes: tuple[str, ...] = ("ReadWriteMany",), size: str = "1Gi"
    ) -> dict:
        """A PersistentVolumeClaim, bound at once (the test kubelet maps it to a host directory)."""
        return self.store.create(
            "",
            "persistentvolumeclaims",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"accessModes": list(access_modes), "resources": {"requests": {"storage": size}}},
            },
        )

    def add_node(
        self,
        name: str,
        allocatable: dict[str, str],
        labels: dict[str, str] | None = None,
        taints: list[dict] | None = None,
        unschedulable: bool = False,
    ) -> None:
        """A Node with these allocatable resources (the test kubelet adds its own)."""
        self.store.create(
            "",
            "nodes",
            {
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
                "spec": {"taints": taints or [], "unschedulable": unschedulable},
                "status": {"allocatable": dict(allocatable), "capacity": dict(allocatable)},
            },
        )

    def add_quota(
        self, namespace: str, name: str, hard: dict[str, str], used: dict[str, str] | None = None
    ) -> None:
        """A ResourceQuota with its status (what the quota controller would report)."""
        self.store.create(
            "",
            "resourcequotas",
            {
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"hard": dict(hard)},
                "status": {"hard": dict(hard), "used": {k: "0" for k in hard} | (used or {})},
            },
        )

    def add_limitrange(self, namespace: str, name: str, limits: list[dict]) -> dict:
        """A LimitRange (``spec.limits``: items of type Container / Pod with max, min, default,
        defaultRequest, maxLimitRequestRatio)."""
        return self.store.create(
            "",
            "limitranges",
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"limits": limits},
            },
        )

    def _take_fault(self, req: dict, stream: bool = False) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if (f.drop_after is not None) != stream or (not stream and f.status is None):
                    continue
                if not f.matches(req) or f.times <= 0:
                    continue
                f.seen += 1
                if f.seen <= f.skip:
                    continue
                f.times -= 1
                return f
        return None

    def log_request(self, req: dict, status: int) -> None:
        entry = {k: req.get(k) for k in ("verb", "group", "resource", "subresource", "namespace", "name")}
        entry["status"] = status
        by = "cluster-admin" if self._bearer() in self.admin_tokens else self.granted_by(req)
        if (getattr(self._caller, "agent", None) or "").startswith(TEST_CLIENT_AGENT):
            by = "test-client"  # a test's own request (e.g. a probe that must be refused), not the backend's
        if by:
            entry["granted_by"] = by  # not the Role: the least-privilege comparison leaves it out
        with self._lock:
            self.request_log.append(entry)


def _qty(v) -> float:
    s = str(v)
    for suffix, f in (
        ("m", 1e-3),
        ("Ki", 2**10),
        ("Mi", 2**20),
        ("Gi", 2**30),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ):
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * f
    return float(s)


def limitrange_refusal(store: Store, namespace: str, pod: dict) -> str | None:
    """Why the LimitRanger admission plugin refuses ``pod`` (a Container item's max / min, after its
    defaults are applied as the API server does), or None."""
    for lr in store.list("", "limitranges", namespace)[0]:
        for item in (lr.get("spec") or {}).get("limits") or []:
            if item.get("type", "Container") != "Container":
                continue
            default = {**(item.get("max") or {}), **(item.get("default") or {})}
            default_request = {**(item.get("min") or {}), **default, **(item.get("defaultRequest") or {})}
            for c in pod["spec"]["containers"]:
                res = c.get("resources") or {}
                limits = {**default, **(res.get("limits") or {})}
                requests = {**default_request, **(res.get("requests") or {})}
                for key, top in (item.get("max") or {}).items():
                    if key in limits and _qty(limits[key]) > _qty(top):
                        return f"maximum {key} usage per Container is {top}, but limit is {limits[key]}"
                for key, low in (item.get("min") or {}).items():
                    if key in requests and _qty(requests[key]) < _qty(low):
                        return f"minimum {key} usage per Container is {low}, but request is {requests[key]}"
    return None


class _Abort(Exception):
    """Cut the connection without finishing the response (a dropped stream)."""


class _Handler(BaseHTTPRequestHandler):
    api: ApiServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the delayed-ACK stall

    def log_message(self, *args) -> None:  # quiet
        pass

    # plumbing ---------------------------------------------------------------------------------
    def _send_json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        if self.req is not None and not self.logged:
            # logged before the answer leaves: a client acting on the answer finds its request in the log
            self.logged = True
            self.api.log_request(self.req, code)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_chunked(self, content_type: str) -> None:
        self.streaming = True
        if not self.logged:
            self.logged = True
            self.api.log_request(self.req, 200)  # streams are logged when they start, not when they end
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _body(self):
        raw = self.raw_body
        return json.loads(raw) if raw else None

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # routing ----------------------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict) -> dict | None:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, rest = "", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, rest = parts[1], parts[3:]
        else:
            return None
        namespace = None
        if len(rest) > 2 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return None
        resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
        watch = query.get("watch", [""])[0] in ("true", "1")
        verb = {
            "GET": "watch" if watch else ("get" if name else "list"),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }[method]
        return {
            "verb": verb,
            "group": group,
            "resource": resource,
            "subresource": sub,
            "namespace": namespace,
            "name": name,
        }

    def _dispatch(self, method: str) -> None:
        # read the body first: an error answered before reading it would corrupt the kept-alive connection
        n = int(self.headers.get("Content-Length") or 0)
        self.raw_body = self.rfile.read(n) if n else b""
        url = urlparse(self.path)
        query = parse_qs(url.query)
        req = self._route(method, url.path, query)
        self.req = req
        auth = self.headers.get("Authorization") or ""
        self.api._caller.token = auth[7:] if auth.startswith("Bearer ") else None
        self.api._caller.agent = self.headers.get("User-Agent")
        if req is None:
            return self._discovery(url.path, method)
        api = self.api
        status = 500
        self.streaming = False
        self.logged = False
        try:
            try:
                for f in [f for f in api.faults if f.delay and f.matches(req)]:
                    if f.times > 0:
                        f.times -= 1
                        time.sleep(f.delay)
                if not api.allowed(req):
                    sub = f"/{req['subresource']}" if req["subresource"] else ""
                    what = f"{req['resource']}{sub}"
                    named = f' "{req["name"]}"' if req["name"] else ""
                    where = f' in the namespace "{req["namespace"]}"' if req["namespace"] else ""
                    raise ApiError(
                        403,
                        f'{what}{named} is forbidden: User "{api.user}" cannot {req["verb"]} resource '
                        f'"{what}" in API group "{req["group"]}"{where}',
                        details={"name": req["name"] or "", "kind": req["resource"]},
                    )
                fault = api._take_fault(req)
                if fault and fault.status:
                    raise ApiError(
                        fault.status, fault.message or f"injected {fault.status}", reason=fault.reason
                    )
                if (req["group"], req["resource"], method) == (
                    "authorization.k8s.io",
                    "selfsubjectaccessreviews",
                    "POST",
                ):
                    status = 201
                    self._send_json(201, api.review(self._body() or {}))
                    return
                if (req["group"], req["resource"], req["subresource"], req["verb"]) == (
                    "",
                    "serviceaccounts",
                    "token",
                    "create",
                ):
                    status = 201
                    self._send_json(201, self._token_request(req))
                    return
                if req["group"] == "visibility.kueue.x-k8s.io" and api.visibility is not None:
                    if (req["resource"], req["subresource"], req["verb"]) != (
                        "localqueues",
                        "pendingworkloads",
                        "get",
                    ):
                        raise ApiError(404, "the server could not find the requested resource")
                    summary = api.visibility(
                        req["namespace"], req["name"], {k: v[0] for k, v in query.items()}
                    )
                    status = 200
                    self._send_json(200, summary)
                    return
                if (
                    (req["group"], req["resource"]) not in RESOURCES
                    or (req["group"] == "kubeflow.org" and not api.tfjob_crd)
                    or (req["group"] == "kueue.x-k8s.io" and not api.kueue)
                ):
                    raise ApiError(404, "the server could not find the requested resource")
                status = self._handle(method, req, query)
            except ApiError as e:
                status = e.code
                self._send_json(e.code, e.body())
            except (_Abort, BrokenPipeError, ConnectionResetError):
                raise
            except Exception as e:  # a bug here must answer 500, not drop the connection
                status = 500
                self._send_json(500, status_body(500, "InternalError", f"{type(e).__name__}: {e}"))
        except _Abort:
            self.close_connection = True
            status = 200
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            if getattr(self, "streaming", False):
                status = 200  # the client went away mid-stream (it stopped following)
        finally:
            if not self.logged:
                api.log_request(req, status)

    def _token_request(self, req: dict) -> dict:
        """A TokenRequest for a ServiceAccount: a new bearer token authorized by its RoleBindings."""
        ns, name = req["namespace"], req["name"]
        if self.api.store.get("", "serviceaccounts", ns, name) is None:
            raise ApiError(
                404, f'serviceaccounts "{name}" not found', details={"name": name, "kind": "serviceaccounts"}
            )
        token = f"sa-{uuid.uuid4().hex}"
        self.api.tokens[token] = (ns, name)
        body = self._body() or {}
        seconds = int((body.get("spec") or {}).get("expirationSeconds") or 3600)
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": now_rfc3339()},
            "spec": {**(body.get("spec") or {}), "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": now_rfc3339(time.time() + seconds)},
        }

    def _discovery(self, path: str, method: str) -> None:
        api = self.api
        path = path.rstrip("/") or "/"
        groups = [("batch", "v1")] + ([("kubeflow.org", "v1")] if api.tfjob_crd else [])
        groups += [("kueue.x-k8s.io", "v1beta1")] if api.kueue else []
        groups += [("visibility.kueue.x-k8s.io", "v1beta1")] if api.visibility is not None else []
        if path == "/api":
            return self._send_json(
                200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            )
        if path == "/version":
            return self._send_json(
                200,
                {"major": "1", "minor": "33", "gitVersion": "v1.33.0-tfk8s-test", "platform": "linux/amd64"},
            )
        if path == "/apis":
            return self._send_json(
                200,
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": g,
                            "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                            "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                        }
                        for g, v in groups
                    ],
                },
            )
        gv = path.strip("/").split("/")
        if (len(gv) == 3 and gv[0] == "apis" and (gv[1], gv[2]) in groups) or gv == ["api", "v1"]:
            group = "" if gv[0] == "api" else gv[1]
            resources = [
                {
                    "name": r,
                    "singularName": SINGULAR.get(r, r[:-1]),
                    "namespaced": ns,
                    "kind": kind,
                    "verbs": [
                        "create",
                        "delete",
                        "deletecollection",
                        "get",
                        "list",
                        "patch",
                        "update",
                        "watch",
                    ],
                }
                for (g, r), (_, kind, ns, _) in RESOURCES.items()
                if g == group
            ]
            return self._send_json(
                200,
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": "v1" if not group else f"{group}/{gv[2]}",
                    "resources": resources,
                },
            )
        self._send_json(404, status_body(404, "NotFound", "the server could not find the requested resource"))

    # handlers ---------------------------------------------------------------------------------
    def _handle(self, method: str, req: dict, query: dict) -> int:
        store = self.api.store
        g, r, ns, name, sub, verb = (
            req[k] for k in ("group", "resource", "namespace", "name", "subresource", "verb")
        )
        namespaced = RESOURCES[(g, r)][2]
        if namespaced and ns is not None and store.get("", "namespaces", None, ns) is None:
            raise ApiError(404, f'namespaces "{ns}" not found', details={"name": ns, "kind": "namespaces"})
        q = {k: v[0] for k, v in query.items()}
        if r == "pods" and sub == "log":
            return self._pod_log(ns, name, q)
        if verb == "watch":
            return self._watch(g, r, ns, q)
        if verb == "list":
            items, rv = store.list(g, r, ns, q.get("labelSelector"), q.get("fieldSelector"))
            kind = RESOURCES[(g, r)][1]
            self._send_json(
                200,
                {
                    "kind": f"{kind}List",
                    "apiVersion": f"{g}/v1" if g else "v1",
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                },
            )
            return 200
        if verb == "get":
            obj = store.get(g, r, ns, name)
            if obj is None:
                raise ApiError(
                    404, f'{_qualified(g, r)} "{name}" not found', details={"name": name, "kind": r}
                )
            self._send_json(200, obj)
            return 200
        if verb == "create":
            body = self._body() or {}
            body.setdefault("metadata", {})
            if namespaced:
                if body["metadata"].get("namespace") not in (None, ns):
                    raise ApiError(
                        400,
                        "the namespace of the provided object does not match the namespace sent on the request",
                    )
                body["metadata"]["namespace"] = ns
            if self.api.validate:
                version, kind = RESOURCES[(g, r)][:2]
                body.setdefault("apiVersion", f"{g}/{version}" if g else version)
                body.setdefault("kind", kind)
                schema_check(g, body)
            if not body["metadata"].get("name") and not body["metadata"].get("generateName"):
                raise ApiError(
                    422,
                    f"{RESOURCES[(g, r)][1]} is invalid: metadata.name: Required value: name or generateName is required",
                    reason="Invalid",
                )
            if r == "pods" and (refused := limitrange_refusal(store, ns, body)):
                name = body["metadata"].get("name") or body["metadata"].get("generateName", "")
                raise ApiError(403, f'pods "{name}" is forbidden: {refused}', reason="Forbidden")
            obj = store.create(g, r, body)
            self._send_json(201, obj)
            return 201
        if verb in ("patch", "update"):
            cur = store.get(g, r, ns, name)
            if cur is None:
                raise ApiError(404, f'{r} "{name}" not found')
            body = self._body()
            has_status = RESOURCES[(g, r)][3]
            if verb == "patch":
                ctype = self.headers.get("Content-Type", "")
                new = (
                    json_patch(cur, body)
                    if "json-patch" in ctype or isinstance(body, list)
                    else merge_patch(cur, body)
                )
                new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
            else:
                new = body
            if has_status:
                if sub == "status":
                    new = {**cur, "status": new.get("status", {})}
                else:
                    new["status"] = cur.get("status", {})
            obj = store.replace(g, r, new, check_rv=(verb == "update"))
            self._send_json(200, obj)
            return 200
        if verb == "delete":
            body = self._body() or {}
            prop = q.get("propagationPolicy") or body.get("propagationPolicy")
            if body.get("orphanDependents") is True:
                prop = "Orphan"
            obj = store.delete(g, r, ns, name, prop)
            self._send_json(200, obj)
            return 200
        if verb == "deletecollection":
            body = self._body() or {}
            prop = q.get("propagationPolicy") or body.get("propagationPolicy")
            items, _ = store.list(g, r, ns, q.get("labelSelector"), q.get("fieldSelector"))
            for o in items:
                try:
                    store.delete(g, r, ns, o["metadata"]["name"], prop)
                except ApiError:
                    pass
            self._send_json(200, {**status_body(200, "", ""), "status": "Success"})
            return 200
        raise ApiError(405, f"{verb} is not supported", reason="MethodNotAllowed")

    def _watch(self, g: str, r: str, ns: str | None, q: dict) -> int:
        api, store = self.api, self.api.store
        selector = q.get("labelSelector")
        timeout = float(q.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        rv_param = q.get("resourceVersion")
        api.watch_versions.append(rv_param)
        fault = api._take_fault(
            {"verb": "watch", "group": g, "resource": r, "subresource": None, "namespace": ns, "name": None},
            stream=True,
        )
        self._start_chunked("application/json")
        sent = 0

        def send(etype: str, obj: dict) -> None:
            nonlocal sent
            if fault is not None and sent >= fault.drop_after:
                raise _Abort()
            self._chunk((json.dumps({"type": etype, "object": obj}) + "\n").encode())
            sent += 1

        with store.cond:
            if rv_param in (None, "", "0"):
                items, last = store.list(g, r, ns, selector)
                pending = [("ADDED", o) for o in items]
            else:
                last = int(rv_param)
                pending = []
                if last < store.compacted:
                    gone = status_body(
                        410, "Expired", f"too old resource version: {last} ({store.compacted})"
                    )
                    pending = [("ERROR", gone)]
                    api.gone_sent += 1
                    last = None
        for etype, obj in pending:
            send(etype, obj)
        if last is None:
            self._end_chunked()
            return 200
        while not api._stopping.is_set():
            with store.cond:
                if last < store.compacted:
                    # history compacted under a running watch: the server ends it; resuming answers 410
                    break
                new = store.since(last, g, r, ns)
                if not new:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    store.cond.wait(min(left, 0.5))
                    continue
                last = new[-1].rv
            for e in new:
                if selector_matches(selector, e.obj["metadata"].get("labels")):
                    send(e.type, e.obj)
        self._end_chunked()
        return 200

    def _pod_log(self, ns: str, name: str, q: dict) -> int:
        api = self.api
        pod = api.store.get("", "pods", ns, name)
        if pod is None:
            raise ApiError(404, f'pods "{name}" not found', details={"name": name, "kind": "pods"})
        container = q.get("container") or pod["spec"]["containers"][0]["name"]
        runs = api.logs.get((pod["metadata"]["uid"], container)) or []
        previous = q.get("previous") in ("true", "1")
        if previous:
            if len(runs) < 2:
                raise ApiError(400, f'previous terminated container "{container}" in pod "{name}" not found')
            buf = runs[-2]
        elif not runs:
            raise ApiError(
                400,
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating',
            )
        else:
            buf = runs[-1]
        follow = q.get("follow") in ("true", "1") and not previous
        stamps = q.get("timestamps") in ("true", "1")
        since = parse_rfc3339(q["sinceTime"]) if q.get("sinceTime") else None
        if q.get("sinceSeconds"):
            since = time.time() - float(q["sinceSeconds"])
        tail = int(q["tailLines"]) if q.get("tailLines") else None
        fault = api._take_fault(
            {
                "verb": "get",
                "group": "",
                "resource": "pods",
                "subresource": "log",
                "namespace": ns,
                "name": name,
            },
            stream=True,
        )
        self._start_chunked("text/plain")
        sent = 0
        with buf.cond:
            lines = list(buf.lines)
        pos = len(lines)
        if since is not None:
            lines = [(t, s) for t, s in lines if t >= since]
        if tail is not None:
            lines = lines[-tail:] if tail else []

        def send(batch):
            nonlocal sent
            out = []
            for t, s in batch:
                if fault is not None and sent >= fault.drop_after:
                    if out:
                        self._chunk("".join(out).encode())
                    raise _Abort()
                out.append((f"{now_rfc3339_nano(t)} " if stamps else "") + s + "\n")
                sent += 1
            if out:
                self._chunk("".join(out).encode())

        send(lines)
        while follow and not api._stopping.is_set():
            with buf.cond:
                if len(buf.lines) == pos:
                    if buf.closed:
                        break
                    buf.cond.wait(0.5)
                    continue
                batch = buf.lines[pos:]
                pos = len(buf.lines)
            send(batch)
        self._end_chunked()
        return 200
