"""The submitting process's hand-over of a job to processes that are already running: a kept set of the
job's shape (:mod:`.local_keep`) or idle warm pool processes (:mod:`.local_pool`).

``submit`` claims them before it starts the job's supervisor (:func:`claim_at_submit`: a kept set's idle
marker, or one pool process's per replica, renamed into ``claimed/``) and gives them their assignments as
soon as the supervisor's pid is known (:meth:`SubmitClaim.hand_over`), so they start the run while the
supervisor starts — a Python process and its imports, 0.1-0.25 s measured, which were on the path to the
run's first metric point when the supervisor claimed them itself. The supervisor then waits for each one
to accept (:func:`adopt`), exactly as when it claimed it: a member or pool process that died, is frozen or
does not accept in time is replaced by a cold start, and a kept set with a bad member is killed whole.

``local.json`` says what was claimed (``keep.claimed``; ``pooled``: replica -> pool slot); ``handover.json`` in the record is
the submitting process's word that the assignments went out (or why not). A supervisor that never gets that
word (the submitting process died in between) discards the claim and starts the job cold.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from ..records import JobRecord, write_json_atomic
from .local_env import job_cwd, job_replica_env
from .local_keep import KEEP_VAR, KeepPlan, KeptSet
from .local_pool import await_pool_process, release_pool_process, reserve_pool, send_pool
from .local_processes import proc_start_ticks, process_alive
from .local_stall import say

HANDOVER_FILE = "handover.json"  # in the job's record: the submitting process's word on the hand-over
HANDOVER_WAIT = 10.0  # seconds the supervisor waits for that word


def claim_at_submit(
    spec, job_dir: Path, local: dict, base_env: Mapping[str, str], runs_runner: bool
) -> SubmitClaim | None:
    """The submitting process, before it starts the job's supervisor: claim a kept set of the job's shape
    (health-checked), or else one idle pool process per replica, for it. Adds ``keep`` (the set this job's
    replicas will be kept in, the shape, the claimed set if any) and ``pooled`` to ``local`` (the job's
    ``local.json``-to-be); returns the claim to hand over once the supervisor runs, or None."""
    if not runs_runner:
        return None
    names = spec.replica_names
    envs = None
    plan = None
    seconds = float(local.get("keep_warm") or 0)
    owner = local.get("owner")
    if seconds > 0 and owner:
        plan = KeepPlan(job_dir.parent, job_dir.name, seconds, owner)
        envs = {n: job_replica_env(spec, job_dir, local, n, local["cluster"], base_env) for n in names}
        kept = plan.claim(envs, sys.executable)
        local["keep"] = {"set": plan.set_id, "shape": plan.shape, "note": plan.note}
        if kept is not None:
            local["keep"]["claimed"] = {"dir": str(kept.dir), "marker": str(kept.marker)}
            return SubmitClaim(spec, job_dir, local, base_env, plan, kept=kept)
    if local.get("warm_pool"):
        if envs is None:
            envs = {n: job_replica_env(spec, job_dir, local, n, local["cluster"], base_env) for n in names}
        pooled = reserve_pool(local["warm_pool"], envs, sys.executable)
        if pooled:
            local["pooled"] = pooled
            return SubmitClaim(spec, job_dir, local, base_env, plan, pooled=pooled)
    return None


class SubmitClaim:
    """What the submitting process claimed for one job (:func:`claim_at_submit`)."""

    def __init__(self, spec, job_dir: Path, local: dict, base_env, plan, kept=None, pooled=None):
        self.spec, self.job_dir, self.local, self.base_env = spec, job_dir, local, base_env
        self.plan: KeepPlan | None = plan
        self.kept: KeptSet | None = kept
        self.pooled: dict[str, dict] = pooled or {}

    def hand_over(self, supervisor: int) -> None:
        """Give every claimed process its assignment, as the job's replica under supervisor pid
        ``supervisor``, and tell the supervisor how that went (``HANDOVER_FILE``)."""
        ticks = proc_start_ticks(supervisor)
        cluster = self.kept.cluster if self.kept is not None else self.local["cluster"]
        record = JobRecord(self.job_dir.name, self.job_dir.parent)
        assignments = {}
        for name in self.spec.replica_names:
            env = job_replica_env(self.spec, self.job_dir, self.local, name, cluster, self.base_env)
            if self.plan is not None:
                env[KEEP_VAR] = self.plan.env_var(name, (supervisor, ticks))
            assignments[name] = {
                "env": env,
                "cwd": job_cwd(self.local, self.job_dir),
                "log": str(record.log_path(name)),
                "watch_pid": supervisor,
                "watch_ticks": ticks,
            }
        word: dict = {}
        if self.kept is not None:
            for name in assignments:
                (self.plan.set_dir / name).mkdir(parents=True, exist_ok=True)
            problem = self.kept.send(assignments)
            word["kept"] = {"sent": problem is None, "problem": problem}
        if self.pooled:
            word["pooled"] = send_pool(self.pooled, assignments)
        write_json_atomic(self.job_dir / HANDOVER_FILE, word)

    def abandon(self) -> None:
        """The job did not start after all: what was claimed cannot serve."""
        if self.kept is not None:
            self.kept.discard()
        for entry in self.pooled.values():
            release_pool_process(entry, kill=True)


def _word(sup) -> dict | None:
    """The submitting process's word on the hand-over, or None when it never came."""
    path = sup.record.dir / HANDOVER_FILE
    owner = sup.local.get("owner") or [0]
    deadline = time.monotonic() + HANDOVER_WAIT
    while time.monotonic() < deadline:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        if not process_alive(owner[0], owner[1] if len(owner) > 1 else None) and not path.exists():
            return None
        time.sleep(0.002)
    return None


def _claimed_set(sup) -> KeptSet | None:
    claimed = (sup.local.get("keep") or {}).get("claimed") if sup.keep is not None else None
    return KeptSet(Path(claimed["dir"]), Path(claimed["marker"])) if claimed else None


def adopt(sup) -> None:
    """``sup`` (the job's Supervisor), before it starts its replicas: take what the submitting process
    handed over — a kept set, once every member accepted (``sup.kept_procs``), or pool processes, each
    awaited when its replica starts (``sup.pooled``); otherwise every replica starts as usual."""
    kept = _claimed_set(sup)
    note = (sup.local.get("keep") or {}).get("note") if sup.keep is not None else None
    if kept is None and note:
        say(f"kept replicas not used ({note}); starting anew")
    if kept is None and not sup.local.get("pooled"):
        return
    word = _word(sup)
    if word is None:
        if kept is not None:
            kept.discard()
        for entry in (sup.local.get("pooled") or {}).values():
            release_pool_process(entry, kill=True)
        say("the submitting process did not hand the claimed processes over; starting anew")
        return
    sup.pooled = dict(word.get("pooled") or {})
    if kept is None:
        return
    if not (word.get("kept") or {}).get("sent"):
        say(f"kept replicas not used ({(word.get('kept') or {}).get('problem')}); starting anew")
        return
    handles, problem = kept.await_accept({r.name: sup.keep.set_dir / r.name for r in sup.replicas})
    if problem:
        say(f"kept replicas not used ({problem}); starting anew")
        return
    sup.cluster = kept.cluster
    sup.kept_procs = handles
    for r in sup.replicas:
        r.status.host = sup.cluster[r.status.role][r.status.index]
    sup.local["cluster"] = sup.cluster
    write_json_atomic(sup.record.dir / "local.json", sup.local)
    say(f"running on kept replicas {', '.join(f'{n} (pid {h.pid})' for n, h in handles.items())}")


def pooled_process(sup, name: str):
    """The pool process handed over for replica ``name`` once it accepted, or None (start it otherwise)."""
    entry = sup.pooled.pop(name, None)
    return await_pool_process(entry) if entry else None


def drop(sup) -> None:
    """``sup`` ends before it ran anything: what was handed to it cannot serve."""
    if not (sup.record.dir / HANDOVER_FILE).exists():
        return
    kept = _claimed_set(sup)
    if kept is not None:
        kept.discard()
    for entry in (sup.local.get("pooled") or {}).values():
        release_pool_process(entry, kill=True)


__all__ = [
    "HANDOVER_FILE",
    "SubmitClaim",
    "adopt",
    "claim_at_submit",
    "drop",
    "pooled_process",
]
