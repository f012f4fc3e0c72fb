"""A failed Kubernetes API request as one typed error whose sentence names the fix.

:func:`translate` turns an ``ApiException`` (or a connection error) into :class:`~..base.Forbidden`,
:class:`~..base.JobNotFound`, :class:`~..base.JobConflict`, :class:`~..base.BackendUnavailable` or
:class:`~..base.TFK8sError`, each with the hint the user needs: a missing namespace, a missing operator,
an exceeded quota, the Role to ask for. The cause stays attached (``raise … from e``).
"""

from __future__ import annotations

import json
import re

from kubernetes.client.exceptions import ApiException

from ..base import BackendUnavailable, Forbidden, JobConflict, JobNotFound, TFK8sError


class ApiErrorContext:
    """What a request was doing, to turn an ``ApiException`` into one sentence with the fix."""

    def __init__(self, verb: str, resource: str, namespace: str | None, name: str | None = None):
        self.verb, self.resource, self.namespace, self.name = verb, resource, namespace, name


def api_status(e: BaseException | None) -> int | None:
    """The HTTP status of the ``ApiException`` behind a translated error (its ``__cause__``), if any."""
    cause = getattr(e, "__cause__", None)
    return cause.status if isinstance(cause, ApiException) else None


def _status_message(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or "{}").get("message") or e.reason or "")
    except (ValueError, AttributeError):
        return str(e.reason or e.body or "")


def _unreachable_reason(e: Exception) -> str:
    """The short cause of a failed connection (``[Errno 111] Connection refused``), not urllib3's retry text."""
    text = str(getattr(e, "reason", None) or e)
    if "[Errno" in text:
        return text[text.index("[Errno") :].rstrip("')\"")
    return f"{type(e).__name__}: {text}"


def translate(e: Exception, ctx: ApiErrorContext, server: str | None = None) -> TFK8sError:
    """The typed error for a failed API request, with the hint the user needs (``server``: the API URL)."""
    ns = ctx.namespace or "?"
    if not isinstance(e, ApiException):
        at = f" at {server}" if server else ""
        return BackendUnavailable(
            f"the Kubernetes API{at} cannot be reached ({_unreachable_reason(e)}); check the cluster address in "
            "your kubeconfig (or --context) and your network."
        )
    msg = _status_message(e)
    if e.status == 401:
        return BackendUnavailable(
            f"the Kubernetes API rejected the credentials ({msg}); refresh your kubeconfig login or token."
        )
    if e.status == 403:
        if "exceeded quota" in msg:
            quota = msg.split("exceeded quota:", 1)[1].strip()
            return Forbidden(
                f"the quota of namespace {ns} is exceeded ({quota}); ask for less (--workers/--cpu/--memory/"
                "--gpus), delete finished jobs, or ask an administrator for a larger quota."
            )
        user = re.search(r'User "([^"]+)"', msg)
        who = f"{user.group(1)}" if user else "your account"
        return Forbidden(
            f"{who} may not {ctx.verb} {ctx.resource} in namespace {ns}; ask an administrator to grant it "
            f"(a Role with verb {ctx.verb!r} on {ctx.resource!r}, see deploy/), or use a namespace where you may."
        )
    if e.status == 404:
        if f'namespaces "{ns}" not found' in msg:
            return BackendUnavailable(
                f"namespace {ns} does not exist; create it, or choose another with --namespace / "
                "TFK8s.namespace or your kubeconfig context."
            )
        if ctx.resource == "tfjobs" and "could not find the requested resource" in msg:
            return BackendUnavailable(
                "the Kubeflow training operator is not installed in this cluster (no kubeflow.org/v1 "
                "tfjobs); use --flavor native (or flavor='native'), which needs no operator."
            )
        return JobNotFound(f"{ctx.resource} {ctx.name} was not found in namespace {ns}.")
    if e.status == 409:
        return JobConflict(
            f"a job named {ctx.name} exists already in namespace {ns}; choose another name, or delete "
            f"the old one with tfk8s_jupyter.attach({ctx.name!r}, backend='kubernetes').delete()."
        )
    if e.status == 422:
        return TFK8sError(f"the cluster refused the {ctx.resource} of the job as invalid: {msg}.")
    return BackendUnavailable(
        f"the Kubernetes API answered {e.status} to {ctx.verb} {ctx.resource} in namespace {ns} ({msg}); "
        "try again in a moment."
    )
