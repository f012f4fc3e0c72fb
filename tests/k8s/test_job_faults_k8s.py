"""Shared mode's secrets, cell errors and hung replicas on Kubernetes, through the real ``kubernetes`` client
against the test API server and the test kubelet (pods as local processes).

- ``--secret-env`` reaches every replica from a Secret of the namespace (``secretKeyRef``), its value stored
  in no object tfk8s writes; a missing Secret or key is the pod's CreateContainerConfigError, in the status.
- A cell error fails the job at once (no restart into the same error).
- A frozen replica of a real TensorFlow job (SIGSTOP) is found by the reporting replica's missing progress;
  the job's pods are deleted, their Jobs recreate them, and the job succeeds with one note saying so.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from local_helpers import keras_cell, wait_for
from test_backend import Follow

from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import make_spec

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(420)]


def spec_of(name, code, **kw):
    opts = {"ps": 0, "workers": 2, "backend": "kubernetes", "owner": "alice"}
    opts.update(kw)
    return make_spec(code, name=name, **opts)


def add_secret(apiserver, name, data, namespace="default"):
    apiserver.store.create(
        "",
        "secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


# --secret-env ----------------------------------------------------------------------------------------
def test_secret_env_reaches_every_replica_and_its_value_is_stored_nowhere(
    apiserver, standin_cluster, backend
):
    add_secret(apiserver, "wandb", {"api-key": "s3cr3t-value-42"})
    code = "import os\nprint('token is', os.environ['WANDB_API_KEY'])\nSTEPS = 10\nSTEP_SECONDS = 0.3"
    spec = spec_of("sec", code, secret_env={"WANDB_API_KEY": "wandb/api-key"}, env={"PLAIN": "visible"})
    backend.submit(spec, Payload(code=code))
    follow = Follow(backend, "sec")
    wait_for(lambda: any(e["type"] == "metric" for e in follow.events), 60, "the first metric")
    pods = apiserver.objects("pods")
    assert len(pods) == 2
    for pod in pods:  # what each replica's container was started with, as the kubelet resolved it
        assert standin_cluster.secret_env(pod, pod["spec"]["containers"][0]) == {
            "WANDB_API_KEY": "s3cr3t-value-42",
            "TFK8S_PROTOCOL_KEY": spec.protocol_key,
        }
    final = follow.wait(300)
    assert final.phase == "succeeded", final.message
    assert "token is s3cr3t-value-42" in backend.logs("sec", "worker-0")  # the cell (worker 0 runs it here)
    # in no object tfk8s created (only the user's own Secret holds it), nor in the job's record
    ours = [o for o in apiserver.objects() if o["metadata"]["name"] != "wandb"]
    assert ours and "s3cr3t-value-42" not in json.dumps(ours)
    assert "s3cr3t-value-42" not in json.dumps(backend.record("sec").read_spec())


def test_a_missing_secret_or_key_is_the_pods_clear_error_and_nothing_is_left(
    apiserver, standin_cluster, backend
):
    spec = spec_of("nosec", "STEPS = 3", workers=1, secret_env={"TOKEN": "team-token/value"})
    backend.submit(spec, Payload(code=spec.code))

    def message():
        status = backend.get("nosec")
        return status.message if status.message and "CreateContainerConfigError" in status.message else None

    said = wait_for(message, 60, "the status to name the missing Secret")
    assert "worker-0" in said and 'secret "team-token" not found' in said, said
    add_secret(apiserver, "team-token", {"other": "x"})
    said = wait_for(
        lambda: (m := message()) and "couldn't find key value" in m and m,
        60,
        "the status to name the missing key",
    )
    assert "Secret default/team-token" in said, said
    backend.delete("nosec")
    assert [o["metadata"]["name"] for o in apiserver.objects() if o["kind"] != "Event"] == ["team-token"]


# cell errors -----------------------------------------------------------------------------------------
def test_a_cell_error_fails_the_job_at_once_instead_of_restarting_it(apiserver, standin_cluster, backend):
    code = "raise ValueError('the learning rate must be positive')"
    spec = spec_of("cellerr", code, ps=1, workers=1, max_restarts=6)
    backend.submit(spec, Payload(code=code))
    final = Follow(backend, "cellerr").wait(120)
    assert final.phase == "failed"
    assert final.message.startswith("chief-0 raised ValueError: the learning rate must be positive"), (
        final.message
    )
    assert "not restarted" in final.message
    # failed at its first error: not restarted until the Jobs' backoffLimit (6 per replica) ran out
    starts = [e for e in backend.events("cellerr") if e["type"] == "start"]
    assert 1 <= len(starts) <= 2, starts
    assert "BackoffLimitExceeded" not in json.dumps(apiserver.objects("jobs"))
    wait_for(lambda: not apiserver.objects("pods"), 60, "every replica removed")


def test_a_lost_peer_is_still_restarted(apiserver, standin_cluster, backend):
    """The control: an error a restart cures (TensorFlow's UnavailableError) restarts, as before."""
    code = "EPOCHS = 3\nSTEPS = 10\nSTEP_SECONDS = 0.1"
    backend.submit(spec_of("peer", code), Payload(code=code))
    follow = Follow(backend, "peer")
    wait_for(lambda: any(e["type"] == "metric" for e in follow.events), 60, "the first metric")
    pod = next(p for p in apiserver.objects("pods") if p["metadata"]["name"].startswith("peer-worker-1"))
    standin_cluster.kill("default", pod["metadata"]["name"])
    final = follow.wait(180)
    assert final.phase == "succeeded", final.message


# hung replicas ---------------------------------------------------------------------------------------
def test_a_frozen_tensorflow_ps_worker_is_recovered_by_stall_detection(apiserver, make_cluster, backend):
    cluster = make_cluster()  # the real runner and TensorFlow
    code = keras_cell(epochs=8, steps=20)
    spec = spec_of(
        "tf-stall",
        code,
        ps=1,
        workers=2,
        stall_timeout=15,
        setup_timeout=60,
        max_restarts=3,
        metric_interval=0,
    )
    backend.submit(spec, Payload(code=code))
    follow = Follow(backend, "tf-stall")
    wait_for(
        lambda: any(e["type"] == "epoch" for e in follow.events),
        240,
        "the first epoch of the real TF job",
        poll=0.5,
    )
    pod = next(
        p["metadata"]["name"]
        for p in apiserver.objects("pods")
        if "tf-stall-worker-1" in p["metadata"]["name"]
    )
    frozen_at = time.monotonic()
    pid = cluster.freeze("default", pod)
    note = wait_for(
        lambda: next((n for s in follow.statuses for n in s.notes if "made no training progress" in n), None),
        240,
        "the stall note",
        poll=0.5,
    )
    assert note.startswith("chief-0 made no training progress for longer than stall_timeout=15 s at step "), (
        note
    )
    assert "pods were deleted" in note and "max_restarts=3" in note, note
    # the frozen process is killed with its pod, never left behind
    wait_for(lambda: not _alive(pid), 60, f"frozen pid {pid} killed")
    assert apiserver.store.get("", "pods", "default", pod) is None
    final = follow.wait(400)
    assert final.phase == "succeeded", final.message
    assert any("made no training progress" in n for n in final.notes), final.notes
    assert time.monotonic() - frozen_at > 15
    epochs = [e for e in backend.events("tf-stall") if e["type"] == "epoch"]
    assert epochs[-1].get("last_epoch") is True
    # followed live across the restart: the new run's start and its epochs reached the watcher as they came
    assert len([e for e in follow.events if e["type"] == "start"]) >= 2
    assert any(e.get("last_epoch") for e in follow.events if e["type"] == "epoch")


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
