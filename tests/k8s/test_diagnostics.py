"""Diagnostics: one sentence from scripted pod states (pure), and the same sentences within seconds in
``JobStatus.message`` when the test kubelet produces those states for a real submission."""

from __future__ import annotations

import time

import pytest
from kubelet import STANDIN_RUNNER

from tfk8s_jupyter.backends.kubernetes import diagnostics as d
from tfk8s_jupyter.backends.kubernetes.status import compute_status
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import make_spec

pytestmark = pytest.mark.k8s


def pod(
    role="worker", index=0, phase="Running", cs=None, conditions=None, limits=None, image="tfk8s/trainer:1"
):
    container = {"name": "tensorflow", "image": image}
    if limits:
        container["resources"] = {"limits": limits, "requests": limits}
    return {
        "metadata": {
            "name": f"j-{role}-{index}-abcde",
            "labels": {"tfk8s.io/role": role, "tfk8s.io/job": "j"},
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "creationTimestamp": "2026-11-26T10:00:00Z",
            "resourceVersion": "5",
        },
        "spec": {"containers": [container]},
        "status": {"phase": phase, "conditions": conditions or [], "containerStatuses": cs or []},
    }


def cstatus(state, last=None, restarts=0, image="tfk8s/trainer:1"):
    return {
        "name": "tensorflow",
        "image": image,
        "restartCount": restarts,
        "state": state,
        "lastState": last or {},
    }


# pure: scripted pod states --------------------------------------------------------------------
def test_unschedulable_names_the_short_resource_and_the_request():
    p = pod(
        phase="Pending",
        limits={"nvidia.com/gpu": "4", "cpu": "2"},
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are "
                "available: 3 No preemption victims found for incoming pod.",
            }
        ],
    )
    msg = d.diagnose_pod(p)
    assert msg.startswith("worker-0 cannot be scheduled: no node has enough free nvidia.com/gpu")
    assert "(it asks for nvidia.com/gpu 4)" in msg and "--gpus" in msg
    assert msg.count(".") >= 1 and "\n" not in msg


def test_unschedulable_by_node_selector():
    p = pod(
        phase="Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.",
            }
        ],
    )
    assert "node selector" in d.diagnose_pod(p) and "TFK8s.node_selector" in d.diagnose_pod(p)


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_image_pull_names_the_image(reason):
    p = pod(
        phase="Pending",
        cs=[
            cstatus(
                {"waiting": {"reason": reason, "message": 'pull access denied for "tfk8s/nope"'}},
                image="tfk8s/nope:2",
            )
        ],
    )
    msg = d.diagnose_pod(p)
    assert msg.startswith(f"the image tfk8s/nope:2 of worker-0 cannot be pulled ({reason}")
    assert "image_pull_secrets" in msg


def test_crash_loop_shows_the_last_log_lines():
    p = pod(
        cs=[
            cstatus(
                {"waiting": {"reason": "CrashLoopBackOff"}},
                last={
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "message": "a\nb\nTraceback...\nValueError: bad shape\n",
                    }
                },
                restarts=4,
            )
        ]
    )
    msg = d.diagnose_pod(p)
    assert (
        msg
        == "worker-0 keeps crashing (restarted 4 times, exit code 1); last output: b | Traceback... | ValueError: bad shape."
    )
    # the caller can pass fresher log lines
    assert "from the log" in d.diagnose_pod(p, logs="x\nfrom the log")


def test_oom_killed_names_the_memory_limit():
    p = pod(
        role="chief",
        limits={"memory": "2Gi"},
        cs=[
            cstatus(
                {"running": {}}, last={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, restarts=1
            )
        ],
    )
    assert d.diagnose_pod(p) == (
        "chief-0 ran out of memory: it was killed (OOMKilled) at its memory limit of 2Gi; "
        "raise --memory or use a smaller batch or model."
    )


def test_a_healthy_pod_has_no_diagnosis():
    assert d.diagnose_pod(pod(cs=[cstatus({"running": {}})])) is None
    assert d.diagnose_pod(pod(phase="Succeeded", cs=[cstatus({"terminated": {"exitCode": 0}})])) is None


def test_quota_refusal_from_job_events():
    events = [
        {
            "reason": "FailedCreate",
            "involvedObject": {"kind": "Job", "name": "j-worker"},
            "message": 'Error creating: pods "j-worker-1-x" is forbidden: exceeded quota: compute, requested: '
            "limits.cpu=2, used: limits.cpu=8, limited: limits.cpu=8",
        }
    ]
    msg = d.failed_create(events)
    assert msg.startswith(
        "j-worker cannot create its pods: the namespace quota is exceeded (compute, requested"
    )


def test_backoff_limit_failure_of_a_job():
    job = {
        "metadata": {"name": "j-chief"},
        "status": {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ]
        },
    }
    assert "crashed more often than max_restarts allows" in d.job_failure(job)


def test_the_status_carries_the_reporting_replicas_diagnosis_first():
    spec = make_spec("x=1", ps=1, workers=1, name="j", backend="kubernetes")
    pods = [
        pod(
            role="worker",
            cs=[cstatus({"waiting": {"reason": "ImagePullBackOff"}}, image="bad:1")],
            phase="Pending",
        ),
        pod(
            role="chief",
            limits={"memory": "1Gi"},
            cs=[
                cstatus(
                    {"waiting": {"reason": "CrashLoopBackOff"}},
                    last={"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                    restarts=2,
                )
            ],
        ),
    ]
    status = compute_status(spec, flavor="native", namespace="default", pods=pods)
    assert status.phase == "running"
    assert status.message.startswith("chief-0 ran out of memory")
    assert status.replica("chief-0").state == "restarting" and status.replica("chief-0").restarts == 2
    assert status.replica("worker-0").message.startswith("the image bad:1")


# live: the test kubelet produces these states --------------------------------------------------
def wait_for_message(backend, name, needle, timeout=30):
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = backend.get(name)
        if status.message and needle in status.message:
            return status, timeout - (deadline - time.monotonic())
        time.sleep(0.2)
    raise AssertionError(f"no message with {needle!r} within {timeout} s; last: {status}")


def submit(backend, code="STEPS = 10", **kw):
    opts = {"ps": 1, "workers": 1, "backend": "kubernetes", "name": "diag"}
    opts.update(kw)
    spec = make_spec(code, **opts)
    backend.submit(spec, Payload(code=spec.code))
    return spec


def test_live_unschedulable_gpus(make_cluster, backend):
    make_cluster(runner_override=STANDIN_RUNNER, node_capacity={"nvidia.com/gpu": "1"})
    submit(backend, gpus=2)
    status, seconds = wait_for_message(backend, "diag", "cannot be scheduled")
    assert "nvidia.com/gpu" in status.message and seconds < 10
    assert status.phase == "pending"


def test_live_image_pull(make_cluster, backend):
    make_cluster(runner_override=STANDIN_RUNNER, bad_images=("registry.example/missing:1",))
    submit(backend, image="registry.example/missing:1")
    status, seconds = wait_for_message(backend, "diag", "cannot be pulled")
    assert "registry.example/missing:1" in status.message and seconds < 10


def test_live_crash_loop_then_failure_carries_the_last_lines(make_cluster, backend):
    make_cluster(runner_override=STANDIN_RUNNER)
    # one replica: its restarts meet no peers (a stand-in ps or worker leaves once the chief is gone, and a
    # chief restarted after that would wait for it forever, never crashing again)
    submit(backend, code="raise ValueError('the cell is broken')", max_restarts=2, ps=0, workers=1)
    status, seconds = wait_for_message(backend, "diag", "the cell is broken")
    assert seconds < 20
    deadline = time.monotonic() + 120
    while not status.done and time.monotonic() < deadline:
        time.sleep(0.3)
        status = backend.get("diag")
    assert status.phase == "failed"
    assert "the cell is broken" in status.message or "max_restarts" in status.message


def test_live_oom_killed(make_cluster, backend, apiserver):
    cluster = make_cluster(runner_override=STANDIN_RUNNER)
    submit(backend, code="STEPS = 2000\nSTEP_SECONDS = 0.05", memory="512Mi")
    deadline = time.monotonic() + 30
    chief = None
    while time.monotonic() < deadline:
        pods = [p for p in apiserver.objects("pods") if p["metadata"]["labels"]["tfk8s.io/role"] == "chief"]
        if pods and pods[0]["status"].get("phase") == "Running":
            chief = pods[0]["metadata"]["name"]
            break
        time.sleep(0.1)
    assert chief
    cluster.oom("default", chief)
    status, seconds = wait_for_message(backend, "diag", "ran out of memory")
    assert "memory limit of 512Mi" in status.message and seconds < 10
    backend.stop("diag")


def test_live_quota_exceeded_pods(make_cluster, backend):
    make_cluster(runner_override=STANDIN_RUNNER, pod_quota=2)
    submit(backend, workers=2)
    status, seconds = wait_for_message(backend, "diag", "quota is exceeded")
    assert status.message.startswith("diag-worker cannot create its pods") and seconds < 10
    backend.delete("diag")


def test_live_quota_exceeded_reaches_a_watcher(make_cluster, backend):
    """No pod event ever comes for a refused pod: the follower looks at the Jobs' events by itself."""
    import threading

    make_cluster(runner_override=STANDIN_RUNNER, pod_quota=2)
    submit(backend, workers=2)
    statuses, stop = [], threading.Event()
    t = threading.Thread(
        target=backend.watch, args=("diag", statuses.append, lambda e: None, stop), daemon=True
    )
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any("quota is exceeded" in (s.message or "") for s in statuses):
        time.sleep(0.2)
    stop.set()
    t.join(10)
    assert any("quota is exceeded" in (s.message or "") for s in statuses), statuses[-1:]
    backend.delete("diag")
