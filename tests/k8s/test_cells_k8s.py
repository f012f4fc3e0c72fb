"""Tutorial-style cells through the Kubernetes path with real TensorFlow: the in-repo test API server and
test kubelet run the shipped runner in pods, the cells build their own strategy from TF_CONFIG and run
their own custom loops, and the job's curve gets its points from the cells' summaries and ``report()``."""

from __future__ import annotations

import threading

import pytest
from cells import MWMS_GRAPH_SUMMARY, PS_LOOP

from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import make_spec

pytestmark = [pytest.mark.k8s, pytest.mark.tf, pytest.mark.timeout(900)]


def run(backend, spec, timeout=600):
    backend.submit(spec, Payload(code=spec.code))
    statuses: list = []
    stop = threading.Event()
    t = threading.Thread(
        target=backend.watch, args=(spec.name, statuses.append, [].extend, stop), daemon=True
    )
    t.start()
    t.join(timeout)
    stop.set()
    assert statuses, "no status arrived"
    status = statuses[-1]
    assert status.phase == "succeeded", (
        f"{status.message}\n{backend.logs(spec.name, spec.reporting_replica)[-3000:]}"
    )
    return [e for e in backend.events(spec.name) if e["type"] == "metric"]


def test_tf_a_parameter_server_tutorial_loop_streams_its_summary_and_report_points(
    apiserver, make_cluster, backend
):
    """parameter_server_training's shape: TFConfigClusterResolver + its own ParameterServerStrategy,
    ClusterCoordinator.schedule/join, a summary and a report() at each epoch's end."""
    make_cluster()  # the real runner, as shipped in the ConfigMap
    spec = make_spec(
        PS_LOOP,
        ps=1,
        workers=1,
        name="k8s-ps-loop",
        backend="kubernetes",
        metric_interval=0,
        setup_timeout=300,
    )
    points = run(backend, spec)
    assert [p["step"] for p in points] == [20, 40, 60], points
    assert all(set(p["values"]) == {"loss", "last_batch_loss"} for p in points), points
    assert points[0]["values"]["loss"] > points[-1]["values"]["loss"]
    log = backend.logs(spec.name, "chief-0")
    assert "summary files: True variables on: /job:ps" in log, log[-2000:]


def test_tf_an_all_reduce_tutorial_loop_streams_the_summaries_of_its_step_function(
    apiserver, make_cluster, backend
):
    """multi_worker_with_ctl's shape: its own MultiWorkerMirroredStrategy, TF_CONFIG read as JSON, the
    chief/temp-dir idioms with a CheckpointManager, strategy.run/reduce, summaries written inside the
    tf.function (no report())."""
    make_cluster()
    cell = MWMS_GRAPH_SUMMARY.format(ckpt="ckpt", sleep=0)
    spec = make_spec(
        cell, workers=2, name="k8s-mw-loop", backend="kubernetes", metric_interval=0, setup_timeout=300
    )
    points = run(backend, spec)
    assert [p["step"] for p in points] == list(range(1, 61)), points[:3]
    assert all(set(p["values"]) == {"loss", "replica_loss"} for p in points), points[:3]
    assert points[0]["values"]["loss"] > points[-1]["values"]["loss"]
    assert "replicas: 2" in backend.logs(spec.name, "worker-0")
    assert "@tfk8s" not in backend.logs(spec.name, "worker-1")  # only the reporting replica reports
