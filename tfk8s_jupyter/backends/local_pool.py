"""The warm replica pool of the local backend: processes that have imported TensorFlow, the job's Keras and
what every replica imports next (:mod:`.local_pool_preload`, which also checks that the imports touched no
TensorFlow runtime state) and wait to become a replica of a new job, so the job skips the 2.5-3 s TensorFlow
import per replica.

Layout of ``<records root>/.warm-pool/``:

- ``slots/<id>/``: one pool process each (``python -m tfk8s_jupyter.backends.local_pool_process``, a fresh
  interpreter: never a fork of a process that imported TensorFlow): ``info.json`` (pid, kernel start time,
  import key, owner pid), ``go`` (a FIFO it blocks on while idle, costing no CPU), ``assignment.json``
  (written by the claimer), ``accepted`` (the process took the assignment), ``exit.json`` (its exit code);
- ``idle/<key>.<id>``: an empty marker per process ready to serve; claiming is the atomic ``rename`` of the
  marker into ``claimed/``, so two claimers (two kernels, two supervisors) never get one process.

**The import key.** A replica's environment is applied before TensorFlow is imported, so a pool process can
only become a replica whose import-time environment equals its own: the key is a hash of the Python
executable and the replica's environment without what a replica learns per assignment (``TF_CONFIG``,
``JOB_COMPLETION_INDEX`` and the ``TFK8S_*`` contract variables except ``TFK8S_STRATEGY`` and
``TFK8S_KERAS``, which decide the Keras flavour). A new ``--env``, another GPU slice
(``CUDA_VISIBLE_DEVICES``) or the other Keras gives another key: a cold start, never a wrong environment.

**Claiming** (at submit, :func:`reserve_pool` and :func:`send_pool` from :mod:`.local_handover`, so the
pool processes start the run while the job's supervisor starts; :func:`claim_replica` for a replica the
supervisor starts later, e.g. a restart): rename an idle marker of the key, write the assignment
(environment, working directory, log file, the supervisor's pid), write ``go`` into the FIFO and wait up to
:data:`CLAIM_ACK` seconds for ``accepted`` (the supervisor waits, :func:`await_pool_process`), longer while the
process runs or waits for a core (:class:`~.local_processes.AnswerWatch`). A process that died
while idle (the FIFO has no reader), refuses (another key) or does not answer (frozen: it is killed) gives
None, and the supervisor starts a cold process: nothing hangs. The claimed process runs the runner's
``main`` exactly as ``python -m tfk8s_jupyter.runner`` does and dies with the supervisor; the supervisor
watches it through :class:`WarmProcess` (a ``Popen``-like handle on a process it did not start).

**Owning** (:class:`WarmPool`, one per records root in the process that submits jobs, i.e. the kernel):
pool processes are its children with a pipe on their stdin; when it exits (or ``%tfk8s_pool --stop``) the
pipe closes and every idle process exits. After a launch the pool refills in the background, never
against the job it follows (:func:`wait_refill_moment`): once the job has reported its first metric point
when its replicas leave a core of this machine free, else once the job has ended — importing TensorFlow
takes a core for seconds, and during training that core is the job's (measured on 2 cores: a refill of 2-4
processes during a warm launch's training took 3-10 CPU s from it and its steps/s fell to 0.68-0.87 of
hand-launched TensorFlow). A resize asks the pool for its processes itself (:mod:`.local_resize`). The pool
is sized by ``c.TFK8s.warm_pool`` (None: the last job's shape; 0: off) within a memory budget; an idle
process exits after ``c.TFK8s.warm_pool_idle``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from ..records import write_json_atomic
from .local_capacity import available_memory, total_memory, usable_cores
from .local_processes import AnswerWatch, proc_start_ticks, process_alive

POOL_DIR = ".warm-pool"
RUNNER_MODULE = "tfk8s_jupyter.runner"
# A claimed process that goes this many seconds without running before it accepts its assignment is wedged
# (frozen, or stuck); one still running or waiting for a core may take up to CLAIM_LIMIT (a loaded machine).
CLAIM_ACK = 3.0
CLAIM_LIMIT = 30.0
# What a replica learns from its assignment; everything else in its environment is import-time.
ASSIGNMENT_ONLY = frozenset({"TF_CONFIG", "JOB_COMPLETION_INDEX"})
IMPORT_TIME_CONTRACT = frozenset({"TFK8S_STRATEGY", "TFK8S_KERAS"})
# Bytes budgeted per pool process: what it takes once claimed and training (TensorFlow + Keras imported,
# measured ~650 MB RSS); idle, it holds ~255 MB, its library pages released (release_file_pages).
PROCESS_RSS = 750 << 20
MEMORY_RESERVE = 2 << 30  # bytes of available memory the pool always leaves to everything else
REFILL_WAIT = 300.0  # seconds the refill waits for the launched job to start training
FIRST_POINT_WAIT = 20.0  # seconds the refill waits, once the job trains, for its first metric point
ENDED_POLL = 1.0  # seconds between looks at a training job's phase while the refill waits for its end
ENDED_PHASES = frozenset({"succeeded", "failed", "stopped"})
# A pool process gets a process group of its own (a Ctrl-C in the owner's terminal is not for the pool) but
# stays in the owner's session: a session of its own would put it in a scheduling group of its own
# (Linux autogroups), where its training ran at 0.78-0.95 of hand-launched TensorFlow's steps/s against
# 0.90-1.05 in the owner's session (parameter servers, 2 cores, 4 pairs each, measured side by side).
OWN_PROCESS_GROUP = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}


def pool_dir(root: str | os.PathLike) -> Path:
    return Path(root) / POOL_DIR


def import_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of a replica's environment that is applied before TensorFlow is imported."""
    return {
        k: v
        for k, v in env.items()
        if k not in ASSIGNMENT_ONLY and (not k.startswith("TFK8S_") or k in IMPORT_TIME_CONTRACT)
    }


def import_key(env: Mapping[str, str], executable: str = sys.executable) -> str:
    """The pool key of a replica environment: equal keys, equal import-time environments."""
    text = json.dumps([executable, sorted(import_env(env).items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def uses_tf_keras(env: Mapping[str, str]) -> bool:
    """Whether the replica trains on tf_keras (the runner's rule, ``ReplicaEnv.uses_tf_keras``)."""
    legacy = env.get("TFK8S_KERAS", "").strip().lower() in ("legacy", "tf_keras", "tf-keras")
    return env.get("TFK8S_STRATEGY") == "parameter_server" or legacy


# --------------------------------------------------------------------------- the claimer's side
class WarmProcess:
    """A claimed pool process as the supervisor sees it: the ``Popen`` calls it makes, on a process that is
    not its child (its exit code comes from ``exit.json``, or the last signal sent when it has none)."""

    def __init__(self, pid: int, start_ticks: int, slot: Path):
        self.pid = pid
        self.start_ticks = start_ticks
        self.slot = slot
        self.returncode: int | None = None
        self._signal: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not process_alive(self.pid, self.start_ticks):
            try:
                self.returncode = int(json.loads((self.slot / "exit.json").read_text())["code"])
            except (OSError, ValueError, KeyError, TypeError):
                self.returncode = -(self._signal or signal.SIGKILL)
            shutil.rmtree(self.slot, ignore_errors=True)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(["pool process", str(self.pid)], timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            self._signal = sig
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def claim_replica(
    pool: str | os.PathLike | None,
    command: list[str],
    env: Mapping[str, str],
    cwd: str,
    log: str | os.PathLike,
) -> WarmProcess | None:
    """Hand one replica to an idle pool process of its import key, or None (start it cold).

    ``command`` is what a cold start would run; only the runner module is served warm. The claimed process
    dies with the calling process (the job's supervisor), as a cold replica does."""
    if not pool or list(command[1:]) != ["-m", RUNNER_MODULE]:
        return None
    pool = Path(pool)
    key = import_key(env, command[0])
    try:
        markers = sorted(n for n in os.listdir(pool / "idle") if n.startswith(key + "."))
    except OSError:
        return None
    assignment = {  # a 0600 file, read and removed by the pool process at once
        "env": dict(env),
        "cwd": cwd,
        "log": str(log),
        "watch_pid": os.getpid(),
        "watch_ticks": proc_start_ticks(os.getpid()),
    }
    for name in markers:
        try:
            os.rename(pool / "idle" / name, pool / "claimed" / name)
        except OSError:
            continue  # another claimer took it, or it expired
        proc = _hand_over(pool / "slots" / name.split(".", 1)[1], assignment)
        try:
            os.unlink(pool / "claimed" / name)
        except OSError:
            pass
        if proc is not None:
            return proc
    return None


def _hand_over(slot: Path, assignment: dict) -> WarmProcess | None:
    sent = _send(slot, assignment)
    return _await(slot, *sent) if sent else None


def _send(slot: Path, assignment: dict) -> tuple[int, int] | None:
    """Give the pool process of ``slot`` its assignment; its ``(pid, start ticks)``, or None (gone)."""
    try:
        info = json.loads((slot / "info.json").read_text())
        pid, ticks = int(info["pid"]), int(info["start_ticks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not process_alive(pid, ticks):
        return None
    write_json_atomic(slot / "assignment.json", assignment)
    try:
        fd = os.open(slot / "go", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody reads the FIFO any more (the process died)
        _unsent(slot)
        return None
    try:
        os.write(fd, b"go\n")
    except OSError:
        _unsent(slot)
        return None
    finally:
        os.close(fd)
    return pid, ticks


def _unsent(slot: Path) -> None:
    """An assignment the process will never read holds the job's protocol key: remove it."""
    (slot / "assignment.json").unlink(missing_ok=True)


def _await(slot: Path, pid: int, ticks: int) -> WarmProcess | None:
    """The handle of the pool process once it accepted its assignment; None when it refused, died, or went
    ``CLAIM_ACK`` seconds without running before it accepted (then it is killed)."""
    watch = AnswerWatch(pid, CLAIM_ACK, CLAIM_LIMIT)
    while not watch.wedged():
        if (slot / "accepted").exists():
            return WarmProcess(pid, ticks, slot)
        if (slot / "refused").exists() or not process_alive(pid, ticks):
            _unsent(slot)
            return None
        time.sleep(0.002)
    try:  # wedged (frozen, or stuck before it could answer): never let it serve late
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _unsent(slot)
    return None


# ---------------------------------------------------- claimed by the submitting process (local_handover)
def reserve_pool(
    pool: str | os.PathLike, envs: Mapping[str, Mapping[str, str]], executable: str
) -> dict[str, dict]:
    """Claim one idle pool process of its import key for each replica of ``envs`` that has one:
    ``{replica: entry}`` (given its assignment later by :func:`send_pool`)."""
    pool = Path(pool)
    try:
        idle = sorted(os.listdir(pool / "idle"))
    except OSError:
        return {}
    out: dict[str, dict] = {}
    for name, env in envs.items():
        key = import_key(env, executable)
        for marker in [m for m in idle if m.startswith(key + ".")]:
            idle.remove(marker)
            try:
                os.rename(pool / "idle" / marker, pool / "claimed" / marker)
            except OSError:
                continue  # another claimer took it, or it expired
            out[name] = {
                "slot": str(pool / "slots" / marker.split(".", 1)[1]),
                "marker": str(pool / "claimed" / marker),
            }
            break
    return out


def send_pool(pooled: Mapping[str, dict], assignments: Mapping[str, dict]) -> dict[str, dict]:
    """Give each reserved pool process its replica's assignment; the entries that went out, with the
    process's pid and start ticks (the others are released: their replicas start otherwise)."""
    sent = {}
    for name, entry in pooled.items():
        got = _send(Path(entry["slot"]), assignments[name])
        _unlink(entry["marker"])
        if got is not None:
            sent[name] = {**entry, "pid": got[0], "ticks": got[1]}
    return sent


def await_pool_process(entry: Mapping) -> WarmProcess | None:
    """The supervisor's side of :func:`send_pool`: the replica's handle once its pool process accepted."""
    return _await(Path(entry["slot"]), int(entry["pid"]), int(entry["ticks"]))


def release_pool_process(entry: Mapping, kill: bool = False) -> None:
    """A reserved pool process that will not serve: its marker withdrawn, the process killed when asked."""
    _unlink(entry["marker"])
    if kill:
        try:
            info = json.loads((Path(entry["slot"]) / "info.json").read_text())
            if process_alive(int(info["pid"]), int(info["start_ticks"])):
                os.kill(int(info["pid"]), signal.SIGKILL)
        except (OSError, ValueError, KeyError, TypeError):
            pass


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# --------------------------------------------------------------------------- the owner's side
def _event_type(line: bytes) -> str | None:
    try:
        return json.loads(line).get("type")
    except (ValueError, AttributeError):
        return None


def wait_refill_moment(status_path: Path, replicas: int, poll: float = 0.1) -> str:
    """Block until a refill after the launch of the job of ``status_path`` (its record's ``status.json``)
    with ``replicas`` replicas takes no core from it: its first metric event when the replicas leave a core
    of this machine free (``"metric"``), else its end (``"ended"``); also when it trained
    :data:`FIRST_POINT_WAIT` s without a point and leaves a core free (``"no point"``), or never started
    within :data:`REFILL_WAIT` s (``"timeout"``)."""
    events_path = status_path.parent / "events.jsonl"
    spare_core = replicas < usable_cores()
    deadline = time.monotonic() + REFILL_WAIT
    running_since = None
    offset, partial = 0, b""
    while running_since is None or spare_core:
        if time.monotonic() > deadline:
            return "timeout"
        if spare_core:  # the first metric point is the moment
            try:
                with open(events_path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                data = b""
            offset += len(data)
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            if any(b"metric" in line and _event_type(line) == "metric" for line in lines):
                return "metric"
        phase = _phase(status_path)
        if phase in ENDED_PHASES:
            return "ended"
        if phase not in (None, "pending"):
            running_since = running_since or time.monotonic()
            if spare_core and time.monotonic() - running_since > FIRST_POINT_WAIT:
                return "no point"
        time.sleep(poll)
    while _phase(status_path) not in ENDED_PHASES:  # training takes every core: wait for the job's end
        if not status_path.parent.is_dir():
            return "ended"  # deleted
        time.sleep(ENDED_POLL)
    return "ended"


def _phase(status_path: Path) -> str | None:
    try:
        return json.loads(status_path.read_text()).get("phase")
    except (OSError, ValueError):
        return None


def processes_fitting(memory: int) -> int:
    """How many pool processes ``memory`` bytes hold, after the reserve left to everything else."""
    return max(0, (memory - MEMORY_RESERVE) // PROCESS_RSS)


def pool_size_problem(n: int, total: int | None = None) -> str | None:
    """One sentence when ``n`` warm processes could never fit in this machine's memory (``total`` bytes,
    default its ``MemTotal``, less the reserve the pool leaves to everything else); None when they could.
    What is available at a refill is checked then (:attr:`WarmPool.note`)."""
    total = total_memory() if total is None else total
    if total is None:
        return None
    most = processes_fitting(total)
    if n <= most:
        return None
    return (
        f"warm_pool {n} is more than this machine can hold: each warm process takes about "
        f"{PROCESS_RSS >> 20} MB and it has {total >> 20} MB of memory in all; use at most {most}, or 0 to "
        "turn the pool off."
    )


_mem_available = available_memory  # the one reader of MemAvailable; this name is what the budget calls


def _rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class WarmPool:
    """The pool processes this process owns under one records root (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.dir = pool_dir(root)
        self.children: dict[str, subprocess.Popen] = {}  # slot id -> process
        self.keys: dict[str, str] = {}  # slot id -> import key
        self.note: str | None = None  # why the pool is smaller than asked (memory budget)
        self.lock = threading.Lock()

    # starting ---------------------------------------------------------------------
    def _spawn(self, env: Mapping[str, str], idle: float) -> str:
        for sub in ("slots", "idle", "claimed"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        slot_id = uuid.uuid4().hex[:12]
        slot = self.dir / "slots" / slot_id
        slot.mkdir()
        key = import_key(env)
        child_env = import_env(env)
        if uses_tf_keras(env):  # as runner.prepare_process_env sets them before importing TensorFlow
            child_env["TF_USE_LEGACY_KERAS"] = "1"
        else:
            child_env.pop("TF_USE_LEGACY_KERAS", None)
            child_env["KERAS_BACKEND"] = "tensorflow"
        if env.get("TFK8S_STRATEGY") == "parameter_server":
            child_env["GRPC_FAIL_FAST"] = "use_caller"
        child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with open(slot / "pool.log", "ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tfk8s_jupyter.backends.local_pool_process",
                    str(slot),
                    key,
                    f"{float(idle):g}",
                ],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(slot),
                env=child_env,
                close_fds=True,
                **OWN_PROCESS_GROUP,
            )
        self.children[slot_id] = proc
        self.keys[slot_id] = key
        threading.Thread(target=self._reap, args=(slot_id, proc), name="tfk8s-pool-reap", daemon=True).start()
        return slot_id

    def _reap(self, slot_id: str, proc: subprocess.Popen) -> None:
        proc.wait()
        with self.lock:
            self.children.pop(slot_id, None)
            self.keys.pop(slot_id, None)
        slot = self.dir / "slots" / slot_id
        if not (slot / "accepted").exists():  # a claimed one's slot is the supervisor's to remove
            shutil.rmtree(slot, ignore_errors=True)

    def waiting(self) -> dict[str, str]:
        """slot id -> key of the processes this pool owns that are starting or idle (not claimed)."""
        with self.lock:
            items = list(self.keys.items())
        return {
            s: k
            for s, k in items
            if s in self.children
            and self.children[s].poll() is None
            and not (self.dir / "slots" / s / "accepted").exists()
        }

    def ensure(self, envs: list[Mapping[str, str]], idle: float) -> list[str]:
        """Start what is missing so that one unclaimed process waits for each of ``envs`` (by key);
        returns the new slot ids. Capped by the memory budget (:attr:`note` says so)."""
        if self.waiting() and not (self.dir / "idle").is_dir():
            self.stop(timeout=2.0)  # the pool directory was deleted under them: nobody can claim them
        want: dict[str, list[Mapping[str, str]]] = {}
        for env in envs:
            want.setdefault(import_key(env), []).append(env)
        have: dict[str, int] = {}
        for key in self.waiting().values():
            have[key] = have.get(key, 0) + 1
        missing = [e for key, es in want.items() for e in es[have.get(key, 0) :]]
        available = _mem_available()
        self.note = None
        if available is not None:
            budget = processes_fitting(available)
            if budget < len(missing):
                self.note = (
                    f"the warm pool started {budget} of {len(missing)} process(es): each takes about "
                    f"{PROCESS_RSS >> 20} MB and this machine has {available >> 20} MB available; free "
                    "memory or set c.TFK8s.warm_pool lower."
                )
                missing = missing[:budget]
        with self.lock:
            return [self._spawn(env, idle) for env in missing]

    def ready(self, timeout: float = 60.0) -> bool:
        """Wait until every unclaimed process of this pool is idle (TensorFlow imported)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = self.waiting()
            idle = set(os.listdir(self.dir / "idle")) if (self.dir / "idle").is_dir() else set()
            if all(f"{k}.{s}" in idle for s, k in waiting.items()):
                return True
            time.sleep(0.05)
        return False

    def refill_after(
        self, status_path: Path, replicas: int, envs: list[Mapping[str, str]], idle: float
    ) -> None:
        """In a background thread: :meth:`ensure` once the refill takes no core from the launched job of
        ``replicas`` replicas (:func:`wait_refill_moment`)."""
        threading.Thread(
            target=lambda: (wait_refill_moment(status_path, replicas), self.ensure(envs, idle)),
            name="tfk8s-pool-refill",
            daemon=True,
        ).start()

    # stopping ---------------------------------------------------------------------
    def stop(self, timeout: float = 10.0) -> int:
        """End every unclaimed process of this pool (claimed ones are replicas of running jobs);
        returns how many were waiting."""
        waiting = self.waiting()
        with self.lock:
            procs = {s: self.children[s] for s in waiting if s in self.children}
        for proc in procs.values():
            try:
                proc.stdin.close()  # EOF: the process withdraws its idle marker and exits
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for slot_id, proc in procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if not (self.dir / "slots" / slot_id / "accepted").exists():
                    proc.kill()
        return len(procs)


def list_pool(root: str | os.PathLike) -> list[dict]:
    """Every pool process under ``root`` (any owner): slot, pid, state (starting, idle, claimed, gone),
    key, owner pid, seconds since it started, RSS bytes, and the job it serves when claimed."""
    base = pool_dir(root)
    try:
        slots = sorted(os.listdir(base / "slots"))
        idle = set(os.listdir(base / "idle"))
    except OSError:
        return []
    out = []
    for slot_id in slots:
        slot = base / "slots" / slot_id
        try:
            info = json.loads((slot / "info.json").read_text())
        except (OSError, ValueError):
            continue  # still importing TensorFlow, or being removed
        pid, ticks = info.get("pid"), info.get("start_ticks")
        alive = process_alive(pid, ticks)
        state = "gone"
        job = None
        if alive and (slot / "accepted").exists():
            state = "claimed"
            try:
                env = json.loads((slot / "job.json").read_text())
                job = f"{env.get('TFK8S_JOB')} {env.get('TFK8S_ROLE')}-{env.get('TFK8S_INDEX')}"
            except (OSError, ValueError, KeyError):
                pass
        elif alive:
            state = "idle" if f"{info.get('key')}.{slot_id}" in idle else "starting"
        out.append(
            {
                "slot": slot_id,
                "pid": pid,
                "state": state,
                "key": info.get("key"),
                "keras": info.get("keras"),
                "owner": info.get("owner"),
                "age": round(time.time() - float(info.get("ready_at") or time.time()), 1),
                "idle_timeout": info.get("idle"),
                "rss": _rss(pid) if alive else None,
                "job": job,
            }
        )
    return out


def sweep(root: str | os.PathLike) -> None:
    """Remove what dead pool processes left: slots whose process is gone and was never claimed, and idle
    markers without a live process (the pool directory deleted or a process killed)."""
    base = pool_dir(root)
    try:
        markers = os.listdir(base / "idle")
    except OSError:
        return
    for name in markers:
        slot = base / "slots" / name.split(".", 1)[-1]
        try:
            info = json.loads((slot / "info.json").read_text())
            alive = process_alive(info.get("pid"), info.get("start_ticks"))
        except (OSError, ValueError):
            alive = False
        if not alive:
            try:
                os.unlink(base / "idle" / name)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise


_pools: dict[str, WarmPool] = {}


def owned_pool(root: str | os.PathLike) -> WarmPool:
    """This process's pool under ``root`` (created on first use)."""
    key = str(Path(root).resolve())
    if key not in _pools:
        for other in list(_pools):  # one records root at a time: a pool for an old root serves no job
            _pools.pop(other).stop()
        _pools[key] = WarmPool(root)
    return _pools[key]


def owned_pools() -> list[WarmPool]:
    return list(_pools.values())
