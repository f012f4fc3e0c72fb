"""A queued job (``--queue``) on the test cluster with the test Kueue (tests/k8s/kueue.py): it shows
"queued" with its position in the LocalQueue as Kueue's visibility API reports it, and why it waits (the
Workload's condition); Kueue's admission (unsuspending the Jobs / the TFJob) starts it, in queue order.
The Role is enforced; Kueue's reads are granted apart (as an administrator would), and without them a
queued job still shows "queued", without a position and without a refused request."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pytest
import yaml
from kueue import TestKueue

from tfk8s_jupyter.backends.base import TERMINAL
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import make_spec

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
ROLE = yaml.safe_load((ROOT / "deploy/kubernetes/base/role.yaml").read_text())
# what an administrator binds beside the Role for queue positions (deploy/README.md)
KUEUE_READER = [
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["list"]},
    {
        "apiGroups": ["visibility.kueue.x-k8s.io"],
        "resources": ["localqueues/pendingworkloads"],
        "verbs": ["get"],
    },
]
QUICK = "EPOCHS = 1\nSTEPS = 4\nSTEP_SECONDS = 0.05\n"
LONG = "EPOCHS = 1\nSTEPS = 100000\nSTEP_SECONDS = 0.05\n"


class Watcher:
    """The backend's watch of one job in a thread (what the panel sees): every status, in order."""

    def __init__(self, backend, name: str):
        self.name, self.seen, self.stop, self.errors = name, [], threading.Event(), []
        self.thread = threading.Thread(target=self._run, args=(backend,), daemon=True)
        self.thread.start()

    def _run(self, backend) -> None:
        try:
            backend.watch(self.name, self.seen.append, lambda events: None, self.stop)
        except BaseException as e:  # surfaced by wait_for
            self.errors.append(e)

    def wait_for(self, predicate, what: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert not self.errors, self.errors
            if self.seen and predicate(self.seen[-1]):
                return self.seen[-1]
            time.sleep(0.1)
        last = self.seen[-1] if self.seen else None
        raise AssertionError(f"{self.name}: {what} not seen in {timeout:.0f} s; last: {last}")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def kueue(apiserver):
    apiserver.enforce_rules(copy.deepcopy(ROLE["rules"]))
    apiserver.grant_cluster_rules(KUEUE_READER)
    k = TestKueue(apiserver, quota_pods=0).start()
    k.add_local_queue("default", "team-a")
    yield k
    k.stop()


def submit(backend, name: str, code: str = QUICK, **kw):
    spec = make_spec(
        code, name=name, backend="kubernetes", **{"flavor": "native", "workers": 2, "queue": "team-a", **kw}
    )
    return backend.submit(spec, Payload(code=code))


def queued_at(position: int):
    return lambda s: s.phase == "queued" and f"position {position} in Kueue queue team-a" in (s.message or "")


def test_two_queued_jobs_show_positions_1_and_2_and_admission_starts_the_first(
    backend, standin_cluster, apiserver, kueue
):
    submit(backend, "kq-first", code=LONG)
    submit(backend, "kq-second")
    first, second = Watcher(backend, "kq-first"), Watcher(backend, "kq-second")
    try:
        s1 = first.wait_for(queued_at(1), "queued at position 1")
        s2 = second.wait_for(queued_at(2), "queued at position 2")
        assert "0 jobs ahead" in s1.message and "1 job ahead" in s2.message, (s1.message, s2.message)
        # Kueue's reason, from the Workload's QuotaReserved condition
        assert "insufficient unused quota for pods" in s2.message, s2.message
        workloads = apiserver.objects("workloads", namespace="default")
        owners = {w["metadata"]["name"]: w["metadata"]["ownerReferences"][0]["name"] for w in workloads}
        assert sorted(owners.values()) == ["kq-first-worker", "kq-second-worker"], owners
        assert apiserver.objects("pods", namespace="default") == []  # nothing runs while queued

        kueue.set_quota(2)  # room for one two-worker job: the head of the queue is admitted and runs
        first.wait_for(lambda s: s.phase == "running", "the first job running")
        # the second waits at the head of the queue now, still without a pod
        second.wait_for(queued_at(1), "the second queued at position 1")
        assert [owners[w] for w in kueue.admitted] == ["kq-first-worker"]
        assert not [p for p in apiserver.objects("pods") if p["metadata"]["name"].startswith("kq-second")]

        backend.stop("kq-first")  # its Jobs go, its Workload with them: the quota is free again
        final2 = second.wait_for(lambda s: s.phase in TERMINAL, "the second job's end", timeout=90)
        assert final2.phase == "succeeded", final2
        assert [owners[w] for w in kueue.admitted] == ["kq-first-worker", "kq-second-worker"]
    finally:
        first.close()
        second.close()
    refused = [e for e in apiserver.request_log if e["status"] == 403]
    assert not refused, refused
    assert any(
        e["resource"] == "localqueues" and e["subresource"] == "pendingworkloads"
        for e in apiserver.request_log
    )
    for name in ("kq-first", "kq-second"):
        backend.delete(name)
    assert apiserver.objects("workloads") == []  # owned by the Jobs: gone with them


def test_a_queued_tfjob_shows_its_position_and_runs_once_admitted(backend, standin_cluster, apiserver, kueue):
    apiserver.tfjob_crd = True
    submit(backend, "kq-tf", flavor="tfjob", ps=1, workers=1)
    tfjob = apiserver.objects("tfjobs", namespace="default")[0]
    assert tfjob["spec"]["runPolicy"]["suspend"] is True
    assert tfjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    watcher = Watcher(backend, "kq-tf")
    try:
        watcher.wait_for(queued_at(1), "queued at position 1")
        assert apiserver.objects("pods", namespace="default") == []
        kueue.set_quota(3)  # chief + ps + worker
        final = watcher.wait_for(lambda s: s.phase in TERMINAL, "the job's end", timeout=90)
        assert final.phase == "succeeded", final
    finally:
        watcher.close()
    backend.delete("kq-tf")


def test_a_queue_kueue_cannot_admit_from_is_said_with_the_fix(backend, standin_cluster, apiserver, kueue):
    submit(backend, "kq-nowhere", queue="team-x")  # submitted past the preflight, which would refuse it
    watcher = Watcher(backend, "kq-nowhere")
    try:
        status = watcher.wait_for(lambda s: "cannot admit" in (s.message or ""), "Kueue's refusal")
    finally:
        watcher.close()
    assert status.phase == "queued"
    assert "LocalQueue team-x doesn't exist" in status.message and "--queue" in status.message, status.message
    backend.delete("kq-nowhere")


def test_without_kueues_reads_a_queued_job_shows_queued_and_asks_nothing_refused(
    backend, standin_cluster, apiserver
):
    apiserver.enforce_rules(copy.deepcopy(ROLE["rules"]))  # the Role alone: no Kueue reads
    k = TestKueue(apiserver).start()
    try:
        k.add_local_queue("default", "team-a")
        submit(backend, "kq-blind")
        watcher = Watcher(backend, "kq-blind")
        try:
            status = watcher.wait_for(lambda s: s.phase == "queued", "queued")
            time.sleep(4)  # a few follower rounds
        finally:
            watcher.close()
        assert "waiting for Kueue to admit it from queue team-a" in status.message, status.message
        assert not [e for e in apiserver.request_log if e["status"] == 403]
        assert not [e for e in apiserver.request_log if "kueue" in (e["group"] or "")]
    finally:
        k.stop()
    backend.delete("kq-blind")
