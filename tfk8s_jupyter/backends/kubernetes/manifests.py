"""Kubernetes manifests of a job, as pure functions returning plain dicts.

Two flavors:

``native`` (no operator needed)
    One ConfigMap ``<job>`` (the payload, the runner and the spec), one headless Service ``<job>`` and per
    role one Indexed Job ``<job>-<role>``. Indexed Job pods get the hostname ``<job>-<role>-<i>`` and, with
    ``subdomain: <job>``, the stable DNS name ``<job>-<role>-<i>.<job>.<namespace>.svc``. The runner builds
    TF_CONFIG in the pod from ``TFK8S_ROLE`` + ``JOB_COMPLETION_INDEX`` + ``TFK8S_CLUSTER``.

``tfjob``
    A Kubeflow training-operator v1 ``TFJob`` (Chief/PS/Worker); the operator creates pods and services and
    sets TF_CONFIG. The payload ConfigMap is shared with the native flavor.

Input files the cell reads (``Payload.data``, found at submission by ``cell_inputs.find_inputs``) travel in
``<job>-data-<i>`` ConfigMaps as ``binaryData`` (files over one object's size split into parts, at most
``cell_inputs.MAX_SHIPPED_BYTES`` in all), each mounted at ``/etc/tfk8s-data-<i>`` and named to the runner by
``TFK8S_DATA_DIR_<i>``; the runner writes them into the replica's work dir by their relative paths.

With ``storage`` (``pvc:CLAIM[/subpath]``) every pod mounts the claim at ``/tfk8s/storage`` and
``TFK8S_ARTIFACTS`` is ``/tfk8s/storage/<subpath>/<job>``; with a URI it is ``<uri>/<job>``; without, a path in
the pod's scratch ``emptyDir`` (:mod:`.storage`).

The ConfigMap is the parent of everything else in both flavors: it is created first (pods mount it, so it
must exist before any of them), and every later object carries an ``ownerReference`` to it, so deleting the
ConfigMap garbage-collects the job, and no object can ever exist without an existing parent — a submission
that dies half-way leaves nothing that the parent's deletion does not remove. Owner references need the
parent's uid, known only once it is created: :func:`set_owner` adds them at submit time (``--dry-run``
output has none).
"""

from __future__ import annotations

import base64
import json
import math
import re
from copy import deepcopy
from importlib import resources

from ...payload import Payload
from ...replica_env import PROTOCOL_KEY_ENV, contract_env
from ...spec import JobSpec
from . import storage

MANAGED_BY = "tfk8s-jupyter"
LABEL_JOB = "tfk8s.io/job"
LABEL_ROLE = "tfk8s.io/role"
LABEL_OWNER = "tfk8s.io/owner"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
ANNOTATION_OWNER = "tfk8s.io/owner"
ANNOTATION_FLAVOR = "tfk8s.io/flavor"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
TF_PORT = 2222
CONTAINER = "tensorflow"  # the TFJob operator finds the port on the container of this name
PAYLOAD_DIR = "/etc/tfk8s"
SCRATCH_DIR = "/tmp"
CHECKPOINT_BASE = storage.SCRATCH_CHECKPOINTS
CONFIGMAP_LIMIT = 1_000_000  # bytes; the API server refuses objects over ~1 MiB
DATA_DIR = "/etc/tfk8s-data"  # input ConfigMap i is mounted at DATA_DIR-i
DATA_PART_BYTES = 900_000  # the largest part of an input file in one data ConfigMap
DATA_ENV_PREFIX = "TFK8S_DATA_DIR_"  # the runner's name for the mounts (runner.DATA_DIR_ENV_PREFIX)
DATA_INDEX = "index.json"
RUNNER_FILES = (
    "runner.py",
    "replica_env.py",
    "replica_runtime.py",
    "replica_callbacks.py",
    "replica_keras.py",
    "replica_output.py",
    "protocol.py",
    "payload.py",
    "replica_strategy.py",
    "replica_inputs.py",
    "replica_metrics.py",
    "cell_report.py",
    "replica_workdir.py",
    "replica_artifacts.py",
)
TFJOB_ROLES = {"chief": "Chief", "ps": "PS", "worker": "Worker"}
FLAVORS = ("native", "tfjob")

PROTOCOL_SECRET_KEY = "protocol-key"  # the key of the job's protocol key in its Secret <job>-protocol

_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]+")


class ManifestError(ValueError):
    """The job cannot be expressed as Kubernetes objects (e.g. the payload is too large)."""


def label_value(text: str) -> str:
    """``text`` made a valid label value (≤ 63 chars, alphanumeric at both ends), e.g. for user names."""
    value = _LABEL_VALUE_BAD.sub("-", str(text))[:63].strip("-._")
    return value or "unknown"


def job_labels(spec: JobSpec, role: str | None = None) -> dict[str, str]:
    labels = {str(k): str(v) for k, v in spec.labels.items()}
    labels.update(
        {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_JOB: spec.name,
            LABEL_OWNER: label_value(spec.owner),
        }
    )
    if role:
        labels[LABEL_ROLE] = role
    return labels


def job_selector(name: str) -> str:
    """The label selector of every object (and pod) of job ``name``."""
    return f"{LABEL_JOB}={name}"


def owner_selector(owner: str | None) -> str:
    sel = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    if owner is not None:
        sel += f",{LABEL_OWNER}={label_value(owner)}"
    return sel


def service_name(spec: JobSpec) -> str:
    return spec.name


def replica_host(spec: JobSpec, role: str, index: int, namespace: str) -> str:
    """The stable DNS name of one replica (native flavor)."""
    return f"{spec.name}-{role}-{index}.{service_name(spec)}.{namespace}.svc"


def cluster_map(spec: JobSpec, namespace: str) -> dict[str, list[str]]:
    """``TFK8S_CLUSTER``: every replica's ``host:port`` by role (native flavor)."""
    return {
        r.role: [f"{replica_host(spec, r.role, i, namespace)}:{TF_PORT}" for i in range(r.count)]
        for r in spec.replicas
    }


def runner_files() -> dict[str, str]:
    """The runner and the modules it needs (:data:`RUNNER_FILES`), read as text (never imported)."""
    pkg = resources.files("tfk8s_jupyter")
    out = {}
    for name in RUNNER_FILES:
        f = pkg / name
        if f.is_file():
            out[name] = f.read_text()
    return out


def checkpoint_dir(spec: JobSpec) -> str:
    """``TFK8S_CHECKPOINT_DIR`` as the pods see it (:func:`.storage.pod_checkpoints`)."""
    return storage.pod_checkpoints(spec)


def container_env(
    spec: JobSpec, role: str, namespace: str, flavor: str, data_volumes: int = 0, resume_from: str = ""
) -> list[dict]:
    """The runner contract (:func:`~tfk8s_jupyter.replica_env.contract_env`) as a container's ``env``.

    Native: the runner builds TF_CONFIG from ``TFK8S_CLUSTER`` and ``JOB_COMPLETION_INDEX``; TFJob: the
    operator sets TF_CONFIG. ``TFK8S_ARTIFACTS`` and the checkpoint dir follow the job's storage
    (:mod:`.storage`); ``resume_from``: an earlier job's checkpoint dir as the pods see it.
    """
    env = contract_env(
        spec,
        role,
        payload=f"{PAYLOAD_DIR}/payload.json",
        checkpoint_dir=checkpoint_dir(spec),
        artifacts=storage.pod_artifacts(spec),
        resume_from=resume_from,
        workdir=f"{SCRATCH_DIR}/work",
        setup_timeout=spec.setup_timeout,
        cluster=cluster_map(spec, namespace) if flavor == "native" else None,
        direct_hosts=[service_name(spec)],
        extra={
            "HOME": SCRATCH_DIR,
            **{f"{DATA_ENV_PREFIX}{i}": f"{DATA_DIR}-{i}" for i in range(data_volumes)},
        },
    )
    out = []
    for k, v in env.items():
        if k == PROTOCOL_KEY_ENV:  # never a value in the pod spec: read from the job's own Secret
            out.append({"name": k, "valueFrom": secret_ref(protocol_secret_name(spec), PROTOCOL_SECRET_KEY)})
        elif k not in spec.secret_env or k not in spec.env:
            out.append({"name": k, "value": v})
    contract = {k for k in env if k not in spec.env}
    for k, ref in sorted(spec.secret_env.items()):
        if k not in contract:  # the runner contract's own variables win, as over plain env
            secret, key = ref.split("/", 1)
            out.append({"name": k, "valueFrom": secret_ref(secret, key)})
    return out


def secret_ref(secret: str, key: str) -> dict:
    """An env ``valueFrom`` reading ``key`` of the Secret ``secret`` (the kubelet resolves it at start)."""
    return {"secretKeyRef": {"name": secret, "key": key}}


def protocol_secret_name(spec: JobSpec) -> str:
    return f"{spec.name}-protocol"


def protocol_secret(spec: JobSpec, namespace: str) -> dict:
    """The job's protocol key in a Secret of its own (a dependent of the parent, removed with it): the pods
    read it through ``secretKeyRef``, so neither the pod spec nor the parent ConfigMap shows it."""
    meta = _metadata(spec, protocol_secret_name(spec), namespace)
    data = {PROTOCOL_SECRET_KEY: base64.b64encode(spec.protocol_key.encode()).decode()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "data": data}


def resources_for(spec: JobSpec, role: str) -> dict:
    requests: dict[str, str] = {}
    if spec.cpu:
        requests["cpu"] = str(spec.cpu)
    if spec.memory:
        requests["memory"] = str(spec.memory)
    limits = dict(requests)
    if role != "ps" and spec.gpus:
        limits[spec.gpu_resource] = str(spec.gpus)
    out: dict[str, dict[str, str]] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


# The restricted pod-security profile every pod of ours meets (job replicas and the image check pod).
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def place_pod(spec: JobSpec, pod_spec: dict) -> None:
    """The spec's scheduling and identity options on ``pod_spec``: node selector, tolerations, pull
    secrets, service account, priority class."""
    if spec.node_selector:
        pod_spec["nodeSelector"] = {str(k): str(v) for k, v in spec.node_selector.items()}
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in spec.image_pull_secrets]
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    if spec.priority_class:
        pod_spec["priorityClassName"] = spec.priority_class


def pod_template(
    spec: JobSpec, role: str, namespace: str, flavor: str, data_volumes: int = 0, resume_from: str = ""
) -> dict:
    """The pod template of one role: restricted Pod Security, payload (and input files) mounted, scratch
    dir writable, the storage claim (if any) mounted at :data:`.storage.STORAGE_MOUNT`."""
    container = {
        "name": CONTAINER,
        "image": spec.image or "tfk8s/trainer:0.1.0",
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", f"{PAYLOAD_DIR}/runner.py"],
        "env": container_env(spec, role, namespace, flavor, data_volumes, resume_from),
        "ports": [{"name": "tfjob-port", "containerPort": TF_PORT, "protocol": "TCP"}],
        "resources": resources_for(spec, role),
        "securityContext": deepcopy(CONTAINER_SECURITY),
        "volumeMounts": [
            {"name": "tfk8s-payload", "mountPath": PAYLOAD_DIR, "readOnly": True},
            {"name": "scratch", "mountPath": SCRATCH_DIR},
            *(
                {"name": f"tfk8s-data-{i}", "mountPath": f"{DATA_DIR}-{i}", "readOnly": True}
                for i in range(data_volumes)
            ),
            *storage.pod_mounts(spec),
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if not container["resources"]:
        del container["resources"]
    pod_spec: dict = {
        "containers": [container],
        "restartPolicy": "OnFailure",
        "automountServiceAccountToken": False,  # replicas never call the API
        "enableServiceLinks": False,
        "securityContext": deepcopy(POD_SECURITY),
        "volumes": [
            {
                # only what the replicas run: spec.json stays out of the pods
                "name": "tfk8s-payload",
                "configMap": {
                    "name": spec.name,
                    "items": [{"key": k, "path": k} for k in ("payload.json", *RUNNER_FILES)],
                },
            },
            {"name": "scratch", "emptyDir": {}},
            *(
                {"name": f"tfk8s-data-{i}", "configMap": {"name": data_configmap_name(spec, i)}}
                for i in range(data_volumes)
            ),
            *storage.pod_volumes(spec),
        ],
    }
    if flavor == "native":
        pod_spec["subdomain"] = service_name(spec)
    place_pod(spec, pod_spec)
    return {"metadata": {"labels": job_labels(spec, role)}, "spec": pod_spec}


def _metadata(spec: JobSpec, name: str, namespace: str, role: str | None = None) -> dict:
    return {
        "name": name,
        "namespace": namespace,
        "labels": job_labels(spec, role),
        "annotations": {ANNOTATION_OWNER: str(spec.owner)},
    }


def configmap(spec: JobSpec, payload: Payload, namespace: str, flavor: str) -> dict:
    """The job's parent object: payload, runner files and the spec (so any client can attach)."""
    data = {
        "payload.json": payload.without_data().to_json(),
        # without the protocol key: anyone who reads the namespace's ConfigMaps reads this
        "spec.json": json.dumps({**spec.to_json(), "protocol_key": ""}, sort_keys=True),
    }
    data.update(runner_files())
    size = sum(len(v.encode()) for v in data.values())
    if size > CONFIGMAP_LIMIT:
        raise ManifestError(
            f"the cell and its notebook context take {size / 1e6:.1f} MB, more than the 1 MB a Kubernetes "
            "ConfigMap holds; load large data inside the cell (from a file or URL) instead of shipping it."
        )
    meta = _metadata(spec, spec.name, namespace)
    meta["annotations"][ANNOTATION_FLAVOR] = flavor
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def data_configmap_name(spec: JobSpec, index: int) -> str:
    return f"{spec.name}-data-{index}"


def data_configmaps(spec: JobSpec, payload: Payload, namespace: str) -> list[dict]:
    """The input files that travel with the job, packed into ConfigMaps of at most ~1 MB of ``binaryData``
    each (a larger file split into parts); each holds ``index.json``: key -> [path, part, parts].

    Raises:
        ManifestError: the files take more than ``cell_inputs.MAX_SHIPPED_BYTES`` in all.
    """
    from ...cell_inputs import MAX_SHIPPED_BYTES, human_size

    total = sum(len(b) for b in payload.data.values())
    if total > MAX_SHIPPED_BYTES:
        biggest = sorted(payload.data.items(), key=lambda kv: -len(kv[1]))[:3]
        names = ", ".join(f"{k!r} ({human_size(len(v))})" for k, v in biggest)
        raise ManifestError(
            f"the cell's input files take {human_size(total)}, over the {human_size(MAX_SHIPPED_BYTES)} that travel "
            f"with a Kubernetes job (largest: {names}); name only the files the cell needs with --files, or "
            "read the data inside the cell from a URI (gs://, s3://, https://)."
        )
    groups: list[tuple[dict[str, str], dict[str, list]]] = []
    room = 0
    key = 0
    for rel in sorted(payload.data):
        blob = payload.data[rel]
        parts = [blob[i : i + DATA_PART_BYTES] for i in range(0, len(blob), DATA_PART_BYTES)] or [b""]
        for n, part in enumerate(parts):
            if not groups or len(part) > room:
                groups.append(({}, {}))
                room = DATA_PART_BYTES
            binary, index = groups[-1]
            binary[f"f{key}"] = base64.b64encode(part).decode()
            index[f"f{key}"] = [rel, n, len(parts)]
            room -= len(part)
            key += 1
    out = []
    for i, (binary, index) in enumerate(groups):
        meta = _metadata(spec, data_configmap_name(spec, i), namespace)
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta,
                "data": {DATA_INDEX: json.dumps(index, sort_keys=True)},
                "binaryData": binary,
            }
        )
    return out


def headless_service(spec: JobSpec, namespace: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, service_name(spec), namespace),
        "spec": {
            "clusterIP": "None",
            "selector": {LABEL_JOB: spec.name},
            # Replicas look each other up while starting, before any of them is Ready.
            "publishNotReadyAddresses": True,
            "ports": [{"name": "tfjob-port", "port": TF_PORT, "targetPort": TF_PORT, "protocol": "TCP"}],
        },
    }


def deadline_seconds(spec: JobSpec) -> int | None:
    """``activeDeadlineSeconds``: the spec's deadline rounded up to whole seconds."""
    seconds = spec.deadline_seconds
    return None if seconds is None else max(1, math.ceil(seconds))


def indexed_job(
    spec: JobSpec, role: str, count: int, namespace: str, data_volumes: int = 0, resume_from: str = ""
) -> dict:
    template = pod_template(spec, role, namespace, "native", data_volumes, resume_from)
    meta = _metadata(spec, f"{spec.name}-{role}", namespace, role)
    extra: dict = {}
    if spec.deadline is not None:
        extra["activeDeadlineSeconds"] = deadline_seconds(spec)
    if spec.queue:
        # Kueue admits the Job by unsuspending it; until then no pod exists and the job shows "queued"
        meta["labels"][LABEL_KUEUE_QUEUE] = spec.queue
        extra["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            **extra,
            "completionMode": "Indexed",
            "completions": count,
            "parallelism": count,
            # restartPolicy OnFailure restarts containers in place; this bounds restarts over the role.
            "backoffLimit": spec.max_restarts * count,
            "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
            "template": template,
        },
    }


def tfjob(spec: JobSpec, namespace: str, data_volumes: int = 0, resume_from: str = "") -> dict:
    replica_specs = {}
    for r in spec.replicas:
        # In place, like the native flavor: when one all-reduce worker dies the others fail within
        # milliseconds (UnavailableError), so every worker restarts and they meet again.
        restart = "OnFailure"
        replica_specs[TFJOB_ROLES[r.role]] = {
            "replicas": r.count,
            "restartPolicy": restart,
            "template": pod_template(spec, r.role, namespace, "tfjob", data_volumes, resume_from),
        }
    meta = _metadata(spec, spec.name, namespace)
    run_policy: dict = {
        "cleanPodPolicy": "Running",
        "backoffLimit": spec.max_restarts,
        "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
    }
    if spec.deadline is not None:
        run_policy["activeDeadlineSeconds"] = deadline_seconds(spec)
    if spec.queue:
        meta["labels"][LABEL_KUEUE_QUEUE] = spec.queue
        run_policy["suspend"] = True
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": meta,
        "spec": {
            "runPolicy": run_policy,
            "tfReplicaSpecs": replica_specs,
        },
    }


def render_manifests(
    spec: JobSpec,
    payload: Payload | None = None,
    flavor: str = "native",
    namespace: str | None = None,
    resume_from: str = "",
) -> list[dict]:
    """Every object of the job, in creation order (the parent ConfigMap first).

    Args:
        spec: the validated job spec.
        payload: what the replicas run; default: the spec's code alone.
        flavor: ``native`` or ``tfjob`` (``auto`` means ``native`` here: nothing is asked of a cluster).
        namespace: the target namespace; default: the spec's, else ``default``.
        resume_from: the checkpoint dir of the job ``spec.resume_from`` as the pods see it
            (:func:`.storage.resume_dir`; the backend resolves it at submission).

    Raises:
        ManifestError: the payload does not fit in a ConfigMap, or its input files are over the limit.
    """
    if flavor == "auto":
        flavor = "native"
    if flavor not in FLAVORS:
        raise ManifestError(f"flavor {flavor!r} is unknown; use auto, native or tfjob.")
    payload = payload or Payload(code=spec.code)
    namespace = namespace or spec.namespace or "default"
    data = data_configmaps(spec, payload, namespace)
    objs = [configmap(spec, payload, namespace, flavor), *data]
    if spec.protocol_key:
        objs.append(protocol_secret(spec, namespace))
    if flavor == "tfjob":
        objs.append(tfjob(spec, namespace, len(data), resume_from))
        return objs
    objs.append(headless_service(spec, namespace))
    for r in spec.replicas:
        objs.append(indexed_job(spec, r.role, r.count, namespace, len(data), resume_from))
    return objs


def set_owner(obj: dict, parent: dict) -> dict:
    """Make ``parent`` (a created object with a uid) the controller-less owner of ``obj``; returns ``obj``."""
    meta = parent["metadata"]
    obj["metadata"]["ownerReferences"] = [
        {
            "apiVersion": parent["apiVersion"],
            "kind": parent["kind"],
            "name": meta["name"],
            "uid": meta["uid"],
            "blockOwnerDeletion": True,
        }
    ]
    return obj


def manifests_yaml(objs: list[dict]) -> str:
    """The objects as one multi-document YAML stream (what ``--dry-run`` prints); input files' bytes
    (``binaryData``) are shown as their sizes."""
    import yaml

    objs = [
        {
            **o,
            "binaryData": {
                k: f"<{len(base64.b64decode(v))} bytes>" for k, v in (o.get("binaryData") or {}).items()
            },
        }
        if o.get("binaryData")
        else o
        for o in objs
    ]

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper, value: str):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return "---\n" + "---\n".join(
        yaml.dump(o, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120) for o in objs
    )
