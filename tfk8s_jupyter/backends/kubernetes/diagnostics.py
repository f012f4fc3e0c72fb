"""Why a job does not run, in one sentence, from pod objects (plain dicts as the API returns them).

Pure functions: the backend passes pods (``ApiClient.sanitize_for_serialization`` or the raw JSON) and
puts the sentence into ``JobStatus.message`` and, when the job fails, into its error.
"""

from __future__ import annotations

import re

from ...logtext import log_excerpt

_INSUFFICIENT = re.compile(r"Insufficient ([A-Za-z0-9./_-]+)")
IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
MAX_LOG_CHARS = 400


def _replica(pod: dict) -> str:
    labels = pod.get("metadata", {}).get("labels") or {}
    annotations = pod.get("metadata", {}).get("annotations") or {}
    role = labels.get("tfk8s.io/role")
    index = (
        annotations.get("batch.kubernetes.io/job-completion-index")
        or labels.get("batch.kubernetes.io/job-completion-index")
        or labels.get("training.kubeflow.org/replica-index")
    )
    if role is not None and index is not None:
        return f"{role}-{index}"
    return f"pod {pod.get('metadata', {}).get('name', '?')}"


def _container(pod: dict, name: str | None = None) -> dict:
    containers = pod.get("spec", {}).get("containers") or [{}]
    return next((c for c in containers if c.get("name") == name), containers[0])


def _statuses(pod: dict) -> list[dict]:
    return pod.get("status", {}).get("containerStatuses") or []


def unschedulable(pod: dict) -> str | None:
    """Pending + Unschedulable: which resource is short (or the scheduler's own words)."""
    status = pod.get("status", {})
    if status.get("phase") != "Pending":
        return None
    cond = next(
        (
            c
            for c in status.get("conditions") or []
            if c.get("type") == "PodScheduled" and c.get("status") == "False"
        ),
        None,
    )
    if cond is None or cond.get("reason") != "Unschedulable":
        return None
    message = cond.get("message") or ""
    short = sorted({r.rstrip(".") for r in _INSUFFICIENT.findall(message.split("preemption:")[0])})
    who = _replica(pod)
    if short:
        res = _container(pod).get("resources") or {}
        asks = {**(res.get("requests") or {}), **(res.get("limits") or {})}
        wanted = ", ".join(f"{r} {asks[r]}" for r in short if r in asks)
        what = " and ".join(short)
        return (
            f"{who} cannot be scheduled: no node has enough free {what}"
            + (f" (it asks for {wanted})" if wanted else "")
            + "; ask for less (--gpus/--cpu/--memory), wait for running jobs to finish, or add capacity."
        )
    if "node affinity" in message or "node selector" in message or "untolerated taint" in message:
        return (
            f"{who} cannot be scheduled: no node matches its node selector or tolerates the nodes' taints "
            f"({message.strip()}); fix TFK8s.node_selector / TFK8s.tolerations."
        )
    return f"{who} cannot be scheduled: {message.strip() or 'the scheduler found no node'}."


def image_pull(pod: dict) -> str | None:
    """ErrImagePull / ImagePullBackOff: the image name."""
    for cs in _statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PULL_REASONS:
            image = cs.get("image") or _container(pod, cs.get("name")).get("image", "?")
            detail = (waiting.get("message") or "").strip()
            return (
                f"the image {image} of {_replica(pod)} cannot be pulled ({waiting['reason']}"
                + (f": {detail}" if detail else "")
                + "); check the image name and tag (TFK8s.image), and TFK8s.image_pull_secrets for a private registry."
            )
    return None


def oom_killed(pod: dict) -> str | None:
    """OOMKilled (now or as the reason of the last restart): the memory limit."""
    for cs in _statuses(pod):
        for state in (cs.get("state") or {}, cs.get("lastState") or {}):
            term = state.get("terminated") or {}
            if term.get("reason") == "OOMKilled":
                limit = ((_container(pod, cs.get("name")).get("resources") or {}).get("limits") or {}).get(
                    "memory"
                )
                at = f"its memory limit of {limit}" if limit else "the node's memory"
                return (
                    f"{_replica(pod)} ran out of memory: it was killed (OOMKilled) at {at}; "
                    "raise --memory or use a smaller batch or model."
                )
    return None


def crash_loop(pod: dict, logs: str | None = None) -> str | None:
    """CrashLoopBackOff: the restarts, the exit code and the last log lines."""
    for cs in _statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") != "CrashLoopBackOff":
            continue
        term = (cs.get("lastState") or {}).get("terminated") or {}
        tail = log_excerpt(logs or term.get("message"), 3, MAX_LOG_CHARS)
        code = term.get("exitCode")
        return (
            f"{_replica(pod)} keeps crashing (restarted {cs.get('restartCount', 0)} times"
            + (f", exit code {code}" if code is not None else "")
            + ")"
            + (f"; last output: {tail}" if tail else "; see its log")
            + "."
        )
    return None


def config_error(pod: dict) -> str | None:
    for cs in _statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in (
            "CreateContainerConfigError",
            "CreateContainerError",
            "RunContainerError",
        ):
            return f"{_replica(pod)} cannot start its container ({waiting['reason']}: {waiting.get('message', '').strip()})."
    return None


def failed(pod: dict, logs: str | None = None) -> str | None:
    """A container that ended with a non-zero exit code (not a restart in progress)."""
    for cs in _statuses(pod):
        term = (cs.get("state") or {}).get("terminated") or {}
        code = term.get("exitCode")
        if code not in (None, 0):
            tail = log_excerpt(logs or term.get("message"), 3, MAX_LOG_CHARS)
            return (
                f"{_replica(pod)} exited with code {code}"
                + (f" ({term['reason']})" if term.get("reason") not in (None, "Error") else "")
                + (f"; last output: {tail}" if tail else "")
                + "."
            )
    return None


def diagnose_pod(pod: dict, logs: str | None = None) -> str | None:
    """The one sentence that explains why this pod is not running well, or ``None``."""
    return (
        unschedulable(pod)
        or image_pull(pod)
        or oom_killed(pod)
        or crash_loop(pod, logs)
        or config_error(pod)
        or failed(pod, logs)
    )


def diagnose(pods: list[dict], logs: dict[str, str] | None = None) -> str | None:
    """The most telling sentence over a job's pods (reporting replica first, then by name)."""
    logs = logs or {}
    for pod in pods:
        msg = diagnose_pod(pod, logs.get(pod.get("metadata", {}).get("name", "")))
        if msg:
            return msg
    return None


DEADLINE_EXCEEDED = "ran past its deadline"


def job_failure(job: dict) -> str | None:
    """The Failed condition of a batch/v1 Job or a TFJob, as a sentence."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            name = job.get("metadata", {}).get("name", "?")
            reason = cond.get("reason") or "Failed"
            message = (cond.get("message") or "").strip().rstrip(".")
            if reason == "DeadlineExceeded" or "deadline" in message.lower():
                limit = (job.get("spec") or {}).get("activeDeadlineSeconds") or (
                    (job.get("spec") or {}).get("runPolicy") or {}
                ).get("activeDeadlineSeconds")
                took = f" of {limit} s" if limit else ""
                return (
                    f"{name} failed: it {DEADLINE_EXCEEDED}{took} and Kubernetes stopped it; give it a longer "
                    "--deadline, or make it train less."
                )
            if reason == "BackoffLimitExceeded":
                return f"{name} failed: its replicas crashed more often than max_restarts allows ({message})."
            return f"{name} failed ({reason}{': ' + message if message else ''})."
    return None


def failed_create(events: list[dict]) -> str | None:
    """A FailedCreate event of a Job (pods refused, e.g. quota exceeded), as a sentence."""
    for ev in reversed(events):
        if ev.get("reason") != "FailedCreate":
            continue
        message = (ev.get("message") or "").strip()
        target = (ev.get("involvedObject") or {}).get("name", "?")
        if "exceeded quota" in message:
            quota = message.split("exceeded quota:", 1)[1].strip()
            return (
                f"{target} cannot create its pods: the namespace quota is exceeded ({quota}); "
                "ask for less (--workers/--cpu/--memory/--gpus), delete finished jobs, or ask for a larger quota."
            )
        return f"{target} cannot create its pods: {message}."
    return None
