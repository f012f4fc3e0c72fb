"""Fixtures for the REST API and browser tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tfk8s_jupyter import config as tfk8s_config


@pytest.fixture
def tfk8s_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "tfk8s-home"
    home.mkdir()
    monkeypatch.setenv("TFK8S_HOME", str(home))
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    # The server extension installs its own TFK8s config; put the process-wide one back afterwards.
    monkeypatch.setattr(tfk8s_config, "_current", tfk8s_config._current)
    return home


@pytest.fixture
def kube_absent(monkeypatch, tmp_path):
    """No kubeconfig anywhere, so only the local backend is configured."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return os.environ["KUBECONFIG"]
