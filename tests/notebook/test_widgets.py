"""The live panel, fed with synthetic protocol events through a real JobState (no TensorFlow)."""

from __future__ import annotations

import math
import threading
import time

import comm
import ipywidgets as W
import numpy as np
import pytest

from tfk8s_jupyter.backends.base import JobStatus, ReplicaStatus
from tfk8s_jupyter.job_panel import JobPanel, merge_series
from tfk8s_jupyter.monitor import LOG_FETCH_LINES, JobState, Monitor
from tfk8s_jupyter.protocol import encode
from tfk8s_jupyter.settings_form import SettingsPanel
from tfk8s_jupyter.text_progress import TextProgress


class FakeJob:
    """The one job method a panel may call (Stop); records the calls."""

    def __init__(self, name: str, state: JobState):
        self.name = name
        self.state = state
        self.stops = 0

    def stop(self):
        self.stops += 1
        status = self.state.status
        self.state.set_status(
            JobStatus(
                status.name,
                status.backend,
                status.strategy,
                phase="stopped",
                replicas=status.replicas,
                created=status.created,
                finished=time.time(),
            )
        )
        return self.state.status


class LogBackend:
    """The backend's ``logs`` only (what a Monitor fetches log tails with); records every call and the
    thread it came from."""

    def __init__(self):
        self.calls: list[tuple[str, int | None, str]] = []
        self.extra = ""

    def logs(self, name: str, replica: str, tail: int | None = None) -> str:
        self.calls.append((replica, tail, threading.current_thread().name))
        return (
            f"{replica} booting\n"
            + encode("metric", run="r", seq=1, epoch=0, step=1, values={"loss": 1.0})
            + "\nEpoch 1/3\r 10/20 [====>....]\r 20/20 [==========] - loss: 0.5\n"
            + f"\x1b[1m{replica} done\x1b[0m\n"
            + self.extra
        )


def served_logs(state: JobState) -> LogBackend:
    """A monitor (not following any job) that serves ``state``'s log tails from a LogBackend."""
    backend = LogBackend()
    Monitor(backend, state.name, state)
    return backend


def replicas(state: str, started: float) -> list[ReplicaStatus]:
    return [
        ReplicaStatus("ps", 0, state, started=started, host="127.0.0.1:4001", pid=11),
        ReplicaStatus("chief", 0, state, restarts=1, started=started, host="127.0.0.1:4002", pid=12),
        ReplicaStatus("worker", 0, state, started=started, host="127.0.0.1:4003", pid=13),
        ReplicaStatus("worker", 1, state, started=started, host="127.0.0.1:4004", pid=14),
    ]


def status(phase: str, created: float, rstate: str = "running", **kw) -> JobStatus:
    return JobStatus(
        "demo-ps",
        "local",
        "parameter_server",
        phase=phase,
        replicas=replicas(rstate, created),
        created=created,
        **kw,
    )


def training_events(epochs: int = 3, steps: int = 20, run: str = "r1") -> list[dict]:
    events, seq, step = [], 0, 0
    t0 = time.time()
    for epoch in range(epochs):
        for _ in range(steps):
            step += 1
            seq += 1
            events.append(
                {
                    "v": 1,
                    "type": "metric",
                    "run": run,
                    "seq": seq,
                    "t": t0,
                    "epoch": epoch,
                    "step": step,
                    "values": {"loss": 1.0 / step, "mae": 2.0 / step},
                }
            )
        seq += 1
        events.append(
            {
                "v": 1,
                "type": "epoch",
                "run": run,
                "seq": seq,
                "t": t0,
                "epoch": epoch,
                "step": step,
                "values": {"loss": 1.0 / step, "mae": 2.0 / step, "val_loss": 1.5 / step},
            }
        )
        seq += 1
        events.append({"v": 1, "type": "checkpoint", "run": run, "seq": seq, "t": t0, "epoch": epoch})
    return events


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.fixture
def message_log(monkeypatch):
    """Every widget message sent to the front end: (time, widget)."""
    sent: list[tuple[float, W.Widget]] = []
    original = W.Widget._send
    # Importing ipykernel (other tests do) makes new comms kernel-bound; with no kernel running they would
    # send nothing. Give the panel's widgets the front-end-less comm that still sends.
    monkeypatch.setattr(comm, "create_comm", lambda *args, **kwargs: comm.DummyComm(*args, **kwargs))

    def counting(self, msg, buffers=None):
        sent.append((time.monotonic(), self))
        return original(self, msg, buffers)

    monkeypatch.setattr(W.Widget, "_send", counting)
    return sent


def test_panel_state_after_a_finished_job():
    created = time.time() - 75
    state = JobState("demo-ps")
    job = FakeJob("demo-ps", state)
    backend = served_logs(state)
    state.set_status(status("running", created))
    panel = JobPanel(job, interval=0.05)
    summaries = []
    panel.on_done(lambda p: summaries.append(p))
    state.add_events(training_events())
    state.add_events([{"v": 1, "type": "end", "run": "r1", "seq": 999, "status": "succeeded"}])
    state.set_status(status("succeeded", created, rstate="succeeded", finished=created + 72))
    wait_for(lambda: panel.done)

    assert "tfk8s-job-panel" in panel._dom_classes
    assert panel.badge.value == "succeeded" and "tfk8s-phase-succeeded" in panel.badge._dom_classes
    assert "tfk8s-danger" not in panel._dom_classes
    # curve: every numeric metric, per step
    assert list(panel.lines.labels) == ["loss", "mae"]
    assert list(panel.lines.x) == list(range(1, 61))
    y = np.atleast_2d(panel.lines.y)
    assert y.shape == (2, 60) and y[0][-1] == pytest.approx(1 / 60) and y[1][0] == pytest.approx(2.0)
    # ... and per epoch, with the epoch-only metric
    panel.kind.value = "epoch"
    assert list(panel.lines.labels) == ["loss", "mae", "val_loss"]
    # epochs as Keras prints them (1/3 ... 3/3), ticked on whole epochs, each point marked
    assert list(panel.lines.x) == [1, 2, 3] and panel._xaxis.label == "epoch"
    assert list(panel._xaxis.tick_values) == [1, 2, 3] and panel.lines.marker == "circle"
    # log scale toggle swaps the y scale of the line and the axis
    panel.log_scale.value = True
    assert (
        type(panel.lines.scales["y"]).__name__ == "LogScale" and panel._yaxis.scale is panel.lines.scales["y"]
    )
    # header
    assert "local · parameter_server" in panel.info.value and "elapsed 1m 12s" in panel.info.value
    assert (
        "epoch 3" in panel.info.value
        and "step 60" in panel.info.value
        and "3 checkpoints" in panel.info.value
    )
    assert 'class="tfk8s-points" data-points="60"' in panel.info.value  # for a browser to read
    # replica table
    table = panel.table.value
    for name, host in (("ps-0", "4001"), ("chief-0", "4002"), ("worker-0", "4003"), ("worker-1", "4004")):
        assert f'data-replica="{name}"' in table and f"127.0.0.1:{host}" in table
    assert table.count(">succeeded<") == 4 and "<td>1</td><td>1</td>" not in table
    assert "<td>chief</td><td>0</td>" in table and "<td>1</td><td>127.0.0.1:4002" in table  # restarts
    # log tail of the reporting replica, protocol lines and progress-bar noise removed
    assert panel.replica_chooser.options == ("ps-0", "chief-0", "worker-0", "worker-1")
    assert panel.replica_chooser.value == "chief-0"
    assert "chief-0 booting" in panel.log_tail.value and "chief-0 done" in panel.log_tail.value
    assert "@tfk8s" not in panel.log_tail.value and "\x1b" not in panel.log_tail.value
    assert "20/20 [==========] - loss: 0.5" in panel.log_tail.value and "10/20" not in panel.log_tail.value
    assert backend.calls and all(thread == "tfk8s-logs-demo-ps" for _, _, thread in backend.calls)
    # finished: Stop disabled, summary for viewers without a kernel
    assert panel.stop_button.disabled
    assert summaries == [panel]
    bundle = panel._repr_mimebundle_()
    assert bundle["text/plain"].startswith("job demo-ps · succeeded · 1m 12s · epoch 3 · step 60")
    assert "application/vnd.jupyter.widget-view+json" in bundle
    panel.close()


def test_failure_turns_the_panel_to_danger_and_shows_the_error():
    created = time.time()
    state = JobState("demo-ps")
    panel = JobPanel(FakeJob("demo-ps", state), interval=0.05)
    state.set_status(status("running", created))
    state.add_events(training_events(epochs=1, steps=5))
    state.add_events(
        [
            {
                "v": 1,
                "type": "error",
                "run": "r1",
                "seq": 500,
                "message": "ValueError: shapes (64, 8) and (4, 1) are incompatible (cell line 7)",
            }
        ]
    )
    state.set_status(
        status("failed", created, rstate="failed", finished=created + 3, message="chief-0 failed")
    )
    wait_for(lambda: panel.done)
    assert panel.badge.value == "failed" and "tfk8s-danger" in panel._dom_classes
    assert panel.badge.style.background == "#dc3545" and panel.layout.border == "2px solid #dc3545"
    assert panel.error_box.layout.display == "block"
    assert "shapes (64, 8) and (4, 1) are incompatible (cell line 7)" in panel.error_box.value
    panel.close()


def test_stop_button_calls_the_job_handle():
    state = JobState("demo-ps")
    job = FakeJob("demo-ps", state)
    state.set_status(status("running", time.time()))
    panel = JobPanel(job, interval=0.05)
    panel.stop_button.click()
    assert panel.stop_button.disabled
    wait_for(lambda: panel.done)
    assert job.stops == 1 and panel.badge.value == "stopped" and panel.stop_button.description == "Stopped"
    panel.close()


def test_the_log_tail_comes_through_the_monitor():
    """The panel only says which replica it follows; the monitor's log thread fetches the tail (at once,
    then every 2 s while the job runs) and the panel shows what the state holds."""
    created = time.time()
    state = JobState("demo-ps")
    backend = served_logs(state)
    state.set_status(status("running", created))
    panel = JobPanel(FakeJob("demo-ps", state), interval=0.05)  # the job handle has no logs()
    wait_for(lambda: "chief-0 booting" in panel.log_tail.value)
    panel.replica_chooser.value = "worker-1"
    wait_for(lambda: "worker-1 booting" in panel.log_tail.value)
    assert state.log_tail("worker-1").text.startswith("worker-1 booting")
    assert ("worker-1", LOG_FETCH_LINES) in [(r, t) for r, t, _ in backend.calls]
    # refreshed while the job runs, only for the replica on screen
    backend.extra = "epoch 2 finished\n"
    changed = time.monotonic()
    wait_for(lambda: "epoch 2 finished" in panel.log_tail.value, timeout=5)
    assert time.monotonic() - changed < 3.0
    assert state.logs_followed() == {"worker-1"}
    # the job ends: one last tail, then no more fetches
    state.set_status(status("succeeded", created, rstate="succeeded", finished=time.time()))
    wait_for(lambda: panel.done)
    calls = len(backend.calls)
    time.sleep(2.5)
    assert len(backend.calls) == calls
    # a replica chosen in a finished panel still shows its tail
    panel.replica_chooser.value = "ps-0"
    wait_for(lambda: "ps-0 booting" in panel.log_tail.value)
    panel.close()
    assert state.logs_followed() == set()
    # every backend call came from the monitor's log thread, none from the panel or this thread
    assert {thread for _, _, thread in backend.calls} == {"tfk8s-logs-demo-ps"}


def test_throttling_and_downsampling_with_100000_points(message_log):
    """A stream of 100,000 metric points: <= 4 widget messages per second, <= 2,000 points per series."""
    state = JobState("fast")
    state.set_status(status("running", time.time()))
    panel = JobPanel(FakeJob("fast", state))
    t_start = time.monotonic()
    total, batch = 100_000, 1_000

    def stream():
        for first in range(1, total + 1, batch):
            state.add_events(
                [
                    {
                        "v": 1,
                        "type": "metric",
                        "run": "r",
                        "seq": s,
                        "t": time.time(),
                        "epoch": s // 10_000,
                        "step": s,
                        "values": {"loss": 1.0 / s, "accuracy": 1 - 1.0 / s},
                    }
                    for s in range(first, first + batch)
                ]
            )
            time.sleep(0.03)

    feeder = threading.Thread(target=stream)
    feeder.start()
    feeder.join()
    stream_end = time.monotonic()
    wait_for(lambda: len(panel.lines.x) and panel.lines.x[-1] == total, timeout=5)
    latency = time.monotonic() - stream_end
    time.sleep(1.2)
    panel.close()

    ours = {id(w) for w in _all_widgets(panel)}
    times = sorted(t for t, w in message_log if id(w) in ours and t >= t_start)
    duration = max(times[-1] - t_start, 1.0)
    per_second = len(times) / duration
    window_max = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    assert window_max <= 4, (window_max, per_second)
    assert len(times) >= 4  # it did update while streaming
    assert latency < 1.0
    x = np.asarray(panel.lines.x)
    assert len(x) <= 2000 and x[0] == 1 and x[-1] == total and np.all(np.diff(x) > 0)
    assert np.atleast_2d(panel.lines.y).shape == (2, len(x))
    # kernel-side memory stays bounded whatever the run length
    assert all(len(s.x) < 2 * 2000 for s in state.step_series.values())
    assert state.n_points == total


def _all_widgets(root: W.Widget) -> list[W.Widget]:
    out, stack, seen = [], [root], set()
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        out.append(w)
        for name in w.keys:
            value = getattr(w, name, None)
            values = (
                value
                if isinstance(value, (list, tuple))
                else (value.values() if isinstance(value, dict) else [value])
            )
            stack.extend(v for v in values if isinstance(v, W.Widget))
    return out


def test_text_progress_prints_phase_and_epoch_lines_then_a_summary():
    lines: list[str] = []
    state = JobState("txt")
    created = time.time()
    progress = TextProgress(state, every=60, write=lines.append)
    state.set_status(status("pending", created, rstate="pending"))
    state.set_status(status("running", created))
    for event in training_events(epochs=3, steps=200):
        state.add_events([event])
    state.set_status(status("succeeded", created, rstate="succeeded", finished=created + 12))
    assert progress.finished
    progress_lines = [line for line in lines if line.startswith("[tfk8s]")]
    # one line per phase change and per epoch, not one per step
    assert 3 <= len(progress_lines) <= 6, progress_lines
    assert "running" in progress_lines[1] and "4/4 running replicas" in progress_lines[1]
    assert lines[-1].startswith("tfk8s job txt: succeeded after 12s (local, parameter_server)")
    assert "last: loss=0.001667, mae=0.003333, val_loss=0.0025" in lines[-1]


def test_merge_series_fills_gaps_and_thins():
    names, x, ys = merge_series(
        {"a": {"x": [1, 2, 3], "y": [1.0, 2.0, 3.0]}, "b": {"x": [2, 4], "y": [5.0, 6.0]}}, 10
    )
    assert names == ["a", "b"] and x == [1, 2, 3, 4]
    assert ys[0][:3] == [1.0, 2.0, 3.0] and math.isnan(ys[0][3])
    assert math.isnan(ys[1][0]) and ys[1][1] == 5.0 and ys[1][3] == 6.0
    names, x, ys = merge_series({"a": {"x": list(range(10_001)), "y": [0.0] * 10_001}}, 2000)
    assert len(x) <= 2000 and x[0] == 0 and x[-1] == 10_000


def test_settings_panel_form():
    launched = []

    def on_launch(options):
        if options["workers"] > 8:
            raise ValueError("workers is 9; this cluster has room for 8.")
        launched.append(options)
        state = JobState("form")
        state.set_status(JobStatus("form", "local", "multi_worker_mirrored"))
        return FakeJob("form", state)

    form = SettingsPanel({"workers": 2, "ps": 0, "backend": "local", "image": "tf:1", "cpu": None}, on_launch)
    assert "tfk8s-settings-panel" in form._dom_classes
    assert "tfk8s-launch-button" in form.launch_button._dom_classes
    assert form.options() == {
        "strategy": "auto",
        "ps": 0,
        "workers": 2,
        "gpus": 0,
        "backend": "local",
        "image": "tf:1",
    }
    form.fields["workers"].value = 9
    form.launch_button.click()
    assert "workers is 9; this cluster has room for 8." in form.message.value and not launched
    form.fields["workers"].value = 4
    form.fields["memory"].value = " 2Gi "
    form.launch_button.click()
    assert launched[-1]["workers"] == 4 and launched[-1]["memory"] == "2Gi"
    assert isinstance(form.job_panel, JobPanel) and form.children == (form.job_panel,)
    form.job_panel.close()


def test_a_busy_curve_does_not_starve_the_replica_table():
    state = JobState("busy")
    created = time.time()
    state.set_status(status("running", created, rstate="starting"))
    panel = JobPanel(FakeJob("busy", state))
    stop = threading.Event()

    def stream():
        step = 0
        while not stop.is_set():
            step += 1
            state.add_events(
                [
                    {
                        "v": 1,
                        "type": "metric",
                        "run": "r",
                        "seq": step,
                        "t": time.time(),
                        "epoch": 0,
                        "step": step,
                        "values": {"loss": 1.0 / step},
                    }
                ]
            )
            time.sleep(0.01)

    feeder = threading.Thread(target=stream)
    feeder.start()
    try:
        time.sleep(1.0)
        assert ">starting<" in panel.table.value
        state.set_status(status("running", created, rstate="running"))
        changed = time.monotonic()
        wait_for(lambda: panel.table.value.count(">running<") == 4, timeout=5)
        assert time.monotonic() - changed < 2.0
        assert len(panel.lines.x) > 50  # the curve kept moving meanwhile
    finally:
        stop.set()
        feeder.join()
        panel.close()


def test_pending_diagnosis_shows_in_the_header_and_table():
    state = JobState("stuck")
    created = time.time()
    reps = replicas("pending", created)
    reps[1].message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    state.set_status(
        JobStatus(
            "stuck",
            "kubernetes",
            "parameter_server",
            phase="pending",
            replicas=reps,
            created=created,
            message="chief-0 cannot be scheduled: not enough GPUs",
        )
    )
    panel = JobPanel(FakeJob("stuck", state), interval=0.05)
    wait_for(lambda: "cannot be scheduled" in panel.info.value)
    assert "3 Insufficient nvidia.com/gpu." in panel.table.value
    assert panel.error_box.layout.display == "none"
    panel.close()


@pytest.mark.parametrize("metrics", [["loss"], ["loss", "mae"]])
def test_a_single_point_is_drawn_for_one_or_several_metrics(metrics):
    state = JobState("one")
    state.set_status(status("running", time.time()))
    state.add_events(
        [
            {
                "v": 1,
                "type": "metric",
                "run": "r",
                "seq": 1,
                "t": time.time(),
                "epoch": 0,
                "step": 7,
                "values": {m: 0.5 for m in metrics},
            }
        ]
    )
    panel = JobPanel(FakeJob("one", state), start=False)
    assert list(panel.lines.labels) == metrics
    assert set(np.asarray(panel.lines.x).ravel()) == {7.0}
    assert np.atleast_2d(panel.lines.y).shape == (len(metrics), 2)
    state.add_events(
        [
            {
                "v": 1,
                "type": "metric",
                "run": "r",
                "seq": 2,
                "t": time.time(),
                "epoch": 0,
                "step": 8,
                "values": {m: 0.25 for m in metrics},
            }
        ]
    )
    panel.render(budget=None)
    assert list(panel.lines.x) == [7.0, 8.0]
    panel.close()


def test_a_short_job_draws_marked_points_on_whole_number_ticks():
    """Three steps, reported at two of them: the points are marked (a two-point line alone reads as
    nothing), the step axis ticks 1, 2, 3 (not 1.2, 1.4 ...), and the curve ends at the last step."""
    state = JobState("short-job")
    created = time.time()
    state.set_status(status("running", created))
    panel = JobPanel(state=state, start=False)
    state.add_events(
        [
            {"v": 1, "type": "metric", "run": "r", "seq": 1, "epoch": 0, "step": 1, "values": {"loss": 0.9}},
            {"v": 1, "type": "epoch", "run": "r", "seq": 2, "epoch": 0, "step": 3, "values": {"loss": 0.5}},
        ]
    )
    panel.render(budget=None)
    assert list(panel.lines.x) == [1, 3] and panel.lines.marker == "circle"
    assert list(panel._xaxis.tick_values) == [1, 2, 3] and panel._xaxis.tick_format == "d"
    panel.kind.value = "epoch"
    assert list(panel.lines.x) == [1, 1]  # one epoch: one marked point (doubled for bqplot)
    assert list(panel._xaxis.tick_values) == [1] and panel.lines.marker == "circle"
    panel.kind.value = "step"
    # a long run: plain lines and automatic ticks
    state.add_events(
        [
            {
                "v": 1,
                "type": "metric",
                "run": "r",
                "seq": 10 + i,
                "epoch": 1,
                "step": 3 + i,
                "values": {"loss": 1 / i},
            }
            for i in range(1, 200)
        ]
    )
    panel.render(budget=None)
    assert panel.lines.marker is None and list(panel._xaxis.tick_values) == []
    assert panel.lines.x[-1] == state.step == 202
    panel.close()


def test_a_job_that_fails_right_after_an_epoch_shows_the_epoch_it_failed_in():
    """Two epochs ended, then the job failed before the third reported a point: the panel, the progress
    line and the summary say epoch 3 (counted as Keras prints it), not the epoch before."""
    from tfk8s_jupyter.display_text import progress_text, summary_text

    state = JobState("demo-ps")
    created = time.time()
    state.set_status(status("running", created))
    panel = JobPanel(state=state, start=False)
    state.add_events(training_events(epochs=2, steps=5))
    panel.render(budget=None)
    assert "epoch 2 " in progress_text(state) + " " and "epoch 2" in panel.info.value
    state.add_events([{"v": 1, "type": "error", "run": "r1", "seq": 99, "message": "worker lost"}])
    state.set_status(status("failed", created, rstate="failed", finished=created + 5))
    panel.render(budget=None)
    assert "epoch 3" in panel.info.value and "epoch 2" not in panel.info.value
    assert " · epoch 3 · step 10 · " in progress_text(state)
    assert "reached epoch 3, step 10" in summary_text(state)
    panel.close()


def test_beside_the_panel_a_static_face_says_what_was_known_and_how_to_attach(shell):
    """Saved with the notebook: while the job runs, its last known state and ``%tfk8s_attach NAME`` (what a
    reopened notebook or a dead kernel's page shows instead of a stale panel); at the end, the summary."""
    from IPython.utils.capture import capture_output

    state = JobState("demo-ps")
    created = time.time()
    state.set_status(status("running", created))
    panel = JobPanel(state=state, start=False)
    with capture_output() as captured:
        panel.show()
        state.add_events(training_events(epochs=2, steps=5))
        panel.render(budget=None)
        state.set_status(status("succeeded", created, rstate="succeeded", finished=created + 9))
        panel.flush()
    faces = [o.data for o in captured.outputs if "text/html" in o.data and "text/plain" in o.data]
    running = [f for f in faces if "tfk8s-snapshot" in f["text/html"]]
    mid_run = [
        f["text/plain"] for f in running if "· running ·" in f["text/plain"] and "epoch 2" in f["text/plain"]
    ]
    assert mid_run and "%tfk8s_attach demo-ps shows the live panel again" in mid_run[-1]
    final = faces[-1]
    assert final["text/plain"].startswith("tfk8s job demo-ps: succeeded after")
    assert "%tfk8s_attach demo-ps" in final["text/plain"] and "tfk8s-summary" in final["text/html"]
    panel.close()


def test_the_log_tail_folds_start_up_noise_behind_show_all():
    from tfk8s_jupyter.monitor import LogTail

    state = JobState("demo-ps")
    created = time.time()
    state.set_status(status("running", created))
    panel = JobPanel(state=state, start=False)
    panel.render(budget=None)
    replica = panel.replica_chooser.value
    noise = "I0000 00:00:1796051095.596239   17194 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n"
    state.set_log(LogTail(replica, noise * 3 + "Epoch 1/3\n"))
    panel.render(budget=None)
    assert "Could not find cuda drivers" not in panel.log_tail.value
    assert "(3 TensorFlow start-up lines folded; show all to see them)" in panel.log_tail.value
    assert "Epoch 1/3" in panel.log_tail.value
    panel.log_all.value = True
    assert panel.log_tail.value.count("Could not find cuda drivers") == 3
    panel.close()


@pytest.mark.parametrize(
    "launches, shown",
    [
        (["warm", "warm", "warm", "warm"], "warm start"),
        (["kept", "kept", "kept", "kept"], "kept start"),
        (["cold", "warm", "cold", "warm"], "start: 2 warm, 2 cold"),
    ],
)
def test_the_header_says_how_the_replicas_started(launches, shown):
    state = JobState("launched")
    st = status("running", time.time())
    for r, launch in zip(st.replicas, launches, strict=True):
        r.launch = launch
    state.set_status(st)
    panel = JobPanel(FakeJob("launched", state), interval=0.05)
    try:
        wait_for(lambda: "tfk8s-launch" in panel.info.value)
        assert f'<span class="tfk8s-launch">{shown}</span>' in panel.info.value
    finally:
        panel.close()


def test_the_header_says_nothing_of_launch_when_no_replica_says():
    state = JobState("k8s")
    state.set_status(status("running", time.time()))
    panel = JobPanel(FakeJob("k8s", state), interval=0.05)
    try:
        wait_for(lambda: "elapsed" in panel.info.value)
        assert "start" not in panel.info.value.split("elapsed")[0]
        assert "tfk8s-launch" not in panel.info.value
    finally:
        panel.close()
