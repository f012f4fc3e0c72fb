"""Following a long Kubernetes job holds a bounded part of its log (test API server + test kubelet): a log
stream's server chunks (a whole log at once after a reconnect) are read in pieces of at most 64 KiB, and the
follower reads the reporting replica's log once, not again from its start when the stream ends before the
pod watch shows the container ended (each re-read parsed the whole log again: 100+ MB at the end of a
1,000,000-point job); a panel far behind the job when it ends still gets every point."""

from __future__ import annotations

import threading
import time
import tracemalloc

import pytest
from test_backend import submit

from tfk8s_jupyter.backends.kubernetes import connection
from tfk8s_jupyter.backends.kubernetes.connection import STREAM_READ, LineStream
from tfk8s_jupyter.monitor import JobState, Monitor
from tfk8s_jupyter.spec import make_spec

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(180)]

POINTS = 30_000  # ~4 MB of log


def _ended_pod(apiserver, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in apiserver.objects("pods"):
            if p["status"].get("phase") in ("Succeeded", "Failed"):
                return p["metadata"]["name"]
        time.sleep(0.1)
    raise AssertionError(f"no pod ended within {timeout} s")


def test_a_whole_log_sent_in_one_chunk_is_read_in_bounded_pieces(apiserver, standin_cluster, backend):
    spec = make_spec(
        f"EPOCHS = 3\nSTEPS = {POINTS // 3}\nSTEP_SECONDS = 0", workers=1, name="long", backend="kubernetes"
    )
    submit(backend, spec)
    pod = _ended_pod(apiserver)  # nobody followed it: its whole log comes as one chunk on the next stream
    cluster = backend.cluster()
    resp = cluster.follow_log("default", pod)
    # what the client side holds (the server shares this process): allocations made by the response reader
    client_side = [
        tracemalloc.Filter(True, connection.__file__),
        tracemalloc.Filter(True, "*/urllib3/*"),
        tracemalloc.Filter(True, "*/http/client.py"),
    ]
    held = []
    tracemalloc.start()
    try:
        n = size = longest = 0
        with LineStream(resp, threading.Event()) as lines:
            for line in lines:
                n += 1
                size += len(line) + 1
                longest = max(longest, len(line))
                if n % 2000 == 0:  # what the reader holds between two lines
                    snap = tracemalloc.take_snapshot().filter_traces(client_side)
                    held.append(sum(t.size for t in snap.traces))
    finally:
        tracemalloc.stop()
    assert n > POINTS and size > 3_000_000, (n, size)  # the log was read whole, every line
    # one read and the line it ends in: about 64 KiB, never the log (MB), whatever the server's chunk
    assert held and max(held) < 4 * STREAM_READ, f"{max(held):,} bytes held reading a {size:,}-byte log"


def test_the_reporting_replicas_log_is_streamed_once_whatever_the_pod_watch_shows_first(
    apiserver, standin_cluster, backend
):
    spec = make_spec(
        f"EPOCHS = 3\nSTEPS = {POINTS // 3}\nSTEP_SECONDS = 0", workers=1, name="long", backend="kubernetes"
    )
    submit(backend, spec)
    cluster = backend.cluster()
    streams: list[str] = []
    follow_log = cluster.follow_log

    def counted(namespace, pod, **kwargs):
        streams.append(pod)
        return follow_log(namespace, pod, **kwargs)

    cluster.follow_log = counted  # the follower's Cluster: the backend keeps one per context
    state = JobState("long")
    monitor = Monitor(backend, "long", state).start()
    assert monitor.done.wait(150), "the monitor never finished"
    assert state.status.phase == "succeeded", state.status.message
    assert state.n_points >= POINTS
    # its stream ends when the container exits, before the kubelet reports it ended: not a reason to read the
    # whole log again
    assert len(streams) == 1, streams


def test_a_panel_far_behind_the_job_still_gets_every_point(apiserver, standin_cluster, backend):
    # a face slow enough that the follower is still ~40 s behind when the job ends: the follower stops waiting
    # for its stream after 30 s and the end of the job copies the rest from the log; the state gets it too
    points = 2_000
    spec = make_spec(
        f"EPOCHS = 2\nSTEPS = {points // 2}\nSTEP_SECONDS = 0", workers=1, name="slow", backend="kubernetes"
    )
    submit(backend, spec)
    state = JobState("slow")
    state.observe(lambda s: time.sleep(0.02))
    monitor = Monitor(backend, "slow", state).start()
    assert monitor.done.wait(170), "the monitor never finished"
    assert state.status.phase == "succeeded", state.status.message
    recorded = sum(e["type"] in ("metric", "epoch") for e in backend.events("slow"))
    assert recorded >= points
    assert state.n_points == recorded
    x, _ = state.step_series["loss"].points(10_000)
    assert x == sorted(set(x)) and x[-1] >= points - 1
