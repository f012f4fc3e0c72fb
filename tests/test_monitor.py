"""Series and JobState (downsampling, bounded memory, de-duplication) and the Monitor against the local
backend."""

from __future__ import annotations

import threading

import pytest
from local_helpers import wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.base import JobStatus
from tfk8s_jupyter.backends.local import LocalBackend
from tfk8s_jupyter.monitor import JobState, Monitor, Series, event_to_point


def _metric(seq: int, step: int, loss: float, run: str = "r", epoch: int = 0) -> dict:
    return {
        "type": "metric",
        "run": run,
        "seq": seq,
        "t": float(step),
        "epoch": epoch,
        "step": step,
        "values": {"loss": loss},
    }


# --------------------------------------------------------------------------- Series
def test_series_keeps_everything_while_small():
    s = Series(max_points=100)
    for i in range(50):
        s.add(i, i * 2.0)
    x, y = s.points()
    assert x == list(range(50)) and y == [i * 2.0 for i in range(50)]


def test_series_memory_is_bounded_and_spread_evenly():
    s = Series(max_points=100)
    n = 100_000
    for i in range(n):
        s.add(i, float(i))
    assert len(s) == n
    assert len(s.x) < 2 * s.max_points  # what it stores
    x, y = s.points()
    assert len(x) <= 100
    assert x[0] == 0 and x[-1] == n - 1  # first and last always shown
    gaps = [b - a for a, b in zip(x[:-2], x[1:-1], strict=True)]  # the final point is appended as is
    assert max(gaps) == min(gaps)  # an even spread
    assert x == sorted(x) and y == [float(v) for v in x]


def test_series_points_honours_a_smaller_limit():
    s = Series(max_points=1000)
    for i in range(1500):
        s.add(i, 1.0)
    x, _ = s.points(limit=50)
    assert len(x) <= 50 and x[-1] == 1499


# --------------------------------------------------------------------------- JobState
def test_the_per_step_curve_ends_at_the_last_step_reported():
    """A short job whose per-step points were throttled to one: each epoch's end (at its last step) is a
    per-step point too, so a 40-step job draws a curve that ends where training ended."""
    state = JobState("short")
    events = [_metric(1, 1, 1.0)]
    for epoch in range(2):
        events.append(
            {
                "type": "epoch",
                "run": "r",
                "seq": 10 + epoch,
                "epoch": epoch,
                "step": 20 * (epoch + 1),
                "values": {"loss": 0.5 / (epoch + 1), "val_loss": 0.7},
            }
        )
    state.add_events(events)
    step = state.series("step")
    assert step["loss"] == {"x": [1, 20, 40], "y": [1.0, 0.5, 0.25]}
    assert "val_loss" not in step  # validation has no per-step curve
    assert step["loss"]["x"][-1] == state.step == 40
    # a step point already at the epoch's last step is not repeated
    state.add_events([_metric(20, 60, 0.2, epoch=2)])
    state.add_events(
        [{"type": "epoch", "run": "r", "seq": 21, "epoch": 2, "step": 60, "values": {"loss": 0.2}}]
    )
    assert state.series("step")["loss"]["x"] == [1, 20, 40, 60]


def test_jobstate_folds_events_and_ignores_duplicates():
    state = JobState("j", max_points=100)
    calls = []
    state.observe(lambda st: calls.append(st.version))
    events = [_metric(i, i, 1.0 / i) for i in range(1, 11)]
    events.append(
        {"type": "epoch", "run": "r", "seq": 11, "epoch": 0, "step": 10, "values": {"loss": 0.1, "note": "x"}}
    )
    events.append({"type": "checkpoint", "run": "r", "seq": 12, "epoch": 0})
    assert state.add_events(events) == 12
    assert state.add_events(events) == 0  # seen before: no change, no callback
    assert len(calls) == 1
    assert state.step == 10 and state.epoch == 0 and state.checkpoints == 1
    assert state.last_values == {"loss": 0.1}
    series = state.series("step")
    assert series["loss"]["x"] == list(range(1, 11))
    assert state.series("epoch") == {"loss": {"x": [0], "y": [0.1]}}
    assert state.n_points == 11


def test_jobstate_keeps_a_restarted_run_apart_from_the_first():
    state = JobState("j")
    state.add_events([_metric(1, 1, 1.0, run="a"), _metric(2, 2, 0.9, run="a")])
    assert state.add_events([_metric(1, 3, 0.8, run="b")]) == 1  # same seq, new run: a new point
    assert state.series()["loss"]["x"] == [1, 2, 3]


def test_jobstate_error_comes_from_the_error_event_or_a_failed_status():
    state = JobState("j")
    state.add_events([{"type": "error", "run": "r", "seq": 1, "message": "ValueError: boom"}])
    assert state.error == "ValueError: boom"
    other = JobState("k")
    other.set_status(
        JobStatus(name="k", backend="local", strategy="mirrored", phase="failed", message="it broke")
    )
    assert other.error == "it broke"


@pytest.mark.parametrize("recorded", ["note", "older error with phase save"])
def test_a_model_that_could_not_be_saved_is_no_error_of_a_job_that_trained(recorded):
    from tfk8s_jupyter.display_text import model_line

    state = JobState("j")
    state.set_status(JobStatus(name="j", backend="local", strategy="mirrored", phase="running"))
    why = "the model could not be saved (NotImplementedError: a subclassed model without get_config)."
    if recorded == "note":
        event = {"type": "note", "run": "r", "seq": 1, "about": "save", "message": why}
    else:  # a record written before the note event existed
        event = {"type": "error", "run": "r", "seq": 1, "phase": "save", "message": why}
    state.add_events(
        [
            event,
            {
                "type": "end",
                "run": "r",
                "seq": 2,
                "status": "succeeded",
                "artifacts": {"model": None, "model_note": why},
            },
        ]
    )
    assert state.error is None
    assert state.event_notes == [why] and state.status.notes == [why]
    # a later status (the backend's, with its own notes) keeps showing it, once
    state.set_status(
        JobStatus(name="j", backend="local", strategy="mirrored", phase="succeeded", notes=["other"])
    )
    state.add_events([event])
    assert state.status.notes == ["other", why]
    assert model_line({"model": None, "model_note": why}) == f"no model saved: {why.rstrip('.')}"
    saved = {"model": {"path": "model/model.keras", "bytes": 1_200_000, "save_seconds": 0.4}}
    assert model_line(saved) == "model saved: 1.2 MB in 0.4 s — job.model() loads it"


def test_jobstate_memory_is_bounded_for_a_long_run():
    state = JobState("long", max_points=200)
    for chunk in range(50):
        state.add_events([_metric(chunk * 1000 + i, chunk * 1000 + i, 1.0) for i in range(1000)])
    s = state.step_series["loss"]
    assert len(s) == 50_000 and len(s.x) < 400
    assert len(state.series("step")["loss"]["x"]) <= 200
    assert state.step == 49_999


def test_event_to_point_drops_non_numbers():
    point = event_to_point(
        {"type": "metric", "epoch": 1, "step": 5, "t": 2.0, "values": {"loss": 0.5, "lr": None, "s": "x"}}
    )
    assert point == {"kind": "step", "epoch": 1, "step": 5, "t": 2.0, "values": {"loss": 0.5}}
    assert event_to_point({"type": "start"}) is None


# --------------------------------------------------------------------------- Monitor on the local backend
def test_monitor_follows_a_local_job_live(standin):
    job = tk.submit("EPOCHS = 3\nSTEPS = 15\nSTEP_SECONDS = 0.1", ps=1, workers=1, name="monitored")
    seen_running_with_points = threading.Event()

    def observer(state: JobState) -> None:
        if state.status is not None and state.status.phase == "running" and state.n_points > 0:
            seen_running_with_points.set()

    state = JobState(job.name)
    state.observe(observer)
    monitor = Monitor(LocalBackend(), job.name, state).start()
    assert monitor.done.wait(60)
    assert seen_running_with_points.is_set()
    assert state.status.phase == "succeeded"
    assert state.series("epoch")["loss"]["x"] == [0, 1, 2]
    assert state.n_points == len(job.metrics())
    assert state.step == 45


def test_monitor_of_a_finished_job_has_the_whole_history(standin):
    job = tk.submit("EPOCHS = 2\nSTEPS = 5", workers=2, name="history")
    job.wait(timeout=60)
    state = tk.attach("history").state
    wait_for(lambda: state.status is not None and state.status.done, 10, "the monitor's first status")
    assert state.n_points == len(job.metrics()) > 0
    assert state.series("epoch")["loss"]["x"] == [0, 1]


# --------------------------------------------------------------------------- log tails
def test_the_monitor_serves_log_tails_from_its_own_thread():
    calls: list[tuple[str, int | None, str]] = []

    class Logs:
        def logs(self, name: str, replica: str, tail: int | None = None) -> str:
            calls.append((replica, tail, threading.current_thread().name))
            if replica == "ps-0":
                raise RuntimeError("pod ps-0 is gone")
            return f"{replica} says hi\n"

    state = JobState("j")
    assert state.refresh_log("chief-0").is_set()  # no monitor: nothing to wait for
    assert state.log_tail("chief-0") is None
    changes = []
    state.observe(lambda st: changes.append(st.log_tail("chief-0")))
    Monitor(Logs(), "j", state)
    assert state.refresh_log("chief-0").wait(5)
    assert state.log_tail("chief-0").text == "chief-0 says hi\n" and changes[-1] is state.log_tail("chief-0")
    assert state.refresh_log("ps-0").wait(5)
    assert state.log_tail("ps-0").error == "pod ps-0 is gone"
    assert calls == [("chief-0", 200, "tfk8s-logs-j"), ("ps-0", 200, "tfk8s-logs-j")]
