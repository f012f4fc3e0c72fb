"""The REST API (/tfk8s/api/jobs) on a real Jupyter server, through pytest-jupyter's jp_fetch."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from labjobs import attach_sleeping_supervisor, write_record
from tornado.httpclient import HTTPClientError

from tfk8s_jupyter import api
from tfk8s_jupyter.backends.base import BackendUnavailable
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import make_spec

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_server_config(tfk8s_home, kube_absent):
    return {"ServerApp": {"jpserver_extensions": {"tfk8s_jupyter": True}}}


async def get_json(jp_fetch, *parts, **kwargs):
    response = await jp_fetch("tfk8s", "api", "jobs", *parts, **kwargs)
    return response.code, json.loads(response.body)


async def error_of(jp_fetch, *parts, **kwargs) -> tuple[int, str]:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("tfk8s", "api", "jobs", *parts, **kwargs)
    body = json.loads(info.value.response.body)
    return info.value.code, body["message"]


async def test_list_shows_only_the_users_jobs_newest_first(jp_fetch, tfk8s_home):
    now = time.time()
    write_record(tfk8s_home, "older-job", created=now - 600)
    write_record(tfk8s_home, "newer-job", created=now - 60, phase="failed")
    write_record(tfk8s_home, "bobs-job", owner="bob")

    code, body = await get_json(jp_fetch)

    assert code == 200
    assert [j["name"] for j in body["jobs"]] == ["newer-job", "older-job"]
    assert body["warnings"] == [] and body["backends"] == ["local"] and body["owner"] == "alice"
    job = body["jobs"][1]
    assert job["backend"] == "local" and job["strategy"] == "parameter_server" and job["phase"] == "succeeded"
    assert job["counts"] == {"succeeded": 4} and job["replicas_total"] == 4
    assert job["last_metrics"]["loss"] == pytest.approx(2.0 / 30)
    assert job["sparkline"]["metric"] == "loss" and len(job["sparkline"]["values"]) == 30
    assert job["sparkline"]["values"][0] > job["sparkline"]["values"][-1]
    assert body["jobs"][0]["message"] == "the training cell raised ValueError: boom"


async def test_detail_has_replicas_and_downsampled_series(jp_fetch, tfk8s_home):
    write_record(tfk8s_home, "long-run", points=5000)

    code, job = await get_json(jp_fetch, "long-run")

    assert code == 200
    assert [r["name"] for r in job["replicas"]] == ["ps-0", "chief-0", "worker-0", "worker-1"]
    loss = job["series"]["step"]["loss"]
    assert 1000 <= len(loss["x"]) <= 2000 and len(loss["x"]) == len(loss["y"])
    assert loss["x"][-1] == 4999 * 10  # the last point is always kept
    assert job["n_points"] == 5000
    assert job["spec"]["ps"] == 1 and job["spec"]["workers"] == 2


async def test_logs_tail_of_a_replica(jp_fetch, tfk8s_home):
    write_record(tfk8s_home, "with-logs")

    code, body = await get_json(jp_fetch, "with-logs", "logs", params={"replica": "worker-1", "tail": "3"})

    assert code == 200 and body["replica"] == "worker-1"
    assert body["text"].splitlines() == ["worker-1 line 47", "worker-1 line 48", "worker-1 line 49"]
    assert "supervisor" in body["replicas"] and "ps-0" in body["replicas"]
    code, body = await get_json(jp_fetch, "with-logs", "logs")
    assert body["replica"] == "chief-0"  # the reporting replica by default


async def test_unknown_replica_and_bad_tail_are_explained(jp_fetch, tfk8s_home):
    write_record(tfk8s_home, "with-logs")
    code, message = await error_of(jp_fetch, "with-logs", "logs", params={"replica": "worker-9"})
    assert code == 404 and "worker-9" in message and "worker-1" in message
    code, message = await error_of(jp_fetch, "with-logs", "logs", params={"tail": "lots"})
    assert code == 400 and "tail" in message


async def test_bad_and_missing_names(jp_fetch, tfk8s_home):
    code, message = await error_of(jp_fetch, "Bad_Name")
    assert code == 400 and "DNS-1123" in message
    code, message = await error_of(jp_fetch, "no-such-job")
    assert code == 404 and "no-such-job" in message
    code, message = await error_of(jp_fetch, "no-such-job", "stop", method="POST", body=b"")
    assert code == 404


async def test_stop_a_running_job_then_stop_again_conflicts(jp_fetch, tfk8s_home):
    record = write_record(tfk8s_home, "running-job", phase="running")
    proc = attach_sleeping_supervisor(record)
    try:
        response = await jp_fetch("tfk8s", "api", "jobs", "running-job", "stop", method="POST", body=b"")
        job = json.loads(response.body)
        assert job["phase"] == "stopped" and job["counts"] == {"stopped": 4}
        assert proc.wait(timeout=10) is not None  # the supervisor process really ended

        code, message = await error_of(jp_fetch, "running-job", "stop", method="POST", body=b"")
        assert code == 409 and "already stopped" in message
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_stop_of_a_finished_job_is_a_conflict(jp_fetch, tfk8s_home):
    write_record(tfk8s_home, "done-job")
    code, message = await error_of(jp_fetch, "done-job", "stop", method="POST", body=b"")
    assert code == 409 and "already succeeded" in message


async def test_delete_removes_the_record(jp_fetch, tfk8s_home):
    record = write_record(tfk8s_home, "to-delete")
    response = await jp_fetch("tfk8s", "api", "jobs", "to-delete", method="DELETE")
    assert json.loads(response.body) == {"name": "to-delete", "deleted": True}
    assert not record.dir.exists()
    _, body = await get_json(jp_fetch)
    assert body["jobs"] == []


async def test_another_users_job_is_refused(jp_fetch, tfk8s_home):
    record = write_record(tfk8s_home, "bobs-job", owner="bob")
    for parts, kwargs in [
        (("bobs-job",), {}),
        (("bobs-job", "logs"), {}),
        (("bobs-job", "stop"), {"method": "POST", "body": b""}),
        (("bobs-job",), {"method": "DELETE"}),
    ]:
        code, message = await error_of(jp_fetch, *parts, **kwargs)
        assert code == 403 and "belongs to bob" in message
    assert record.exists()


class BrokenBackend:
    name = "kubernetes"

    def list(self, owner=None):
        raise BackendUnavailable(
            "the Kubernetes API at https://10.0.0.1:6443 is unreachable; check your kubeconfig."
        )

    def get(self, name):
        raise BackendUnavailable("the Kubernetes API is unreachable; check your kubeconfig.")


async def test_a_backend_that_raises_becomes_a_warning(jp_fetch, jp_serverapp, tfk8s_home, monkeypatch):
    jp_serverapp.web_app.settings["tfk8s_jobs_manager"].backends = ["local", "kubernetes"]
    monkeypatch.setitem(api._backends, "kubernetes", BrokenBackend())
    write_record(tfk8s_home, "local-job")

    code, body = await get_json(jp_fetch)

    assert code == 200
    assert [j["name"] for j in body["jobs"]] == ["local-job"]
    assert body["warnings"] == [
        {
            "backend": "kubernetes",
            "message": "the Kubernetes API at https://10.0.0.1:6443 is unreachable; check your kubeconfig.",
        }
    ]
    code, job = await get_json(jp_fetch, "local-job")  # found on local even though kubernetes is down
    assert code == 200
    code, message = await error_of(jp_fetch, "local-job", params={"backend": "kubernetes"})
    assert code == 503 and "unreachable" in message
    code, message = await error_of(jp_fetch, "elsewhere-job")  # not local, and kubernetes cannot say
    assert code == 503 and "elsewhere-job" in message and "kubernetes backend could not be asked" in message


async def test_unauthenticated_requests_are_refused(jp_fetch, tfk8s_home):
    write_record(tfk8s_home, "secret-job")
    for method, parts, body in [
        ("GET", (), None),
        ("GET", ("secret-job",), None),
        ("GET", ("secret-job", "logs"), None),
        ("POST", ("secret-job", "stop"), b""),
        ("DELETE", ("secret-job",), None),
    ]:
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(
                "tfk8s", "api", "jobs", *parts, method=method, body=body, headers={"Authorization": ""}
            )
        assert info.value.code == 403, (method, parts)
    assert (tfk8s_home / "secret-job").exists()


DEAD_CLUSTER = """\
apiVersion: v1
kind: Config
clusters:
- cluster: {server: "https://127.0.0.1:1"}
  name: dead
contexts:
- context: {cluster: dead, user: u, namespace: default}
  name: dead
current-context: dead
users:
- name: u
  user: {token: not-a-real-token}
"""


async def test_an_unreachable_cluster_is_a_warning_and_is_not_asked_on_every_poll(
    jp_fetch, jp_serverapp, tfk8s_home, tmp_path, monkeypatch
):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(DEAD_CLUSTER)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(api, "_backends", {})  # a fresh Kubernetes backend on this kubeconfig
    # generous: the first listing imports the Kubernetes client, slow on a loaded machine
    jp_serverapp.web_app.settings["tfk8s_jobs_manager"].backend_timeout = 60
    write_record(tfk8s_home, "local-job")

    _, body = await get_json(jp_fetch)
    assert body["backends"] == ["local", "kubernetes"]  # configured because a kubeconfig exists
    assert [j["name"] for j in body["jobs"]] == ["local-job"]
    [warning] = body["warnings"]
    assert warning["backend"] == "kubernetes" and "127.0.0.1" in warning["message"]

    start = time.monotonic()
    _, again = await get_json(jp_fetch)
    assert time.monotonic() - start < 1.0  # the standing failure is reported without a new attempt
    assert again["warnings"] == body["warnings"] and [j["name"] for j in again["jobs"]] == ["local-job"]


def ts_fields(interface: str) -> set[str]:
    """Field names of a TypeScript interface in labextension/src/model.ts."""
    source = (Path(__file__).resolve().parents[2] / "labextension" / "src" / "model.ts").read_text()
    match = re.search(rf"export interface {interface}\b[^{{]*\{{(.*?)\n\}}", source, re.S)
    assert match, f"interface {interface} not found in model.ts"
    return set(re.findall(r"^  (\w+)\??:", match.group(1), re.M))


async def test_the_typescript_wire_model_mirrors_the_json_field_by_field(jp_fetch, tfk8s_home):
    write_record(tfk8s_home, "mirrored-job")
    _, listing = await get_json(jp_fetch)
    _, detail = await get_json(jp_fetch, "mirrored-job")
    _, logs = await get_json(jp_fetch, "mirrored-job", "logs")

    assert ts_fields("IJobsResponse") == set(listing)
    assert ts_fields("IJob") == set(listing["jobs"][0])
    assert ts_fields("ISparkline") == set(listing["jobs"][0]["sparkline"])
    assert ts_fields("IBackendWarning") == {"backend", "message"}
    assert ts_fields("IJob") | ts_fields("IJobDetail") == set(detail)
    assert ts_fields("IReplica") == set(detail["replicas"][0])
    assert ts_fields("ISeries") == set(detail["series"]["step"]["loss"])
    assert ts_fields("ILogsResponse") == set(logs)
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("tfk8s", "api", "jobs", "no-such-job")
    assert ts_fields("IErrorResponse") == set(json.loads(info.value.response.body))


@pytest.mark.k8s
async def test_kubernetes_jobs_list_beside_local_ones(jp_fetch, tfk8s_home, tmp_path, monkeypatch):
    """The real Kubernetes backend against the in-repo test API server (no kubelet: pods stay pending)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))
    from apiserver import ApiServer

    server = ApiServer(namespaces=("default",)).start()
    try:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setattr(api, "_backends", {})
        write_record(tfk8s_home, "local-job")
        spec = make_spec("STEPS = 5", workers=2, name="k8s-job", backend="kubernetes", owner="alice")
        api.backend_for("kubernetes").submit(spec, Payload(code=spec.code))
        other = make_spec("STEPS = 5", workers=1, name="bobs-k8s-job", backend="kubernetes", owner="bob")
        api.backend_for("kubernetes").submit(other, Payload(code=other.code))

        _, body = await get_json(jp_fetch)
        assert body["warnings"] == [] and body["backends"] == ["local", "kubernetes"]
        by_name = {j["name"]: j for j in body["jobs"]}
        assert set(by_name) == {"local-job", "k8s-job"}  # bob's job is not listed
        job = by_name["k8s-job"]
        assert job["backend"] == "kubernetes" and job["namespace"] == "default"
        assert job["strategy"] == "multi_worker_mirrored" and job["replicas_total"] == 2

        _, detail = await get_json(jp_fetch, "k8s-job")
        assert [r["name"] for r in detail["replicas"]] == ["worker-0", "worker-1"]
        code, message = await error_of(jp_fetch, "bobs-k8s-job", "stop", method="POST", body=b"")
        assert code == 403
        code, message = await error_of(jp_fetch, "k8s-job", "logs", params={"replica": "ps-0"})
        assert code == 404 and "worker-1" in message
    finally:
        server.stop()


async def test_each_job_says_which_notebook_and_cell_started_it(jp_fetch, tfk8s_home):
    record = write_record(tfk8s_home, "from-notebook")
    spec = json.loads(json.dumps(record.read_spec()))
    spec["labels"] = {"tfk8s.io/notebook": "forecast.ipynb", "tfk8s.io/cell": "7"}
    record.write_spec(spec)
    write_record(tfk8s_home, "from-python")

    _, body = await get_json(jp_fetch)
    origins = {j["name"]: j["origin"] for j in body["jobs"]}
    assert origins == {"from-notebook": "forecast.ipynb [7]", "from-python": None}
    _, detail = await get_json(jp_fetch, "from-notebook")
    assert detail["origin"] == "forecast.ipynb [7]"
    assert body["defaults"] == {"strategy": "auto", "ps": 0, "workers": 2, "gpus": 0, "backend": "local"}


async def test_keep_jobs_trims_the_history_when_the_side_panel_lists(jp_fetch, tfk8s_home, monkeypatch):
    from tfk8s_jupyter.config import current_config

    now = time.time()
    records = [
        write_record(tfk8s_home, n, created=now - 600 + i * 60) for i, n in enumerate(["old-a", "old-b"])
    ]
    records.append(write_record(tfk8s_home, "newest", created=now - 60))
    records.append(write_record(tfk8s_home, "bobs-old", owner="bob", created=now - 6000))
    monkeypatch.setattr(current_config(), "keep_jobs", "1")

    _, body = await get_json(jp_fetch)

    assert [j["name"] for j in body["jobs"]] == ["newest"]
    (warning,) = body["warnings"]
    assert "removed 2" in warning["message"] and "old-a" in warning["message"]
    assert [r.dir.exists() for r in records] == [False, False, True, True]
    _, again = await get_json(jp_fetch)
    assert again["warnings"] == [] and [j["name"] for j in again["jobs"]] == ["newest"]


async def test_patch_workers_scales_a_running_ps_job_down_live(jp_fetch, tfk8s_home, standin):
    job = api.submit("EPOCHS = 30\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=3, name="rest-scale")
    try:
        deadline = time.monotonic() + 60
        while not (job.status.phase == "running" and job.metrics()) and time.monotonic() < deadline:
            time.sleep(0.1)
        body = json.dumps({"workers": 2}).encode()
        response = await jp_fetch("tfk8s", "api", "jobs", "rest-scale", method="PATCH", body=body)
        detail = json.loads(response.body)
        states = {r["name"]: r["state"] for r in detail["replicas"]}
        assert states["worker-2"] == "removed" and states["worker-1"] != "removed"
        assert detail["counts"]["removed"] == 1 and detail["phase"] == "running"
        assert [(h["from"], h["to"], h["how"]) for h in detail["history"]] == [(3, 2, "live")]

        code, message = await error_of(jp_fetch, "rest-scale", method="PATCH", body=b'{"workers": -1}')
        assert code == 400 and message.startswith("workers=-1 is not a number of workers")
        code, message = await error_of(jp_fetch, "rest-scale", method="PATCH", body=b'{"workers": 0}')
        assert code == 409 and "at least one worker" in message
        code, message = await error_of(jp_fetch, "rest-scale", method="PATCH", body=b'{"workers": 1.5}')
        assert code == 400 and message.startswith("workers=1.5 is not a number of workers")
        code, message = await error_of(jp_fetch, "rest-scale", method="PATCH", body=b'{"replicas": 1}')
        assert code == 400 and 'such as {"workers": 2}' in message
        assert [r.state for r in job.status.replicas].count("removed") == 1  # refusals changed nothing
    finally:
        job.stop()
    code, message = await error_of(jp_fetch, "rest-scale", method="PATCH", body=b'{"workers": 1}')
    assert code == 409 and message == "job rest-scale has already stopped; only a running job can be resized."


async def test_tensorboard_of_a_job_starts_once_on_localhost_and_refuses_in_one_sentence(
    jp_fetch, jp_serverapp, tfk8s_home
):
    """POST .../tensorboard starts (then reuses) one TensorBoard on 127.0.0.1 for the job's logs."""
    from tfk8s_jupyter.backends.local import process_alive

    code, message = await error_of(jp_fetch, "no-such-job", "tensorboard", method="POST", body=b"")
    assert code == 404 and "no-such-job" in message

    write_record(tfk8s_home, "no-logs-job")
    _, detail = await get_json(jp_fetch, "no-logs-job")
    assert detail["tensorboard"] is False
    code, message = await error_of(jp_fetch, "no-logs-job", "tensorboard", method="POST", body=b"")
    assert code == 409 and message.startswith("job no-logs-job has no TensorBoard logs")
    assert message.count(". ") == 0 and message.endswith(".")

    record = write_record(tfk8s_home, "logs-job")
    (record.dir / "artifacts" / "tensorboard" / "fit-0" / "train").mkdir(parents=True)
    _, detail = await get_json(jp_fetch, "logs-job")
    assert detail["tensorboard"] is True
    manager = jp_serverapp.web_app.settings["tfk8s_jobs_manager"]
    try:
        code, first = await get_json(jp_fetch, "logs-job", "tensorboard", method="POST", body=b"")
        assert code == 200 and first["url"] == f"http://127.0.0.1:{first['port']}/" and not first["reused"]
        assert process_alive(first["pid"]) and ts_fields("ITensorBoardResponse") == set(first)
        import urllib.request

        with urllib.request.urlopen(first["url"], timeout=10) as response:
            assert b"TensorBoard" in response.read()  # TensorBoard's page answers
        _, again = await get_json(jp_fetch, "logs-job", "tensorboard", method="POST", body=b"")
        assert again["reused"] and again["port"] == first["port"] and again["pid"] == first["pid"]
        await jp_fetch("tfk8s", "api", "jobs", "logs-job", method="DELETE")  # deleting the job stops it
        assert not process_alive(first["pid"])
        other = write_record(tfk8s_home, "other-logs-job")
        (other.dir / "artifacts" / "tensorboard").mkdir(parents=True)
        _, second = await get_json(jp_fetch, "other-logs-job", "tensorboard", method="POST", body=b"")
        assert second["port"] != first["port"] and process_alive(second["pid"])
    finally:
        stopped = manager._tensorboards.stop_all()  # what the server does when it stops
    assert stopped == 1 and not process_alive(second["pid"])


@pytest.fixture
def test_cluster(tmp_path, kube_absent, monkeypatch):
    """The in-repo test API server (the Role enforced, one GPU node) and the Jupyter server's kubeconfig
    pointing at it."""
    from labjobs import start_test_cluster

    from tfk8s_jupyter import api as api_module

    server = start_test_cluster(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    api_module._backends.clear()
    yield server
    api_module._backends.clear()
    server.stop()


async def check_json(jp_fetch, body=None, params=None):
    if params is not None:
        response = await jp_fetch("tfk8s", "api", "check", params=params)
    else:
        response = await jp_fetch("tfk8s", "api", "check", method="POST", body=json.dumps(body).encode())
    return response.code, json.loads(response.body)


async def check_error(jp_fetch, body) -> tuple[int, str]:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("tfk8s", "api", "check", method="POST", body=body)
    return info.value.code, json.loads(info.value.response.body)["message"]


@pytest.mark.k8s
async def test_check_runs_the_same_preflight_as_tk_check(jp_fetch, test_cluster):
    import tfk8s_jupyter as tk

    code, report = await check_json(jp_fetch, {"gpus": 2})
    assert code == 200 and report["namespace"] == "default"
    rows = {c["name"]: c for c in report["checks"]}
    assert rows["namespace"]["mark"] == "✓" and rows["permissions"]["mark"] == "✓"
    assert (
        rows["GPUs"]["mark"] == "✓" and "gpu-node has 4 allocatable nvidia.com/gpu" in rows["GPUs"]["message"]
    )
    # the rows are tk.check's, one for one
    same = tk.check(gpus=2)
    assert [(c["name"], c["mark"], c["message"]) for c in report["checks"]] == [
        (c.name, c.mark, c.message) for c in same.checks
    ]
    assert report["ok"] == same.ok and report["summary"] == same.text().splitlines()[0]
    assert set(report) == ts_fields("ICheckReport") and set(report["checks"][0]) == ts_fields("ICheckRow")
    assert test_cluster.objects(namespace="default") == []  # a preflight creates nothing

    # GET with query arguments is the same check; another context's namespace is checked there.
    code, team = await check_json(jp_fetch, params={"context": "team", "gpus": "8"})
    assert code == 200 and team["namespace"] == "team" and not team["ok"]
    (gpus,) = [c for c in team["checks"] if c["mark"] == "✗"]
    assert gpus["name"] == "GPUs" and gpus["message"].endswith(".") and "8" in gpus["message"]


@pytest.mark.k8s
async def test_check_shows_each_failure_as_one_sentence(jp_fetch, test_cluster):
    rules = [dict(r) for r in test_cluster.rules]
    test_cluster.enforce_rules(
        [
            {**r, "verbs": [v for v in r["verbs"] if v != "create"]} if r["resources"] == ["jobs"] else r
            for r in rules
        ]
    )
    _, report = await check_json(jp_fetch, {"backend": "kubernetes", "namespace": "", "image": None})
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not report["ok"] and [c["name"] for c in failed] == ["create jobs"], report
    assert "in namespace default" in failed[0]["message"] and "role.yaml" in failed[0]["message"]
    assert report["summary"].endswith("1 problem(s).")

    _, missing = await check_json(jp_fetch, {"namespace": "nowhere"})
    assert [(c["name"], c["mark"]) for c in missing["checks"]] == [("namespace", "✗")]
    assert "nowhere" in missing["checks"][0]["message"]


@pytest.mark.k8s
async def test_check_refuses_bad_options_and_says_why_a_cluster_cannot_be_asked(
    jp_fetch, test_cluster, tmp_path, monkeypatch
):
    code, message = await check_error(jp_fetch, b'{"gpus": -1}')
    assert code == 400 and message.startswith("gpus=-1 is not a number of GPUs")
    code, message = await check_error(jp_fetch, b'{"gpus": "two"}')
    assert code == 400 and message.startswith('gpus="two" is not a number of GPUs')
    code, message = await check_error(jp_fetch, b'{"workers": 2}')
    assert (
        code == 400
        and message
        == "'workers' is not an option of the check; it takes backend, context, namespace, image, gpus."
    )
    code, message = await check_error(jp_fetch, b"[1]")
    assert code == 400 and "JSON object" in message
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("tfk8s", "api", "check", method="DELETE")
    assert info.value.code == 405
    message = json.loads(info.value.response.body)["message"]
    assert message.startswith("DELETE is not supported on ") and message.count(". ") == 0
    assert "/tfk8s/api/check; run the cluster preflight with POST" in message
    code, message = await check_error(jp_fetch, b'{"backend": "local"}')
    assert code == 400 and "preflight checks a Kubernetes cluster" in message
    code, message = await check_error(jp_fetch, b'{"context": "nope"}')
    assert code in (400, 503) and "nope" in message and message.count(". ") == 0, message
    assert test_cluster.objects(namespace="default") == []

    # An API server that does not answer: its address and the hint, in one sentence.
    import socket

    from tfk8s_jupyter import api as api_module

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = test_cluster.kubeconfig(tmp_path / "unreachable")
    path.write_text(path.read_text().replace(test_cluster.url, f"http://127.0.0.1:{port}"))
    monkeypatch.setenv("KUBECONFIG", str(path))
    api_module._backends.clear()
    code, message = await check_error(jp_fetch, b"{}")
    assert code == 503 and f"127.0.0.1:{port}" in message and "kubeconfig" in message, message
