"""The operator's storage default: the Zero to JupyterHub values that give every user a results claim
(validated against the chart's schema over values.yaml), the claim mounted in the notebook pod where
c.TFK8s.storage_mount says, and the shared ReadWriteMany volume's manifests (kustomize, strict schemas)
consistent with the jobs' namespace and the hub's."""

from __future__ import annotations

import json

import pytest
from deploytools import (
    DEPLOY,
    KUSTOMIZE,
    OVERLAYS,
    find_object,
    helm_merge,
    load_yaml,
    render_overlay,
    rule_permissions,
    validation_errors,
    values_errors,
)
from traitlets.config import Config

from tfk8s_jupyter.backends.kubernetes import render_manifests
from tfk8s_jupyter.backends.kubernetes.storage import STORAGE_MOUNT
from tfk8s_jupyter.config import TFK8s
from tfk8s_jupyter.spec import make_spec, parse_storage

VALUES = DEPLOY / "jupyterhub" / "values.yaml"
STORAGE = DEPLOY / "jupyterhub" / "values-storage.yaml"
STORAGE_MANIFESTS = KUSTOMIZE / "storage"


@pytest.fixture(scope="module")
def merged() -> dict:
    return helm_merge(load_yaml(VALUES), load_yaml(STORAGE))


@pytest.fixture(scope="module")
def volume_objects() -> list[dict]:
    return render_overlay(STORAGE_MANIFESTS)


def test_storage_values_pass_the_chart_schema_over_the_base_values():
    assert values_errors(VALUES, STORAGE) == []


def test_a_misspelt_storage_key_fails_naming_it(tmp_path):
    bad = tmp_path / "values-storage.yaml"
    bad.write_text(STORAGE.read_text().replace("extraVolumeMounts:", "extraVolumeMount:"))
    errors = values_errors(VALUES, bad)
    assert any(e.startswith("singleuser.storage:") and "extraVolumeMount" in e for e in errors), errors


def test_every_server_and_kernel_gets_the_storage_default_and_sees_the_claim_where_it_says(merged):
    files = merged["singleuser"]["extraFiles"]
    defaults = [f["data"]["TFK8s"] for f in files.values()]
    assert len(defaults) == 2 and defaults[0] == defaults[1]
    cfg = TFK8s(config=Config({"TFK8s": defaults[0]}))  # traitlets checks each value
    assert cfg.backend == "kubernetes" and cfg.storage and cfg.storage_mount
    claim = parse_storage(cfg.storage)
    assert claim.kind == "pvc"
    storage = merged["singleuser"]["storage"]
    [mount] = [m for m in storage["extraVolumeMounts"].values() if m["mountPath"] == cfg.storage_mount]
    volume = storage["extraVolumes"][mount["name"]]
    # the notebook pod mounts the very claim the jobs use (its namesake in the hub's namespace)
    assert volume["persistentVolumeClaim"]["claimName"] == claim.claim
    assert "subPath" not in mount  # the claim's root: storage_mount + subpath + job = what the pods wrote
    # the base values keep working without storage
    assert (
        "storage" not in next(iter(load_yaml(VALUES)["singleuser"]["extraFiles"].values()))["data"]["TFK8s"]
    )


def test_the_shared_volume_manifests_validate_and_bind_one_claim_per_namespace(merged, volume_objects):
    assert validation_errors(volume_objects) == []
    defaults = next(iter(merged["singleuser"]["extraFiles"].values()))["data"]["TFK8s"]
    claim = parse_storage(defaults["storage"]).claim
    shared = render_overlay(OVERLAYS / "shared-namespace")
    jobs_ns = find_object(shared, "Role", "tfk8s-jobs")["metadata"]["namespace"]
    hub_ns = find_object(shared, "ServiceAccount")["metadata"]["namespace"]
    assert defaults["namespace"] == jobs_ns
    claims = {o["metadata"]["namespace"]: o for o in volume_objects if o["kind"] == "PersistentVolumeClaim"}
    assert set(claims) == {jobs_ns, hub_ns}
    volumes = {o["metadata"]["name"]: o for o in volume_objects if o["kind"] == "PersistentVolume"}
    exports = set()
    for ns, pvc in claims.items():
        assert pvc["metadata"]["name"] == claim
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # job pods on many nodes, and the notebook
        pv = volumes[pvc["spec"]["volumeName"]]
        assert pv["spec"]["claimRef"] == {"namespace": ns, "name": claim}
        assert pv["spec"]["accessModes"] == ["ReadWriteMany"]
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"  # results outlive the claims
        exports.add(json.dumps(pv["spec"]["nfs"], sort_keys=True))
    assert len(exports) == 1, "the two claims must reach the same data"


def test_job_pods_with_the_default_mount_the_claim_and_validate(merged):
    defaults = next(iter(merged["singleuser"]["extraFiles"].values()))["data"]["TFK8s"]
    spec = make_spec(
        "model.fit(x, y)",
        name="mnist",
        backend="kubernetes",
        owner="alice",
        ps=1,
        workers=2,
        storage=defaults["storage"],
    )
    objs = render_manifests(spec, namespace=defaults["namespace"])
    assert validation_errors(objs) == []
    jobs = [o for o in objs if o["kind"] == "Job"]
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        assert {"name": "tfk8s-storage", "persistentVolumeClaim": {"claimName": "tfk8s-results"}} in pod[
            "volumes"
        ]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["TFK8S_ARTIFACTS"] == f"{STORAGE_MOUNT}/runs/mnist"


PER_USER = DEPLOY / "jupyterhub" / "values-per-user-namespace.yaml"
PER_USER_STORAGE = DEPLOY / "jupyterhub" / "values-per-user-storage.yaml"


def test_per_user_mode_gets_one_results_claim_in_each_user_namespace(monkeypatch):
    """The per-user storage hook runs after the namespace hook and creates the claim the notebook mounts
    and the jobs use, ReadWriteMany, in the user's namespace; already existing is fine."""
    from test_deploy_user_namespaces import install_hub_modules, run

    files = (VALUES, PER_USER, STORAGE, PER_USER_STORAGE)
    assert values_errors(*files) == []
    merged = load_yaml(files[0])
    for f in files[1:]:
        merged = helm_merge(merged, load_yaml(f))
    calls: list = []
    fail: dict[str, int] = {}
    install_hub_modules(monkeypatch, calls, fail)
    namespace = {"c": Config()}
    snippets = merged["hub"]["extraConfig"]
    assert sorted(snippets) == ["tfk8s-user-namespaces", "tfk8s-user-results-claim"]  # the chart's order
    for key in sorted(snippets):
        exec(compile(snippets[key], key, "exec"), namespace)
    run(namespace["c"].KubeSpawner.pre_spawn_hook)
    methods = [m for m, _, _ in calls]
    assert methods[-1] == "create_namespaced_persistent_volume_claim" and len(methods) == 5, methods
    _, ns, body = calls[-1]
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", **body}
    pvc["metadata"] = {**pvc["metadata"], "namespace": ns}
    assert validation_errors([pvc]) == []
    assert ns == "jhub-alice" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    defaults = next(iter(merged["singleuser"]["extraFiles"].values()))["data"]["TFK8s"]
    assert "namespace" not in defaults  # jobs run in the user's namespace, where the claim is
    assert parse_storage(defaults["storage"]).claim == pvc["metadata"]["name"]
    mounted = [
        v["persistentVolumeClaim"]["claimName"]
        for v in merged["singleuser"]["storage"]["extraVolumes"].values()
    ]
    assert mounted == [pvc["metadata"]["name"]]
    calls.clear()
    fail["create_namespaced_persistent_volume_claim"] = 409
    run(namespace["c"].KubeSpawner.pre_spawn_hook)  # a restart: the claim exists already
    hub = find_object(
        render_overlay(OVERLAYS / "per-user-namespace"), "ClusterRole", "tfk8s-hub-user-namespaces"
    )
    assert ("", "persistentvolumeclaims", None, "create") in rule_permissions(hub["rules"])
