"""How long a claimer waits for a claimed process to accept its assignment: a process that runs (or waits
for a core on a loaded machine) is waited for, a stopped or sleeping one is taken for wedged after
``CLAIM_ACK`` seconds and killed, and nothing waits past ``CLAIM_LIMIT``. Stand-in pool processes (plain
Python, no TensorFlow) speak the pool's slot protocol: a FIFO, ``info.json``, an idle marker, ``accepted``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from local_helpers import wait_for

from tfk8s_jupyter.backends import local_pool
from tfk8s_jupyter.backends.local_pool import claim_replica, import_key
from tfk8s_jupyter.backends.local_processes import AnswerWatch, process_alive, process_state

RUNNER = [sys.executable, "-m", "tfk8s_jupyter.runner"]
ENV = {"TFK8S_STRATEGY": "multi_worker_mirrored", "TFK8S_ROLE": "worker", "TFK8S_INDEX": "0"}

# A stand-in pool process: publishes its slot, waits for "go", then computes for BUSY seconds (as a claimed
# process on a loaded machine waits for the cores) before it accepts, and ends with code 0.
STANDIN = """
import json, os, select, sys, time
from pathlib import Path
pool, slot, key, busy = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
os.mkfifo(slot / "go")
fd = os.open(slot / "go", os.O_RDWR | os.O_NONBLOCK)
stat = Path(f"/proc/{os.getpid()}/stat").read_text()
ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
(slot / "info.json").write_text(json.dumps({"pid": os.getpid(), "start_ticks": ticks}))
(pool / "idle" / f"{key}.{slot.name}").touch()
select.select([fd], [], [])
end = time.monotonic() + busy
while time.monotonic() < end:
    pass
(slot / "accepted").touch()
(slot / "exit.json").write_text(json.dumps({"code": 0}))
"""


def standin_pool(tmp_path: Path, busy: float) -> tuple[Path, subprocess.Popen]:
    pool = tmp_path / "pool"
    for part in ("idle", "claimed", "slots"):
        (pool / part).mkdir(parents=True)
    slot = pool / "slots" / "s1"
    slot.mkdir()
    key = import_key(ENV, RUNNER[0])
    proc = subprocess.Popen([sys.executable, "-c", STANDIN, str(pool), str(slot), key, str(busy)])
    wait_for(lambda: list((pool / "idle").iterdir()), 30, "the stand-in's idle marker")
    return pool, proc


def claim(pool: Path, tmp_path: Path):
    return claim_replica(pool, RUNNER, ENV, str(tmp_path), tmp_path / "replica.log")


def test_a_claimed_process_busy_longer_than_claim_ack_is_waited_for_not_killed(tmp_path):
    busy = local_pool.CLAIM_ACK + 2.0
    pool, proc = standin_pool(tmp_path, busy)
    started = time.monotonic()
    try:
        got = claim(pool, tmp_path)
        took = time.monotonic() - started
        assert got is not None and got.pid == proc.pid, (
            "a process computing its way to the answer was dropped"
        )
        assert took >= busy - 0.5
        assert proc.wait(30) == 0  # it went on to serve, never killed
        assert got.wait(10) == 0
    finally:
        proc.kill()


def test_a_stopped_claimed_process_is_killed_after_claim_ack_and_the_claim_gives_none(tmp_path):
    pool, proc = standin_pool(tmp_path, 0.0)
    os.kill(proc.pid, signal.SIGSTOP)
    started = time.monotonic()
    try:
        assert claim(pool, tmp_path) is None
        took = time.monotonic() - started
        assert local_pool.CLAIM_ACK - 0.5 <= took < local_pool.CLAIM_LIMIT
        assert proc.wait(10) == -signal.SIGKILL  # never left to serve late
        assert not (pool / "slots" / "s1" / "assignment.json").exists()  # it held the job's protocol key
        assert os.listdir(pool / "claimed") == []
    finally:
        proc.kill()


@pytest.mark.parametrize("how", ["sleeping", "stopped"])
def test_a_process_that_does_not_run_is_wedged_after_quiet_seconds(how):
    code = "import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_for(lambda: process_state(proc.pid) == "S", 10, "the sleeper to sleep")
        if how == "stopped":
            os.kill(proc.pid, signal.SIGSTOP)
        watch = AnswerWatch(proc.pid, quiet=0.6, limit=20)
        started = time.monotonic()
        while not watch.wedged():
            time.sleep(0.01)
        assert 0.6 <= time.monotonic() - started < 5
    finally:
        proc.kill()
        proc.wait()


def test_a_running_process_is_not_wedged_until_the_limit():
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        watch = AnswerWatch(proc.pid, quiet=0.5, limit=2.5)
        started = time.monotonic()
        while not watch.wedged():
            time.sleep(0.01)
        took = time.monotonic() - started
        assert 2.5 <= took < 4, took  # never taken for quiet while it computes
        assert process_alive(proc.pid)  # the watch only judges; the claimer kills
    finally:
        proc.kill()
        proc.wait()
