"""Kept replicas of the local backend, with real TensorFlow: after a job succeeds its replica processes stay
(``c.TFK8s.keep_warm``) and the next job of the same shape runs in them (same pids, launch "kept") as a
job of its own (record, logs, curve), with nothing of the previous run left; another shape or environment
starts anew; a kept replica killed or frozen between runs means a cold start, never a hang; ``keep_warm=0``
keeps nothing; kept processes end after ``keep_warm`` and with their owner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from local_helpers import wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.local import LocalBackend, process_alive
from tfk8s_jupyter.backends.local_keep import PENDING_KEEP, list_kept, stop_kept
from tfk8s_jupyter.backends.local_processes import process_state
from tfk8s_jupyter.config import TFK8s, set_current_config
from tfk8s_jupyter.monitor import JobState, Monitor
from tfk8s_jupyter.pool_magics import pool_table

REPO = Path(__file__).resolve().parents[1]

# A cell that shows what a run finds of the previous one: a global it sets, the variables Keras tracks,
# the weights it starts from (a fixed seed: a fresh model starts from the same weights every run).
CELL = textwrap.dedent(
    """\
    import numpy as np
    import tensorflow as tf
    keras = tf.keras  # Keras 3, or tf_keras for TFK8S_KERAS=legacy and parameter servers

    print("leaked global:", globals().get("LEFT_BEHIND", "none"))
    LEFT_BEHIND = "from run " + RUN
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = (x @ np.arange(8, dtype="float32")[:, None]).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(64)
    model = keras.Sequential([keras.Input(shape=(8,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    print("first weight:", round(float(model.weights[0].numpy()[0, 0]), 6))
    print("model variables:", len(model.variables))
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(ds, epochs=2, steps_per_epoch=5)
    print("cell done, losses:", [round(v, 4) for v in history.history["loss"]])
    print("predicted rows:", model.predict(x[:3], verbose=0).shape[0])
    """
)


def keep(seconds: float = 600.0) -> None:
    set_current_config(TFK8s(warm_pool=0, keep_warm=seconds))


def launches(job) -> dict[str, tuple[str, int]]:
    return {r.name: (r.launch, r.pid) for r in job.status.replicas}


def run(name: str, run_id: str, **kwargs):
    job = tk.submit(f"RUN = {run_id!r}\n" + CELL, workers=2, name=name, **kwargs)
    assert job.wait(timeout=300) == "succeeded", job.status.message
    return job


def start_owner(name: str, then: str = "") -> subprocess.Popen:
    """A kernel stand-in: a process that runs job ``name`` (kept replicas on), prints its replicas' pids as
    JSON, runs ``then`` and waits until its stdin closes."""
    script = textwrap.dedent(
        f"""\
        import sys, json
        sys.path.insert(0, {str(REPO / "tests")!r})
        import tfk8s_jupyter as tk
        from tfk8s_jupyter.config import TFK8s, set_current_config
        set_current_config(TFK8s(warm_pool=0, keep_warm=600))
        job = tk.submit("RUN = '1'\\n" + {CELL!r}, workers=2, name={name!r})
        assert job.wait(timeout=300) == "succeeded", job.status.message
        print(json.dumps([r.pid for r in job.status.replicas]), flush=True)
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", script + then + "sys.stdin.read()\n"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def kept_pids(home) -> set[int]:
    return {r["pid"] for r in list_kept(home) if r["state"] == "kept"}


def line(text: str, prefix: str) -> str:
    return next(ln for ln in text.splitlines() if ln.startswith(prefix))


def test_a_panel_following_a_kept_job_ends_on_each_replicas_last_word(tfk8s_home):
    """A job that keeps its replicas ends a moment before each replica's reset says whether it is kept; a
    follower (the monitor behind a cell's panel) looks again until that word is in, so the panel's final
    table says "kept for the next run" rather than what it was while the reset ran."""
    keep()
    job = tk.submit("RUN = '1'\n" + CELL, workers=2, name="kept-followed")
    state = JobState(job.name)
    monitor = Monitor(LocalBackend(), job.name, state).start()
    assert monitor.done.wait(300)
    assert state.status.phase == "succeeded" and not state.status.settling
    words = [r.message for r in state.status.replicas]
    assert all(w.startswith("kept for the next run of the same shape (keep_warm=600 s)") for w in words), (
        words
    )
    assert not any(w.endswith(PENDING_KEEP) for w in words), words


def test_the_next_job_of_the_shape_runs_in_the_kept_processes_and_finds_nothing_of_the_first(tfk8s_home):
    keep()
    first = run("kept-first", "1")
    got = launches(first)
    assert {launch for launch, _ in got.values()} == {"cold"}
    pids = {pid for _, pid in got.values()}
    assert kept_pids(tfk8s_home) == pids
    assert all(r["job"].startswith("kept-first ") for r in list_kept(tfk8s_home))
    table = pool_table(tfk8s_home)  # what %tfk8s_pool prints
    for pid in pids:
        row = next(ln for ln in table.splitlines() if ln.split()[0] == str(pid))
        assert " kept " in row and " keras3 " in row and "kept-first worker-" in row
    second = run("kept-second", "2")
    got = launches(second)
    assert {launch for launch, _ in got.values()} == {"kept"}
    assert {pid for _, pid in got.values()} == pids  # the same processes ran it
    start = next(e for e in second.events() if e.get("type") == "start")
    assert start["pid"] in pids and start["replicas"] == 2  # truly distributed again: 2 replicas in sync
    # a job of its own: record, logs, curve
    assert (tfk8s_home / "kept-first" / "spec.json").exists() and (
        tfk8s_home / "kept-second" / "spec.json"
    ).exists()
    log1, log2 = first.logs("worker-0"), second.logs("worker-0")
    assert "from run" not in log2 and "leaked global: none" in log2
    assert "cell done, losses:" in log2 and log2.count("cell done") == 1
    assert any(e.get("type") == "metric" for e in second.events())
    # nothing carried over: the same variables, the same starting weights as the cold run
    assert line(log1, "model variables:") == line(log2, "model variables:")
    assert line(log1, "first weight:") == line(log2, "first weight:")
    assert line(log1, "cell done") == line(log2, "cell done")  # the same training: fresh optimizer too
    assert not list((tfk8s_home / ".kept").glob("sets/*/*/assignment.json"))
    # kept again after the second job
    assert kept_pids(tfk8s_home) == pids
    assert stop_kept(tfk8s_home) == 2
    wait_for(lambda: not any(process_alive(p) for p in pids), 10, "kept processes to exit when stopped")


def test_another_environment_starts_anew_and_keep_warm_0_keeps_nothing(tfk8s_home):
    keep()
    first = run("kept-env-a", "1")
    pids = {pid for _, pid in launches(first).values()}
    other = run("kept-env-b", "2", env={"MY_SETTING": "1"})  # another environment: another shape
    assert {launch for launch, _ in launches(other).values()} == {"cold"}
    assert not pids & {pid for _, pid in launches(other).values()}
    assert kept_pids(tfk8s_home) >= pids  # the first set is still kept for its own shape
    stop_kept(tfk8s_home)
    keep(0)
    off = run("kept-off", "3")
    off_pids = {pid for _, pid in launches(off).values()}
    assert not kept_pids(tfk8s_home)
    wait_for(lambda: not any(process_alive(p) for p in off_pids), 20, "the replicas to exit")


def test_a_kept_replica_killed_or_frozen_means_a_cold_start(tfk8s_home):
    keep()
    first = run("kept-fault-a", "1")
    pids = {pid for _, pid in launches(first).values()}
    victim = launches(first)["worker-1"][1]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not process_alive(victim), 10, "the killed replica to die")
    started = time.monotonic()
    second = run("kept-fault-b", "2")
    assert time.monotonic() - started < 120
    got = launches(second)
    assert {launch for launch, _ in got.values()} == {"cold"}
    # the kept set's other member was ended with it, not left behind
    wait_for(lambda: not any(process_alive(p) for p in pids), 10, "the spoiled set to be ended")
    # frozen: the set of the second job, one member stopped
    frozen = got["worker-0"][1]
    wait_for(lambda: kept_pids(tfk8s_home) == {pid for _, pid in got.values()}, 20, "the second set kept")
    os.kill(frozen, signal.SIGSTOP)
    wait_for(lambda: process_state(frozen) in ("T", "t"), 5, "the replica to stop")
    third = run("kept-fault-c", "3")
    assert {launch for launch, _ in launches(third).values()} == {"cold"}
    wait_for(lambda: not process_alive(frozen), 10, "the frozen replica to be cleaned up")


def test_kept_replicas_expire_and_die_with_their_owner(tfk8s_home):
    keep(4.0)
    first = run("kept-expire", "1")
    pids = {pid for _, pid in launches(first).values()}
    wait_for(lambda: not any(process_alive(p) for p in pids), 30, "kept replicas to expire after keep_warm")
    # an owner that exits takes its kept replicas with it
    owner = start_owner("kept-owner")
    owner_pids = set(json.loads(owner.stdout.readline()))
    assert kept_pids(tfk8s_home) == owner_pids
    owner.stdin.close()
    owner.wait(30)
    wait_for(lambda: not any(process_alive(p) for p in owner_pids), 10, "kept replicas to die with the owner")


def test_a_kept_set_whose_directory_is_deleted_while_idle_means_a_cold_start_and_no_orphan(tfk8s_home):
    import shutil

    keep()
    first = run("kept-deleted-a", "1")
    pids = {pid for _, pid in launches(first).values()}
    wait_for(lambda: kept_pids(tfk8s_home) == pids, 20, "the set kept")
    # idle: the table says kept once every member's reset is done, and none is resetting any more
    kept = f"kept for the next run of the same shape (keep_warm={600:g} s)"
    wait_for(lambda: {r.message for r in first.status.replicas} == {kept}, 40, "the table to say kept")
    (kept_set,) = (tfk8s_home / ".kept" / "sets").iterdir()
    wait_for(lambda: not list(kept_set.glob("*/resetting")), 40, "the kept replicas to be idle")
    shutil.rmtree(kept_set)
    started = time.monotonic()
    second = run("kept-deleted-b", "2")
    assert time.monotonic() - started < 120  # nothing waits on the set
    assert {launch for launch, _ in launches(second).values()} == {"cold"}
    assert not pids & {p for _, p in launches(second).values()}
    # the kept processes notice their set is gone and exit: none stays for keep_warm
    wait_for(lambda: not any(process_alive(p) for p in pids), 20, "the kept processes to exit")
    wait_for(
        lambda: kept_pids(tfk8s_home) == {p for _, p in launches(second).values()}, 20, "the new set kept"
    )


def test_a_job_on_kept_replicas_outlives_its_owner_and_keeps_nothing_after(tfk8s_home):
    """The kernel that submitted ends while a job runs on its kept replicas: the job finishes (a restarted
    kernel can attach to it), and then its replicas exit: nobody can claim them any more."""
    owner = start_owner(
        "orphaned-a",
        then=f"""tk.submit("import time\\ntime.sleep(8)\\nRUN = '2'\\n" + {CELL!r}, workers=2, name="orphaned-b")
print("submitted", flush=True)
""",
    )
    try:
        pids = set(json.loads(owner.stdout.readline()))
        assert owner.stdout.readline().strip() == "submitted"
        job = tk.attach("orphaned-b")
        wait_for(lambda: job.status.phase == "running", 60, "the job to run on the kept replicas")
        assert {launch for launch, _ in launches(job).values()} == {"kept"}
        owner.kill()
        owner.wait(10)
        assert job.wait(timeout=300) == "succeeded", job.status.message
        assert {p for _, p in launches(job).values()} == pids
        assert "cell done" in job.logs("worker-0")
        wait_for(lambda: not any(process_alive(p) for p in pids), 20, "the replicas to exit after the job")
        assert not list_kept(tfk8s_home)
    finally:
        owner.kill()
        owner.wait(10)


def test_tf_keras_all_reduce_and_parameter_server_jobs_repeat_on_their_kept_replicas(tfk8s_home):
    keep()
    legacy = {"TFK8S_KERAS": "legacy"}
    first = run("kept-legacy-a", "1", env=legacy)
    second = run("kept-legacy-b", "2", env=legacy)
    assert {launch for launch, _ in launches(second).values()} == {"kept"}
    assert {p for _, p in launches(second).values()} == {p for _, p in launches(first).values()}
    log1, log2 = first.logs("worker-0"), second.logs("worker-0")
    assert "leaked global: none" in log2
    assert line(log1, "first weight:") == line(log2, "first weight:")
    assert line(log1, "cell done") == line(log2, "cell done")
    stop_kept(tfk8s_home)
    # parameter servers: the serving replicas keep their server, the kept chief builds a new strategy; the
    # previous run's variables are gone from the chief, so the ps frees them (TFK8S_KEEP_DEBUG counts them)
    ps = {"ps": 1, "env": {"TFK8S_KEEP_DEBUG": "1"}}
    first = tk.submit("RUN = '1'\n" + CELL, workers=2, name="kept-ps-a", **ps)
    assert first.wait(timeout=300) == "succeeded", first.status.message
    second = tk.submit("RUN = '2'\n" + CELL, workers=2, name="kept-ps-b", **ps)
    assert second.wait(timeout=300) == "succeeded", second.status.message
    got = launches(second)
    assert {launch for launch, _ in got.values()} == {"kept"}
    assert {p for _, p in got.values()} == {p for _, p in launches(first).values()}
    chief = second.logs("chief-0")
    assert "tfk8s: 0 variable(s) of the previous run left in this process" in first.logs("chief-0")
    assert "leaked global: none" in chief and "cell done, losses:" in chief
    assert "predicted rows: 3" in chief  # the runner's predict of the first run was put back, then redone
    assert line(first.logs("chief-0"), "first weight:") == line(chief, "first weight:")
    assert "kept from the previous run" in second.logs("ps-0")
    assert any(e.get("type") == "metric" for e in second.events())


def test_settings_a_cell_changed_are_put_back_before_the_next_run_on_the_kept_processes(tfk8s_home):
    """A cell that trained and then switched to mixed precision (or eager functions, numpy errors, silenced
    warnings) leaves a kept process with those settings; the next run must start as a cold one would: with
    parameter servers, tf_keras refuses mixed_float16 and every later run on the set failed."""
    keep()
    changes = (
        "tf.keras.mixed_precision.set_global_policy('mixed_float16')\n"
        "tf.config.run_functions_eagerly(True)\n"
        "np.seterr(all='raise')\n"
        "import warnings\nwarnings.simplefilter('ignore')\n"
    )
    shows = (
        "import warnings\n"
        "print('settings:', tf.keras.mixed_precision.global_policy().name, tf.config.functions_run_eagerly(),"
        " np.geterr()['divide'], any(f[:3] == ('ignore', None, Warning) for f in warnings.filters))\n"
    )
    first = tk.submit("RUN = '1'\n" + CELL + changes, workers=2, ps=1, name="kept-set-a")
    assert first.wait(timeout=300) == "succeeded", first.status.message
    second = tk.submit("RUN = '2'\n" + CELL + shows, workers=2, ps=1, name="kept-set-b")
    assert second.wait(timeout=300) == "succeeded", second.status.message
    assert {launch for launch, _ in launches(second).values()} == {"kept"}
    assert line(second.logs("chief-0"), "settings:") == "settings: float32 False warn False"


def test_a_warm_pool_process_that_became_a_replica_is_kept_like_a_cold_one(tfk8s_home):
    from tfk8s_jupyter.backends.local import LocalBackend
    from tfk8s_jupyter.backends.local_pool import list_pool
    from tfk8s_jupyter.spec import make_spec

    set_current_config(TFK8s(warm_pool=0, keep_warm=600))
    assert LocalBackend().warm_up(make_spec("print(1)", workers=2), timeout=240)
    pool = {r["pid"] for r in list_pool(tfk8s_home) if r["state"] == "idle"}
    set_current_config(TFK8s(warm_pool=2, keep_warm=600))  # the pool on for the launch
    first = run("kept-from-pool-a", "1")
    assert {launch for launch, _ in launches(first).values()} == {"warm"}
    assert {p for _, p in launches(first).values()} == pool
    second = run("kept-from-pool-b", "2")
    assert {launch for launch, _ in launches(second).values()} == {"kept"}
    assert {p for _, p in launches(second).values()} == pool  # the pool's processes, twice
    assert "leaked global: none" in second.logs("worker-0")


def test_nothing_is_kept_when_memory_is_short(monkeypatch, capsys):
    """A supervisor at its job's end keeps nothing while the machine's available memory is under the reserve
    the warm pool leaves free, and says so in one line of the job's log."""
    from types import SimpleNamespace

    from tfk8s_jupyter.backends import local_keep

    monkeypatch.setattr(local_keep, "_mem_available", lambda: local_keep.MEMORY_RESERVE - (1 << 20))
    sup = SimpleNamespace(replicas=[], keep=None)  # nothing past the memory check may be touched
    assert local_keep.keep_at_end(sup, time.time()) == "no"
    said = capsys.readouterr()
    assert "replicas not kept:" in said.out + said.err and "keep_warm = 0" in said.out + said.err
    assert local_keep.keep_at_end(sup, time.time()) == "no"  # every tick after: said once only
    assert "replicas not kept" not in "".join(capsys.readouterr())


def test_tfk8s_pool_stop_leaves_a_set_a_job_is_claiming(tmp_path):
    """A set whose idle marker a job has just renamed (its members are being handed over) is not ended by
    ``%tfk8s_pool --stop``; an idle set of the same owner is."""
    from tfk8s_jupyter.backends import local_keep

    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    try:
        base = local_keep.keep_dir(tmp_path)
        for i, (set_id, proc) in enumerate(zip(["claiming", "idle"], sleepers, strict=True)):
            d = base / "sets" / set_id
            (d / "worker-0").mkdir(parents=True)
            ticks = local_keep.proc_start_ticks(proc.pid)
            info = {
                "shape": f"shape{i}",
                "owner": [os.getpid(), None],
                "members": {"worker-0": {"pid": proc.pid, "start_ticks": ticks}},
                "kept_at": time.time(),
            }
            (d / "set.json").write_text(__import__("json").dumps(info))
        (base / "idle").mkdir()
        (base / "idle" / "shape1.idle").touch()  # only the idle set has its marker
        assert local_keep.stop_kept(tmp_path, owner=os.getpid(), timeout=0.5) == 1
        wait_for(lambda: sleepers[1].poll() is not None, 10, "the idle set's member to be ended")
        assert sleepers[0].poll() is None  # the set being claimed lives on
        assert (base / "sets" / "claiming" / "set.json").exists()
        assert not (base / "sets" / "idle").exists()
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
