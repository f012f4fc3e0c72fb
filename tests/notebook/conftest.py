"""Fixtures for the notebook face: a real IPython shell in a temporary IPYTHONDIR, with the extension."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from notebook_helpers import magics_of, make_shell


@pytest.fixture
def notebook_dir(tmp_path, monkeypatch) -> Path:
    """The notebook's directory (the kernel's cwd), importable like a notebook's folder."""
    d = tmp_path / "nb"
    d.mkdir()
    monkeypatch.chdir(d)
    monkeypatch.syspath_prepend(str(d))
    return d


@pytest.fixture
def ipython_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "ipython"
    d.mkdir()
    monkeypatch.setenv("IPYTHONDIR", str(d))
    return d


@pytest.fixture
def shell(ipython_dir, notebook_dir):
    """A real InteractiveShell with ``%load_ext tfk8s_jupyter`` done."""
    sh = make_shell(ipython_dir)
    sh.run_line_magic("load_ext", "tfk8s_jupyter")
    yield sh
    for job in list(magics_of(sh).jobs.values()):
        try:
            if not job.status.done:
                job.stop()
        except Exception:
            pass
    for panels in magics_of(sh).panels.values():
        for p in panels:
            p.close()
    InteractiveShell.clear_instance()


@pytest.fixture
def kube_cluster(tmp_path, monkeypatch):
    """The Kubernetes tests' in-repo API server plus test kubelet (running the stand-in runner), with a
    kubeconfig whose current context is ``test`` (namespace ``default``) and a context ``team``."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))
    from apiserver import ApiServer
    from kubelet import STANDIN_RUNNER, TestCluster

    import tfk8s_jupyter.api as api

    server = ApiServer(namespaces=("default", "team")).start()
    path = server.kubeconfig(tmp_path / "kubeconfig", contexts={"team": "team"})
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cluster = TestCluster(server, workdir=tmp_path / "kubelet", runner_override=STANDIN_RUNNER).start()
    api._backends.pop("kubernetes", None)
    yield server
    api._backends.pop("kubernetes", None)
    cluster.stop()
    server.stop()
    assert not cluster.running(), "container processes left running"
