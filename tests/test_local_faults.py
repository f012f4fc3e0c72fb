"""Faults on the local backend: killed replicas, an error in the cell, stop mid-run, a replica that never
comes up, a supervisor that dies. Each first with the TF-free stand-in runner (fast, exact), then with real
TensorFlow (``tf`` marker)."""

from __future__ import annotations

import os
import signal
import socket
import time

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


def test_a_cell_error_that_ends_worker_0_just_after_a_peer_crashed_is_judged_on_its_own_error(standin):
    """worker-1 crashes at start; worker-0 starts a moment later and its cell raises while the supervisor
    gathers the peers that fail together. Its start and error events are read before its end is marked: the
    job fails at once with the cell's error, worker-0 shows as failed (never "running" again, never
    "stopped"), and no worker is restarted into the same error."""
    job = tk.submit(
        "import time\ntime.sleep(0.2)\nraise ValueError('the cell raised late')",
        workers=2,
        name="late-error",
        env={"STANDIN_CRASH": "worker-1", "STANDIN_WAIT_FOR": "none", "STANDIN_START_DELAY": "0.2"},
    )
    assert job.wait(timeout=60) == "failed"
    status = job.status
    assert status.message == "worker-0 failed: ValueError: the cell raised late"
    states = {r.name: (r.state, r.exit_code, r.restarts) for r in status.replicas}
    assert states == {"worker-0": ("failed", 1, 0), "worker-1": ("failed", 1, 0)}
    assert [e["type"] for e in job.events()] == ["start", "error"]


def test_a_start_event_read_after_the_reporting_replicas_end_never_makes_it_running_again(standin):
    """The supervisor may notice that the reporting replica ended (its process exited, or a kept replica's
    run ended with a cell error) before it read the start event the replica wrote first. Marking the end
    reads the replica's output first; a start event read later still leaves an ended replica ended (the job
    table once showed a failed worker-0 as "stopped")."""
    from tfk8s_jupyter.backends.base import R_FAILED
    from tfk8s_jupyter.backends.local_supervisor import Supervisor

    job = tk.submit("raise ValueError('the learning rate is negative')", workers=2, name="late-start")
    assert job.wait(timeout=60) == "failed"
    job_dir = JobRecord(job.name).dir
    # the end noticed first: the start event is still unread when the end is marked
    sup = Supervisor(job_dir)
    sup.awaiting_start_until = time.monotonic() + 60  # as while it waits for the run's start event
    sup.mark_exited([(sup.reporting, 1)])
    assert (sup.reporting.status.state, sup.reporting.status.exit_code) == (R_FAILED, 1)
    sup.pump_events()
    assert sup.reporting.status.state == R_FAILED
    # an ended replica whose start event is read only now
    late = Supervisor(job_dir)
    late.awaiting_start_until = time.monotonic() + 60
    late.reporting.status.state = R_FAILED
    late.pump_events()
    assert late.reporting.status.state == R_FAILED


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


# --------------------------------------------------------------------------- hung replicas (stall_timeout)
def _says_frozen(message: str, replica: str, timeout: int) -> None:
    """The one sentence of a freeze: the freeze check's, or (under load, when training was seen stalled
    before the freeze was) the no-progress check's naming the frozen replica; both end the same way."""
    assert f"{replica} was frozen (stopped) " in message, message
    assert f"than stall_timeout={timeout} s at step " in message and message.endswith("so it was killed"), (
        message
    )


def _frozen_then_gone(pid: int) -> None:
    """A replica the supervisor found frozen is killed (SIGKILL reaches a stopped process), never left."""
    wait_for(lambda: not process_alive(pid), 30, f"frozen pid {pid} to be killed")


def _curve_is_continuous(events: list[dict]) -> None:
    """Every epoch reported, in order, and the steps of the last run's points never go backwards."""
    epochs = sorted({e["epoch"] for e in epoch_events(events)})
    assert epochs == list(range(len(epochs))) and epochs, epochs
    for run in _runs(events):
        steps = [e["step"] for e in events if e["type"] == "metric" and e["run"] == run]
        assert steps == sorted(steps), steps


def test_a_frozen_ps_worker_is_killed_and_restarted_alone(standin):
    job = tk.submit(
        "EPOCHS = 6\nSTEPS = 10\nSTEP_SECONDS = 0.2", ps=1, workers=2, name="ps-freeze-w", stall_timeout=3
    )
    wait_for(lambda: epoch_events(job.events()), 60, "the first epoch")
    frozen = job.status.replica("worker-1").pid
    os.kill(frozen, signal.SIGSTOP)
    message = wait_for(
        lambda: (m := job.status.message) and "restarting worker-1" in m and m, 20, "the restart of worker-1"
    )
    _says_frozen(message, "worker-1", 3)
    _frozen_then_gone(frozen)
    assert job.wait(timeout=60) == "succeeded", job.status.message
    status = job.status
    assert status.replica("worker-1").restarts == 1
    assert status.replica("chief-0").restarts == 0 and status.replica("worker-0").restarts == 0
    assert len(_runs(job.events())) == 1  # the chief kept training
    assert "worker-1 was frozen (stopped)" in job.logs("supervisor")


def test_a_frozen_all_reduce_worker_0_restarts_every_worker_and_resumes(standin):
    job = tk.submit(
        "EPOCHS = 5\nSTEPS = 10\nSTEP_SECONDS = 0.2", workers=2, name="mw-freeze", stall_timeout=3
    )
    wait_for(lambda: epoch_events(job.events()), 60, "the first epoch")
    frozen = job.status.replica("worker-0").pid
    os.kill(frozen, signal.SIGSTOP)
    message = wait_for(
        lambda: (m := job.status.message) and m.startswith("restarting every replica") and m,
        20,
        "the restart",
    )
    assert "because worker-0 was frozen (stopped) " in message, message
    _says_frozen(message, "worker-0", 3)
    _frozen_then_gone(frozen)
    assert job.wait(timeout=60) == "succeeded", job.status.message
    assert [r.restarts for r in job.status.replicas] == [1, 1]
    events = job.events()
    assert len(_runs(events)) == 2 and _first_epoch_of_last_run(events) > 0
    _curve_is_continuous(events)


def test_a_frozen_replica_counts_against_max_restarts(standin):
    job = tk.submit(
        "EPOCHS = 50\nSTEPS = 10\nSTEP_SECONDS = 0.2",
        ps=1,
        workers=1,
        name="freeze-limit",
        stall_timeout=2,
        max_restarts=0,
    )
    wait_for(lambda: job.metrics(), 60, "a metric point")
    frozen = job.status.replica("ps-0").pid
    os.kill(frozen, signal.SIGSTOP)
    assert job.wait(timeout=60) == "failed"
    message = job.status.message
    assert (
        message.startswith("ps-0 was frozen (stopped) ") and "than stall_timeout=2 s at step " in message
    ), message
    _no_process_alive(job)


def test_a_slow_job_that_advances_is_never_restarted(standin):
    # Each epoch takes 4 s, longer than stall_timeout, but every step reports.
    job = tk.submit("EPOCHS = 2\nSTEPS = 4\nSTEP_SECONDS = 1.0", workers=1, name="slow-ok", stall_timeout=2)
    assert job.wait(timeout=60) == "succeeded", job.status.message
    assert job.status.replica("worker-0").restarts == 0
    assert len(_runs(job.events())) == 1
    assert "so it was killed" not in job.logs("supervisor")


def test_stall_timeout_0_turns_stall_detection_off(standin):
    job = tk.submit(
        "EPOCHS = 50\nSTEPS = 10\nSTEP_SECONDS = 0.1", workers=1, name="no-stall", stall_timeout=0
    )
    wait_for(lambda: job.metrics(), 60, "a metric point")
    os.kill(job.status.replica("worker-0").pid, signal.SIGSTOP)
    time.sleep(4)
    status = job.status
    assert status.phase == "running" and status.replica("worker-0").restarts == 0
    assert job.stop().phase == "stopped"  # a stopped process does not hold up stop()
    _no_process_alive(job)


def test_an_error_in_the_cell_naming_a_transient_error_still_fails_at_once(standin):
    job = tk.submit(
        "raise ValueError('bad shape after UnavailableError, CollectiveReduce, heartbeat')",
        workers=2,
        name="cell-error-words",
    )
    assert job.wait(timeout=60) == "failed"
    status = job.status
    assert status.message.startswith("worker-0 failed: ValueError: bad shape after UnavailableError"), (
        status.message
    )
    assert all(r.restarts == 0 for r in status.replicas)
    assert len(_runs(job.events())) == 1


def test_transient_errors_are_judged_by_the_exception_type_only():
    from tfk8s_jupyter.backends.local_supervisor import curable_error

    assert curable_error({"message": "UnavailableError: peer 127.0.0.1:1234 is gone"})
    assert curable_error({"message": "tensorflow.python.framework.errors_impl.AbortedError: x"})
    assert not curable_error(
        {"message": "ValueError: UnavailableError: heartbeat", "traceback": "Socket closed"}
    )
    assert not curable_error({"message": "the cell raised UnavailableError"})
    assert not curable_error({"message": ""})
    # with the runner's full type: TensorFlow's own errors, or a connection error a library raised
    tf_error = "tensorflow.python.framework.errors_impl.UnavailableError"
    assert curable_error({"message": "UnavailableError: x", "error_type": tf_error, "raised_in_cell": False})
    own = {"message": "UnavailableError: bad csv", "error_type": "__main__.UnavailableError"}
    assert not curable_error({**own, "raised_in_cell": True})
    lost = {"message": "ConnectionError: reset", "error_type": "builtins.ConnectionError"}
    assert curable_error({**lost, "raised_in_cell": False})
    assert not curable_error({**lost, "raised_in_cell": True})  # the cell's own raise


def test_a_cell_defining_its_own_transient_looking_error_fails_at_once(standin):
    job = tk.submit(
        "class UnavailableError(Exception):\n    pass\n\nraise UnavailableError('bad csv')",
        workers=2,
        max_restarts=3,
        name="own-error-type",
    )
    assert job.wait(timeout=60) == "failed"
    assert job.status.message.startswith("worker-0 failed: UnavailableError: bad csv"), job.status.message
    assert all(r.restarts == 0 for r in job.status.replicas)


def test_a_slow_end_after_the_last_epoch_is_no_hang(standin):
    # fit's tf.data teardown can take longer than stall_timeout after the last epoch: no progress, no hang
    job = tk.submit(
        "EPOCHS = 2\nSTEPS = 4\nSTEP_SECONDS = 0.05\nAFTER_FIT_SECONDS = 6",
        workers=1,
        name="slow-end",
        stall_timeout=2,
    )
    assert job.wait(timeout=60) == "succeeded", job.status.message
    assert job.status.replica("worker-0").restarts == 0
    assert "so it was killed" not in job.logs("supervisor")


def test_a_reporting_replica_that_hangs_idle_is_killed_and_counts_as_a_failure(standin):
    # The cell blocks (as on a deadlock) before its first step: start-up grace (setup_timeout) + stall_timeout.
    job = tk.submit(
        "import time\ntime.sleep(600)",
        workers=2,
        name="hang-idle",
        stall_timeout=2,
        setup_timeout=3,
        max_restarts=0,
    )
    assert job.wait(timeout=60) == "failed"
    message = job.status.message
    assert message.startswith(
        "worker-0 made no training progress for longer than stall_timeout=2 s before its first step"
    ), message
    assert message.endswith("so it was killed"), message
    _no_process_alive(job)


def test_a_busy_cell_that_reports_no_progress_is_not_taken_for_a_hang(standin):
    # 8 s of computing without a metric point (as an evaluate after fit would be), past grace + stall_timeout.
    job = tk.submit(
        "import time\nt0 = time.time()\nwhile time.time() - t0 < 8: pass\nEPOCHS = 1\nSTEPS = 2",
        workers=1,
        name="busy-silent",
        stall_timeout=2,
        setup_timeout=3,
    )
    assert job.wait(timeout=60) == "succeeded", job.status.message
    assert job.status.replica("worker-0").restarts == 0


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_a_frozen_ps_worker_is_restarted_within_stall_timeout_and_the_job_succeeds():
    job = tk.submit(
        tf_keras_cell(epochs=6, steps=30, step_sleep=0.05),
        ps=1,
        workers=2,
        name="tf-freeze-w",
        setup_timeout=180,
        stall_timeout=15,
    )
    wait_for(lambda: epoch_events(job.events()), 240, "the first epoch")
    frozen = job.status.replica("worker-1").pid
    os.kill(frozen, signal.SIGSTOP)
    # Recovery starts within stall_timeout + 10 s.
    message = wait_for(
        lambda: (m := job.status.message) and "restarting worker-1" in m and m, 25, "the restart of worker-1"
    )
    _says_frozen(message, "worker-1", 15)
    _frozen_then_gone(frozen)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    assert job.status.replica("worker-1").restarts == 1
    assert job.status.replica("chief-0").restarts == 0
    events = job.events()
    assert len(_runs(events)) == 1
    _curve_is_continuous(events)
    assert len(epoch_events(events)) == 6


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_a_frozen_all_reduce_worker_is_recovered_and_the_job_succeeds():
    job = tk.submit(
        tf_keras_cell(epochs=6, steps=30, step_sleep=0.05),
        workers=2,
        name="tf-freeze-mw",
        setup_timeout=180,
        stall_timeout=15,
    )
    wait_for(lambda: len(epoch_events(job.events())) >= 2, 240, "two epochs")
    frozen = job.status.replica("worker-1").pid
    os.kill(frozen, signal.SIGSTOP)
    # TensorFlow's coordination-service heartbeat (10 s) may end worker-0 first; either way every worker
    # restarts within stall_timeout + 10 s and the frozen one is killed.
    message = wait_for(
        lambda: (m := job.status.message) and m.startswith("restarting every replica") and m,
        25,
        "the restart",
    )
    # One sentence naming the frozen replica, whichever noticed first.
    assert "because worker-1 was frozen (stopped) " in message and message.endswith("so it was killed"), (
        message
    )
    _frozen_then_gone(frozen)
    assert job.wait(timeout=300) == "succeeded", f"{job.status.message} (restart: {message})"
    assert [r.restarts for r in job.status.replicas] == [1, 1]
    events = job.events()
    assert len(_runs(events)) == 2 and _first_epoch_of_last_run(events) > 0
    _curve_is_continuous(events)


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_slow_epochs_that_advance_are_never_taken_for_a_hang():
    # Each epoch takes ~10 s, twice stall_timeout, but its steps keep reporting.
    job = tk.submit(
        tf_keras_cell(epochs=2, steps=20, step_sleep=0.5),
        workers=1,
        name="tf-slow",
        setup_timeout=180,
        stall_timeout=5,
    )
    assert job.wait(timeout=300) == "succeeded", job.status.message
    assert job.status.replica("worker-0").restarts == 0
    assert len(_runs(job.events())) == 1
    assert "so it was killed" not in job.logs("supervisor")


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_a_cell_error_whose_text_names_a_transient_error_fails_at_once():
    code = (
        keras_cell(epochs=1, steps=5)
        + "raise ValueError('UnavailableError: Socket closed, heartbeat lost')\n"
    )
    job = tk.submit(code, workers=2, name="tf-raise-words", setup_timeout=180)
    assert job.wait(timeout=300) == "failed"
    message = job.status.message
    assert message.startswith("worker-0 failed: ValueError: UnavailableError: Socket closed"), message
    assert all(r.restarts == 0 for r in job.status.replicas)
    assert len(_runs(job.events())) == 1
    _no_process_alive(job)
