"""Resizing a local job by checkpoint-restart: adding parameter-server workers, or any all-reduce resize.

A ``ClusterCoordinator``'s worker set is fixed when it connects, and all-reduce fixes its group when the
strategy starts, so the job restarts with the new shape (the kernel's request: :mod:`.local_scale`):

1. **ask for a checkpoint** (:func:`arm`): the runner contract's ``checkpoint.request`` in the job's
   checkpoint dir (``replica_env.CHECKPOINT_REQUEST``): the backup saves at the next epoch end instead of
   waiting for ``TFK8S_CHECKPOINT_INTERVAL`` (all-reduce workers agree on it in the vote they already
   hold on each epoch's save);
2. **warm processes for the new shape**: the kernel asked its warm pool for one process per replica of the
   new shape before it wrote the resize request (:func:`.local_scale.warm_new_shape`); until they are idle
   (:func:`warm_ready`: one idle process of each replica's import key, or no pool process left starting,
   or :data:`POOL_WAIT` seconds; at once without a pool) the old run trains on and the request is renewed
   after each checkpoint, so one is saved every epoch meanwhile;
3. **the safe point**: the latest checkpoint saved after the request, once the warm processes are ready;
   what the old run reported after it is held back (:func:`filter_events`) and dropped at the restart,
   since the new run does it again (no metric point doubled). After :data:`CHECKPOINT_WAIT` seconds without
   one, the last checkpoint is used;
4. **stop every replica** and drop what the old run printed after the checkpoint — except in a
   parameter-server scale-up, where only the chief stops, at the safe point whatever the pool's state, and
   the ps and the workers that stay serve on (:mod:`.local_resize_servers`); the chief and the added workers
   then start as a warm process becomes idle for each (:func:`spawn_ready`);
5. **start the new shape** under the same record, each replica from the warm pool when one of its key is
   idle (``ReplicaStatus.launch`` says ``warm``), else cold: new ports and ``TF_CONFIG``, the same checkpoint dir and
   artifacts; ``spec.json`` and ``local.json`` say the new worker count; Keras 3 all-reduce workers back up
   into one folder each, so every worker of the new shape gets worker 0's copy. The restored replicas
   continue the step count from the checkpoint's epoch;
6. **record it**: a ``resize`` event in ``events.jsonl`` (a marker on the curve) and an entry in
   ``JobStatus.history`` ``{"time", "asked", "from", "to", "how": "restart", "epoch", "step", "added" |
   "removed"}``; the request file is removed once the new run reports its start, so a second resize is
   refused until then.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ..protocol import parse_line
from ..records import write_json_atomic
from ..replica_env import CHECKPOINT_REQUEST
from .base import R_REMOVED, R_RESTARTING, ReplicaStatus
from .local_resize_servers import cluster_keeping, hold_chief_port, release_stand_ins, servers_kept, starts_of

CHECKPOINT_WAIT = 120.0  # seconds to wait for the next checkpoint before restarting from the last one
POOL_WAIT = 30.0  # seconds the old run goes on while warm processes for the new shape import TensorFlow
STARTING_AT_MOST = 120.0  # seconds a pool process may take to import TensorFlow before it counts as dead
RESIZE_RUN = "resize"  # the ``run`` of the marker events the supervisor writes


class PendingResize:
    """A restart-resize the supervisor accepted and has not finished."""

    def __init__(self, ident: str, workers: int, before: int, asked: float):
        self.id = ident
        self.workers = workers
        self.before = before
        self.asked = asked
        self.accepted = time.monotonic()
        self.armed = False  # a checkpoint was asked for
        self.warm = False  # the new shape's warm processes are ready (or none will come)
        self.saved = False  # a checkpoint was saved since it was asked for: a safe point
        self.fallback = False  # no new checkpoint in time: the last one is used
        self.restarted = False  # the new shape was started; done once its reporting replica starts
        self.epoch: int | None = None  # the epoch of the checkpoint the new shape restores
        self.held: list[dict] = []  # what the old run reported after that checkpoint, until it is stopped
        self.keys: dict[str, int] | None = None  # warm pool key -> replicas of the new shape (warm_ready)
        self.looked = 0.0  # monotonic time warm_ready last listed the pool
        self.deferred: list = []  # replicas the restart starts once a warm process is idle for each
        self.stopped_at: float | None = None  # monotonic time the old run was stopped


def checkpoint_saved(event: dict) -> bool:
    return event.get("type") == "checkpoint" and event.get("action") != "restored"


def filter_events(sup, events: list[dict]) -> list[dict]:
    """The reporting replica's new events the supervisor records (called by ``pump_events``): all of them,
    except, once a restart-resize has a checkpoint asked for, what follows the latest such checkpoint (held
    until the next one, or dropped when the restart comes first: the new run does it again)."""
    for e in events:
        if e.get("type") in ("metric", "epoch") and isinstance(e.get("epoch"), int):
            sup.current_epoch = e["epoch"]
        if e.get("type") == "checkpoint":
            sup.checkpoints_seen += 1
            if isinstance(e.get("epoch"), int):
                sup.checkpoint_epoch = e["epoch"]
    resize = sup.resize
    if resize is None or resize.restarted or not resize.armed:
        return events
    stream = resize.held + events
    last = max((i for i, e in enumerate(stream) if checkpoint_saved(e)), default=None)
    if last is None:
        resize.held = stream if resize.saved else []
        return [] if resize.saved else events
    before = next((p for p in reversed(stream[:last]) if p.get("type") == "epoch"), None)
    if before is not None and before.get("last_epoch") is True:
        resize.held = []
        return stream  # training has ended: nothing left to resize
    resize.saved, resize.epoch = True, stream[last].get("epoch")
    resize.held = stream[last + 1 :]
    if not resize.warm:
        arm(sup, resize, again=True)  # the warm processes are not ready yet: the next epoch end saves again
    return stream[: last + 1]


def settle_old_run(sup, resize: PendingResize) -> None:
    """Record what the stopped run reported up to its last checkpoint (the one the new shape restores: a
    replica may have saved another before it was stopped) and drop the rest, which the new shape does again."""
    key = sup.spec.protocol_key
    rest = resize.held + [e for e in (parse_line(line, key) for line in sup.tail.read()) if e is not None]
    sup.tail.partial = b""
    resize.held = []
    last = max((i for i, e in enumerate(rest) if checkpoint_saved(e)), default=None)
    if last is None:
        return
    keep = rest[: last + 1]
    if isinstance(keep[-1].get("epoch"), int):
        resize.epoch = keep[-1]["epoch"]
    for e in keep:
        if isinstance(e.get("step"), int) and e.get("type") in ("metric", "epoch"):
            sup.last_step = e["step"]
        if e.get("type") == "checkpoint":
            sup.checkpoints_seen += 1
            sup.checkpoint_epoch = e.get("epoch", sup.checkpoint_epoch)
    sup.record.append_events(keep, sup.dedup)


def step(sup) -> None:
    """Advance the accepted resize (called on every tick of the supervisor's loop)."""
    from .local_scale import SCALE_REQUEST
    from .local_supervisor import say

    resize = sup.resize
    if resize is None:
        return
    if resize.restarted:
        if resize.deferred:
            spawn_ready(sup, resize)
        elif sup.awaiting_start_until is None and sup.reporting.up:  # the new shape's run has started
            say(f"resized to {resize.workers} worker(s); {sup.reporting.name} is training again")
            sup.resize = None
            # the request goes before the status says the resize is done: a caller who sees it done may
            # ask for the next resize at once, and must not be told one is in progress still
            (sup.record.dir / SCALE_REQUEST).unlink(missing_ok=True)
            if sup.status.message and sup.status.message.startswith("resizing"):
                sup.status.message = None
            sup.save()
        return
    if not resize.armed:
        arm(sup, resize)
    if not resize.warm:
        resize.warm = warm_ready(sup, resize)
        if resize.warm:
            say(
                f"the new shape's processes are ready ({time.monotonic() - resize.accepted:.1f} s after the resize)"
            )
    if not resize.saved and time.monotonic() - resize.accepted > CHECKPOINT_WAIT:
        say(f"no checkpoint within {CHECKPOINT_WAIT:g} s of the resize: restarting from the last one")
        resize.saved, resize.warm, resize.fallback = True, True, True
        resize.epoch = sup.checkpoint_epoch
    if resize.saved and (resize.warm or servers_kept(sup, resize.workers)):
        # Kept servers: the old chief stops at the safe point, whatever the pool: what it would train after
        # the checkpoint is held back and done again by the new run, and it takes CPU from the pool's
        # processes importing TensorFlow for the restart; the chief and added workers start as they are ready.
        restart_with_shape(sup, resize)


def cancel(sup, why: str) -> None:
    """Drop an accepted resize that can no longer happen (the job ended first)."""
    from .local_scale import SCALE_REQUEST
    from .local_supervisor import say

    release_stand_ins(sup)  # the job ends: servers kept by a scale-up may exit once their chief is gone
    if sup.resize is None:
        return
    say(f"the resize to {sup.resize.workers} worker(s) did not happen: {why}")
    sup.resize = None
    (sup.checkpoint / CHECKPOINT_REQUEST).unlink(missing_ok=True)
    (sup.record.dir / SCALE_REQUEST).unlink(missing_ok=True)


def new_shape_keys(sup, workers: int, names: list[str] | None = None) -> dict[str, int]:
    """Warm pool import key -> how many replicas of the job with ``workers`` workers (those of ``names``:
    the ones the restart starts) start with it (the environments the supervisor's ``spawn`` builds; ports
    and paths are not part of a key)."""
    from .local import detect_gpus, gpu_slices
    from .local_env import job_replica_env
    from .local_pool import import_key

    spec = sup.spec.with_(workers=workers)
    slices = gpu_slices(spec, detect_gpus()) if spec.gpus else {}
    ports = iter(range(1, len(spec.replica_names) + 1))
    cluster = {r.role: [f"127.0.0.1:{next(ports)}" for _ in range(r.count)] for r in spec.replicas}
    local = {**sup.local, "gpus": slices}  # the new shape's GPU slices
    keys: dict[str, int] = {}
    for name in spec.replica_names if names is None else names:
        env = job_replica_env(spec, sup.record.dir, local, name, cluster)
        key = import_key(env, sup.command[0])
        keys[key] = keys.get(key, 0) + 1
    return keys


def warm_ready(sup, resize: PendingResize) -> bool:
    """Whether the restart can go on: the job has no warm pool (or its replicas cannot come from one), one
    idle pool process waits for each replica the restart starts (every replica of the new shape, or, when
    a parameter-server scale-up keeps its servers, the chief and the added workers:
    :mod:`.local_resize_servers`), no pool process is still starting (the
    memory budget gave fewer: the rest start cold), or :data:`POOL_WAIT` seconds have passed."""
    from .local_pool import RUNNER_MODULE

    pool = sup.local.get("warm_pool")
    if not pool or list(sup.command[1:]) != ["-m", RUNNER_MODULE]:
        return True
    if time.monotonic() - resize.accepted > POOL_WAIT:
        return True
    now = time.monotonic()
    if now - resize.looked < 0.1:
        return False
    resize.looked = now
    if resize.keys is None:
        starts = starts_of(sup.spec, resize.workers, servers_kept(sup, resize.workers))
        resize.keys = new_shape_keys(sup, resize.workers, starts)
    try:
        idle = os.listdir(Path(pool) / "idle")
        slots = os.listdir(Path(pool) / "slots")
    except OSError:
        return True  # no pool directory: cold
    have = {key: sum(1 for m in idle if m.startswith(key + ".")) for key in resize.keys}
    if all(have[key] >= n for key, n in resize.keys.items()):
        return True
    return not any(starting(Path(pool) / "slots" / slot) for slot in slots)


def starting(slot: Path) -> bool:
    """Whether a pool slot's process is still importing TensorFlow (no ``info.json`` yet; a slot older than
    :data:`STARTING_AT_MOST` without one was left by a process that died starting)."""
    try:
        return not (slot / "info.json").exists() and time.time() - slot.stat().st_mtime < STARTING_AT_MOST
    except OSError:
        return False


def arm(sup, resize: PendingResize, again: bool = False) -> None:
    """Ask the job's backup for a checkpoint at the next epoch end (the runner contract's request file;
    ``again``: rewritten, since a save honours the requests older than itself)."""
    from .local_supervisor import say

    request = sup.checkpoint / CHECKPOINT_REQUEST
    try:
        request.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(request, {"resize": resize.id, "workers": resize.workers, "at": time.time()})
    except OSError as e:
        say(f"could not ask for a checkpoint ({e}); the resize waits for the next one the interval gives")
    resize.armed = True
    if not again:
        say("asked for a checkpoint at the next epoch end")


def restart_with_shape(sup, resize: PendingResize) -> None:
    """Stop every replica and start the job again with ``resize.workers`` workers (see the module doc)."""
    from .local import allocate_ports, cluster_of, detect_gpus, gpu_slices
    from .local_supervisor import Replica, say

    workers = resize.workers
    spec = sup.spec.with_(workers=workers)
    servers = servers_kept(sup, workers) or []  # a parameter-server scale-up: the ps and workers stay
    old_chief = sup.reporting.status.host
    # Stopped at once (SIGKILL): a replica given time to end would go on training and saving past the
    # checkpoint the new shape restores. A kill during a save leaves the previous backup (Keras keeps it).
    live = [r for r in sup.replicas if r.alive and r not in servers]
    for r in live:
        r.proc.kill()
    for r in live:
        r.status.exit_code = r.proc.wait()
    if servers and not hold_chief_port(sup, old_chief):
        servers = []  # they will exit: restart them too
        for r in sup.replicas:
            if r.alive:
                r.proc.kill()
                r.status.exit_code = r.proc.wait()
    settle_old_run(sup, resize)
    (sup.checkpoint / CHECKPOINT_REQUEST).unlink(missing_ok=True)  # the new run saves on its own clock
    if servers:
        say(
            f"resizing from {resize.before} to {workers} worker(s): the chief stopped, the ps and "
            f"{len(servers) - len([r for r in servers if r.status.role == 'ps'])} worker(s) keep serving; "
            f"restarting the chief from the checkpoint of epoch {resize.epoch}"
        )
    else:
        say(
            f"resizing from {resize.before} to {workers} worker(s): every replica stopped, restarting from the "
            f"checkpoint of epoch {resize.epoch}"
        )
    old_workers = {r.status.index: r for r in sup.replicas if r.status.role == "worker"}
    kept = [r for r in sup.replicas if r.status.role != "worker" or r.status.index < workers]
    gone = [r for r in old_workers.values() if r.status.index >= workers and r.status.state != R_REMOVED]
    restored = [r.name for r in kept if r.status.state == R_REMOVED]
    added = []
    for index in range(len(old_workers), workers):
        status = next((s for s in sup.status.replicas if s.role == "worker" and s.index == index), None)
        if status is None:
            status = ReplicaStatus(role="worker", index=index)
            sup.status.replicas.append(status)
        r = Replica(status, sup.record.log_path(status.name))
        kept.append(r)
        added.append(r.name)
    for r in gone:
        r.status.state = R_REMOVED
        r.status.message = f"removed by a resize to {workers} worker(s); its log is kept"
    # new ports for the new cluster spec (the old ones may linger), the same checkpoint dir and artifacts;
    # kept servers keep theirs
    if servers:
        ports = allocate_ports(len(spec.replica_names) - len(servers))
        cluster = cluster_keeping(spec, servers, ports, old_chief.rsplit(":", 1)[0])
    else:
        cluster = cluster_of(spec, allocate_ports(len(spec.replica_names)))
    sup.spec, sup.cluster = spec, cluster
    sup.local["cluster"] = cluster
    if spec.gpus:
        sup.local["gpus"] = gpu_slices(spec, detect_gpus())
    sup.record.write_spec(spec.to_json())
    write_json_atomic(sup.record.dir / "local.json", sup.local)
    if spec.strategy != "parameter_server":
        share_worker_backups(sup.checkpoint, workers)
    order = {"ps": 0, "chief": 1, "worker": 2}
    sup.replicas = sorted(kept, key=lambda r: (order.get(r.status.role, 3), r.status.index))
    sup.by_name = {r.name: r for r in sup.replicas}
    sup.reporting = sup.by_name[spec.reporting_replica]
    sup.status.replicas.sort(key=lambda s: (s.state == R_REMOVED, order.get(s.role, 3), s.index))
    starting = [r for r in sup.replicas if r not in servers]
    for r in starting:
        r.proc = None
        r.up = False
        r.start_at = None
        r.status.state = R_RESTARTING
        r.status.message = None
        r.status.exit_code = None
        r.status.host = cluster[r.status.role][r.status.index]
    last_step = sup.last_step
    entry = {
        "time": time.time(),
        "asked": resize.asked,
        "from": resize.before,
        "to": workers,
        "how": "restart",
        "epoch": resize.epoch,
        "step": last_step,
    }
    if servers:
        entry["kept"] = [r.name for r in servers]  # served on through the restart
    if added or restored:
        entry["added"] = sorted(set(added + restored))
    if gone:
        entry["removed"] = [r.name for r in gone]
    if resize.fallback:
        entry["note"] = "no new checkpoint in time; restarted from the last one"
    sup.status.history.append(entry)
    marker = {
        "type": "resize",
        "run": RESIZE_RUN,
        "seq": len(sup.status.history),
        "t": entry["time"],
        "from": resize.before,
        "to": workers,
        "how": "restart",
        "epoch": resize.epoch,
        "step": last_step,
    }
    sup.record.append_events([marker], sup.dedup)
    sup.status.message = (
        f"resizing from {resize.before} to {workers} worker(s): restarting from the checkpoint"
    )
    for r in servers:
        with open(r.log, "ab") as log:
            log.write(
                f"\n---- tfk8s: {r.name} serves on for the job's new shape ({workers} workers) ----\n".encode()
            )
    # the servers a new chief connects to first, then the chief; with kept servers, each once a warm
    # process is idle for it (spawn_ready), else all at once
    resize.deferred = sorted(starting, key=lambda r: r is sup.reporting)
    resize.restarted = True
    resize.stopped_at = time.monotonic()
    spawn_ready(sup, resize, wait=bool(servers))
    sup.save()


def spawn_ready(sup, resize: PendingResize, wait: bool = True) -> None:
    """Start the restart's deferred replicas, in order, each once a warm pool process of its import key is
    idle (or none can come: see :func:`process_ready`); all at once when not ``wait``."""
    from .local_supervisor import say

    spawned = False
    while resize.deferred and (not wait or process_ready(sup, resize, resize.deferred[0])):
        r = resize.deferred.pop(0)
        with open(r.log, "ab") as log:
            log.write(
                f"\n---- tfk8s: {r.name} started with the job's new shape ({resize.workers} workers) ----\n".encode()
            )
        sup.spawn(r)
        spawned = True
    if spawned and not resize.deferred and wait and not resize.warm:
        resize.warm = True
        say(
            f"the new shape's processes are ready ({time.monotonic() - resize.accepted:.1f} s after the resize, "
            f"{time.monotonic() - (resize.stopped_at or resize.accepted):.1f} s after the old chief stopped)"
        )
    if spawned:
        sup.save()


def process_ready(sup, resize: PendingResize, r) -> bool:
    """Whether replica ``r`` of the restart can start now: the job has no warm pool (or its replicas cannot
    come from one), a pool process of its import key is idle, none is still starting, or :data:`POOL_WAIT`
    seconds have passed since the old run stopped."""
    from .local_pool import RUNNER_MODULE, import_key

    pool = sup.local.get("warm_pool")
    if not pool or list(sup.command[1:]) != ["-m", RUNNER_MODULE]:
        return True
    if time.monotonic() - (resize.stopped_at or resize.accepted) > POOL_WAIT:
        return True
    key = import_key(sup.replica_env(r), sup.command[0])
    try:
        if any(m.startswith(key + ".") for m in os.listdir(Path(pool) / "idle")):
            return True
        slots = os.listdir(Path(pool) / "slots")
    except OSError:
        return True  # no pool directory: cold
    return not any(starting(Path(pool) / "slots" / slot) for slot in slots)


def share_worker_backups(checkpoint: Path, workers: int) -> None:
    """Give each all-reduce worker of the new shape worker 0's backup (Keras 3 backs up into one folder per
    worker, ``fit-<i>/worker-<n>``; all workers save the same epochs, so worker 0's copy is everyone's)."""
    for fit in sorted(Path(checkpoint).glob("fit-*")):
        source = fit / "worker-0"
        if not source.is_dir():
            continue
        for index in range(1, workers):
            target = fit / f"worker-{index}"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
