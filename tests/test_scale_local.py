"""Resizing a local job (``LocalBackend.scale``): a parameter-server job's scale-down live, scale-up and
all-reduce resizes by checkpoint-restart, and the refusals."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from local_helpers import assert_resize_continues, kill, set_test_hooks, tf_keras_cell, wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.base import JobConflict
from tfk8s_jupyter.backends.local import LocalBackend, process_alive, read_supervisor
from tfk8s_jupyter.backends.local_scale import SCALE_REQUEST, BadScale
from tfk8s_jupyter.records import JobRecord
from tfk8s_jupyter.replica_env import CHECKPOINT_REQUEST


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
    many = _refused("sc-refuse", 200)  # the rule of a submission: more processes than this machine runs
    assert "would start 202 TensorFlow processes on this machine" in many and "Kubernetes" in many
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


def test_a_resize_before_the_first_checkpoint_or_of_a_finished_job_is_refused(standin):
    job = tk.submit("EPOCHS = 3\nSTEPS = 200\nSTEP_SECONDS = 0.1", workers=2, name="sc-mw")
    _running(job)
    text = _refused("sc-mw", 1)
    assert text == (
        "job sc-mw has no checkpoint to restart from yet: its first is saved at the end of epoch 1 (it is in "
        "epoch 1 now), so resize it after that."
    )
    assert "at least one worker" in _refused("sc-mw", 0)
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


def _curve_is_continuous(job, epochs: int, steps: int) -> None:
    """Every step of the job reported exactly once, in order, across the restarts (no point lost or doubled)."""
    points = [e["step"] for e in job.events() if e.get("type") == "metric"]
    assert points == list(range(1, epochs * steps + 1)), points


def _resized(job, n: int, timeout: float = 120) -> dict:
    wait_for(lambda: len(job.status.history) >= n and not job.status.message, timeout, f"resize {n} applied")
    return job.status.history[n - 1]


def test_the_resize_request_is_gone_before_the_status_says_the_resize_is_done(tmp_path):
    """A caller who reads "resized" may ask for the next resize at once: the pending request must be gone
    by the time the status without "resizing" is written, or the next ask is told one is in progress."""
    from types import SimpleNamespace

    from tfk8s_jupyter.backends import local_resize

    request = tmp_path / SCALE_REQUEST
    request.write_text("{}")
    seen: list[tuple[str | None, bool]] = []
    resize = local_resize.PendingResize("1", 3, 2, time.time())
    resize.restarted = True
    sup = SimpleNamespace(
        resize=resize,
        awaiting_start_until=None,
        reporting=SimpleNamespace(up=True, name="worker-0"),
        status=SimpleNamespace(message="resizing from 2 to 3 worker(s) by checkpoint-restart"),
        record=SimpleNamespace(dir=tmp_path),
    )
    sup.save = lambda: seen.append((sup.status.message, request.exists()))
    local_resize.step(sup)
    assert sup.resize is None
    assert seen == [(None, False)]


def test_standin_all_reduce_resizes_up_and_down_by_checkpoint_restart(standin):
    job = tk.submit("EPOCHS = 10\nSTEPS = 10\nSTEP_SECONDS = 0.1", workers=2, name="sc-ar")
    wait_for(lambda: any(e.get("type") == "checkpoint" for e in job.events()), 60, "the first checkpoint")
    record = JobRecord("sc-ar")
    status = LocalBackend().scale("sc-ar", 3)
    assert status.message.startswith("resizing from 2 to 3 worker(s) by checkpoint-restart")
    assert (record.dir / SCALE_REQUEST).exists()  # one resize at a time until the new shape runs
    with pytest.raises(JobConflict, match="in progress already"):
        LocalBackend().scale("sc-ar", 2)
    up = _resized(job, 1)
    assert (up["from"], up["to"], up["how"], up["added"]) == (2, 3, "restart", ["worker-2"])
    assert up["step"] == (up["epoch"] + 1) * 10  # restarted at the checkpoint's step
    assert job.status.replica("worker-2").state != "removed"
    assert job.spec.workers == 3 and len(job.status.replicas) == 3
    assert not (record.dir / SCALE_REQUEST).exists()
    starts = [e for e in job.events() if e.get("type") == "start"]
    assert starts[-1]["replicas"] == 3 and starts[-1]["initial_epoch"] == up["epoch"] + 1
    down = LocalBackend().scale("sc-ar", 2)
    assert down.message.startswith("resizing from 3 to 2 worker(s)")
    entry = _resized(job, 2)
    assert (entry["from"], entry["to"], entry["how"], entry["removed"]) == (3, 2, "restart", ["worker-2"])
    assert job.status.replica("worker-2").state == "removed"
    assert job.wait(timeout=120) == "succeeded", job.status.message
    _curve_is_continuous(job, 10, 10)
    markers = [e for e in job.events() if e.get("type") == "resize"]
    assert [(m["from"], m["to"], m["step"]) for m in markers] == [(2, 3, up["step"]), (3, 2, entry["step"])]
    assert "started with the job's new shape (3 workers)" in job.logs("worker-0")


def test_standin_ps_scale_up_by_checkpoint_restart_brings_a_removed_worker_back(standin):
    job = tk.submit("EPOCHS = 10\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=2, name="sc-up")
    wait_for(lambda: any(e.get("type") == "checkpoint" for e in job.events()), 60, "the first checkpoint")
    LocalBackend().scale("sc-up", 1)  # live
    servers = {n: job.status.replica(n).pid for n in ("ps-0", "worker-0")}
    LocalBackend().scale("sc-up", 3)  # worker-1 back, worker-2 added
    entry = _resized(job, 2)
    assert (entry["how"], entry["from"], entry["to"], entry["added"]) == (
        "restart",
        1,
        3,
        ["worker-1", "worker-2"],
    )
    # Only the chief restarted (and the workers that were not there started): the servers serve on.
    assert entry["kept"] == ["ps-0", "worker-0"]
    assert {n: job.status.replica(n).pid for n in servers} == servers
    assert "keep serving" in job.logs("supervisor")
    assert [r.state for r in job.status.replicas if r.role == "worker"].count("removed") == 0
    assert job.wait(timeout=120) == "succeeded", job.status.message
    _curve_is_continuous(job, 10, 10)
    assert job.status.replica("chief-0").restarts == 0  # a resize is no failure


def _loss_continues(job, entry: dict, steps: int) -> None:
    assert_resize_continues(job.events(), job.status.history, entry, steps)


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_tf_ps_scale_up_2_to_3_by_checkpoint_restart():
    job = tk.submit(
        tf_keras_cell(epochs=10, steps=30, step_sleep=0.05), ps=1, workers=2, name="tf-up", setup_timeout=240
    )
    wait_for(lambda: any(e.get("type") == "checkpoint" for e in job.events()), 300, "the first checkpoint")
    servers = {n: job.status.replica(n).pid for n in ("ps-0", "worker-0", "worker-1")}
    chief = job.status.replica("chief-0").pid
    asked = time.time()
    status = job.scale(workers=3)
    assert status.message.startswith("resizing from 2 to 3 worker(s) by checkpoint-restart")
    entry = _resized(job, 1, timeout=300)
    assert (entry["from"], entry["to"], entry["how"], entry["added"]) == (2, 3, "restart", ["worker-2"])
    assert asked <= entry["asked"] <= entry["time"]
    # The ps and both workers serve on (their TensorFlow servers, started for 2 workers, serve the new
    # chief's 3-worker cluster); only the chief restarted, and worker-2 started.
    assert entry["kept"] == ["ps-0", "worker-0", "worker-1"]
    wait_for(lambda: job.status.replica("worker-2").state == "running", 240, "worker-2 up")
    assert {n: job.status.replica(n).pid for n in servers} == servers
    assert job.status.replica("chief-0").pid != chief
    wait_for(lambda: len([e for e in job.events() if e.get("type") == "start"]) >= 2, 240, "the new chief")
    start = [e for e in job.events() if e.get("type") == "start"][-1]
    assert (start["workers"], start["ps"]) == (3, 1)
    assert job.wait(timeout=600) == "succeeded", job.status.message
    _loss_continues(job, entry, 30)
    epochs = [e["epoch"] for e in job.events() if e.get("type") == "epoch"]
    assert epochs == list(range(10)), epochs  # every epoch once: nothing lost, nothing redone
    assert job.spec.workers == 3 and job.status.replica("chief-0").restarts == 0
    assert all(job.status.replica(n).restarts == 0 for n in servers)


@pytest.mark.tf
@pytest.mark.timeout(1200)
def test_tf_all_reduce_2_to_3_and_3_to_2_by_checkpoint_restart():
    job = tk.submit(
        # long enough that both resizes find a checkpoint before training ends (all-reduce checkpoints are
        # at most every TFK8S_CHECKPOINT_INTERVAL s: a resize asked near the end is cancelled by the end)
        tf_keras_cell(epochs=40, steps=30, step_sleep=0.05),
        workers=2,
        name="tf-ar",
        setup_timeout=240,
    )
    wait_for(lambda: any(e.get("type") == "checkpoint" for e in job.events()), 300, "the first checkpoint")
    job.scale(workers=3)
    up = _resized(job, 1, timeout=300)
    assert (up["from"], up["to"], up["how"], up["added"]) == (2, 3, "restart", ["worker-2"])
    wait_for(
        lambda: [e for e in job.events() if e.get("type") == "epoch" and e["epoch"] > up["epoch"] + 1],
        300,
        "an epoch of 3 workers",
    )
    assert [e for e in job.events() if e.get("type") == "start"][-1]["replicas"] == 3
    job.scale(workers=2)
    down = _resized(job, 2, timeout=300)
    assert (down["from"], down["to"], down["how"], down["removed"]) == (3, 2, "restart", ["worker-2"])
    assert job.wait(timeout=600) == "succeeded", job.status.message
    _loss_continues(job, up, 30)
    _loss_continues(job, down, 30)
    epochs = [e["epoch"] for e in job.events() if e.get("type") == "epoch"]
    assert epochs == list(range(40)), epochs
    assert job.status.replica("worker-2").state == "removed"
    assert [h["how"] for h in job.status.history] == ["restart", "restart"]


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_tf_scale_up_asks_for_its_checkpoint_and_restarts_on_warm_processes(tfk8s_home):
    """With a checkpoint interval of 300 s, the checkpoint the restart uses is the one the resize asked for
    (saved after the request, at the next epoch end, long before the interval), and every replica of the new
    shape is a warm pool process the kernel prepared at the call."""
    from tfk8s_jupyter.backends.local_pool import list_pool
    from tfk8s_jupyter.config import TFK8s, set_current_config

    set_current_config(TFK8s(warm_pool=None, keep_warm=0))  # the pool on, sized by the last job's shape
    job = tk.submit(
        tf_keras_cell(epochs=40, steps=30, step_sleep=0.05),
        workers=2,
        name="tf-ondemand",
        setup_timeout=240,
        env={"TFK8S_CHECKPOINT_INTERVAL": "300"},
    )
    wait_for(lambda: any(e.get("type") == "checkpoint" for e in job.events()), 300, "the first checkpoint")
    first = [e for e in job.events() if e.get("type") == "checkpoint"]
    assert [(e["action"], e["epoch"]) for e in first] == [("saved", 0)]  # the first epoch; then every 300 s
    job.scale(workers=3)
    up = _resized(job, 1, timeout=300)
    assert (up["from"], up["to"], up["how"], up["added"]) == (2, 3, "restart", ["worker-2"])
    assert "note" not in up  # not the fallback to the last checkpoint
    events = job.events()
    marker = next(i for i, e in enumerate(events) if e.get("type") == "resize")
    saved = [e for e in events[:marker] if e.get("type") == "checkpoint" and e.get("action") == "saved"]
    # The first epoch's save, then only saves asked for (after the request; one an epoch while the warm
    # processes import TensorFlow), the last one the checkpoint the new shape restores.
    assert saved[0]["epoch"] == 0 and saved[-1]["epoch"] == up["epoch"] > 0, saved
    assert all(e["t"] >= up["asked"] for e in saved[1:]), saved
    assert "asked for a checkpoint at the next epoch end" in job.logs("supervisor")
    # The new shape came from the warm pool: every replica, the added one too.
    assert [(r.name, r.launch) for r in job.status.replicas] == [
        ("worker-0", "warm"),
        ("worker-1", "warm"),
        ("worker-2", "warm"),
    ]
    claimed = {r["pid"] for r in list_pool(tfk8s_home) if r["state"] == "claimed"}
    assert {r.pid for r in job.status.replicas} <= claimed
    wait_for(
        lambda: [e for e in job.events() if e.get("type") == "epoch" and e["epoch"] > up["epoch"] + 1],
        300,
        "an epoch of 3 workers",
    )
    assert [e for e in job.events() if e.get("type") == "start"][-1]["replicas"] == 3
    _loss_continues(job, up, 30)
    record = JobRecord("tf-ondemand")
    assert not (record.dir / SCALE_REQUEST).exists()
    assert not (
        record.dir / "artifacts" / "checkpoints" / CHECKPOINT_REQUEST
    ).exists()  # the new run's own clock
    job.stop()


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_tf_ps_scale_up_restarts_only_the_chief_on_the_warm_pool_and_the_servers_serve_on(tfk8s_home):
    """Asked right after the first checkpoint, while the warm pool still imports TensorFlow: the old chief
    stops at the safe point, the ps and both workers serve on through the restart (their watchdog sees the
    old chief's address held), and the new chief and worker-2 are warm pool processes."""
    from tfk8s_jupyter.config import TFK8s, set_current_config

    set_current_config(TFK8s(warm_pool=None, keep_warm=0))  # the pool on, sized by the last job's shape
    job = tk.submit(
        tf_keras_cell(epochs=40, steps=30, step_sleep=0.05),
        ps=1,
        workers=2,
        name="tf-up-warm",
        setup_timeout=240,
    )
    wait_for(lambda: any(e.get("type") == "checkpoint" for e in job.events()), 300, "the first checkpoint")
    servers = {n: job.status.replica(n).pid for n in ("ps-0", "worker-0", "worker-1")}
    job.scale(workers=3)
    up = _resized(job, 1, timeout=300)
    assert (up["from"], up["to"], up["how"], up["added"]) == (2, 3, "restart", ["worker-2"])
    assert up["kept"] == ["ps-0", "worker-0", "worker-1"]
    wait_for(
        lambda: [e for e in job.events() if e.get("type") == "epoch" and e["epoch"] > up["epoch"] + 2],
        300,
        "epochs of 3 workers",
    )
    # the servers outlived their old chief by more than their watchdog allows (3 probes, 1 s apart)
    assert {n: job.status.replica(n).pid for n in servers} == servers
    assert all(process_alive(pid) for pid in servers.values())
    assert "is gone; this replica exits" not in job.logs("ps-0")
    assert (job.status.replica("chief-0").launch, job.status.replica("worker-2").launch) == ("warm", "warm")
    start = [e for e in job.events() if e.get("type") == "start"][-1]
    assert (start["workers"], start["ps"]) == (3, 1)
    _loss_continues(job, up, 30)
    log = job.logs("supervisor")
    assert "the chief stopped, the ps and 2 worker(s) keep serving" in log
    assert "the new shape's processes are ready" in log
    assert job.stop().phase == "stopped"
