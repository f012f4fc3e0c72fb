"""A Kubernetes job's results outlive its pods: storage in the manifests (a claim, a URI, none), the claim
checked before anything is created, where the notebook reads the artifacts, resuming from an earlier job's
checkpoints, and the parent ConfigMap's retention — against the test API server and kubelet (a claim is a
host directory), with real TensorFlow end to end."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubelet import STANDIN_RUNNER
from local_helpers import epoch_events, tf_keras_cell, wait_for
from test_preflight import ROLE

import tfk8s_jupyter as tk
import tfk8s_jupyter.api as api_module
from tfk8s_jupyter.backends.base import JobNotFound
from tfk8s_jupyter.backends.kubernetes import render_manifests
from tfk8s_jupyter.backends.kubernetes import storage as st
from tfk8s_jupyter.backends.kubernetes.lifecycle import ANNOTATION_FINISHED, parent_expired
from tfk8s_jupyter.backends.kubernetes.manifests import SCRATCH_DIR
from tfk8s_jupyter.backends.kubernetes.preflight import PreflightFailed
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import make_spec

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(300)]

CRD = Path(__file__).parent / "data" / "kubeflow.org_tfjobs.v1.9.0.yaml"
TFJOB_SCHEMA = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
QUICK = "EPOCHS = 1\nSTEPS = 3\nSTEP_SECONDS = 0.02"


def spec_of(name="stored", code=QUICK, **kw):
    opts = {"ps": 1, "workers": 2, "backend": "kubernetes", "owner": "alice"}
    opts.update(kw)
    return make_spec(code, name=name, **opts)


def pod_specs(objs):
    """(pod spec, container env) of every role's pod template, native Jobs or TFJob replicas."""
    out = []
    for obj in objs:
        if obj["kind"] == "Job":
            templates = [obj["spec"]["template"]]
        elif obj["kind"] == "TFJob":
            templates = [rs["template"] for rs in obj["spec"]["tfReplicaSpecs"].values()]
        else:
            continue
        for t in templates:
            c = t["spec"]["containers"][0]
            out.append((t["spec"], c, {e["name"]: e.get("value") for e in c["env"]}))
    return out


def validate(objs):
    for obj in objs:
        if obj["kind"] == "TFJob":
            jsonschema.validate(obj, TFJOB_SCHEMA)
        else:
            kubernetes_validate.validate(obj, "1.33", strict=True)


# manifests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavor", ["native", "tfjob"])
def test_a_claim_is_mounted_in_every_pod_and_holds_the_artifacts(flavor):
    spec = spec_of(storage="pvc:team-results/runs/alice")
    objs = render_manifests(spec, Payload(code=spec.code), flavor=flavor, namespace="team")
    validate(objs)
    pods = pod_specs(objs)
    assert len(pods) == 3  # chief, ps, worker
    for pod, container, env in pods:
        assert {"name": "tfk8s-storage", "persistentVolumeClaim": {"claimName": "team-results"}} in pod[
            "volumes"
        ]
        assert {"name": "tfk8s-storage", "mountPath": st.STORAGE_MOUNT} in container["volumeMounts"]
        assert env["TFK8S_ARTIFACTS"] == f"{st.STORAGE_MOUNT}/runs/alice/stored"
        assert env["TFK8S_CHECKPOINT_DIR"] == f"{st.STORAGE_MOUNT}/runs/alice/stored/checkpoints"
        assert "TFK8S_RESUME_FROM" not in env


def test_a_claim_without_subpath_and_a_configured_checkpoint_dir():
    spec = spec_of(storage="pvc:results", checkpoint_dir="/shared/ckpt")
    [(_, _, env), *_] = pod_specs(render_manifests(spec))
    assert env["TFK8S_ARTIFACTS"] == f"{st.STORAGE_MOUNT}/stored"
    assert env["TFK8S_CHECKPOINT_DIR"] == "/shared/ckpt/stored"  # checkpoint_dir wins


def test_a_uri_storage_mounts_nothing():
    spec = spec_of(storage="gs://bucket/team/")
    objs = render_manifests(spec, flavor="tfjob")
    validate(objs)
    for pod, _, env in pod_specs(objs):
        assert env["TFK8S_ARTIFACTS"] == "gs://bucket/team/stored"
        assert env["TFK8S_CHECKPOINT_DIR"] == "gs://bucket/team/stored/checkpoints"
        assert not any("persistentVolumeClaim" in v for v in pod["volumes"])


def test_without_storage_the_artifacts_stay_in_the_pods_scratch_dir():
    objs = render_manifests(spec_of())
    validate(objs)
    for pod, container, env in pod_specs(objs):
        assert env["TFK8S_ARTIFACTS"] == f"{st.SCRATCH_ARTIFACTS}/stored"
        assert env["TFK8S_ARTIFACTS"].startswith(SCRATCH_DIR + "/")  # the scratch emptyDir
        assert {"name": "scratch", "mountPath": SCRATCH_DIR} in container["volumeMounts"]
        assert not any("persistentVolumeClaim" in v for v in pod["volumes"])


def test_resume_from_reaches_every_replica():
    spec = spec_of(name="again", storage="pvc:results", resume_from="stored")
    objs = render_manifests(spec, resume_from=f"{st.STORAGE_MOUNT}/stored/checkpoints")
    validate(objs)
    envs = [env for _, _, env in pod_specs(objs)]
    assert envs and all(e["TFK8S_RESUME_FROM"] == f"{st.STORAGE_MOUNT}/stored/checkpoints" for e in envs)


@pytest.mark.parametrize(
    ("earlier", "now", "expected"),
    [
        (
            {"storage": "pvc:results/a"},
            {"storage": "pvc:results/b"},
            f"{st.STORAGE_MOUNT}/a/first/checkpoints",
        ),
        ({"storage": "s3://b/runs"}, {}, "s3://b/runs/first/checkpoints"),
        ({"checkpoint_dir": "/nfs/ckpt"}, {"storage": "pvc:results"}, "/nfs/ckpt/first"),
    ],
)
def test_where_a_new_job_finds_an_earlier_jobs_checkpoints(earlier, now, expected):
    first = spec_of(name="first", namespace="default", **earlier)
    again = spec_of(name="again", namespace="default", resume_from="first", **now)
    assert st.resume_dir(again, first) == expected


@pytest.mark.parametrize(
    ("earlier", "now", "message"),
    [
        ({}, {"storage": "pvc:results"}, r"^job 'first' ran without storage, so its checkpoints vanished"),
        (
            {"storage": "pvc:results"},
            {"storage": "pvc:other"},
            r"^job 'first' keeps its checkpoints on claim results, which this job's pods do not mount; "
            r"pass --storage pvc:results",
        ),
        ({"storage": "pvc:results"}, {}, r"which this job's pods do not mount"),
        (
            {"storage": "pvc:results", "namespace": "team"},
            {"storage": "pvc:results"},
            r"^job 'first' ran in namespace team and its claim results belongs there; submit this job with "
            r"--namespace team",
        ),
    ],
)
def test_checkpoints_the_new_pods_cannot_read_are_refused_in_one_sentence(earlier, now, message):
    first = spec_of(name="first", **{"namespace": "default", **earlier})
    again = spec_of(name="again", namespace="default", resume_from="first", **now)
    with pytest.raises(st.StorageError, match=message) as err:
        st.resume_dir(again, first)
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


# preflight: the claim, before anything is created ---------------------------------------------------
def test_a_missing_claim_is_refused_before_anything_is_created(apiserver, config, backend, tfk8s_home):
    report = tk.check(storage="pvc:results/runs")
    row = next(c for c in report.checks if c.name == "storage")
    assert row.mark == "✗" and not report.ok
    assert row.message.startswith("PersistentVolumeClaim results does not exist in namespace default; create")
    assert "kubectl get pvc -n default" in row.message
    # the first submission's cached preflight refuses it...
    with pytest.raises(PreflightFailed, match="PersistentVolumeClaim results does not exist"):
        tk.submit(QUICK, workers=2, name="first", backend="kubernetes", storage="pvc:results/runs")
    # ...and so does every submission after a passed preflight (another claim, the backend itself)
    tk.submit("x = 1", workers=1, name="fine", backend="kubernetes")
    before = apiserver.count()
    with pytest.raises(st.StorageError, match="^PersistentVolumeClaim results does not exist"):
        tk.submit(QUICK, workers=2, name="second", backend="kubernetes", storage="pvc:results")
    assert apiserver.count() == before  # nothing created
    assert [o["metadata"]["name"] for o in apiserver.objects("configmaps")] == ["fine"]


def test_a_read_write_once_claim_with_replicas_on_several_nodes_is_refused(apiserver, config, backend):
    apiserver.add_claim("default", "rwo", access_modes=("ReadWriteOnce",))
    report = tk.check(storage="pvc:rwo", ps=1, workers=2)
    row = next(c for c in report.checks if c.name == "storage")
    assert row.mark == "✗", report.text()
    assert row.message == (
        "PersistentVolumeClaim rwo is ReadWriteOnce, so only pods on one node can mount it, but the job's 4 "
        "replicas may land on several nodes; use a ReadWriteMany claim, or set a node selector on "
        "kubernetes.io/hostname (c.TFK8s.node_selector) so all replicas share a node."
    )
    with pytest.raises(st.StorageError, match="is ReadWriteOnce, so only pods on one node"):
        backend.submit(spec_of(storage="pvc:rwo"), Payload(code=QUICK))
    assert apiserver.count() == 0
    # one node for every replica, or one replica: fine
    pinned = tk.check(storage="pvc:rwo", ps=1, workers=2, node_selector={"kubernetes.io/hostname": "n1"})
    assert next(c for c in pinned.checks if c.name == "storage").mark == "✓", pinned.text()
    single = tk.check(storage="pvc:rwo", workers=1)
    assert next(c for c in single.checks if c.name == "storage").mark == "✓", single.text()


def test_a_shared_claim_passes_and_the_check_says_where_results_go(apiserver, config, backend):
    apiserver.add_claim("default", "results")
    report = tk.check(storage="pvc:results/runs", ps=1, workers=2)
    assert report.ok, report.text()
    assert "✓ storage" in report.text() and "results (ReadWriteMany)" in report.text()
    plain = tk.check(workers=2)
    assert plain.ok and f"– storage      {st.NO_STORAGE_NOTE}." in plain.text(), plain.text()
    uri = tk.check(storage="s3://bucket/runs", workers=2)
    assert uri.ok and "✓ storage" in uri.text() and "s3://bucket/runs/<job name>" in uri.text(), uri.text()


def test_reading_the_claim_forbidden_is_reported_not_failed(apiserver, config, backend):
    rules = [r for r in ROLE["rules"] if "persistentvolumeclaims" not in r["resources"]]
    apiserver.enforce_rules(rules)
    report = tk.check(storage="pvc:results", workers=1)
    assert next(c for c in report.checks if c.name == "storage").mark == "–", report.text()
    assert "✗ get persistentvolumeclaims" in report.text()  # the permission row names the rule
    # a job without a claim does not need the rule
    assert tk.check(workers=1).ok


# resume_from refusals (nothing created) -----------------------------------------------------------
def test_resume_from_refusals_create_nothing(apiserver, config, backend, tfk8s_home):
    apiserver.add_claim("default", "results")
    apiserver.add_claim("default", "other")
    with pytest.raises(
        JobNotFound,
        match="^resume_from 'ghost' names no job in namespace default nor in this notebook's records",
    ):
        backend.submit(spec_of(name="again", storage="pvc:results", resume_from="ghost"), Payload(code=QUICK))
    backend.submit(spec_of(name="plain"), Payload(code=QUICK))
    backend.submit(spec_of(name="kept", storage="pvc:results"), Payload(code=QUICK))
    before = apiserver.count()
    with pytest.raises(st.StorageError, match="^job 'plain' ran without storage"):
        backend.submit(spec_of(name="again", storage="pvc:results", resume_from="plain"), Payload(code=QUICK))
    with pytest.raises(st.StorageError, match="^job 'kept' keeps its checkpoints on claim results"):
        backend.submit(spec_of(name="again", storage="pvc:other", resume_from="kept"), Payload(code=QUICK))
    assert apiserver.count() == before
    assert not (tfk8s_home / "jobs" / "again").exists()


def test_resume_from_a_job_that_left_no_checkpoint_is_refused_when_the_notebook_sees_the_claim(
    apiserver, config, backend, tmp_path
):
    apiserver.add_claim("default", "results")
    claim_root = tmp_path / "claim"
    (claim_root / "runs" / "kept").mkdir(parents=True)
    config.storage_mount = str(claim_root)
    backend.submit(spec_of(name="kept", storage="pvc:results/runs"), Payload(code=QUICK))
    before = apiserver.count()
    again = spec_of(name="again", storage="pvc:results/runs", resume_from="kept")
    with pytest.raises(st.StorageError, match=r"^job 'kept' left no checkpoint in .*/runs/kept/checkpoints"):
        backend.submit(again, Payload(code=QUICK))
    assert apiserver.count() == before
    (claim_root / "runs" / "kept" / "checkpoints" / "chief").mkdir(parents=True)
    (claim_root / "runs" / "kept" / "checkpoints" / "chief" / "checkpoint").write_text("x")
    backend.submit(again, Payload(code=QUICK))
    envs = [env for _, _, env in pod_specs(apiserver.objects("jobs"))]
    again_envs = [e for e in envs if e["TFK8S_JOB"] == "again"]
    assert again_envs and all(
        e["TFK8S_RESUME_FROM"] == f"{st.STORAGE_MOUNT}/runs/kept/checkpoints" for e in again_envs
    )


# where the notebook reads the results ------------------------------------------------------------
def test_artifacts_location_and_notes(apiserver, config, backend, tmp_path):
    apiserver.add_claim("default", "results")
    backend.submit(spec_of(name="claimed", storage="pvc:results/runs"), Payload(code=QUICK))
    backend.submit(spec_of(name="uri", storage="gs://bucket/runs"), Payload(code=QUICK))
    plain = backend.submit(spec_of(name="plain"), Payload(code=QUICK))
    # not mounted in this notebook: None, and why
    assert backend.artifacts_location("claimed") is None
    assert backend.artifacts_reason("claimed").startswith(
        "job 'claimed' keeps its artifacts on claim results, which this notebook does not mount; mount"
    )
    config.storage_mount = str(tmp_path / "shared")
    assert backend.artifacts_location("claimed") == f"{tmp_path}/shared/runs/claimed"
    config.storage = "pvc:other"  # the notebook mounts another claim there
    assert backend.artifacts_location("claimed") is None
    config.storage = "pvc:results/elsewhere"
    assert backend.artifacts_location("claimed") == f"{tmp_path}/shared/runs/claimed"
    assert backend.checkpoint_location("claimed") == f"{st.STORAGE_MOUNT}/runs/claimed/checkpoints"
    assert backend.artifacts_location("uri") == "gs://bucket/runs/uri"
    assert backend.checkpoint_location("uri") == "gs://bucket/runs/uri/checkpoints"
    assert backend.artifacts_location("plain") is None and backend.checkpoint_location("plain") is None
    assert "ran without storage" in backend.artifacts_reason("plain")
    with pytest.raises(JobNotFound):
        backend.artifacts_location("ghost")
    # the panel's note: only the job without storage
    assert plain.notes == [st.NO_STORAGE_NOTE]
    assert backend.get("plain").notes == [st.NO_STORAGE_NOTE]
    assert backend.get("claimed").notes == [] and backend.get("uri").notes == []
    assert {s.name: s.notes for s in backend.list()}["plain"] == [st.NO_STORAGE_NOTE]


# retention ----------------------------------------------------------------------------------------
def wait_done(backend, name, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.get(name)
        if status.done:
            return status
        time.sleep(0.3)
    raise AssertionError(f"{name} did not end in {timeout} s")


def test_deleting_a_job_removes_its_configmap_and_nothing_else(
    apiserver, standin_cluster, backend, config, tmp_path
):
    apiserver.add_claim("default", "results")
    for name in ("gone", "stays"):
        backend.submit(spec_of(name=name, storage="pvc:results", ps=0, workers=1), Payload(code=QUICK))
    for name in ("gone", "stays"):
        assert wait_done(backend, name).phase == "succeeded"
    marker = standin_cluster.claim_dir("default", "results") / "gone" / "written-by-the-job"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("x")
    stays_before = sorted(
        (o["kind"], o["metadata"]["name"]) for o in apiserver.objects() if "stays" in str(o)
    )
    backend.delete("gone")
    assert apiserver.store.get("", "configmaps", "default", "gone") is None
    left = sorted((o["kind"], o["metadata"]["name"]) for o in apiserver.objects())
    assert not [k for k in left if k[1].startswith("gone")], left
    assert sorted(k for k in left if "stays" in str(k)) == [k for k in stays_before if "stays" in str(k)]
    assert apiserver.store.get("", "persistentvolumeclaims", "default", "results") is not None
    assert marker.read_text() == "x"  # the claim's data is the user's: deleting a job never touches it
    assert [s.name for s in backend.list()] == ["stays"]


def test_the_parent_configmap_goes_with_its_jobs_ttl(apiserver, standin_cluster, backend, config):
    backend.submit(spec_of(name="brief", ps=0, workers=1, ttl_seconds_after_finished=2), Payload(code=QUICK))
    backend.submit(spec_of(name="lasting", ps=0, workers=1), Payload(code=QUICK))
    assert wait_done(backend, "brief").phase == "succeeded"
    assert wait_done(backend, "lasting").phase == "succeeded"
    parent = apiserver.store.get("", "configmaps", "default", "brief-outcome")  # the end, noted beside it
    assert ANNOTATION_FINISHED in parent["metadata"]["annotations"]
    # the TTL controller removes the finished Job; listing then removes its parent (and so the Service)
    deadline = time.monotonic() + 30
    while apiserver.objects("jobs", namespace="default") and time.monotonic() < deadline:
        if [j for j in apiserver.objects("jobs") if j["metadata"]["name"].startswith("brief")]:
            time.sleep(0.3)
            continue
        break
    assert not [j for j in apiserver.objects("jobs") if j["metadata"]["name"].startswith("brief")]
    assert apiserver.store.get("", "configmaps", "default", "brief") is not None  # no Job removes its parent
    # listing removes the parent once the TTL has passed since the end noted on it
    names = [s.name for s in backend.list()]
    while names != ["lasting"] and time.monotonic() < deadline:
        time.sleep(0.5)
        names = [s.name for s in backend.list()]
    assert names == ["lasting"], names
    assert not [o for o in apiserver.objects() if o["metadata"]["name"].startswith("brief")]
    assert apiserver.store.get("", "configmaps", "default", "lasting") is not None
    assert backend.get("brief").phase == "succeeded"  # the local record stays (history is kept_jobs' job)


def test_parent_expiry_counts_from_the_noted_end_and_never_before_an_unseen_end_is_certain():
    now = time.time()

    def parent(created_ago, finished_ago=None):
        meta = {"creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - created_ago))}
        if finished_ago is not None:
            meta["annotations"] = {
                ANNOTATION_FINISHED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - finished_ago))
            }
        return {"metadata": meta}

    assert parent_expired(parent(5000, 3700), 3600, now)
    assert not parent_expired(parent(5000, 100), 3600, now)
    assert not parent_expired(parent(60), 0, now)  # young, no end noted: its Jobs may not exist yet
    assert parent_expired(parent(200), 0, now)
    assert not parent_expired(parent(3000), 3600, now)


def test_the_kubelet_maps_a_claim_to_one_host_directory_kept_after_the_pods(apiserver, make_cluster, backend):
    cluster = make_cluster(runner_override=STANDIN_RUNNER)
    apiserver.add_claim("default", "results")
    code = (
        "import os, pathlib\n"
        "p = pathlib.Path(os.environ['TFK8S_ARTIFACTS'])\n"
        "p.mkdir(parents=True, exist_ok=True)\n"
        "(p / (os.environ['TFK8S_ROLE'] + os.environ['TFK8S_INDEX'])).write_text('hi')\n"
        "EPOCHS = 1\nSTEPS = 2\n"
    )
    backend.submit(
        spec_of(name="writes", code=code, ps=0, workers=2, storage="pvc:results/r"), Payload(code=code)
    )
    assert wait_done(backend, "writes").phase == "succeeded"
    out = cluster.claim_dir("default", "results") / "r" / "writes"
    # the cell (worker 0) and the runner's checkpoints wrote into the claim's host directory
    assert (out / "worker0").read_text() == "hi"
    assert [p.name for p in (out / "checkpoints").iterdir()], "no checkpoint in the claim"
    backend.delete("writes")
    assert not apiserver.objects("pods") and (out / "worker0").is_file()  # kept after the pods


# real TensorFlow through the test API server and kubelet, the claim a host directory --------------------
def follow(backend, name):
    """The backend's watch of ``name`` in a thread (as a panel runs it); returns its stop event."""
    stop = threading.Event()
    threading.Thread(
        target=backend.watch, args=(name, lambda s: None, lambda e: None, stop), daemon=True
    ).start()
    return stop


def pods_of(apiserver, name):
    return [p for p in apiserver.objects("pods") if p["metadata"]["labels"].get("tfk8s.io/job") == name]


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_a_tf_jobs_model_and_tensorboard_logs_outlive_its_pods_on_the_claim(
    apiserver, make_cluster, backend, config
):
    cluster = make_cluster()  # the real runner, shipped in the ConfigMap
    apiserver.add_claim("default", "results")
    config.storage_mount = str(cluster.claim_dir("default", "results"))  # the notebook pod's mount of it
    spec = make_spec(
        tf_keras_cell(epochs=3, steps=20),
        name="kept",
        backend="kubernetes",
        workers=2,
        storage="pvc:results/runs",
        setup_timeout=180,
        ttl_seconds_after_finished=1,  # the TTL controller then removes the Job and its pods
    )
    backend.submit(spec, Payload(code=spec.code))
    stop = follow(backend, "kept")
    status = wait_done(backend, "kept", timeout=600)
    stop.set()
    assert status.phase == "succeeded", f"{status.message}\n{backend.logs('kept', 'worker-0')[-3000:]}"
    wait_for(lambda: not pods_of(apiserver, "kept"), 60, "the pods of kept to be gone")

    location = backend.artifacts_location("kept")
    assert location == str(cluster.claim_dir("default", "results") / "runs" / "kept")
    root = Path(location)
    index = json.loads((root / "artifacts.json").read_text())
    model = root / index["model"]["path"]
    assert model.is_file() and model.stat().st_size == index["model"]["bytes"] > 0
    events = [p for p in (root / "tensorboard").rglob("events.out.tfevents.*") if p.stat().st_size > 0]
    assert events, sorted(str(p) for p in root.rglob("*"))
    assert backend.get("kept").notes == []


@pytest.mark.tf
@pytest.mark.timeout(1200)
def test_a_tf_job_killed_after_its_pods_are_gone_is_resumed_from_its_checkpoint(
    apiserver, make_cluster, backend, config
):
    cluster = make_cluster()
    apiserver.add_claim("default", "results")
    config.storage_mount = str(cluster.claim_dir("default", "results"))
    common = dict(backend="kubernetes", ps=1, workers=1, storage="pvc:results/runs", setup_timeout=180)
    first = make_spec(
        tf_keras_cell(epochs=40, steps=20, step_sleep=0.1), name="first", max_restarts=0, **common
    )
    backend.submit(first, Payload(code=first.code))
    stop = follow(backend, "first")
    wait_for(
        lambda: len(epoch_events(backend.events("first"))) >= 2, 600, "two epochs of the first job", poll=0.5
    )
    [chief] = [p["metadata"]["name"] for p in pods_of(apiserver, "first") if "chief" in p["metadata"]["name"]]
    cluster.kill("default", chief)  # SIGKILL: nothing gets to tidy up
    assert wait_done(backend, "first", timeout=120).phase == "failed"
    stop.set()
    wait_for(lambda: not pods_of(apiserver, "first"), 60, "the pods of first to be gone")
    reached = max(e["step"] for e in backend.events("first") if isinstance(e.get("step"), int))
    assert backend.checkpoint_location("first") == f"{st.STORAGE_MOUNT}/runs/first/checkpoints"

    again = make_spec(tf_keras_cell(epochs=10, steps=20), name="again", resume_from="first", **common)
    backend.submit(again, Payload(code=again.code))
    stop = follow(backend, "again")
    status = wait_done(backend, "again", timeout=600)
    stop.set()
    assert status.phase == "succeeded", f"{status.message}\n{backend.logs('again', 'chief-0')[-3000:]}"
    events = backend.events("again")
    steps = [e["step"] for e in events if e.get("type") in ("metric", "epoch")]
    epochs = [e["epoch"] for e in epoch_events(events)]
    assert steps and 20 < min(steps) <= reached + 20, (steps[:5], reached)  # continues, not from step 1
    assert epochs[0] >= 1 and epochs[-1] == 9, epochs
    index = json.loads((Path(backend.artifacts_location("again")) / "artifacts.json").read_text())
    # what the pods saw as /tfk8s/storage/runs/first/checkpoints (the test kubelet maps the mount to the claim)
    assert index["resumed_from"] == str(
        cluster.claim_dir("default", "results") / "runs" / "first" / "checkpoints"
    )


# deleting a job deletes its artifacts where the notebook reaches them ----------------------------
def test_deleting_a_job_deletes_its_artifacts_on_a_mounted_claim_or_says_where_they_remain(
    apiserver, config, backend, tmp_path
):
    from tfk8s_jupyter.retention import apply_keep_jobs

    apiserver.add_claim("default", "results")
    claim_root = tmp_path / "claim"
    for name in ("gone", "kept-here"):
        (claim_root / "runs" / name / "model").mkdir(parents=True)
        (claim_root / "runs" / name / "model" / "model.keras").write_bytes(b"PK")
    (claim_root / "runs" / "notes.txt").write_text("not a job's")
    config.storage_mount = str(claim_root)
    for name, storage in (
        ("gone", "pvc:results/runs"),
        ("kept-here", "pvc:results/runs"),
        ("far", "gs://b/r"),
    ):
        backend.submit(spec_of(name=name, storage=storage), Payload(code=QUICK))
    # retention: the mounted claim's folder of the job goes, nothing else of the claim
    statuses = [s for s in backend.list(owner=None) if s.name in ("gone", "far")]
    for s in statuses:
        s.phase = "succeeded"  # (ended; its age makes it expire)
    pruned = apply_keep_jobs(backend, statuses, keep="1s", owner="alice", now=time.time() + 60)
    assert sorted(pruned.deleted) == ["far", "gone"]
    assert not (claim_root / "runs" / "gone").exists()
    assert (claim_root / "runs" / "kept-here" / "model" / "model.keras").exists()
    assert (claim_root / "runs" / "notes.txt").read_text() == "not a job's"
    # object storage is not deleted with the job: one line says where the artifacts remain
    assert pruned.line().splitlines()[1] == (
        "tfk8s: job far's artifacts remain at gs://b/r/far (object storage is not deleted with the job; "
        "remove them there when you no longer need them)."
    )
    # a claim this notebook does not mount: where they remain, and how to have them deleted
    config.storage_mount = None
    remains = st.remove_artifacts(backend.spec("kept-here"), config.storage_mount, config.storage)
    assert remains == (
        f"job kept-here's artifacts remain on claim results at {st.STORAGE_MOUNT}/runs/kept-here (this notebook "
        "does not mount the claim; set c.TFK8s.storage_mount to its path here to delete them with the job)."
    )
    assert st.remove_artifacts(spec_of(name="plain"), str(claim_root)) is None  # no storage: nothing remains
    # job.delete() from Python does the same: the line when they remain, the folder gone when mounted here
    assert api_module.Job("kept-here", backend).delete() == remains
    (claim_root / "runs" / "api" / "model").mkdir(parents=True)
    backend.submit(spec_of(name="api", storage="pvc:results/runs"), Payload(code=QUICK))
    config.storage_mount = str(claim_root)
    assert api_module.Job("api", backend).delete() is None
    assert not (claim_root / "runs" / "api").exists()
    assert (claim_root / "runs" / "notes.txt").read_text() == "not a job's"
