"""Live scale-down of a local parameter-server job (``LocalBackend.scale``), and its refusals."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from local_helpers import kill, set_test_hooks, tf_keras_cell, wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.base import JobConflict
from tfk8s_jupyter.backends.local import LocalBackend, process_alive, read_supervisor
from tfk8s_jupyter.backends.local_scale import SCALE_REQUEST, BadScale
from tfk8s_jupyter.records import JobRecord


def _running(job, timeout: float = 120) -> None:
    wait_for(lambda: job.status.phase == "running" and job.metrics(), timeout, "the first metric point")


def _shape(status) -> list[tuple[str, str, int | None]]:
    return [(r.name, r.state, r.pid) for r in status.replicas]


def _refused(name: str, workers, error=JobConflict) -> str:
    """Ask for the resize, expect a refusal that changes nothing; return its sentence."""
    record = JobRecord(name)
    before = LocalBackend().get(name)
    with pytest.raises(error) as e:
        LocalBackend().scale(name, workers)
    after = LocalBackend().get(name)
    assert after.history == before.history == []
    assert all(r.state != "removed" for r in after.replicas)
    assert not (record.dir / SCALE_REQUEST).exists()
    text = str(e.value)
    assert text.count(". ") == 0 and text.endswith("."), text  # one sentence
    return text


def test_standin_scale_down_removes_the_highest_worker_and_the_job_goes_on(standin):
    job = tk.submit("EPOCHS = 6\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=3, name="sc-standin")
    _running(job)
    pid = job.status.replica("worker-2").pid
    status = LocalBackend().scale("sc-standin", 2)
    assert status.replica("worker-2").state == "removed"
    assert not process_alive(pid)
    assert [(h["from"], h["to"], h["how"], h["removed"]) for h in status.history] == [
        (3, 2, "live", ["worker-2"])
    ]
    assert job.wait(timeout=120) == "succeeded", job.status.message
    final = job.status
    assert final.replica("worker-2").state == "removed" and final.replica("worker-2").restarts == 0
    assert final.replica("worker-1").state != "removed"
    assert final.counts().get("removed") == 1
    assert "scaled down to 2 worker(s)" in job.logs("supervisor")
    assert job.logs("worker-2")  # its log is kept


def test_refusals_leave_the_job_as_it_was(standin):
    job = tk.submit("EPOCHS = 30\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=2, name="sc-refuse")
    _running(job)
    shape = _shape(job.status)
    assert "at least one worker" in _refused("sc-refuse", 0)
    assert "negative" in _refused("sc-refuse", -1, BadScale)
    assert "whole number" in _refused("sc-refuse", 1.5, BadScale)
    assert "whole number" in _refused("sc-refuse", "1", BadScale)
    assert "whole number" in _refused("sc-refuse", True, BadScale)
    more = _refused("sc-refuse", 3)
    assert "needs a checkpoint-restart, which is not built yet" in more and "has 2 worker(s)" in more
    assert _shape(job.status) == shape
    # One resize at a time: the first waits on a paused supervisor, the second is refused.
    sup = read_supervisor(JobRecord("sc-refuse"))["pid"]
    os.kill(sup, signal.SIGSTOP)
    first: dict = {}
    try:
        thread = threading.Thread(target=lambda: first.update(s=LocalBackend().scale("sc-refuse", 1)))
        thread.start()
        wait_for(lambda: (JobRecord("sc-refuse").dir / SCALE_REQUEST).exists(), 10, "the first request")
        with pytest.raises(JobConflict, match="in progress already"):
            LocalBackend().scale("sc-refuse", 1)
    finally:
        os.kill(sup, signal.SIGCONT)
    thread.join(30)
    assert first["s"].replica("worker-1").state == "removed"
    assert [(h["from"], h["to"]) for h in job.status.history] == [(2, 1)]
    assert job.stop().phase == "stopped"
    text = str(pytest.raises(JobConflict, LocalBackend().scale, "sc-refuse", 1).value)
    assert text == "job sc-refuse has already stopped; only a running job can be resized."


def test_an_all_reduce_or_finished_job_is_refused(standin):
    job = tk.submit("EPOCHS = 30\nSTEPS = 10\nSTEP_SECONDS = 0.1", workers=2, name="sc-mw")
    _running(job)
    text = _refused("sc-mw", 1)
    assert text == (
        "job sc-mw is an all-reduce job: adding workers or resizing an all-reduce job needs a "
        "checkpoint-restart, which is not built yet; stop the job and submit it again with the shape you want."
    )
    job.stop()
    done = tk.submit("EPOCHS = 1\nSTEPS = 2", ps=1, workers=2, name="sc-done")
    assert done.wait(timeout=60) == "succeeded"
    assert "has already succeeded" in _refused("sc-done", 1)


def test_a_backend_without_resizing_says_so():
    from tfk8s_jupyter.backends.base import Backend, TFK8sError

    class Bare(Backend):
        name = "bare"
        submit = list = get = spec = events = watch = logs = stop = delete = None

    with pytest.raises(TFK8sError, match="not supported on the bare backend"):
        Bare.scale(Bare.__new__(Bare), "x", 1)


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_ps_scale_down_3_to_2_live_and_the_job_succeeds():
    job = tk.submit(
        tf_keras_cell(epochs=10, steps=30, step_sleep=0.05),
        ps=1,
        workers=3,
        name="tf-scale",
        setup_timeout=240,
    )
    _running(job, 300)
    chief = job.status.replica("chief-0").pid
    removed_pid = job.status.replica("worker-2").pid
    asked = time.time()
    started = time.monotonic()
    job.backend.scale("tf-scale", 2)
    seen = job.status
    took = time.monotonic() - started
    assert seen.replica("worker-2").state == "removed"
    assert took < 30, took  # generous: the target (≤ 5 s) is measured by bench/bench_scale.py
    assert not process_alive(removed_pid)
    assert seen.phase == "running"
    entry = seen.history[-1]
    assert (entry["from"], entry["to"], entry["how"], entry["removed"]) == (3, 2, "live", ["worker-2"])
    assert asked <= entry["time"] <= time.time()
    # The chief carries on: new metric points after the resize, from the same run.
    wait_for(
        lambda: [p for p in job.metrics() if p["t"] > entry["time"] + 1], 120, "a point after the resize"
    )
    assert job.wait(timeout=400) == "succeeded", job.status.message
    final = job.status
    assert final.replica("chief-0").pid == chief and final.replica("chief-0").restarts == 0
    assert final.replica("worker-2").state == "removed" and final.replica("worker-2").restarts == 0
    assert final.replica("worker-2").pid == removed_pid  # never started again
    assert len({e.get("run") for e in job.events() if e.get("type") == "metric"}) == 1
    assert [h["how"] for h in final.history] == ["live"]


def test_a_job_still_starting_is_refused(standin, monkeypatch):
    set_test_hooks(monkeypatch, stall_replica="chief-0")  # the chief never starts training
    job = tk.submit("EPOCHS = 3\nSTEPS = 10", ps=1, workers=2, name="sc-starting", setup_timeout=60)
    wait_for(lambda: job.status.replica("worker-1").state == "running", 60, "worker-1 up")
    assert job.status.phase == "pending"
    text = _refused("sc-starting", 1)
    assert text == (
        "job sc-starting is still pending (its chief has not started training); resize it once job.status "
        "shows it running."
    )
    job.stop()


def test_a_restart_of_every_replica_brings_removed_workers_back_and_says_so(standin):
    job = tk.submit("EPOCHS = 8\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=3, name="sc-restart")
    _running(job)
    LocalBackend().scale("sc-restart", 2)
    kill(job.status.replica("ps-0").pid)  # a lost ps: every replica restarts with the full cluster spec
    wait_for(lambda: job.status.replica("worker-2").state == "running", 60, "worker-2 back")
    assert job.wait(timeout=120) == "succeeded", job.status.message
    history = job.status.history
    assert [(h["from"], h["to"], h["how"]) for h in history] == [(3, 2, "live"), (2, 3, "restart")]
    assert history[1]["restored"] == ["worker-2"]
    assert job.status.replica("worker-2").restarts == 1
