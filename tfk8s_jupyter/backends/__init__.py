"""Backends: ``local`` (processes on this machine, the default) and ``kubernetes``."""

from __future__ import annotations

from .base import Backend


def get_backend(name: str = "local", **options) -> Backend:
    """The backend called ``name``; imports only what that backend needs."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(**options)
    if name == "kubernetes":
        from .kubernetes import KubernetesBackend

        return KubernetesBackend(**options)
    from ..spec import SpecError

    raise SpecError(f"backend {name!r} is unknown; use 'local' or 'kubernetes'.")
