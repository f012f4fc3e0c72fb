"""The one object behind the REST API: lists, inspects, stops and deletes the current user's jobs.

Every backend call here is blocking (files, the Kubernetes API); the handlers run them in a thread pool.
One function, :func:`job_model`, builds the JSON the side panel shows; :func:`job_detail` adds the
replicas and the downsampled metric series.

A job's summary (:class:`JobState`) is kept between polls: a running job's recorded events are read from
the offset where the previous poll stopped (only what was appended since), a finished job's once.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
import time
from pathlib import Path

from traitlets import Float, Int, List, Unicode
from traitlets.config import LoggingConfigurable

from ..backends.base import (
    Backend,
    BackendUnavailable,
    Forbidden,
    JobConflict,
    JobNotFound,
    JobStatus,
    TFK8sError,
)
from ..config import current_config, current_owner
from ..display_text import epoch_number
from ..job_origin import origin_of
from ..monitor import EventHistory, JobState
from ..retention import apply_keep_jobs
from ..spec import SpecError, check_name
from .tensorboard import TensorBoardServers

SPARKLINE_POINTS = 60
MAX_SERIES_POINTS = 2000
MAX_TAIL_LINES = 5000


class BadRequest(TFK8sError, ValueError):
    """A request the API cannot act on (bad job name, bad parameter)."""


def preferred_metric(names) -> str | None:
    """The metric a curve shows by default: ``loss`` when present, else the first in sorted order."""
    names = sorted(names)
    if not names:
        return None
    return "loss" if "loss" in names else names[0]


def summarize_events(events: list[dict]) -> JobState:
    """A :class:`JobState` folded from a job's recorded protocol events."""
    state = JobState("summary", max_points=MAX_SERIES_POINTS)
    state.add_events(events)
    return state


def sparkline(state: JobState, points: int = SPARKLINE_POINTS) -> dict:
    """The short series a list row draws: the preferred metric per step, or per epoch when that has more points.

    A fast job reports few per-step points (one per metric interval) but one point per epoch.
    """
    metric = preferred_metric(set(state.step_series) | set(state.epoch_series))
    if metric is None:
        return {"metric": None, "kind": None, "values": []}
    step, epoch = state.step_series.get(metric), state.epoch_series.get(metric)
    kind, series = ("step", step) if step and len(step) >= len(epoch or ()) else ("epoch", epoch)
    _, y = series.points(points)
    # A 80-pixel line needs no more than 4 significant digits; it halves the list's JSON.
    return {"metric": metric, "kind": kind, "values": [float(f"{v:.4g}") for v in y]}


def job_model(status: JobStatus, state: JobState, origin: str | None = None) -> dict:
    """The JSON model of one job in the list (mirrored field by field by ``labextension/src/model.ts``)."""
    return {
        "name": status.name,
        "backend": status.backend,
        "flavor": status.flavor,
        "strategy": status.strategy,
        "owner": status.owner,
        "namespace": status.namespace,
        "phase": status.phase,
        "done": status.done,
        "message": status.message,
        "created": status.created,
        "finished": status.finished,
        "counts": status.counts(),
        "replicas_total": len(status.replicas),
        "epoch": epoch_number(state.epoch),  # counted from 1, as Keras prints it
        "step": state.step,
        "last_metrics": dict(state.last_values),
        "error": state.error,
        "sparkline": sparkline(state),
        "origin": origin,
    }


def job_detail(status: JobStatus, state: JobState, spec: dict | None) -> dict:
    """The list model plus replicas, the job's settings and every metric series (≤ 2,000 points each)."""
    model = job_model(status, state, origin_of(spec.get("labels")) if spec else None)
    model["replicas"] = [{**r.__dict__, "name": r.name} for r in status.replicas]
    model["series"] = {
        "step": state.series("step", MAX_SERIES_POINTS),
        "epoch": {
            metric: {"x": [x + 1 for x in xy["x"]], "y": xy["y"]}  # epochs counted from 1
            for metric, xy in state.series("epoch", MAX_SERIES_POINTS).items()
        },
    }
    model["n_points"] = state.n_points
    model["checkpoints"] = state.checkpoints
    model["notes"] = list(status.notes)  # e.g. "no storage: ... will not survive its pods"
    model["history"] = [dict(h) for h in status.history]  # resizes
    keep = ("ps", "workers", "gpus", "cpu", "memory", "image", "max_restarts", "reporting_replica")
    model["spec"] = {k: spec.get(k) for k in keep if k in spec} if spec else {}
    return model


def _kubernetes_configured() -> bool:
    if current_config().backend == "kubernetes" or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        return any(Path(p).expanduser().exists() for p in kubeconfig.split(os.pathsep) if p)
    return Path("~/.kube/config").expanduser().exists()


class JobsManager(LoggingConfigurable):
    """Lists and acts on the current user's jobs across every configured backend."""

    backends = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        help="Backends whose jobs are listed; default: local, plus kubernetes when a kubeconfig, an "
        "in-cluster service account or c.TFK8s.backend = 'kubernetes' is present.",
    ).tag(config=True)
    backend_timeout = Float(
        8.0, help="Seconds a backend may take to list its jobs before it is reported as unreachable."
    ).tag(config=True)
    retry_after = Float(
        15.0, help="Seconds a backend that failed to list is not asked again (its warning stays shown)."
    ).tag(config=True)
    default_tail = Int(400, help="Log lines returned when a request gives no tail.").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        # Finished jobs never change: their summary is computed once.
        self._done_cache: dict[tuple[str, str, float], JobState] = {}
        self._done_models: dict[tuple, dict] = {}  # a finished job's list model (its sparkline costs most)
        # Running jobs: the summary so far and where its events were read up to.
        self._live: dict[tuple[str, str, float], tuple[JobState, EventHistory, threading.Lock]] = {}
        self._origins: dict[tuple[str, str, float], str | None] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="tfk8s-list")
        self._inflight: dict[tuple[str, str], concurrent.futures.Future] = {}
        self._failed_at: dict[str, float] = {}
        self._failed: dict[str, concurrent.futures.Future] = {}
        self._pruned: dict[str, str] = {}  # backend -> the line saying what keep_jobs removed
        self._tensorboards = TensorBoardServers()  # the job view's TensorBoard button
        self._tensorboard_known: dict[tuple, bool] = {}  # finished jobs: whether they have TensorBoard logs

    # backends -----------------------------------------------------------------
    def backend_names(self) -> list[str]:
        if self.backends is not None:
            return list(self.backends)
        return ["local", "kubernetes"] if _kubernetes_configured() else ["local"]

    def backend(self, name: str) -> Backend:
        from ..api import backend_for

        if name not in ("local", "kubernetes"):
            raise BadRequest(f"backend {name!r} is unknown; use 'local' or 'kubernetes'.")
        return backend_for(name)

    # listing ------------------------------------------------------------------
    def _state_for(self, backend: Backend, status: JobStatus) -> JobState:
        key = (backend.name, status.name, status.created)
        if status.done:
            with self._lock:
                cached = self._done_cache.get(key)
            if cached is not None:
                return cached
        with self._lock:
            live = self._live.get(key)
            if live is None:
                live = self._live[key] = (
                    JobState("summary", max_points=MAX_SERIES_POINTS),
                    EventHistory(backend, status.name),
                    threading.Lock(),
                )
        state, history, lock = live
        with lock:  # only what the record gained since the previous poll
            history.fold_into(state)
        if status.done:
            with self._lock:
                self._done_cache[key] = state
                self._live.pop(key, None)
        return state

    def _list_backend(self, name: str, owner: str) -> list[dict]:
        backend = self.backend(name)
        out = []
        pruned = apply_keep_jobs(backend, backend.list(owner=owner), owner=owner)  # c.TFK8s.keep_jobs
        line = pruned.line()
        with self._lock:
            if line:
                self._pruned[name] = line
            else:
                self._pruned.pop(name, None)
        for status in pruned.kept:
            key = (backend.name, status.name, status.created, status.phase, status.finished, status.message)
            if status.done:
                with self._lock:
                    model = self._done_models.get(key)
                if model is not None:
                    out.append(model)
                    continue
            try:
                state = self._state_for(backend, status)
            except JobNotFound:
                continue  # deleted while we listed
            model = job_model(status, state, self._origin_for(backend, status))
            if status.done:
                with self._lock:
                    self._done_models[key] = model
            out.append(model)
        return out

    def _origin_for(self, backend: Backend, status: JobStatus) -> str | None:
        """A job's origin from its spec's labels; a spec never changes, so it is read once."""
        key = (backend.name, status.name, status.created)
        with self._lock:
            if key in self._origins:
                return self._origins[key]
        try:
            origin = origin_of(backend.spec(status.name).labels)
        except Exception:  # an unreadable spec only costs the origin
            return None
        with self._lock:
            self._origins[key] = origin
        return origin

    def _listing(self, name: str, owner: str) -> concurrent.futures.Future:
        """The listing of one backend: a slow backend is asked once at a time, a failed one not again
        for ``retry_after`` seconds (its last error stands), so a cluster that is down never slows the
        panel's polling or piles up threads."""
        with self._lock:
            future = self._inflight.get((name, owner))
            if future is not None and not future.done():
                return future
            failed_at = self._failed_at.get(name)
            if (
                future is not None
                and failed_at is not None
                and time.monotonic() - failed_at < self.retry_after
            ):
                return future
            future = self._pool.submit(self._list_backend, name, owner)
            self._inflight[(name, owner)] = future
            return future

    def list_jobs(self) -> dict:
        """``{"jobs": [...newest first], "warnings": [{"backend", "message"}], "backends": [...], "owner",
        "defaults": {strategy, ps, workers, gpus, backend}}`` (the configured ``TFK8s`` defaults)."""
        owner = current_owner()
        names = self.backend_names()
        futures = {n: self._listing(n, owner) for n in names}
        jobs: list[dict] = []
        warnings: list[dict] = []
        for name, future in futures.items():
            try:
                jobs.extend(future.result(timeout=self.backend_timeout))
                self._failed.pop(name, None)
                self._failed_at.pop(name, None)
                with self._lock:
                    pruned_line = self._pruned.pop(name, None)
                if pruned_line:
                    warnings.append({"backend": name, "message": pruned_line})
            except concurrent.futures.TimeoutError:
                warnings.append(
                    {
                        "backend": name,
                        "message": f"the {name} backend did not answer within {self.backend_timeout:g} s; "
                        "its jobs are not shown (check the cluster connection).",
                    }
                )
            except Exception as e:  # a broken backend must not hide the others' jobs
                with self._lock:
                    if self._failed.get(name) is not future:  # a new failure, not the standing one
                        if name not in self._failed:
                            self.log.warning("tfk8s: listing %s jobs failed: %s", name, e)
                        self._failed[name] = future
                        self._failed_at[name] = time.monotonic()
                warnings.append({"backend": name, "message": _one_sentence(name, e)})
        jobs.sort(key=lambda j: j["created"] or 0, reverse=True)
        cfg = current_config()
        defaults = {k: getattr(cfg, k) for k in ("strategy", "ps", "workers", "gpus", "backend")}
        return {"jobs": jobs, "warnings": warnings, "backends": names, "owner": owner, "defaults": defaults}

    # one job ------------------------------------------------------------------
    def _find(self, name: str, backend: str | None) -> tuple[Backend, JobStatus]:
        """The job's backend and status; checks the name and that it belongs to the current user."""
        try:
            check_name(name)
        except SpecError as e:
            raise BadRequest(str(e)) from None
        candidates = [backend] if backend else self.backend_names()
        last_error: Exception | None = None
        failed_backend = None
        for bname in candidates:
            try:
                b = self.backend(bname)
                status = b.get(name)
            except JobNotFound:
                continue
            except BadRequest:
                raise
            except Exception as e:
                last_error, failed_backend = e, bname
                continue
            owner = current_owner()
            if status.owner and status.owner != owner:
                raise Forbidden(
                    f"job {name} belongs to {status.owner}; you can only see and stop your own jobs."
                )
            return b, status
        if last_error is not None:
            if backend:
                raise last_error
            reason = " ".join(str(last_error).split()).rstrip(".") or type(last_error).__name__
            raise BackendUnavailable(
                f"no job named {name!r} was found here, and the {failed_backend} backend could not be asked "
                f"({reason}); try again once it answers."
            ) from last_error
        raise JobNotFound(f"no job named {name!r}; it may have been deleted; refresh the jobs list.")

    def get_job(self, name: str, backend: str | None = None) -> dict:
        b, status = self._find(name, backend)
        state = self._state_for(b, status)
        try:
            job_spec = b.spec(name)
            spec = {**job_spec.to_json(), "reporting_replica": job_spec.reporting_replica}
        except Exception:
            spec = None
        detail = job_detail(status, state, spec)
        detail["tensorboard"] = self._has_tensorboard(b, status)
        return detail

    def _has_tensorboard(self, b: Backend, status: JobStatus) -> bool:
        """Whether the job has TensorBoard logs (the job view polls this; a finished job's answer is kept).

        Logs behind a URI (``gs://``, ``s3://``) are taken as there: reading them would import TensorFlow
        into the Jupyter server on every poll; ``POST .../tensorboard`` checks them when asked.
        """
        from ..results import artifacts_root, is_uri

        key = (b.name, status.name, status.created)
        if key in self._tensorboard_known:
            return self._tensorboard_known[key]
        try:
            found = is_uri(artifacts_root(b, status.name)) or bool(_tensorboard_dirs(b, status.name))
        except Exception:
            found = False
        if status.done:
            self._tensorboard_known[key] = found
        return found

    def tensorboard(self, name: str, backend: str | None = None) -> dict:
        """Start (or reuse) a TensorBoard on 127.0.0.1 for the job's logs; ``{"name", "url", "port", ...}``."""
        from ..result_magics import logdir_spec

        b, status = self._find(name, backend)
        dirs = _tensorboard_dirs(b, name)
        if not dirs:
            when = (
                "once its fit starts" if not status.done else "only when the job ran a fit or wrote summaries"
            )
            raise JobConflict(
                f"job {name} has no TensorBoard logs (they appear {when}); there is nothing to show."
            )
        started = self._tensorboards.start((b.name, name), logdir_spec({name: dirs}))
        return {"name": name, **started}

    def logs(self, name: str, replica: str | None, tail: int | None, backend: str | None = None) -> dict:
        b, status = self._find(name, backend)
        if tail is None:
            tail = self.default_tail
        if tail < 1:
            raise BadRequest(f"tail={tail} must be at least 1; ask for the last N lines with tail=N.")
        tail = min(tail, MAX_TAIL_LINES)
        names = [r.name for r in status.replicas]
        if b.name == "local":
            names.append("supervisor")  # the local supervisor's own log: restarts, teardown, errors
        if replica is None:
            try:
                replica = b.spec(name).reporting_replica
            except Exception:
                replica = names[0] if names else None
        if replica is None or (names and replica not in names):
            raise JobNotFound(
                f"job {name} has no replica {replica!r}; choose one of {', '.join(names) or 'none yet'}."
            )
        text = b.logs(name, replica, tail=tail)
        return {"name": name, "replica": replica, "replicas": names, "tail": tail, "text": text}

    def stop(self, name: str, backend: str | None = None) -> dict:
        b, status = self._find(name, backend)
        if status.done:
            raise JobConflict(f"job {name} has already {status.phase}; there is nothing to stop.")
        status = b.stop(name)
        return job_model(status, self._state_for(b, status))

    def scale(self, name: str, workers, backend: str | None = None) -> dict:
        """Resize the job to ``workers`` workers (PATCH ``{"workers": N}``); its detail showing the change."""
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise BadRequest(
                f"workers={json.dumps(workers)} is not a number of workers; send a whole number of at least 0, "
                'such as {"workers": 2}.'
            )
        b, _ = self._find(name, backend)
        status = b.scale(name, workers)
        # The detail plus the job's resizes (time, from, to, how); the detail of GET gains "history" once
        # labextension/src/model.ts mirrors it.
        return {**self.get_job(name, b.name), "history": list(status.history)}

    def delete(self, name: str, backend: str | None = None) -> dict:
        b, _ = self._find(name, backend)
        b.delete(name)
        self._tensorboards.stop((b.name, name))  # its logs are gone with it
        with self._lock:
            for key in [k for k in self._done_cache if k[:2] == (b.name, name)]:
                del self._done_cache[key]
            for key in [k for k in self._live if k[:2] == (b.name, name)]:
                del self._live[key]
            for key in [k for k in self._done_models if k[:2] == (b.name, name)]:
                del self._done_models[key]
        return {"name": name, "deleted": True}

    # preflight ------------------------------------------------------------------
    def check(self, options) -> dict:
        """The preflight of ``%tfk8s_check`` / ``tk.check`` with ``options`` (backend, context, namespace,
        image, gpus): ``{"context", "namespace", "ok", "summary", "checks": [{"name", "mark", "ok",
        "message"}]}``."""
        from .check import run_check

        try:
            return run_check(options)
        except SpecError as e:
            raise BadRequest(str(e)) from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._tensorboards.stop_all()


def _tensorboard_dirs(backend: Backend, name: str) -> list[str]:
    """The job's TensorBoard folders; none when its artifacts cannot be read (e.g. gone with its pods)."""
    from ..results import tensorboard_dirs

    try:
        return tensorboard_dirs(backend, name)
    except Exception:
        return []


def _one_sentence(backend: str, e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, TFK8sError):
        return text
    if isinstance(e, ImportError):
        return f"the {backend} backend is not available ({text}); install it or remove it from c.JobsManager.backends."
    return f"the {backend} backend failed to list jobs ({text}); local jobs are still shown."
