"""The Kubernetes backend through the real ``kubernetes`` client against the test API server, with the
test kubelet running the TensorFlow-free stand-in runner in the pods."""

from __future__ import annotations

import threading
import time

import pytest
from kubelet import STANDIN_RUNNER

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.base import BackendUnavailable, Forbidden, JobConflict, JobNotFound
from tfk8s_jupyter.backends.kubernetes import KubernetesBackend
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.protocol import event_key, parse_lines
from tfk8s_jupyter.records import JobRecord
from tfk8s_jupyter.spec import make_spec

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(180)]


def spec_of(name="job1", code="STEPS = 10", **kw):
    opts = {"ps": 1, "workers": 2, "backend": "kubernetes", "owner": "alice"}
    opts.update(kw)
    return make_spec(code, name=name, **opts)


def submit(backend, spec):
    return backend.submit(spec, Payload(code=spec.code))


class Follow:
    """Runs ``backend.watch`` in a thread and keeps what it delivers."""

    def __init__(self, backend, name):
        self.statuses, self.events = [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=backend.watch,
            args=(name, self.statuses.append, self.events.extend, self.stop),
            daemon=True,
        )
        self.thread.start()

    def wait(self, timeout=120):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"watch did not end; last status {self.statuses[-1:]}"
        return self.statuses[-1]


def creates(server):
    return [r for r in server.request_log if r["verb"] == "create"]


# submission -----------------------------------------------------------------------------------
def test_ps_job_runs_to_success_through_the_kubernetes_path(apiserver, standin_cluster, backend, tfk8s_home):
    spec = spec_of(code="STEPS = 10\nEPOCHS = 2")
    status = submit(backend, spec)
    assert status.phase == "pending" and status.namespace == "default" and status.flavor == "native"
    final = Follow(backend, "job1").wait()
    assert final.phase == "succeeded", final.message
    assert final.replica("chief-0").state == "succeeded"
    # metrics and epochs arrived, each once, in order
    events = backend.events("job1")
    keys = [event_key(e) for e in events]
    assert len(keys) == len(set(keys))
    assert [e["type"] for e in events][0] == "start" and events[-1]["type"] == "end"
    assert sum(e["type"] == "metric" for e in events) == 20
    # ps and workers are gone from the cluster, and every log was captured first
    pods = apiserver.objects("pods")
    assert [p["metadata"]["labels"]["tfk8s.io/role"] for p in pods] == ["chief"]
    assert {o["kind"] for o in apiserver.objects()} == {"ConfigMap", "Secret", "Service", "Job", "Pod"}
    for replica in ("ps-0", "worker-0", "worker-1"):
        assert "listening on" in backend.logs("job1", replica)
    assert '"type":"end"' in backend.logs("job1", "chief-0")
    assert backend.get("job1").phase == "succeeded"


def test_all_reduce_job_succeeds_and_reports_worker_0(standin_cluster, backend):
    spec = make_spec("STEPS = 5", workers=3, name="mw", backend="kubernetes")
    submit(backend, spec)
    final = Follow(backend, "mw").wait()
    assert final.phase == "succeeded", final.message
    assert final.strategy == "multi_worker_mirrored"
    assert {r.name for r in final.replicas} == {"worker-0", "worker-1", "worker-2"}
    assert any(e["type"] == "epoch" for e in backend.events("mw"))


def test_submission_costs_api_calls_per_role_not_per_replica(apiserver, backend):
    spec = make_spec("x = 1", ps=8, workers=64, name="big", backend="kubernetes")
    submit(backend, spec)
    assert [(r["resource"], r["status"]) for r in creates(apiserver)] == [
        ("configmaps", 201),
        ("secrets", 201),
        ("services", 201),
        ("jobs", 201),
        ("jobs", 201),
        ("jobs", 201),
    ]
    assert len(apiserver.request_log) == 6


def test_a_403_at_the_fourth_create_leaves_zero_objects(apiserver, backend):
    apiserver.fail(403, verb="create", resource="jobs", skip=0)  # jobs are the 4th create
    with pytest.raises(Forbidden) as err:
        submit(backend, spec_of())
    assert [r["status"] for r in creates(apiserver)] == [201, 201, 201, 403]
    assert apiserver.count() == 0
    assert "may not create jobs in namespace default" in str(err.value)
    assert isinstance(err.value.__cause__, Exception) and err.value.__cause__.status == 403
    assert not JobRecord("job1").exists()


def test_a_500_on_the_last_create_also_leaves_nothing(apiserver, backend):
    apiserver.fail(500, verb="create", resource="jobs", skip=2)
    with pytest.raises(BackendUnavailable, match="answered 500"):
        submit(backend, spec_of())
    assert len(creates(apiserver)) == 6 and apiserver.count() == 0


def test_rbac_denial_names_verb_resource_namespace_and_account(apiserver, backend):
    apiserver.enforce_rules(
        [
            {
                "apiGroups": [""],
                "resources": ["configmaps", "secrets", "services"],
                "verbs": ["create", "delete"],
            }
        ]
    )
    with pytest.raises(Forbidden) as err:
        submit(backend, spec_of())
    msg = str(err.value)
    assert "system:serviceaccount:default:tester may not create jobs in namespace default" in msg
    assert "Role" in msg
    assert apiserver.count() == 0
    assert [r["status"] for r in apiserver.request_log if r["resource"] == "jobs"] == [403]


def test_a_name_in_use_is_a_conflict(apiserver, backend):
    submit(backend, spec_of())
    with pytest.raises(JobConflict, match="exists already in namespace default"):
        submit(backend, spec_of())
    assert apiserver.count() == 6  # the first job is untouched


def test_a_missing_namespace_says_so(apiserver, backend):
    with pytest.raises(BackendUnavailable, match="namespace nowhere does not exist"):
        submit(backend, spec_of(namespace="nowhere"))


def test_quota_exceeded_on_create_is_explained(apiserver, backend):
    apiserver.fail(
        403,
        verb="create",
        resource="configmaps",
        message='configmaps "job1" is forbidden: exceeded quota: object-counts, requested: count/configmaps=1, '
        "used: count/configmaps=10, limited: count/configmaps=10",
    )
    with pytest.raises(Forbidden, match="quota of namespace default is exceeded"):
        submit(backend, spec_of())


def test_unreachable_api_is_backend_unavailable(apiserver, tmp_path):
    path = apiserver.kubeconfig(tmp_path / "kc")
    apiserver.stop()
    b = KubernetesBackend(config_file=str(path))
    with pytest.raises(BackendUnavailable, match="cannot be reached"):
        b.list()


def test_a_rollback_that_is_itself_refused_says_what_to_delete(apiserver, backend):
    apiserver.enforce_rules(
        [{"apiGroups": [""], "resources": ["configmaps", "services"], "verbs": ["create"]}]
    )
    with pytest.raises(Forbidden, match="kubectl delete configmap job1 -n default"):
        submit(backend, spec_of())


# namespace, context, flavor -----------------------------------------------------------------------
def test_namespace_from_flag_config_then_context(apiserver, kubeconfig, monkeypatch):
    from tfk8s_jupyter.config import current_config

    b = KubernetesBackend(config_file=str(kubeconfig))
    assert b.resolve_namespace() == "default"  # the kubeconfig context's
    assert KubernetesBackend(config_file=str(kubeconfig), context="team").resolve_namespace() == "team"
    current_config().namespace = "team"
    assert KubernetesBackend(config_file=str(kubeconfig)).resolve_namespace() == "team"
    assert b.resolve_namespace("other") == "other"  # the flag wins


def test_context_selects_the_namespace_of_the_job(apiserver, kubeconfig):
    b = KubernetesBackend(config_file=str(kubeconfig))
    status = submit(b, spec_of(context="team"))
    assert status.namespace == "team"
    assert {o["metadata"]["namespace"] for o in apiserver.objects()} == {"team"}
    assert b.get("job1").namespace == "team"


def test_service_account_namespace_in_cluster(apiserver, tmp_path, monkeypatch):
    """Under JupyterHub: no kubeconfig, the pod's service account and its namespace file."""
    from tfk8s_jupyter.backends.kubernetes import connection

    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("tok")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (sa / "namespace").write_text("team\n")
    port = apiserver.url.rsplit(":", 1)[1]
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setattr(connection, "SA_NAMESPACE_FILE", sa / "namespace")
    monkeypatch.setattr("kubernetes.config.incluster_config.SERVICE_TOKEN_FILENAME", str(sa / "token"))
    monkeypatch.setattr("kubernetes.config.incluster_config.SERVICE_CERT_FILENAME", str(sa / "ca.crt"))
    cluster = connection.load_cluster()
    assert cluster.default_namespace == "team"
    assert cluster.api_client.configuration.host == f"https://127.0.0.1:{port}"
    assert "tok" in str(cluster.api_client.configuration.api_key)


def test_no_configuration_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    b = KubernetesBackend(config_file=str(tmp_path / "missing"))
    with pytest.raises(
        BackendUnavailable, match="no usable Kubernetes configuration.*KUBECONFIG or pass --context"
    ):
        b.list()


def test_api_discovery_picks_the_flavor(apiserver, backend):
    assert backend.resolve_flavor("auto") == "native"
    apiserver.tfjob_crd = True
    fresh = KubernetesBackend(config_file=backend.config_file)
    assert fresh.resolve_flavor("auto") == "tfjob"
    assert fresh.resolve_flavor("native") == "native"
    status = submit(fresh, spec_of(flavor="auto"))
    assert status.flavor == "tfjob"
    kinds = [o["kind"] for o in apiserver.objects()]
    assert sorted(kinds) == ["ConfigMap", "Secret", "TFJob"]
    tfjob = apiserver.objects("tfjobs")[0]
    assert tfjob["metadata"]["ownerReferences"][0]["kind"] == "ConfigMap"
    discovery = [r for r in apiserver.request_log if r["resource"] == "tfjobs"]
    assert [r["verb"] for r in discovery] == ["create"]


def test_tfjob_without_the_operator_says_use_native(apiserver, backend):
    with pytest.raises(BackendUnavailable, match="training operator is not installed.*--flavor native"):
        submit(backend, spec_of(flavor="tfjob"))
    assert apiserver.count() == 0


def test_tfjob_status_follows_the_operator(apiserver, backend):
    apiserver.tfjob_crd = True
    submit(backend, spec_of(flavor="tfjob"))
    assert backend.get("job1").phase == "pending"

    def succeed(obj):
        obj["status"] = {"conditions": [{"type": "Succeeded", "status": "True", "reason": "TFJobSucceeded"}]}

    apiserver.store.update("kubeflow.org", "tfjobs", "default", "job1", succeed)
    assert backend.get("job1").phase == "succeeded"


# lifecycle ----------------------------------------------------------------------------------------
def test_stop_removes_every_replica_and_keeps_the_record(apiserver, standin_cluster, backend):
    submit(backend, spec_of(code="STEPS = 4000\nSTEP_SECONDS = 0.05"))  # long enough to be stopped under load
    watch = Follow(backend, "job1")
    deadline = time.monotonic() + 60
    while not (watch.events and watch.statuses[-1].phase == "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert watch.events, "no event of the job before the stop"
    status = backend.stop("job1")
    assert status.phase == "stopped"
    assert watch.wait(30).phase == "stopped"  # the watch open in the notebook shows the stop
    assert apiserver.objects("pods") == [] and apiserver.objects("jobs") == []
    deadline = time.monotonic() + 20
    while standin_cluster.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert standin_cluster.running() == []
    assert backend.get("job1").phase == "stopped"
    assert "listening on" in backend.logs("job1", "ps-0")  # captured before the pods went away
    # another client sees it stopped too (annotation on the parent)
    other = KubernetesBackend(config_file=backend.config_file, root=backend.root)
    assert other.get("job1").phase == "stopped"


def test_delete_cascades_from_the_parent(apiserver, standin_cluster, backend):
    submit(backend, spec_of(code="STEPS = 400"))
    time.sleep(1)
    assert apiserver.count() > 5
    backend.delete("job1")
    assert apiserver.count() == 0
    assert not JobRecord("job1").exists()
    with pytest.raises(JobNotFound):
        backend.get("job1")
    deletes = [r for r in apiserver.request_log if r["verb"] == "delete"]
    assert [(r["resource"], r["name"]) for r in deletes] == [("configmaps", "job1")]


def test_list_shows_the_owners_jobs_in_three_requests(apiserver, backend):
    submit(backend, spec_of("a1"))
    submit(backend, spec_of("a2", workers=1))
    submit(backend, spec_of("b1", owner="bob"))
    before = len(apiserver.request_log)
    jobs = backend.list(owner="alice")
    assert sorted(j.name for j in jobs) == ["a1", "a2"]
    assert {j.phase for j in jobs} == {"pending"}
    assert len(apiserver.request_log) - before == 3
    assert {j.name for j in backend.list(owner=None)} == {"a1", "a2", "b1"}


def test_attach_after_a_kernel_restart_from_the_cluster_alone(
    apiserver, standin_cluster, kubeconfig, tmp_path, monkeypatch
):
    """A new process with an empty record root finds the job by name and follows it to the end."""
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")  # the owner of spec_of() jobs
    b1 = KubernetesBackend(config_file=str(kubeconfig), root=tmp_path / "kernel1")
    submit(b1, spec_of(code="STEPS = 10"))
    b2 = KubernetesBackend(config_file=str(kubeconfig), root=tmp_path / "kernel2")
    assert b2.spec("job1").ps == 1
    final = Follow(b2, "job1").wait()
    assert final.phase == "succeeded"
    assert any(e["type"] == "end" for e in b2.events("job1"))
    assert sum(e["type"] == "metric" for e in b2.events("job1")) == 20


def test_api_attach_and_job_handle(apiserver, standin_cluster, kubeconfig, monkeypatch):
    from tfk8s_jupyter import api

    monkeypatch.setattr(api, "_backends", {})
    job = tk.submit("STEPS = 10", ps=1, workers=1, backend="kubernetes", name="apijob")
    assert job.wait(timeout=120) == "succeeded"
    again = tk.attach("apijob", backend="kubernetes")
    assert again.spec.workers == 1
    assert [p["values"]["loss"] for p in again.metrics() if p["kind"] == "epoch"]
    assert "apijob" in [s.name for s in tk.list_jobs(backend="kubernetes")]


# dropped streams ------------------------------------------------------------------------------
def _transitions(statuses):
    """Every (replica, state) the follower delivered, in order of first appearance."""
    seen = []
    for s in statuses:
        for r in s.replicas:
            if (r.name, r.state) not in seen:
                seen.append((r.name, r.state))
    return seen


def _server_transitions(apiserver, spec):
    """Every (replica, state) the pods went through on the server, from its watch history."""
    from tfk8s_jupyter.backends.kubernetes.status import pod_replica, replica_state

    seen = []
    for ev in apiserver.store.history:
        if ev.resource != "pods" or ev.type == "DELETED":
            continue
        key = pod_replica(ev.obj)
        if key is None:
            continue
        item = (f"{key[0]}-{key[1]}", replica_state(ev.obj)[0])
        if item not in seen:
            seen.append(item)
        if item == (spec.reporting_replica, "succeeded"):
            break  # the job is over; what the cleanup does later is not a job status change
    return seen


def test_a_dropped_watch_loses_no_status_change(apiserver, make_cluster, backend):
    make_cluster(runner_override=STANDIN_RUNNER, pull_seconds=1.0)
    apiserver.drop_streams(after=1, verb="watch", resource="pods", times=4)
    submit(backend, spec_of(code="STEPS = 10"))
    f = Follow(backend, "job1")
    final = f.wait()
    assert final.phase == "succeeded"
    watches = [r for r in apiserver.request_log if r["verb"] == "watch"]
    assert len(watches) >= 4  # each was cut after one event; the follower resumed each time
    # resumed from the last resourceVersion (never from scratch, never 410): every change was replayed
    assert all(rv not in (None, "", "0") for rv in apiserver.watch_versions)
    assert apiserver.gone_sent == 0
    delivered = _transitions(f.statuses)
    for item in _server_transitions(apiserver, spec_of()):
        if item[1] in ("running", "succeeded", "restarting"):
            assert item in delivered, (item, delivered)


def test_a_410_relists_and_loses_no_status_change(apiserver, make_cluster, backend):
    make_cluster(runner_override=STANDIN_RUNNER, pull_seconds=1.0)
    submit(backend, spec_of(code="STEPS = 30\nSTEP_SECONDS = 0.05"))
    f = Follow(backend, "job1")
    deadline = time.monotonic() + 60
    while not any(s.phase == "running" for s in f.statuses) and time.monotonic() < deadline:
        time.sleep(0.05)
    apiserver.expire()  # every resourceVersion the follower knows is now too old
    final = f.wait()
    assert final.phase == "succeeded"
    assert final.replica("chief-0").state == "succeeded"
    pod_lists = [r for r in apiserver.request_log if r["verb"] == "list" and r["resource"] == "pods"]
    assert len(pod_lists) >= 2  # the first list, then the relist after 410 Gone
    assert apiserver.gone_sent >= 1
    assert ("chief-0", "succeeded") in _transitions(f.statuses)


def test_a_dropped_log_stream_loses_and_duplicates_no_metric_point(apiserver, standin_cluster, backend):
    apiserver.drop_streams(after=7, verb="get", resource="pods", subresource="log", times=5)
    submit(backend, spec_of(code="STEPS = 15\nEPOCHS = 3\nSTEP_SECONDS = 0.03"))
    f = Follow(backend, "job1")
    assert f.wait().phase == "succeeded"
    log_streams = [r for r in apiserver.request_log if r["subresource"] == "log"]
    assert len(log_streams) >= 6
    chief_log = backend.logs("job1", "chief-0")
    truth = [event_key(e) for e in parse_lines(chief_log)]
    delivered = [event_key(e) for e in f.events]
    assert delivered == truth  # none lost, none twice, in order
    assert sum(e["type"] == "metric" for e in f.events) == 45
    assert [event_key(e) for e in backend.events("job1")] == truth


def test_one_watch_and_one_log_stream_per_job(apiserver, make_cluster, backend):
    make_cluster(runner_override=STANDIN_RUNNER, pull_seconds=1.0)
    submit(backend, make_spec("STEPS = 10", ps=2, workers=6, name="wide", backend="kubernetes"))
    f = Follow(backend, "wide")
    assert f.wait().phase == "succeeded"
    watches = [r for r in apiserver.request_log if r["verb"] == "watch"]
    follows = [
        r for r in apiserver.request_log if r["subresource"] == "log" and r["name"].startswith("wide-chief")
    ]
    assert len(watches) == 1
    # the chief: one followed stream (+ at most one re-read as it ended) + the capture at the end
    assert 2 <= len(follows) <= 3
    others = [r for r in apiserver.request_log if r["subresource"] == "log" and "chief" not in r["name"]]
    assert len(others) == 8  # one capture per other replica, no stream


def test_a_followed_jobs_log_tail_comes_from_the_record_and_the_watched_pods(
    apiserver, standin_cluster, backend
):
    """A panel asks for its log tail every 2 s: while this kernel follows the job, the reporting replica's
    tail is the follower's copy and another replica's pod is found among the watched pods, so polling adds
    no pod list and no log read for the reporting replica."""
    submit(
        backend,
        make_spec(
            "STEPS = 40\nEPOCHS = 3\nSTEP_SECONDS = 0.1", ps=1, workers=2, name="tail", backend="kubernetes"
        ),
    )
    f = Follow(backend, "tail")
    _wait_events(backend, "tail", "metric", n=5)
    before = len(apiserver.request_log)
    tails = [backend.logs("tail", "chief-0", tail=20) for _ in range(5)]
    worker = backend.logs("tail", "worker-1", tail=20)
    asked = apiserver.request_log[before:]
    assert all("@tfk8s" in t for t in tails), tails[-1][-300:]
    assert "stand-in worker-1 listening" in worker
    pod_lists = [r for r in asked if r["resource"] == "pods" and r["verb"] == "list"]
    chief_reads = [r for r in asked if r["subresource"] == "log" and "chief" in (r["name"] or "")]
    worker_reads = [r for r in asked if r["subresource"] == "log" and "worker" in (r["name"] or "")]
    assert pod_lists == [] and chief_reads == [], asked
    assert len(worker_reads) == 1
    assert f.wait().phase == "succeeded"
    assert "@tfk8s" in backend.logs("tail", "chief-0")


# faults ---------------------------------------------------------------------------------------
def _pod_of(apiserver, role, index):
    for p in apiserver.objects("pods"):
        labels = p["metadata"]["labels"]
        if labels["tfk8s.io/role"] == role and p["metadata"]["annotations"][
            "batch.kubernetes.io/job-completion-index"
        ] == str(index):
            if p["status"].get("phase") == "Running":
                return p["metadata"]["name"]
    return None


def _wait_events(backend, name, kind, n=1, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(e["type"] == kind for e in backend.events(name)) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} {kind} events after {timeout} s")


def test_a_killed_all_reduce_worker_restarts_every_worker_and_the_job_resumes(
    apiserver, standin_cluster, backend
):
    spec = make_spec(
        "STEPS = 20\nEPOCHS = 3\nSTEP_SECONDS = 0.05", workers=2, name="mwf", backend="kubernetes"
    )
    submit(backend, spec)
    f = Follow(backend, "mwf")
    _wait_events(backend, "mwf", "checkpoint")
    standin_cluster.kill("default", _pod_of(apiserver, "worker", 1))
    final = f.wait()
    assert final.phase == "succeeded", final.message
    assert final.replica("worker-0").restarts >= 1  # it lost its peer and restarted too
    starts = [e for e in backend.events("mwf") if e["type"] == "start"]
    assert len(starts) == 2 and starts[1]["initial_epoch"] >= 1  # resumed from its checkpoint


def test_every_attempts_log_is_kept_with_the_restart_separator(apiserver, standin_cluster, backend):
    spec = make_spec(
        "STEPS = 20\nEPOCHS = 3\nSTEP_SECONDS = 0.05", workers=2, name="mwlog", backend="kubernetes"
    )
    submit(backend, spec)
    f = Follow(backend, "mwlog")
    _wait_events(backend, "mwlog", "checkpoint")
    standin_cluster.kill("default", _pod_of(apiserver, "worker", 1))
    assert f.wait().phase == "succeeded"
    for replica in ("worker-0", "worker-1"):
        text = backend.logs("mwlog", replica)
        attempts = text.split(f"---- tfk8s: {replica} restarted (")
        assert len(attempts) >= 2, text  # the first container's log is kept, then the restart
        assert attempts[1].startswith("1 of 3) ----"), attempts[1][:40]
        assert all("listening on" in a for a in attempts), text  # each attempt has its own lines
    # The reporting replica's copy holds both runs' protocol (the first one no longer overwritten).
    reporting = backend.logs("mwlog", "worker-0")
    starts = [e for e in parse_lines(reporting) if e["type"] == "start"]
    assert len(starts) == 2 and starts[1]["initial_epoch"] >= 1
    assert [event_key(e) for e in parse_lines(reporting)] == [event_key(e) for e in backend.events("mwlog")]


def test_a_killed_ps_worker_restarts_alone_and_the_job_succeeds(apiserver, standin_cluster, backend):
    submit(backend, spec_of("psf", code="STEPS = 20\nEPOCHS = 3\nSTEP_SECONDS = 0.05"))
    f = Follow(backend, "psf")
    _wait_events(backend, "psf", "metric", 5)
    standin_cluster.kill("default", _pod_of(apiserver, "worker", 0))
    final = f.wait()
    assert final.phase == "succeeded", final.message
    assert final.replica("chief-0").restarts == 0


def test_watch_returns_promptly_when_told_to_stop_while_nothing_happens(apiserver, backend):
    submit(backend, spec_of())  # no kubelet: the pods never appear, the watch stream stays silent
    f = Follow(backend, "job1")
    deadline = time.monotonic() + 10
    while not [r for r in apiserver.request_log if r["verb"] == "watch"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    t = time.monotonic()
    f.stop.set()
    f.thread.join(5)
    assert not f.thread.is_alive() and time.monotonic() - t < 2
    assert f.statuses[-1].phase == "pending"


def test_follow_logs_streams_a_replica_until_it_ends(apiserver, standin_cluster, backend):
    submit(backend, spec_of(code="STEPS = 10"))
    lines = list(backend.follow_logs("job1", "chief-0", threading.Event()))
    assert any('"type":"end"' in line for line in lines)
    streams = [r for r in apiserver.request_log if r["subresource"] == "log"]
    assert len(streams) >= 1


def test_a_service_account_without_pods_log_sees_why_metrics_are_missing(apiserver, standin_cluster, backend):
    rules = [
        {
            "apiGroups": [""],
            "resources": ["configmaps", "secrets", "services", "pods", "events"],
            "verbs": ["*"],
        },
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["*"]},
    ]
    apiserver.enforce_rules(rules)  # everything but pods/log
    submit(backend, spec_of(code="STEPS = 10"))
    f = Follow(backend, "job1")
    f.wait()
    messages = [s.message for s in f.statuses if s.message]
    assert any("no metrics" in m and "may not get pods/log in namespace default" in m for m in messages), (
        messages
    )


def test_a_watch_the_account_may_not_make_raises_forbidden(apiserver, backend):
    submit(backend, spec_of())
    apiserver.enforce_rules(
        [
            {"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list"]},
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list"]},
        ]
    )
    with pytest.raises(Forbidden, match="may not watch pods in namespace default"):
        backend.watch("job1", lambda s: None, lambda e: None, threading.Event())


def test_another_users_job_is_not_found_and_never_adopted(apiserver, kubeconfig, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "alice@example.org")
    alice = KubernetesBackend(config_file=str(kubeconfig), root=tmp_path / "alice")
    submit(alice, spec_of("shared", owner="alice@example.org"))
    monkeypatch.setenv("JUPYTERHUB_USER", "alice-example.org")  # the same sanitized label value
    other = KubernetesBackend(config_file=str(kubeconfig), root=tmp_path / "other")
    assert other.list(owner="alice-example.org") == []
    for action in (other.get, other.spec, lambda n: other.logs(n, "worker-0"), other.stop, other.delete):
        with pytest.raises(JobNotFound):
            action("shared")
    assert not (tmp_path / "other" / "shared").exists()
    assert [s.name for s in other.list(owner=None)] == ["shared"]  # everyone's, read-only
    assert not (tmp_path / "other" / "shared").exists()
    assert apiserver.count() == 6
    monkeypatch.setenv("JUPYTERHUB_USER", "alice@example.org")
    assert [s.name for s in alice.list(owner="alice@example.org")] == ["shared"]


def test_the_outcome_survives_the_jobs_ttl_for_a_later_attach(
    apiserver, standin_cluster, kubeconfig, tmp_path, monkeypatch
):
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    b1 = KubernetesBackend(config_file=str(kubeconfig), root=tmp_path / "kernel1")
    submit(b1, spec_of(code="STEPS = 5"))
    assert Follow(b1, "job1").wait().phase == "succeeded"
    for job in apiserver.objects("jobs"):  # what ttlSecondsAfterFinished does later
        apiserver.store.delete("batch", "jobs", "default", job["metadata"]["name"], "Background")
    assert apiserver.objects("pods") == []
    b2 = KubernetesBackend(config_file=str(kubeconfig), root=tmp_path / "kernel2")
    assert b2.get("job1").phase == "succeeded"
    assert [s.phase for s in b2.list(owner="alice")] == ["succeeded"]


def test_tfjob_flavor_runs_to_success_through_the_operator_pods(apiserver, standin_cluster, backend):
    """The test kubelet plays the training operator: pods per replica with TF_CONFIG and its labels."""
    apiserver.tfjob_crd = True
    submit(backend, spec_of(code="STEPS = 10", flavor="auto"))
    final = Follow(backend, "job1").wait()
    assert final.flavor == "tfjob" and final.phase == "succeeded", final.message
    assert final.replica("chief-0").state == "succeeded"
    assert sum(e["type"] == "metric" for e in backend.events("job1")) == 20
    assert '"type":"end"' in backend.logs("job1", "chief-0")
    # the operator's cleanPodPolicy Running deletes ps/workers as the chief exits; their logs are copied
    # when the chief reports the end, which usually (not always) wins that race
    services = [o for o in apiserver.objects("services")]
    assert len(services) == 4  # the operator's Service per replica; the client created none
    # the parent, the protocol key's Secret, the TFJob; at the end the outcome ConfigMap (never a patch)
    assert [r["resource"] for r in creates(apiserver)] == ["configmaps", "secrets", "tfjobs", "configmaps"]
    assert apiserver.store.get("", "configmaps", "default", "job1-outcome") is not None
    assert not [r for r in apiserver.request_log if r["verb"] in ("patch", "update")]


def test_rejected_credentials_say_to_log_in_again(apiserver, backend):
    apiserver.fail(401, verb="list", resource="configmaps", message="Unauthorized")
    with pytest.raises(BackendUnavailable, match="rejected the credentials.*refresh your kubeconfig login"):
        backend.list()


def test_a_slow_api_server_still_gets_the_job_submitted(apiserver, backend):
    apiserver.delay(0.5, verb="create", times=6)
    t = time.monotonic()
    submit(backend, spec_of())
    assert time.monotonic() - t >= 3.0 and apiserver.count() == 6
