"""Kept replicas and what a cell leaves behind, and faults while a kept set is claimed, with real TensorFlow:
a cell that leaves a thread running or a file open is not kept (one line in its log naming them and the
fix; the next run of its shape starts cold, never in a process carrying the previous cell's thread); a
thread a cell leaves never keeps a finished replica from exiting; a kept replica killed or frozen while a
job claims it means a cold start, never a hang; what TensorFlow starts and opens for a cell (a
coordinator's threads, a summary writer) is not counted. The baseline comparison is also tested directly."""

from __future__ import annotations

import os
import signal
import threading
import time

import cells
from local_helpers import wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends import local_keep_hygiene as hygiene
from tfk8s_jupyter.backends.local import process_alive
from tfk8s_jupyter.backends.local_keep import PENDING_KEEP, list_kept, stop_kept
from tfk8s_jupyter.config import TFK8s, set_current_config

# a short training cell (the one tests/test_kept_replicas.py keeps), and what it may leave behind
TRAIN = """\
import numpy as np
import tensorflow as tf
keras = tf.keras
keras.utils.set_random_seed(7)
x = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = keras.Sequential([keras.Input(shape=(8,)), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
model.fit(tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(32), epochs=1, steps_per_epoch=4)
print("cell done", flush=True)
"""
THREAD = """\
import threading
stop_me = threading.Event()
threading.Thread(target=stop_me.wait, name="left-behind", daemon=DAEMON).start()
"""
LOG_FILE = """\
import logging
logging.basicConfig(filename="train.log", level=logging.INFO, force=True)
logging.info("training")
"""
CLEAN_THREAD_AND_FILE = """\
import threading
worker = threading.Thread(target=lambda: None, name="joined")
worker.start()
worker.join()
with open("notes.txt", "w") as f:
    f.write("done")
"""


def keep(seconds: float = 600.0) -> None:
    set_current_config(TFK8s(warm_pool=0, keep_warm=seconds))


def launches(job) -> dict[str, tuple[str, int]]:
    return {r.name: (r.launch, r.pid) for r in job.status.replicas}


def submit(code: str, name: str, workers: int = 2):
    job = tk.submit(code, workers=workers, name=name)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    return job


def kept_pids(home) -> set[int]:
    return {r["pid"] for r in list_kept(home) if r["state"] == "kept"}


def not_kept_lines(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if "is not kept for the next run" in ln]


# --------------------------------------------------------------------------- the baseline, directly
def test_leftovers_are_the_threads_and_files_new_since_the_snapshot(tmp_path):
    before = open(tmp_path / "before.txt", "w")  # noqa: SIM115 (open across the snapshot on purpose)
    base = hygiene.snapshot()
    assert not hygiene.leftovers(base, grace=0.1)
    stop = threading.Event()
    stray = threading.Thread(target=stop.wait, name="stray", daemon=True)
    stray.start()
    done = threading.Thread(target=lambda: time.sleep(0.05), name="finishing")
    done.start()  # ends within the grace: not left behind
    mine = hygiene.own(threading.Thread(target=stop.wait, name="keeping-watch", daemon=True))
    mine.start()
    f = open(tmp_path / "held.txt", "w")  # noqa: SIM115
    r, w = os.pipe()  # not a regular file: a pipe or socket the cell keeps is not counted here
    try:
        left = hygiene.leftovers(base, grace=0.3)
        assert left.threads == ["'stray' (daemon)"]
        assert left.files == [str(tmp_path / "held.txt")]
        line = hygiene.sentence("worker-0", left)
        assert line.count("\n") == 0 and "worker-0 is not kept" in line
        assert "'stray' (daemon)" in line and "held.txt" in line
        assert "join or stop the threads" in line and "with` block" in line
        assert not hygiene.leftovers(base, grace=0.1, files=False).files
    finally:
        stop.set()
        stray.join()
        mine.join()
        f.close()
        os.close(r)
        os.close(w)
    assert not hygiene.leftovers(base, grace=0.1)  # joined and closed: nothing left
    # a file descriptor number reused for another file counts as a new file
    before.close()
    again = open(tmp_path / "other.txt", "w")  # noqa: SIM115
    try:
        assert hygiene.leftovers(base, grace=0.0).files == [str(tmp_path / "other.txt")]
    finally:
        again.close()


def test_no_snapshot_means_nothing_is_judged(monkeypatch):
    monkeypatch.setattr(hygiene._State, "baseline", None)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert not hygiene.leftovers(grace=0.0)
    finally:
        stop.set()
        t.join()


def test_a_replicas_word_on_not_being_kept_outlives_its_set_directory(tmp_path, monkeypatch):
    """The job's end removes its set's directory (the members waiting there are told to exit) while a
    replica may still be on its way out: its word on why it is not kept must still reach the table."""
    import json
    from types import SimpleNamespace

    from tfk8s_jupyter.backends import local_keep, local_keep_process

    plan = local_keep.KeepPlan(tmp_path, "job", 600.0, [os.getpid(), None], shape="s")
    monkeypatch.setenv("TFK8S_ROLE", "worker")
    monkeypatch.setenv("TFK8S_INDEX", "1")
    cfg = json.loads(plan.env_var("worker-1", (os.getpid(), None)))
    local_keep_process._not_kept(cfg, hygiene.Leftovers(threads=["'left-behind'"]))
    plan.release(["worker-0", "worker-1"])
    assert not plan.set_dir.exists()
    sup = SimpleNamespace(
        keep=plan,
        replicas=[
            SimpleNamespace(name=n, status=SimpleNamespace(message=None)) for n in ("worker-0", "worker-1")
        ],
    )
    assert local_keep.explain_unkept(sup)
    said = {r.name: r.status.message for r in sup.replicas}
    assert (
        said["worker-1"].startswith("tfk8s: worker-1 is not kept")
        and "'left-behind' running" in said["worker-1"]
    )
    assert said["worker-0"].startswith("worker-0 is not kept for the next run either: worker-1 is not kept")


# --------------------------------------------------------------------------- end to end
def test_a_cell_that_leaves_a_thread_is_not_kept_and_the_next_run_starts_cold(tfk8s_home):
    keep()
    leaky = submit(THREAD.replace("DAEMON", "False") + TRAIN, "leaves-thread")
    pids = {pid for _, pid in launches(leaky).values()}
    for name in ("worker-0", "worker-1"):
        log = leaky.logs(name)
        assert "cell done" in log
        (said,) = not_kept_lines(log)  # one line, naming the thread and the fix
        assert f"{name} is not kept" in said and "'left-behind' running" in said
        assert "join or stop the threads" in said
    # the job's replica table says why, not "kept"
    messages = {r.name: r.message or "" for r in leaky.status.replicas}
    assert all("is not kept" in m and "left-behind" in m for m in messages.values()), messages
    # a non-daemon thread does not keep the process alive: it exits as a cold replica would
    wait_for(lambda: not any(process_alive(p) for p in pids), 20, "the replicas to exit")
    assert not kept_pids(tfk8s_home)
    nxt = submit(TRAIN, "after-thread")
    assert {launch for launch, _ in launches(nxt).values()} == {"cold"}
    assert not pids & {pid for _, pid in launches(nxt).values()}
    assert not not_kept_lines(nxt.logs("worker-0"))
    # a clean cell (its thread joined, its file closed) is kept, and the next run takes its processes
    wait_for(lambda: kept_pids(tfk8s_home) == {p for _, p in launches(nxt).values()}, 20, "the set kept")
    clean = submit(CLEAN_THREAD_AND_FILE + TRAIN, "clean")
    assert {launch for launch, _ in launches(clean).values()} == {"kept"}
    assert not not_kept_lines(clean.logs("worker-0"))
    wait_for(lambda: kept_pids(tfk8s_home) == {p for _, p in launches(clean).values()}, 20, "kept again")


def table_says_not_kept(job) -> dict[str, str]:
    """The replica table once the replicas' resets are done: the job ends as soon as every replica can be
    kept, and its table says "kept" or "not kept" once they all said their word after their reset."""

    def final() -> dict[str, str] | None:
        messages = {r.name: r.message or "" for r in job.status.replicas}
        return None if any(m.endswith(PENDING_KEEP) for m in messages.values()) else messages

    return wait_for(final, 40, "the replica table's final word")


def test_every_replica_that_left_a_thread_says_so_in_the_table_whichever_ends_last(tfk8s_home):
    """worker-1 ends seconds after worker-0, the job's end: its word on why it is not kept reaches the table
    though the job's end already released the set."""
    keep()
    late = "import os, time\nif os.environ['TFK8S_INDEX'] == '1':\n    time.sleep(3)\n"
    job = submit(THREAD.replace("DAEMON", "True") + TRAIN + late, "thread-late")
    messages = {r.name: r.message or "" for r in job.status.replicas}
    for name in ("worker-0", "worker-1"):
        assert messages[name].startswith(f"tfk8s: {name} is not kept"), messages
        assert "'left-behind' (daemon) running" in messages[name], messages
    pids = {pid for _, pid in launches(job).values()}
    wait_for(lambda: not any(process_alive(p) for p in pids), 20, "the replicas to exit")


def test_a_file_held_open_past_the_run_is_not_kept_and_the_set_is_withdrawn(tfk8s_home):
    keep()
    leaky = submit(LOG_FILE + TRAIN, "leaves-file")
    pids = {pid for _, pid in launches(leaky).values()}
    wait_for(lambda: not any(process_alive(p) for p in pids), 30, "the replicas to exit")
    for name in ("worker-0", "worker-1"):
        said = not_kept_lines(leaky.logs(name))
        assert said, leaky.logs(name)[-2000:]
        assert "train.log open" in said[0] and "with` block" in said[0]
    # the table says it too, for every replica, never "kept" (the set may have been kept before the check)
    messages = table_says_not_kept(leaky)
    assert all("is not kept" in m and "train.log open" in m for m in messages.values()), messages
    assert not kept_pids(tfk8s_home)
    nxt = submit(TRAIN, "after-file")
    assert {launch for launch, _ in launches(nxt).values()} == {"cold"}


# worker-1 alone leaves the file open; worker-0 (the job's end) either ends with it (the set is kept before
# worker-1's reset finds the file) or a few seconds later (worker-1 has exited before the set could be kept)
ONE_FILE = """\
import os, time
if os.environ["TFK8S_INDEX"] == "1":
    import logging
    logging.basicConfig(filename="train.log", level=logging.INFO, force=True)
    logging.info("training")
"""
LATE_END = """\
if os.environ["TFK8S_INDEX"] == "0":
    time.sleep(6)
"""


def test_one_replica_holding_a_file_keeps_its_whole_set_from_being_kept_in_either_order(tfk8s_home):
    keep()
    for late in (False, True):
        job = submit(
            ONE_FILE + TRAIN + (LATE_END if late else ""), f"one-file-{'late' if late else 'together'}"
        )
        pids = {pid for _, pid in launches(job).values()}
        messages = table_says_not_kept(job)
        assert messages["worker-1"].startswith("tfk8s: worker-1 is not kept"), messages
        assert "worker-0 is not kept for the next run either: worker-1 is not kept" in messages["worker-0"]
        assert all("train.log open" in m and "with` block" in m for m in messages.values()), messages
        (said,) = not_kept_lines(job.logs("worker-1"))
        assert "train.log open" in said
        assert not not_kept_lines(job.logs("worker-0"))  # its own cell left nothing
        wait_for(lambda pids=pids: not any(process_alive(p) for p in pids), 30, "the replicas to exit")
        assert not kept_pids(tfk8s_home)
    nxt = submit(TRAIN, "after-one-file")
    assert {launch for launch, _ in launches(nxt).values()} == {"cold"}


def test_a_thread_left_by_a_cell_never_holds_a_finished_replica(tfk8s_home):
    """keep_warm=0: a replica whose cell left a non-daemon thread ends with its job, as ever."""
    keep(0)
    started = time.monotonic()
    job = submit(THREAD.replace("DAEMON", "False") + TRAIN, "thread-cold", workers=1)
    (pid,) = {pid for _, pid in launches(job).values()}
    wait_for(lambda: not process_alive(pid), 20, "the replica to exit")
    assert time.monotonic() - started < 200
    assert job.status.replicas[0].exit_code == 0
    assert not not_kept_lines(job.logs("worker-0"))  # nothing to keep, nothing to say


SLOW_RESET = """\
import time
class SlowToCollect:
    def __del__(self):
        time.sleep(15)  # runs when the kept replica drops this run's namespace: it is still resetting
holder = SlowToCollect()
"""


def test_a_kept_replica_killed_or_frozen_while_it_is_claimed_means_a_cold_start(tfk8s_home):
    keep()
    for how in (signal.SIGKILL, signal.SIGSTOP):
        first = submit(SLOW_RESET + TRAIN, f"claimed-a-{how.name.lower()}")
        pids = {pid for _, pid in launches(first).values()}
        wait_for(lambda pids=pids: kept_pids(tfk8s_home) == pids, 30, "the set kept")
        victim = launches(first)["worker-1"][1]
        started = time.monotonic()
        second = tk.submit(TRAIN, workers=2, name=f"claimed-b-{how.name.lower()}")
        # the job claimed the set and handed out its assignments; the member, still resetting, has not
        # accepted yet
        wait_for(
            lambda: list((tfk8s_home / ".kept" / "sets").glob("*/worker-1/assignment.json")),
            60,
            "the claim to hand out its assignments",
            poll=0.01,
        )
        os.kill(victim, how)
        assert second.wait(timeout=300) == "succeeded", second.status.message
        assert time.monotonic() - started < 120  # CLAIM_ACK for a frozen member, then a cold start
        assert {launch for launch, _ in launches(second).values()} == {"cold"}
        assert not pids & {p for _, p in launches(second).values()}
        wait_for(lambda pids=pids: not any(process_alive(p) for p in pids), 20, "the spoiled set ended")
        assert not process_alive(victim)
        assert not list((tfk8s_home / ".kept").glob("sets/*/*/assignment.json"))  # no protocol key left
        assert (
            "kept replicas not used"
            in (tfk8s_home / f"claimed-b-{how.name.lower()}" / "supervisor.log").read_text()
        )
        stop_kept(tfk8s_home)


def test_keep_warm_nan_or_infinite_is_refused_in_one_sentence():
    """A NaN compares false to everything: it would pass a plain "0 or more" check and expire kept replicas
    at once; infinity would keep them until the kernel ends. Both are refused, the default stays."""
    from traitlets.config import Config

    for value in (float("nan"), float("inf")):
        config = Config()
        config.TFK8s.keep_warm = value
        defaults, problems = TFK8s.from_config(config=config, where="ipython_config.py")
        assert problems == [
            f"c.TFK8s.keep_warm in ipython_config.py: keep_warm {value!r} must be 0 or more seconds, e.g. 600 "
            "(0 turns kept replicas off)."
        ]
        assert defaults.keep_warm == TFK8s().keep_warm


def test_a_custom_loop_with_its_own_coordinator_and_summary_writer_is_kept(tfk8s_home):
    """What TensorFlow starts and opens for a cell (a ClusterCoordinator's threads, the cell's summary
    writer left unclosed, ``report()``) is not the cell leaving something behind: the chief is kept."""
    keep()
    first = tk.submit(cells.PS_LOOP, ps=1, workers=2, name="ps-loop-a")
    assert first.wait(timeout=300) == "succeeded", first.status.message
    pids = {p for _, p in launches(first).values()}
    assert not not_kept_lines(first.logs("chief-0"))
    wait_for(lambda: kept_pids(tfk8s_home) == pids, 30, "the set kept")
    second = tk.submit(cells.PS_LOOP, ps=1, workers=2, name="ps-loop-b")
    assert second.wait(timeout=300) == "succeeded", second.status.message
    assert {launch for launch, _ in launches(second).values()} == {"kept"}
    assert "summary files: True" in second.logs("chief-0")
    assert not not_kept_lines(second.logs("chief-0"))
