"""The plumbing of ``make e2e-cluster``: the target, driven the way an operator runs it, reaches the cluster
its KUBECONFIG names — here an in-repo test API server with a test kubelet standing in for that cluster
(no real cluster is available where this project is tested) — runs the scenarios there, and prints the
table; without a usable KUBECONFIG it refuses in one sentence."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kubelet as test_kubelet
import pytest
from apiserver import ApiServer

pytestmark = [pytest.mark.k8s, pytest.mark.tf, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


def make_e2e(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFK8S_E2E_") and k != "KUBECONFIG"}
    env["TFK8S_HOME"] = str(tmp_path / "home")
    return subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "e2e-cluster", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )


def test_make_e2e_cluster_runs_the_scenarios_on_the_cluster_its_kubeconfig_names(tmp_path):
    # a server of its own, not the recorded fixture: the scenario's setup (ServiceAccount, Role, token)
    # is the operator's, not the backend's
    server = ApiServer(namespaces=("default", "tfk8s-e2e"), validate=True).start()
    kubelet = test_kubelet.TestCluster(server, workdir=tmp_path / "kubelet").start()  # the real runner
    try:
        kubeconfig = server.kubeconfig(tmp_path / "operator-kubeconfig")
        done = make_e2e(
            f"KUBECONFIG={kubeconfig}",
            "NAMESPACE=tfk8s-e2e",
            "E2E_ARGS=-k least_privilege",
            tmp_path=tmp_path,
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-6000:]
        assert "tfk8s Kubernetes end-to-end scenarios" in out, out[-3000:]
        assert f"target: cluster {server.url} (context test, namespace tfk8s-e2e)" in out, out[-3000:]
        row = next(line for line in out.splitlines() if line.startswith("least privilege service account"))
        assert row.split()[-2] == "passed", row
        # it ran here, in the namespace asked for: the token was minted and the job's objects created by it
        log = server.request_log
        assert any(e["resource"] == "serviceaccounts" and e["subresource"] == "token" for e in log)
        assert any(
            e["resource"] == "jobs" and e["verb"] == "create" and e["namespace"] == "tfk8s-e2e" for e in log
        )
        assert server.objects(namespace="tfk8s-e2e") == [], "the scenario left objects behind"
        assert not kubelet.running()
    finally:
        kubelet.stop()
        server.stop()


@pytest.mark.parametrize(
    "kubeconfig, sentence",
    [
        ("", "make e2e-cluster needs KUBECONFIG=<kubeconfig file> naming the cluster to test"),
        ("/nonexistent/kubeconfig", "KUBECONFIG=/nonexistent/kubeconfig is not a file"),
    ],
)
def test_make_e2e_cluster_without_a_kubeconfig_says_what_to_pass(tmp_path, kubeconfig, sentence):
    done = make_e2e(f"KUBECONFIG={kubeconfig}", tmp_path=tmp_path)
    assert done.returncode == 2
    assert sentence in done.stdout, done.stdout + done.stderr
    assert "pytest" not in done.stdout  # refused before anything ran
