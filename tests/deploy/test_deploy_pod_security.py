"""Every pod template the Kubernetes backend generates (native Jobs and TFJob replica specs, parameter-server
and all-reduce, with GPUs, tolerations, pull secrets) meets the Pod Security "restricted" profile, which the
jobs namespace enforces; and the check itself catches each kind of violation."""

from __future__ import annotations

import copy

import pytest
from deploytools import pod_templates, restricted_violations

from tfk8s_jupyter.backends.kubernetes import render_manifests
from tfk8s_jupyter.spec import make_spec

SPECS = {
    "ps": dict(ps=2, workers=3),
    "all-reduce": dict(workers=4),
    "gpus+scheduling": dict(
        ps=1,
        workers=2,
        gpus=1,
        cpu="2",
        memory="4Gi",
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        node_selector={"accelerator": "a100"},
        image_pull_secrets=["registry"],
        service_account="trainer",
    ),
    # the operator's default storage (deploy/jupyterhub/values-storage.yaml): a claim in every pod
    "storage": dict(ps=1, workers=2, storage="pvc:tfk8s-results/runs"),
}


def templates(flavor: str, case: str) -> list[tuple[str, dict]]:
    spec = make_spec(
        "model.fit(x, y)",
        backend="kubernetes",
        name=f"psa-{case.replace('+', '-')}",
        owner="alice",
        **SPECS[case],
    )
    found = pod_templates(render_manifests(spec, flavor=flavor, namespace="tfk8s-jobs"))
    assert found, f"no pod template in the {flavor} manifests"
    return found


@pytest.mark.parametrize("case", list(SPECS))
@pytest.mark.parametrize("flavor", ["native", "tfjob"])
def test_generated_pods_meet_the_restricted_profile(flavor, case):
    found = templates(flavor, case)
    roles = {"ps", "worker", "chief"} if "ps" in SPECS[case] else {"worker"}
    assert len(found) == len(roles), [w for w, _ in found]
    for where, pod in found:
        assert restricted_violations(pod) == [], where
        # Replicas never call the API: no token in the pod at all.
        assert pod.get("automountServiceAccountToken") is False, where


VIOLATIONS = [
    ("hostNetwork", lambda p: p.update(hostNetwork=True), "hostNetwork"),
    ("hostPID", lambda p: p.update(hostPID=True), "hostPID"),
    ("hostPath", lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    ("privileged", lambda p: p["containers"][0]["securityContext"].update(privileged=True), "privileged"),
    (
        "escalation",
        lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
        "allowPrivilegeEscalation",
    ),
    (
        "root",
        lambda p: (
            p["securityContext"].pop("runAsNonRoot"),
            p["containers"][0]["securityContext"].pop("runAsNonRoot"),
        ),
        "runAsNonRoot",
    ),
    ("uid 0", lambda p: p["containers"][0]["securityContext"].update(runAsUser=0), "runAsUser is 0"),
    (
        "capabilities",
        lambda p: p["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
        "drop ALL",
    ),
    (
        "added capability",
        lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        "SYS_ADMIN",
    ),
    (
        "seccomp",
        lambda p: (
            p["securityContext"].pop("seccompProfile"),
            p["containers"][0]["securityContext"].pop("seccompProfile"),
        ),
        "seccompProfile",
    ),
    (
        "unconfined",
        lambda p: p["containers"][0]["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "Unconfined",
    ),
    ("hostPort", lambda p: p["containers"][0]["ports"][0].update(hostPort=2222), "hostPort"),
]


@pytest.mark.parametrize("name,mutate,expected", VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_the_check_names_each_violation(name, mutate, expected):
    _, pod = templates("native", "ps")[0]
    pod = copy.deepcopy(pod)
    mutate(pod)
    problems = restricted_violations(pod)
    assert any(expected in p for p in problems), (name, problems)


@pytest.mark.parametrize("case", list(SPECS))
def test_the_image_check_pod_meets_the_restricted_profile(case):
    """``%tfk8s_check --image`` runs one pod in the jobs namespace: restricted, tokenless, tiny, bounded."""
    from tfk8s_jupyter.backends.kubernetes.image_check import check_pod

    spec = make_spec("pass", backend="kubernetes", name="preflight", owner="alice", **SPECS[case])
    pod = check_pod(spec, "tfk8s-image-check-1234abcd", timeout=120)
    assert restricted_violations(pod["spec"]) == []
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["activeDeadlineSeconds"] == 150
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "image-check"
    [container] = pod["spec"]["containers"]
    assert container["command"][:2] == ["python", "-c"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    if case == "gpus+scheduling":  # it lands where the job would, pulls as the job would
        assert pod["spec"]["imagePullSecrets"] == [{"name": "registry"}]
        assert pod["spec"]["nodeSelector"] == {"accelerator": "a100"} and pod["spec"]["tolerations"]
