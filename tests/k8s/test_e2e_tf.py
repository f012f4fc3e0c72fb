"""The real runner with real TensorFlow through the Kubernetes path (native flavor): the shipped runner runs
from the ConfigMap in the test kubelet's pods, and the job reaches the same result as the local backend
for the same seeded cell."""

from __future__ import annotations

import threading

import pytest
from cells import KERAS, TF_KERAS

from tfk8s_jupyter.backends.local import LocalBackend
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import make_spec

pytestmark = [pytest.mark.k8s, pytest.mark.tf, pytest.mark.timeout(900)]


def run(backend, spec, timeout=420):
    backend.submit(spec, Payload(code=spec.code))
    statuses, events = [], []
    stop = threading.Event()
    t = threading.Thread(
        target=backend.watch, args=(spec.name, statuses.append, events.extend, stop), daemon=True
    )
    t.start()
    t.join(timeout)
    stop.set()
    assert statuses, "no status arrived"
    return statuses[-1], backend.events(spec.name)


def epoch_losses(events):
    return [e["values"]["loss"] for e in events if e["type"] == "epoch"]


def end_event(events):
    return next(e for e in events if e["type"] == "end")


def check_k8s_run(apiserver, backend, spec, status, events):
    assert status.phase == "succeeded", (
        f"{status.message}\n{backend.logs(spec.name, spec.reporting_replica)[-3000:]}"
    )
    losses = epoch_losses(events)
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    # every batch is a point (metric_interval=0): per-step points came through the pod log stream
    assert sum(e["type"] == "metric" for e in events) >= 3
    # the pods ran the runner shipped in the ConfigMap, with TF_CONFIG built from role + Job index
    log = backend.logs(spec.name, spec.reporting_replica)
    assert "@tfk8s" in log
    for replica in spec.replica_names:
        assert backend.logs(spec.name, replica), f"no log captured for {replica}"
    # the rest were removed after the logs were captured
    roles = {p["metadata"]["labels"]["tfk8s.io/role"] for p in apiserver.objects("pods")}
    assert roles <= {spec.reporting_replica.split("-")[0]}
    return losses


def test_tf_parameter_server_job_through_kubernetes_matches_the_local_backend(
    apiserver, make_cluster, backend, tmp_path
):
    make_cluster()  # the real runner, as shipped in the ConfigMap
    spec = make_spec(TF_KERAS, ps=1, workers=1, name="k8s-ps", backend="kubernetes", metric_interval=0)
    status, events = run(backend, spec)
    k8s_losses = check_k8s_run(apiserver, backend, spec, status, events)
    start = next(e for e in events if e["type"] == "start")
    assert start["strategy"] == "parameter_server"
    assert "variable_device=/job:ps" in backend.logs("k8s-ps", "chief-0")

    local = LocalBackend()
    lspec = make_spec(TF_KERAS, ps=1, workers=1, name="local-ps", metric_interval=0.2)
    lstatus, levents = run(local, lspec)
    assert lstatus.phase == "succeeded", lstatus.message
    local_losses = epoch_losses(levents)
    # one worker, seeded data and model: the same training, up to asynchronous-update timing
    assert k8s_losses[-1] == pytest.approx(local_losses[-1], rel=0.25, abs=0.02), (k8s_losses, local_losses)


def test_tf_all_reduce_job_through_kubernetes_matches_the_local_backend(apiserver, make_cluster, backend):
    make_cluster()
    spec = make_spec(KERAS, workers=2, name="k8s-mw", backend="kubernetes", metric_interval=0)
    status, events = run(backend, spec)
    k8s_losses = check_k8s_run(apiserver, backend, spec, status, events)
    k8s_weights = end_event(events)["model"]["weights_sha256"]

    local = LocalBackend()
    lspec = make_spec(KERAS, workers=2, name="local-mw", metric_interval=0.2)
    lstatus, levents = run(local, lspec)
    assert lstatus.phase == "succeeded", lstatus.message
    local_losses = epoch_losses(levents)
    # synchronous all-reduce on seeded data: the same curve (bit-level float noise aside)
    assert k8s_losses == pytest.approx(local_losses, rel=1e-3), (k8s_losses, local_losses)
    # and both pods really trained in lockstep: bitwise-identical weights on worker 0 and worker 1
    assert k8s_weights
    assert f"weights_sha256={k8s_weights}" in backend.logs("k8s-mw", "worker-1")
