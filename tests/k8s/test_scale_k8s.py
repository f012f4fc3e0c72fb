"""Resizing a Kubernetes job (``KubernetesBackend.scale``: a parameter-server job's workers re-created with
the lower count, the chief carrying on; a scale-up of a job without storage refused, see
test_resize_restart_k8s.py for the restarts) through the real ``kubernetes`` client against
the test API server, the test kubelet running the TensorFlow-free stand-in runner in the pods."""

from __future__ import annotations

import threading
import time

import pytest

from tfk8s_jupyter.backends.base import JobConflict
from tfk8s_jupyter.backends.kubernetes import KubernetesBackend
from tfk8s_jupyter.backends.local_scale import BadScale
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import make_spec

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(240)]


def _submit(backend, name, code, **kw) -> threading.Event:
    """Submit, and follow the job (its metric stream into the record) until the returned event is set."""
    spec = make_spec(code, name=name, backend="kubernetes", owner="alice", **kw)
    backend.submit(spec, Payload(code=spec.code))
    stop = threading.Event()
    threading.Thread(
        target=backend.watch, args=(name, lambda s: None, lambda e: None, stop), daemon=True
    ).start()
    return stop


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _worker_pods(apiserver, name):
    return sorted(
        p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
        for p in apiserver.objects("pods")
        if p["metadata"]["labels"].get("job-name") == f"{name}-worker"
    )


def test_ps_scale_down_recreates_the_worker_job_with_fewer_workers_and_the_chief_carries_on(
    apiserver, standin_cluster, backend, kubeconfig, tmp_path, monkeypatch
):
    following = _submit(backend, "k-down", "EPOCHS = 20\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=3)
    _wait(lambda: backend.get("k-down").phase == "running" and backend.events("k-down"), 120, "running")
    chief = backend.get("k-down").replica("chief-0").host
    asked = time.time()
    status = backend.scale("k-down", 2)
    # the worker Indexed Job re-created with 2 completions; nothing patched (a shared namespace's promise)
    assert not [r for r in apiserver.request_log if r["verb"] in ("patch", "update")]
    calls = [(r["verb"], r["resource"]) for r in apiserver.request_log if r["verb"] in ("create", "delete")]
    # ... and the new shape noted in a ConfigMap of its own (the parent is never rewritten either)
    assert calls[-3:] == [("delete", "jobs"), ("create", "jobs"), ("create", "configmaps")]
    job = next(o for o in apiserver.objects("jobs") if o["metadata"]["name"] == "k-down-worker")
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    assert job["metadata"]["ownerReferences"][0]["name"] == "k-down"  # still the parent's: deleted with it
    assert status.replica("worker-2").state == "removed"
    entry = status.history[-1]
    assert (entry["from"], entry["to"], entry["how"], entry["removed"]) == (3, 2, "live", ["worker-2"])
    assert entry["recreated"] == ["worker-0", "worker-1"]
    assert asked <= entry["time"] <= time.time()
    _wait(lambda: _worker_pods(apiserver, "k-down") == ["0", "1"], 30, "worker-2's pod deleted")
    # another machine (no record of the job) sees the removed worker and the history
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    other = KubernetesBackend(config_file=str(kubeconfig), root=tmp_path / "other-machine")
    seen = other.get("k-down")
    assert seen.replica("worker-2").state == "removed"
    assert [h["how"] for h in seen.history] == ["live"]
    # the chief carries on: new metric points after the resize, from the same pod
    _wait(
        lambda: (
            [e for e in backend.events("k-down") if e.get("type") == "metric" and e["t"] > entry["time"] + 1]
            or backend.get("k-down").done
        ),
        60,
        "a point after the resize",
    )
    assert backend.get("k-down").replica("chief-0").host == chief
    _wait(lambda: backend.get("k-down").done, 120, "the end")
    final = backend.get("k-down")
    assert final.phase == "succeeded", final.message
    assert final.replica("worker-2").state == "removed"
    assert [h["how"] for h in final.history] == ["live"]
    assert _worker_pods(apiserver, "k-down") in ([], ["0", "1"])  # never started again
    following.set()


def test_refusals_change_nothing(apiserver, standin_cluster, backend):
    following = _submit(backend, "k-no", "EPOCHS = 30\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=2)
    _wait(lambda: backend.get("k-no").phase == "running", 120, "running")
    for workers, error, words in (
        (0, JobConflict, "at least one worker"),
        (-1, BadScale, "negative"),
        (1.5, BadScale, "whole number"),
        (3, JobConflict, "has no storage, so its checkpoints go with its pods"),
    ):
        with pytest.raises(error, match=words) as e:
            backend.scale("k-no", workers)
        text = str(e.value)
        assert text.count(". ") == 0 and text.endswith("."), text
    assert not [r for r in apiserver.request_log if r["verb"] == "patch"]
    assert backend.get("k-no").history == []
    backend.stop("k-no")
    with pytest.raises(JobConflict, match="has already stopped; only a running job can be resized"):
        backend.scale("k-no", 1)
    following.set()
