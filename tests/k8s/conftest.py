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
