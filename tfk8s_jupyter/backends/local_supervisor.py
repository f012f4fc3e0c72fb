"""The supervisor of one local job: ``python -m tfk8s_jupyter.backends.local_supervisor <job dir>``.

Started detached by :class:`~tfk8s_jupyter.backends.local.LocalBackend` (own session, outlives the
submitting process). One single-threaded loop:

- starts one process per replica (``python -m tfk8s_jupyter.runner`` with the runner contract's
  environment), output into ``logs/<replica>.log``; each replica dies with the supervisor
  (``PR_SET_PDEATHSIG``), so a killed supervisor leaves no orphan;
- tails the reporting replica's log and appends its protocol events to ``events.jsonl`` as they arrive,
  so metrics persist with no monitor running;
- writes ``status.json`` on every change;
- applies the lifecycle rules: success when the chief (PS) or worker 0 exits 0, then SIGTERM the rest
  (SIGINT does not stop a blocked ``server.join()``) and SIGKILL stragglers; restarts per role up to
  ``max_restarts`` (PS: a dead worker alone, a dead ps or chief: everything; all-reduce: every worker
  together); an error raised by the cell fails the job at once (it would only fail again; with kept replicas,
  the processes may stay for the next run when the error left them fit, :func:`.local_keep.keep_after_error`);
  a setup deadline that names the replica that never came up; SIGTERM from ``stop()`` stops everything and
  records ``stopped``.

Beside it: the stall checks (:mod:`.local_stall`), which failures a restart may cure (:mod:`.local_errors`),
and resizes (:mod:`.local_scale`, live; :mod:`.local_resize`, by checkpoint-restart).

Test-only settings come from ``local.json`` (``test_hooks``, written from
:attr:`~tfk8s_jupyter.backends.local.LocalBackend.test_hooks` by the test suite), never from the
environment, so no stray variable of a kernel can change what replicas run.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..logtext import FileTail, log_excerpt, read_log
from ..protocol import EventDedup, parse_line
from ..records import JobRecord, write_json_atomic
from ..replica_env import descendants, end_processes
from ..spec import JobSpec
from .base import (
    FAILED,
    PENDING,
    R_FAILED,
    R_REMOVED,
    R_RESTARTING,
    R_RUNNING,
    R_STARTING,
    R_STOPPED,
    R_SUCCEEDED,
    REPLICA_DONE,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    JobStatus,
    ReplicaStatus,
)
from .local import SUPERVISOR_FILE
from .local_env import job_cwd, job_replica_env
from .local_errors import TRANSIENT_ERRORS, curable_error, error_type  # noqa: F401 (re-exported)
from .local_handover import adopt, drop, pooled_process
from .local_keep import KEEP_VAR, KeepPlan, explain_unkept, keep_after_error, keep_at_end, unkept_reason
from .local_pool import claim_replica
from .local_processes import listening_ports, proc_start_ticks, process_state
from .local_resize import cancel as cancel_resize
from .local_resize import filter_events
from .local_scale import note_full_restart
from .local_scale import poll as poll_scale
from .local_stall import FROZEN_STATES, PROGRESS_EVENTS, StallWatch, say

TICK = 0.1  # seconds between loop iterations
SETUP_TICK = 0.03  # until the reporting replica's start event
# From its start event to the run's first progress: the first point reaches the record sooner (a kept or
# warm replica reaches its first batch within a second of the start event).
FIRST_POINT_TICK = 0.01
# Seconds a replica gets between SIGTERM and SIGKILL. All-reduce workers catch SIGTERM (TensorFlow's
# preemption notifier) and ignore it while setting up, so a failed job does not wait long for them.
TERM_GRACE = 5.0
FAILED_GRACE = 2.0
PEER_GRACE = 5.0  # seconds all-reduce workers get to finish by themselves once worker 0 has
END_GRACE = 30.0  # seconds the reporting replica may take to exit after it reported a successful end
UP_CHECK_EVERY = 1.0
GATHER = 0.7  # seconds to collect peers that fail together before deciding what to do
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int):
    def preexec() -> None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died between fork and prctl
            os._exit(1)

    return preexec


def this_run(log: str) -> str:
    """The part of a replica's log written since its latest (re)start (after the supervisor's last
    ``---- tfk8s: ...`` line)."""
    at = log.rfind("\n---- tfk8s: ")
    return log if at < 0 else log[at + 1 :].partition("\n")[2]


class Replica:
    def __init__(self, status: ReplicaStatus, log: Path):
        self.status = status
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.start_at: float | None = None  # monotonic time of a scheduled (re)start
        self.up = False  # its port accepted connections / it reported start
        self.frozen_since: float | None = None  # monotonic time it was first seen in a FROZEN_STATES state
        self.frozen_state = ""
        self.frozen_cpu = 0.0  # its CPU seconds when last seen advancing while frozen-looking

    @property
    def name(self) -> str:
        return self.status.name

    @property
    def port(self) -> int:
        return int(str(self.status.host).rsplit(":", 1)[1])

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor(StallWatch):
    def __init__(self, job_dir: Path):
        self.record = JobRecord(job_dir.name, job_dir.parent)
        self.spec = JobSpec.from_json(self.record.read_spec())
        self.local = json.loads((job_dir / "local.json").read_text())
        self.cluster = self.local["cluster"]
        status = self.record.read_status()
        self.status = JobStatus.from_json(status) if status else JobStatus(self.spec.name, "local", "?")
        self.replicas = [Replica(r, self.record.log_path(r.name)) for r in self.status.replicas]
        self.by_name = {r.name: r for r in self.replicas}
        self.reporting = self.by_name[self.spec.reporting_replica]
        self.tail = FileTail(self.reporting.log)
        self.dedup = EventDedup()
        self.run_error: dict | None = None  # the reporting replica's error event in its current run
        self.awaiting_start_until: float | None = None
        self.stop_requested = False
        self.processes: list[dict] = []
        self.last_up_check = 0.0
        self.workdir = job_dir / "work"
        self.checkpoint = Path(self.local["checkpoint_dir"])
        self.cwd = job_cwd(self.local, job_dir)
        hooks = self.local.get("test_hooks") or {}
        runner = hooks.get("runner")
        self.command = [sys.executable, runner] if runner else [sys.executable, "-m", "tfk8s_jupyter.runner"]
        self.stall = hooks.get("stall_replica")
        self.end_grace = float(hooks.get("end_grace") or END_GRACE)
        self.ended_at: float | None = None  # when the reporting replica's current run reported success
        # Stall detection: no progress event for stall_timeout seconds (after a start-up grace covering the
        # first step's compile) or a replica frozen that long -> the role rules' restart.
        self.stall_timeout = float(getattr(self.spec, "stall_timeout", 0) or 0)
        self.progress_at: float | None = None  # monotonic time of the current run's start or last progress
        self.progress_seen = False  # the current run reported a progress event
        self.fit_finished = False  # the last progress event was a fit's last epoch (teardown is no hang)
        self.last_step: int | None = None
        self.last_stall_check = 0.0
        self.busy_at: float | None = None  # monotonic time the job last used more than IDLE_CPU cores
        self.cpu_seen: dict[int, float] = {}  # pid -> CPU seconds at the last stall check
        self.last_cpu_check = 0.0
        self.stall_notes: dict[str, str] = {}  # replica name -> why the supervisor killed it as hung
        self.resize = None  # an accepted checkpoint-restart resize (local_resize.PendingResize)
        self.checkpoints_seen = 0  # checkpoint events of the reporting replica (saved or restored)
        self.checkpoint_epoch: int | None = None  # the epoch of the last one
        self.current_epoch: int | None = None  # the epoch of the last metric or epoch event
        # Kept replicas (c.TFK8s.keep_warm): this job may run on a finished job's processes, and keep its own.
        self.keep = KeepPlan.from_local(self.local, job_dir, self.command) if not self.stall else None
        self.kept_procs: dict = {}  # replica name -> handle of a kept process claimed for it
        self.pooled: dict = {}  # replica name -> a pool process the submitting process handed it
        # replica name -> pid of a process that ended its run with a cell error and waits to be kept: for the
        # job it has exited (with that run's code, recorded), though the process is alive
        self.parked: dict[str, int] = {}

    # bookkeeping ----------------------------------------------------------------
    def save(self) -> None:
        self.record.write_status(self.status.to_json())

    def save_processes(self) -> None:
        write_json_atomic(
            self.record.dir / SUPERVISOR_FILE,
            {"pid": os.getpid(), "start_ticks": proc_start_ticks(os.getpid()), "processes": self.processes},
        )

    def pump_events(self) -> None:
        key = self.spec.protocol_key
        events = [e for e in (parse_line(line, key) for line in self.tail.read()) if e is not None]
        events = filter_events(self, events)  # a restart-resize drops the old run's tail after its checkpoint
        if not events:
            return
        changed = False
        for e in events:
            if e.get("type") == "start":
                self.progress_at, self.progress_seen = time.monotonic(), False
            elif e.get("type") in PROGRESS_EVENTS:
                self.progress_at, self.progress_seen = time.monotonic(), True
                if e.get("type") != "checkpoint":  # a checkpoint after the last epoch is still its end
                    self.fit_finished = e.get("type") == "epoch" and e.get("last_epoch") is True
                if isinstance(e.get("step"), int):
                    self.last_step = e["step"]
            if e.get("type") == "start" and self.awaiting_start_until is not None:
                say(f"{self.reporting.name} started training (run {e.get('run')})")
                self.awaiting_start_until = None
                self.status.phase = RUNNING
                self.status.message = None
                self.reporting.up = True
                # a start event read late, after the run's end, leaves the replica ended
                if self.reporting.status.state not in REPLICA_DONE:
                    self.reporting.status.state = R_RUNNING
                self.check_up()
                changed = True
            elif e.get("type") == "end" and e.get("status") == "succeeded":
                self.ended_at = time.monotonic()
            elif e.get("type") == "error":
                self.run_error = e
        self.record.append_events(events, self.dedup)
        if changed:
            self.save()

    def limit(self, r: Replica) -> int:
        """How many restarts ``r``'s role allows."""
        return next(rs.max_restarts for rs in self.spec.replicas if rs.role == r.status.role)

    def stop_signalled(self) -> bool:
        return self.stop_requested or (self.record.dir / "stop.request").exists()

    # processes --------------------------------------------------------------------
    def replica_env(self, r: Replica) -> dict[str, str]:
        env = job_replica_env(self.spec, self.record.dir, self.local, r.name, self.cluster)
        if self.keep is not None and self.keep.shape is not None:
            env[KEEP_VAR] = self.keep.env_var(r.name)
        return env

    def claim_kept(self) -> None:
        adopt(self)  # the kept set or pool processes the submitting process handed this job

    def try_keep(self, now: float) -> str | None:
        return keep_at_end(self, now)  # once training ended: keep the replicas for the next run

    def spawn(self, r: Replica) -> None:
        env = self.replica_env(r)
        command = self.command
        if self.stall == r.name:
            command = [sys.executable, "-c", "import time\nwhile True: time.sleep(60)"]
        r.log.parent.mkdir(parents=True, exist_ok=True)
        with open(r.log, "ab") as log:
            if r.status.restarts:
                log.write(
                    f"\n---- tfk8s: {r.name} restarted ({r.status.restarts} of {self.limit(r)}) ----\n".encode()
                )
                log.flush()
            kept = self.kept_procs.pop(r.name, None)
            self.parked.pop(r.name, None)
            warm = (
                kept
                or pooled_process(self, r.name)
                or claim_replica(self.local.get("warm_pool"), command, env, self.cwd, r.log)
            )
            r.proc = warm or subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                close_fds=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        say(
            f"started {r.name} as pid {r.proc.pid}"
            + (f" (restart {r.status.restarts})" if r.status.restarts else "")
        )
        # kept: a finished job's replica took this run; warm: a warm pool process became the replica
        r.status.launch = "kept" if kept else "warm" if warm else "cold"
        r.start_at = None
        r.up = False
        r.frozen_since = None
        r.status.pid = r.proc.pid
        r.status.state = R_STARTING
        r.status.exit_code = None
        r.status.started = time.time()
        self.processes.append(
            {"replica": r.name, "pid": r.proc.pid, "start_ticks": proc_start_ticks(r.proc.pid) or 0}
        )
        self.save_processes()
        if r is self.reporting:
            self.run_error = None
            self.ended_at = None
            self.progress_at = None  # the clock starts at the new run's start event
            self.fit_finished = False
            self.awaiting_start_until = time.monotonic() + float(self.spec.setup_timeout)

    def terminate(self, replicas: list[Replica], grace: float = TERM_GRACE) -> None:
        """SIGTERM, wait up to ``grace`` seconds, SIGKILL what is left; record every exit code. A parked
        replica (its run has ended, the process holds nothing of the job) is killed at once and keeps the
        code its run ended with. The processes a replica's cell started go with it (they would outlive the
        job)."""
        live = [r for r in replicas if r.alive]
        below = descendants(*(r.proc.pid for r in live))
        for r in live:
            if r.name in self.parked:
                r.proc.kill()
                continue
            r.proc.send_signal(signal.SIGTERM)
            if process_state(r.proc.pid) in ("T", "t"):
                r.proc.kill()  # a stopped process never handles SIGTERM
        deadline = time.monotonic() + grace
        while any(r.alive for r in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        for r in live:
            if r.alive:
                r.proc.kill()
            code = r.proc.wait()
            if self.parked.pop(r.name, None) is None:
                r.status.exit_code = code
        end_processes(below, grace=0.5)
        for r in replicas:
            r.start_at = None

    # lifecycle -------------------------------------------------------------------
    def finish(self, phase: str, message: str | None) -> None:
        say(f"job {phase}" + (f": {message}" if message else ""))
        if phase == FAILED and self.keep is not None and self.parked and keep_after_error(self, message):
            cancel_resize(self, f"the job {phase} first")
            return  # failed with its cell's own error; its replicas are kept for the next run
        # keeping was tried when a replica waits to be kept after its cell's error, or said why it is not
        tried = self.keep is not None and (
            bool(self.parked) or any(unkept_reason(self, r.name, r.status.pid) for r in self.replicas)
        )
        waiting: list[str] = []  # replicas waiting to be kept (serving ones among them)
        if self.keep is not None:  # replicas waiting to be kept are not: they exit
            pids = {r.name: r.proc.pid for r in self.replicas if r.alive}
            waiting = self.keep.ready(list(pids), pids)
            self.keep.release(waiting)
        cancel_resize(self, f"the job {phase} first")
        if phase == SUCCEEDED and self.spec.strategy != "parameter_server":
            # All-reduce peers finish together with worker 0; let them exit by themselves.
            deadline = time.monotonic() + PEER_GRACE
            while (
                any(r.alive for r in self.replicas if r is not self.reporting) and time.monotonic() < deadline
            ):
                time.sleep(0.05)
        self.mark_exited(self.newly_exited())
        live = [r for r in self.replicas if r.alive and r.name not in self.parked]
        self.terminate(self.replicas, grace=FAILED_GRACE if phase == FAILED else TERM_GRACE)
        for r in self.replicas:
            if r.proc is not None and r.status.exit_code is None:
                r.status.exit_code = r.proc.wait()
            if r in live:
                r.status.state = R_SUCCEEDED if phase == SUCCEEDED else R_STOPPED
                r.status.message = {
                    SUCCEEDED: "stopped after it reported the end of training"
                    if r is self.reporting
                    else f"stopped after {self.reporting.name} finished",
                    STOPPED: "stopped by the user",
                }.get(phase, "stopped because the job failed")
        if phase == SUCCEEDED and self.keep is not None:
            explain_unkept(self)  # every replica has ended: a cell's leftovers, in the table
        elif tried:  # every replica has ended: why the set was not kept after the cell's error, in the table
            explain_unkept(
                self,
                {
                    r.name: f"{r.name} is not kept for the next run: it was still running when the job failed, "
                    "so it was stopped"
                    for r in live
                    if r.name not in waiting
                },
            )
        self.pump_events()
        self.status.end(phase, message)  # replicas that never ran or were waiting to restart: stopped
        self.save()

    def last_error_event(self, r: Replica) -> dict | None:
        """The last ``error`` event ``r`` printed since its latest (re)start, if any."""
        if r is self.reporting and self.run_error:
            return self.run_error
        text = this_run(read_log(r.log, max_bytes=256 << 10))
        events = (parse_line(line, self.spec.protocol_key) for line in text.splitlines())
        errors = [e for e in events if e and e.get("type") == "error"]
        return errors[-1] if errors else None

    def diagnose(self, r: Replica) -> tuple[str, bool]:
        """``(message, curable)`` for a replica that failed: a restart may cure it unless the cell raised."""
        code = r.status.exit_code
        if r.name in self.stall_notes:
            return self.stall_notes[r.name], True
        if code is not None and code < 0:
            return f"{r.name} was killed by signal {-code}", True
        event = self.last_error_event(r)
        if event:
            text = str(event.get("message") or event.get("error") or "the cell raised an error")
            full = text + " " + str(event.get("traceback") or "")
            return f"{r.name} failed: {text}{self.hint(r, full)}", curable_error(event)
        tail = log_excerpt(this_run(read_log(r.log, tail=40)), n=5, width=600)
        message = f"{r.name} exited with code {code}" + (f"; its last log lines: {tail}" if tail else "")
        return message + self.hint(r, tail), True

    @staticmethod
    def hint(r: Replica, text: str) -> str:
        if "Could not start gRPC server" in text:
            return f" (another process holds its port {r.status.host}; submit the job again to get new ports)"
        return ""

    def mark_exited(self, exited: list[tuple[Replica, int]]) -> None:
        """Mark replicas as ended, once what the reporting replica wrote before its end is read (a start
        event read after the end would make it running again)."""
        if exited:
            self.pump_events()
        for r, code in exited:
            pid = r.proc.pid if r.proc else "?"
            if r.name in self.parked:
                say(f"{r.name} (pid {pid}) ended its run with code {code}; it waits to be kept")
            else:
                say(f"{r.name} (pid {pid}) exited with code {code}")
            r.status.exit_code = code
            r.status.state = R_SUCCEEDED if code == 0 else R_FAILED

    def newly_exited(self) -> list[tuple[Replica, int]]:
        """Replicas that ended since the last look: their process exited, or (kept replicas) its run ended
        with a cell error and it waits to be kept (:attr:`parked`)."""
        out = []
        for r in self.replicas:
            if r.proc is None:
                continue
            code = r.proc.poll()
            if r.status.state in (R_SUCCEEDED, R_FAILED, R_REMOVED):
                continue
            if code is None and self.keep is not None and r.name not in self.parked:
                code = self.keep.parked(r.name, r.proc.pid)
                if code is not None:
                    self.parked[r.name] = r.proc.pid
            if code is not None:
                out.append((r, code))
        return out

    def on_exits(self, exited: list[tuple[Replica, int]]) -> bool:
        """React to replicas that ended; return True when the job is finished."""
        self.mark_exited(exited)
        if any(r is self.reporting and code == 0 for r, code in exited):
            self.finish(SUCCEEDED, None)
            return True
        failed = [r for r, code in exited if code != 0]
        if not failed:
            return False
        # Peers fail together (a lost ps takes the chief down within milliseconds, an error in the cell
        # ends every all-reduce worker): gather them for a moment, then judge the whole picture.
        time.sleep(GATHER)
        later = self.newly_exited()
        self.mark_exited(later)
        if any(r is self.reporting and code == 0 for r, code in later):
            self.finish(SUCCEEDED, None)
            return True
        failed += [r for r, code in later if code != 0]
        self.pump_events()
        verdicts = {r: self.diagnose(r) for r in failed}
        # A killed replica, or a frozen peer (which TensorFlow's heartbeat reports as lost), explains errors
        # of the others: a restart may cure those even when they look like an error in the cell.
        # (stopped only: a sample in uninterruptible sleep is often a moment of I/O)
        frozen = [r for r in self.replicas if r.alive and process_state(r.proc.pid) in ("T", "t")]
        killed = any((r.status.exit_code or 0) < 0 for r in failed) or bool(frozen)
        cell_errors = [r for r in failed if not verdicts[r][1]]
        if cell_errors and not killed:
            r = self.reporting if self.reporting in cell_errors else cell_errors[0]
            self.finish(FAILED, verdicts[r][0])
            return True
        culprit = next((r for r in failed if r is not self.reporting), failed[0])
        message = verdicts[culprit][0]
        if frozen and culprit.name not in self.stall_notes:
            # TensorFlow noticed a frozen peer first (its heartbeat): name the frozen one, not the long error
            kind = error_type(self.last_error_event(culprit) or {})
            state = process_state(frozen[0].proc.pid) or "T"
            message = (
                f"{frozen[0].name} was frozen ({FROZEN_STATES.get(state, 'stopped')}) and {culprit.name} lost it"
                + (f" ({kind})" if kind else "")
                + f" {self.where()}, so it was killed"
            )
        for r in frozen:  # never left behind: killed, and restarted with the others by the role rules
            r.proc.kill()
            r.status.exit_code = r.proc.wait()
            r.status.state = R_FAILED
            failed.append(r)
        if culprit.status.restarts >= self.limit(culprit):
            if self.limit(culprit):
                message += f" (after {culprit.status.restarts} restart(s))"
            self.finish(FAILED, message)
            return True
        if self.spec.strategy == "parameter_server" and all(r.status.role == "worker" for r in failed):
            self.schedule_restart(failed)
            self.status.message = f"restarting {', '.join(r.name for r in failed)}: {message}"
        else:
            self.terminate([r for r in self.replicas if r.alive], grace=FAILED_GRACE)
            note_full_restart(self)  # removed workers come back: the cluster spec names every worker
            self.schedule_restart(self.replicas)
            self.status.message = f"restarting every replica because {message}"
        say(self.status.message)
        self.save()
        return False

    def schedule_restart(self, replicas: list[Replica]) -> None:
        for r in replicas:
            if r.alive:  # one that waited to be kept after its cell's error: a restart starts it anew
                self.parked.pop(r.name, None)
                r.proc.kill()
                r.proc.wait()
            r.proc = None
            r.status.restarts += 1
            r.status.state = R_RESTARTING
            r.start_at = time.monotonic() + min(8.0, 2.0 ** (r.status.restarts - 1))
        if self.reporting in replicas:
            self.status.phase = RUNNING if self.status.phase == RUNNING else PENDING
            self.awaiting_start_until = None

    def check_up(self) -> bool:
        """Mark replicas whose port listens as running; return True when something changed."""
        changed = False
        for r in self.replicas:
            if r is self.reporting or r.up or not r.alive:
                continue
            if r.port in listening_ports(r.proc.pid):
                r.up = True
                r.status.state = R_RUNNING
                r.status.message = None
                changed = True
                say(f"{r.name} is up (listening on {r.status.host})")
            elif r.status.message is None and time.time() - (r.status.started or 0) > self.spec.setup_timeout:
                # Training may go on without it (parameter servers tolerate a missing worker); say so.
                r.status.message = (
                    f"not up after setup_timeout={float(self.spec.setup_timeout):g} s "
                    f"(never listened on {r.status.host}); see job.logs({r.name!r})"
                )
                changed = True
        if changed and self.status.phase == RUNNING and all(r.up for r in self.replicas if r.alive):
            self.status.message = None  # a restarted replica is back
        return changed

    def deadline_message(self) -> str:
        waited = float(self.spec.setup_timeout)
        self.check_up()
        missing = [r for r in self.replicas if r is not self.reporting and not r.up]
        if missing:
            first = missing[0]
            names = ", ".join(r.name for r in missing)
            verb = "was" if len(missing) == 1 else "were"
            tail = log_excerpt(read_log(first.log, tail=20), n=2, width=600)
            return (
                f"{names} did not come up within setup_timeout={waited:g} s (never listened on "
                f"{', '.join(str(r.status.host) for r in missing)}) and {verb} stopped with the job; "
                f"see job.logs({first.name!r})" + (f" — last lines: {tail}" if tail else "") + "."
            )
        tail = log_excerpt(read_log(self.reporting.log, tail=20), n=2, width=600)
        return (
            f"{self.reporting.name} did not start training within setup_timeout={waited:g} s; "
            f"see job.logs({self.reporting.name!r})" + (f" — last lines: {tail}" if tail else "") + "."
        )

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.save_processes()
        if self.stop_signalled():
            drop(self)
            self.finish(STOPPED, "stopped by the user")
            return
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.claim_kept()
        for r in self.replicas:
            self.spawn(r)
        self.status.message = "waiting for every replica to come up"
        self.save()
        limit = self.spec.deadline_seconds  # --deadline: the longest the job may run, from here
        job_deadline = None if limit is None else time.monotonic() + limit
        while True:
            if self.stop_signalled():
                self.finish(STOPPED, "stopped by the user")
                return
            self.pump_events()
            poll_scale(self)  # job.scale(workers=N): a live scale-down, or a restart at the next checkpoint
            exited = self.newly_exited()
            if exited:
                if self.on_exits(exited):  # it marks them once their output is read (mark_exited)
                    return
                self.save()
            now = time.monotonic()
            started = [r for r in self.replicas if r.start_at is not None and r.start_at <= now]
            if started:
                for r in started:
                    self.spawn(r)
                self.save()
            if now - self.last_up_check >= UP_CHECK_EVERY and any(
                r.alive and not r.up for r in self.replicas
            ):
                self.last_up_check = now
                if self.check_up():
                    self.save()
            if self.keep is not None and self.ended_at is not None:
                kept = self.try_keep(now)
                if kept == "kept":
                    return
                if kept == "no" and self.reporting.alive:
                    self.finish(SUCCEEDED, None)
                    return
            if self.ended_at is not None and self.reporting.alive and now - self.ended_at > self.end_grace:
                # Training finished but the process hangs on its way out (TensorFlow threads): end it.
                self.finish(
                    SUCCEEDED,
                    f"{self.reporting.name} reported the end of training but did not exit within "
                    f"{self.end_grace:g} s, so it was stopped",
                )
                return
            if self.check_stall(now):
                return
            if self.awaiting_start_until is not None and now > self.awaiting_start_until:
                self.finish(FAILED, self.deadline_message())
                return
            if job_deadline is not None and now > job_deadline:
                self.finish(
                    FAILED,
                    f"the job ran past its deadline of {limit:g} s and was stopped; give it a longer "
                    "--deadline, or make it train less",
                )
                return
            if self.progress_seen:
                time.sleep(TICK)
            else:
                time.sleep(FIRST_POINT_TICK if self.progress_at is not None else SETUP_TICK)

    def _on_signal(self, signum, frame) -> None:
        self.stop_requested = True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tfk8s_jupyter.backends.local_supervisor <job dir>", file=sys.stderr)
        return 2
    supervisor = Supervisor(Path(argv[0]).resolve())
    try:
        supervisor.run()
    except BaseException as e:
        # Never leave replicas behind, and say why the job ended.
        supervisor.terminate(supervisor.replicas, grace=3.0)
        supervisor.status.end(
            FAILED, f"the job's supervisor crashed ({type(e).__name__}: {e}); see supervisor.log."
        )
        supervisor.save()
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
