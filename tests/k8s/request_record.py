"""Every request the Kubernetes backend made in this pytest session (tests/k8s/conftest.py records them),
so the least-privilege test can hold the Role against the whole suite's calls."""

from __future__ import annotations

BACKEND_REQUESTS: list[dict] = []
