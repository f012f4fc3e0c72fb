"""The test API server speaks what the real ``kubernetes`` client (typed models, Watch) expects."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(120)]


@pytest.fixture
def api(apiserver, kubeconfig):
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg, persist_config=False)
    return client.ApiClient(cfg)


def cm(name, labels=None, owner=None):
    meta = {"name": name, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": owner.api_version,
                "kind": owner.kind,
                "name": owner.metadata.name,
                "uid": owner.metadata.uid,
            }
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


def test_create_answers_201_with_server_fields(api, apiserver):
    core = client.CoreV1Api(api)
    obj, code, _ = core.create_namespaced_config_map_with_http_info("default", cm("a"))
    assert code == 201
    assert obj.metadata.uid and obj.metadata.resource_version and obj.metadata.creation_timestamp
    assert obj.metadata.namespace == "default" and obj.data == {"k": "v"}
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("default", cm("a"))
    assert e.value.status == 409 and "already exists" in e.value.body
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("missing", cm("b"))
    assert e.value.status == 404 and 'namespaces \\"missing\\" not found' in e.value.body


def test_get_list_with_label_selectors(api):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", cm("a", {"app": "x", "tier": "1"}))
    core.create_namespaced_config_map("default", cm("b", {"app": "x", "tier": "2"}))
    core.create_namespaced_config_map("default", cm("c", {"app": "y"}))

    def names(sel):
        return sorted(
            i.metadata.name for i in core.list_namespaced_config_map("default", label_selector=sel).items
        )

    assert names("app=x") == ["a", "b"]
    assert names("app=x,tier!=2") == ["a"]
    assert names("tier in (1,2)") == ["a", "b"]
    assert names("!tier") == ["c"]
    assert core.read_namespaced_config_map("c", "default").metadata.labels == {"app": "y"}
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("zz", "default")
    assert e.value.status == 404


def test_merge_patch_and_status_subresource(api):
    batch = client.BatchV1Api(api)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}}
        },
    }
    batch.create_namespaced_job("default", job)
    out = batch.patch_namespaced_job(
        "j", "default", {"metadata": {"labels": {"a": "b"}}, "status": {"active": 9}}
    )
    assert out.metadata.labels == {"a": "b"} and not out.status.active  # status ignored on the main resource
    out = batch.patch_namespaced_job_status("j", "default", {"status": {"active": 2}})
    assert out.status.active == 2


def test_delete_propagation(api, apiserver):
    core = client.CoreV1Api(api)
    batch = client.BatchV1Api(api)
    parent = core.create_namespaced_config_map("default", cm("parent"))
    core.create_namespaced_config_map("default", cm("child", owner=parent))
    core.delete_namespaced_config_map("parent", "default", body={"propagationPolicy": "Background"})
    assert apiserver.count() == 0
    # a Job deleted without a policy orphans its pods, as on a real server
    job = batch.create_namespaced_job(
        "default",
        {
            "metadata": {"name": "j"},
            "spec": {
                "template": {"spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}}
            },
        },
    )
    pod = {
        "metadata": {
            "name": "p",
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": job.metadata.uid}
            ],
        },
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    core.create_namespaced_pod("default", pod)
    batch.delete_namespaced_job("j", "default")
    left = core.read_namespaced_pod("p", "default")
    assert not left.metadata.owner_references


def test_watch_resumes_from_a_resource_version_and_410_when_expired(api, apiserver):
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", cm("a", {"w": "1"}))
    core.create_namespaced_config_map("default", cm("b", {"w": "2"}))
    core.patch_namespaced_config_map("a", "default", {"data": {"k": "v2"}})
    w = watch.Watch()
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in w.stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=rv,
            label_selector="w=1",
            timeout_seconds=1,
        )
    ]
    assert seen == [("ADDED", "a"), ("MODIFIED", "a")]
    apiserver.expire()
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(
            core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1
        ):
            pass
    assert e.value.status == 410 and apiserver.gone_sent >= 1


def test_watch_streams_live_events_until_timeout(api):
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    threading.Timer(0.3, lambda: core.create_namespaced_config_map("default", cm("late"))).start()
    t = time.monotonic()
    events = list(
        watch.Watch().stream(
            core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=2
        )
    )
    assert [e["object"].metadata.name for e in events] == ["late"]
    assert 1.5 < time.monotonic() - t < 5


def test_pod_log_follow_streams_until_the_container_ends(api, apiserver):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(
        "default", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    )
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod_log("p", "default")
    assert e.value.status == 400 and "waiting to start" in e.value.body
    buf = apiserver.log_buffer("default", "p", "c")
    buf.append("one")

    def later():
        time.sleep(0.3)
        buf.append("two")
        buf.close()

    threading.Thread(target=later).start()
    lines = list(watch.Watch().stream(core.read_namespaced_pod_log, "p", "default", follow=True))
    assert lines == ["one", "two"]
    assert core.read_namespaced_pod_log("p", "default", tail_lines=1) == "two\n"


def test_a_new_pod_with_an_old_pods_name_has_only_its_own_log(api, apiserver):
    """Logs belong to the pod object, as on a real server: a pod created again under a deleted pod's name
    (a TFJob's restart) starts with no log, and has no previous container's."""
    core = client.CoreV1Api(api)
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    core.create_namespaced_pod("default", pod)
    apiserver.log_buffer("default", "p", "c").append("old pod's line")
    assert core.read_namespaced_pod_log("p", "default") == "old pod's line\n"
    core.delete_namespaced_pod("p", "default", grace_period_seconds=0)
    wait_for_gone = time.monotonic() + 10
    while time.monotonic() < wait_for_gone:
        try:
            core.read_namespaced_pod("p", "default")
        except ApiException as e:
            assert e.status == 404
            break
        time.sleep(0.05)
    core.create_namespaced_pod("default", pod)
    for previous in (False, True):
        with pytest.raises(ApiException) as e:
            core.read_namespaced_pod_log("p", "default", previous=previous)
        assert e.value.status == 400, previous
    apiserver.log_buffer("default", "p", "c").append("new pod's line")
    assert core.read_namespaced_pod_log("p", "default") == "new pod's line\n"


def test_discovery_shows_the_tfjob_crd_only_when_installed(api, apiserver):
    custom = client.CustomObjectsApi(api)
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert "batch" in groups and "kubeflow.org" not in groups
    with pytest.raises(ApiException) as e:
        custom.get_api_resources("kubeflow.org", "v1")
    assert e.value.status == 404
    apiserver.tfjob_crd = True
    names = [r.name for r in custom.get_api_resources("kubeflow.org", "v1").resources]
    assert names == ["tfjobs"]
    out = custom.create_namespaced_custom_object(
        "kubeflow.org",
        "v1",
        "default",
        "tfjobs",
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "TFJob",
            "metadata": {"name": "t"},
            "spec": {"tfReplicaSpecs": {}},
        },
    )
    assert out["metadata"]["uid"]


def test_fault_injection_and_request_log(api, apiserver):
    core = client.CoreV1Api(api)
    apiserver.fail(500, verb="list", resource="configmaps")
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map("default")
    assert e.value.status == 500
    core.list_namespaced_config_map("default")  # only once
    apiserver.delay(1.5, verb="get", resource="configmaps", times=5)  # urllib3 retries reads
    core.create_namespaced_config_map("default", cm("a"))
    with pytest.raises(Exception):  # noqa: B017  (urllib3 read timeout)
        core.read_namespaced_config_map("a", "default", _request_timeout=(2, 0.5))
    assert apiserver.request_log[:3] == [
        {
            "verb": "list",
            "group": "",
            "resource": "configmaps",
            "subresource": None,
            "namespace": "default",
            "name": None,
            "status": 500,
        },
        {
            "verb": "list",
            "group": "",
            "resource": "configmaps",
            "subresource": None,
            "namespace": "default",
            "name": None,
            "status": 200,
        },
        {
            "verb": "create",
            "group": "",
            "resource": "configmaps",
            "subresource": None,
            "namespace": "default",
            "name": None,
            "status": 201,
        },
    ]


def test_enforce_rules_gives_a_real_403_status(api, apiserver):
    core = client.CoreV1Api(api)
    apiserver.enforce_rules(
        [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ]
    )
    core.list_namespaced_config_map("default")
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("default", cm("a"))
    assert e.value.status == 403
    message = json.loads(e.value.body)["message"]
    assert 'cannot create resource "configmaps" in API group "" in the namespace "default"' in message
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod("default")
    assert e.value.status == 403
    apiserver.enforce_rules(None)
    core.create_namespaced_config_map("default", cm("a"))
    assert [r["status"] for r in apiserver.request_log] == [200, 403, 403, 201]


def test_a_cut_watch_stream_surfaces_as_an_error_the_client_can_resume_from(api, apiserver):
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    for n in "abc":
        core.create_namespaced_config_map("default", cm(n))
    apiserver.drop_streams(after=1, verb="watch", resource="configmaps")
    got = []
    with pytest.raises(Exception):  # noqa: B017  (urllib3 ProtocolError: the connection was cut)
        for e in watch.Watch().stream(
            core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1
        ):
            got.append(e["object"].metadata.name)
    assert got == ["a"]


def test_schema_validation_refuses_an_invalid_object_with_422(apiserver):
    """What the client's own checks let through (it sends any dict to custom endpoints, other clients
    send anything) the server refuses as a real one would."""
    import urllib.error
    import urllib.request

    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"ports": [{"port": "http"}]},
    }
    req = urllib.request.Request(
        f"{apiserver.url}/api/v1/namespaces/default/services",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 422 and "Service is invalid" in json.loads(e.value.read())["message"]
    assert apiserver.count() == 0


def test_the_test_kubelet_gives_each_replica_its_own_port_when_the_os_hands_one_out_twice(
    apiserver, tmp_path, monkeypatch
):
    """The OS may return a just-released port again; two replicas on one port crash-loop on "Could not
    start gRPC server" until their Job's backoffLimit fails the job."""
    import kubelet

    handed = iter([41001, 41001, 41001, 41003, 41003, 41005])
    monkeypatch.setattr(kubelet, "free_port", lambda: next(handed))
    cluster = kubelet.TestCluster(apiserver, workdir=tmp_path / "kubelet")
    hosts = {
        "ps": ["job-ps-0.job:2222"],
        "chief": ["job-chief-0.job:2222"],
        "worker": ["job-worker-0.job:2222"],
    }
    mapped = json.loads(cluster._map_hosts(json.dumps(hosts)))
    ports = [addr for addrs in mapped.values() for addr in addrs]
    assert ports == ["127.0.0.1:41001", "127.0.0.1:41003", "127.0.0.1:41005"]
    # the same host keeps its port in every pod's environment
    assert json.loads(cluster._map_hosts(json.dumps({"chief": hosts["chief"]}))) == {
        "chief": ["127.0.0.1:41003"]
    }
