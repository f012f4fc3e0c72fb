"""A real JupyterLab in Debian chromium, driven by Playwright (the system browser, never a downloaded one).

``LabServer`` starts ``jupyter lab`` on 127.0.0.1 with a token, a temporary root, settings and workspace
dir (news toast off, fast panel refresh) and the test's ``TFK8S_HOME``; ``LabPage`` wraps a Playwright page
with the few JupyterLab moves the browser tests need.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PANEL_REFRESH_SECONDS = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``jupyter lab`` as a subprocess; ``stop()`` shuts its kernels down and ends it."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.root = workdir / "root"
        self.settings = workdir / "settings"
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = OUTPUT / f"jupyter-lab-{self.port}.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def write_settings(self) -> None:
        def put(plugin: str, name: str, value: dict) -> None:
            path = self.settings / plugin / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))

        # The news/update toast would cover the page.
        put(
            "@jupyterlab/apputils-extension", "notification", {"fetchNews": "false", "checkForUpdates": False}
        )
        put("tfk8s-jupyter", "plugin", {"refreshInterval": PANEL_REFRESH_SECONDS})

    def start(self, timeout: float = 120) -> LabServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_settings()
        OUTPUT.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--LabApp.user_settings_dir={self.settings}",
            f"--LabApp.workspaces_dir={self.workdir / 'workspaces'}",
        ]
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}; see {self.log_path}")
            try:
                self.api("GET", "/api/status")
                return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"jupyter lab did not answer within {timeout:g} s; see {self.log_path}")

    def api(self, method: str, path: str):
        request = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            for kernel in self.api("GET", "/api/kernels"):
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
        except OSError:
            pass
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class LabPage:
    """A JupyterLab tab in chromium."""

    def __init__(self, page, lab: LabServer, name: str):
        self.page = page
        self.lab = lab
        self.name = name
        self.requests: list[tuple[float, str]] = []
        page.on("request", lambda r: self.requests.append((time.monotonic(), r.url)))

    def open(self, path: str = "lab") -> LabPage:
        self.page.goto(f"{self.lab.url}/{path}?token={self.lab.token}")
        self.page.wait_for_selector("#jp-main-statusbar", timeout=90_000)
        self.page.wait_for_selector('.lm-TabBar-tab[data-id="tfk8s-jobs-panel"]', timeout=60_000)
        return self

    def screenshot(self, suffix: str) -> Path:
        path = OUTPUT / f"{self.name}-{suffix}.png"
        self.page.screenshot(path=str(path))
        return path

    def wait(self, seconds: float) -> None:
        """Sleep while Playwright keeps delivering page events (``time.sleep`` would hold them back)."""
        self.page.wait_for_timeout(seconds * 1000)

    def jobs_requests(self, since: float) -> int:
        """Requests to the jobs API seen since ``since`` (``time.monotonic()``; sleep with :meth:`wait`)."""
        return sum(1 for t, url in self.requests if t >= since and "/tfk8s/api/jobs" in url)

    def show_jobs_panel(self):
        panel = self.page.locator(".tfk8s-JobsPanel")
        if not panel.is_visible():
            self.page.click('.lm-TabBar-tab[data-id="tfk8s-jobs-panel"]')
        panel.wait_for(state="visible", timeout=30_000)
        return panel

    def hide_jobs_panel(self) -> None:
        if self.page.locator(".tfk8s-JobsPanel").is_visible():
            self.page.click('.lm-TabBar-tab[data-id="tfk8s-jobs-panel"]')
        self.page.locator(".tfk8s-JobsPanel").wait_for(state="hidden", timeout=30_000)

    def job_row(self, name: str):
        return self.page.locator(f'.tfk8s-job-row[data-job="{name}"]')

    def wait_for_phase(self, name: str, phases: tuple[str, ...], timeout: float) -> str:
        """Wait until the job's row shows one of ``phases``; return it."""
        row = self.job_row(name)
        deadline = time.monotonic() + timeout
        phase = None
        while time.monotonic() < deadline:
            if row.count():
                phase = row.get_attribute("data-phase")
                if phase in phases:
                    return phase
            self.wait(0.5)
        raise AssertionError(f"job {name} did not reach {phases} in {timeout:g} s (last seen: {phase})")

    def open_notebook(self, path: str) -> None:
        self.page.goto(f"{self.lab.url}/lab/tree/{path}?token={self.lab.token}")
        self.page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
        self.wait_kernel_idle()

    def wait_kernel_idle(self, timeout: float = 120) -> None:
        """Wait for "| Idle" in the status bar: a cell run earlier is silently dropped (jupyterlab#15420)."""
        self.page.wait_for_function(
            """() => Array.from(document.querySelectorAll('#jp-main-statusbar *'))
                  .some(e => e.childElementCount === 0 && /\\|\\s*Idle/.test(e.textContent || ''))""",
            timeout=timeout * 1000,
        )
        time.sleep(1.0)


def launch_browser(playwright):
    """Debian's chromium; Playwright never downloads a browser here."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            "the browser tests need Debian's chromium: run 'make system-deps' (apt-get install -y chromium)"
        )
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
