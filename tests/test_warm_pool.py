"""The local backend's warm replica pool, with real TensorFlow: a job's replicas become pool processes
(their pids), only an assignment with the pool process's import-time environment is served warm, a pool
process killed or frozen while idle, or killed while being claimed, means a cold start, two claimers never
share a process, ``warm_pool=0`` starts nothing, and the pool ends with its owner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from local_helpers import keras_cell, tf_keras_cell, wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends import local_pool
from tfk8s_jupyter.backends.local import LocalBackend, process_alive
from tfk8s_jupyter.backends.local_env import pool_envs
from tfk8s_jupyter.backends.local_pool import import_key, list_pool, owned_pool, wait_refill_moment
from tfk8s_jupyter.config import TFK8s, set_current_config
from tfk8s_jupyter.spec import make_spec

REPO = Path(__file__).resolve().parents[1]


def idle_pids(home) -> set[int]:
    return {r["pid"] for r in list_pool(home) if r["state"] == "idle"}


def use_pool(size=None, idle=600.0) -> None:
    """The pool as configured, with kept replicas off: these tests are about pool processes."""
    set_current_config(TFK8s(warm_pool=size, warm_pool_idle=idle, keep_warm=0))


def launches(job) -> dict[str, tuple[str, int]]:
    return {r.name: (r.launch, r.pid) for r in job.status.replicas}


# --------------------------------------------------------------------------- the import key
def test_the_import_key_separates_what_is_applied_before_tensorflow_is_imported():
    spec = make_spec("print(1)", workers=2)
    worker0, worker1 = pool_envs(spec, {})
    # what a replica learns from its assignment does not matter ...
    assert import_key(worker0) == import_key(worker1)
    assert import_key({**worker0, "TF_CONFIG": "{}", "TFK8S_JOB": "other"}) == import_key(worker0)
    # ... an environment change that matters does
    assert import_key({**worker0, "MY_FLAG": "1"}) != import_key(worker0)
    assert import_key({**worker0, "CUDA_VISIBLE_DEVICES": "0"}) != import_key(worker0)
    assert import_key({**worker0, "TFK8S_KERAS": "legacy"}) != import_key(worker0)
    assert import_key(worker0, "/other/python") != import_key(worker0)
    ps_spec = make_spec("print(1)", ps=1, workers=2)
    assert import_key(pool_envs(ps_spec, {})[0]) != import_key(worker0)  # parameter servers: tf_keras
    assert import_key(pool_envs(make_spec("print(1)", workers=2, env={"A": "b"}), {})[0]) != import_key(
        worker0
    )


# --------------------------------------------------------------------------- when the pool refills
@pytest.mark.parametrize("cores, replicas, expected", [(2, 2, "ended"), (2, 4, "ended"), (8, 4, "metric")])
def test_the_refill_waits_for_the_jobs_end_when_its_replicas_take_every_core(
    tmp_path, monkeypatch, cores, replicas, expected
):
    """A refill imports TensorFlow, a core for seconds: during training that core is the job's, so the
    refill starts at the first metric point only when the job's replicas leave a core free, else at its end."""
    import threading

    monkeypatch.setattr(local_pool, "usable_cores", lambda: cores)
    monkeypatch.setattr(local_pool, "ENDED_POLL", 0.05)
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"phase": "running"}))
    (tmp_path / "events.jsonl").write_text(json.dumps({"type": "metric", "step": 1}) + "\n")
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(wait_refill_moment(status, replicas, poll=0.02)))
    waiter.start()
    waiter.join(1.0)
    if expected == "metric":
        assert got == ["metric"]
        return
    assert got == [] and waiter.is_alive()  # training: the refill has not started
    status.write_text(json.dumps({"phase": "succeeded"}))
    waiter.join(5.0)
    assert got == ["ended"]


# --------------------------------------------------------------------------- end to end
def test_the_next_job_of_the_shape_runs_on_the_pool_that_refilled_after_the_first(tfk8s_home):
    use_pool()  # None: the last job's shape
    first = tk.submit(keras_cell(epochs=2, steps=10), workers=2, name="warm-first")
    assert first.wait(timeout=240) == "succeeded", first.status.message
    assert {launch for launch, _ in launches(first).values()} == {"cold"}
    # the refill starts at the first point, or at the end when the replicas take every core
    pool_pids = wait_for(lambda: len(idle_pids(tfk8s_home)) == 2 and idle_pids(tfk8s_home), 180, "the refill")
    # idle, a pool process holds what it allocated, not TensorFlow's library pages (~390 MB, page cache)
    rss = [r["rss"] for r in list_pool(tfk8s_home) if r["pid"] in pool_pids]
    assert len(rss) == 2 and max(rss) <= 512 << 20, [m >> 20 for m in rss]
    second = tk.submit(keras_cell(epochs=2, steps=10), workers=2, name="warm-second")
    assert second.wait(timeout=240) == "succeeded", second.status.message
    got = launches(second)
    assert {launch for launch, _ in got.values()} == {"warm"}
    assert {pid for _, pid in got.values()} == pool_pids  # the replicas were the pool's processes
    assert "cell done, losses:" in second.logs("worker-0")
    events = second.events()
    assert any(e.get("type") == "metric" for e in events)
    assert next(e for e in events if e.get("type") == "start")["pid"] in pool_pids
    # the assignment (it holds the job's protocol key) is read and removed by the pool process at once
    assert not list((tfk8s_home / ".warm-pool" / "slots").glob("*/assignment.json"))


def test_an_assignment_with_another_environment_is_not_served_warm(tfk8s_home):
    use_pool(0)  # only the processes warmed here
    backend = LocalBackend()
    assert backend.warm_up(make_spec("print(1)", workers=1), timeout=180)
    before = idle_pids(tfk8s_home)
    set_current_config(
        TFK8s(warm_pool=1, keep_warm=0)
    )  # pool on, sized 1: nothing more to start for this key
    job = tk.submit(keras_cell(epochs=1, steps=5), workers=1, env={"MY_FLAG": "on"}, name="other-env")
    assert job.wait(timeout=240) == "succeeded", job.status.message
    assert launches(job)["worker-0"][0] == "cold"
    assert launches(job)["worker-0"][1] not in before
    assert before <= idle_pids(tfk8s_home)  # the mismatched process still waits, unused


def test_a_pool_process_killed_or_frozen_while_idle_means_a_cold_start(tfk8s_home):
    use_pool(0)
    spec = make_spec("print(1)", ps=1, workers=1)
    assert LocalBackend().warm_up(spec, timeout=240)
    rows = {r["pid"]: r for r in list_pool(tfk8s_home) if r["state"] == "idle"}
    assert len(rows) == 3  # ps, chief, worker
    killed, frozen, *_ = sorted(rows)
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: not process_alive(killed), 10, "the killed pool process to die")
    os.kill(frozen, signal.SIGSTOP)
    try:
        set_current_config(TFK8s(warm_pool=1, keep_warm=0))
        job = tk.submit(tf_keras_cell(epochs=1, steps=5), ps=1, workers=1, name="after-kill")
        phase = job.wait(timeout=300)
    finally:
        if process_alive(frozen):
            os.kill(frozen, signal.SIGKILL)
    assert phase == "succeeded", job.status.message
    got = launches(job)
    assert killed not in {pid for _, pid in got.values()} and frozen not in {pid for _, pid in got.values()}
    assert sorted(launch for launch, _ in got.values()) == ["cold", "cold", "warm"]
    assert not process_alive(frozen)  # a claimed process that did not answer is killed, never served late


def test_a_pool_process_killed_while_it_is_claimed_means_a_cold_start(tfk8s_home):
    use_pool(0)
    assert LocalBackend().warm_up(make_spec("print(1)", workers=1), timeout=180)
    (pid,) = idle_pids(tfk8s_home)
    (slot,) = (tfk8s_home / ".warm-pool" / "slots").iterdir()
    os.kill(pid, signal.SIGSTOP)  # it cannot answer: the claim is under way when it is killed
    try:
        set_current_config(TFK8s(warm_pool=1, keep_warm=0))
        started = time.monotonic()
        job = tk.submit(keras_cell(epochs=1, steps=5), workers=1, name="killed-in-claim")
        wait_for(lambda: (slot / "assignment.json").exists(), 60, "the claim's assignment", poll=0.005)
        os.kill(pid, signal.SIGKILL)
        phase = job.wait(timeout=240)
    finally:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert phase == "succeeded", job.status.message
    assert time.monotonic() - started < 200
    launch, replica_pid = launches(job)["worker-0"]
    assert launch == "cold" and replica_pid != pid
    # the dead process's slot goes, with the assignment it never read (it holds the job's protocol key)
    wait_for(lambda: not slot.exists(), 20, "the killed process's slot to be removed")
    assert os.listdir(tfk8s_home / ".warm-pool" / "claimed") == []


CLAIMER = """
import json, os, sys, time
from tfk8s_jupyter.backends import local_pool
from tfk8s_jupyter.backends.local_pool import claim_replica
from tfk8s_jupyter.backends.local_processes import process_cpu_seconds, process_state
env, start = json.loads(sys.argv[1]), float(sys.argv[2])
await_answer = local_pool._await
def traced(slot, pid, ticks):  # a hand-over that gives nothing says why, on stderr (shown when the test fails)
    t0, state, cpu = time.monotonic(), process_state(pid), process_cpu_seconds(pid)
    got = await_answer(slot, pid, ticks)
    if got is None:
        files = sorted(os.listdir(slot)) if os.path.isdir(slot) else "gone"
        print(f"claimer {os.getpid()}: pid {pid} (state {state}, cpu {cpu}) gave no answer in "
              f"{time.monotonic() - t0:.2f} s; its slot: {files}", file=sys.stderr, flush=True)
    return got
local_pool._await = traced
time.sleep(max(0.0, start - time.time()))
got = []
for i in range(3):
    proc = claim_replica(sys.argv[3], [sys.executable, "-m", "tfk8s_jupyter.runner"], env, os.getcwd(),
                         os.path.join(sys.argv[4], f"{os.getpid()}-{i}.log"))
    if proc is not None:
        got.append(proc.pid)
        proc.wait(60)  # the runner fails at once (no payload); the claimed process must end
print(json.dumps(got))
"""


def test_two_concurrent_claimers_never_get_the_same_process(tfk8s_home, tmp_path):
    use_pool(0)
    spec = make_spec("print(1)", workers=2)
    assert LocalBackend().warm_up(spec, count=3, timeout=240)
    pool = idle_pids(tfk8s_home)
    assert len(pool) == 3
    env = pool_envs(spec, {})[0]
    env = {**env, "TFK8S_PAYLOAD": str(tmp_path / "no-payload.json")}
    start = time.time() + 2.0
    claimers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLAIMER,
                json.dumps(env),
                str(start),
                str(tfk8s_home / ".warm-pool"),
                str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(tmp_path),
        )
        for _ in range(3)
    ]
    results = [json.loads(c.communicate(timeout=120)[0]) for c in claimers]
    claimed = [pid for got in results for pid in got]
    left = {pid: (process_alive(pid), sorted(os.listdir(tfk8s_home / ".warm-pool" / "idle"))) for pid in pool}
    assert len(claimed) == len(set(claimed)) == 3, (results, left)  # each claimed once, by one claimer only
    assert set(claimed) == pool
    logs = list(tmp_path.glob("*.log"))
    assert len(logs) == 3 and all(
        "TFK8S_PAYLOAD" in p.read_text() or "payload" in p.read_text() for p in logs
    )


def test_warm_pool_zero_starts_nothing(tfk8s_home):
    use_pool(0)
    job = tk.submit(keras_cell(epochs=1, steps=5), workers=1, name="no-pool")
    assert job.wait(timeout=240) == "succeeded", job.status.message
    time.sleep(1.0)
    assert list_pool(tfk8s_home) == []
    assert not (tfk8s_home / ".warm-pool").exists()
    assert json.loads((tfk8s_home / "no-pool" / "local.json").read_text())["warm_pool"] is None


OWNER = """
import sys
from tfk8s_jupyter.backends.local import LocalBackend
from tfk8s_jupyter.spec import make_spec
assert LocalBackend().warm_up(make_spec("print(1)", workers=2), timeout=240)
print("ready", flush=True)
if sys.argv[1] == "stop":
    from IPython.core.interactiveshell import InteractiveShell
    from tfk8s_jupyter.pool_magics import register
    shell = InteractiveShell.instance()
    register(shell)
    shell.run_line_magic("tfk8s_pool", "")
    shell.run_line_magic("tfk8s_pool", "--stop")
    print("stopped", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("how", ["owner exits", "stop"])
def test_the_pool_ends_with_its_owner_or_tfk8s_pool_stop(tfk8s_home, how):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(OWNER), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert owner.stdout.readline().strip() == "ready"
        pids = idle_pids(tfk8s_home)
        assert len(pids) == 2
        if how == "stop":
            out = []
            while (line := owner.stdout.readline().strip()) != "stopped":
                out.append(line)
            text = "\n".join(out)
            assert all(str(pid) in text for pid in pids) and "idle" in text
            assert "stopped 2 idle warm process(es)" in text
            assert owner.poll() is None  # the kernel lives on, its pool does not
        else:
            owner.kill()  # as a kernel that dies: no cleanup code runs
        for pid in pids:
            wait_for(lambda pid=pid: not process_alive(pid), 20, f"pool process {pid} to end")
        assert list_pool(tfk8s_home) == [] or all(r["state"] == "gone" for r in list_pool(tfk8s_home))
    finally:
        owner.kill()
        owner.wait()


def test_a_pool_over_the_memory_budget_starts_what_fits_and_says_so_in_one_sentence(tfk8s_home, monkeypatch):
    from tfk8s_jupyter.backends import local_pool

    monkeypatch.setattr(local_pool, "_mem_available", lambda: local_pool.MEMORY_RESERVE + 100 * 2**20)
    pool = owned_pool(tfk8s_home)
    started = pool.ensure(pool_envs(make_spec("print(1)", ps=1, workers=2), {}), idle=600)
    assert started == [] and pool.waiting() == {}
    assert pool.note.startswith("the warm pool started 0 of 4 process(es)")
    assert "set c.TFK8s.warm_pool lower" in pool.note and pool.note.count(";") == 1


def test_a_warm_pool_larger_than_the_machine_can_hold_is_refused_in_one_sentence():
    """``c.TFK8s.warm_pool`` beyond what the machine's whole memory could hold is refused when it is set,
    naming the size that fits; the previous value stays. (What is available at a refill: the test above.)"""
    from traitlets.config import Config

    from tfk8s_jupyter.backends.local_capacity import total_memory
    from tfk8s_jupyter.backends.local_pool import MEMORY_RESERVE, PROCESS_RSS, pool_size_problem

    most = (total_memory() - MEMORY_RESERVE) // PROCESS_RSS
    assert pool_size_problem(most) is None and pool_size_problem(0) is None
    config = Config()
    config.TFK8s.warm_pool = most + 1
    defaults, problems = TFK8s.from_config(config=config, where="ipython_config.py")
    assert problems == [
        f"c.TFK8s.warm_pool in ipython_config.py: warm_pool {most + 1} is more than this machine can hold: each "
        f"warm process takes about {PROCESS_RSS >> 20} MB and it has {total_memory() >> 20} MB of memory in all; "
        f"use at most {most}, or 0 to turn the pool off."
    ]
    assert defaults.warm_pool == TFK8s().warm_pool
    assert pool_size_problem(3, total=MEMORY_RESERVE + 2 * PROCESS_RSS).endswith(
        "use at most 2, or 0 to turn the pool off."
    )
    config.TFK8s.warm_pool = -1
    _, problems = TFK8s.from_config(config=config, where="ipython_config.py")
    assert problems == [
        "c.TFK8s.warm_pool in ipython_config.py: warm_pool is -1; use 0 (off) or a number of processes, e.g. 4."
    ]


def test_the_pool_directory_deleted_under_the_pool_means_cold_starts_and_a_fresh_pool(tfk8s_home):
    import shutil

    use_pool(0)
    spec = make_spec("print(1)", workers=1)
    assert LocalBackend().warm_up(spec, timeout=180)
    (old,) = idle_pids(tfk8s_home)
    shutil.rmtree(tfk8s_home / ".warm-pool")
    set_current_config(TFK8s(warm_pool=1, keep_warm=0))
    job = tk.submit(keras_cell(epochs=1, steps=5), workers=1, name="pool-deleted")
    assert job.wait(timeout=240) == "succeeded", job.status.message
    assert launches(job)["worker-0"][0] == "cold"
    assert LocalBackend().warm_up(spec, timeout=180)  # the orphaned process ends, a new one takes its place
    wait_for(lambda: not process_alive(old), 20, "the orphaned pool process to end")
    assert len(idle_pids(tfk8s_home)) == 1 and old not in idle_pids(tfk8s_home)


def test_an_idle_pool_process_exits_after_warm_pool_idle(tfk8s_home):
    use_pool(0, idle=3.0)
    assert LocalBackend().warm_up(make_spec("print(1)", workers=1), timeout=180)
    (pid,) = idle_pids(tfk8s_home)
    wait_for(lambda: not process_alive(pid), 60, "the idle pool process to expire")
    assert idle_pids(tfk8s_home) == set()
    assert os.listdir(tfk8s_home / ".warm-pool" / "idle") == []  # its marker withdrawn: nobody can claim it


# --------------------------------------------------------------------------- what a pool process loads ahead
FLAVOUR_CELL = """
import sys
import keras
import tensorflow as tf
print("FLAVOUR", keras.__version__.split(".")[0], tf.keras.__name__, "tf_keras" in sys.modules, flush=True)
"""


@pytest.mark.parametrize(
    ("env", "major", "tf_keras_name"),
    [({}, "3", "keras._tf_keras.keras"), ({"TFK8S_KERAS": "legacy"}, "3", "tf_keras.api._v2.keras")],
    ids=["keras3", "tf_keras"],
)
def test_a_preloaded_pool_process_becomes_a_replica_with_its_jobs_keras(
    tfk8s_home, env, major, tf_keras_name
):
    # a Keras 3 pool process has tf_keras imported too (the runner wraps its clear_session): the cell's
    # tf.keras must still be Keras 3's, and a TFK8S_KERAS=legacy job's tf_keras (its `import keras` stays
    # Keras 3: only parameter-server jobs alias it), exactly as in a cold replica
    use_pool(0)
    assert LocalBackend().warm_up(make_spec("print(1)", workers=1, env=env), timeout=240)
    (pid,) = idle_pids(tfk8s_home)
    set_current_config(TFK8s(warm_pool=1, keep_warm=0))
    job = tk.submit(FLAVOUR_CELL, workers=1, env=env, name=f"flavour-{len(env)}")
    assert job.wait(timeout=240) == "succeeded", job.status.message
    assert launches(job)["worker-0"] == ("warm", pid)
    line = next(x for x in job.logs("worker-0").splitlines() if x.startswith("FLAVOUR"))
    assert line.split()[1:] == [major, tf_keras_name, "True"]


UNTOUCHED = """
import socket, sys, threading
import tensorflow as tf
from tfk8s_jupyter.backends.local_pool_preload import preload, untouched
print(repr(untouched()))
what = sys.argv[1]
if what == "server":
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
elif what == "thread":
    threading.Thread(target=threading.Event().wait, name="stray", daemon=True).start()
elif what == "context":
    tf.constant(1)
print(repr(untouched()), flush=True)
preload("keras3")
print("still here")
"""


@pytest.mark.parametrize(
    ("what", "sentence"),
    [
        ("context", "TensorFlow's eager context was initialized while loading"),
        ("server", "it listens on port(s)"),
        ("thread", "threads were started while loading (stray)"),
    ],
)
def test_a_pool_process_that_touched_tensorflow_exits_before_it_can_be_claimed(tmp_path, what, sentence):
    proc = subprocess.run(
        [sys.executable, "-c", UNTOUCHED, what],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    before, after = proc.stdout.splitlines()[:2]
    assert before == "None"  # TensorFlow imported and nothing else: fit to become any replica
    assert sentence in after
    assert "still here" not in proc.stdout  # preload's own check ends the process, unused
    assert proc.returncode == 3 and f"tfk8s warm pool: {sentence}" in proc.stderr


SITE_TOUCHING_TF = """
import sys
if "tfk8s_jupyter.backends.local_pool_process" in sys.orig_argv:
    import tensorflow as tf
    tf.constant(1)  # a context before any assignment: this process could not become an all-reduce worker
"""


def test_a_pool_process_whose_startup_touched_tensorflow_is_never_used(tfk8s_home, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_TOUCHING_TF)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(REPO)]))
    use_pool(0)
    pool = owned_pool(tfk8s_home)
    spec = make_spec("print(1)", workers=1)
    assert LocalBackend().warm_up(spec, timeout=240)
    wait_for(lambda: not pool.children, 60, "the pool process to exit unused")
    assert idle_pids(tfk8s_home) == set()
    assert os.listdir(tfk8s_home / ".warm-pool" / "idle") == []  # it never published an idle marker
    set_current_config(TFK8s(warm_pool=1, keep_warm=0))
    job = tk.submit(keras_cell(epochs=1, steps=5), workers=1, name="touched")
    assert job.wait(timeout=240) == "succeeded", job.status.message
    assert launches(job)["worker-0"][0] == "cold"


TAKE_TURN = """
import sys, time
from pathlib import Path
from tfk8s_jupyter.backends.local_pool_process import import_turn
print("waiting", flush=True)
import_turn(Path(sys.argv[1]), 2)
print("importing", flush=True)
time.sleep(600)
"""


def test_pool_processes_import_tensorflow_in_turns_and_a_dead_one_frees_its_turn(tmp_path):
    """A refill's processes import one per core at a time (the first is ready sooner); a process killed
    while it holds a turn gives it to the next."""
    from tfk8s_jupyter.backends.local_pool_process import import_turn

    mine = import_turn(tmp_path, 2)
    first = subprocess.Popen(
        [sys.executable, "-c", TAKE_TURN, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    third = None
    try:
        assert first.stdout.readline().strip() == "waiting"
        assert first.stdout.readline().strip() == "importing"  # the second turn was free
        third = subprocess.Popen(
            [sys.executable, "-c", TAKE_TURN, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert third.stdout.readline().strip() == "waiting"
        time.sleep(1.0)
        os.set_blocking(third.stdout.fileno(), False)
        assert not third.stdout.readline(), "a third process imported while both turns were held"
        first.kill()  # dies holding its turn
        first.wait()
        os.set_blocking(third.stdout.fileno(), True)
        assert third.stdout.readline().strip() == "importing"
    finally:
        os.close(mine)
        for proc in (first, third):
            if proc is not None:
                proc.kill()
                proc.wait()
