"""The Python API: ``submit``, ``attach``, ``list_jobs`` and the :class:`Job` handle.

The magics, the REST API and the side panel all go through these functions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from .backends import get_backend
from .backends.base import Backend, JobNotFound, JobStatus
from .config import current_config, current_owner
from .monitor import JobState, Monitor, event_to_point
from .payload import Payload
from .retention import apply_keep_jobs
from .spec import JobSpec, SpecError, make_spec

_backends: dict[str, Backend] = {}


def backend_for(name: str | None = None) -> Backend:
    """The (cached) backend called ``name``; the configured default when ``None``."""
    name = name or current_config().backend
    if name not in _backends:
        _backends[name] = get_backend(name)
    return _backends[name]


class Job:
    """A handle on one submitted job. Cheap to create; every property asks the backend."""

    def __init__(self, name: str, backend: Backend):
        self.name = name
        self.backend = backend
        self._monitor: Monitor | None = None

    def __repr__(self) -> str:
        return f"<Job {self.name} backend={self.backend.name} phase={self.phase}>"

    @property
    def spec(self) -> JobSpec:
        return self.backend.spec(self.name)

    @property
    def status(self) -> JobStatus:
        """Phase plus one entry per replica (role, index, state, restarts, pid/pod)."""
        return self.backend.get(self.name)

    @property
    def phase(self) -> str:
        return self.status.phase

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> str:
        """Block until the job ends; return ``succeeded``, ``failed`` or ``stopped``.

        Raises:
            TimeoutError: the job is still running after ``timeout`` seconds (it keeps running).
        """
        if timeout is not None and not _is_number(timeout):
            raise SpecError(
                f"timeout {timeout!r} is not a number of seconds; pass one, e.g. job.wait(timeout=300), or "
                "None to wait until the job ends."
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status
            if status.done:
                return status.phase
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {self.name} is still {status.phase} after {timeout:g} s; "
                    "wait longer, or stop it with job.stop()."
                )
            time.sleep(poll)

    def events(self) -> list[dict]:
        """Every protocol event so far (start, metric, epoch, checkpoint, end, error)."""
        return self.backend.events(self.name)

    def metrics(self) -> list[dict]:
        """Metric points so far: ``{"kind": "step"|"epoch", "epoch", "step", "t", "values": {...}}``."""
        return [p for p in map(event_to_point, self.events()) if p is not None]

    def logs(self, replica: str | None = None, tail: int | None = None) -> str:
        """A replica's output (default: the reporting replica, chief-0 or worker-0)."""
        if tail is not None and (not _is_number(tail) or tail != int(tail) or tail < 1):
            raise SpecError(
                f"tail {tail!r} is not a number of lines; pass a whole number from 1, e.g. "
                "job.logs(tail=50), or None for the whole log."
            )
        return self.backend.logs(self.name, replica or self.spec.reporting_replica, tail=tail)

    def stop(self) -> JobStatus:
        """Stop every replica; the record stays, with phase ``stopped``."""
        return self.backend.stop(self.name)

    def scale(self, workers: int) -> JobStatus:
        """Resize the running job: a parameter-server job's workers go down live (the highest indexes stop
        for good and show as ``removed``; the chief carries on); more workers, or any resize of an all-reduce
        job, restart the job with the new shape from its next checkpoint (local backend; the returned
        status' message says it is under way). Each resize is in ``status.history``."""
        return self.backend.scale(self.name, workers)

    def delete(self) -> str | None:
        """Stop the job if needed and remove it, its record and its artifacts (a Kubernetes job's too when
        this notebook mounts its claim: ``c.TFK8s.storage_mount``). Returns ``None``, or one line saying
        where artifacts remain (object storage, a claim not mounted here)."""
        from .retention import JobArtifactsRemoval

        if self._monitor:
            self._monitor.stop()
        artifacts = JobArtifactsRemoval(self.backend, self.name)
        self.backend.delete(self.name)
        return artifacts.remove()

    @property
    def state(self) -> JobState:
        """The live :class:`JobState`, kept current by a background monitor started on first use."""
        return self.monitor().state

    def monitor(self) -> Monitor:
        if self._monitor is None:
            from .results import ResultsState

            self._monitor = Monitor(self.backend, self.name, ResultsState(self.name)).start()
        return self._monitor

    # results ----------------------------------------------------------------
    def model(self, **kwargs):
        """The trained model, loaded in this kernel with the Keras flavour the job used (``tf_keras`` for
        parameter-server and legacy jobs, Keras 3 otherwise); ``kwargs`` go to ``load_model``
        (``custom_objects``, ``compile``). TensorFlow is imported now, not before.

        Raises:
            ResultsError: the job still runs, saved no model (failed, stopped, ``--no-save-model``) or kept
                no artifacts (Kubernetes without ``--storage``); one sentence says which and what to do.

        Example:
            >>> model = job.model()                        # doctest: +SKIP
            >>> model.evaluate(x, y)                       # doctest: +SKIP
        """
        from .results import load_model

        return load_model(self.backend, self.name, **kwargs).model

    def artifacts(self):
        """What the job wrote into its artifact directory: ``Artifact(path, size, kind)`` per file, with
        ``path`` relative to it and ``kind`` one of ``model``, ``checkpoint``, ``tensorboard``, ``index``,
        ``file``; then what the cell saved by relative path (``model.save("m.keras")``) where it ran, kind
        ``cell``, path as the cell named it, while that work dir is kept (a local job's)."""
        from .results import list_artifacts

        return list_artifacts(self.backend, self.name)

    def download(self, path: str, dest: str = "."):
        """Copy the artifact file or folder ``path`` (as :meth:`artifacts` lists it; ``"."`` for all)
        into the local folder ``dest``; returns the copy's path."""
        from .results import download

        return download(self.backend, self.name, path, dest)

    def tensorboard_dirs(self) -> list[str]:
        """The job's TensorBoard log folders (paths or URIs), for ``tensorboard --logdir``."""
        from .results import tensorboard_dirs

        return tensorboard_dirs(self.backend, self.name)


def submit(
    code: str,
    *,
    ps: int | None = None,
    workers: int | None = None,
    gpus: int | Mapping[str, int] | None = None,
    strategy: str | None = None,
    backend: str | None = None,
    name: str | None = None,
    payload: Payload | None = None,
    **options,
) -> Job:
    """Start ``code`` as a distributed training job and return at once.

    Unset arguments take the configured defaults (:class:`tfk8s_jupyter.config.TFK8s`).

    Args:
        code: the cell source; it runs unchanged on every replica.
        ps: parameter servers; ``> 0`` means asynchronous ParameterServerStrategy plus a chief.
        workers: workers; ``> 1`` with ``ps=0`` means synchronous MultiWorkerMirroredStrategy.
        gpus: GPUs per worker and chief (never the ps).
        strategy: ``auto``, ``parameter_server``, ``multi_worker_mirrored`` or ``mirrored``.
        backend: ``local`` (default) or ``kubernetes``.
        name: job name (DNS-1123, at most 40 characters); generated when omitted.
        payload: the cell plus its notebook context (see ``capture.py``); default: the code alone.
        resume_from (option): the name of an earlier job of the same backend whose last checkpoint the
            replicas restore before training (the step count continues).
        save_model (option): ``False`` saves no model after training (``job.model()`` then refuses).
        storage (option): Kubernetes only: ``pvc:CLAIM[/subpath]`` or a ``gs://``/``s3://`` URI where
            the artifacts outlive the pods; local jobs keep theirs in the job record.
        **options: other :class:`~tfk8s_jupyter.spec.JobSpec` fields (cpu, memory, env, max_restarts, ...).

    Raises:
        SpecError: an invalid option, named in one sentence with its fix; nothing is started.

    Example:
        >>> job = submit(code, ps=1, workers=2)   # doctest: +SKIP
        >>> job.wait(timeout=300)                 # doctest: +SKIP
        'succeeded'
    """
    defaults = current_config().job_options()
    given = {"ps": ps, "workers": workers, "gpus": gpus, "strategy": strategy, "backend": backend}
    merged = {**defaults, **{k: v for k, v in options.items()}}
    for k, v in given.items():
        if v is not None:
            merged[k] = v
    if ps is None and (workers is not None or strategy is not None):
        merged["ps"] = 0 if (strategy or "auto") != "parameter_server" else max(1, defaults["ps"])
    if merged.get("backend") == "local" and "storage" not in options:
        merged["storage"] = None  # the configured storage is for Kubernetes jobs
    merged.setdefault("owner", current_owner())
    if merged.get("owner") is None:
        merged["owner"] = current_owner()
    if payload is not None and not isinstance(payload, Payload):
        raise SpecError(
            f"payload {_short(payload)} is a {type(payload).__name__}, not a Payload; leave it out (the code alone is sent) "
            "or pass Payload(code=code)."
        )
    spec = make_spec(code, name=name, **merged)
    return submit_spec(spec, payload or Payload(code=code))


def _is_number(value) -> bool:
    """A real number of seconds or lines (not a bool, a string, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_preflight_passed: set[tuple] = set()  # (backend, context, namespace) whose preflight passed this session


def _preflight_once(b: Backend, spec: JobSpec) -> None:
    """The cheap preflight (namespace, permissions, TFJob CRD, the priority class and queue the job names)
    before the first Kubernetes submission to a context and namespace (cached once passed).

    Raises:
        PreflightFailed: the job would not run; the sentences of the failed checks.
    """
    key = (id(b), spec.context, b.resolve_namespace(spec.namespace, spec.context))
    if key in _preflight_passed:
        return
    from .backends.kubernetes.preflight import PreflightFailed, preflight

    report = preflight(b, spec, cheap=True)
    if not report.ok:
        raise PreflightFailed(report)
    _preflight_passed.add(key)


def submit_spec(spec: JobSpec, payload: Payload) -> Job:
    """Submit an already-built spec (the magics and REST handlers use this). The first Kubernetes submission
    to a context and namespace runs the preflight (:func:`check`) first and is refused if a check fails."""
    b = backend_for(spec.backend)
    if spec.backend == "kubernetes":
        _preflight_once(b, spec)
    b.submit(spec, payload)
    return Job(spec.name, b)


def attach(name: str, backend: str | None = None) -> Job:
    """A handle on an existing job (e.g. after a kernel restart); its history comes with it.

    Raises:
        JobNotFound: no such job on that backend.
    """
    if not isinstance(name, str) or not name:
        raise JobNotFound(
            f"attach() was given {name!r}, not a job name; pass the name as text, e.g. "
            "tfk8s_jupyter.attach('mnist-ps') (tfk8s_jupyter.list_jobs() lists the jobs)."
        )
    b = backend_for(backend)
    b.get(name)
    return Job(name, b)


def check(
    *,
    backend: str | None = "kubernetes",
    context: str | None = None,
    namespace: str | None = None,
    image: str | None = None,
    gpus: int | Mapping[str, int] | None = None,
    image_timeout: float | None = None,
    **options,
):
    """Preflight: would a job with these options run on the cluster? Nothing is created (with ``image``,
    a one-off pod runs the image check and is always removed after; ``image_timeout`` seconds at most).

    Checks permissions (``SelfSubjectAccessReview`` of every call the backend makes), the namespace, the
    TFJob CRD (flavor ``tfjob``/``auto``), GPU capacity of schedulable nodes, and ResourceQuota. Unset
    options take the configured defaults, as :func:`submit` does.

    Returns:
        a ``PreflightReport``: ``ok``, ``checks`` (✓/✗/– rows, one sentence each), text and HTML faces.

    Raises:
        SpecError: an invalid option, or a backend other than ``kubernetes``.
        BackendUnavailable: unknown context, no kubeconfig, or an unreachable API server.
    """
    from .spec import SpecError

    backend = backend or current_config().backend
    if backend != "kubernetes":
        raise SpecError(
            f"preflight checks a Kubernetes cluster, not the {backend} backend; use backend='kubernetes'."
        )
    merged = {**current_config().job_options(), **options, "backend": "kubernetes"}
    for k, v in {"context": context, "namespace": namespace, "image": image, "gpus": gpus}.items():
        if v is not None:
            merged[k] = v
    merged.pop("owner", None)
    spec = make_spec("pass", name="preflight", owner=current_owner(), **merged)
    from .backends.kubernetes.preflight import preflight

    backend_ = backend_for("kubernetes")
    report = preflight(backend_, spec)
    if image is not None and report.checks and report.checks[0].ok:  # the namespace exists
        from .backends.kubernetes.preflight import check_image

        check_image(report, backend_, spec, image_timeout)  # its own row: a job needs no pod verbs
    return report


def list_jobs(
    backend: str | None = None, owner: str | None = None, all_namespaces: bool = False
) -> list[JobStatus]:
    """The jobs of ``owner`` (default: the current user), newest first; ``all_namespaces`` (Kubernetes): in
    every namespace the user may list them in, not only the default one."""
    b = backend_for(backend)
    extra = {"all_namespaces": True} if all_namespaces else {}
    jobs = b.list(owner=owner if owner is not None else current_owner(), **extra)
    pruned = apply_keep_jobs(b, jobs)  # c.TFK8s.keep_jobs: the user's old finished jobs go
    if pruned.line():
        print(pruned.line())
    return sorted(pruned.kept, key=lambda s: s.created, reverse=True)
