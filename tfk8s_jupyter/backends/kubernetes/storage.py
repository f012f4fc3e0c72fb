"""Where a Kubernetes job's results live (``TFK8S_ARTIFACTS``), as its pods and as this notebook see them.

Pure functions over the job's spec (no cluster, no ``kubernetes`` import):

- ``pvc:CLAIM[/subpath]``: every pod mounts the claim's root at :data:`STORAGE_MOUNT`; the job's artifact
  directory is ``<mount>/<subpath>/<job>`` and its checkpoints ``<that>/checkpoints`` (unless
  ``checkpoint_dir`` is set). The notebook sees the same directory under ``c.TFK8s.storage_mount`` (the
  claim's root as mounted in the notebook pod), else under :data:`STORAGE_MOUNT` when that exists here.
- a URI (``gs://``, ``s3://``, ``hdfs://``): ``<uri>/<job>``, read and written through ``tf.io.gfile``, the
  same for pods and notebook.
- no storage: the artifacts go to the pod's scratch ``emptyDir`` and vanish with the pod; the job's status
  carries :data:`NO_STORAGE_NOTE`.

:func:`resume_dir` says where a new job's pods find an earlier job's checkpoints, or why they cannot.
"""

from __future__ import annotations

import posixpath
import shutil
from pathlib import Path

from ...replica_env import ARTIFACT_CHECKPOINTS
from ...spec import JobSpec, Storage, parse_storage
from ..base import TFK8sError

STORAGE_MOUNT = "/tfk8s/storage"  # where every pod of a job mounts its storage claim's root
STORAGE_VOLUME = "tfk8s-storage"
SCRATCH_ARTIFACTS = (
    "/tmp/tfk8s-artifacts"  # no storage: in the pod's scratch emptyDir (manifests.SCRATCH_DIR)
)
SCRATCH_CHECKPOINTS = "/tmp/tfk8s-checkpoints"  # no storage: checkpoints survive container restarts only
NO_STORAGE_NOTE = (
    "no storage: this job's checkpoints, model and TensorBoard logs will not survive its pods; "
    "pass --storage pvc:CLAIM or set c.TFK8s.storage"
)
HOSTNAME_LABEL = "kubernetes.io/hostname"  # a node selector on it puts every replica on one node


class StorageError(TFK8sError, ValueError):
    """The job's storage cannot serve what was asked (resume from an unreachable checkpoint, ...)."""


def storage_of(spec: JobSpec) -> Storage | None:
    """The job's parsed storage, or ``None`` without one."""
    return parse_storage(spec.storage) if spec.storage else None


def _join(*parts: str) -> str:
    return posixpath.join(*[p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p])


def pod_artifacts(spec: JobSpec) -> str:
    """``TFK8S_ARTIFACTS`` as the job's pods see it."""
    st = storage_of(spec)
    if st is None:
        return _join(SCRATCH_ARTIFACTS, spec.name)
    if st.kind == "pvc":
        return _join(STORAGE_MOUNT, st.subpath, spec.name)
    return _join(st.uri, spec.name)


def pod_checkpoints(spec: JobSpec) -> str:
    """``TFK8S_CHECKPOINT_DIR`` as the job's pods see it: ``<checkpoint_dir>/<job>`` when configured, else
    ``<artifacts>/checkpoints`` with storage, else the scratch directory (survives container restarts)."""
    if spec.checkpoint_dir:
        return _join(spec.checkpoint_dir, spec.name)
    if spec.storage:
        return _join(pod_artifacts(spec), ARTIFACT_CHECKPOINTS)
    return _join(SCRATCH_CHECKPOINTS, spec.name)


def pod_volumes(spec: JobSpec) -> list[dict]:
    """The storage claim as a pod volume (none for URIs and without storage)."""
    st = storage_of(spec)
    if st is None or st.kind != "pvc":
        return []
    return [{"name": STORAGE_VOLUME, "persistentVolumeClaim": {"claimName": st.claim}}]


def pod_mounts(spec: JobSpec) -> list[dict]:
    return [{"name": STORAGE_VOLUME, "mountPath": STORAGE_MOUNT} for _ in pod_volumes(spec)]


def storage_notes(spec: JobSpec) -> list[str]:
    """The one-line notes the job's status carries about its storage."""
    return [] if spec.storage else [NO_STORAGE_NOTE]


def replicas_on_one_node(spec: JobSpec) -> bool:
    """Can the scheduler put the job's replicas on several nodes? ``False`` when it has one replica or a
    node selector on ``kubernetes.io/hostname``."""
    total = sum(r.count for r in spec.replicas)
    return total <= 1 or HOSTNAME_LABEL in (spec.node_selector or {})


def resume_dir(spec: JobSpec, earlier: JobSpec) -> str:
    """Where the pods of ``spec`` find the checkpoints of the ``earlier`` job (``TFK8S_RESUME_FROM``).

    Raises:
        StorageError: the earlier job's checkpoints did not outlive its pods, or sit where the new pods
            cannot read them; one sentence with the fix.
    """
    name = earlier.name
    if earlier.checkpoint_dir:
        return pod_checkpoints(earlier)  # a path the operator made shared (TFK8s.checkpoint_dir)
    before = storage_of(earlier)
    if before is None:
        raise StorageError(
            f"job {name!r} ran without storage, so its checkpoints vanished with its pods and there is nothing "
            f"to resume from; run the earlier job again with --storage pvc:CLAIM (or c.TFK8s.storage) so it "
            "can be resumed."
        )
    if before.kind == "uri":
        return pod_checkpoints(earlier)
    now = storage_of(spec)
    if now is None or now.kind != "pvc" or now.claim != before.claim:
        raise StorageError(
            f"job {name!r} keeps its checkpoints on claim {before.claim}, which this job's pods do not mount; "
            f"pass --storage pvc:{before.claim} (with any subpath) to resume from it."
        )
    if (earlier.namespace or spec.namespace) != spec.namespace:
        raise StorageError(
            f"job {name!r} ran in namespace {earlier.namespace} and its claim {before.claim} belongs there; "
            f"submit this job with --namespace {earlier.namespace} to resume from it."
        )
    return pod_checkpoints(earlier)


def notebook_artifacts(
    spec: JobSpec, storage_mount: str | None, configured: str | None = None
) -> tuple[str | None, str | None]:
    """Where this notebook reads the job's artifact directory, and why not when it cannot.

    Args:
        spec: the job's spec.
        storage_mount: ``c.TFK8s.storage_mount``, the claim's root as mounted in the notebook pod.
        configured: ``c.TFK8s.storage``, naming the claim ``storage_mount`` shows (``None``: any).

    Returns:
        ``(location, None)`` or ``(None, reason)``: one sentence naming the fix.
    """
    st = storage_of(spec)
    if st is None:
        return None, (
            f"job {spec.name!r} ran without storage: its checkpoints, model and TensorBoard logs vanished with its "
            "pods; pass --storage pvc:CLAIM or set c.TFK8s.storage for the next job."
        )
    if st.kind == "uri":
        return pod_artifacts(spec), None
    mounted = parse_storage(configured) if configured else None
    if storage_mount and (mounted is None or mounted.kind != "pvc" or mounted.claim == st.claim):
        return _join(storage_mount, st.subpath, spec.name), None
    if Path(STORAGE_MOUNT).is_dir():
        return _join(STORAGE_MOUNT, st.subpath, spec.name), None
    return None, (
        f"job {spec.name!r} keeps its artifacts on claim {st.claim}, which this notebook does not mount; mount "
        f"the claim in the notebook pod and set c.TFK8s.storage_mount to its path (deploy/jupyterhub/"
        "values-storage.yaml shows how)."
    )


def remove_artifacts(spec: JobSpec, storage_mount: str | None, configured: str | None = None) -> str | None:
    """Delete a deleted job's artifact directory when this notebook reaches it (its claim mounted here);
    else say where the artifacts remain.

    Returns:
        ``None`` when nothing remains (removed, or the job had no storage), else one line for the user.
    """
    st = storage_of(spec)
    if st is None:
        return None
    where = pod_artifacts(spec)
    if st.kind == "uri":
        return (
            f"job {spec.name}'s artifacts remain at {where} (object storage is not deleted with the job; "
            "remove them there when you no longer need them)."
        )
    location, _ = notebook_artifacts(spec, storage_mount, configured)
    if location is None:
        return (
            f"job {spec.name}'s artifacts remain on claim {st.claim} at {where} (this notebook does not mount "
            "the claim; set c.TFK8s.storage_mount to its path here to delete them with the job)."
        )
    if not Path(location).exists():
        return None
    try:
        shutil.rmtree(location)
    except OSError as exc:
        return (
            f"job {spec.name}'s artifacts remain in {location}: deleting them failed ({exc.strerror or exc}); "
            "remove the folder by hand."
        )
    return None
