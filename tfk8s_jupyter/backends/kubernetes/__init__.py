"""The Kubernetes backend: native Indexed Jobs or a Kubeflow TFJob, followed through one watch per job.

``render_manifests`` and ``manifests_yaml`` are pure (no cluster, no ``kubernetes`` import) and serve
``--dry-run``; ``KubernetesBackend`` imports the official client on first use.
"""

from __future__ import annotations

from .manifests import ManifestError, manifests_yaml, render_manifests

__all__ = ["KubernetesBackend", "ManifestError", "manifests_yaml", "render_manifests"]


def __getattr__(name: str):
    if name == "KubernetesBackend":
        from .client import KubernetesBackend

        return KubernetesBackend
    raise AttributeError(name)
