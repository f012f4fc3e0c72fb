"""A monitor that never dies: errors while following a local job (a backend failing, a stream dropped
mid-way, an observer raising) become a transient note, and the panel's state ends with every point once.
Incremental reads of the record (the monitor's catch-up, the REST list) give what full reads give."""

from __future__ import annotations

import json
import threading
import time

from local_helpers import wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.base import BackendUnavailable
from tfk8s_jupyter.backends.local import LocalBackend
from tfk8s_jupyter.monitor import JobState, Monitor
from tfk8s_jupyter.protocol import event_key
from tfk8s_jupyter.records import JobRecord
from tfk8s_jupyter.server.manager import JobsManager, job_model, summarize_events


class FlakyLocal(LocalBackend):
    """The local backend with failures injected where a remote backend has them: the first ``watch``
    calls fail like an API 5xx, a later one delivers part of a batch then drops, ``get`` fails once."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.watch_calls = 0
        self.get_failures = 1

    def get(self, name):
        if self.watch_calls and self.get_failures:
            self.get_failures -= 1
            raise BackendUnavailable("the API server answered 503 Service Unavailable")
        return super().get(name)

    def watch(self, name, on_status, on_events, stop, poll=0.25):
        self.watch_calls += 1
        if self.watch_calls <= 2:
            raise BackendUnavailable("the API server answered 500 Internal Server Error")
        if self.watch_calls == 3:
            delivered = []

            def half(events):
                on_events(events[: len(events) // 2 + 1])
                delivered.append(1)
                raise ConnectionResetError("the stream was dropped")

            return super().watch(name, on_status, half, stop, poll)
        return super().watch(name, on_status, on_events, stop, poll)


def test_monitor_survives_backend_errors_and_ends_with_every_point_once(standin):
    backend = FlakyLocal()
    job = tk.submit("EPOCHS = 3\nSTEPS = 20\nSTEP_SECONDS = 0.02", workers=1, name="flaky")
    notes: list[str] = []
    state = JobState("flaky")

    def broken_face(s: JobState) -> None:
        if s.note:
            notes.append(s.note)
        raise RuntimeError("a face that breaks on every update")

    state.observe(broken_face)
    monitor = Monitor(backend, "flaky", state).start()
    assert monitor.done.wait(90), "the monitor never finished"
    assert job.wait(timeout=30) == "succeeded"
    assert state.status.phase == "succeeded" and state.note is None and not state.error
    assert backend.watch_calls >= 4
    assert any("500 Internal Server Error" in n and "retrying in" in n for n in notes), notes
    assert any("dropped" in n for n in notes), notes
    recorded = job.events()
    assert state.n_points == sum(e["type"] in ("metric", "epoch") for e in recorded) == 63
    x, _ = state.step_series["loss"].points(10_000)
    assert x == sorted(set(x)) and x[-1] == 60


def test_a_transient_note_is_shown_among_the_status_notes_and_cleared_by_the_next_status(standin):
    job = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="noted")
    job.wait(timeout=30)
    state = JobState("noted")
    status = LocalBackend().get("noted")
    state.set_status(status)
    state.set_note("following the job failed (503); retrying in 1 s")
    assert state.status.notes[-1] == "following the job failed (503); retrying in 1 s"
    assert status.notes == []  # the backend's object is left as it was
    state.set_status(LocalBackend().get("noted"))
    assert state.note is None and "retrying" not in " ".join(state.status.notes)


def test_a_monitor_attached_to_a_long_job_folds_its_history_in_batches(tfk8s_home, standin):
    job = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="long")
    job.wait(timeout=30)
    record = JobRecord("long", tfk8s_home)
    extra = [
        {"v": 1, "type": "metric", "run": "later", "seq": i, "step": i, "values": {"loss": 1 / i}}
        for i in range(1, 30_001)
    ]
    record.append_events(extra)
    batches = [len(b) for b in record.iter_events(batch_bytes=64 << 10)]
    assert len(batches) > 10 and sum(batches) == len(record.read_events())
    state = JobState("long")
    monitor = Monitor(LocalBackend(), "long", state).start()
    assert monitor.done.wait(60)
    assert state.n_points == sum(e["type"] in ("metric", "epoch") for e in record.read_events())
    assert len(state.step_series["loss"].x) <= 2 * state.max_points


def test_incremental_reads_of_a_growing_record_equal_a_full_read(tfk8s_home):
    record = JobRecord("grow", tfk8s_home)
    record.dir.mkdir(parents=True)
    offset, seen = 0, []
    for chunk in range(5):
        events = [{"type": "metric", "run": "r", "seq": chunk * 100 + i, "step": i} for i in range(1, 101)]
        record.append_events(events)
        with open(record.events_path, "a") as f:  # a line being written at the moment of the read
            f.write('{"type":"metric","run":"r","seq":')
        new, offset = record.read_events_from(offset)
        seen += new
        text = record.events_path.read_text()
        record.events_path.write_text(text[: text.rindex("\n") + 1])
    assert [event_key(e) for e in seen] == [event_key(e) for e in record.read_events()]
    assert len(seen) == 500


def test_the_rest_list_reads_only_what_was_appended_and_matches_a_full_read(standin, tfk8s_home):
    job = tk.submit("EPOCHS = 4\nSTEPS = 25\nSTEP_SECONDS = 0.03", workers=1, name="polled")
    manager = JobsManager(backends=["local"])
    reads: list[int] = []
    original = JobRecord.read_events_from

    def counting(self, offset=0, max_bytes=None):
        events, new_offset = original(self, offset, max_bytes)
        reads.append(offset)
        return events, new_offset

    JobRecord.read_events_from = counting
    try:
        models = []
        while not job.status.done:
            models.append(manager.list_jobs()["jobs"][0])
            time.sleep(0.2)
        models.append(manager.list_jobs()["jobs"][0])
        detail = manager.get_job("polled")
    finally:
        JobRecord.read_events_from = original
        manager.close()
    assert len(models) > 5 and max(reads) > 0  # later polls start where the previous one ended
    full = summarize_events(JobRecord("polled", tfk8s_home).read_events())
    assert models[-1] == json.loads(json.dumps(job_model(job.status, full, None)))
    assert detail["n_points"] == full.n_points == 104
    assert detail["series"]["step"] == full.series("step", 2000)


def test_an_observer_that_raises_never_stops_the_state_updates():
    state = JobState("x")
    calls = threading.Event()

    def bad(_):
        calls.set()
        raise ValueError("boom")

    state.observe(bad)
    event = {"type": "metric", "run": "r", "seq": 1, "step": 1, "values": {"loss": 1.0}}
    assert state.add_events([event]) == 1 and calls.is_set()
    assert state.add_events([dict(event, seq=2, step=2)]) == 1
    wait_for(lambda: state.n_points == 2, 1, "both points")
