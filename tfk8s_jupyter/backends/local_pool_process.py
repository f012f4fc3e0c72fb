"""One warm pool process: ``python -m tfk8s_jupyter.backends.local_pool_process <slot dir> <key> <idle s>``.

Started by :class:`~tfk8s_jupyter.backends.local_pool.WarmPool` in a fresh interpreter whose environment
is the import-time environment of the replicas it can serve. It imports TensorFlow and the Keras flavour
those replicas train with, and nothing else: no TensorFlow context, no server, no collective configuration
(none of those can be undone in a process); then what a replica imports once claimed
(:func:`~.local_pool_preload.preload`), and a process whose imports touched TensorFlow's runtime exits
unused (code 3). It unmaps the library pages it only read (``local_processes.release_file_pages``: they
stay in the page cache; a claimed process maps back the few a replica touches). Then it publishes an idle marker and blocks, using no CPU, on
its FIFO (an assignment), its stdin (a pipe from its owner: EOF when the owner exits or stops the pool) and
its idle timeout.

Given an assignment it becomes that replica exactly as ``python -m tfk8s_jupyter.runner`` would: the
assignment's environment (refused when its import key is not this process's), working directory and
``sys.path[0]``, stdout and stderr appended to the replica's log, then the runner's ``main``; its exit code
goes to ``exit.json`` for the supervisor, which is not its parent. It dies with the supervisor, as a cold
replica does (``PR_SET_PDEATHSIG`` there, a pidfd watch here).
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path

CLAIMED_WAIT = 10.0  # seconds to wait for the assignment once a claimer has taken the idle marker


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _die_with(pid: int, ticks: int | None) -> None:
    """SIGKILL this process when ``pid`` (the job's supervisor) ends."""
    if _start_ticks(pid) != ticks:
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        os.kill(os.getpid(), signal.SIGKILL)
        return

    def watch() -> None:
        select.select([fd], [], [])
        from tfk8s_jupyter.backends.local_keep_process import survives

        if not survives(pid):  # a replica kept for the next run outlives its supervisor
            os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="tfk8s-supervisor-watch", daemon=True).start()


def wait_for_assignment(slot: Path, marker: Path, fifo_fd: int, idle: float) -> dict | None:
    """Block until an assignment arrives (its dict) or the pool no longer wants this process (None)."""
    deadline = time.monotonic() + idle
    stdin = sys.stdin.fileno()
    watch = [fifo_fd, stdin]
    while True:
        timeout = max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select(watch, [], [], timeout)
        if fifo_fd in readable:
            try:
                data = os.read(fifo_fd, 64)
            except BlockingIOError:
                continue
            if b"go" in data:
                path = slot / "assignment.json"
                assignment = json.loads(path.read_text())
                path.unlink()  # it holds the job's protocol key and secret env: in this process only now
                env = assignment.get("env", {})
                _write_json(
                    slot / "job.json", {k: env.get(k) for k in ("TFK8S_JOB", "TFK8S_ROLE", "TFK8S_INDEX")}
                )
                return assignment
            continue
        if stdin in readable:
            if os.read(stdin, 64):
                continue  # the owner writes nothing; EOF is its only message
            watch = [fifo_fd]
        elif readable:
            continue
        # owner gone or idle time over: withdraw the marker, unless a claimer took it a moment ago
        try:
            os.rename(marker, slot / "retired")
            return None
        except OSError:
            deadline = time.monotonic() + CLAIMED_WAIT
            readable, _, _ = select.select([fifo_fd], [], [], CLAIMED_WAIT)
            if not readable:
                return None


def become_replica(slot: Path, assignment: dict) -> int:
    """Turn this process into the assigned replica and run the runner's main; returns its exit code."""
    os.environ.clear()
    os.environ.update(assignment["env"])
    os.chdir(assignment["cwd"])
    sys.path[0] = os.getcwd()  # as `python -m` puts the working directory first
    log = os.open(assignment["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    sys.argv = [str(Path(__file__).resolve().parent.parent / "runner.py")]
    from tfk8s_jupyter import runner

    return runner.main()


def import_turn(pool: Path, turns: int | None = None) -> int | None:
    """Wait for one of ``turns`` (the machine's cores) import turns of the pool; returns the held lock's fd
    (closed once the imports are done; a process that dies frees its turn). Importing TensorFlow takes a
    core for seconds: a refill of 4 processes importing at once on 2 cores makes each wait for all, while
    in turns the first is ready in about half the time (what a resize waiting for one process needs)."""
    import fcntl

    turns = turns or max(1, os.cpu_count() or 1)
    locks = pool / "import-turns"
    try:
        locks.mkdir(parents=True, exist_ok=True)
        fds = [os.open(locks / f"{i}.lock", os.O_RDWR | os.O_CREAT, 0o600) for i in range(turns)]
    except OSError:
        return None  # no turns (the pool directory went away): import at once
    while True:
        for i, fd in enumerate(fds):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            for other in fds[:i] + fds[i + 1 :]:
                os.close(other)
            return fd
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    slot, key, idle = Path(argv[0]), argv[1], float(argv[2])
    pool = slot.parent.parent
    turn = import_turn(pool)
    import tensorflow  # noqa: F401

    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        import tf_keras  # noqa: F401

        flavour = "tf_keras"
    else:
        import keras  # noqa: F401

        flavour = "keras3"
    __import__("tfk8s_jupyter.backends.local_pool_preload", fromlist=["*"]).preload(flavour)
    if turn is not None:
        os.close(turn)  # the next process's turn to import
    from tfk8s_jupyter.backends.local_processes import release_file_pages

    release_file_pages()  # idle until claimed: TensorFlow's code pages back to the page cache (644 -> 255 MB)
    fifo = slot / "go"
    os.mkfifo(fifo)
    fifo_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # never EOF: this process holds a writer too
    _write_json(
        slot / "info.json",
        {
            "pid": os.getpid(),
            "start_ticks": _start_ticks(os.getpid()),
            "key": key,
            "keras": flavour,
            "owner": os.getppid(),
            "idle": idle,
            "ready_at": time.time(),
        },
    )
    marker = pool / "idle" / f"{key}.{slot.name}"
    marker.touch()
    assignment = wait_for_assignment(slot, marker, fifo_fd, idle)
    if assignment is None:
        return 0
    from tfk8s_jupyter.backends.local_pool import import_key

    if import_key(assignment["env"], sys.executable) != key:
        (slot / "refused").touch()
        return 0
    _die_with(int(assignment["watch_pid"]), assignment.get("watch_ticks"))
    (slot / "accepted").touch()
    code = 1
    try:
        code = become_replica(slot, assignment)
        from tfk8s_jupyter import runner

        code = runner.keep_after(code)  # kept for the next run of the same shape, when the job says so
    finally:
        _write_json(slot / "exit.json", {"code": code})
        sys.stdout.flush()
        sys.stderr.flush()
        # as the runner's own entry point: TensorFlow's gRPC threads can keep a finished process alive
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
