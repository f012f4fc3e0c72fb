"""The Python API end to end on the local backend: submit, Job, list_jobs, attach — also from new processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from local_helpers import hooks_prelude, tf_keras_cell, wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.base import JobNotFound
from tfk8s_jupyter.backends.local import LocalBackend, process_alive

REPO = Path(__file__).resolve().parent.parent


def _python(script: str, timeout: float = 120, prelude: str = "") -> subprocess.CompletedProcess:
    """Run ``script`` in a brand-new Python process with the test's environment (TFK8S_HOME included)."""
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


def test_submit_returns_at_once_and_the_job_handle_answers(standin):
    started = time.monotonic()
    job = tk.submit("EPOCHS = 2\nSTEPS = 10\nSTEP_SECONDS = 0.05", ps=1, workers=2, name="handle")
    assert time.monotonic() - started < 2.0
    assert job.name == "handle" and job.phase in ("pending", "running")
    assert job.spec.strategy == "parameter_server" and job.spec.ps == 1
    assert job.wait(timeout=60) == "succeeded"
    status = job.status
    assert [(r.role, r.index) for r in status.replicas] == [
        ("ps", 0),
        ("chief", 0),
        ("worker", 0),
        ("worker", 1),
    ]
    assert all(r.pid for r in status.replicas)
    points = job.metrics()
    assert {p["kind"] for p in points} == {"step", "epoch"}
    assert all(set(p) == {"kind", "epoch", "step", "t", "values"} for p in points)
    assert "@tfk8s" in job.logs()  # the reporting replica by default
    assert job.logs("worker-1", tail=1).strip() != ""
    assert "handle" in repr(job) and "succeeded" in repr(job)


def test_wait_times_out_with_a_sentence_and_the_job_keeps_running(standin):
    job = tk.submit("EPOCHS = 100\nSTEPS = 10\nSTEP_SECONDS = 0.1", workers=1, name="slow")
    with pytest.raises(TimeoutError, match=r"job slow is still (pending|running) after 0.5 s; wait longer"):
        job.wait(timeout=0.5)
    assert not job.status.done
    assert job.stop().phase == "stopped"
    assert job.wait(timeout=5) == "stopped"


def test_list_jobs_newest_first_and_by_owner(standin, monkeypatch):
    first = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="first")
    time.sleep(0.05)
    second = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="second")
    monkeypatch.setenv("JUPYTERHUB_USER", "someone-else")
    third = tk.submit("EPOCHS = 1\nSTEPS = 2", workers=1, name="third")
    monkeypatch.delenv("JUPYTERHUB_USER")
    for job in (first, second, third):
        job.wait(timeout=60)
    assert [s.name for s in tk.list_jobs()] == ["second", "first"]
    assert [s.name for s in tk.list_jobs(owner="someone-else")] == ["third"]
    assert tk.list_jobs()[0].to_json()["counts"] == {"succeeded": 1}


def test_attach_to_an_unknown_job_is_a_clear_error():
    with pytest.raises(JobNotFound, match="there is no local job named 'ghost'"):
        tk.attach("ghost")


def test_a_job_outlives_the_process_that_submitted_it_and_a_new_process_gets_its_history(standin):
    out = _python(
        """
        import json, tfk8s_jupyter as tk
        job = tk.submit("EPOCHS = 3\\nSTEPS = 10\\nSTEP_SECONDS = 0.1", ps=1, workers=1, name="survivor")
        print(json.dumps({"pid": job.status.replica("chief-0").pid}))
        """,
        prelude=hooks_prelude(LocalBackend.test_hooks),
    )
    assert out.returncode == 0, out.stderr
    # The submitting process is gone; the job goes on.
    job = tk.attach("survivor")
    assert job.wait(timeout=60) == "succeeded", job.status.message
    out = _python(
        """
        import json, tfk8s_jupyter as tk
        job = tk.attach("survivor")
        state = job.state
        job.monitor().done.wait(30)
        print(json.dumps({"phase": job.phase, "metrics": job.metrics(), "points": state.n_points,
                          "epochs": state.series("epoch")["loss"]["x"]}))
        """
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["phase"] == "succeeded"
    assert seen["metrics"] == job.metrics() and len(seen["metrics"]) >= 30
    assert seen["points"] == len(seen["metrics"]) and seen["epochs"] == [0, 1, 2]


def test_stop_from_another_process(standin):
    job = tk.submit("EPOCHS = 100\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=1, name="remote-stop")
    wait_for(lambda: job.metrics(), 60, "a metric point")
    pids = [r.pid for r in job.status.replicas]
    out = _python("import tfk8s_jupyter as tk; print(tk.attach('remote-stop').stop().phase)")
    assert out.stdout.strip() == "stopped", out.stderr
    assert job.phase == "stopped" and not any(process_alive(p) for p in pids)


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_attach_from_a_new_process_gives_the_whole_metric_history():
    out = _python(
        f"""
        import tfk8s_jupyter as tk
        tk.submit({tf_keras_cell(epochs=4, steps=40, step_sleep=0.02)!r}, ps=1, workers=2, name="tf-attach",
                  metric_interval=0.2, setup_timeout=180)
        """
    )
    assert out.returncode == 0, out.stderr
    job = tk.attach("tf-attach")
    wait_for(lambda: job.metrics(), 240, "the first metric point")
    # A new process attaches while training runs, follows it to the end and sees every point.
    follower = _python(
        """
        import json, tfk8s_jupyter as tk
        job = tk.attach("tf-attach")
        monitor = job.monitor()
        monitor.done.wait(300)
        state = monitor.state
        print(json.dumps({"phase": state.status.phase, "points": state.n_points,
                          "epochs": state.series("epoch")["loss"]}))
        """,
        timeout=400,
    )
    assert follower.returncode == 0, follower.stderr
    seen = json.loads(follower.stdout.strip().splitlines()[-1])
    assert seen["phase"] == "succeeded"
    assert seen["points"] == len(job.metrics())
    assert seen["epochs"]["x"] == [0, 1, 2, 3]
    losses = seen["epochs"]["y"]
    assert losses[-1] < losses[0]
