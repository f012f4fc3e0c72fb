"""Kept replicas of the local backend: after a job succeeds, or fails with an error its cell raised that left
every process fit to run again (see "After a cell error"), its replica processes — same roles, ports and
environment — stay for ``c.TFK8s.keep_warm`` seconds and run the next job of the same shape as a new job
(its own record, logs, curve and checkpoints), skipping TensorFlow's import, the server start and the
cluster's set-up.

Layout of ``<records root>/.kept/``:

- ``sets/<set>/``: one kept set per job that kept its replicas: ``set.json`` (shape key, cluster, owner,
  members with pid and start time, when it was kept) and one member directory per replica (``ready.json``
  written by the replica when it can be kept, ``failed.json`` beside it when its run ended with a cell error
  (see "After a cell error"), ``go`` its FIFO, ``kept`` when the supervisor kept it,
  ``assignment.json`` and ``accepted`` when the next job claims it);
- ``<job record>/keep/<replica>``: each training replica's word after its reset, ``ok`` or the line saying
  why it is not kept; the job's supervisor waits for them after keeping the set and says in the replica
  table what happened (:func:`explain_unkept`, the one writer of "not kept" there);
- ``idle/<shape>.<set>``: the marker of a set ready to serve; claiming is the atomic ``rename`` of the
  marker into ``claimed/``, so two claimers never get one set; an expiring set renames it into
  ``retired/``. The process that submits the next job claims it and hands the members their assignments
  as soon as the job's supervisor runs (:mod:`.local_handover`); the supervisor waits for them to accept.

**The shape** of a job is its strategy, its replica names (roles and counts) and, per replica, the pool's
import key (:func:`~.local_pool.import_key`: Python, the environment applied before TensorFlow is imported
— ``--env``, GPU slice, Keras flavour), plus the owner (the process that submitted): a set only serves
jobs of its owner, and dies with it. A job of the same shape takes the set's cluster (its ports).

**What does not carry over.** Each run gets the cell's fresh namespace (a new ``__main__``), its own
working directory, the runner's patches made afresh for the new strategy, Keras sessions cleared, the
default strategy reset, random seeds unseeded as at a cold start, modules the cell imported from its
folders forgotten, and every object of the run collected (see
:func:`~.local_keep_process.reset_process`). A replica whose cell left a thread running or a file open is
not kept (:mod:`.local_keep_hygiene`): it says so in its log and exits as a cold replica would.

**Faults.** A member that died, is stopped (SIGSTOP: state ``T``) or goes :data:`CLAIM_ACK` seconds without
running before it accepts its assignment spoils the whole set (an all-reduce group cannot take a new peer): every
member is killed and the job starts cold with its own ports. Nothing waits on a stale process.

**After a cell error.** The commonest iteration is "the cell raised → fix → run again": a replica whose
cell raised an ordinary Python exception outside any training or distributed call (a typo, a Keras error
while building or compiling the model), or while Keras traced the first step of the run's first ``fit``
(data that does not fit the model, labels of the wrong rank, an unknown loss name: no collective of the
step ran, no closure went to the workers), is fit to run again (judged by the replica,
:func:`~.local_keep_judge.judge_failure`; a TensorFlow runtime error, a lost peer, any other error inside
``Model.fit``, ``strategy.run`` or a coordinator's ``schedule``/``join`` is not). It says so with
``failed.json`` in its member directory and waits to be kept. For the supervisor it has ended its run with
code 1: the job fails exactly as it would have (same phase, message, error event, record and logs). Then
(:func:`keep_after_error`) the set is kept when, within :data:`PARK_WAIT` seconds, every replica is
waiting to be kept — the others failed the same harmless way, or serve (parameter servers) — and passes the
same hygiene checks as after a success. Otherwise nothing is kept: a replica still running (an all-reduce
peer stuck in a collective the failed one never joined) is stopped as ever, and never kept; the ones
waiting exit with their code, and the table says why.

**Parameter servers.** Serving replicas keep their server (``server.join()`` never returns; a thread takes
the next assignment and moves their log); the kept chief creates a new ParameterServerStrategy and
ClusterCoordinator. The ps is not restarted: the previous run's variables are freed on it when the chief drops
its last reference to them. Measured (chief + 2 workers + 1 ps, a model with ~50 MB of variables and Adam
slots, 5 runs): without the reset the ps grew by 60-75 MB per run (its variables stayed: the runner's
``Runtime`` of the old run, holding the model, stayed reachable through a callback class TensorFlow keeps,
and ``DestroyResourceOp`` is a no-op on TensorFlow's ref-counted variable handles); with the old
ClusterCoordinator stopped and the old ``Runtime`` emptied, no variable of the previous run is left in the
chief (``TFK8S_KEEP_DEBUG=1`` prints the count) and the ps stayed within noise (934, 927, 946 MB).

**All-reduce.** A kept worker sets up a new MultiWorkerMirroredStrategy over the same cluster, with Keras 3
(with the runner's keras#20585 patches) as with tf_keras. Setting it up resets the process's collective
state, so the kept workers wait for each other after it (:func:`.local_keep_process.strategy_barrier`):
without that, a worker that was faster sent the variables' broadcast into its peer's old state and the run
failed with "Delete called on non-empty BufRendezvous" (measured).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from ..records import write_json_atomic
from .base import FAILED, R_STOPPED, R_SUCCEEDED, SUCCEEDED
from .local_keep_process import KEEP_VAR, write_fifo
from .local_pool import CLAIM_ACK, MEMORY_RESERVE, RUNNER_MODULE, WarmProcess, _mem_available, import_key
from .local_processes import AnswerWatch, proc_start_ticks, process_alive, process_state
from .local_stall import say

KEEP_DIR = ".kept"
RESET_WAIT = 30.0  # seconds a member still resetting after its last run (``resetting``) may take
READY_WAIT = 5.0  # seconds the supervisor waits for every replica to be keepable once training ended
PARK_WAIT = 2.0  # seconds, once the job failed with a cell error, every replica has to be waiting to be kept
VERDICT_DIR = "keep"  # in a job's record: one file per replica, its word on being kept (``ok`` or why not)


def keep_dir(root: str | os.PathLike) -> Path:
    return Path(root) / KEEP_DIR


def shape_key(strategy: str, envs: Mapping[str, Mapping[str, str]], executable: str, owner) -> str:
    """The key of a job's shape: equal keys, interchangeable replica sets (see the module docstring)."""
    text = json.dumps(
        [
            strategy,
            list(owner or []),
            sorted((name, import_key(env, executable)) for name, env in envs.items()),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _kill(pid: int | None, ticks: int | None) -> None:
    if pid and process_alive(pid, ticks):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class KeepPlan:
    """What one job knows about keeping: its set directory, the owner, the seconds, its shape. Made by the
    submitting process (:func:`claim_at_submit`), which passes the set and the shape on to the job's
    supervisor in ``local.json``."""

    def __init__(
        self,
        root: Path,
        job: str,
        seconds: float,
        owner: list,
        set_id: str | None = None,
        shape: str | None = None,
    ):
        self.root = keep_dir(root)
        self.verdicts = Path(root) / job / VERDICT_DIR
        self.seconds = seconds
        self.owner = owner
        self.set_id = set_id or f"{job}-{uuid.uuid4().hex[:8]}"
        self.set_dir = self.root / "sets" / self.set_id
        self.shape: str | None = shape
        self.note: str | None = None  # why the job did not run on a kept set, when it tried

    @classmethod
    def from_local(cls, local: dict, job_dir: Path, command: list[str]) -> KeepPlan | None:
        seconds = float(local.get("keep_warm") or 0)
        owner = local.get("owner")
        if seconds <= 0 or not owner or list(command[1:]) != ["-m", RUNNER_MODULE]:
            return None
        info = local.get("keep") or {}
        return cls(job_dir.parent, job_dir.name, seconds, owner, info.get("set"), info.get("shape"))

    def env_var(self, replica: str, supervisor: tuple[int, int | None] | None = None) -> str:
        """``TFK8S_KEEP`` of one replica of this job (``supervisor``: its pid and start ticks; default this
        process, the supervisor)."""
        pid, ticks = supervisor or (os.getpid(), proc_start_ticks(os.getpid()))
        return json.dumps(
            {
                "slot": str(self.set_dir / replica),
                "verdict": str(self.verdicts / replica),
                "marker": str(self.root / "idle" / f"{self.shape}.{self.set_id}"),
                "owner": self.owner[0],
                "owner_ticks": self.owner[1],
                "seconds": self.seconds,
                "supervisor": pid,
                "supervisor_ticks": ticks,
            }
        )

    # the next job's side --------------------------------------------------------------------
    def claim(self, envs: Mapping[str, dict[str, str]], executable: str) -> KeptSet | None:
        """Take a kept set of this job's shape (health-checked), or None (start cold)."""
        self.shape = shape_key(envs[next(iter(envs))].get("TFK8S_STRATEGY", ""), envs, executable, self.owner)
        idle = self.root / "idle"
        try:
            markers = sorted(n for n in os.listdir(idle) if n.startswith(self.shape + "."))
        except OSError:
            return None
        for sub in ("claimed", "retired"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for name in markers:
            try:
                os.rename(idle / name, self.root / "claimed" / name)
            except OSError:
                continue  # another supervisor took it, or it expired
            kept = KeptSet(self.root / "sets" / name.split(".", 1)[1], self.root / "claimed" / name)
            problem = kept.check(set(envs))
            if problem is None:
                return kept
            self.note = problem
            kept.discard()
        return None

    # the end of this job -------------------------------------------------------------------
    def ready(self, names: list[str], pids: dict[str, int]) -> list[str]:
        """The replicas (of ``names``) that wait to be kept, by their ``ready.json``."""
        out = []
        for name in names:
            try:
                info = json.loads((self.set_dir / name / "ready.json").read_text())
            except (OSError, ValueError):
                continue
            if info.get("pid") == pids.get(name) and process_alive(info["pid"], info.get("start_ticks")):
                out.append(name)
        return out

    def parked(self, name: str, pid: int) -> int | None:
        """The code replica ``name`` (process ``pid``) ended its run with when it waits to be kept after a
        cell error (``failed.json``), else None."""
        path = self.set_dir / name / "failed.json"
        if not path.exists():
            return None
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return int(info["code"]) if info.get("pid") == pid and info.get("code") else None

    def publish(self, cluster: dict, names: list[str]) -> dict[str, dict]:
        """Keep the set: mark every member kept, then make the set claimable; returns the members."""
        members = {}
        for name in names:
            info = json.loads((self.set_dir / name / "ready.json").read_text())
            (self.set_dir / name / "kept").touch()
            members[name] = {
                k: info.get(k) for k in ("pid", "start_ticks", "key", "serving", "keras", "job", "replica")
            }
        write_json_atomic(
            self.set_dir / "set.json",
            {
                "shape": self.shape,
                "cluster": cluster,
                "owner": self.owner,
                "members": members,
                "kept_at": time.time(),
                "seconds": self.seconds,
            },
        )
        (self.root / "idle").mkdir(parents=True, exist_ok=True)
        (self.root / "idle" / f"{self.shape}.{self.set_id}").touch()
        return members

    def withdraw(self, members: dict[str, dict], kill: bool = False) -> None:
        """A published set that cannot serve: take its idle marker back and end its members (told to exit;
        ``kill``: killed). A set a job claimed meanwhile is the claimer's: it sees the bad member and starts
        cold."""
        marker = self.root / "idle" / f"{self.shape}.{self.set_id}"
        retired = self.root / "retired" / marker.name
        try:
            retired.parent.mkdir(parents=True, exist_ok=True)
            os.rename(marker, retired)
        except OSError:
            if not (self.root / "claimed" / marker.name).exists():  # its member withdrew it already
                shutil.rmtree(self.set_dir, ignore_errors=True)
            return
        for name, m in members.items():
            if kill:
                _kill(m.get("pid"), m.get("start_ticks"))
            else:
                write_fifo(self.set_dir / name / "go", b"exit\n")
        shutil.rmtree(self.set_dir, ignore_errors=True)
        try:
            os.unlink(retired)
        except OSError:
            pass

    def release(self, names: list[str]) -> None:
        """Tell the members waiting to be kept that they are not: they exit."""
        for name in names:
            write_fifo(self.set_dir / name / "go", b"exit\n")
        shutil.rmtree(self.set_dir, ignore_errors=True)


class KeptSet:
    """A claimed kept set: hand every member its assignment, or discard the set."""

    def __init__(self, directory: Path, marker: Path):
        self.dir = directory
        self.marker = marker
        try:
            self.info = json.loads((directory / "set.json").read_text())
        except (OSError, ValueError):
            self.info = {}
        self.cluster: dict = self.info.get("cluster") or {}
        self.members: dict = self.info.get("members") or {}

    def check(self, names: set[str]) -> str | None:
        """None when every member is alive, not stopped and of this job's replica set; else why not."""
        if set(self.members) != names:
            return "the kept set does not have this job's replicas"
        for name, m in self.members.items():
            if not process_alive(m.get("pid"), m.get("start_ticks")):
                return f"kept {name} (pid {m.get('pid')}) is gone"
            state = process_state(m["pid"])
            if state in ("T", "t", "Z"):
                return f"kept {name} (pid {m['pid']}) is stopped (state {state})"
        return None

    def send(self, assignments: dict[str, dict]) -> str | None:
        """Give each member its assignment (it starts the run at once); None, or why not with the whole
        set killed."""
        for name, assignment in assignments.items():
            member = self.dir / name
            write_json_atomic(member / "assignment.json", assignment)
            os.chmod(member / "assignment.json", 0o600)
        for name in assignments:
            if not write_fifo(self.dir / name / "go", b"go\n"):
                self.discard()
                return f"kept {name} no longer reads its FIFO"
        return None

    def await_accept(self, slots: dict[str, Path]) -> tuple[dict[str, WarmProcess], str | None]:
        """Once :meth:`send` gave every member its assignment: ``({replica: handle}, None)`` when all
        accepted, else ``({}, why)`` with the whole set killed. A handle reads its process's exit code from
        ``exit.json`` in the member's directory of the new job (``slots``)."""
        watches = {name: AnswerWatch(self.members[name]["pid"], CLAIM_ACK, RESET_WAIT) for name in slots}
        waiting = set(slots)
        while waiting:
            for name in sorted(waiting):
                m = self.members[name]
                if (self.dir / name / "accepted").exists():
                    waiting.discard(name)
                    continue
                if (self.dir / name / "resetting").exists() and process_state(m["pid"]) not in ("T", "t"):
                    watches[name].moving()  # still cleaning up after its last run
                if not process_alive(m["pid"], m.get("start_ticks")):
                    self.discard()
                    return {}, f"kept {name} (pid {m['pid']}) died while it was claimed"
                if watches[name].wedged():
                    self.discard()
                    return (
                        {},
                        f"kept {name} did not accept its assignment (wedged: {CLAIM_ACK:g} s without running)",
                    )
            time.sleep(0.002)
        handles = {
            name: WarmProcess(m["pid"], m["start_ticks"], slots[name]) for name, m in self.members.items()
        }
        self.forget()
        return handles, None

    def discard(self) -> None:
        """Kill every member (a set with a bad member cannot serve) and remove the set."""
        for m in self.members.values():
            _kill(m.get("pid"), m.get("start_ticks"))
        self.forget()

    def forget(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            os.unlink(self.marker)
        except OSError:
            pass


# ------------------------------------------------------------------------------------------ the supervisor's side
def _may_keep(sup) -> bool:
    """Whether ``sup``'s job may keep anything at all: memory, its owner alive, no resize stand-ins."""
    available = _mem_available()
    if available is not None and available < MEMORY_RESERVE:
        if getattr(sup, "keep_refused", False):
            return False  # said once already
        sup.keep_refused = True
        say(
            f"replicas not kept: {available >> 20} MB of memory available, under the {MEMORY_RESERVE >> 20} MB "
            "left free for everything else; end other kernels' jobs or set c.TFK8s.keep_warm = 0"
        )
        return False
    owner = sup.keep.owner
    if not process_alive(owner[0], owner[1] if len(owner) > 1 else None):
        return False  # the kernel that submitted is gone (restarted, or a script that submitted and left)
    if getattr(sup, "chief_stand_ins", None) is not None:
        return False  # servers kept through a resize probe the old chief's address, held by this supervisor
    return True


# A kept replica's word until its reset says what the cell left (then "kept for the next run ..." or why
# not). It is also what a cell's panel shows for good when its last look came before that word.
PENDING_KEEP = "kept for the next run of the same shape unless its reset finds something the cell left open"


def keep_at_end(sup, now: float) -> str | None:
    """``sup`` (the job's Supervisor), once training ended: "kept" when every replica waits to be kept
    (the set is published and the job ends), "wait" while some are not yet, "no" when they will not be
    (end the usual way). Nothing is kept when the machine's available memory is under the reserve the warm
    pool leaves to everything else (kept processes hold ~0.7 GB RSS each)."""
    if not _may_keep(sup):
        return "no"
    pids = {r.name: r.proc.pid for r in sup.replicas if r.alive}
    if len(pids) < len(sup.replicas):
        return "no"  # one ended (its cell left a thread running, or it failed): the job ends as usual
    ready = sup.keep.ready(list(pids), pids)
    if len(ready) < len(pids):
        return "wait" if now - sup.ended_at < READY_WAIT else "no"
    members = sup.keep.publish(sup.cluster, list(pids))
    sup.pump_events()
    for r in sup.replicas:
        r.status.state = R_SUCCEEDED
        r.status.message = f"finished; {PENDING_KEEP}"
    sup.status.end(SUCCEEDED, None)
    _settle(sup, members)
    sup.save()
    return "kept"


def keep_after_error(sup, message: str | None) -> bool:
    """``sup``'s job fails (``message``) with its cell's own error, and some replicas wait to be kept after
    it (``sup.parked``; see "After a cell error" above): keep the set when every replica is waiting to be
    kept within :data:`PARK_WAIT` seconds, end the job as failed and return True; else False (nothing was
    published: the supervisor ends the job the usual way, and the table says why)."""
    if not _may_keep(sup):
        return False
    deadline = time.monotonic() + PARK_WAIT
    while True:
        sup.mark_exited(sup.newly_exited())  # peers that fail the same way meanwhile
        pids = {r.name: r.proc.pid for r in sup.replicas if r.alive}
        if len(pids) < len(sup.replicas):
            return False  # one ended: a set that lost a member cannot serve
        if len(sup.keep.ready(list(pids), pids)) == len(pids):
            break
        if time.monotonic() > deadline:
            return False  # one still runs (a peer stuck in a collective): stopped by the job's end
        time.sleep(0.02)
    members = sup.keep.publish(sup.cluster, list(pids))
    sup.pump_events()
    for r in sup.replicas:
        if r.name not in sup.parked:  # serving replicas: stopped with the job, as ever, but kept
            r.status.state = R_STOPPED if members[r.name].get("serving") else R_SUCCEEDED
        r.status.message = PENDING_KEEP
    sup.status.end(FAILED, message)
    _settle(sup, members, FAILED)
    sup.save()
    return True


def _settle(sup, members: dict[str, dict], phase: str = SUCCEEDED) -> None:
    """:func:`_hear_members`, with the ended job's status ``settling`` (saved) meanwhile: its followers look
    again until the replicas' last word is in (``monitor.Monitor``). The caller saves the status after."""
    sup.status.settling = True
    sup.save()
    try:
        _hear_members(sup, members, phase)
    finally:
        sup.status.settling = False


def _hear_members(sup, members: dict[str, dict], phase: str) -> None:
    """Once the set is published (the job has ended): wait for every training member's word after its
    reset (:func:`unkept_reason`) and say in the replica table what happened — kept, or, when one member is
    not (a file its cell left open, it died, its reset took over :data:`RESET_WAIT` seconds), not kept for
    every replica of the set, which is withdrawn (no job can claim it; its members exit)."""
    plan = sup.keep
    deadline = time.monotonic() + RESET_WAIT
    waiting = {n for n, m in members.items() if not m.get("serving")}
    problems: dict[str, str] = {}
    wedged = False  # a member still resetting after RESET_WAIT: killed, as a claimer would
    while waiting:
        for name in sorted(waiting):
            m = members[name]
            word = _verdict(plan, name, m.get("pid"))
            if word is not None:
                waiting.discard(name)
                if word != "ok":
                    problems[name] = word
            elif not process_alive(m.get("pid"), m.get("start_ticks")):
                waiting.discard(name)
                if (plan.set_dir / name).is_dir():  # else: claimed by the next job, which saw it die
                    problems[name] = (
                        f"{name} is not kept for the next run: it ended before its reset finished."
                    )
        if waiting and time.monotonic() > deadline:
            wedged = True
            for name in sorted(waiting):
                problems[name] = (
                    f"{name} is not kept for the next run: its reset (collecting the cell's objects) took over "
                    f"{RESET_WAIT:g} s."
                )
            break
        if waiting:
            time.sleep(0.01)
    if not explain_unkept(sup, problems):
        for r in sup.replicas:
            r.status.message = f"kept for the next run of the same shape (keep_warm={plan.seconds:g} s)"
        say(f"job {phase}; replicas kept for {plan.seconds:g} s")
        return
    say(f"job {phase}; replicas not kept")
    plan.withdraw(members, kill=wedged)


def _verdict(plan: KeepPlan, name: str, pid: int | None = None) -> str | None:
    try:
        word = json.loads((plan.verdicts / name).read_text())
    except (OSError, ValueError):
        return None
    if pid is not None and word.get("pid") != pid:
        return None  # a word of an earlier process of that replica
    return str(word.get("verdict") or "").strip() or None


def unkept_reason(sup, name: str, pid: int | None = None) -> str | None:
    """Why replica ``name`` of ``sup``'s job (its process ``pid``, when given) is not kept, as it said it (a
    cell's leftovers, its cell's error), or None."""
    keep = getattr(sup, "keep", None)
    word = _verdict(keep, name, pid) if keep is not None else None
    return None if word in (None, "ok") else word


def explain_unkept(sup, problems: Mapping[str, str] | None = None) -> bool:
    """The one place that writes "not kept" into the replica table: once the job's replicas have ended or
    said their word, every replica of the set gets its own reason, or the reason of the member that kept
    the set from being kept. Returns whether something was not kept."""
    reasons = {r.name: unkept_reason(sup, r.name, getattr(r.status, "pid", None)) for r in sup.replicas}
    reasons.update(problems or {})
    reasons = {n: why for n, why in reasons.items() if why}
    if not reasons:
        return False
    first = reasons[sorted(reasons)[0]].removeprefix("tfk8s: ")
    for r in sup.replicas:
        own = reasons.get(r.name)
        if own:
            say(own.removeprefix("tfk8s: "))
        r.status.message = own or f"{r.name} is not kept for the next run either: {first}"
    return True


# ------------------------------------------------------------------------------------------ listing, stopping
def _sets(root: str | os.PathLike) -> list[tuple[Path, dict]]:
    base = keep_dir(root) / "sets"
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    out = []
    for name in names:
        try:
            out.append((base / name, json.loads((base / name / "set.json").read_text())))
        except (OSError, ValueError):
            continue  # its job is still running, or it is being removed
    return out


def list_kept(root: str | os.PathLike) -> list[dict]:
    """Every kept replica under ``root``, in the rows of :func:`~.local_pool.list_pool` (state ``kept``)."""
    from .local_pool import _rss

    rows = []
    for directory, info in _sets(root):
        for name, m in sorted(info.get("members", {}).items()):
            pid = m.get("pid")
            alive = process_alive(pid, m.get("start_ticks"))
            rows.append(
                {
                    "slot": f"{directory.name}/{name}",
                    "pid": pid,
                    "state": "kept" if alive else "gone",
                    "key": info.get("shape"),
                    "keras": m.get("keras"),
                    "owner": (info.get("owner") or [None])[0],
                    "age": round(time.time() - float(info.get("kept_at") or time.time()), 1),
                    "idle_timeout": info.get("seconds"),
                    "rss": _rss(pid) if alive else None,
                    "job": f"{m.get('job')} {m.get('replica')}",
                }
            )
    return rows


def stop_kept(root: str | os.PathLike, owner: int | None = None, timeout: float = 5.0) -> int:
    """End the kept sets under ``root`` (of ``owner`` when given); returns how many processes were kept."""
    base = keep_dir(root)
    stopped, retired = [], []
    (base / "retired").mkdir(parents=True, exist_ok=True)
    for directory, info in _sets(root):
        if owner is not None and (info.get("owner") or [None])[0] != owner:
            continue
        try:  # claim it first, so no job takes it meanwhile
            os.rename(
                base / "idle" / f"{info.get('shape')}.{directory.name}", base / "retired" / directory.name
            )
        except OSError:
            # no idle marker: a job is claiming the set (its members are being handed over: not ours to
            # end), or nothing of it is alive any more (removed below)
            if any(
                process_alive(m.get("pid"), m.get("start_ticks")) for m in info.get("members", {}).values()
            ):
                continue
        retired.append(directory)
        for name, m in info.get("members", {}).items():
            if process_alive(m.get("pid"), m.get("start_ticks")):
                write_fifo(directory / name / "go", b"exit\n")
                stopped.append(m)
    deadline = time.monotonic() + timeout
    while any(process_alive(m["pid"], m.get("start_ticks")) for m in stopped) and time.monotonic() < deadline:
        time.sleep(0.05)
    for m in stopped:
        _kill(m["pid"], m.get("start_ticks"))
    for directory in retired:
        shutil.rmtree(directory, ignore_errors=True)
        try:
            os.unlink(base / "retired" / directory.name)
        except OSError:
            pass
    return len(stopped)


def sweep(root: str | os.PathLike) -> None:
    """Remove sets none of whose members lives any more (killed, expired, owner gone)."""
    for directory, info in _sets(root):
        members = info.get("members", {}).values()
        if not any(process_alive(m.get("pid"), m.get("start_ticks")) for m in members):
            shutil.rmtree(directory, ignore_errors=True)
            try:
                os.unlink(keep_dir(root) / "idle" / f"{info.get('shape')}.{directory.name}")
            except OSError:
                pass


__all__ = ["KEEP_VAR", "KeepPlan", "KeptSet", "keep_dir", "list_kept", "shape_key", "stop_kept", "sweep"]
