"""Faults on the local backend: killed replicas, an error in the cell, stop mid-run, a replica that never
comes up, a supervisor that dies. Each first with the TF-free stand-in runner (fast, exact), then with real
TensorFlow (``tf`` marker)."""

from __future__ import annotations

import os
import signal
import socket

import pytest
from local_helpers import epoch_events, keras_cell, kill, set_test_hooks, tf_keras_cell, wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends import local
from tfk8s_jupyter.backends.local import job_processes, live_processes, process_alive, read_supervisor
from tfk8s_jupyter.records import JobRecord


def _runs(events: list[dict]) -> list[str]:
    """Run ids of the reporting replica's ``start`` events, in order (one per process start)."""
    return [e["run"] for e in events if e["type"] == "start"]


def _first_epoch_of_last_run(events: list[dict]) -> int:
    last = _runs(events)[-1]
    return min(e["epoch"] for e in events if e["type"] == "epoch" and e["run"] == last)


def _no_process_alive(job) -> None:
    """Every replica is gone once the job is done; the supervisor exits right after its last write."""
    for r in job.status.replicas:
        assert not process_alive(r.pid), r
    record = JobRecord(job.name)
    wait_for(lambda: not live_processes(record), 10, "the supervisor to exit")


# --------------------------------------------------------------------------- stand-in runner (fast)
def test_killed_ps_worker_is_restarted_alone_and_the_job_succeeds(standin):
    job = tk.submit("EPOCHS = 8\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=2, name="ps-kill-w")
    wait_for(lambda: epoch_events(job.events()), 60, "the first epoch")
    chief_pid = job.status.replica("chief-0").pid
    killed = job.status.replica("worker-1").pid
    kill(killed)
    wait_for(lambda: job.status.message and "restarting worker-1" in job.status.message, 10, "the restart")
    # Back up: running again, and the restart note is gone from the job's message.
    wait_for(lambda: job.status.replica("worker-1").state == "running", 30, "worker-1 running again")
    wait_for(lambda: job.status.message is None, 10, "the message to clear")
    assert job.status.phase == "running"
    supervisor_log = job.logs("supervisor")
    assert f"worker-1 (pid {killed}) exited with code -9" in supervisor_log
    assert "started worker-1 as pid" in supervisor_log and "(restart 1)" in supervisor_log
    assert job.wait(timeout=60) == "succeeded", job.status.message
    status = job.status
    assert status.replica("worker-1").restarts == 1
    assert status.replica("chief-0").restarts == 0 and status.replica("chief-0").pid == chief_pid
    assert len(_runs(job.events())) == 1  # the chief kept training


def test_killed_all_reduce_worker_restarts_every_worker_and_resumes(standin):
    job = tk.submit("EPOCHS = 4\nSTEPS = 10\nSTEP_SECONDS = 0.1", workers=2, name="mw-kill")
    wait_for(lambda: epoch_events(job.events()), 60, "the first epoch")
    kill(job.status.replica("worker-1").pid)
    assert job.wait(timeout=60) == "succeeded", job.status.message
    assert [r.restarts for r in job.status.replicas] == [1, 1]
    events = job.events()
    assert len(_runs(events)) == 2 and _first_epoch_of_last_run(events) > 0


def test_killed_ps_restarts_every_replica_and_resumes(standin):
    job = tk.submit("EPOCHS = 4\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=1, name="ps-kill-ps")
    wait_for(lambda: epoch_events(job.events()), 60, "the first epoch")
    kill(job.status.replica("ps-0").pid)
    assert job.wait(timeout=60) == "succeeded", job.status.message
    assert {r.restarts for r in job.status.replicas} == {1}
    events = job.events()
    assert len(_runs(events)) == 2 and _first_epoch_of_last_run(events) > 0


def test_restarts_are_limited(standin):
    job = tk.submit(
        "EPOCHS = 100\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=1, name="limited", max_restarts=1
    )
    for round_ in range(2):
        wait_for(lambda r=round_: len(_runs(job.events())) > r, 60, f"start {round_ + 1}")
        wait_for(lambda: job.status.replica("ps-0").state == "running", 30, "ps-0 running")
        kill(job.status.replica("ps-0").pid)
    assert job.wait(timeout=60) == "failed"
    message = job.status.message
    assert message.startswith("ps-0 was killed by signal 9") and "after 1 restart(s)" in message, message
    _no_process_alive(job)


def test_an_error_in_the_cell_fails_at_once_with_its_text(standin):
    job = tk.submit("raise ValueError('the learning rate is negative')", workers=2, name="cell-error")
    assert job.wait(timeout=60) == "failed"
    status = job.status
    assert status.message == "worker-0 failed: ValueError: the learning rate is negative"
    assert all(r.restarts == 0 for r in status.replicas)  # an error in the cell would only repeat
    errors = [e for e in job.events() if e["type"] == "error"]
    assert errors and "the learning rate is negative" in errors[-1]["message"]


def test_stop_mid_run_leaves_no_process(standin):
    job = tk.submit("EPOCHS = 100\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=2, name="stopped")
    wait_for(lambda: job.metrics(), 60, "a metric point")
    pids = [r.pid for r in job.status.replicas]
    status = job.stop()
    assert status.phase == "stopped" and status.message == "stopped by the user"
    assert all(r.state == "stopped" for r in status.replicas), status.replicas
    assert not any(process_alive(p) for p in pids)
    _no_process_alive(job)
    assert job.stop().phase == "stopped"  # stopping again is harmless


def test_a_replica_that_never_comes_up_fails_the_job_at_the_deadline(standin, monkeypatch):
    set_test_hooks(monkeypatch, stall_replica="worker-1")
    job = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=2, name="stall", setup_timeout=3)
    assert job.wait(timeout=60) == "failed"
    message = job.status.message
    assert message.startswith("worker-1 did not come up within setup_timeout=3 s"), message
    assert "job.logs('worker-1')" in message
    _no_process_alive(job)


def test_a_port_taken_by_another_process_fails_after_the_restarts(standin, monkeypatch):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    taken = squatter.getsockname()[1]
    real = local.allocate_ports
    monkeypatch.setattr(local, "allocate_ports", lambda n, host="127.0.0.1": [*real(n - 1), taken])
    try:
        job = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=2, name="port-taken", max_restarts=1)
        assert job.wait(timeout=90) == "failed"
    finally:
        squatter.close()
    message = job.status.message
    assert message.startswith("worker-1 exited with code 1") and "Could not start gRPC server" in message
    assert f"another process holds its port 127.0.0.1:{taken}" in message and "after 1 restart(s)" in message


def test_a_vanished_supervisor_is_reported_failed_and_leaves_no_orphan(standin):
    job = tk.submit("EPOCHS = 100\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=1, name="orphan")
    wait_for(lambda: job.metrics(), 60, "a metric point")
    pids = [r.pid for r in job.status.replicas]
    os.kill(read_supervisor(JobRecord("orphan"))["pid"], signal.SIGKILL)
    # The replicas die with their supervisor (PR_SET_PDEATHSIG), without anyone's help.
    wait_for(lambda: not any(process_alive(p) for p in pids), 10, "the replicas to die with the supervisor")
    status = job.status
    assert status.phase == "failed"
    assert "supervisor process" in status.message and "ended unexpectedly" in status.message
    assert job.wait(timeout=5) == "failed"


def test_every_process_the_job_started_is_recorded(standin):
    job = tk.submit("EPOCHS = 4\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=1, name="recorded")
    wait_for(lambda: epoch_events(job.events()), 60, "the first epoch")
    first_worker = job.status.replica("worker-0").pid
    kill(first_worker)
    assert job.wait(timeout=60) == "succeeded"
    recorded = [pid for what, pid, _ in job_processes(JobRecord("recorded")) if what == "worker-0"]
    assert first_worker in recorded and len(recorded) == 2


# --------------------------------------------------------------------------- real TensorFlow
@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_killed_worker_in_parameter_server_mode_job_still_succeeds():
    job = tk.submit(
        tf_keras_cell(epochs=6, steps=30, step_sleep=0.05),
        ps=1,
        workers=2,
        name="tf-kill-w",
        setup_timeout=180,
    )
    wait_for(lambda: epoch_events(job.events()), 240, "the first epoch")
    kill(job.status.replica("worker-1").pid)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    assert job.status.replica("worker-1").restarts >= 1
    assert len(epoch_events(job.events())) >= 6


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_killed_worker_in_all_reduce_mode_restarts_all_and_resumes_from_a_checkpoint():
    job = tk.submit(
        tf_keras_cell(epochs=6, steps=30, step_sleep=0.05), workers=2, name="tf-kill-mw", setup_timeout=180
    )
    wait_for(lambda: len(epoch_events(job.events())) >= 2, 240, "two epochs")
    kill(job.status.replica("worker-1").pid)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    assert [r.restarts for r in job.status.replicas] == [1, 1]
    events = job.events()
    assert len(_runs(events)) == 2
    assert _first_epoch_of_last_run(events) > 0  # resumed, not started over
    restored = [e for e in events if e["type"] == "checkpoint" and e.get("action") == "restored"]
    assert restored and restored[-1]["epoch"] > 0


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_killed_ps_restarts_and_resumes():
    job = tk.submit(
        tf_keras_cell(epochs=6, steps=30, step_sleep=0.05),
        ps=1,
        workers=1,
        name="tf-kill-ps",
        setup_timeout=180,
    )
    wait_for(lambda: len(epoch_events(job.events())) >= 2, 240, "two epochs")
    kill(job.status.replica("ps-0").pid)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    assert job.status.replica("ps-0").restarts == 1
    events = job.events()
    assert len(_runs(events)) == 2 and _first_epoch_of_last_run(events) > 0


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_an_exception_in_the_cell_fails_the_job_with_its_text():
    code = keras_cell(epochs=1, steps=5) + "raise RuntimeError('validation set is empty')\n"
    job = tk.submit(code, workers=2, name="tf-raise", setup_timeout=180)
    assert job.wait(timeout=300) == "failed"
    message = job.status.message
    assert "RuntimeError: validation set is empty" in message, message
    assert all(r.restarts == 0 for r in job.status.replicas)
    _no_process_alive(job)


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_stop_mid_run_leaves_no_replica_alive():
    job = tk.submit(
        tf_keras_cell(epochs=50, steps=30, step_sleep=0.05),
        ps=1,
        workers=2,
        name="tf-stop",
        setup_timeout=180,
    )
    wait_for(lambda: job.metrics(), 240, "a metric point")
    pids = [r.pid for r in job.status.replicas]
    assert all(process_alive(p) for p in pids)
    assert job.stop().phase == "stopped"
    assert not any(process_alive(p) for p in pids)
    _no_process_alive(job)


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_a_replica_that_never_comes_up_hits_the_setup_deadline(monkeypatch):
    set_test_hooks(monkeypatch, stall_replica="worker-1")
    job = tk.submit(keras_cell(epochs=1, steps=5), workers=2, name="tf-stall", setup_timeout=30)
    assert job.wait(timeout=200) == "failed"
    message = job.status.message
    assert message.startswith("worker-1 did not come up within setup_timeout=30 s"), message
    _no_process_alive(job)


def test_a_worker_that_never_comes_up_is_named_in_its_status_while_training_goes_on(standin, monkeypatch):
    set_test_hooks(monkeypatch, stall_replica="worker-1")
    job = tk.submit(
        "EPOCHS = 15\nSTEPS = 10\nSTEP_SECONDS = 0.1",
        ps=1,
        workers=2,
        name="stall-ps-worker",
        setup_timeout=5,
        env={"STANDIN_WAIT_FOR": "ps,chief"},
    )
    wait_for(lambda: job.status.replica("worker-1").message, 30, "a note on worker-1")
    status = job.status
    assert status.phase == "running"
    assert status.replica("worker-1").message.startswith("not up after setup_timeout=5 s")
    assert status.replica("worker-0").message is None
    assert job.wait(timeout=60) == "succeeded"


def test_a_reporting_replica_that_hangs_after_the_end_of_training_is_stopped_and_the_job_succeeds(
    standin, monkeypatch
):
    set_test_hooks(monkeypatch, end_grace=2.0)
    job = tk.submit("EPOCHS = 1\nSTEPS = 5\nHANG_AFTER_END = True", workers=1, name="hangs-at-exit")
    assert job.wait(timeout=60) == "succeeded"
    status = job.status
    assert (
        status.message
        == "worker-0 reported the end of training but did not exit within 2 s, so it was stopped"
    )
    assert status.replica("worker-0").exit_code == -15
    _no_process_alive(job)


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_a_port_taken_by_another_process_fails_the_job_with_a_hint(monkeypatch):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    taken = squatter.getsockname()[1]
    real = local.allocate_ports
    monkeypatch.setattr(local, "allocate_ports", lambda n, host="127.0.0.1": [*real(n - 1), taken])
    try:
        job = tk.submit(keras_cell(epochs=1, steps=5), workers=2, name="tf-port-taken", setup_timeout=180)
        assert job.wait(timeout=300) == "failed"
    finally:
        squatter.close()
    message = job.status.message
    assert message.startswith("worker-1 failed: UnknownError: Could not start gRPC server"), message
    assert f"another process holds its port 127.0.0.1:{taken}; submit the job again" in message
    _no_process_alive(job)


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_a_killed_supervisor_takes_every_replica_with_it():
    job = tk.submit(
        tf_keras_cell(epochs=50, steps=30, step_sleep=0.05),
        ps=1,
        workers=2,
        name="tf-orphans",
        setup_timeout=180,
    )
    wait_for(lambda: job.metrics(), 240, "a metric point")
    pids = [r.pid for r in job.status.replicas]
    os.kill(read_supervisor(JobRecord("tf-orphans"))["pid"], signal.SIGKILL)
    wait_for(lambda: not any(process_alive(p) for p in pids), 10, "every replica to die with the supervisor")
    assert job.phase == "failed"
    assert "ended unexpectedly" in job.status.message
