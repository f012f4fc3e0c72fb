"""What a restart-resize leaves for others and after faults, through the real ``kubernetes`` client against
the test API server and kubelet (the stand-in runner), the Role of a shared namespace enforced (no patch,
no update): another kernel with no record of the job sees the new shape (a ``<job>-shape-<n>`` ConfigMap
folded into the parent); a new shape the API server refuses half-way is deleted and the old one brought
back from the same checkpoint; a TFJob's new reporting pod, named as the old one, never writes over the old
pod's lines in the record's log copy."""

from __future__ import annotations

import json
import threading

import pytest
from local_helpers import wait_for
from test_resize_restart_k8s import (
    _checkpointed,
    _curve_is_continuous,
    _no_patch,
    _resized,
    _role_jobs,
    _submit,
)

from tfk8s_jupyter.backends.kubernetes import KubernetesBackend
from tfk8s_jupyter.backends.kubernetes.lifecycle import AttemptLog

pytestmark = [pytest.mark.k8s]


@pytest.mark.timeout(300)
def test_another_kernel_with_no_record_sees_the_resized_shape_and_follows_the_new_pods(
    apiserver, standin_cluster, backend, config, kubeconfig, tmp_path, monkeypatch
):
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")  # the owner of the submitted job
    apiserver.add_claim("default", "results")
    following = _submit(backend, "k-seen", "EPOCHS = 14\nSTEPS = 10\nSTEP_SECONDS = 0.1", workers=2)
    _checkpointed(backend, "k-seen")
    backend.scale("k-seen", 3)
    up = _resized(backend, "k-seen", 1)
    parent = next(o for o in apiserver.objects("configmaps") if o["metadata"]["name"] == "k-seen")
    assert json.loads(parent["data"]["spec.json"])["workers"] == 2  # the parent is never rewritten
    shape = next(o for o in apiserver.objects("configmaps") if o["metadata"]["name"] == "k-seen-shape-1")
    assert shape["metadata"]["ownerReferences"][0]["uid"] == parent["metadata"]["uid"]  # deleted with it
    # another machine: an empty record root
    other = KubernetesBackend(config_file=str(kubeconfig), root=tmp_path / "other-machine")
    listed = next(s for s in other.list(owner="alice") if s.name == "k-seen")
    assert len([r for r in listed.replicas if r.role == "worker"]) == 3, listed.replicas
    assert [k for k in other.list(owner="alice") if k.name.startswith("k-seen")] == [listed]  # no extra job
    assert other.spec("k-seen").workers == 3
    status = other.get("k-seen")
    assert [h["to"] for h in status.history] == [3] and status.history[0]["added"] == ["worker-2"]
    seen: list[dict] = []
    stop = threading.Event()
    threading.Thread(
        target=other.watch, args=("k-seen", lambda s: None, seen.extend, stop), daemon=True
    ).start()
    wait_for(lambda: other.get("k-seen").replica("worker-2").state == "running", 60, "worker-2 seen")
    wait_for(
        lambda: [e for e in seen if e.get("type") == "metric" and e["t"] > up["time"]], 60, "new metrics"
    )
    # a second resize, by the first kernel: the other one's record (adopted before it) is brought up to date
    _checkpointed(backend, "k-seen", 60, after=up["time"])
    backend.scale("k-seen", 2)
    _resized(backend, "k-seen", 2)
    stop.set()
    assert other.spec("k-seen").workers == 3  # its own record, until it reads the cluster's list
    other.list(owner="alice")
    assert other.spec("k-seen").workers == 2
    assert other.get("k-seen").replica("worker-2").state == "removed"
    wait_for(lambda: backend.get("k-seen").done, 120, "the end")
    assert backend.get("k-seen").phase == "succeeded"
    # nothing but create/delete/get/list/watch: no verb the Role lacks, no patch or update
    assert {r["verb"] for r in apiserver.request_log} <= {"create", "delete", "get", "list", "watch"}
    _no_patch(apiserver)
    following.set()


@pytest.mark.timeout(300)
def test_a_new_shape_refused_half_way_is_deleted_and_the_old_shape_goes_on_from_the_checkpoint(
    apiserver, standin_cluster, backend, config
):
    apiserver.add_claim("default", "results")
    following = _submit(backend, "k-refused", "EPOCHS = 20\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=2)
    _checkpointed(backend, "k-refused")
    before = _role_jobs(apiserver, "k-refused")
    assert set(before) == {"k-refused-ps", "k-refused-chief", "k-refused-worker"}
    # the new shape's Jobs are created ps, chief, worker: a quota on Jobs refuses the second
    apiserver.fail(
        403,
        verb="create",
        resource="jobs",
        skip=1,
        reason="Forbidden",
        message='jobs.batch "k-refused-chief" is forbidden: exceeded quota: jobs-cap, requested: '
        "count/jobs.batch=1, used: count/jobs.batch=3, limited: count/jobs.batch=3",
    )
    created_before = sum(1 for r in apiserver.request_log if (r["verb"], r["resource"]) == ("create", "jobs"))
    backend.scale("k-refused", 3)
    entry = _resized(backend, "k-refused", 1)
    assert (entry["from"], entry["to"], entry["restored"]) == (2, 3, 2)
    assert "jobs-cap" in entry["failed"]
    status = backend.get("k-refused")
    note = next(n for n in status.notes if n.startswith("the resize to 3 worker(s) failed"))
    assert (
        "quota of namespace default is exceeded (jobs-cap" in note
        and "went on with its 2 worker(s) from the same checkpoint" in note
    )
    assert note.endswith("resize again.") and note.count(". ") == 0, note
    assert backend.spec("k-refused").workers == 2
    after = _role_jobs(apiserver, "k-refused")
    assert set(after) == set(before), (after, status.phase, status.message, backend.get("k-refused").message)
    assert after["k-refused-worker"][0] == 2  # the old shape, nothing of 3
    assert all(after[n][1] != before[n][1] for n in after)  # created again from the checkpoint
    calls = [
        (r["verb"], r.get("name"), r["status"])
        for r in apiserver.request_log
        if r["resource"] == "jobs" and r["verb"] in ("create", "delete")
    ]
    creates = [c for c in calls if c[0] == "create"]
    assert [c[2] for c in creates[created_before:]] == [201, 403, 201, 201, 201], creates
    refused = calls.index(creates[created_before + 1])
    # the new shape's ps Job, created before the refusal, deleted before the old shape is created again
    assert calls[refused + 1][:2] == ("delete", "k-refused-ps"), calls[refused:]
    assert status.phase == "running"
    assert [r.name for r in status.replicas if r.role == "worker"] == ["worker-0", "worker-1"]
    # the job goes on: the old shape's new run continues the curve from the checkpoint (nothing lost or
    # doubled). Its end is not awaited: the test kubelet counts a pod deleted with its Job against the next
    # Job of the same name (a real Job controller counts per Job uid), which can fail the ps Job here.
    starts = wait_for(
        lambda: [e for e in backend.events("k-refused") if e.get("type") == "start"][1:], 60, "the new run"
    )
    assert starts[0]["initial_epoch"] == entry["epoch"] + 1
    wait_for(
        lambda: [
            e
            for e in backend.events("k-refused")
            if e.get("run") == starts[0]["run"] and e.get("type") == "epoch"
        ],
        60,
        "an epoch of the restored shape",
    )
    points = [e["step"] for e in backend.events("k-refused") if e.get("type") == "metric"]
    assert points == list(range(1, len(points) + 1)), points
    backend.stop("k-refused")
    assert len([r for r in apiserver.request_log if r.get("status") == 403]) == 1  # the injected one
    assert not [r for r in apiserver.request_log if r["verb"] in ("patch", "update")]
    following.set()


@pytest.mark.timeout(300)
def test_a_tfjobs_new_reporting_pod_named_as_the_old_one_keeps_the_old_pods_lines(
    apiserver, standin_cluster, backend, config
):
    apiserver.tfjob_crd = True
    apiserver.add_claim("default", "results")
    following = _submit(
        backend, "k-tfl", "EPOCHS = 24\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=1, flavor="tfjob"
    )
    _checkpointed(backend, "k-tfl")
    old_uid = next(
        p["metadata"]["uid"] for p in apiserver.objects("pods") if p["metadata"]["name"] == "k-tfl-chief-0"
    )
    first_run = next(e["run"] for e in backend.events("k-tfl") if e.get("type") == "start")
    backend.scale("k-tfl", 2)
    _resized(backend, "k-tfl", 1)
    path = backend.record("k-tfl").log_path("chief-0")
    index_path = path.with_name(path.name + ".attempts.json")
    # the old pod's lines kept, the new ones after
    assert first_run in path.read_text(), index_path.read_text()
    wait_for(
        lambda: any(
            p["metadata"]["name"] == "k-tfl-chief-0" and p["metadata"]["uid"] != old_uid
            for p in apiserver.objects("pods")
        ),
        60,
        "the new chief pod, named as the old one",
    )
    new_run = wait_for(
        lambda: [e["run"] for e in backend.events("k-tfl") if e.get("type") == "start"][1:], 60, "the new run"
    )[0]
    wait_for(lambda: new_run in path.read_text(), 60, "the new pod's lines in the copy")
    copy = path.read_text()
    assert 0 <= copy.find(first_run) < copy.find(new_run), index_path.read_text()  # both, the old pod's first
    wait_for(lambda: backend.get("k-tfl").done, 120, "the end")
    assert backend.get("k-tfl").phase == "succeeded"
    assert [e["run"] for e in backend.events("k-tfl") if e.get("type") == "start"] == [first_run, new_run]
    # after the end's capture too: both pods' lines, the old one's first
    copy = backend.logs("k-tfl", "chief-0")
    assert 0 <= copy.find(first_run) < copy.find(new_run), (index_path.read_text(), len(copy), copy[:300])
    _curve_is_continuous(backend, "k-tfl", 24, 10)
    _no_patch(apiserver)
    following.set()


def test_attempt_keys_tell_pods_of_one_name_apart_and_older_records_still_read(tmp_path):
    log = AttemptLog(tmp_path / "chief-0.log", "chief-0", 3)
    # an older record: attempts keyed by pod name and restart count only
    log.write(AttemptLog.key("p", 0), "first run\n")
    log.write(AttemptLog.key("p", 1), "second run\n")
    # the end's capture knows the uid: the closed attempt is not written again, the current one is whole
    log.write(AttemptLog.key("p", 0, "uid-a"), "first run\n")
    log.write(AttemptLog.key("p", 1, "uid-a"), "second run, whole\n")
    assert log.path.read_text().count("first run") == 1
    assert log.path.read_text().endswith("second run, whole\n")
    # the pod is gone (a resize) and a new one of the same name comes: its attempts follow, never over
    log.retire("p", "uid-a")
    log.write(AttemptLog.key("p", 0), "new pod\n")  # written by who knows the name only
    log.write(AttemptLog.key("p", 0, "uid-b"), "new pod, whole\n")  # the end's capture
    log.write(AttemptLog.key("p", 1, "uid-a"), "old pod again\n")  # closed: ignored
    text = log.path.read_text()
    assert text.count("second run, whole") == 1 and "old pod again" not in text
    assert text.index("first run") < text.index("second run, whole") < text.index("new pod, whole")
    assert text.count("---- tfk8s: chief-0 restarted") == 2
    assert "new pod\n" not in text.replace("new pod, whole\n", "")
