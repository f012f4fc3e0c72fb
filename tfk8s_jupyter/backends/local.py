"""The embedded default backend: every replica is a process on this machine.

``submit`` validates the spec against the machine (GPUs), writes the job record, picks every port up front
and starts one detached supervisor (:mod:`.local_supervisor`) per job, which outlives the submitting
process. The supervisor owns the replica processes, their restarts and teardown, and keeps ``status.json``
and ``events.jsonl`` current; everything here reads the record, so any process can follow any job.

Local-only files in the record: ``local.json`` (cluster addresses, GPU slices), ``supervisor.json`` (the
supervisor's pid and every process it started, with kernel start times so a recycled pid is never mistaken
for ours), ``supervisor.log`` (its decisions, ``job.logs("supervisor")``), ``artifacts/`` (the job's
artifact directory, ``TFK8S_ARTIFACTS``: ``checkpoints/`` unless ``checkpoint_dir`` is configured, the
trained model, TensorBoard logs and ``artifacts.json``) and ``work/<replica>/``, each replica's working directory (as a pod has
its own filesystem): files the cell writes with relative paths, e.g. ``model.save("m.keras")`` on the
chief, land there. It presents the notebook's folder (the submitting process's cwd, ``TFK8S_INPUT_DIR``):
its folders recreated and its files symlinked, so the cell reads its inputs by the notebook's relative
paths, and the user's folder is never written (see ``replica_workdir.prepare_workdir``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from ..logtext import FileTail, read_log
from ..payload import Payload
from ..protocol import EventDedup
from ..records import JobRecord, records_root, write_json_atomic
from ..spec import JobSpec, SpecError, validate
from .base import (
    FAILED,
    PENDING,
    R_FAILED,
    R_PENDING,
    STOPPED,
    Backend,
    EventsCallback,
    JobConflict,
    JobNotFound,
    JobStatus,
    ReplicaStatus,
    StatusCallback,
    TFK8sError,
)
from .local_capacity import check_local_capacity, detect_gpus, gpu_slices
from .local_env import ARTIFACTS, checkpoint_dir, pool_envs, process_env, supervisor_env
from .local_handover import claim_at_submit
from .local_pool import owned_pool, owned_pools, pool_dir
from .local_processes import proc_start_ticks, process_alive

__all__ = ["ARTIFACTS", "LocalBackend", "checkpoint_dir", "detect_gpus", "gpu_slices", "process_env"]

HOST = "127.0.0.1"
SUPERVISOR_FILE = "supervisor.json"
SUPERVISOR_LOG = "supervisor.log"
STOP_WAIT = 60.0  # seconds stop() waits for the supervisor to tear the job down
EVENT_BATCH_BYTES = 1 << 20  # watch() delivers a backlog of events in batches of about this size


# --------------------------------------------------------------------------- machine facts (pure-ish)
def allocate_ports(n: int, host: str = HOST) -> list[int]:
    """``n`` distinct free ports: bind them all to port 0 at once, read them, close them."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cluster_of(spec: JobSpec, ports: list[int], host: str = HOST) -> dict[str, list[str]]:
    """``{"ps": [...], "chief": [...], "worker": [...]}`` with one ``host:port`` per replica."""
    it = iter(ports)
    return {r.role: [f"{host}:{next(it)}" for _ in range(r.count)] for r in spec.replicas}


# --------------------------------------------------------------------------- process facts
def read_supervisor(record: JobRecord) -> dict:
    try:
        return json.loads((record.dir / SUPERVISOR_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def job_processes(record: JobRecord) -> list[tuple[str, int, int | None]]:
    """Every process the job ever had: ``(what, pid, start_ticks)``; the supervisor first."""
    sup = read_supervisor(record)
    out = []
    if sup.get("pid"):
        out.append(("supervisor", sup["pid"], sup.get("start_ticks")))
    for p in sup.get("processes", []):
        out.append((p["replica"], p["pid"], p.get("start_ticks")))
    return out


def live_processes(record: JobRecord) -> list[tuple[str, int, int | None]]:
    return [p for p in job_processes(record) if process_alive(p[1], p[2])]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------- the backend
@dataclass(frozen=True)
class SupervisorTestHooks:
    """Test-only changes to what a supervisor runs, set by the test suite on
    :attr:`LocalBackend.test_hooks` and carried in the job's ``local.json``; never read from the
    environment, so nothing a kernel inherits can change what replicas run."""

    runner: str | None = None  # a Python file every replica runs instead of the runner module
    stall_replica: str | None = None  # a replica started as a process that never comes up
    end_grace: float | None = None  # seconds instead of the supervisor's END_GRACE


class LocalBackend(Backend):
    """Jobs as local processes under a detached supervisor; the record is the source of truth.

    Args:
        root: where job records live; default ``$TFK8S_HOME`` or the Jupyter data dir (read at every call).
    """

    name = "local"
    test_hooks: ClassVar[SupervisorTestHooks | None] = None

    def __init__(self, root: str | os.PathLike | None = None):
        self._root = Path(root) if root else None

    # helpers ----------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self._root or records_root()

    def _record(self, name: str) -> JobRecord:
        record = JobRecord(name, self.root)
        if not record.exists():
            raise JobNotFound(
                f"there is no local job named {name!r}; see tfk8s_jupyter.list_jobs() for the jobs that exist."
            )
        return record

    # submit -----------------------------------------------------------------
    def submit(self, spec: JobSpec, payload: Payload) -> JobStatus:
        """Validate, write the record, pick ports and start the job's supervisor; return at once.

        Raises:
            SpecError: an invalid spec, or more GPUs than this machine has; nothing is started or written.
            JobConflict: a job with that name exists already.
        """
        validate(spec)
        if spec.backend != "local":
            raise SpecError(
                f"spec.backend is {spec.backend!r}; submit it to that backend, not the local one."
            )
        check_local_capacity(spec)  # replicas this machine's memory and cores can run
        if spec.storage:
            raise SpecError(
                f"storage {spec.storage!r} is for Kubernetes jobs; a local job keeps its artifacts in its "
                "own record, so submit it without storage (or with backend='kubernetes')."
            )
        if spec.secret_env:
            raise SpecError(
                f"secret_env {', '.join(sorted(spec.secret_env))} reads Kubernetes Secrets, which a local job "
                "cannot; pass the values with env= for a local job (or submit with backend='kubernetes')."
            )
        resume_from = self._resume_checkpoint(spec) if spec.resume_from else None
        slices = gpu_slices(spec, detect_gpus() if spec.gpus else [])
        check_inputs(payload, os.getcwd())
        # The replicas read the notebook's folder in place; input bytes never go into the record.
        payload = payload.without_data()
        record = JobRecord(spec.name, self.root)
        record.dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            record.dir.mkdir()
        except FileExistsError:
            raise JobConflict(
                f"a job named {spec.name!r} exists already; choose another name, or delete the old job "
                f"with tfk8s_jupyter.attach({spec.name!r}).delete()."
            ) from None
        try:
            return self._start(spec, payload, record, slices, resume_from)
        except OSError as e:
            self._undo(record)
            raise TFK8sError(
                f"could not start job {spec.name!r} ({e}); check that {record.dir.parent} is writable "
                f"and that {sys.executable} runs, then submit again."
            ) from e
        except BaseException:
            self._undo(record)
            raise

    @staticmethod
    def _undo(record: JobRecord) -> None:
        """Remove everything a half-done submission made: its processes and its record."""
        for _, pid, ticks in live_processes(record):
            if process_alive(pid, ticks):
                _signal(pid, signal.SIGKILL)
        record.delete()

    def _resume_checkpoint(self, spec: JobSpec) -> str:
        """The checkpoint directory of the local job ``spec.resume_from``.

        Raises:
            SpecError: there is no such job, it never wrote a checkpoint, or its checkpoints were written by
                the other Keras than the one ``spec`` trains with; nothing is created.
        """
        from ..results import checkpoint_flavours, keras_of

        name = spec.resume_from
        record = JobRecord(name, self.root)
        if not record.exists():
            raise SpecError(
                f"resume_from {name!r} names no local job; pass the name of an earlier job of this "
                "backend (see %tfk8s_jobs)."
            )
        path = checkpoint_dir(JobSpec.from_json(record.read_spec()), record)
        written = checkpoint_flavours(path)
        if not written:
            raise SpecError(
                f"job {name!r} has no checkpoint to resume from (none in {path}); resume from a job "
                "that trained with fit at least until its first checkpoint."
            )
        needed = keras_of(spec)
        if needed not in written:
            names = {"keras3": "Keras 3", "tf_keras": "tf_keras"}
            raise SpecError(
                f"job {name!r} saved its checkpoints with {names[written.pop()]} and this job trains with "
                f"{names[needed]}, which cannot restore them; resume with the earlier job's strategy "
                "(parameter-server jobs use tf_keras, all-reduce jobs Keras 3)."
            )
        return str(path)

    def _start(
        self,
        spec: JobSpec,
        payload: Payload,
        record: JobRecord,
        slices: dict[str, str],
        resume_from: str | None = None,
    ) -> JobStatus:
        record.write_spec(spec.to_json())
        record.write_payload(payload.to_json())
        (record.dir / "logs").mkdir(exist_ok=True)
        (record.dir / ARTIFACTS).mkdir(exist_ok=True)
        ports = allocate_ports(len(spec.replica_names))
        cluster = cluster_of(spec, ports)
        pool_size = self._pool_size()
        status = JobStatus(
            name=spec.name,
            backend="local",
            strategy=spec.strategy,
            phase=PENDING,
            owner=spec.owner,
            replicas=[
                ReplicaStatus(role=r.role, index=i, state=R_PENDING, host=cluster[r.role][i])
                for r in spec.replicas
                for i in range(r.count)
            ],
            message="starting the supervisor",
        )
        record.write_status(status.to_json())
        env = supervisor_env()
        local = {
            "cluster": cluster,
            "gpus": slices,
            "cwd": os.getcwd(),
            "checkpoint_dir": str(checkpoint_dir(spec, record)),
            "artifacts": str(record.dir / ARTIFACTS),
            "resume_from": resume_from,
            "test_hooks": asdict(self.test_hooks) if self.test_hooks else None,
            "warm_pool": str(pool_dir(self.root)) if pool_size is not None else None,
            # kept replicas (local_keep): how long they stay, and the owner they die with
            "keep_warm": _keep_warm(),
            "owner": [os.getpid(), proc_start_ticks(os.getpid())],
        }
        # a kept set of this shape, or pool processes, claimed now and handed over once the supervisor runs
        hooked = self.test_hooks and (self.test_hooks.runner or self.test_hooks.stall_replica)
        claim = claim_at_submit(spec, record.dir.resolve(), local, env, runs_runner=not hooked)
        try:
            write_json_atomic(record.dir / "local.json", local)
            with open(record.dir / SUPERVISOR_LOG, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tfk8s_jupyter.backends.local_supervisor", str(record.dir)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=str(record.dir),
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
            if claim is not None:
                claim.hand_over(proc.pid)  # the kept replicas start the run while the supervisor starts
        except BaseException:
            if claim is not None:
                claim.abandon()
            raise
        # The supervisor rewrites this file with every process it starts; create it only if it has not yet.
        try:
            fd = os.open(record.dir / SUPERVISOR_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                json.dump(
                    {"pid": proc.pid, "start_ticks": proc_start_ticks(proc.pid) or 0, "processes": []}, f
                )
        # Reap the supervisor when it ends so it never lingers as a zombie of this process.
        threading.Thread(target=proc.wait, name=f"tfk8s-reap-{spec.name}", daemon=True).start()
        if pool_size:
            self._refill_pool(spec, record, cluster, slices, pool_size)
        return status

    # the warm pool ----------------------------------------------------------
    def _pool_size(self) -> int | None:
        """``c.TFK8s.warm_pool`` as this launch uses it: None when the pool is off (0, or replicas that
        do not run the runner module: test hooks), -1 for "the last job's shape", else the count."""
        from ..config import current_config

        if self.test_hooks and (self.test_hooks.runner or self.test_hooks.stall_replica):
            return None
        size = current_config().warm_pool
        if size == 0:
            for pool in owned_pools():
                pool.stop()
            return None
        return -1 if size is None else int(size)

    def _refill_pool(
        self, spec: JobSpec, record: JobRecord, cluster: dict, slices: dict[str, str], size: int
    ) -> None:
        """Refill this process's pool for the shape just launched, once that takes no core from the job
        (``local_pool.wait_refill_moment``)."""
        from ..config import current_config

        envs = pool_envs(spec, slices, size)
        pool = owned_pool(self.root)
        replicas = len(spec.replica_names)
        pool.refill_after(record.dir / "status.json", replicas, envs, current_config().warm_pool_idle)

    def warm_up(self, spec: JobSpec, count: int | None = None, timeout: float = 120.0) -> bool:
        """Start warm pool processes for ``spec``'s replicas (``count`` of them, default one per replica)
        now, owned by this process, and wait until they have imported TensorFlow; False on timeout."""
        from ..config import current_config

        slices = gpu_slices(spec, detect_gpus() if spec.gpus else [])
        pool = owned_pool(self.root)
        pool.ensure(pool_envs(spec, slices, -1 if count is None else count), current_config().warm_pool_idle)
        return pool.ready(timeout)

    # reading ----------------------------------------------------------------
    def _status(self, record: JobRecord) -> JobStatus:
        d = record.read_status()
        if d is None:
            spec = JobSpec.from_json(record.read_spec())
            return JobStatus(
                name=spec.name, backend="local", strategy=spec.strategy, owner=spec.owner, phase=PENDING
            )
        status = JobStatus.from_json(d)
        if not status.done and not self._supervisor_alive(record):
            status = self._supervisor_vanished(record)
        return status

    def _supervisor_alive(self, record: JobRecord) -> bool:
        sup = read_supervisor(record)
        if not sup:
            # Written by submit right after the supervisor starts; absent only for a moment.
            return True
        return process_alive(sup.get("pid"), sup.get("start_ticks"))

    def _supervisor_vanished(self, record: JobRecord) -> JobStatus:
        """The supervisor is gone but the status says the job runs: clean up and record the failure."""
        d = record.read_status()  # it may have written its final status just before exiting
        status = JobStatus.from_json(d) if d else None
        if status is not None and status.done:
            return status
        for _, pid, _ in live_processes(record):
            _signal(pid, signal.SIGKILL)
        sup = read_supervisor(record)
        status = status or JobStatus(name=record.name, backend="local", strategy="?")
        status.end(
            FAILED,
            f"the job's supervisor process (pid {sup.get('pid')}) ended unexpectedly, so its replicas were "
            f"stopped; see {record.dir / SUPERVISOR_LOG} and submit the job again.",
            replica_state=R_FAILED,
            replica_message="stopped because the supervisor ended",
        )
        record.write_status(status.to_json())
        return status

    def list(self, owner: str | None = None) -> list[JobStatus]:
        out = []
        for record in JobRecord.all(self.root):
            try:
                status = self._status(record)
            except (OSError, ValueError, KeyError):
                continue  # a record being deleted right now
            if owner is None or status.owner == owner:
                out.append(status)
        return out

    def get(self, name: str) -> JobStatus:
        return self._status(self._record(name))

    def spec(self, name: str) -> JobSpec:
        return JobSpec.from_json(self._record(name).read_spec())

    def events(self, name: str) -> list[dict]:
        return self._record(name).read_events()

    def logs(self, name: str, replica: str, tail: int | None = None) -> str:
        record = self._record(name)
        if replica == "supervisor":
            path = record.dir / SUPERVISOR_LOG
        else:
            names = JobSpec.from_json(record.read_spec()).replica_names
            if replica not in names:
                raise TFK8sError(
                    f"job {name!r} has no replica {replica!r}; use one of {', '.join(names)} (or 'supervisor')."
                )
            path = record.log_path(replica)
        return read_log(path, tail)

    def follow_logs(
        self, name: str, replica: str, stop: threading.Event, poll: float = 0.25
    ) -> Iterator[str]:
        """Yield the replica's output lines as they are written (from the start), until the job ends."""
        self.logs(name, replica, tail=0)  # validates the job and the replica name
        record = self._record(name)
        path = record.dir / SUPERVISOR_LOG if replica == "supervisor" else record.log_path(replica)
        tail = FileTail(path)
        done = False
        while not stop.is_set():
            yield from tail.read()
            if done:
                rest = tail.rest()
                if rest is not None:
                    yield rest
                return
            done = self._status(record).done  # one more read after the end catches the last lines
            if not done:
                stop.wait(poll)

    def watch(
        self,
        name: str,
        on_status: StatusCallback,
        on_events: EventsCallback,
        stop: threading.Event,
        poll: float = 0.25,
    ) -> None:
        """Poll ``status.json`` (by mtime/size) and the tail of ``events.jsonl`` until the job ends."""
        record = self._record(name)
        tail = FileTail(record.events_path)
        dedup = EventDedup()
        last_stat = None
        last_alive_check = 0.0

        def read_new_events() -> None:
            # In batches of about EVENT_BATCH_BYTES: a long backlog is never parsed into one list at once.
            while True:
                lines = tail.read_bytes(max_bytes=EVENT_BATCH_BYTES)
                if not lines:
                    return
                events = []
                for line in lines:
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        continue
                new = dedup.new(events)
                if new:
                    on_events(new)

        while not stop.is_set():
            read_new_events()
            try:
                st = os.stat(record.dir / "status.json")
                key = (st.st_mtime_ns, st.st_size, st.st_ino)
            except FileNotFoundError:
                key = None
            now = time.monotonic()
            if key != last_stat or now - last_alive_check > 2.0:
                last_alive_check = now
                if not record.exists():
                    raise JobNotFound(f"job {name!r} was deleted while it was being watched.")
                status = self._status(record)
                if key != last_stat:
                    last_stat = key
                    read_new_events()  # the supervisor writes events before the status that follows them
                    on_status(status)
                elif status.done:
                    on_status(status)
                if status.done:
                    read_new_events()
                    return
            stop.wait(poll)

    # control ----------------------------------------------------------------
    def stop(self, name: str) -> JobStatus:
        """SIGTERM the supervisor, which stops every replica and records ``stopped``; wait for it.

        A supervisor that does not finish in time is killed and the replicas with it.
        """
        record = self._record(name)
        status = self._status(record)
        if status.done:
            return status
        sup = read_supervisor(record)
        (record.dir / "stop.request").touch()
        if sup.get("pid") and process_alive(sup["pid"], sup.get("start_ticks")):
            _signal(sup["pid"], signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        while time.monotonic() < deadline:
            sup = read_supervisor(record)
            if sup and not process_alive(sup.get("pid"), sup.get("start_ticks")):
                break
            time.sleep(0.1)
        leftovers = live_processes(record)
        for _, pid, _ in leftovers:
            _signal(pid, signal.SIGKILL)
        d = record.read_status()
        status = JobStatus.from_json(d) if d else JobStatus(name=name, backend="local", strategy="?")
        if not status.done:
            status.end(STOPPED, "stopped by the user")
            record.write_status(status.to_json())
        return status

    def artifacts_location(self, name: str) -> str | None:
        """``<record>/artifacts``: a local job's artifacts stay with its record until it is deleted."""
        return str(self._record(name).dir / ARTIFACTS)

    def checkpoint_location(self, name: str) -> str | None:
        record = self._record(name)
        return str(checkpoint_dir(JobSpec.from_json(record.read_spec()), record))

    def workdir_location(self, name: str, replica: str | None = None) -> str | None:
        """``<record>/work/<replica>``: a local replica's work dir stays with the record."""
        record = self._record(name)
        replica = replica or JobSpec.from_json(record.read_spec()).reporting_replica
        work = record.dir / "work" / replica
        return str(work) if work.is_dir() else None

    def delete(self, name: str) -> None:
        """Stop the job if needed, then remove its record (artifacts included) and its configured
        checkpoint directory."""
        record = self._record(name)
        spec = JobSpec.from_json(record.read_spec())
        self.stop(name)
        if spec.checkpoint_dir:
            shutil.rmtree(checkpoint_dir(spec, record), ignore_errors=True)
        record.delete()

    def scale(self, name: str, workers: int) -> JobStatus:
        """Scale a running parameter-server job down to ``workers`` workers, live (see local_scale)."""
        from .local_scale import request_scale

        record = self._record(name)
        return request_scale(record, self._status(record), JobSpec.from_json(record.read_spec()), workers)


def check_inputs(payload: Payload, folder: str) -> None:
    """Every input file found at submission is still in the notebook's folder.

    Raises:
        TFK8sError: one names the first missing file; nothing is started.
    """
    gone = [rel for rel in payload.inputs if not os.path.exists(os.path.join(folder, rel))]
    if gone:
        more = f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""
        raise TFK8sError(
            f"the cell's input {gone[0]!r}{more} disappeared from {folder} after it was found; put it back "
            "(or stop reading it in the cell), then run the cell again."
        )


def _keep_warm() -> float:
    """``c.TFK8s.keep_warm``: seconds a finished job's replicas stay for the next run of its shape."""
    from ..config import current_config

    return float(current_config().keep_warm or 0)
