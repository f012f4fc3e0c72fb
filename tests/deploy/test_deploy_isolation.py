"""Isolation between users in shared-namespace mode: two JupyterHub identities (``JUPYTERHUB_USER`` alice and
bob, one service account, one namespace) against the test API server. Bob cannot see, attach, read, stop or
delete alice's job through the Python API/backend, the magics or the REST API; alice can (the control).

Each user has their own job records (``TFK8S_HOME``), as each user's server has its own home volume.
"""

from __future__ import annotations

import json
from pathlib import Path

import k8s_scenarios as sc  # noqa: I001  (skips the module when the test API server is missing)
import pytest
from tornado.httpclient import HTTPClientError

from tfk8s_jupyter import api
from tfk8s_jupyter import config as tfk8s_config
from tfk8s_jupyter.backends.base import TFK8sError
from tfk8s_jupyter.backends.kubernetes.manifests import LABEL_OWNER

pytestmark = pytest.mark.k8s
pytest_plugins = ["pytest_jupyter.jupyter_server"]

JOB = "alice-job"
REFUSED = (TFK8sError, LookupError, PermissionError)


class Users:
    """Switches the process between users the way separate single-user servers differ: the hub user's
    name and the home holding the job records."""

    def __init__(self, monkeypatch, tmp_path: Path):
        self.mp = monkeypatch
        self.tmp_path = tmp_path

    def be(self, user: str) -> None:
        home = self.tmp_path / f"home-{user.replace('@', '_at_')}"
        home.mkdir(exist_ok=True)
        self.mp.setenv("JUPYTERHUB_USER", user)
        self.mp.setenv("TFK8S_HOME", str(home))


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    with sc.test_cluster(tmp_path) as (server, _, kubeconfig):
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setattr(api, "_backends", {})  # bind the backend to this test's server
        monkeypatch.setattr(tfk8s_config, "_current", tfk8s_config.TFK8s())
        yield server


@pytest.fixture
def users(monkeypatch, tmp_path) -> Users:
    return Users(monkeypatch, tmp_path)


def start_job(users: Users, owner: str = "alice", name: str = JOB) -> None:
    users.be(owner)
    api.submit(sc.LONG, workers=2, backend="kubernetes", name=name)
    assert sc.wait_running(api.backend_for("kubernetes"), name).phase == "running"


def assert_untouched(server, users: Users, owner: str = "alice", name: str = JOB) -> None:
    """The job still runs with all its objects, as its owner sees it."""
    kinds = sorted(o["kind"] for o in server.objects(namespace=sc.NAMESPACE) if o["kind"] != "Pod")
    assert kinds == ["ConfigMap", "Job", "Secret", "Service"], kinds
    users.be(owner)
    assert api.attach(name, backend="kubernetes").status.phase == "running"


@pytest.fixture
def alice_job(cluster, users):
    start_job(users)
    yield cluster
    users.be("alice")
    try:
        api.backend_for("kubernetes").delete(JOB)
    except TFK8sError:
        pass


def test_every_object_carries_the_hub_user_as_owner(alice_job):
    objs = alice_job.objects(namespace=sc.NAMESPACE)
    assert objs
    assert {o["metadata"]["labels"][LABEL_OWNER] for o in objs} == {"alice"}


# Python API / backend ----------------------------------------------------------------------------
def test_bob_does_not_see_alices_job_in_his_list(alice_job, users):
    users.be("bob")
    assert [s.name for s in api.list_jobs(backend="kubernetes")] == []
    users.be("alice")
    assert [s.name for s in api.list_jobs(backend="kubernetes")] == [JOB]


ACTIONS = {
    "attach": lambda: api.attach(JOB, backend="kubernetes"),
    "status": lambda: api.backend_for("kubernetes").get(JOB),
    "logs": lambda: api.backend_for("kubernetes").logs(JOB, "worker-0"),
    "stop": lambda: api.backend_for("kubernetes").stop(JOB),
    "delete": lambda: api.backend_for("kubernetes").delete(JOB),
}
MISSING_OWNER_CHECK = (
    "A job is adopted only when its parent's exact owner annotation is current_owner(): get/logs/stop/delete "
    "(and api.attach, the magics) must refuse another user's job with JobNotFound"
)


@pytest.mark.parametrize("action", list(ACTIONS))
def test_bob_cannot_act_on_alices_job_through_the_backend(alice_job, users, action):
    users.be("bob")
    try:
        ACTIONS[action]()
    except REFUSED:
        assert_untouched(alice_job, users)
    else:
        pytest.fail(f"bob could {action} alice's job. {MISSING_OWNER_CHECK}")


def test_sanitized_owner_labels_do_not_merge_two_users(cluster, users):
    """Label values cannot hold '@': 'alice@example.org' and 'alice-example.org' share a label value."""
    start_job(users, owner="alice@example.org")
    users.be("alice-example.org")
    try:
        seen = [s.name for s in api.list_jobs(backend="kubernetes")]
        # The sanitized label selects both; the exact owner annotation must keep them apart.
        assert seen == [], f"alice-example.org sees alice@example.org's jobs {seen}"
    finally:
        users.be("alice@example.org")
        api.backend_for("kubernetes").delete(JOB)


# Magics --------------------------------------------------------------------------------------------
@pytest.fixture
def shell(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    ipython_dir = tmp_path / "ipython"
    ipython_dir.mkdir()
    monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))
    cfg = Config()
    cfg.HistoryManager.hist_file = ":memory:"
    cfg.TFK8s.backend = "kubernetes"
    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance(ipython_dir=str(ipython_dir), config=cfg)
    sh.run_line_magic("load_ext", "tfk8s_jupyter")
    yield sh
    InteractiveShell.clear_instance()


def test_bob_does_not_see_alices_job_in_tfk8s_jobs(alice_job, users, shell, capsys):
    users.be("bob")
    capsys.readouterr()
    shell.run_line_magic("tfk8s_jobs", "--backend kubernetes")
    assert JOB not in capsys.readouterr().out
    users.be("alice")
    shell.run_line_magic("tfk8s_jobs", "--backend kubernetes")
    assert JOB in capsys.readouterr().out


@pytest.mark.parametrize("magic", ["tfk8s_attach", "tfk8s_logs", "tfk8s_stop"])
def test_bob_cannot_act_on_alices_job_through_the_magics(alice_job, users, shell, capsys, magic):
    from IPython.core.error import UsageError

    users.be("bob")
    try:
        shell.run_line_magic(magic, f"{JOB} --backend kubernetes")
    except UsageError:
        assert_untouched(alice_job, users)
    else:
        pytest.fail(f"bob's %{magic} {JOB} worked. {MISSING_OWNER_CHECK}")


def test_tfk8s_jobs_all_never_shows_other_users_jobs_under_jupyterhub(alice_job, users, shell, capsys):
    """``--all`` would list every user's jobs (names, owners, phases): under JupyterHub it is refused."""
    from IPython.core.error import UsageError

    users.be("bob")
    capsys.readouterr()
    with pytest.raises(UsageError, match="only your own jobs"):
        shell.run_line_magic("tfk8s_jobs", "--backend kubernetes --all")
    assert JOB not in capsys.readouterr().out


# REST API ----------------------------------------------------------------------------------------
@pytest.fixture
def jp_server_config(cluster):
    return {"ServerApp": {"jpserver_extensions": {"tfk8s_jupyter": True}}}


async def fetch(jp_fetch, *parts, **kwargs) -> tuple[int, dict]:
    try:
        response = await jp_fetch("tfk8s", "api", "jobs", *parts, **kwargs)
    except HTTPClientError as e:
        return e.code, json.loads(e.response.body or b"{}")
    return response.code, json.loads(response.body or b"{}")


REST = {
    "detail": ((JOB,), {}),
    "logs": ((JOB, "logs"), {}),
    "stop": ((JOB, "stop"), {"method": "POST", "body": b""}),
    "delete": ((JOB,), {"method": "DELETE"}),
}


async def test_bob_does_not_see_alices_job_through_the_rest_api(alice_job, users, jp_fetch):
    users.be("bob")
    code, body = await fetch(jp_fetch)
    assert code == 200 and JOB not in [j["name"] for j in body["jobs"]], body
    users.be("alice")
    code, body = await fetch(jp_fetch)
    assert code == 200 and JOB in [j["name"] for j in body["jobs"]], body


@pytest.mark.parametrize("call", list(REST))
async def test_bob_cannot_act_on_alices_job_through_the_rest_api(alice_job, users, jp_fetch, call):
    parts, kwargs = REST[call]
    users.be("bob")
    code, body = await fetch(jp_fetch, *parts, **kwargs)
    assert code in (403, 404), (code, body)
    assert_untouched(alice_job, users)


# The shared token itself, under the Role ------------------------------------------------------------
def test_with_the_shared_token_bob_can_neither_rewrite_alices_job_nor_read_its_key(tmp_path, monkeypatch):
    """What the package refuses is one thing; what the Role allows anyone holding the shared token is
    another. Under the Role, bob's own kubernetes client cannot patch or replace alice's parent ConfigMap (her
    code and pickled values, mounted by her pods at each restart) nor read her job's protocol-key Secret."""
    from deploytools import OVERLAYS, find_object, render_overlay
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.client.exceptions import ApiException

    rules = find_object(render_overlay(OVERLAYS / "shared-namespace"), "Role", "tfk8s-jobs")["rules"]
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("TFK8S_HOME", str(tmp_path / "home-alice"))
    with sc.test_cluster(tmp_path, rules=rules) as (server, _, kubeconfig):
        alice = sc.backend_for(kubeconfig)
        sc.submit(alice, JOB, code=sc.LONG, workers=1)
        assert sc.wait_running(alice, JOB).phase == "running"
        core = k8s.CoreV1Api(k8s_config.new_client_from_config(str(kubeconfig)))
        payload = core.read_namespaced_config_map(JOB, sc.NAMESPACE).data["payload.json"]
        forged = {"data": {"payload.json": json.dumps({"code": "print('bob was here')"})}}
        refused = []
        for attempt in (
            lambda: core.patch_namespaced_config_map(JOB, sc.NAMESPACE, forged),
            lambda: core.replace_namespaced_config_map(
                JOB, sc.NAMESPACE, {**core.read_namespaced_config_map(JOB, sc.NAMESPACE).to_dict(), **forged}
            ),
            lambda: core.read_namespaced_secret(f"{JOB}-protocol", sc.NAMESPACE),
            lambda: core.list_namespaced_secret(sc.NAMESPACE),
        ):
            with pytest.raises(ApiException) as err:
                attempt()
            refused.append(err.value.status)
        assert refused == [403, 403, 403, 403]
        assert core.read_namespaced_config_map(JOB, sc.NAMESPACE).data["payload.json"] == payload
        # the key is in neither the pod spec nor the parent ConfigMap, both readable by bob
        key = json.loads((alice.record(JOB).dir / "spec.json").read_text())["protocol_key"]
        assert key
        pods = core.list_namespaced_pod(sc.NAMESPACE).to_dict()
        parent = core.read_namespaced_config_map(JOB, sc.NAMESPACE).to_dict()
        assert key not in json.dumps(pods, default=str) and key not in json.dumps(parent, default=str)
        alice.stop(JOB)
        alice.delete(JOB)
        assert server.objects(namespace=sc.NAMESPACE) == []
