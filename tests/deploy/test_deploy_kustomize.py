"""Every kustomize overlay renders offline, every object passes kubernetes-validate strict, and the RBAC
stays within its promises: no wildcard, no Secret read, nothing cluster-scoped in shared-namespace mode, the
per-user ClusterRole carries exactly the shared Role's rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from deploytools import (
    KUSTOMIZE,
    OVERLAYS,
    RenderError,
    describe,
    find_object,
    overlays,
    render_overlay,
    rule_permissions,
    validation_errors,
)

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {p.name: render_overlay(p) for p in overlays()}


def test_both_modes_exist(rendered):
    assert {"shared-namespace", "per-user-namespace"} <= set(rendered)


@pytest.mark.parametrize("overlay", [p.name for p in overlays()])
def test_overlay_renders_and_validates_strict(rendered, overlay):
    objs = rendered[overlay]
    assert objs, f"{overlay} renders no object"
    assert validation_errors(objs) == []
    assert all(o["metadata"]["labels"].get("app.kubernetes.io/part-of") == "tfk8s-jupyter" for o in objs)


@pytest.mark.parametrize("overlay", [p.name for p in overlays()])
def test_no_wildcards_and_no_secret_read(rendered, overlay):
    for obj in rendered[overlay]:
        for rule in obj.get("rules") or []:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in (rule.get(key) or []), f"{describe(obj)} has a wildcard in {key}: {rule}"
            assert "serviceaccounts/token" not in (rule.get("resources") or []), rule
            if "secrets" in (rule.get("resources") or []):
                # the job's protocol-key Secret is created and deleted, never read: no Secret is readable
                assert set(rule["verbs"]) <= {"create", "delete"}, f"{describe(obj)} can read secrets: {rule}"
            assert not {"escalate", "impersonate"} & set(rule.get("verbs") or []), rule


def test_shared_namespace_mode_grants_nothing_cluster_scoped(rendered):
    objs = rendered["shared-namespace"]
    kinds = {o["kind"] for o in objs}
    assert not {"ClusterRole", "ClusterRoleBinding"} & kinds
    assert [o["metadata"]["name"] for o in objs if o["kind"] in CLUSTER_SCOPED] == ["tfk8s-jobs"]
    role = find_object(objs, "Role", "tfk8s-jobs")
    binding = find_object(objs, "RoleBinding")
    sa = find_object(objs, "ServiceAccount", "tfk8s-singleuser")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "tfk8s-jobs"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "tfk8s-jobs",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}
    ]
    # Jobs never run in the hub's namespace, where the hub's Secrets live.
    assert sa["metadata"]["namespace"] != role["metadata"]["namespace"]
    ns = find_object(objs, "Namespace", "tfk8s-jobs")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    netpol = find_object(objs, "NetworkPolicy", "tfk8s-replicas")
    assert netpol["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "tfk8s-jupyter"}


def test_per_user_cluster_role_has_exactly_the_shared_role_rules(rendered):
    role = find_object(rendered["shared-namespace"], "Role", "tfk8s-jobs")
    cluster_role = find_object(rendered["per-user-namespace"], "ClusterRole", "tfk8s-jobs")
    assert rule_permissions(cluster_role["rules"]).keys() == rule_permissions(role["rules"]).keys()
    # Bound per namespace only: no ClusterRoleBinding may point at the jobs rules.
    for crb in (o for o in rendered["per-user-namespace"] if o["kind"] == "ClusterRoleBinding"):
        assert crb["roleRef"]["name"] != "tfk8s-jobs", "the jobs rules must never be bound cluster-wide"


def test_hub_may_bind_only_the_jobs_cluster_role(rendered):
    hub = find_object(rendered["per-user-namespace"], "ClusterRole", "tfk8s-hub-user-namespaces")
    bind_rules = [r for r in hub["rules"] if "bind" in r["verbs"]]
    assert bind_rules == [
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles"],
            "verbs": ["bind"],
            "resourceNames": ["tfk8s-jobs"],
        }
    ]


def copy_kustomize_tree(tmp_path: Path) -> Path:
    dst = tmp_path / "kubernetes"
    shutil.copytree(KUSTOMIZE, dst)
    return dst


def test_unknown_key_in_kustomization_fails_naming_it(tmp_path):
    tree = copy_kustomize_tree(tmp_path)
    k = tree / "overlays" / "shared-namespace" / "kustomization.yaml"
    k.write_text(k.read_text() + "namespaceee: oops\n")
    with pytest.raises(RenderError, match="namespaceee"):
        render_overlay(k.parent)


def test_unknown_key_in_a_resource_fails_validation_naming_it(tmp_path):
    tree = copy_kustomize_tree(tmp_path)
    rb = tree / "overlays" / "shared-namespace" / "jobs-namespace" / "rolebinding.yaml"
    rb.write_text(rb.read_text().replace("roleRef:", "roleRefs:\n  kind: Role\nroleRef:"))
    errors = validation_errors(render_overlay(tree / "overlays" / "shared-namespace"))
    assert errors and any("roleRefs" in e and "RoleBinding" in e for e in errors), errors


def test_overlays_are_the_documented_ones():
    assert (OVERLAYS / "shared-namespace").is_dir() and (OVERLAYS / "per-user-namespace").is_dir()


def test_the_readme_table_states_the_role_exactly(rendered):
    """Operators read the README's least-privilege table: it must say what the Role grants."""
    readme = (KUSTOMIZE.parent / "README.md").read_text()
    section = readme.split("## Least privilege", 1)[1].split("\n## ", 1)[0]
    stated = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            group = cells[0].strip("`").strip('"')
            resource, _, sub = cells[1].partition("/")
            stated |= {(group, resource, sub or None, v.strip()) for v in cells[2].split(",")}
    role = find_object(rendered["shared-namespace"], "Role", "tfk8s-jobs")
    assert stated == set(rule_permissions(role["rules"]))
