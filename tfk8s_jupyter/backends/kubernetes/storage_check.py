"""The job's storage, checked on the cluster before anything is created: the claim exists in the namespace
and its access mode lets every replica mount it for writing (one ``get persistentvolumeclaims``).

Used by the preflight (a row of ``%tfk8s_check``) and by every submission of a job with a claim.
"""

from __future__ import annotations

from ...spec import JobSpec
from ..base import TFK8sError
from .connection import Cluster
from .errors import api_status
from .storage import HOSTNAME_LABEL, NO_STORAGE_NOTE, replicas_on_one_node, storage_of

ROLE_HINT = (
    "bind the Role tfk8s-jobs (deploy/kubernetes/base/role.yaml), which grants get persistentvolumeclaims"
)
SHARED_CLAIM_EXAMPLE = "deploy/kubernetes/storage/"


def storage_problem(cluster: Cluster, spec: JobSpec, namespace: str) -> tuple[bool | None, str]:
    """``(True, sentence)`` when the storage serves the job, ``(False, sentence with the fix)`` when it
    cannot, ``(None, sentence)`` when not checked (no storage, or reading the claim is not allowed)."""
    st = storage_of(spec)
    if st is None:
        return None, f"{NO_STORAGE_NOTE}."
    if st.kind == "uri":
        return True, (
            f"each job's artifacts go to {st.uri}/<job name> (the image must be able to write there; the "
            "runner checks when it starts)."
        )
    claim = st.claim
    try:
        pvc = cluster.get("persistentvolumeclaims", namespace, claim)
    except TFK8sError as e:
        if api_status(e) == 404:
            return False, (
                f"PersistentVolumeClaim {claim} does not exist in namespace {namespace}; create it (a "
                f"ReadWriteMany claim, e.g. from {SHARED_CLAIM_EXAMPLE}) or pass --storage pvc: with an "
                f"existing claim (kubectl get pvc -n {namespace})."
            )
        if api_status(e) == 403:
            return (
                None,
                f"not checked: reading PersistentVolumeClaim {claim} is not allowed to you; {ROLE_HINT}.",
            )
        raise
    status = pvc.get("status") or {}
    modes = set(status.get("accessModes") or (pvc.get("spec") or {}).get("accessModes") or [])
    replicas = sum(r.count for r in spec.replicas)
    if status.get("phase") == "Lost":
        return False, (
            f"PersistentVolumeClaim {claim} has lost its volume (phase Lost); ask an administrator to "
            "restore it, or pass --storage with another claim."
        )
    if "ReadWriteMany" in modes:
        return True, f"PersistentVolumeClaim {claim} (ReadWriteMany) holds the job's artifacts."
    if "ReadWriteOnce" in modes:
        if replicas_on_one_node(spec):
            return True, (
                f"PersistentVolumeClaim {claim} is ReadWriteOnce and every replica of the job runs on one node."
            )
        return False, (
            f"PersistentVolumeClaim {claim} is ReadWriteOnce, so only pods on one node can mount it, but the "
            f"job's {replicas} replicas may land on several nodes; use a ReadWriteMany claim, or set a node "
            f"selector on {HOSTNAME_LABEL} (c.TFK8s.node_selector) so all replicas share a node."
        )
    if "ReadWriteOncePod" in modes and replicas <= 1:
        return True, f"PersistentVolumeClaim {claim} is ReadWriteOncePod and the job has one replica."
    have = ", ".join(sorted(modes)) or "no access mode"
    return False, (
        f"PersistentVolumeClaim {claim} is {have}, so the job's {replicas} replica(s) cannot all write to it; "
        "use a ReadWriteMany claim."
    )
