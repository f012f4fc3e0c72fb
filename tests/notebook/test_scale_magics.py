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
        with pytest.raises(UsageError, match="needs a checkpoint-restart, which is not built yet"):
            shell.run_line_magic("tfk8s_scale", "m-scale --workers 3")
        shell.run_line_magic("tfk8s_scale", "m-scale --workers 2")
        assert "has 2 worker(s) already; nothing changed" in capsys.readouterr().out
        assert len(job.status.history) == 1
    finally:
        job.stop()
