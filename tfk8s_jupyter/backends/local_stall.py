"""Stall detection of a local job's supervisor: a replica frozen, or training that makes no progress, for
``stall_timeout`` seconds is killed and the role rules restart it (a mixin of the supervisor)."""

from __future__ import annotations

import time

from .local_processes import process_cpu_seconds, process_state

STALL_CHECK_EVERY = 1.0
# Below this many CPU cores summed over the job's replicas the job counts as idle: a hung job (a deadlock,
# a peer that never answers) waits without computing, while work that reports no progress events (an
# evaluate after fit, a custom loop that reports nothing) keeps computing and is never taken for a hang.
IDLE_CPU = 0.2
# Events of the reporting replica that show training advancing.
PROGRESS_EVENTS = ("metric", "epoch", "checkpoint")
# Process states that make no progress by themselves: stopped (SIGSTOP), traced, uninterruptible sleep.
FROZEN_STATES = {"T": "stopped", "t": "stopped by a tracer", "D": "in uninterruptible sleep"}


def say(text: str) -> None:
    """One line of the supervisor's own log (``job.logs("supervisor")``)."""
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


class StallWatch:
    """The supervisor's stall checks (``self`` is the :class:`~.local_supervisor.Supervisor`)."""

    def check_stall(self, now: float) -> bool:
        """Kill a hung replica and apply the role rules to it; return True when the job is finished.

        Hung: a replica frozen (stopped, uninterruptible) for ``stall_timeout`` seconds, or the reporting
        replica's run without a progress event for that long (before its first progress event the
        start-up grace ``setup_timeout`` is added, for the first step's compile). The culprit is the frozen
        replica if there is one, else the reporting replica."""
        if self.stall_timeout <= 0 or now - self.last_stall_check < STALL_CHECK_EVERY:
            return False
        self.last_stall_check = now
        timeout = self.stall_timeout
        for r in self.replicas:
            state = process_state(r.proc.pid) if r.alive else None
            if state in FROZEN_STATES:
                cpu = process_cpu_seconds(r.proc.pid) or 0.0
                # a process that keeps computing between samples (heavy I/O sampled in D) is not frozen
                if r.frozen_since is None or r.frozen_state != state or cpu > r.frozen_cpu + 0.05:
                    r.frozen_since, r.frozen_state, r.frozen_cpu = now, state, cpu
            else:
                r.frozen_since = None
        frozen = [r for r in self.replicas if r.alive and r.frozen_since is not None]
        long_frozen = [r for r in frozen if now - r.frozen_since >= timeout]
        self.note_cpu(now)
        stalled = False
        # after a fit's last epoch, what follows (its tf.data teardown, saving) makes no progress events
        training = not self.fit_finished
        if self.progress_at is not None and self.ended_at is None and self.reporting.alive and training:
            limit = timeout if self.progress_seen else timeout + float(self.spec.setup_timeout)
            quiet_since = max(self.progress_at, self.busy_at or 0.0)
            if now - quiet_since >= limit:
                stalled = True
        if not long_frozen and not stalled:
            return False
        culprit = (long_frozen or frozen or [self.reporting])[0]
        at = self.where()
        if culprit in long_frozen:
            what = (
                f"was frozen ({FROZEN_STATES[culprit.frozen_state]}) longer than stall_timeout={timeout:g} s"
            )
        elif culprit.frozen_since is not None:
            what = (
                f"was frozen ({FROZEN_STATES[culprit.frozen_state]}) and training made no progress for longer "
                f"than stall_timeout={timeout:g} s"
            )
        else:
            what = f"made no training progress for longer than stall_timeout={timeout:g} s"
        note = f"{culprit.name} {what} {at}, so it was killed"
        say(f"{note} (pid {culprit.proc.pid})")
        self.stall_notes[culprit.name] = note
        culprit.proc.kill()
        code = culprit.proc.wait()
        self.pump_events()
        finished = self.on_exits([(culprit, code)])
        self.stall_notes.pop(culprit.name, None)
        if not finished:
            self.progress_at = time.monotonic() if self.progress_at is not None else None
        return finished

    def where(self) -> str:
        """``at step N`` of the reporting replica's last progress event (``before its first step``)."""
        return f"at step {self.last_step}" if self.last_step is not None else "before its first step"

    def note_cpu(self, now: float) -> None:
        """Set :attr:`busy_at` to ``now`` when the replicas used more than ``IDLE_CPU`` cores since the last
        check (a replica that was not there last time counts from its start), or when a replica's main
        thread is running or runnable: on a loaded machine a computing process may get less than
        ``IDLE_CPU`` of a core, but it waits in the run queue, never asleep as a hung one does."""
        used, seen, runnable = 0.0, {}, False
        for r in self.replicas:
            if not r.alive:
                continue
            cpu = process_cpu_seconds(r.proc.pid)
            if cpu is None:
                continue
            seen[r.proc.pid] = cpu
            used += cpu - self.cpu_seen.get(r.proc.pid, 0.0)
            runnable = runnable or process_state(r.proc.pid) == "R"
        elapsed = now - self.last_cpu_check if self.last_cpu_check else STALL_CHECK_EVERY
        if runnable or used > IDLE_CPU * max(elapsed, STALL_CHECK_EVERY):
            self.busy_at = now
        self.cpu_seen, self.last_cpu_check = seen, now
