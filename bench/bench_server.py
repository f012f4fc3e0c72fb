"""Latency of the jobs list endpoint (``GET /tfk8s/api/jobs``) with 200 finished jobs in the records.

Starts a real Jupyter server with the extension on 127.0.0.1, writes 200 finished local job records (each
with 200 metric events and a log per replica) into a temporary ``TFK8S_HOME``, and times the endpoint:
the first request (every job summarized from its events) and the median / p95 of the next ones.

    .venv/bin/python bench/bench_server.py [--jobs 200] [--requests 50]

Target: median < 100 ms. ``--browser`` also counts the side panel's requests in a real JupyterLab
(Debian chromium) over 10 s visible, then 10 s hidden: the hidden count must be 0.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lab"))

from labjobs import write_record  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--points", type=int, default=200, help="metric events per job")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--browser", action="store_true", help="also count the panel's requests in chromium")
    args = parser.parse_args()
    status = list_latency(args)
    if args.browser:
        status |= hidden_panel_requests()
    return status


def hidden_panel_requests(seconds: float = 10) -> int:
    """Requests of the TF Jobs panel while visible and while hidden, in a real JupyterLab."""
    from browser import PANEL_REFRESH_SECONDS, LabPage, LabServer, launch_browser
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        lab = LabServer(Path(tmp) / "lab", env={"TFK8S_HOME": str(Path(tmp) / "home")}).start()
        try:
            with sync_playwright() as p:
                browser = launch_browser(p)
                page = LabPage(browser.new_page(), lab, "bench").open()
                page.show_jobs_panel()
                page.wait(2)
                since = time.monotonic()
                page.wait(seconds)
                visible = page.jobs_requests(since)
                page.hide_jobs_panel()
                page.wait(2)
                since = time.monotonic()
                page.wait(seconds)
                hidden = page.jobs_requests(since)
                browser.close()
        finally:
            lab.stop()
    print(
        f"TF Jobs panel (refresh every {PANEL_REFRESH_SECONDS} s): {visible} requests in {seconds:g} s visible, "
    )
    print(f"  {hidden} requests in {seconds:g} s hidden  (target: 0 while hidden)")
    return 0 if hidden == 0 else 1


def list_latency(args) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        now = time.time()
        t0 = time.perf_counter()
        for i in range(args.jobs):
            phase = ("succeeded", "failed", "stopped")[i % 3]
            write_record(
                home, f"bench-{i:03d}", phase=phase, owner="bench", points=args.points, created=now - i * 60
            )
        print(
            f"wrote {args.jobs} finished job records ({args.points} metric events each) in {time.perf_counter() - t0:.1f} s"
        )

        token = secrets.token_hex(16)
        with socketless_port() as port:
            pass
        env = {
            **os.environ,
            "TFK8S_HOME": str(home),
            "JUPYTERHUB_USER": "bench",
            "KUBECONFIG": str(Path(tmp) / "none"),
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_server",
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={tmp}",
                "--ServerApp.jpserver_extensions={'tfk8s_jupyter': True}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            url = f"http://127.0.0.1:{port}/tfk8s/api/jobs"

            def get() -> tuple[float, dict]:
                request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
                start = time.perf_counter()
                with urllib.request.urlopen(request, timeout=30) as response:
                    body = response.read()
                return (time.perf_counter() - start) * 1000, json.loads(body)

            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("the Jupyter server did not start") from None
                    time.sleep(0.2)

            first_ms, body = get()
            assert len(body["jobs"]) == args.jobs, f"listed {len(body['jobs'])} jobs, expected {args.jobs}"
            assert all(len(j["sparkline"]["values"]) > 2 for j in body["jobs"])
            times = [get()[0] for _ in range(args.requests)]
            times.sort()
            median = statistics.median(times)
            p95 = times[int(0.95 * (len(times) - 1))]
            size = len(json.dumps(body))
            print(f"GET /tfk8s/api/jobs with {args.jobs} jobs ({size / 1024:.0f} KiB of JSON):")
            print(f"  first request (every job summarized from its events): {first_ms:.1f} ms")
            print(
                f"  next {args.requests}: median {median:.1f} ms, p95 {p95:.1f} ms  (target: median < 100 ms)"
            )
            return 0 if median < 100 else 1
        finally:
            server.terminate()
            server.wait(timeout=20)


class socketless_port:
    """A free TCP port on 127.0.0.1 (bound, read, released)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
