"""``%tfk8s_scale NAME --workers N`` on a real InteractiveShell, jobs on the stand-in runner."""

from __future__ import annotations

import time

import pytest
from IPython.core.error import UsageError

import tfk8s_jupyter as tk


def test_scale_magic_removes_a_worker_live_and_refuses_in_one_sentence(shell, capsys, standin):
    job = tk.submit("EPOCHS = 30\nSTEPS = 10\nSTEP_SECONDS = 0.1", ps=1, workers=3, name="m-scale")
    try:
        deadline = time.monotonic() + 60
        while not (job.status.phase == "running" and job.metrics()) and time.monotonic() < deadline:
            time.sleep(0.1)
        capsys.readouterr()
        shell.run_line_magic("tfk8s_scale", "m-scale --workers 2")
        out = capsys.readouterr().out
        assert out == "tfk8s: job m-scale scaled down from 3 to 2 worker(s), live (worker-2 removed).\n"
        assert job.status.replica("worker-2").state == "removed"
        with pytest.raises(UsageError, match="not a whole number of workers"):
            shell.run_line_magic("tfk8s_scale", "m-scale --workers two")
        shell.run_line_magic("tfk8s_scale", "m-scale --workers 2")
        assert "has 2 worker(s) already; nothing changed" in capsys.readouterr().out
        assert len(job.status.history) == 1
        # more workers: a checkpoint-restart, under way when the magic returns
        while (
            not any(e.get("type") == "checkpoint" for e in job.events()) and time.monotonic() < deadline + 60
        ):
            time.sleep(0.1)
        shell.run_line_magic("tfk8s_scale", "m-scale --workers 3")
        assert capsys.readouterr().out == (
            "tfk8s: job m-scale is resizing from 2 to 3 worker(s) by checkpoint-restart: waiting for the next "
            "checkpoint; job.status.history records it when done.\n"
        )
        deadline = time.monotonic() + 60
        while len(job.status.history) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [(h["from"], h["to"], h["how"]) for h in job.status.history] == [
            (3, 2, "live"),
            (2, 3, "restart"),
        ]
        assert job.status.replica("worker-2").state != "removed"
    finally:
        job.stop()
