"""Least privilege, proven: the Role tfk8s-jobs grants exactly the (apiGroup, resource, subresource, verb)
set the Kubernetes backend uses, taken from the test API server's request log while the backend does
everything a user does; with the Role enforced the backend works end to end, and with one rule missing the
backend's 403 diagnostic names the verb, the resource and the namespace.

The requests of the whole Kubernetes test suite are checked too:
``test_the_whole_kubernetes_suite_uses_nothing_the_role_lacks`` runs last in any pytest session and reads
what the session's Kubernetes tests recorded. Against a file recorded earlier::

    TFK8S_REQUEST_LOG=/tmp/k8s-requests.jsonl .venv/bin/python -m pytest -m k8s tests/k8s
    TFK8S_SUITE_REQUEST_LOG=/tmp/k8s-requests.jsonl .venv/bin/python -m pytest tests/deploy -k whole
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import threading
from pathlib import Path

import k8s_scenarios as sc  # noqa: I001  (puts tests/k8s on the path)
import pytest
from deploytools import (
    OVERLAYS,
    ROOT,
    Permission,
    find_object,
    format_permission,
    format_rule,
    render_overlay,
    request_permission,
    rule_permissions,
)

from tfk8s_jupyter.backends.base import Forbidden

pytestmark = pytest.mark.k8s

ROLE_FILE = "deploy/kubernetes/base/role.yaml"
BACKEND = ROOT / "tfk8s_jupyter" / "backends" / "kubernetes"  # the only package that imports kubernetes


def role_rules() -> list[dict]:
    role = find_object(render_overlay(OVERLAYS / "shared-namespace"), "Role", "tfk8s-jobs")
    return role["rules"]


def compare(rules: list[dict], requests: list[dict]) -> tuple[list[str], list[str]]:
    """(calls the rules do not grant, grants no call uses), each as one sentence naming the call or rule."""
    granted = rule_permissions(rules)
    used: dict[Permission, dict] = {}
    for entry in requests:
        if entry.get("granted_by"):
            # allowed by a default ClusterRole (SelfSubjectAccessReview: system:basic-user) or an optional
            # cluster-wide grant the preflight asks about first (list nodes): not the Role's business
            continue
        used.setdefault(request_permission(entry), entry)
    missing = [
        f"the backend calls {format_permission(p)} — e.g. {e['verb']} "
        f"{e['namespace'] or '-'}/{e['name'] or '*'} during {e.get('scenario') or e.get('test') or '?'} — "
        f"but the Role does not grant it; add it to {ROLE_FILE}"
        for p, e in sorted(used.items(), key=lambda kv: str(kv[0]))
        if p not in granted
    ]
    unused = [
        f"rule #{i} ({format_rule(rules[i])}) grants {format_permission(p)}, which the backend never uses; "
        f"remove it from {ROLE_FILE}"
        for p, i in sorted(granted.items(), key=lambda kv: str(kv[0]))
        if p not in used
    ]
    return missing, unused


def rules_without(rules: list[dict], perm: Permission) -> list[dict]:
    group, resource, sub, verb = perm
    name = f"{resource}/{sub}" if sub else resource
    out = []
    for rule in copy.deepcopy(rules):
        if group in rule["apiGroups"] and name in rule["resources"] and verb in rule["verbs"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
            if not rule["verbs"]:
                continue
        out.append(rule)
    assert rule_permissions(out).keys() == rule_permissions(rules).keys() - {perm}
    return out


def run_everything(tmp_path: Path, rules: list[dict] | None) -> list[dict]:
    """Every scenario, each on its own test cluster; the union of the request logs, tagged by scenario."""
    log: list[dict] = []

    def keep(server, scenario):
        log.extend({**e, "scenario": scenario} for e in server.request_log)

    with sc.test_cluster(tmp_path / "native", rules=rules) as (server, _, kc):
        sc.native_lifecycle(kc, tmp_path / "native")
        keep(server, "native lifecycle (submit, watch, logs, list, attach, stop, delete)")
    with sc.test_cluster(tmp_path / "undo", rules=rules) as (server, _, kc):
        sc.failed_submission(server, kc)
        keep(server, "a failed submission undone")
    with sc.test_cluster(tmp_path / "tfjob", tfjob_crd=True, rules=rules) as (server, _, kc):
        sc.tfjob_lifecycle(kc)
        keep(server, "TFJob lifecycle (discovery, submit, get, stop, delete)")
    with sc.test_cluster(tmp_path / "quota", rules=rules, pod_quota=1) as (server, _, kc):
        status = sc.diagnostics_lifecycle(kc)
        assert "quota" in (status.message or ""), status.message
        keep(server, "diagnostics (quota exceeded)")
    return log


@pytest.fixture(scope="module")
def used(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("least-privilege")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TFK8S_HOME", str(tmp / "home"))
        mp.setenv("JUPYTERHUB_USER", "alice")
        return run_everything(tmp, rules=None)


def test_the_backend_uses_nothing_the_role_lacks(used):
    missing, _ = compare(role_rules(), used)
    assert not missing, "\n".join(missing)


def test_the_role_grants_nothing_the_backend_never_uses(used):
    _, unused = compare(role_rules(), used)
    assert not unused, "\n".join(unused)


def test_the_role_is_plain_and_namespaced():
    for rule in role_rules():
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"unexpected fields in {rule}"
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key]
        assert not {"serviceaccounts", "roles", "rolebindings"} & set(rule["resources"])
        # nothing another user of the namespace also reaches can be rewritten: no patch, no update at all
        assert not {"patch", "update"} & set(rule["verbs"]), f"{rule} lets one user rewrite another's objects"
        if "secrets" in rule["resources"]:  # the job's protocol-key Secret: made and removed, never read
            assert rule["resources"] == ["secrets"] and sorted(rule["verbs"]) == ["create", "delete"], rule
    # API discovery (flavor auto) is no resource request: the default system:discovery ClusterRole allows it
    # to every authenticated user, so the Role carries no nonResourceURLs (a Role cannot hold them anyway).


API_METHOD = re.compile(r"^(create|read|list|patch|replace|delete)_namespaced_(\w+?)(_log)?$")
VERBS = {
    "create": "create",
    "read": "get",
    "list": "list",
    "patch": "patch",
    "replace": "update",
    "delete": "delete",
}
RESOURCES = {"config_map": ("", "configmaps"), "service": ("", "services"), "job": ("batch", "jobs")}
RESOURCES |= {"secret": ("", "secrets")}
RESOURCES |= {"pod": ("", "pods"), "event": ("", "events"), "custom_object": ("kubeflow.org", "tfjobs")}
RESOURCES |= {"persistent_volume_claim": ("", "persistentvolumeclaims"), "limit_range": ("", "limitranges")}


# Reads the preflight (and a restart-resize's quota check) make only after a SelfSubjectAccessReview says
# they are allowed; the Role lacks them. Kueue's Workloads (queue.py) likewise, only after an access review
# allows listing them.
PREFLIGHT_OPTIONAL = {
    "list_namespaced_resource_quota": {"preflight.py", "resize_restart.py"},
    "list_namespaced_custom_object": {"queue.py"},
}


def test_every_api_call_in_the_backend_code_is_granted():
    """A static cross-check: each ``*_namespaced_*`` client method the backend's code names is granted,
    including calls on paths the scenarios above do not reach."""
    calls: dict[str, set[str]] = {}
    for path in sorted(BACKEND.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and API_METHOD.match(node.attr):
                calls.setdefault(node.attr, set()).add(path.name)
    for method, modules in PREFLIGHT_OPTIONAL.items():
        assert calls.pop(method, None) == modules, f"{method} is no longer called only by {sorted(modules)}"
    assert calls, f"no Kubernetes API call found in {BACKEND}"
    granted = rule_permissions(role_rules())
    for method, module in sorted((m, ", ".join(sorted(ms))) for m, ms in calls.items()):
        verb, kind, log = API_METHOD.match(method).groups()
        group, resource = RESOURCES[kind]
        perm = (group, resource, "log" if log else None, VERBS[verb])
        assert perm in granted, f"{module} calls {method}, which needs {format_permission(perm)}"


def test_the_whole_kubernetes_suite_uses_nothing_the_role_lacks(request):
    """Runs last (tests/conftest.py): every request the backend made in this session's Kubernetes tests;
    or a file of them (``TFK8S_SUITE_REQUEST_LOG``); or, when no Kubernetes test ran, the scenarios'."""
    from request_record import BACKEND_REQUESTS

    path = os.environ.get("TFK8S_SUITE_REQUEST_LOG")
    if path:
        entries = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    else:
        entries = list(BACKEND_REQUESTS) or request.getfixturevalue("used")
    assert entries, "no request of the backend was recorded"
    missing, _ = compare(role_rules(), entries)
    assert not missing, "\n".join(missing)
    # shared mode's promise: the backend never patches nor updates anything (another user's job included)
    rewrites = sorted(
        {
            f"{e['verb']} {e['resource']} during {e.get('test') or '?'}"
            for e in entries
            if e["verb"] in ("patch", "update")
        }
    )
    assert not rewrites, "the backend rewrote objects other users also reach: " + "; ".join(rewrites)
    # and it never reads a Secret (the notebook keeps each job's protocol key in its own record)
    reads = sorted(
        {
            f"{e['verb']} secrets during {e.get('test') or '?'}"
            for e in entries
            if e["resource"] == "secrets" and e["verb"] not in ("create", "delete")
        }
    )
    assert not reads, "; ".join(reads)


# Bad input: a rule removed ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "perm",
    [("batch", "jobs", None, "create"), ("", "pods", "log", "get"), ("", "secrets", None, "create")],
    ids=lambda p: format_permission(p),
)
def test_a_removed_rule_is_named_with_the_call_that_needs_it(used, perm):
    missing, unused = compare(rules_without(role_rules(), perm), used)
    assert len(missing) == 1 and not unused, missing + unused
    assert format_permission(perm) in missing[0] and "during" in missing[0], missing[0]


# Enforced ------------------------------------------------------------------------------------------
def test_with_the_role_enforced_the_backend_works_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    log = run_everything(tmp_path, rules=role_rules())
    refused = [e for e in log if e["status"] == 403]
    assert not refused, f"refused under the Role: {refused}"


CASES = {
    "submit": (("batch", "jobs", None, "create"), "create", "jobs"),
    "submit (protocol key)": (("", "secrets", None, "create"), "create", "secrets"),
    "list": (("", "configmaps", None, "list"), "list", "configmaps"),
    "logs": (("", "pods", "log", "get"), "get", "pods/log"),
    "stop": (("batch", "jobs", None, "delete"), "delete", "jobs"),
    "delete": (("", "configmaps", None, "delete"), "delete", "configmaps"),
}


@pytest.mark.parametrize("operation", list(CASES))
def test_a_missing_rule_gives_a_403_diagnostic_naming_it(tmp_path, monkeypatch, operation):
    perm, verb, resource = CASES[operation]
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    with sc.test_cluster(tmp_path, rules=rules_without(role_rules(), perm)) as (server, _, kc):
        b = sc.backend_for(kc)
        with pytest.raises(Forbidden) as err:
            if operation.startswith("submit"):
                sc.submit(b, "lp-403", ps=1, workers=1)
            else:
                sc.submit(b, "lp-403", code=sc.LONG, workers=1)
                assert sc.wait_running(b, "lp-403").phase == "running"
                if operation == "list":
                    b.list()
                elif operation == "logs":
                    b.logs("lp-403", "worker-0")
                elif operation == "stop":
                    b.stop("lp-403")
                else:
                    b.delete("lp-403")
        message = str(err.value)
        assert f"{verb} {resource}" in message and sc.NAMESPACE in message, message
        assert "deploy/" in message, message  # points the operator at the Role
        if operation.startswith("submit"):
            assert server.objects(namespace=sc.NAMESPACE) == [], "a refused submission left objects behind"
        elif operation != "delete":
            server.enforce_rules(None)
            # A fresh connection: the test API server answers a refused PATCH without reading its body.
            sc.backend_for(kc).delete("lp-403")


def test_a_missing_watch_rule_is_reported_not_retried_silently(tmp_path, monkeypatch):
    """Without ``watch pods`` the follower cannot see replicas: the user must be told, not left looking at
    a job that stays "running"."""
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    rules = rules_without(role_rules(), ("", "pods", None, "watch"))
    with sc.test_cluster(tmp_path, rules=rules) as (server, _, kc):
        b = sc.backend_for(kc)
        sc.submit(b, "lp-watch", workers=1)
        seen, errors, stop = [], [], threading.Event()

        def follow():
            try:
                b.watch("lp-watch", seen.append, lambda events: None, stop)
            except Exception as e:  # noqa: BLE001 - the error is the result
                errors.append(e)

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        t.join(10)
        stop.set()
        t.join(10)
        assert any(e["verb"] == "watch" and e["status"] == 403 for e in server.request_log)
        told = [str(e) for e in errors] + [s.message or "" for s in seen]
        # A Forbidden ends the watch with its sentence (verb, resource, namespace), never a silent retry.
        assert any("watch pods" in m and sc.NAMESPACE in m for m in told), told
        assert errors and "deploy/" in str(errors[0]), errors
        server.enforce_rules(None)
        sc.backend_for(kc).delete("lp-watch")
