"""Fixtures for the REST API and browser tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tfk8s_jupyter import config as tfk8s_config


@pytest.fixture
def tfk8s_home(tfk8s_home, monkeypatch) -> Path:
    """The shared per-test ``TFK8S_HOME``, with a fixed owner and the process-wide config restored after."""
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    # The server extension installs its own TFK8s config; put the process-wide one back afterwards.
    monkeypatch.setattr(tfk8s_config, "_current", tfk8s_config._current)
    return tfk8s_home


@pytest.fixture
def kube_absent(monkeypatch, tmp_path):
    """No kubeconfig anywhere, so only the local backend is configured."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return os.environ["KUBECONFIG"]


@pytest.fixture(scope="module")
def chromium():
    from browser import launch_browser
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_browser(p)
        yield browser
        browser.close()


@pytest.fixture
def lab(tmp_path, tfk8s_home):
    """A JupyterLab whose server, kernels and job records share this test's ``TFK8S_HOME``."""
    from browser import LabServer

    server = LabServer(tmp_path / "lab", env={"TFK8S_HOME": str(tfk8s_home)}).start()
    yield server
    server.stop()


@pytest.fixture
def lab_page(request, chromium, lab):
    from browser import LabPage

    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    lab_page = LabPage(page, lab, request.node.name)
    yield lab_page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        lab_page.screenshot("failure")
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)  # lets lab_page screenshot a failed test
    return report
