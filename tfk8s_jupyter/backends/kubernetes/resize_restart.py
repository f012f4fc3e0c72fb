"""Resizing a Kubernetes job by checkpoint-restart: adding parameter-server workers, any all-reduce resize,
and any resize of a TFJob.

A ``ClusterCoordinator``'s worker set is fixed when it connects and an all-reduce group when its strategy
starts, so the job restarts with the new shape, as the local backend does (:mod:`..local_resize`):

1. **wait for a safe point**: the next ``checkpoint`` event of the reporting replica, seen by the job's
   follower (:class:`.follower.JobFollower`; one is started when nobody follows the job in this kernel);
   what the old run reports after that checkpoint is held back, since the new run does it again (no metric
   point doubled). After :data:`CHECKPOINT_WAIT` seconds without one, the last checkpoint is used;
2. **delete the role Jobs** (native) or the TFJob (tfjob flavor), their pods with them, once every
   replica's log is copied into the record; the parent ConfigMap, the Service, the Secret and the input
   ConfigMaps stay. Of what the old run printed after its last checkpoint nothing is recorded;
3. **create the new shape**: new Indexed Jobs (or a new TFJob) rendered from the spec with the new worker
   count, so every pod gets the new cluster (``TFK8S_CLUSTER``, or the operator's ``TF_CONFIG``), the same
   checkpoint dir and artifacts. Keras 3 all-reduce workers back up into one folder each: every worker of
   the new shape gets worker 0's copy, copied here when this notebook sees the storage, else by the runner
   (``TFK8S_RESUME_FROM`` set to the job's own checkpoint dir). The restored replicas continue the step
   count from the checkpoint's epoch. Refused half-way by the API server, the new shape is deleted and the
   old one created again from the same checkpoint (:mod:`.resize_shape`, which also notes the shape for
   other kernels);
4. **record it**: a ``resize`` event (a marker on the curve) and an entry in ``JobStatus.history``
   ``{"time", "asked", "from", "to", "how": "restart", "epoch", "step", "added" | "removed"}``
   (``resize.json``); the record's spec says the new worker count.

The end of a job parses the reporting replica's whole log copy again (:mod:`.lifecycle`), old runs' lines
included: :class:`ResizeFinisher` takes the events an old run printed after its cut (``resize.json``
``superseded``: ``[run, seq]`` pairs) out of the record again.

Nothing is patched nor updated (a shared namespace's Role grants neither): delete and create only. The
checkpoints must outlive the pods, so the job needs storage (``--storage``) or ``TFK8s.checkpoint_dir``.
One resize at a time: ``resize.pending`` in the record (created exclusively) says which one runs, until
the new shape's reporting replica reports its start.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from ...records import write_json_atomic
from ...replica_env import ARTIFACT_CHECKPOINTS, CHECKPOINT_REQUEST
from ..base import JobConflict, JobStatus, TFK8sError
from ..local_resize import RESIZE_RUN, checkpoint_saved, share_worker_backups
from ..local_scale import in_progress, no_checkpoint
from . import manifests as m
from .job_objects import JobRef, job_pods, owners
from .lifecycle import Finisher
from .resize_shape import RESIZE_FILE, ShapeRefused, create_shape, note_shape, restore_old_shape

PENDING_FILE = "resize.pending"
CHECKPOINT_WAIT = 120.0  # seconds to wait for the next checkpoint before restarting from the last one
GONE_WAIT = 90.0  # seconds for the old shape's Jobs and pods to be gone
STREAM_END_WAIT = 15.0  # seconds for the follower to finish reading the old reporting pod's log
START_WAIT = 900.0  # seconds for the new shape's reporting replica to report its start
FOLLOWER_WAIT = 15.0  # seconds for a follower started here to be up

_ACTIVE: dict[str, Restart] = {}  # record dir -> the restart this process runs
_ACTIVE_LOCK = threading.Lock()


class KubernetesResize:
    """A restart-resize between its acceptance and the new shape's start (the follower filters with it)."""

    def __init__(self, ident: str, workers: int, before: int, asked: float):
        self.id = ident
        self.workers = workers
        self.before = before
        self.asked = asked
        self.ready = False  # the safe point arrived: restart now
        self.fallback = False  # no new checkpoint in time: the last one is used
        self.restarted = False  # the new shape's objects are created: its events are recorded
        self.settled = False  # the old run's record is closed (what it held back dropped, the marker written)
        self.epoch: int | None = None  # the epoch of the checkpoint the new shape restores
        self.held: list[dict] = []  # what the old run reported after that checkpoint
        self.cut: tuple | None = None  # (run, seq) of the old run's last recorded event: later ones dropped


# refusals -------------------------------------------------------------------------------------------
def restart_refusal(backend, job: JobRef, status: JobStatus, current: int, workers: int) -> str | None:
    """Why the job cannot be resized by checkpoint-restart now (one sentence), or ``None``."""
    name, spec = job.name, job.spec
    if not spec.storage and not spec.checkpoint_dir:
        return (
            f"job {name} has no storage, so its checkpoints go with its pods and a resize, which restarts "
            "every pod with the new shape, would lose its training; submit it with --storage (a claim or a "
            "URI) to resize it."
        )
    saved, epoch = False, None
    for batch in job.record.iter_events():
        for e in batch:
            saved = saved or checkpoint_saved(e)
            if e.get("type") in ("metric", "epoch") and isinstance(e.get("epoch"), int):
                epoch = e["epoch"]
    if not saved:
        return no_checkpoint(name, epoch)
    if workers > current:
        return quota_refusal(job, workers - current)
    return None


def quota_refusal(job: JobRef, more: int) -> str | None:
    """Why the namespace's ResourceQuotas cannot hold ``more`` workers beyond the job's pods (the old pods'
    share is given back by the restart, so only the added workers count), or ``None`` (also when quotas
    cannot be read)."""
    from kubernetes import client as k8s

    from .errors import ApiErrorContext
    from .preflight import _qty, can, job_requests

    cluster, namespace = job.cluster, job.namespace
    try:
        if not can(cluster, "list", "", "resourcequotas", namespace):
            return None
        quotas = cluster.raw(
            ApiErrorContext("list", "resourcequotas", namespace),
            k8s.CoreV1Api(cluster.api_client).list_namespaced_resource_quota,
            namespace,
        ).get("items", [])
    except TFK8sError:
        return None
    spec = job.spec
    need_new, need_old = job_requests(spec.with_(workers=spec.workers + more)), job_requests(spec)
    for q in quotas:
        status = q.get("status") or {}
        hard = status.get("hard") or (q.get("spec") or {}).get("hard") or {}
        used = status.get("used") or {}
        for key, limit in hard.items():
            extra = need_new.get(key, 0) - need_old.get(key, 0)
            free = _qty(limit) - _qty(used.get(key, 0))
            if extra > 0 and extra > free:
                return (
                    f"ResourceQuota {q['metadata']['name']} of namespace {namespace} leaves {max(free, 0):g} "
                    f"{key} (hard {limit}) and {more} more worker(s) of job {job.name} ask {extra:g}; resize "
                    "to fewer workers or ask an administrator for a larger quota."
                )
    return None


# the pending resize ---------------------------------------------------------------------------------
def read_pending(record) -> dict | None:
    """The resize in progress on the job (``resize.pending``), ``None`` when none is; a file left by a
    process that is gone (or by this one, which no longer runs it) is removed."""
    path = record.dir / PENDING_FILE
    try:
        pending = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = pending.get("pid")
    with _ACTIVE_LOCK:
        ours = str(record.dir) in _ACTIVE
    if pid == os.getpid():
        alive = ours
    else:
        try:
            os.kill(int(pid), 0)
            alive = True
        except (OSError, TypeError, ValueError):
            alive = False
    if not alive:
        path.unlink(missing_ok=True)
        return None
    return pending


def claim_pending(record, entry: dict) -> None:
    """Create ``resize.pending`` exclusively; :class:`JobConflict` when a resize is in progress."""
    read_pending(record)  # removes a stale one
    fd, tmp = tempfile.mkstemp(dir=record.dir, prefix=f".{PENDING_FILE}.")
    with os.fdopen(fd, "w") as f:
        json.dump(entry, f)
    try:
        os.link(tmp, record.dir / PENDING_FILE)
    except FileExistsError:
        raise JobConflict(in_progress(record.name)) from None
    finally:
        os.unlink(tmp)


def pending_message(pending: dict) -> str:
    """The job's message while a restart-resize runs."""
    head = f"resizing from {pending['from']} to {pending['to']} worker(s) by checkpoint-restart"
    if pending.get("stage") == "restarting":
        epoch = pending.get("epoch")
        at = f" of epoch {epoch}" if isinstance(epoch, int) else ""
        return f"{head}: restarting from the checkpoint{at}"
    return f"{head}: waiting for the next checkpoint"


def start(backend, job: JobRef, status: JobStatus, current: int, workers: int) -> JobStatus:
    """Accept a restart-resize of ``job`` from ``current`` to ``workers`` workers and run it in the
    background (:class:`Restart`); returns the status saying it is under way.

    Raises:
        JobConflict: refused (no storage, no checkpoint yet, over the quota, one in progress).
    """
    if read_pending(job.record) is not None:
        raise JobConflict(in_progress(job.name))
    why = restart_refusal(backend, job, status, current, workers)
    if why:
        raise JobConflict(why)
    asked = time.time()
    ident = secrets.token_hex(8)
    pending = {
        "id": ident,
        "from": current,
        "to": workers,
        "asked": asked,
        "pid": os.getpid(),
        "stage": "waiting",
    }
    with _ACTIVE_LOCK:
        claim_pending(job.record, pending)
        restart = Restart(backend, job, KubernetesResize(ident, workers, current, asked), pending)
        _ACTIVE[str(job.record.dir)] = restart
    restart.thread.start()
    return backend.get(job.name)


# the restart ----------------------------------------------------------------------------------------
class Restart:
    """One restart-resize, run in a background thread of the kernel that asked for it."""

    def __init__(self, backend, job: JobRef, resize: KubernetesResize, pending: dict):
        self.backend, self.job, self.resize, self.pending = backend, job, resize, pending
        self.thread = threading.Thread(target=self.run, name=f"tfk8s-resize-{job.name}", daemon=True)
        self.own_stop: threading.Event | None = None

    def set_stage(self, stage: str, **fields) -> None:
        self.pending.update(stage=stage, **fields)
        write_json_atomic(self.job.record.dir / PENDING_FILE, self.pending)

    def run(self) -> None:
        from .resize import note_failure

        fol = None
        try:
            fol = self.follower()
            if fol is None:
                raise TFK8sError(
                    f"the job {self.job.name} could not be followed to see its next checkpoint; resize again."
                )
            if not self.wait_for_checkpoint(fol):
                return
            self.restart(fol)
            self.wait_for_start(fol)
        except Exception as e:  # the job keeps what it has; the history says what failed
            note_failure(self.job.record, self.resize, f"{type(e).__name__}: {e}" if not str(e) else str(e))
        finally:
            if fol is not None:
                with fol.events_lock:
                    if fol.resize is self.resize:
                        fol.resize = None
            if self.own_stop is not None:
                self.own_stop.set()
            with _ACTIVE_LOCK:
                _ACTIVE.pop(str(self.job.record.dir), None)
            path = self.job.record.dir / PENDING_FILE
            try:
                if json.loads(path.read_text()).get("id") == self.resize.id:
                    path.unlink()
            except (OSError, ValueError):
                pass

    def follower(self):
        """The job's follower in this process (the kernel's watch), else one started here until the end."""
        from .follower import active_follower

        fol = active_follower(self.job.record)
        if fol is None:
            self.own_stop = threading.Event()
            threading.Thread(
                target=self.backend.watch,
                args=(self.job.name, lambda s: None, lambda e: None, self.own_stop),
                name=f"tfk8s-resize-watch-{self.job.name}",
                daemon=True,
            ).start()
            deadline = time.monotonic() + FOLLOWER_WAIT
            while fol is None and time.monotonic() < deadline:
                time.sleep(0.1)
                fol = active_follower(self.job.record)
        if fol is not None:
            with fol.events_lock:
                fol.resize = self.resize
        return fol

    def wait_for_checkpoint(self, fol) -> bool:
        """Until the follower saw the next checkpoint (or :data:`CHECKPOINT_WAIT` passed); ``False`` when
        the job ended first (nothing is changed)."""
        resize = self.resize
        request = local_checkpoints(self.backend, self.job.spec)
        if request is not None:  # a checkpoint at the next epoch end (the runner contract's request file)
            request = request / CHECKPOINT_REQUEST
            try:
                write_json_atomic(
                    request, {"resize": resize.id, "workers": resize.workers, "at": time.time()}
                )
            except OSError:
                request = None  # the next checkpoint the interval gives
        try:
            return self._wait_for_checkpoint(fol)
        finally:
            if request is not None:
                request.unlink(missing_ok=True)

    def _wait_for_checkpoint(self, fol) -> bool:
        resize = self.resize
        deadline = time.monotonic() + CHECKPOINT_WAIT
        while True:
            with fol.events_lock:
                if resize.ready:
                    return True
                if time.monotonic() > deadline:
                    resize.ready, resize.fallback, resize.epoch = True, True, fol.checkpoint_epoch
                    return True
            status = fol.last_status
            if (status is not None and status.done) or fol.log_done.is_set():
                return False  # training ended before a safe point: nothing left to resize
            time.sleep(0.1)

    def restart(self, fol) -> None:
        from .resize import read_resizes, record_restart

        job, resize = self.job, self.resize
        self.set_stage("restarting", epoch=resize.epoch)
        old_jobs, tfjob = owners(job)
        data_volumes = count_data_volumes(old_jobs, tfjob)
        resume = old_resume_from(old_jobs, tfjob)
        old_pods = job_pods(job)
        capture_replica_logs(job, old_pods)  # every replica's log so far, kept (the pods go now)
        if job.flavor == "tfjob":
            job.cluster.delete("tfjobs", job.namespace, job.name)
        else:
            for j in old_jobs:
                job.cluster.delete("jobs", job.namespace, j["metadata"]["name"])
        self.wait_gone()
        deadline = time.monotonic() + STREAM_END_WAIT
        while fol.streaming_pod is not None and time.monotonic() < deadline:
            time.sleep(0.1)  # the old reporting pod's last lines, held back or kept up to its checkpoint
        retire_reporting_pods(job, fol, old_pods)
        before, removed_before = job.spec, list(read_resizes(job.record)["removed"])
        with fol.events_lock:
            new = settle(fol, resize)
            entry = record_restart(job, resize, fol.last_step)
            marker = {
                "type": "resize",
                "run": RESIZE_RUN,
                "seq": entry["seq"],
                "t": entry["time"],
                "from": resize.before,
                "to": resize.workers,
                "how": "restart",
                "epoch": resize.epoch,
                "step": fol.last_step,
            }
            new += fol.record.append_events([marker], fol.dedup)
            spec = job.spec.with_(workers=resize.workers)
            job.record.write_spec(spec.to_json())
            self.job = job = replace(job, spec=spec)
            fol.reshape(spec)
            resize.restarted = True
        if new:
            fol.on_events(new)
        if spec.strategy != "parameter_server":
            if not self.share_backups(spec, resize.workers):
                resume = m.checkpoint_dir(spec)  # the runner copies worker 0's backup (TFK8S_RESUME_FROM)
        try:
            create_shape(job, data_volumes, resume)  # nothing of it left when the API server refuses part
        except ShapeRefused as e:  # the old shape back from the same checkpoint, the notes say why
            job = restore_old_shape(self, fol, e, before, removed_before, data_volumes, resume)
        else:
            note_shape(job, read_resizes(job.record), resize.workers)  # for other kernels: no patch
        fol.refresh_owners()  # the new shape's Jobs (or TFJob) in the status from now on
        self.set_stage("starting", epoch=resize.epoch)

    def share_backups(self, spec, workers: int) -> bool:
        """Worker 0's backup into every worker's folder, when this notebook sees the job's checkpoints."""
        checkpoints = local_checkpoints(self.backend, spec)
        if checkpoints is None:
            return False
        share_worker_backups(checkpoints, workers)
        return True

    def wait_gone(self) -> None:
        job = self.job
        deadline = time.monotonic() + GONE_WAIT
        while True:
            jobs, tfjob = owners(job)
            if not jobs and tfjob is None and not job_pods(job):
                return
            if time.monotonic() > deadline:
                what = f"TFJob {job.name}" if job.flavor == "tfjob" else f"Jobs of {job.name}"
                raise TFK8sError(
                    f"the {what} and their pods were not gone within {GONE_WAIT:g} s of their deletion, so the "
                    f"new shape was not created; look at kubectl get pods -l {m.job_selector(job.name)} -n "
                    f"{job.namespace}, then submit the job again with resume_from={job.name!r}."
                )
            time.sleep(0.2)

    def wait_for_start(self, fol) -> None:
        """Until the new shape's reporting replica reports its start (or the job ends)."""
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if fol.new_run_started or fol.log_done.is_set():
                return
            status = fol.last_status
            if status is not None and status.done:
                return
            time.sleep(0.2)


def settle(fol, resize: KubernetesResize) -> list[dict]:
    """Close the old run's record (under ``fol.events_lock``): what it reported after the checkpoint the new
    shape restores is recorded up to its last checkpoint (a replica may have saved another before it was
    stopped) and the rest dropped; its pods' later lines are ignored. Returns the events recorded."""
    if resize.settled:
        return []
    resize.settled = True
    rest, resize.held = resize.held, []
    last = max((i for i, e in enumerate(rest) if checkpoint_saved(e)), default=None)
    keep = rest[: last + 1] if last is not None else []
    if keep and isinstance(keep[-1].get("epoch"), int):
        resize.epoch = keep[-1]["epoch"]
    if keep:
        resize.cut = (keep[-1].get("run"), keep[-1].get("seq"))
    elif resize.cut is None:
        resize.cut = fol.last_event  # no checkpoint in time: the old run is cut where the record ends
    track(fol, keep)
    for e in keep:
        if e.get("type") == "checkpoint":
            fol.checkpoints_seen += 1
            fol.checkpoint_epoch = e.get("epoch", fol.checkpoint_epoch)
    # runs, not pods: an operator names the new shape's pods as the old ones
    fol.retired_runs |= {run for run in fol.seen_runs if run != RESIZE_RUN}
    return fol.record.append_events(keep, fol.dedup) if keep else []


def track(fol, events: list[dict]) -> None:
    for e in events:
        if e.get("run") != RESIZE_RUN:
            fol.last_event = (e.get("run"), e.get("seq"))
        if isinstance(e.get("step"), int) and e.get("type") in ("metric", "epoch"):
            fol.last_step = e["step"]


def filter_events(fol, events: list[dict], pod: str | None) -> list[dict]:
    """The events of the reporting replica's pod ``pod`` the follower records (under its events lock): all,
    except while a restart-resize runs what the old run reports after the checkpoint the new shape
    restores, and anything from the old shape's runs once it is settled."""
    events = [e for e in events if e.get("run") not in fol.retired_runs]
    fol.seen_runs.update(e.get("run") for e in events)
    resize = fol.resize
    if resize is not None and resize.restarted and any(e.get("type") == "start" for e in events):
        fol.new_run_started = True
    for e in events:
        if e.get("type") == "checkpoint":
            fol.checkpoints_seen += 1
            if isinstance(e.get("epoch"), int):
                fol.checkpoint_epoch = e["epoch"]
    kept = events
    if resize is not None and not resize.restarted:
        if resize.ready:
            resize.held += events  # the old run after its checkpoint: recorded only up to its last one
            kept = []
        else:
            for i, e in enumerate(events):
                if checkpoint_saved(e):
                    last = next((p for p in reversed(events[:i]) if p.get("type") == "epoch"), None)
                    if last is not None and last.get("last_epoch") is True:
                        break  # training has ended: nothing left to resize
                    resize.ready, resize.epoch = True, e.get("epoch")
                    resize.cut = (e.get("run"), e.get("seq"))
                    resize.held = events[i + 1 :]
                    kept = events[: i + 1]
                    break
    track(fol, kept)
    return kept


def drop_superseded(record) -> None:
    """Take out of the record the events of an old run after its cut (``resize.json`` ``superseded``):
    the end of a job parses the reporting replica's whole log copy again, old runs' lines included."""
    from .resize import read_resizes

    cuts = {}
    for run, seq in read_resizes(record).get("superseded") or []:
        cuts[run] = min(seq, cuts.get(run, seq))
    if not cuts:
        return
    path = record.events_path
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except OSError:
        return
    kept = []
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            kept.append(line)
            continue
        run, seq = e.get("run"), e.get("seq")
        if run in cuts and isinstance(seq, int) and seq > cuts[run]:
            continue
        kept.append(line)
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)


class ResizeFinisher(Finisher):
    """The backend's :class:`.lifecycle.Finisher`, which also keeps a resized job's dropped events out of
    its record (:func:`drop_superseded`)."""

    def tidy_events(self, job: JobRef) -> None:
        if (job.record.dir / RESIZE_FILE).exists():  # before the final status: the record is final then
            drop_superseded(job.record)


def local_checkpoints(backend, spec) -> Path | None:
    """The job's checkpoint dir as this notebook sees it (its claim mounted here), else ``None``."""
    if spec.checkpoint_dir or not spec.storage or "://" in spec.storage:
        return None
    local, _ = backend._artifacts(spec)
    if not local or "://" in local:
        return None
    checkpoints = Path(local) / ARTIFACT_CHECKPOINTS
    return checkpoints if checkpoints.is_dir() else None


def capture_replica_logs(job: JobRef, pods: list[dict]) -> None:
    """Copy the log of every replica but the reporting one (whose copy the follower keeps) into the record,
    as :func:`.lifecycle.capture_logs` does at the end of a job."""
    from .lifecycle import capture_pod_log, replica_log
    from .status import pod_replica

    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        key = pod_replica(pod)
        if key is None or f"{key[0]}-{key[1]}" == job.spec.reporting_replica:
            continue
        capture_pod_log(job, replica_log(job, f"{key[0]}-{key[1]}"), pod)


def count_data_volumes(jobs: list[dict], tfjob: dict | None) -> int:
    """How many input ConfigMaps the job's pods mount (``tfk8s-data-<i>`` volumes of its pod template)."""
    templates = [j["spec"]["template"] for j in jobs]
    if tfjob is not None:
        templates += [r["template"] for r in (tfjob.get("spec") or {}).get("tfReplicaSpecs", {}).values()]
    if not templates:
        return 0
    volumes = (templates[0].get("spec") or {}).get("volumes") or []
    return sum(1 for v in volumes if str(v.get("name", "")).startswith("tfk8s-data-"))


def old_resume_from(jobs: list[dict], tfjob: dict | None) -> str:
    """``TFK8S_RESUME_FROM`` of the job's pods (an earlier job's checkpoints), ``""`` when none."""
    templates = [j["spec"]["template"] for j in jobs]
    if tfjob is not None:
        templates += [r["template"] for r in (tfjob.get("spec") or {}).get("tfReplicaSpecs", {}).values()]
    for t in templates:
        for c in (t.get("spec") or {}).get("containers") or []:
            for item in c.get("env") or []:
                if item.get("name") == "TFK8S_RESUME_FROM":
                    return str(item.get("value") or "")
    return ""


def retire_reporting_pods(job: JobRef, fol, pods: list[dict]) -> None:
    """The old reporting pods' attempts in the record's log copy closed under their uids, and the
    follower's copy told so: a TFJob's new reporting pod, named as the old one, writes after them."""
    from .lifecycle import replica_log
    from .status import pod_replica

    log = replica_log(job, job.spec.reporting_replica)
    for pod in pods:
        key = pod_replica(pod)
        if key is not None and f"{key[0]}-{key[1]}" == job.spec.reporting_replica:
            log.retire(pod["metadata"]["name"], pod["metadata"].get("uid") or "")
    copy = getattr(fol, "log_copy", None)
    if copy is not None:
        copy.key, copy.copied = None, 0  # the next attempt is opened afresh
