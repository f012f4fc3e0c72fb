"""Preflight against the test API server: the all-green case and each failure injected (a missing verb, no
TFJob CRD, no GPU capacity, a quota too small), answered by SelfSubjectAccessReview from the same RBAC rules
the server enforces. The Role is enforced in every test, as on a real cluster."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import yaml

import tfk8s_jupyter as tk
import tfk8s_jupyter.api as api_module
from tfk8s_jupyter.backends.base import BackendUnavailable
from tfk8s_jupyter.backends.kubernetes import preflight as pf
from tfk8s_jupyter.spec import SpecError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from deploytools import ROOT, rule_permissions  # noqa: E402

pytestmark = pytest.mark.k8s

ROLE = yaml.safe_load((ROOT / pf.ROLE_FILE).read_text())
NODE_READER = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]
QUOTA_READER = [{"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["list"]}]


def rules_without(verb: str, resource: str) -> list[dict]:
    out = copy.deepcopy(ROLE["rules"])
    for rule in out:
        if resource in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    return out


@pytest.fixture
def cluster(apiserver, kubeconfig, tmp_path, monkeypatch):
    """The Role enforced, list nodes and list resourcequotas granted (ClusterRoleBinding), one GPU node."""
    monkeypatch.setenv("TFK8S_HOME", str(tmp_path / "home"))
    api_module._backends.clear()
    apiserver.enforce_rules(ROLE["rules"])
    apiserver.grant_cluster_rules(NODE_READER + QUOTA_READER)
    apiserver.add_node("gpu-node", {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"})
    apiserver.add_node("cpu-node", {"cpu": "64", "memory": "256Gi"})
    yield apiserver
    api_module._backends.clear()


def marks(report) -> dict[str, str]:
    return {c.name: c.mark for c in report.checks}


def test_the_preflight_rules_are_the_roles():
    assert rule_permissions(list(pf.ROLE_RULES)) == rule_permissions(ROLE["rules"])


def test_all_green(cluster):
    cluster.tfjob_crd = True
    cluster.add_quota("default", "compute", {"pods": "10", "requests.cpu": "8"})
    report = tk.check(workers=2, gpus=2, cpu="1")
    assert report.ok, report.text()
    assert marks(report) == {
        "namespace": "✓",
        "TFJob CRD": "✓",
        "permissions": "✓",
        "GPUs": "✓",
        "quota": "✓",
        "LimitRange": "✓",
        "storage": "–",  # no storage: a note, not a failure
    }
    assert "gpu-node has 4 allocatable nvidia.com/gpu" in report.text()
    assert "<table>" in report._repr_html_() and "✓" in report._repr_html_()
    # a preflight creates nothing
    assert cluster.objects(namespace="default") == []
    reviews = [e for e in cluster.request_log if e["resource"] == "selfsubjectaccessreviews"]
    assert len(reviews) >= len(pf.permissions("tfjob")), reviews
    assert all(e.get("granted_by") == "system:basic-user" for e in reviews)


def test_a_missing_verb_names_the_rule_that_grants_it(cluster):
    cluster.enforce_rules(rules_without("create", "jobs"))
    report = tk.check(flavor="native")
    assert not report.ok
    [bad] = report.failed
    assert bad.name == "create jobs"
    assert "in namespace default" in bad.message and pf.ROLE_FILE in bad.message
    assert 'resources ["jobs"]' in bad.message and "'batch'" in bad.message, bad.message


def test_two_missing_verbs_are_two_lines(cluster):
    rules = [r for r in rules_without("watch", "pods") if r["resources"] != ["pods/log"]]
    cluster.enforce_rules(rules)
    report = tk.check(flavor="native")
    assert sorted(c.name for c in report.failed) == ["get pods/log", "watch pods"], report.text()


def test_no_tfjob_crd(cluster):
    report = tk.check(flavor="tfjob")
    assert marks(report)["TFJob CRD"] == "✗"
    assert "Kubeflow training operator" in report.text() and "--flavor native" in report.text()
    auto = tk.check(flavor="auto")
    assert auto.ok and "native Indexed Jobs" in auto.text(), auto.text()


def test_no_gpu_capacity(cluster):
    report = tk.check(workers=1, gpus=8)
    assert marks(report)["GPUs"] == "✗", report.text()
    assert "8 allocatable nvidia.com/gpu (the most is 4)" in report.text()


def test_gpu_nodes_must_match_selector_and_tolerations(cluster):
    cluster.add_node(
        "tainted",
        {"nvidia.com/gpu": "8"},
        labels={"pool": "a100"},
        taints=[{"key": "gpu", "value": "true", "effect": "NoSchedule"}],
    )
    assert marks(tk.check(gpus=8, node_selector={"pool": "a100"}))["GPUs"] == "✗"
    tolerated = tk.check(
        gpus=8,
        node_selector={"pool": "a100"},
        tolerations=({"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},),
    )
    assert marks(tolerated)["GPUs"] == "✓", tolerated.text()


def test_gpu_capacity_unknown_without_list_nodes(cluster):
    cluster.grant_cluster_rules(QUOTA_READER)
    report = tk.check(gpus=1)
    assert marks(report)["GPUs"] == "–" and report.ok
    assert not any(e["resource"] == "nodes" for e in cluster.request_log)


def test_quota_too_small(cluster):
    cluster.add_quota("default", "compute", {"pods": "4", "requests.cpu": "4"}, used={"pods": "2"})
    report = tk.check(workers=3, cpu="1")
    assert not report.ok
    text = report.text()
    assert "quota compute leaves 2 pods (hard 4, used 2) but the job asks 3" in text, text
    assert "larger quota" in text


def test_a_namespace_that_does_not_exist(cluster):
    report = tk.check(namespace="nowhere")
    assert marks(report) == {"namespace": "✗"}
    assert "namespace nowhere does not exist" in report.text()


def test_the_magic_prints_the_table(cluster):
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "tfk8s_jupyter")
    cluster.enforce_rules(rules_without("delete", "configmaps"))
    assert ip.run_line_magic("tfk8s_check", "--backend kubernetes --flavor native") is None  # displayed once
    report = ip.user_ns["_tfk8s_check"]
    assert [c.name for c in report.failed] == ["delete configmaps"]
    assert "✗ delete configmaps" in report.text() and "deploy/kubernetes/base/role.yaml" in report.text()


def test_bad_input(cluster, tmp_path, monkeypatch):
    with pytest.raises(SpecError, match="use backend='kubernetes'"):
        tk.check(backend="local")
    with pytest.raises(BackendUnavailable, match="context 'nope'"):
        tk.check(context="nope")


PRIORITY_READER = [{"apiGroups": ["scheduling.k8s.io"], "resources": ["priorityclasses"], "verbs": ["get"]}]
QUEUE_READER = [{"apiGroups": ["kueue.x-k8s.io"], "resources": ["localqueues"], "verbs": ["get"]}]


def test_a_priority_class_or_queue_that_does_not_exist(cluster):
    cluster.grant_cluster_rules(NODE_READER + QUOTA_READER + PRIORITY_READER + QUEUE_READER)
    report = tk.check(priority_class="batch-low", queue="team-a")
    assert marks(report)["priority class"] == "✗" and marks(report)["queue"] == "✗", report.text()
    assert "PriorityClass batch-low does not exist" in report.text()
    assert "Kueue is not installed" in report.text()
    cluster.kueue = True
    report = tk.check(priority_class="batch-low", queue="team-a")
    assert "Kueue LocalQueue team-a does not exist in namespace default" in report.text(), report.text()
    cluster.store.create(
        "scheduling.k8s.io", "priorityclasses", {"metadata": {"name": "batch-low"}, "value": 10}
    )
    cluster.store.create(
        "kueue.x-k8s.io", "localqueues", {"metadata": {"name": "team-a", "namespace": "default"}, "spec": {}}
    )
    report = tk.check(priority_class="batch-low", queue="team-a")
    assert report.ok and marks(report)["priority class"] == "✓" and marks(report)["queue"] == "✓", (
        report.text()
    )


def test_priority_class_and_queue_unknown_without_read_access(cluster):
    report = tk.check(priority_class="batch-low", queue="team-a")
    assert marks(report)["priority class"] == "–" and marks(report)["queue"] == "–" and report.ok


def test_an_unreachable_api_server_is_one_sentence_with_its_address(cluster, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    kc = yaml.safe_load(open(os.environ["KUBECONFIG"]).read())
    kc["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    path = tmp_path / "unreachable"
    path.write_text(yaml.safe_dump(kc))
    monkeypatch.setenv("KUBECONFIG", str(path))
    api_module._backends.clear()
    with pytest.raises(BackendUnavailable) as err:
        tk.check()
    assert f"127.0.0.1:{port}" in str(err.value) and "kubeconfig" in str(err.value), err.value


def test_the_first_submission_runs_the_preflight_once_and_is_refused_when_it_fails(cluster, monkeypatch):
    monkeypatch.setattr(api_module, "_preflight_passed", set())
    cluster.enforce_rules(rules_without("create", "jobs"))
    with pytest.raises(pf.PreflightFailed) as err:
        tk.submit("STEPS = 1", workers=1, backend="kubernetes", flavor="native", name="pf-auto")
    assert "you cannot create jobs" in str(err.value) and "%tfk8s_check" in str(err.value), err.value
    assert cluster.objects(namespace="default") == []  # refused before anything was created
    cluster.enforce_rules(ROLE["rules"])
    tk.submit("STEPS = 1", workers=1, backend="kubernetes", flavor="native", name="pf-auto")
    reviews = sum(e["resource"] == "selfsubjectaccessreviews" for e in cluster.request_log)
    tk.submit("STEPS = 1", workers=1, backend="kubernetes", flavor="native", name="pf-auto-2")
    assert sum(e["resource"] == "selfsubjectaccessreviews" for e in cluster.request_log) == reviews  # cached
    for name in ("pf-auto", "pf-auto-2"):
        api_module.backend_for("kubernetes").delete(name)


def test_a_submission_naming_a_queue_that_does_not_exist_is_refused(cluster, monkeypatch):
    monkeypatch.setattr(api_module, "_preflight_passed", set())
    cluster.grant_cluster_rules(QUEUE_READER)
    cluster.kueue = True
    with pytest.raises(
        pf.PreflightFailed, match="Kueue LocalQueue team-a does not exist in namespace default"
    ):
        tk.submit("STEPS = 1", workers=1, backend="kubernetes", flavor="native", name="pf-q", queue="team-a")
    assert cluster.objects(namespace="default") == []


def test_a_submission_naming_a_priority_class_that_does_not_exist_is_refused(cluster, monkeypatch):
    monkeypatch.setattr(api_module, "_preflight_passed", set())
    cluster.grant_cluster_rules(PRIORITY_READER)
    with pytest.raises(pf.PreflightFailed, match="PriorityClass batch-low does not exist") as err:
        tk.submit(
            "STEPS = 1",
            workers=1,
            backend="kubernetes",
            flavor="native",
            name="pf-pc",
            priority_class="batch-low",
        )
    assert "--priority-class" in str(err.value), err.value
    assert cluster.objects(namespace="default") == []  # refused before anything was created
