"""Resizing a Kubernetes job by checkpoint-restart (``KubernetesBackend.scale``: parameter-server
scale-up, all-reduce resizes, the tfjob flavor): the old shape's Jobs (or TFJob) deleted, new ones created
for the new shape, the curve continuous across the restart, the history and the marker recorded — through
the real ``kubernetes`` client against the test API server, with the Role of a shared namespace enforced
(no patch, no update). The stand-in runner makes the fast checks; real TensorFlow the loss continuity."""

from __future__ import annotations

import threading
import time

import pytest
from local_helpers import assert_resize_continues, tf_keras_cell, wait_for
from test_scale_k8s import _submit as submit_and_follow

from tfk8s_jupyter.backends.base import JobConflict
from tfk8s_jupyter.backends.kubernetes.resize_restart import PENDING_FILE
from tfk8s_jupyter.backends.local_scale import BadScale
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import make_spec

pytestmark = [pytest.mark.k8s]


def _submit(backend, name, code, **kw) -> threading.Event:
    """Submit with storage (a restart-resize needs its checkpoints to outlive the pods) and follow the job
    until the returned event is set."""
    return submit_and_follow(backend, name, code, storage="pvc:results/runs", **kw)


def _checkpointed(backend, name, timeout=120, after: float | None = None):
    """Wait for a checkpoint of the job (``after``: one the new shape saved after that time)."""
    if after is None:
        wait_for(
            lambda: any(e.get("type") == "checkpoint" for e in backend.events(name)), timeout, "a checkpoint"
        )
        return
    wait_for(
        lambda: any(
            e.get("type") == "checkpoint" and e["t"] > after and e.get("run") != "resize"
            for e in backend.events(name)
        ),
        timeout,
        "a checkpoint of the new shape",
    )


def _resized(backend, name, n, timeout=120) -> dict:
    record = backend.record(name)
    try:
        wait_for(
            lambda: len(backend.get(name).history) >= n and not (record.dir / PENDING_FILE).exists(),
            timeout,
            f"resize {n} applied",
        )
    except AssertionError as e:
        status = backend.get(name)
        pending = (record.dir / PENDING_FILE).read_text() if (record.dir / PENDING_FILE).exists() else None
        raise AssertionError(
            f"{e}: phase {status.phase}, message {status.message!r}, notes {status.notes}, pending {pending}, "
            f"history {status.history}, last events {backend.events(name)[-5:]}"
        ) from None
    return backend.get(name).history[n - 1]


def _no_patch(apiserver):
    assert not [r for r in apiserver.request_log if r["verb"] in ("patch", "update")]
    assert not [r for r in apiserver.request_log if r.get("status") == 403], [
        r for r in apiserver.request_log if r.get("status") == 403
    ]


def _curve_is_continuous(backend, name, epochs, steps) -> None:
    """Every step reported exactly once, in order, across the restarts (no point lost or doubled)."""
    points = [e["step"] for e in backend.events(name) if e.get("type") == "metric"]
    assert points == list(range(1, epochs * steps + 1)), points


def _role_jobs(apiserver, name):
    return {
        o["metadata"]["name"]: (o["spec"]["completions"], o["metadata"]["uid"])
        for o in apiserver.objects("jobs")
        if o["metadata"]["labels"].get("tfk8s.io/job") == name
    }


@pytest.mark.timeout(300)
def test_standin_all_reduce_2_to_3_to_2_by_restart_with_new_indexed_jobs(
    apiserver, standin_cluster, backend, config
):
    apiserver.add_claim("default", "results")
    following = _submit(backend, "k-ar", "EPOCHS = 12\nSTEPS = 10\nSTEP_SECONDS = 0.1", workers=2)
    _checkpointed(backend, "k-ar")
    service = next(o for o in apiserver.objects("services") if o["metadata"]["name"] == "k-ar")
    parent = next(o for o in apiserver.objects("configmaps") if o["metadata"]["name"] == "k-ar")
    old_jobs = _role_jobs(apiserver, "k-ar")
    status = backend.scale("k-ar", 3)
    assert status.message.startswith("resizing from 2 to 3 worker(s) by checkpoint-restart"), status.message
    assert status.phase == "running"
    with pytest.raises(JobConflict, match="in progress already") as e:
        backend.scale("k-ar", 2)  # one resize at a time
    assert str(e.value).endswith(".") and str(e.value).count(". ") == 0
    up = _resized(backend, "k-ar", 1)
    assert (up["from"], up["to"], up["how"], up["added"]) == (2, 3, "restart", ["worker-2"])
    assert up["step"] == (up["epoch"] + 1) * 10  # restarted at the checkpoint's step
    assert up["asked"] <= up["time"]
    new_jobs = _role_jobs(apiserver, "k-ar")
    assert new_jobs["k-ar-worker"][0] == 3 and new_jobs["k-ar-worker"][1] != old_jobs["k-ar-worker"][1]
    # the Service and the parent kept (same uid); the new Job owned by the parent
    assert (
        next(o for o in apiserver.objects("services") if o["metadata"]["name"] == "k-ar")["metadata"]["uid"]
        == service["metadata"]["uid"]
    )
    job = next(o for o in apiserver.objects("jobs") if o["metadata"]["name"] == "k-ar-worker")
    assert job["metadata"]["ownerReferences"][0]["uid"] == parent["metadata"]["uid"]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TFK8S_CLUSTER"].count("k-ar-worker-") == 3  # the new cluster for every pod
    assert backend.spec("k-ar").workers == 3
    wait_for(lambda: backend.get("k-ar").replica("worker-2").state == "running", 60, "worker-2 running")
    starts = [e for e in backend.events("k-ar") if e.get("type") == "start"]
    wait_for(
        lambda: [e for e in backend.events("k-ar") if e.get("type") == "start"][-1]["replicas"] == 3,
        60,
        "the new shape's start",
    )
    starts = [e for e in backend.events("k-ar") if e.get("type") == "start"]
    assert starts[-1]["initial_epoch"] == up["epoch"] + 1
    _checkpointed(backend, "k-ar", 60, after=up["time"])
    assert backend.get("k-ar").phase == "running"  # the new shape's events came live, not at the end
    down = backend.scale("k-ar", 2)
    assert down.message.startswith("resizing from 3 to 2 worker(s)")
    entry = _resized(backend, "k-ar", 2)
    assert (entry["from"], entry["to"], entry["how"], entry["removed"]) == (3, 2, "restart", ["worker-2"])
    status = backend.get("k-ar")
    assert status.replica("worker-2").state == "removed"  # shown, though the spec has 2 workers now
    assert _role_jobs(apiserver, "k-ar")["k-ar-worker"][0] == 2
    wait_for(lambda: backend.get("k-ar").done, 120, "the end")
    final = backend.get("k-ar")
    assert final.phase == "succeeded", final.message
    assert [h["how"] for h in final.history] == ["restart", "restart"]
    assert final.replica("worker-2").state == "removed"
    _curve_is_continuous(backend, "k-ar", 12, 10)
    markers = [e for e in backend.events("k-ar") if e.get("type") == "resize"]
    assert [(m["from"], m["to"], m["step"]) for m in markers] == [(2, 3, up["step"]), (3, 2, entry["step"])]
    assert backend.logs("k-ar", "worker-2")  # the removed worker's log is kept
    _no_patch(apiserver)
    following.set()


@pytest.mark.timeout(300)
def test_standin_ps_scale_up_of_a_tfjob_recreates_the_tfjob(apiserver, standin_cluster, backend, config):
    apiserver.tfjob_crd = True
    apiserver.add_claim("default", "results")
    following = _submit(
        backend, "k-tf", "EPOCHS = 24\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=2, flavor="tfjob"
    )
    _checkpointed(backend, "k-tf")
    old = next(o for o in apiserver.objects("tfjobs"))
    backend.scale("k-tf", 3)
    entry = _resized(backend, "k-tf", 1)
    assert (entry["from"], entry["to"], entry["how"], entry["added"]) == (2, 3, "restart", ["worker-2"])
    new = next(o for o in apiserver.objects("tfjobs"))
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    assert new["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 3
    assert new["metadata"]["ownerReferences"][0]["name"] == "k-tf"
    # a TFJob's scale-down is a restart too: its worker count lives in the TFJob, never patched
    _checkpointed(backend, "k-tf", 60, after=entry["time"])
    assert backend.get("k-tf").phase == "running"  # the new shape's events came live, not at the end
    backend.scale("k-tf", 1)
    down = _resized(backend, "k-tf", 2)
    assert (down["from"], down["to"], down["how"], down["removed"]) == (
        3,
        1,
        "restart",
        ["worker-1", "worker-2"],
    )
    assert next(o for o in apiserver.objects("tfjobs"))["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 1
    wait_for(lambda: backend.get("k-tf").done, 120, "the end")
    final = backend.get("k-tf")
    assert final.phase == "succeeded", final.message
    assert [r.name for r in final.replicas if r.state == "removed"] == ["worker-1", "worker-2"]
    _curve_is_continuous(backend, "k-tf", 24, 10)
    _no_patch(apiserver)
    following.set()


@pytest.mark.timeout(300)
def test_restart_refusals_change_nothing(apiserver, standin_cluster, backend, config):
    apiserver.add_claim("default", "results")
    # no storage: the checkpoints would go with the pods
    spec = make_spec(
        "EPOCHS = 30\nSTEPS = 10\nSTEP_SECONDS = 0.1", name="k-bare", backend="kubernetes", workers=2
    )
    backend.submit(spec, Payload(code=spec.code))
    stop = threading.Event()
    threading.Thread(target=backend.watch, args=("k-bare", print, lambda e: None, stop), daemon=True).start()
    wait_for(lambda: backend.get("k-bare").phase == "running", 120, "running")
    for workers, error, words in (
        (3, JobConflict, "submit it with --storage"),
        (1, JobConflict, "submit it with --storage"),
        (0, JobConflict, "at least one worker"),
        (-2, BadScale, "negative"),
        (2.5, BadScale, "whole number"),
    ):
        with pytest.raises(error, match=words) as e:
            backend.scale("k-bare", workers)
        assert str(e.value).count(". ") == 0 and str(e.value).endswith("."), str(e.value)
    backend.stop("k-bare")
    stop.set()
    # before the first checkpoint: when one will be
    before = _submit(backend, "k-early", "EPOCHS = 3\nSTEPS = 200\nSTEP_SECONDS = 0.1", workers=2)
    wait_for(lambda: backend.get("k-early").phase == "running", 120, "running")
    with pytest.raises(JobConflict) as e:
        backend.scale("k-early", 3)
    assert str(e.value).startswith("job k-early has no checkpoint to restart from yet: its first is saved")
    backend.stop("k-early")
    before.set()
    # beyond the namespace's quota: the added workers do not fit
    apiserver.add_quota("default", "pods-cap", {"pods": "5"}, used={"pods": "3"})
    # quotas are read where the user may list them (here a ClusterRole beyond the Role grants it)
    apiserver.grant_cluster_rules([{"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["list"]}])
    capped = _submit(backend, "k-cap", "EPOCHS = 30\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=1)
    _checkpointed(backend, "k-cap")
    with pytest.raises(JobConflict, match="ResourceQuota pods-cap of namespace default leaves 2 pods") as e:
        backend.scale("k-cap", 4)
    assert str(e.value).count(". ") == 0
    jobs = _role_jobs(apiserver, "k-cap")
    assert backend.get("k-cap").history == []
    assert _role_jobs(apiserver, "k-cap") == jobs
    assert not (backend.record("k-cap").dir / PENDING_FILE).exists()
    backend.stop("k-cap")
    with pytest.raises(JobConflict, match="has already stopped; only a running job can be resized"):
        backend.scale("k-cap", 2)
    capped.set()
    _no_patch(apiserver)


# real TensorFlow ------------------------------------------------------------------------------------
def _loss_continues(backend, name, entry: dict, steps: int) -> None:
    assert_resize_continues(backend.events(name), backend.get(name).history, entry, steps)


@pytest.mark.tf
@pytest.mark.timeout(1200)
def test_tf_ps_scale_up_2_to_3_by_restart_on_kubernetes(apiserver, make_cluster, backend, config):
    cluster = make_cluster()  # the real runner, shipped in the ConfigMap
    apiserver.add_claim("default", "results")
    config.storage_mount = str(cluster.claim_dir("default", "results"))
    following = _submit(
        backend,
        "k-tf-up",
        tf_keras_cell(epochs=10, steps=30, step_sleep=0.05),
        ps=1,
        workers=2,
        setup_timeout=240,
    )
    _checkpointed(backend, "k-tf-up", 400)
    asked = time.time()
    status = backend.scale("k-tf-up", 3)
    assert status.message.startswith("resizing from 2 to 3 worker(s) by checkpoint-restart")
    entry = _resized(backend, "k-tf-up", 1, timeout=400)
    assert (entry["from"], entry["to"], entry["how"], entry["added"]) == (2, 3, "restart", ["worker-2"])
    assert asked <= entry["asked"] <= entry["time"]
    wait_for(lambda: backend.get("k-tf-up").done, 600, "the end")
    final = backend.get("k-tf-up")
    assert final.phase == "succeeded", f"{final.message}\n{backend.logs('k-tf-up', 'chief-0')[-3000:]}"
    _loss_continues(backend, "k-tf-up", entry, 30)
    epochs = [e["epoch"] for e in backend.events("k-tf-up") if e.get("type") == "epoch"]
    assert epochs == list(range(10)), epochs  # every epoch once: nothing lost, nothing redone
    assert backend.spec("k-tf-up").workers == 3
    assert "k-tf-up-worker-2" in backend.logs("k-tf-up", "chief-0") or backend.logs("k-tf-up", "worker-2")
    _no_patch(apiserver)
    following.set()


@pytest.mark.tf
@pytest.mark.timeout(1500)
def test_tf_all_reduce_2_to_3_and_3_to_2_by_restart_on_kubernetes(apiserver, make_cluster, backend, config):
    # The claim is not mounted in this notebook (no storage_mount): the added worker gets worker 0's
    # Keras 3 backup from the runner (TFK8S_RESUME_FROM = the job's own checkpoint dir).
    make_cluster()
    apiserver.add_claim("default", "results")
    following = _submit(
        backend,
        "k-tf-ar",
        # long enough that both resizes find a checkpoint before training ends
        tf_keras_cell(epochs=40, steps=30, step_sleep=0.05),
        workers=2,
        setup_timeout=240,
    )
    _checkpointed(backend, "k-tf-ar", 400)
    backend.scale("k-tf-ar", 3)
    up = _resized(backend, "k-tf-ar", 1, timeout=400)
    assert (up["from"], up["to"], up["how"], up["added"]) == (2, 3, "restart", ["worker-2"])
    wait_for(
        lambda: [
            e for e in backend.events("k-tf-ar") if e.get("type") == "epoch" and e["epoch"] > up["epoch"] + 1
        ],
        400,
        "an epoch of 3 workers",
    )
    assert [e for e in backend.events("k-tf-ar") if e.get("type") == "start"][-1]["replicas"] == 3
    backend.scale("k-tf-ar", 2)
    down = _resized(backend, "k-tf-ar", 2, timeout=400)
    assert (down["from"], down["to"], down["how"], down["removed"]) == (3, 2, "restart", ["worker-2"])
    wait_for(lambda: backend.get("k-tf-ar").done, 900, "the end")
    final = backend.get("k-tf-ar")
    assert final.phase == "succeeded", f"{final.message}\n{backend.logs('k-tf-ar', 'worker-0')[-3000:]}"
    _loss_continues(backend, "k-tf-ar", up, 30)
    _loss_continues(backend, "k-tf-ar", down, 30)
    epochs = [e["epoch"] for e in backend.events("k-tf-ar") if e.get("type") == "epoch"]
    assert epochs == list(range(40)), epochs
    assert final.replica("worker-2").state == "removed"
    assert [h["how"] for h in final.history] == ["restart", "restart"]
    _no_patch(apiserver)
    following.set()
