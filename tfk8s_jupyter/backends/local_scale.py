"""Resizing a local job: ``job.scale(workers=N)``.

- **Parameter-server scale-down, live**: TensorFlow's ``ClusterCoordinator`` keeps training when a worker
  disappears (the worker's closures are rescheduled on the others), so the highest-index workers are
  stopped for good with no restart.
- **Parameter-server scale-up and any all-reduce resize, by checkpoint-restart** (:mod:`.local_resize`):
  the coordinator's worker set, and an all-reduce group, is fixed when it starts. Before asking, the
  kernel has its warm pool prepare a process for each replica the restart starts (:func:`warm_new_shape`:
  a parameter-server scale-up restarts only the chief and starts the added workers, its servers serve on),
  which the restart claims.

The kernel and the job's supervisor talk through two files in the job record:

- ``scale.request`` ``{"id", "workers", "at"}``: created by the kernel with an exclusive link (so a second
  resize while one is in progress is refused), removed by the supervisor once the resize is applied (a
  restart: once the new shape's run has started);
- ``scale.reply`` ``{"id", "ok", "message"}``: written atomically by the supervisor when it applied (live)
  or accepted (restart) the resize, or refused it.

A live scale-down (:func:`scale_down`) stops the workers (SIGTERM, then SIGKILL), marks them ``removed``
in the replica table (never restarted as a failure; their logs stay), and appends the resize to
``JobStatus.history`` (``{"time", "from", "to", "how": "live", "removed"}``).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path

from ..records import JobRecord, write_json_atomic
from ..spec import JobSpec
from .base import R_REMOVED, RUNNING, JobConflict, JobStatus, TFK8sError
from .local_capacity import REPLICA_MEMORY, available_memory, check_local_capacity

SCALE_REQUEST = "scale.request"
SCALE_REPLY = "scale.reply"
SCALE_WAIT = 20.0  # seconds the kernel waits for the supervisor to apply (or accept) a resize


class BadScale(TFK8sError, ValueError):
    """A worker count that is not a count (negative, not a whole number)."""


def live_workers(status: JobStatus) -> list:
    """The job's worker replicas that have not been removed, by index."""
    return sorted(
        (r for r in status.replicas if r.role == "worker" and r.state != R_REMOVED), key=lambda r: r.index
    )


def check_count(workers) -> int:
    """``workers`` as a count, or :class:`BadScale` in one sentence."""
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise BadScale(
            f"workers={workers!r} is not a whole number of workers; give one, such as job.scale(workers=2)."
        )
    if workers < 0:
        raise BadScale(f"workers={workers} is negative; give the number of workers to keep, at least 1.")
    return workers


def by_restart(strategy: str, current: int, workers: int) -> bool:
    """Whether going from ``current`` to ``workers`` workers needs a checkpoint-restart (else: live)."""
    return strategy != "parameter_server" or workers > current


def refusal(name: str, status: JobStatus, strategy: str, workers: int) -> str | None:
    """Why resizing the job to ``workers`` workers is refused now (one sentence), or ``None``."""
    if status.done:
        return f"job {name} has already {status.phase}; only a running job can be resized."
    if workers == 0:
        if strategy == "parameter_server":
            return (
                f"a parameter-server job needs at least one worker; scale job {name} to workers=1 or more, "
                "or stop it with job.stop()."
            )
        return f"an all-reduce job needs at least one worker; scale job {name} to workers=1 or more, or stop it with job.stop()."
    if status.phase != RUNNING:
        # The coordinator's worker set is fixed when it connects, and it waits for every worker it names.
        return (
            f"job {name} is still {status.phase} (its chief has not started training); resize it once "
            "job.status shows it running."
        )
    return None


def capacity_refusal(spec: JobSpec, status: JobStatus, workers: int) -> str | None:
    """Why this machine cannot run the job with ``workers`` workers (the rule of a submission, counting the
    memory the job's own replicas give back when they stop for the restart), or ``None``."""
    from ..spec import SpecError

    available = available_memory()
    if available is not None:
        running = len([r for r in status.replicas if r.state != R_REMOVED])
        available += running * REPLICA_MEMORY
    try:
        check_local_capacity(spec.with_(workers=workers), available=available)
    except SpecError as e:
        return str(e)
    return None


def no_checkpoint(name: str, epoch_now: int | None) -> str:
    """The refusal of a restart-resize before the job saved any checkpoint: when one will be."""
    where = f" (it is in epoch {epoch_now + 1} now)" if isinstance(epoch_now, int) else ""
    return (
        f"job {name} has no checkpoint to restart from yet: its first is saved at the end of epoch 1{where}, "
        "so resize it after that."
    )


# kernel side ----------------------------------------------------------------------------------------
def request_scale(record: JobRecord, status: JobStatus, spec: JobSpec, workers, wait: float = SCALE_WAIT):
    """Ask the job's supervisor to resize the job to ``workers`` workers; return the status showing the
    change (live), or the resize under way (restart: its ``message`` says so, its ``history`` gets the entry
    once the new shape runs)."""
    workers = check_count(workers)
    why = refusal(record.name, status, spec.strategy, workers)
    if why:
        raise JobConflict(why)
    current = len(live_workers(status))
    if (record.dir / SCALE_REQUEST).exists():
        raise JobConflict(in_progress(record.name))
    if workers == current:
        return status  # nothing to change
    if by_restart(spec.strategy, current, workers):
        why = capacity_refusal(spec, status, workers)
        if why:
            raise JobConflict(why)
        warm_new_shape(record, spec, workers, current)
    request = record.dir / SCALE_REQUEST
    ident = secrets.token_hex(8)
    fd, tmp = tempfile.mkstemp(dir=record.dir, prefix=f".{SCALE_REQUEST}.")
    with os.fdopen(fd, "w") as f:
        json.dump({"id": ident, "workers": workers, "at": time.time()}, f)
    try:
        os.link(tmp, request)  # exclusive: fails while another resize is in progress
    except FileExistsError:
        raise JobConflict(in_progress(record.name)) from None
    finally:
        os.unlink(tmp)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        reply = _read(record.dir / SCALE_REPLY)
        if reply.get("id") == ident:
            if not reply.get("ok"):
                raise JobConflict(str(reply.get("message")))
            return JobStatus.from_json(record.read_status() or {})
        now = JobStatus.from_json(record.read_status() or status.to_json())
        if now.done:  # the job ended before its supervisor got to the request
            request.unlink(missing_ok=True)
            raise JobConflict(
                f"job {record.name} has {now.phase} meanwhile; only a running job can be resized."
            )
        time.sleep(0.05)
    if _read(request).get("id") == ident:
        request.unlink(missing_ok=True)  # nobody picked it up: leave nothing behind
    raise TFK8sError(
        f"the supervisor of job {record.name} did not apply the resize within {wait:g} s; look at "
        "job.logs('supervisor') and job.status."
    )


def warm_new_shape(record: JobRecord, spec: JobSpec, workers: int, current: int | None = None) -> list[str]:
    """Have this process's warm pool prepare one process per replica the restart starts (the pool the job
    was launched with: none when it was launched without one, or ``c.TFK8s.warm_pool`` is 0 now), so the
    restart claims them; the supervisor lets the old run train until they are idle. A parameter-server
    scale-up from ``current`` workers keeps its ps and workers serving (:mod:`.local_resize_servers`): only
    the chief and the added workers; any other resize: every replica of the new shape. Returns the slot ids
    of the processes started (those already waiting count)."""
    from ..config import current_config
    from .local import detect_gpus, gpu_slices
    from .local_env import pool_envs
    from .local_pool import owned_pool

    pool = _read(record.dir / "local.json").get("warm_pool")
    config = current_config()
    if not pool or config.warm_pool == 0:
        return []
    new = spec.with_(workers=workers)
    slices = gpu_slices(new, detect_gpus()) if new.gpus else {}
    envs = pool_envs(new, slices)
    if new.strategy == "parameter_server" and current is not None and workers > current:
        serving = {f"ps-{i}" for i in range(new.ps)} | {f"worker-{i}" for i in range(current)}
        envs = [env for name, env in zip(new.replica_names, envs, strict=True) if name not in serving]
    try:
        return owned_pool(Path(pool).parent).ensure(envs, config.warm_pool_idle)
    except OSError:
        return []  # no warm processes: the restart starts cold


def in_progress(name: str) -> str:
    return f"a resize of job {name} is in progress already; wait until job.status shows it, then ask again."


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# supervisor side ------------------------------------------------------------------------------------
def poll(sup) -> None:
    """Apply a pending ``scale.request`` (called on every tick of the supervisor's loop), and advance an
    accepted restart-resize."""
    from .local_resize import PendingResize
    from .local_resize import step as step_resize

    request = sup.record.dir / SCALE_REQUEST
    if sup.resize is not None:
        step_resize(sup)  # the request file stays until the new shape runs: a second resize is refused
        return
    if not request.exists():
        return
    req = _read(request)
    reply = {"id": req.get("id"), "ok": True, "message": None}
    done = True
    try:
        workers = check_count(req.get("workers"))
        why = refusal(sup.spec.name, sup.status, sup.spec.strategy, workers)
        if why:
            raise JobConflict(why)
        current = len(live_workers(sup.status))
        if by_restart(sup.spec.strategy, current, workers) and workers != current:
            if not sup.checkpoints_seen:
                raise JobConflict(no_checkpoint(sup.spec.name, sup.current_epoch))
            why = capacity_refusal(sup.spec, sup.status, workers)
            if why:
                raise JobConflict(why)
            sup.resize = PendingResize(
                str(req.get("id")), workers, current, float(req.get("at") or time.time())
            )
            sup.status.message = (
                f"resizing from {current} to {workers} worker(s) by checkpoint-restart: waiting for the "
                "next checkpoint"
            )
            sup.save()
            reply["message"] = sup.status.message
            done = False
        else:
            scale_down(sup, workers)
    except TFK8sError as e:
        reply.update(ok=False, message=str(e))
    write_json_atomic(sup.record.dir / SCALE_REPLY, reply)
    if done:
        request.unlink(missing_ok=True)


def scale_down(sup, workers: int) -> None:
    """Stop the highest-index workers beyond ``workers`` for good and record the resize."""
    from .local_supervisor import say

    keep = live_workers(sup.status)
    if workers >= len(keep):
        return
    gone = [sup.by_name[r.name] for r in keep[workers:]]
    say(f"scaling down from {len(keep)} to {workers} worker(s): stopping {', '.join(r.name for r in gone)}")
    sup.terminate(gone)
    for r in gone:
        r.start_at = None  # a restart it was waiting for is cancelled
        r.up = False
        r.status.state = R_REMOVED
        r.status.message = f"removed by a scale-down to {workers} worker(s); its log is kept"
    sup.status.history.append(
        {
            "time": time.time(),
            "from": len(keep),
            "to": workers,
            "how": "live",
            "removed": [r.name for r in gone],
        }
    )
    if sup.status.message and any(r.name in sup.status.message for r in gone):
        sup.status.message = None  # "restarting worker-2: ..." no longer applies
    sup.save()
    say(f"scaled down to {workers} worker(s); the chief carries on")


def note_full_restart(sup) -> None:
    """Record that a restart of every replica brings removed workers back: the cluster spec every replica
    starts with names each worker, and a coordinator waits for every worker it names."""
    removed = [r.name for r in sup.replicas if r.status.state == R_REMOVED]
    if not removed:
        return
    total = len([r for r in sup.replicas if r.status.role == "worker"])
    sup.status.history.append(
        {
            "time": time.time(),
            "from": total - len(removed),
            "to": total,
            "how": "restart",
            "restored": removed,
        }
    )
