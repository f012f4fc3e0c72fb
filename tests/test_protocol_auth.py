"""Output that cannot lie: protocol lines count only when authenticated with the job's key, which the cell
never sees; a cell printing marker lines (made up, or copied from another job's log) changes only its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from local_helpers import tf_keras_cell

import tfk8s_jupyter as tk
from tfk8s_jupyter.protocol import MARKER, encode, parse_line, parse_lines

KEY = "0f" * 16
OTHER_KEY = "a1" * 16


# --------------------------------------------------------------------------- the line format
def test_a_line_authenticated_with_the_jobs_key_is_an_event_and_stays_short():
    line = encode("metric", KEY, run="r1", seq=3, t=1.5, step=40, values={"loss": 0.31})
    plain = encode("metric", run="r1", seq=3, t=1.5, step=40, values={"loss": 0.31})
    assert line.startswith(plain) and len(line) - len(plain) <= 26
    assert parse_line(line, KEY) == parse_line(plain) == parse_line(plain, None)
    assert parse_line(line, KEY)["values"] == {"loss": 0.31}
    # glued onto a Keras progress bar, with a trailing carriage return
    assert parse_line("12/40 [====>....] - loss: 0.3" + line + "\r", KEY)["seq"] == 3


def test_lines_without_the_jobs_key_are_plain_output():
    real = encode("end", KEY, run="r1", seq=9, status="succeeded")
    body = real[len(MARKER) : real.rindex(" #")]
    forged = [
        encode("end", run="r1", seq=9, status="succeeded"),  # made up, no authenticator
        encode("end", OTHER_KEY, run="r1", seq=9, status="succeeded"),  # another job's line
        MARKER + body.replace("succeeded", "failed!!!") + real[real.rindex(" #") :],  # tampered JSON
        real[:-1],  # a truncated authenticator
        MARKER + body + " #" + "0" * 24,  # a guessed one
        real.replace(" #", "  #"),
    ]
    for line in forged:
        assert parse_line(line, KEY) is None, line
    assert parse_lines([*forged, real], KEY) == [parse_line(real, KEY)]


def test_a_job_recorded_without_a_key_accepts_unauthenticated_lines():
    lines = [encode("metric", run="r", seq=1, values={"loss": 1.0}), encode("end", KEY, run="r", seq=2)]
    assert [e["seq"] for e in parse_lines(lines, "")] == [1, 2]
    assert [e["seq"] for e in parse_lines(lines, None)] == [1, 2]


def test_the_runner_takes_the_key_out_of_the_environment_and_proc_environ():
    probe = textwrap.dedent(
        """
        import os, subprocess, sys
        from tfk8s_jupyter.replica_output import take_protocol_key
        key = take_protocol_key()
        environ = open("/proc/self/environ", "rb").read()
        child = subprocess.run(["sh", "-c", "echo $TFK8S_PROTOCOL_KEY"], capture_output=True, text=True)
        print(key, "TFK8S_PROTOCOL_KEY" in os.environ, b"s3cr3tkey" in environ, b"AFTER=yes" in environ,
              os.environ["AFTER"], repr(child.stdout.strip()))
        """
    )
    env = {"PATH": os.environ["PATH"], "BEFORE": "1", "TFK8S_PROTOCOL_KEY": "s3cr3tkey", "AFTER": "yes"}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["s3cr3tkey", "False", "False", "True", "yes", "''"]


# --------------------------------------------------------------------------- local jobs (stand-in runner)
def _fakes(copied: str = "") -> str:
    """Cell code printing made-up marker lines, a copy of another job's log lines, and a fake ``end``."""
    made_up = [
        encode("metric", run="fake", seq=1, epoch=0, step=1, values={"loss": 12345.0}),
        encode("epoch", OTHER_KEY, run="fake", seq=2, epoch=0, step=1, values={"loss": 12345.0}),
        encode("end", run="fake", seq=3, status="succeeded"),
    ]
    return f"import sys\nfor _line in {made_up!r} + {copied.splitlines()!r}:\n    print(_line, flush=True)\n"


def test_a_copy_of_another_jobs_log_and_made_up_lines_change_nothing_but_the_log(standin):
    first = tk.submit("EPOCHS = 1\nSTEPS = 3", workers=1, name="first")
    assert first.wait(timeout=60) == "succeeded"
    first_log = first.logs("worker-0")
    assert parse_lines(first_log, first.spec.protocol_key)  # it holds real, authenticated lines
    second = tk.submit(_fakes(first_log) + "EPOCHS = 1\nSTEPS = 2", workers=1, name="second")
    assert second.wait(timeout=60) == "succeeded"
    events = second.events()
    assert {e["run"] for e in events} == {events[0]["run"]} and events[0]["type"] == "start"
    assert events[0]["run"] not in {e["run"] for e in first.events()}
    assert [e["step"] for e in events if e["type"] == "metric"] == [1, 2]
    assert "12345" in second.logs("worker-0")  # the lines are the cell's output, kept in its log


def test_a_fake_end_line_never_makes_a_failing_job_succeed(standin):
    cell = _fakes() + "raise ValueError('the cell broke after printing a fake end')\n"
    job = tk.submit(cell, workers=1, name="liar")
    assert job.wait(timeout=60) == "failed"
    assert "ValueError: the cell broke" in job.status.message
    assert [e["type"] for e in job.events()] == ["start", "error"]


def test_a_job_recorded_without_a_key_still_reads_its_lines(standin, tfk8s_home):
    job = tk.submit("EPOCHS = 1\nSTEPS = 3", workers=1, name="legacy", protocol_key="")
    assert job.wait(timeout=60) == "succeeded"
    assert json.loads((tfk8s_home / "legacy" / "spec.json").read_text())["protocol_key"] == ""
    assert [e["step"] for e in job.events() if e["type"] == "metric"] == [1, 2, 3]


# --------------------------------------------------------------------------- a real TensorFlow job
@pytest.mark.tf
@pytest.mark.timeout(300)
def test_tf_cell_printing_fake_metrics_and_end_then_raising_is_failed_with_no_fake_point():
    cell = (
        tf_keras_cell(epochs=1, steps=5)
        + textwrap.dedent(
            """
            import os
            assert "TFK8S_PROTOCOL_KEY" not in os.environ, "the cell sees the protocol key"
            _env = open("/proc/self/environ", "rb").read().split(b"\\0")
            assert all(v == b"TFK8S_PROTOCOL_KEY=" for v in _env if v.startswith(b"TFK8S_PROTOCOL_KEY="))
            """
        )
        + _fakes()
        + "raise RuntimeError('broken after a fake end')\n"
    )
    job = tk.submit(cell, workers=1, name="tf-liar", setup_timeout=180, max_restarts=0)
    assert job.wait(timeout=240) == "failed"
    assert "RuntimeError: broken after a fake end" in job.status.message, job.status.message
    events = job.events()
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "error" and "end" not in types
    assert len({e["run"] for e in events}) == 1
    values = [v for e in events for v in (e.get("values") or {}).values()]
    assert values and 12345.0 not in values
    assert "12345" in job.logs("worker-0")
