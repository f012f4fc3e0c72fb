"""The line magics that follow and manage jobs: ``%tfk8s_jobs``, ``%tfk8s_check``, ``%tfk8s_attach``,
``%tfk8s_logs``, ``%tfk8s_stop``, ``%tfk8s_delete``, ``%tfk8s_wait`` and ``%tfk8s_config``.

They share the state of the kernel's :class:`~tfk8s_jupyter.magics.TFK8sMagics` (defaults, jobs, panels),
which ``%load_ext tfk8s_jupyter`` registers beside them.
"""

from __future__ import annotations

import os
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .config import current_owner
from .display_text import ConfigTable, JobsTable
from .job_origin import origin_of
from .logtext import last_lines
from .magic_args import job_backend_argument, job_name_argument, parse_magic_line
from .spec import SpecError


def job_details(backend, name: str) -> dict:
    """What a job's record adds to its ``%tfk8s_jobs`` row: the last loss (read from the end of its
    events, however many there are) and where it came from."""
    from .backends.base import TFK8sError
    from .retention import events_path, last_loss

    out: dict[str, Any] = {}
    try:
        loss = last_loss(events_path(backend, name))
    except OSError:
        loss = None
    if loss is not None:
        out["loss"] = loss
    try:
        labels = backend.spec(name).labels or {}
    except (TFK8sError, OSError, ValueError, KeyError):
        labels = {}
    origin = origin_of(labels)
    if origin:
        out["origin"] = origin
    return out


BACKENDS = ("local", "kubernetes")


@magics_class
class JobMagics(Magics):
    """The line magics; ``train`` is the kernel's :class:`~tfk8s_jupyter.magics.TFK8sMagics`."""

    def __init__(self, shell, train):
        super().__init__(shell)
        self.train = train

    def _job(self, name: str | None, backend: str | None = None):
        from .api import attach
        from .backends.base import TFK8sError

        name = name or self.train.last_job
        if not name:
            raise UsageError(
                "no job named and none started in this kernel; give a job name (see %tfk8s_jobs)."
            )
        if name in self.train.jobs and (backend is None or self.train.jobs[name].backend.name == backend):
            return self.train.jobs[name]
        try:
            job = attach(name, backend=backend)
        except LookupError:
            where = backend or self.train.defaults.backend
            raise UsageError(
                f"there is no {where} job named {name!r}; %tfk8s_jobs lists your jobs (add --backend for another backend)."
            ) from None
        except (TFK8sError, SpecError) as e:
            raise UsageError(f"{e}") from None
        self.train.jobs[name] = job
        return job

    def _forget(self, name: str, phase: str) -> None:
        """A job deleted: its panels keep their last state, the kernel stops following it."""
        self.train.jobs.pop(name, None)
        for panel in self.train.panels.pop(name, []):
            panel.mark_gone(f"deleted (last known state: {phase})")
        self.train.progress.pop(name, None)
        self.train.cell_jobs = {k: v for k, v in self.train.cell_jobs.items() if v != name}
        if self.train.last_job == name:
            self.train.last_job = None

    def _listing(self, name: str | None, owner: str | None, all_namespaces: bool):
        """One backend's jobs with ``keep_jobs`` applied, and the line saying what it removed (or ``None``)."""
        from .api import backend_for
        from .retention import apply_keep_jobs

        b = backend_for(name)
        if all_namespaces and b.name != "kubernetes":
            raise UsageError("--all-namespaces lists Kubernetes jobs; add --backend kubernetes.")
        extra = {"all_namespaces": True} if all_namespaces else {}
        jobs = b.list(owner=owner, **extra)
        pruned = apply_keep_jobs(b, jobs, owner=current_owner())
        by_name = {s.name: s for s in jobs}
        for gone in pruned.deleted:
            self._forget(gone, by_name[gone].phase)
        return b, pruned.kept, pruned.line()

    @magic_arguments()
    @argument("--backend", default=None, help="local or kubernetes (default: the configured backend).")
    @argument(
        "--all-backends",
        dest="all_backends",
        action="store_true",
        help="Local and Kubernetes jobs in one table (a cluster that cannot be reached gets one line).",
    )
    @argument(
        "--all",
        action="store_true",
        help="Every user's jobs, not only yours (not under JupyterHub, where other users' jobs are theirs).",
    )
    @argument(
        "--all-namespaces",
        dest="all_namespaces",
        action="store_true",
        help="Kubernetes: your jobs in every namespace you may list them in, not only the default one.",
    )
    @line_magic
    def tfk8s_jobs(self, line: str):
        """Table of your jobs, newest first: name, phase, backend, strategy, replica states, last loss,
        origin (notebook and cell), age.

        With ``c.TFK8s.keep_jobs`` set (a count like ``"50"`` or an age like ``"7d"``), your finished jobs
        beyond it are deleted first, and one line says how many went.

        Examples::

            %tfk8s_jobs
            %tfk8s_jobs --backend kubernetes
            %tfk8s_jobs --all-backends
        """
        from .backends.base import TFK8sError

        args = parse_magic_line(self.tfk8s_jobs, line)
        if args.all and os.environ.get("JUPYTERHUB_USER"):
            raise UsageError(
                "under JupyterHub %tfk8s_jobs lists only your own jobs (other users' jobs are theirs to "
                "see); drop --all."
            )
        if args.all_backends and args.backend:
            raise UsageError("--all-backends lists every backend; drop --backend (or --all-backends).")
        owner = None if args.all else current_owner()
        rows, details = [], {}
        for name in BACKENDS if args.all_backends else (args.backend,):
            namespaces = args.all_namespaces and (not args.all_backends or name == "kubernetes")
            try:
                b, jobs, removed = self._listing(name, owner, namespaces)
            except (TFK8sError, SpecError) as e:
                if not args.all_backends:
                    raise UsageError(str(e)) from None
                print(f"tfk8s: {name} jobs could not be listed: {e}")
                continue
            if removed:
                print(removed)
            for s in jobs:
                if namespaces:
                    s.backend = f"kubernetes/{s.namespace}"  # the table's backend column names the namespace
                details[(s.backend, s.name)] = job_details(b, s.name)
            rows += jobs
        rows.sort(key=lambda s: s.created, reverse=True)
        from IPython.display import display

        display(JobsTable(rows, details))

    @magic_arguments()
    @argument("--backend", default="kubernetes", help="kubernetes (the only backend with a preflight).")
    @argument("--context", default=None, help="kubeconfig context (default: the configured one).")
    @argument("--namespace", default=None, help="Kubernetes namespace (default: the configured one).")
    @argument(
        "--image",
        default=None,
        help="Container image of the replicas; given, a one-off pod checks that the nodes can pull it and "
        "that it has TensorFlow.",
    )
    @argument("--image-timeout", type=float, default=None, help="Seconds the image check may take (120).")
    @argument("--gpus", type=int, default=None, help="GPUs per worker and chief.")
    @argument("--workers", type=int, default=None, help="Workers.")
    @argument("--ps", type=int, default=None, help="Parameter servers.")
    @argument("--flavor", default=None, help="auto, native or tfjob.")
    @argument("--cpu", default=None, help="CPU per replica, e.g. 2 or 500m.")
    @argument("--memory", default=None, help="Memory per replica, e.g. 4Gi.")
    @line_magic
    def tfk8s_check(self, line: str):
        """Preflight: would a job run on the cluster? A ✓/✗ table (permissions, namespace, TFJob CRD, GPU
        capacity, quota, LimitRange, storage), one sentence per ✗ naming the fix. Nothing is kept: with
        ``--image`` a one-off pod checks the image (pull, TensorFlow / tf-keras versions) and is removed.

        Example::

            %tfk8s_check --namespace team --gpus 1
            %tfk8s_check --image registry.example.com/team/trainer:2.21
        """
        from .api import check
        from .backends.base import TFK8sError

        args = parse_magic_line(self.tfk8s_check, line)
        given = {k: getattr(args, k) for k in ("workers", "ps", "flavor", "cpu", "memory")}
        try:
            report = check(
                backend=args.backend,
                context=args.context,
                namespace=args.namespace,
                image=args.image,
                gpus=args.gpus,
                image_timeout=args.image_timeout,
                **{k: v for k, v in given.items() if v is not None},
            )
        except (TFK8sError, SpecError) as e:
            raise UsageError(str(e)) from None
        from IPython.display import display

        display(report)  # shown once (not returned as Out too); kept as _tfk8s_check
        self.shell.user_ns["_tfk8s_check"] = report

    @magic_arguments()
    @job_name_argument
    @job_backend_argument
    @line_magic
    def tfk8s_attach(self, line: str):
        """Show the live panel of an existing job, with its full history (e.g. after a kernel restart).

        Example::

            %tfk8s_attach mnist-ps
        """
        args = parse_magic_line(self.tfk8s_attach, line)
        job = self._job(args.name, args.backend)
        self.train.last_job = job.name
        self.shell.user_ns["_tfk8s_job"] = job
        self.train.show(job, attached=True)

    @magic_arguments()
    @job_name_argument
    @argument(
        "--replica", default=None, help="e.g. chief-0, worker-1, ps-0 (default: the reporting replica)."
    )
    @argument("--tail", type=int, default=None, help="Only the last N lines.")
    @argument(
        "--follow",
        action="store_true",
        help="Keep printing new lines until the job ends (interrupt to stop).",
    )
    @argument("--raw", action="store_true", help="Keep protocol lines and progress-bar control characters.")
    @argument(
        "--all",
        action="store_true",
        help="Also TensorFlow's start-up lines (absl, oneDNN, CUDA), folded by default.",
    )
    @job_backend_argument
    @line_magic
    def tfk8s_logs(self, line: str):
        """Print a replica's output (protocol lines left out unless ``--raw``; TensorFlow's start-up lines
        folded unless ``--all``; the stored log is unchanged).

        Examples::

            %tfk8s_logs mnist-ps
            %tfk8s_logs mnist-ps --replica worker-1 --tail 50
            %tfk8s_logs mnist-ps --follow
            %tfk8s_logs mnist-ps --all       # with TensorFlow's start-up lines
        """
        import threading

        args = parse_magic_line(self.tfk8s_logs, line)
        if args.tail is not None and args.tail < 1:
            raise UsageError(f"--tail {args.tail} is not a number of lines; give 1 or more, e.g. --tail 50.")
        job = self._job(args.name, args.backend)
        replica = args.replica or job.spec.reporting_replica
        if replica not in job.spec.replica_names:
            raise UsageError(
                f"job {job.name} has no replica {replica!r}; use one of {', '.join(job.spec.replica_names)}."
            )
        from .display_text import clean_log, is_startup_noise
        from .protocol import MARKER

        if not args.follow:
            text = job.logs(replica)
            text = (
                last_lines(text, args.tail)
                if args.raw
                else clean_log(text, tail=args.tail, show_all=args.all)
            )
            print(text.rstrip("\n"))
            return
        stop = threading.Event()
        try:
            for text in job.backend.follow_logs(job.name, replica, stop):
                if args.raw or MARKER not in text:
                    if not args.raw and not args.all and is_startup_noise(text):
                        continue
                    print(text if args.raw else clean_log(text, show_all=True), flush=True)
        except KeyboardInterrupt:
            stop.set()

    @magic_arguments()
    @job_name_argument
    @job_backend_argument
    @line_magic
    def tfk8s_stop(self, line: str):
        """Stop every replica of a job; its record (status, metrics, logs) stays.

        Example::

            %tfk8s_stop mnist-ps
        """
        from .backends.base import TFK8sError

        args = parse_magic_line(self.tfk8s_stop, line)
        job = self._job(args.name, args.backend)
        try:
            before = job.status
            if before.done:
                print(f"tfk8s: job {job.name} had already {before.phase}; there was nothing to stop.")
                return
            status = job.stop()
        except TFK8sError as e:
            raise UsageError(str(e)) from None
        print(
            f"tfk8s: job {job.name} {status.phase}."
            if status.done
            else f"tfk8s: job {job.name} is {status.phase}."
        )

    @magic_arguments()
    @argument("names", nargs="*", help="Jobs to delete.")
    @argument(
        "--finished",
        action="store_true",
        help="Also every job of yours that has ended (succeeded, failed or stopped).",
    )
    @argument(
        "--older-than",
        dest="older_than",
        default=None,
        metavar="AGE",
        help="Also every job of yours that has ended and was submitted more than AGE ago (7d, 12h, 90m).",
    )
    @argument(
        "--force",
        "--stop",
        dest="force",
        action="store_true",
        help="Stop and delete named jobs that still run (--stop is the same).",
    )
    @argument("--dry-run", dest="dry_run", action="store_true", help="Say what would go; delete nothing.")
    @job_backend_argument
    @line_magic
    def tfk8s_delete(self, line: str):
        """Delete jobs and their records (status, metrics, logs, checkpoints; on Kubernetes every object of
        the job); says what went.

        A job that still runs is only deleted when named, with ``--force``; ``--finished`` and
        ``--older-than`` only ever take jobs that have ended.

        Examples::

            %tfk8s_delete mnist-ps old-run
            %tfk8s_delete --older-than 7d --dry-run
            %tfk8s_delete --older-than 7d
            %tfk8s_delete --finished
            %tfk8s_delete still-running --force
        """
        import time

        from .api import backend_for
        from .backends.base import JobNotFound, TFK8sError
        from .display_text import plural
        from .retention import select_expired
        from .spec import parse_duration

        args = parse_magic_line(self.tfk8s_delete, line)
        if not args.names and not args.finished and args.older_than is None:
            raise UsageError(
                "name the jobs to delete (%tfk8s_delete NAME ...), or pass --older-than AGE (e.g. 7d) or "
                "--finished for jobs that have ended."
            )
        try:
            max_age = None if args.older_than is None else parse_duration(args.older_than, "--older-than")
        except SpecError:
            raise UsageError(
                f"--older-than {args.older_than!r} is not an age; use e.g. 7d, 12h or 90m."
            ) from None
        owner = current_owner()
        try:
            b = backend_for(args.backend)
            targets = []
            for name in dict.fromkeys(args.names):
                try:
                    status = b.get(name)
                except (JobNotFound, LookupError):
                    raise UsageError(
                        f"there is no {b.name} job named {name!r}; %tfk8s_jobs lists your jobs, and nothing "
                        "was deleted."
                    ) from None
                if status.owner and status.owner != owner:
                    raise UsageError(f"job {name} belongs to {status.owner}; nothing was deleted.")
                targets.append(status)
            if args.finished or max_age is not None:
                named = {s.name for s in targets}
                mine = [s for s in b.list(owner=owner) if s.name not in named]
                if args.finished:
                    chosen = {s.name for s in mine if s.done}
                else:
                    chosen = set(select_expired(mine, time.time(), max_age=max_age, owner=owner))
                targets += sorted((s for s in mine if s.name in chosen), key=lambda s: s.created)
        except (TFK8sError, SpecError) as e:
            raise UsageError(str(e)) from None
        running = [s.name for s in targets if not s.done]
        if running and not args.force:
            raise UsageError(
                f"job {running[0]} is still running; stop it first (%tfk8s_stop {running[0]}) or pass "
                "--force to stop and delete it; nothing was deleted."
            )
        if not targets:
            if args.finished:
                print("tfk8s: no job has ended, so there is nothing to delete.")
            else:
                print(
                    f"tfk8s: no finished job is older than {args.older_than}, so there is nothing to delete."
                )
            return
        listed = ", ".join(f"{s.name} ({s.phase})" for s in targets)
        if args.dry_run:
            print(f"tfk8s: would delete {plural(len(targets), 'job')}: {listed}; nothing was deleted.")
            return
        from .retention import JobArtifactsRemoval

        deleted, remains = [], []
        for s in targets:
            artifacts = JobArtifactsRemoval(b, s.name)
            try:
                job = self.train.jobs.pop(s.name, None)
                if job is not None:
                    job.delete()
                else:
                    b.delete(s.name)
            except TFK8sError as e:
                done = f" after deleting {', '.join(deleted)}" if deleted else ""
                raise UsageError(f"could not delete job {s.name}{done}: {e}") from None
            deleted.append(s.name)
            remains.append(artifacts.remove())
            self._forget(s.name, s.phase)
        print(f"tfk8s: deleted {plural(len(targets), 'job')}: {listed}.")
        for line in filter(None, remains):
            print(f"tfk8s: {line}")

    @magic_arguments()
    @job_name_argument
    @argument("--timeout", type=float, default=None, help="Give up waiting after this many seconds.")
    @job_backend_argument
    @line_magic
    def tfk8s_wait(self, line: str):
        """Block until a job ends, then print its final status line (its panels show the final state).

        Example::

            %tfk8s_wait mnist-ps --timeout 600
        """
        args = parse_magic_line(self.tfk8s_wait, line)
        if args.timeout is not None and not args.timeout > 0:
            raise UsageError(
                f"--timeout {args.timeout:g} is not a positive number of seconds; use e.g. --timeout 600."
            )
        job = self._job(args.name, args.backend)
        phase = self.train.wait_for(job, args.timeout)
        print(f"tfk8s job {job.name}: {phase}")

    @line_magic
    def tfk8s_config(self, line: str):
        """Show every default of ``%%tfk8s_train`` and where it came from.

        Sources: ``default``, ``config file`` (``ipython_config.py``: ``c.TFK8s.workers = 4``) or
        ``%config`` (``%config TFK8s.workers = 4``). Flags of ``%%tfk8s_train`` override all of them.

        Example::

            %config TFK8s.backend = "kubernetes"
            %tfk8s_config
        """
        if line.strip():
            raise UsageError(
                "%tfk8s_config takes no arguments; set a default with %config TFK8s.<option> = value."
            )
        from IPython.display import display

        display(ConfigTable(self.train.config_sources()))
