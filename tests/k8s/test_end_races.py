"""The end of a Kubernetes job seen by two callers at once: a watch and ``get``, a watch and a stop. Whoever
returns first, the notebook then reads the finished job (its final record, its whole log copy), and a watch
always delivers a stop, whatever the order of the pod events and the record's writes.
"""

from __future__ import annotations

import threading
import time

import pytest
from local_helpers import wait_for
from test_backend import Follow, spec_of, submit

from tfk8s_jupyter.backends.base import TERMINAL
from tfk8s_jupyter.backends.kubernetes import follower as follower_module
from tfk8s_jupyter.backends.kubernetes import lifecycle
from tfk8s_jupyter.records import JobRecord

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(180)]


def training(watch: Follow) -> None:
    wait_for(
        lambda: watch.events and watch.statuses and watch.statuses[-1].phase == "running",
        60,
        "the job training",
    )


def test_a_second_caller_of_the_end_returns_the_finished_record_and_the_whole_log(
    apiserver, standin_cluster, backend, monkeypatch
):
    """``get`` called while another caller is ending the job used to return "succeeded" before the logs were
    copied and the record written: a log read right after it showed the live pod's lines only."""
    capturing = threading.Event()
    real_capture = lifecycle.capture_logs

    def slow_capture(job):
        capturing.set()
        time.sleep(2)  # an end under load: many replicas' logs to copy
        real_capture(job)

    monkeypatch.setattr(lifecycle, "capture_logs", slow_capture)
    submit(backend, spec_of(code="STEPS = 10"))
    first = threading.Thread(
        target=lambda: wait_for(lambda: backend.get("job1").done, 120, "the end"), daemon=True
    )
    first.start()
    assert capturing.wait(120), "the end never began"
    status = backend.get("job1")  # the second caller, while the first copies the logs
    record = backend.record("job1")
    assert status.phase == "succeeded", status
    assert (record.read_status() or {}).get("phase") == "succeeded", (
        "get returned before the record was final"
    )
    assert '"type":"end"' in record.log_path("chief-0").read_text(), "get returned before the log was copied"
    first.join(30)
    assert not first.is_alive()


def test_a_stop_marks_the_record_before_any_replica_is_removed(
    apiserver, standin_cluster, backend, monkeypatch
):
    """A watch that sees a pod deleted looks at the record for the reason: the record says stopped first."""
    phases_at_removal = []
    real_remove = lifecycle.remove_replicas

    def remove(job, every):
        phases_at_removal.append((job.record.read_status() or {}).get("phase"))
        real_remove(job, every)

    monkeypatch.setattr(lifecycle, "remove_replicas", remove)
    submit(backend, spec_of(code="STEPS = 4000\nSTEP_SECONDS = 0.05"))
    watch = Follow(backend, "job1")
    try:
        training(watch)
        assert backend.stop("job1").phase == "stopped"
        assert phases_at_removal == ["stopped"]
        final = watch.wait(30)
    finally:
        watch.stop.set()
    assert final.phase == "stopped", watch.statuses[-3:]


def test_a_stop_written_elsewhere_reaches_a_quiet_watch_within_one_watch_request(
    apiserver, standin_cluster, backend, monkeypatch
):
    """Another kernel on the same server stopped the job (the shared record says so) while this watch had no
    pod event to read: the watch delivers the stop when its watch request ends, not never."""
    monkeypatch.setattr(follower_module, "WATCH_TIMEOUT", 2)
    submit(backend, spec_of(code="STEPS = 4000\nSTEP_SECONDS = 0.05"))
    watch = Follow(backend, "job1")
    try:
        training(watch)
        record = backend.record("job1")
        stopped = {**record.read_status(), "phase": "stopped", "finished": time.time()}
        record.write_status(stopped)
        final = watch.wait(20)
    finally:
        watch.stop.set()
        backend.delete("job1")  # its pods: the stop above was only written
    assert final.phase == "stopped", watch.statuses[-3:]


def test_a_running_status_never_replaces_an_end_on_disk(tmp_path):
    record = JobRecord("job1", tmp_path)
    record.write_status({"name": "job1", "phase": "stopped"})
    assert record.write_status({"name": "job1", "phase": "running"}, unless=TERMINAL) is False
    assert record.read_status()["phase"] == "stopped"
    assert record.write_status({"name": "job1", "phase": "succeeded"}) is True  # an end is always written
    assert record.read_status()["phase"] == "succeeded"
