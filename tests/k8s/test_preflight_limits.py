"""Preflight against the test API server: the namespace's LimitRanges versus the job's requests (each
failure injected), and the image check's one-off pod (TensorFlow found, a pull error, an image without
TensorFlow, a timeout), after which no pod is left. The Role is enforced, as on a real cluster."""

from __future__ import annotations

import pytest
from test_preflight import NODE_READER, QUOTA_READER, ROLE, rules_without

import tfk8s_jupyter as tk
import tfk8s_jupyter.api as api_module
from tfk8s_jupyter.backends.kubernetes import preflight as pf
from tfk8s_jupyter.backends.kubernetes.image_check import COMPONENT, LABEL_COMPONENT

pytestmark = pytest.mark.k8s


@pytest.fixture
def cluster(apiserver, kubeconfig, tmp_path, monkeypatch):
    monkeypatch.setenv("TFK8S_HOME", str(tmp_path / "home"))
    api_module._backends.clear()
    apiserver.enforce_rules(ROLE["rules"])
    apiserver.grant_cluster_rules(NODE_READER + QUOTA_READER)
    apiserver.add_node("gpu-node", {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"})
    yield apiserver
    api_module._backends.clear()


def limit_rows(report) -> list[pf.Check]:
    return [c for c in report.checks if c.name == "LimitRange"]


def test_no_limitrange_is_green(cluster):
    report = tk.check(memory="2Gi")
    assert report.ok, report.text()
    assert [c.message for c in limit_rows(report)] == ["namespace default has no LimitRange."]
    assert any(e["resource"] == "limitranges" and e["verb"] == "list" for e in cluster.request_log)


def test_memory_above_the_container_max(cluster):
    cluster.add_limitrange("default", "team-limits", [{"type": "Container", "max": {"memory": "1Gi"}}])
    report = tk.check(memory="2Gi")
    assert not report.ok
    [row] = report.failed
    assert row.name == "LimitRange"
    assert row.message == (
        "--memory 2Gi is above LimitRange team-limits' max of 1Gi per container; ask for at most 1Gi or ask "
        "your admin."
    )
    assert tk.check(memory="1Gi").ok


def test_cpu_below_the_container_min(cluster):
    cluster.add_limitrange("default", "floor", [{"type": "Container", "min": {"cpu": "500m"}}])
    [row] = tk.check(cpu="100m").failed
    assert "--cpu 100m is below LimitRange floor's min of 500m per container" in row.message, row.message
    assert "at least 500m" in row.message


def test_gpus_above_the_max(cluster):
    cluster.add_limitrange("default", "gpu-cap", [{"type": "Container", "max": {"nvidia.com/gpu": "1"}}])
    [row] = tk.check(gpus=2).failed
    assert "--gpus 2 is above LimitRange gpu-cap's max of 1 per container" in row.message, row.message


def test_a_ratio_the_defaults_cannot_meet(cluster):
    cluster.add_limitrange(
        "default",
        "ratio",
        [
            {
                "type": "Container",
                "default": {"cpu": "2"},
                "defaultRequest": {"cpu": "500m"},
                "maxLimitRequestRatio": {"cpu": "2"},
            }
        ],
    )
    [row] = tk.check().failed
    assert "the job sets no --cpu, so LimitRange ratio's defaults (request 500m, limit 2)" in row.message
    assert "ratio of 4, above its maxLimitRequestRatio of 2; pass --cpu" in row.message, row.message
    assert tk.check(cpu="1").ok  # requests = limits: ratio 1


def test_defaults_are_a_note_on_a_green_row(cluster):
    cluster.add_limitrange(
        "default",
        "team-defaults",
        [
            {
                "type": "Container",
                "default": {"cpu": "1", "memory": "512Mi"},
                "defaultRequest": {"cpu": "250m"},
            }
        ],
    )
    report = tk.check()
    assert report.ok, report.text()
    [row] = limit_rows(report)
    assert row.mark == "✓"
    assert "cpu request 250m / limit 1 (LimitRange team-defaults)" in row.message, row.message
    assert "memory request 512Mi / limit 512Mi (LimitRange team-defaults)" in row.message, row.message


def test_a_limitrange_failure_blocks_the_submission(cluster, monkeypatch):
    monkeypatch.setattr(api_module, "_preflight_passed", set())
    cluster.add_limitrange("default", "team-limits", [{"type": "Container", "max": {"memory": "1Gi"}}])
    with pytest.raises(pf.PreflightFailed, match="--memory 2Gi is above LimitRange team-limits' max of 1Gi"):
        tk.submit("STEPS = 1", workers=1, backend="kubernetes", flavor="native", name="lr", memory="2Gi")
    assert cluster.objects(namespace="default") == []  # nothing created


def test_without_list_limitranges_the_permission_row_says_so(cluster):
    cluster.enforce_rules(rules_without("list", "limitranges"))
    report = tk.check()
    assert [c.name for c in report.failed] == ["list limitranges"], report.text()
    assert not limit_rows(report)


# the image check ----------------------------------------------------------------------------------
def check_pods(server) -> list[dict]:
    return [
        o
        for o in server.objects(namespace="default")
        if o["kind"] == "Pod" and (o["metadata"].get("labels") or {}).get(LABEL_COMPONENT) == COMPONENT
    ]


def run_magic(line: str):
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "tfk8s_jupyter")
    ip.run_line_magic("tfk8s_check", line)
    return ip.user_ns["_tfk8s_check"]


def test_the_image_has_tensorflow(cluster, make_cluster):
    make_cluster()
    report = run_magic("--image tfk8s/trainer:test")
    [row] = [c for c in report.checks if c.name == "image"]
    import tensorflow as tf

    assert row.mark == "✓", report.text()
    assert row.message.startswith(f"TensorFlow {tf.__version__}, tf-keras "), row.message
    assert "tfk8s/trainer:test" in row.message
    created = [e for e in cluster.request_log if e["resource"] == "pods" and e["verb"] == "create"]
    assert len(created) == 1 and created[0]["status"] == 201, created
    assert check_pods(cluster) == []


def test_the_nodes_cannot_pull_the_image(cluster, make_cluster):
    make_cluster(bad_images=("registry.example.com/nope:1",))
    report = run_magic("--image registry.example.com/nope:1")
    [row] = [c for c in report.checks if c.name == "image"]
    assert row.mark == "✗" and not report.ok
    assert row.message.startswith("the nodes cannot pull image registry.example.com/nope:1: "), row.message
    assert "check the name and imagePullSecrets" in row.message
    assert check_pods(cluster) == []


def test_an_image_without_tensorflow(cluster, make_cluster):
    make_cluster(bare_images=("python:3.12-slim",))
    report = run_magic("--image python:3.12-slim")
    [row] = [c for c in report.checks if c.name == "image"]
    assert row.mark == "✗", report.text()
    assert "the image python:3.12-slim has no TensorFlow" in row.message, row.message
    assert check_pods(cluster) == []


def test_an_image_check_that_times_out_removes_its_pod(cluster, make_cluster):
    make_cluster(pull_seconds=60)
    report = run_magic("--image tfk8s/trainer:huge --image-timeout 2")
    [row] = [c for c in report.checks if c.name == "image"]
    assert row.mark == "✗"
    assert "the image check of tfk8s/trainer:huge did not finish in 2 s" in row.message, row.message
    assert "ContainerCreating" in row.message, row.message
    assert check_pods(cluster) == []


def test_the_preflight_before_a_submission_runs_no_image_check(cluster, monkeypatch):
    monkeypatch.setattr(api_module, "_preflight_passed", set())
    tk.submit("STEPS = 1", workers=1, backend="kubernetes", flavor="native", name="pf-img", image="x:1")
    reviews = [e for e in cluster.request_log if e["resource"] == "selfsubjectaccessreviews"]
    assert reviews, "the submission ran no preflight"
    assert not any(e["resource"] == "pods" and e["verb"] == "create" for e in cluster.request_log)
    api_module.backend_for("kubernetes").delete("pf-img")


def test_an_api_error_while_following_still_removes_the_pod(cluster, make_cluster):
    make_cluster(pull_seconds=60)
    cluster.fail(500, verb="list", resource="pods", times=50)
    report = run_magic("--image tfk8s/trainer:test")
    [row] = [c for c in report.checks if c.name == "image"]
    assert row.mark == "✗" and row.message.startswith("the image check pod could not run: "), row.message
    assert "500 to list pods in namespace default" in row.message, row.message
    assert any(e["resource"] == "pods" and e["verb"] == "delete" for e in cluster.request_log)
    assert check_pods(cluster) == []


def test_without_pod_permissions_the_image_is_not_checked(cluster, make_cluster):
    make_cluster()
    cluster.enforce_rules(rules_without("create", "pods"))
    report = run_magic("--image tfk8s/trainer:test")
    assert [c.name for c in report.failed] == [], report.text()  # the cheap rows need no pod
    [row] = [c for c in report.checks if c.name == "image"]
    assert row.mark == "–" and "creating and deleting pods in namespace default" in row.message, row.message
    assert not any(e["resource"] == "pods" and e["verb"] == "create" for e in cluster.request_log)


def test_the_server_refuses_the_pod_the_preflight_flags(cluster):
    """The ✗ predicts the LimitRanger admission refusal a submission would meet."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    from tfk8s_jupyter.backends.kubernetes.image_check import check_pod

    cluster.add_limitrange("default", "team-limits", [{"type": "Container", "max": {"memory": "1Gi"}}])
    report = tk.check(memory="2Gi")
    assert [c.name for c in report.failed] == ["LimitRange"]
    pod = check_pod(report.spec, "too-big", 60)
    pod["spec"]["containers"][0]["resources"] = {"requests": {"memory": "2Gi"}, "limits": {"memory": "2Gi"}}
    core = k8s.CoreV1Api(api_module.backend_for("kubernetes").cluster(None).api_client)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("default", pod)
    assert err.value.status == 403 and "maximum memory usage per Container is 1Gi" in err.value.body
    assert check_pods(cluster) == [] and cluster.objects(namespace="default") == []


def test_the_image_check_pod_fits_the_limitranges(cluster, make_cluster):
    from tfk8s_jupyter.backends.kubernetes.image_check import check_pod

    make_cluster()
    limits = [
        {"type": "Container", "max": {"memory": "768Mi", "cpu": "500m"}, "min": {"cpu": "200m"}},
    ]
    cluster.add_limitrange("default", "small", limits)
    report = run_magic("--image tfk8s/trainer:test")
    [row] = [c for c in report.checks if c.name == "image"]
    assert row.mark == "✓", report.text()  # its pod was admitted: the server refuses one outside the range
    pod = check_pod(report.spec, "x", 60, [{"spec": {"limits": limits}}])
    assert pod["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "200m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "768Mi"},
    }
    assert check_pods(cluster) == []


def test_the_python_api_runs_the_same_image_check(cluster, make_cluster):
    import tfk8s_jupyter as tk

    make_cluster(bare_images=("python:3.12-slim",))
    report = tk.check(image="python:3.12-slim", image_timeout=60)
    [row] = [c for c in report.checks if c.name == "image"]
    assert row.mark == "✗" and "the image python:3.12-slim has no TensorFlow" in row.message, report.text()
    created = [e for e in cluster.request_log if e["resource"] == "pods" and e["verb"] == "create"]
    assert len(created) == 1 and check_pods(cluster) == []
    assert not [c for c in tk.check().checks if c.name == "image"]  # no image named: no pod
