"""Following a Kubernetes job through faults (test API server + test kubelet): API errors (the first relist
included), expired watches, dropped log streams and a raising observer leave the panel's state with every
point once; the reporting replica's log copy grows by appending across reconnects and restarts; a cell
printing marker lines changes only its log."""

from __future__ import annotations

import threading
import time

import pytest
from local_helpers import tf_keras_cell
from test_backend import Follow, _pod_of, _wait_events, spec_of, submit

from tfk8s_jupyter.monitor import JobState, Monitor
from tfk8s_jupyter.protocol import encode, event_key, parse_lines
from tfk8s_jupyter.spec import make_spec

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(180)]


def test_monitor_survives_api_errors_expired_watches_dropped_streams_and_a_raising_observer(
    apiserver, standin_cluster, backend
):
    submit(backend, spec_of(code="STEPS = 15\nEPOCHS = 3\nSTEP_SECONDS = 0.05"))
    state = JobState("job1")
    state.set_status(backend.get("job1"))  # so the next pod list is the follower's first relist
    apiserver.fail(500, verb="list", resource="pods", times=2)
    apiserver.fail(503, verb="watch", resource="pods", times=2, skip=1)
    apiserver.drop_streams(after=9, verb="get", resource="pods", subresource="log", times=4)
    notes: list[str] = []

    def broken_face(s: JobState) -> None:
        notes.extend(n for n in (s.status.notes if s.status else []) if "retrying" in n)
        raise RuntimeError("a face that breaks on every update")

    state.observe(broken_face)
    monitor = Monitor(backend, "job1", state).start()
    _wait_events(backend, "job1", "metric", n=5)
    apiserver.expire()  # the watch resumes from a compacted resourceVersion: 410 Gone, relist
    assert monitor.done.wait(120), "the monitor never finished"
    assert state.status.phase == "succeeded", state.status.message
    assert apiserver.gone_sent >= 1
    assert any("answered 500 to list pods" in n for n in notes), notes
    assert any("answered 503 to watch pods" in n for n in notes), notes
    assert not any("retrying" in n for n in state.status.notes)  # the note went with the next status
    truth = parse_lines(backend.logs("job1", "chief-0"), backend.spec("job1").protocol_key)
    assert [event_key(e) for e in truth] == [event_key(e) for e in backend.events("job1")]
    assert state.n_points == sum(e["type"] in ("metric", "epoch") for e in truth) == 48
    x, _ = state.step_series["loss"].points(10_000)
    assert x == sorted(set(x)) and x[-1] == 45


def test_reconnects_and_a_restart_append_to_the_reporting_replicas_copy(apiserver, standin_cluster, backend):
    apiserver.drop_streams(after=25, verb="get", resource="pods", subresource="log", times=4)
    spec = make_spec(
        "STEPS = 30\nEPOCHS = 5\nSTEP_SECONDS = 0.08", workers=2, name="appended", backend="kubernetes"
    )
    submit(backend, spec)
    f = Follow(backend, "appended")
    copy = backend.record("appended").log_path("worker-0")
    sizes: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            try:
                sizes.append(copy.stat().st_size)
            except FileNotFoundError:
                pass
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _wait_events(backend, "appended", "checkpoint")
    deadline = time.monotonic() + 30
    while _pod_of(apiserver, "worker", 1) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    standin_cluster.kill("default", _pod_of(apiserver, "worker", 1))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the restarted run reports again
        if sum(e["type"] == "start" for e in backend.events("appended")) >= 2 and backend.events("appended")[
            -1
        ]["type"] in ("metric", "epoch"):
            break
        time.sleep(0.1)
    text = copy.read_text()  # while the job runs: the follower's copy, before any capture at the end
    sampling.set()
    sampler.join()
    assert backend.get("appended").phase == "running"
    assert sizes and sizes == sorted(sizes), "the copy was truncated on a reconnect"
    attempts = text.split("---- tfk8s: worker-0 restarted (")
    assert len(attempts) == 2 and attempts[1].startswith("1 of 3) ----"), text[-2000:]
    key = spec.protocol_key
    first, second = parse_lines(attempts[0], key), parse_lines(attempts[1], key)
    assert first[0]["type"] == "start" and second[0]["type"] == "start"
    keys = [event_key(e) for e in first + second]
    assert len(keys) == len(set(keys))  # no line copied twice across the reconnects
    assert keys == [event_key(e) for e in backend.events("appended")][: len(keys)]
    assert f.wait().phase == "succeeded"
    assert len([r for r in apiserver.request_log if r["subresource"] == "log"]) >= 5


def test_a_cell_printing_a_copy_of_another_jobs_log_and_a_fake_end_then_raising_fails(
    apiserver, standin_cluster, backend
):
    submit(backend, spec_of("first", code="STEPS = 3\nEPOCHS = 1", ps=0, workers=1))
    assert Follow(backend, "first").wait().phase == "succeeded"
    copied = backend.logs("first", "worker-0").splitlines()
    assert parse_lines(copied, backend.spec("first").protocol_key)
    made_up = [
        encode("metric", run="fake", seq=1, epoch=0, step=1, values={"loss": 12345.0}),
        encode("end", run="fake", seq=2, status="succeeded"),
    ]
    cell = (
        f"for _line in {copied!r} + {made_up!r}:\n    print(_line, flush=True)\n"
        "raise ValueError('the cell broke after printing a fake end')\n"
    )
    submit(backend, spec_of("liar", code=cell, ps=0, workers=1, max_restarts=0))
    final = Follow(backend, "liar").wait()
    assert final.phase == "failed", final.message
    events = backend.events("liar")
    assert [e["type"] for e in events] == ["start", "error"]
    assert events[1]["message"].startswith("ValueError: the cell broke")
    assert "12345" in backend.logs("liar", "worker-0")  # the lines are the cell's output, in its log


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_cell_printing_fake_metrics_and_end_then_raising_fails_with_no_fake_point(
    apiserver, make_cluster, backend
):
    make_cluster()  # the real runner, as shipped in the ConfigMap
    made_up = [
        encode("metric", run="fake", seq=1, epoch=0, step=1, values={"loss": 12345.0}),
        encode("epoch", "a1" * 16, run="fake", seq=2, epoch=0, step=1, values={"loss": 12345.0}),
        encode("end", run="fake", seq=3, status="succeeded"),
    ]
    cell = (
        tf_keras_cell(epochs=1, steps=5)
        + "import os\n"
        + "assert 'TFK8S_PROTOCOL_KEY' not in os.environ, 'the cell sees the protocol key'\n"
        + f"for _line in {made_up!r}:\n    print(_line, flush=True)\n"
        + "raise RuntimeError('broken after a fake end')\n"
    )
    spec = make_spec(
        cell, ps=0, workers=1, name="k8s-liar", backend="kubernetes", max_restarts=0, setup_timeout=300
    )
    submit(backend, spec)
    final = Follow(backend, "k8s-liar").wait(timeout=480)
    assert final.phase == "failed", final.message
    events = backend.events("k8s-liar")
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "error" and "end" not in types, types
    assert events[-1]["message"].startswith("RuntimeError: broken after a fake end"), events[-1]
    assert len({e["run"] for e in events}) == 1
    values = [v for e in events for v in (e.get("values") or {}).values()]
    assert values and 12345.0 not in values
    log = backend.logs("k8s-liar", "worker-0")
    assert "12345" in log and "tensorflow" in log.lower()
