"""The per-user-namespace hub hook (values-per-user-namespace.yaml), run with recording stand-ins for
KubeSpawner's Kubernetes clients: each user namespace gets a valid ServiceAccount, a RoleBinding to the
tfk8s-jobs ClusterRole and the same replica NetworkPolicy as shared mode; "already exists" is harmless; the
hub's ClusterRole grants exactly the creates the hook makes (plus what KubeSpawner itself needs)."""

from __future__ import annotations

import asyncio
import sys
import types

import pytest
from deploytools import (
    DEPLOY,
    OVERLAYS,
    find_object,
    helm_merge,
    load_yaml,
    render_overlay,
    rule_permissions,
    validation_errors,
)
from traitlets.config import Config

VALUES = DEPLOY / "jupyterhub" / "values.yaml"
PER_USER = DEPLOY / "jupyterhub" / "values-per-user-namespace.yaml"

# client method -> (apiVersion, kind, resource permission the hub needs)
METHODS = {
    "create_namespace": ("v1", "Namespace", ("", "namespaces", None, "create")),
    "create_namespaced_service_account": ("v1", "ServiceAccount", ("", "serviceaccounts", None, "create")),
    "create_namespaced_role_binding": (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        ("rbac.authorization.k8s.io", "rolebindings", None, "create"),
    ),
    "create_namespaced_network_policy": (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        ("networking.k8s.io", "networkpolicies", None, "create"),
    ),
}


class ApiException(Exception):
    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class RecordingClient:
    """Answers every ``create_*`` like kubernetes_asyncio would, recording (method, namespace, body)."""

    def __init__(self, calls: list, fail: dict[str, int]):
        self.calls, self.fail = calls, fail

    def __getattr__(self, method: str):
        async def call(*args):
            ns, body = (None, args[0]) if len(args) == 1 else args
            self.calls.append((method, ns, body))
            if method in self.fail:
                raise ApiException(self.fail[method])

        return call


def install_hub_modules(monkeypatch, calls: list, fail: dict[str, int]) -> None:
    """The modules the hub's extraConfig imports (kubespawner's shared client, kubernetes_asyncio's
    ApiException), as stand-ins whose client records every request in ``calls``."""
    rest = types.ModuleType("kubernetes_asyncio.client.rest")
    rest.ApiException = ApiException
    clients = types.ModuleType("kubespawner.clients")
    clients.shared_client = lambda kind: RecordingClient(calls, fail)
    for name, module in {
        "kubernetes_asyncio": types.ModuleType("kubernetes_asyncio"),
        "kubernetes_asyncio.client": types.ModuleType("kubernetes_asyncio.client"),
        "kubernetes_asyncio.client.rest": rest,
        "kubespawner": types.ModuleType("kubespawner"),
        "kubespawner.clients": clients,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)


@pytest.fixture
def hook(monkeypatch):
    """The hook function and the KubeSpawner config the extraConfig sets; ``calls`` records requests."""
    calls: list = []
    fail: dict[str, int] = {}
    install_hub_modules(monkeypatch, calls, fail)
    merged = helm_merge(load_yaml(VALUES), load_yaml(PER_USER))
    namespace = {"c": Config()}
    exec(compile(merged["hub"]["extraConfig"]["tfk8s-user-namespaces"], "extraConfig", "exec"), namespace)
    return namespace["c"], namespace["c"].KubeSpawner.pre_spawn_hook, calls, fail, merged


def run(hook_fn, namespace: str = "jhub-alice") -> None:
    asyncio.run(hook_fn(types.SimpleNamespace(namespace=namespace)))


def objects_of(calls) -> list[dict]:
    out = []
    for method, ns, body in calls:
        api_version, kind, _ = METHODS[method]
        obj = {"apiVersion": api_version, "kind": kind, **body}
        if ns:
            obj["metadata"] = {**obj["metadata"], "namespace": ns}
        out.append(obj)
    return out


def test_the_hook_prepares_a_valid_user_namespace(hook):
    c, fn, calls, _, merged = hook
    assert c.KubeSpawner.enable_user_namespaces is True
    assert "{username}" in c.KubeSpawner.user_namespace_template
    run(fn)
    objs = objects_of(calls)
    assert [o["kind"] for o in objs] == ["Namespace", "ServiceAccount", "RoleBinding", "NetworkPolicy"]
    assert validation_errors(objs) == []
    assert all(o["metadata"].get("namespace", "jhub-alice") == "jhub-alice" for o in objs)
    sa = objs[1]["metadata"]["name"]
    assert sa == merged["singleuser"]["serviceAccountName"]
    binding = objs[2]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "tfk8s-jobs",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "jhub-alice"}]
    shared_policy = find_object(
        render_overlay(OVERLAYS / "shared-namespace"), "NetworkPolicy", "tfk8s-replicas"
    )
    assert objs[3]["spec"] == shared_policy["spec"]


def test_already_existing_objects_are_fine_and_other_errors_stop_the_spawn(hook):
    _, fn, calls, fail, _ = hook
    fail.update({m: 409 for m in METHODS})
    run(fn)  # a server restart: everything exists already
    assert len(calls) == len(METHODS)
    fail["create_namespaced_role_binding"] = 403
    with pytest.raises(ApiException):
        run(fn)


def test_the_hub_may_make_exactly_these_creates(hook):
    _, fn, calls, _, _ = hook
    run(fn)
    hub = find_object(
        render_overlay(OVERLAYS / "per-user-namespace"), "ClusterRole", "tfk8s-hub-user-namespaces"
    )
    granted = rule_permissions(hub["rules"])
    needed = {METHODS[m][2] for m, _, _ in calls}
    assert needed <= granted.keys(), sorted(needed - granted.keys())
    kubespawner = {
        ("", r, None, v)
        for r in ("pods", "persistentvolumeclaims", "services")
        for v in ("get", "list", "watch", "create", "delete")
    }
    kubespawner |= {("", "events", None, v) for v in ("get", "list", "watch")} | {
        ("", "namespaces", None, "get")
    }
    kubespawner |= {("rbac.authorization.k8s.io", "clusterroles", None, "bind")}
    extra = granted.keys() - needed - kubespawner
    assert not extra, (
        f"the hub's ClusterRole grants what neither the hook nor KubeSpawner uses: {sorted(extra)}"
    )
