"""The image check of ``%tfk8s_check --image I``: can the nodes pull the image, and has it TensorFlow?

One short-lived pod (restricted Pod Security like the job's pods, tiny resources, ``activeDeadlineSeconds``,
labelled ``app.kubernetes.io/component=image-check``) runs the image's ``python`` with the check passed on
the command line (no ConfigMap): it imports ``tensorflow`` and ``tf_keras`` as the runner's
``check_image`` does and prints their versions as one JSON line. The pod is followed by ``list pods``,
its output read with ``get pods/log``, and it is deleted afterwards whatever happened (also on a timeout,
an error or an interrupt). Only when asked: it costs a pod, so the preflight before a submission skips it.
"""

from __future__ import annotations

import json
import time
import uuid
from copy import deepcopy

from kubernetes import client as k8s

from ...spec import JobSpec
from ..base import TFK8sError
from . import manifests as m
from .connection import Cluster
from .errors import ApiErrorContext, api_status
from .preflight_limits import fit_container, limitranges

DEFAULT_TIMEOUT = 120.0  # seconds: a pull of a multi-GB TensorFlow image plus its import
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT = "image-check"
LABEL_CHECK = "tfk8s.io/image-check"
MARK = "TFK8S_IMAGE_CHECK "
MIN_TF = (2, 16)  # as runner.MIN_TF_VERSION
PULL_ERRORS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
POLL_SECONDS = 0.5
RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}

# Runs in the image with its own python: stdlib only, so that a bare image answers too.
CHECK_CODE = f"""
import importlib, importlib.util, json
out = {{}}
for mod in ("tensorflow", "tf_keras"):
    if importlib.util.find_spec(mod) is None:
        out[mod] = None
        continue
    try:
        out[mod] = str(importlib.import_module(mod).__version__)
    except Exception as e:
        out[mod] = "error: %s: %s" % (type(e).__name__, e)
print({MARK!r} + json.dumps(out), flush=True)
"""


def check_pod(spec: JobSpec, name: str, timeout: float, limitranges: list[dict] = ()) -> dict:
    """The check pod: the job's image, pull secrets, node selector, tolerations, service account and
    priority class; restricted security context; never restarted; ends after ``timeout`` (+ margin); its
    small resources moved inside the namespace's ``limitranges``."""
    container = {
        "name": m.CONTAINER,
        "image": spec.image or "tfk8s/trainer:0.1.0",
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-c", CHECK_CODE],
        "env": [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}, {"name": "HOME", "value": "/tmp"}],
        "resources": fit_container(dict(RESOURCES), list(limitranges)),
        "securityContext": deepcopy(m.CONTAINER_SECURITY),
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict = {
        "containers": [container],
        "restartPolicy": "Never",
        "activeDeadlineSeconds": int(timeout) + 30,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": deepcopy(m.POD_SECURITY),
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }
    m.place_pod(spec, pod_spec)
    labels = {
        m.LABEL_MANAGED_BY: m.MANAGED_BY,
        LABEL_COMPONENT: COMPONENT,
        LABEL_CHECK: name,
        m.LABEL_OWNER: m.label_value(spec.owner),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": pod_spec,
    }


def verdict(image: str, found: dict) -> tuple[bool, str]:
    """(ok, sentence) from the check's JSON line."""
    tf, keras = found.get("tensorflow"), found.get("tf_keras")
    if tf is None:
        return False, (
            f"the image {image} has no TensorFlow; install tensorflow==2.21.* in it (e.g. pip install "
            "'tfk8s-jupyter[tensorflow]'), or pass --image with one that has it."
        )
    if tf.startswith("error:"):
        return (
            False,
            f"TensorFlow does not import in image {image} ({tf[7:]}); reinstall tensorflow==2.21.* in it.",
        )
    version = tuple(int(p) for p in tf.split(".")[:2] if p.isdigit())
    if version < MIN_TF:
        return False, (
            f"the image {image} has TensorFlow {tf}, but tfk8s needs 2.16 or newer (tested with 2.21); upgrade "
            "tensorflow in the image."
        )
    if keras is None:
        return True, (
            f"TensorFlow {tf}, no tf-keras in image {image} (parameter-server jobs and TFK8S_KERAS=legacy need "
            f"tf-keras=={tf.rsplit('.', 1)[0]}.*)."
        )
    if keras.startswith("error:") or keras.split(".")[:2] != tf.split(".")[:2]:
        return False, (
            f"the image {image} has TensorFlow {tf} but tf-keras {keras}; install "
            f"tf-keras=={tf.rsplit('.', 1)[0]}.* to match."
        )
    return True, f"TensorFlow {tf}, tf-keras {keras} in image {image}."


def _state(pod: dict) -> tuple[str, dict]:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    return status.get("phase") or "Pending", (statuses[0].get("state") or {}) if statuses else {}


def _where(pod: dict | None) -> str:
    """How far the pod got, for the timeout sentence."""
    if pod is None:
        return "not yet seen"
    phase, state = _state(pod)
    waiting = state.get("waiting") or {}
    if waiting.get("reason"):
        return f"{phase}, {waiting['reason']}"
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"{phase}, unschedulable: {cond.get('message') or cond.get('reason')}"
    return phase


def run_image_check(cluster: Cluster, spec: JobSpec, namespace: str, timeout: float) -> tuple[bool, str]:
    """Run the check pod in ``namespace`` and wait at most ``timeout`` seconds; (ok, one sentence).

    Raises:
        TFK8sError: the API refused the pod or a read (the typed error, with its hint).
    """
    image = spec.image or "tfk8s/trainer:0.1.0"
    name = f"tfk8s-image-check-{uuid.uuid4().hex[:8]}"
    core = k8s.CoreV1Api(cluster.api_client)
    try:
        ranges = limitranges(cluster, namespace)
    except TFK8sError as e:
        if api_status(e) != 403:
            raise
        ranges = []  # not allowed to read them: the permission rows say so
    cluster.raw(
        ApiErrorContext("create", "pods", namespace, name),
        core.create_namespaced_pod,
        namespace,
        check_pod(spec, name, timeout, ranges),
    )
    try:
        return _follow(cluster, image, namespace, name, timeout)
    finally:
        try:
            cluster.raw(
                ApiErrorContext("delete", "pods", namespace, name),
                core.delete_namespaced_pod,
                name,
                namespace,
                body={"gracePeriodSeconds": 0},
            )
        except TFK8sError as e:
            if api_status(e) != 404:
                raise


def _follow(cluster: Cluster, image: str, namespace: str, name: str, timeout: float) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout
    pod = None
    while time.monotonic() < deadline:
        items = cluster.items("pods", namespace, label_selector=f"{LABEL_CHECK}={name}")
        pod = items[0] if items else None
        if pod is not None:
            phase, state = _state(pod)
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in PULL_ERRORS:
                reason = waiting.get("message") or waiting["reason"]
                return False, (
                    f"the nodes cannot pull image {image}: {reason}; check the name and imagePullSecrets "
                    "(c.TFK8s.image_pull_secrets)."
                )
            if phase in ("Succeeded", "Failed"):
                return _result(cluster, image, namespace, name, pod)
        time.sleep(POLL_SECONDS)
    return False, (
        f"the image check of {image} did not finish in {timeout:g} s (its pod was {_where(pod)}); a large "
        f"image may still be pulling: retry, or look at kubectl get events -n {namespace}."
    )


def _result(cluster: Cluster, image: str, namespace: str, name: str, pod: dict) -> tuple[bool, str]:
    log = cluster.read_log(namespace, name)
    for line in log.splitlines():
        if line.startswith(MARK):
            try:
                return verdict(image, json.loads(line[len(MARK) :]))
            except (ValueError, AttributeError):
                break
    _, state = _state(pod)
    term = state.get("terminated") or {}
    said = (term.get("message") or log).strip().splitlines()
    last = said[-1] if said else term.get("reason") or "no output"
    return False, (
        f"the image check in image {image} failed (exit {term.get('exitCode', '?')}: {last}); the image needs "
        "python on its PATH with tensorflow installed."
    )
