"""--deadline on the local backend: the supervisor ends a job that runs past it, with a clear message, and
leaves no process behind (stand-in runner: fast, no TensorFlow)."""

from __future__ import annotations

import pytest
from local_helpers import wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.local import live_processes, process_alive
from tfk8s_jupyter.records import JobRecord


def test_a_deadline_exceeded_ends_the_local_job_with_a_clear_message(standin):
    job = tk.submit("EPOCHS = 1\nSTEPS = 100000\nSTEP_SECONDS = 0.05", workers=2, name="dl-local", deadline=4)
    assert job.wait(timeout=90) == "failed"
    status = job.status
    assert "ran past its deadline of 4 s" in status.message and "--deadline" in status.message, status.message
    for r in status.replicas:
        assert not process_alive(r.pid), r
    wait_for(lambda: not live_processes(JobRecord(job.name)), 10, "the supervisor to exit")


def test_a_job_within_its_deadline_succeeds(standin):
    job = tk.submit("EPOCHS = 1\nSTEPS = 4\nSTEP_SECONDS = 0.05", workers=1, name="dl-ok", deadline="10m")
    assert job.wait(timeout=90) == "succeeded", job.status.message


def test_a_bad_deadline_is_refused_before_anything_starts(standin):
    with pytest.raises(tk.SpecError, match="deadline '-1m' is not a positive duration"):
        tk.submit("pass", workers=1, name="dl-bad", deadline="-1m")
    assert not JobRecord("dl-bad").exists()
