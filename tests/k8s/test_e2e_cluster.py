"""The Kubernetes end-to-end scenarios, one body for two targets (``e2e_target`` in conftest.py): the in-repo
test API server + test kubelet (``make test``) or a real cluster (``make e2e-cluster KUBECONFIG=…
[IMAGE=…] [NAMESPACE=…]``). Real TensorFlow in every pod; each scenario ends by deleting its job and
checking that nothing of it is left on the cluster. A table of the scenarios is printed at the end.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from apiserver import TEST_CLIENT_AGENT
from cells import KERAS, RAISES, TF_KERAS
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tfk8s_jupyter.backends.base import TERMINAL
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import make_spec

pytestmark = [pytest.mark.k8s, pytest.mark.tf, pytest.mark.timeout(1200)]

LONG_TF = TF_KERAS.replace("epochs=3, steps_per_epoch=20", "epochs=100000, steps_per_epoch=20")
HELLO = "import tensorflow as tf\nprint('hello from a least-privilege job', tf.constant(2) * 21)\n"


def submit(target, backend, name: str, code: str, **kw):
    spec = make_spec(
        code,
        name=name,
        backend="kubernetes",
        namespace=target.namespace,
        **{"flavor": "native", "metric_interval": 0, **kw},
    )
    backend.submit(spec, Payload(code=code))
    return spec


class Follow:
    """The backend's watch of one job (status + metric events), as the notebook's panel runs it."""

    def __init__(self, backend, name: str):
        self.statuses, self.events, self.errors = [], [], []
        self.stop = threading.Event()

        def run():
            try:
                backend.watch(name, self.statuses.append, self.events.extend, self.stop)
            except BaseException as e:  # surfaced by until()
                self.errors.append(e)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def until(self, predicate, what: str, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert not self.errors, self.errors
            if self.statuses and predicate(self.statuses[-1]):
                return self.statuses[-1]
            time.sleep(0.2)
        raise AssertionError(f"{what} not seen in {timeout:.0f} s; last: {self.statuses[-1:]}")

    def close(self):
        self.stop.set()
        self.thread.join(15)


def run_to_end(target, backend, name: str):
    f = Follow(backend, name)
    try:
        final = f.until(lambda s: s.phase in TERMINAL, f"the end of {name}", target.timeout)
    finally:
        f.close()
    return final, backend.events(name)


def delete_and_check_clean(target, backend, name: str) -> None:
    backend.delete(name)
    left = target.wait_clean(name)
    assert not left, f"{name} left {left} on the cluster after delete"


def epoch_losses(events):
    return [e["values"]["loss"] for e in events if e["type"] == "epoch"]


def test_parameter_server_job_trains_and_is_watched_logged_and_removed(e2e_target):
    b = e2e_target.backend()
    spec = submit(e2e_target, b, "e2e-ps", TF_KERAS, ps=1, workers=1)
    final, events = run_to_end(e2e_target, b, "e2e-ps")
    assert final.phase == "succeeded", f"{final.message}\n{b.logs('e2e-ps', 'chief-0')[-3000:]}"
    losses = epoch_losses(events)
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert next(e for e in events if e["type"] == "start")["strategy"] == "parameter_server"
    assert "variable_device=/job:ps" in b.logs("e2e-ps", "chief-0")
    for replica in spec.replica_names:
        assert b.logs("e2e-ps", replica), f"no log of {replica}"
    assert "e2e-ps" in [s.name for s in b.list()]
    delete_and_check_clean(e2e_target, b, "e2e-ps")


def test_all_reduce_job_trains_in_lockstep(e2e_target):
    b = e2e_target.backend()
    submit(e2e_target, b, "e2e-mw", KERAS, workers=2)
    final, events = run_to_end(e2e_target, b, "e2e-mw")
    assert final.phase == "succeeded", f"{final.message}\n{b.logs('e2e-mw', 'worker-0')[-3000:]}"
    losses = epoch_losses(events)
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    weights = next(e for e in events if e["type"] == "end")["model"]["weights_sha256"]
    assert weights and f"weights_sha256={weights}" in b.logs("e2e-mw", "worker-1")  # both trained in sync
    delete_and_check_clean(e2e_target, b, "e2e-mw")


def test_a_running_job_stops_with_every_replica_gone(e2e_target):
    b = e2e_target.backend()
    submit(e2e_target, b, "e2e-stop", LONG_TF, workers=2)
    f = Follow(b, "e2e-stop")
    try:
        f.until(
            lambda s: s.phase == "running" and any(e["type"] == "metric" for e in f.events), "training", 300
        )
        b.stop("e2e-stop")
        f.until(lambda s: s.phase in TERMINAL, "the stop", 120)
    finally:
        f.close()
    status = b.get("e2e-stop")
    assert status.phase == "stopped", status
    deadline = time.monotonic() + 120
    while any(x.startswith("pod/") for x in e2e_target.leftovers("e2e-stop")) and time.monotonic() < deadline:
        time.sleep(1)
    assert not [x for x in e2e_target.leftovers("e2e-stop") if x.startswith("pod/")], "pods left after stop"
    delete_and_check_clean(e2e_target, b, "e2e-stop")


def test_a_failing_cell_is_diagnosed_with_its_own_error(e2e_target):
    b = e2e_target.backend()
    submit(e2e_target, b, "e2e-fail", RAISES, workers=1)
    final, events = run_to_end(e2e_target, b, "e2e-fail")
    assert final.phase == "failed", final
    # the panel's error line: the runner's error event, with the cell's own exception and line
    errors = [e for e in events if e["type"] == "error"]
    assert errors and "bad input shape 3" in json.dumps(errors[-1]), events
    assert "ValueError" in b.logs("e2e-fail", "worker-0")
    delete_and_check_clean(e2e_target, b, "e2e-fail")


def test_least_privilege_service_account_runs_a_job_and_nothing_more(e2e_target, tmp_path):
    kubeconfig, remove = e2e_target.least_privilege_kubeconfig(tmp_path / "sa-kubeconfig")
    try:
        b = e2e_target.backend(kubeconfig, root=tmp_path / "sa-records")
        submit(e2e_target, b, "e2e-sa", HELLO, workers=1)
        final, _ = run_to_end(e2e_target, b, "e2e-sa")
        assert final.phase == "succeeded", f"{final.message}\n{b.logs('e2e-sa', 'worker-0')[-2000:]}"
        assert "hello from a least-privilege job" in b.logs("e2e-sa", "worker-0")
        sa_api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        sa_api.user_agent = TEST_CLIENT_AGENT  # the test's probe, not a request of the backend
        try:
            with pytest.raises(ApiException) as refused:  # outside the Role (it never grants ServiceAccounts)
                k8s.CoreV1Api(sa_api).list_namespaced_service_account(e2e_target.namespace)
            assert refused.value.status == 403
        finally:
            sa_api.close()
        delete_and_check_clean(e2e_target, b, "e2e-sa")
    finally:
        remove()
