"""Fixtures of the Kubernetes tests: the test API server, the test kubelet, a kubeconfig, the backend.

Every request the backend makes is kept for the session (``request_record.BACKEND_REQUESTS``: the
least-privilege test checks them against the Role at the end); set ``TFK8S_REQUEST_LOG=<path>`` to append
them to a file too (JSON lines: verb, group, resource, subresource, namespace, name, status).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from apiserver import ApiServer  # noqa: E402
from kubelet import STANDIN_RUNNER, TestCluster  # noqa: E402
from request_record import BACKEND_REQUESTS  # noqa: E402

_log_lock = threading.Lock()


@pytest.fixture
def apiserver(request):
    """A running test API server with namespaces ``default`` and ``team``; every object the client creates
    is checked against the real schemas (kubernetes-validate strict, the TFJob CRD), as a server would."""
    server = ApiServer(namespaces=("default", "team"), validate=True).start()
    yield server
    server.stop()
    # test_apiserver.py drives the test server itself, not the backend: its calls are not the backend's.
    if request.node.path.name == "test_apiserver.py":
        return
    entries = [{**entry, "test": request.node.nodeid} for entry in server.request_log]
    with _log_lock:
        BACKEND_REQUESTS.extend(entries)
        path = os.environ.get("TFK8S_REQUEST_LOG")
        if path:
            with open(path, "a") as f:
                f.write("".join(json.dumps(e) + "\n" for e in entries))


@pytest.fixture
def kubeconfig(apiserver, tmp_path, monkeypatch) -> Path:
    """A kubeconfig whose current context ``test`` (namespace ``default``) points at the test server;
    context ``team`` uses namespace ``team``."""
    path = apiserver.kubeconfig(tmp_path / "kubeconfig", contexts={"team": "team"})
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    from tfk8s_jupyter.config import TFK8s, set_current_config

    set_current_config(TFK8s())
    return path


@pytest.fixture
def backend(kubeconfig):
    from tfk8s_jupyter.backends.kubernetes import KubernetesBackend

    return KubernetesBackend(config_file=str(kubeconfig))


def _make_cluster(apiserver, tmp_path, **kw):
    cluster = TestCluster(apiserver, workdir=tmp_path / "kubelet", **kw).start()
    return cluster


@pytest.fixture
def standin_cluster(apiserver, tmp_path):
    """Job controller + kubelet running the TensorFlow-free stand-in runner as the pods' runner."""
    cluster = _make_cluster(apiserver, tmp_path, runner_override=STANDIN_RUNNER)
    yield cluster
    cluster.stop()
    assert not cluster.running(), "container processes left running"


@pytest.fixture
def make_cluster(apiserver, tmp_path):
    """Factory for a test cluster with options (capacity, bad images, quota, real runner)."""
    made = []

    def make(**kw):
        c = _make_cluster(apiserver, tmp_path, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


# The Kubernetes end-to-end scenarios (test_e2e_cluster.py): one scenario, two targets ------------------
_E2E_RESULTS: list[tuple[str, str, float]] = []
_E2E_TARGET: dict[str, str] = {}


@pytest.fixture
def e2e_target(request, tmp_path, monkeypatch):
    """Where the end-to-end scenarios run: the cluster of ``TFK8S_E2E_KUBECONFIG`` (``make e2e-cluster``),
    or else the in-repo test API server with a test kubelet running the real runner (``make test``)."""
    from e2e_target import ENV_IMAGE, ENV_KUBECONFIG, ENV_NAMESPACE, ClusterTarget, InRepoTarget

    from tfk8s_jupyter.config import TFK8s, set_current_config

    kubeconfig = os.environ.get(ENV_KUBECONFIG)
    if kubeconfig:
        target = ClusterTarget(
            Path(kubeconfig), os.environ.get(ENV_IMAGE) or None, os.environ.get(ENV_NAMESPACE) or None
        )
        monkeypatch.setenv("KUBECONFIG", kubeconfig)
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        set_current_config(TFK8s(image=target.image) if target.image else TFK8s())
    else:
        request.getfixturevalue("kubeconfig")
        server = request.getfixturevalue("apiserver")
        kubelet = request.getfixturevalue("make_cluster")()  # the real runner, as shipped in the ConfigMap
        target = InRepoTarget(server, kubelet, tmp_path)
    _E2E_TARGET["name"] = target.name
    yield target
    target.close()
    set_current_config(TFK8s())


def cluster_report(server: ApiServer, tail: int = 15) -> str:
    """What a failed test's pods did: each pod's phase and container state, and the last lines of every run
    of every container (pods already deleted included), oldest pod first."""
    out = []
    for pod in server.objects("pods"):
        meta, status = pod["metadata"], pod.get("status") or {}
        states = [
            f"{c.get('name')}: restarts {c.get('restartCount', 0)}, {json.dumps(c.get('state'))}, "
            f"last {json.dumps(c.get('lastState') or {})}"
            for c in status.get("containerStatuses") or []
        ]
        out.append(f"pod {meta['namespace']}/{meta['name']}: {status.get('phase')}; " + "; ".join(states))
    with server._lock:
        logs = [
            (server.log_pods.get(uid, uid), container, list(runs))
            for (uid, container), runs in server.logs.items()
        ]
    for pod, container, runs in logs:
        for n, buf in enumerate(runs):
            with buf.cond:
                lines = [line for _, line in buf.lines[-tail:]]
            out.append(f"--- {pod} {container} run {n} (last {len(lines)} lines)")
            out.extend(lines)
    return "\n".join(out)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed Kubernetes test shows what its pods did (states, exit codes, log tails): a failure seen only
    in CI can then be read from CI's output."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("apiserver")
    if report.failed and server is not None:
        try:
            report.sections.append(("test cluster", cluster_report(server)))
        except Exception as e:  # the report must never hide the test's own failure
            report.sections.append(("test cluster", f"could not be read: {e!r}"))


def pytest_runtest_logreport(report):
    if "test_e2e_cluster.py::" not in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        name = report.nodeid.split("::")[-1].removeprefix("test_").replace("_", " ")
        outcome = "error" if report.when == "setup" and report.failed else report.outcome
        _E2E_RESULTS.append((name, outcome, report.duration))


def pytest_terminal_summary(terminalreporter):
    """The scenarios' table: what ran where, and how it ended."""
    if not _E2E_RESULTS:
        return
    tr = terminalreporter
    tr.write_sep("=", "tfk8s Kubernetes end-to-end scenarios")
    tr.write_line(f"target: {_E2E_TARGET.get('name', '?')}")
    width = max(len(n) for n, _, _ in _E2E_RESULTS)
    tr.write_line(f"{'scenario':<{width}}  {'result':<7}  seconds")
    for name, outcome, seconds in _E2E_RESULTS:
        tr.write_line(f"{name:<{width}}  {outcome:<7}  {seconds:7.1f}")
    counts = {
        o: sum(1 for _, x, _ in _E2E_RESULTS if x == o) for o in ("passed", "failed", "error", "skipped")
    }
    tr.write_line(", ".join(f"{n} {o}" for o, n in counts.items() if n) or "nothing ran")


@pytest.fixture
def config(apiserver, kubeconfig):
    """The process-wide c.TFK8s of this test (the kubeconfig fixture installed a fresh one); the Role
    tfk8s-jobs enforced by the test API server, as on a real cluster."""
    from test_preflight import ROLE

    import tfk8s_jupyter.api as api_module
    from tfk8s_jupyter.config import current_config

    api_module._backends.clear()
    apiserver.enforce_rules(ROLE["rules"])
    yield current_config()
    api_module._backends.clear()
