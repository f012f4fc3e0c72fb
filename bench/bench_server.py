"""Latency of the jobs list endpoint (``GET /tfk8s/api/jobs``) with 200 jobs in the records, 20 running.

Starts a real Jupyter server with the extension on 127.0.0.1, writes 200 local job records (each with 200
metric events and a log per replica; ``--running`` of them running, the rest finished) into a temporary
``TFK8S_HOME``, and times the endpoint: the first request (every job summarized from its events) and the
median / p95 of the next ones, while a writer appends metric events to every running job (as their
supervisors would) between requests. Then, in this process, the same listing through ``JobsManager`` side
by side: reading only what each running job's events gained since the last poll, against re-reading every
running job's whole events (what the list did before), on records grown to ``--grown`` events each.

    .venv/bin/python bench/bench_server.py [--jobs 200] [--running 20] [--requests 50]

Target: median ≤ 50 ms with 20 running jobs (it was < 100 ms with every job finished). ``--browser`` also counts the side panel's requests in a real JupyterLab
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
    parser.add_argument("--running", type=int, default=20, help="jobs among --jobs that are running")
    parser.add_argument("--grown", type=int, default=20_000, help="events per running job (side by side)")
    parser.add_argument("--browser", action="store_true", help="also count the panel's requests in chromium")
    args = parser.parse_args()
    status = list_latency(args)
    status |= incremental_side_by_side(args)
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
            phase = "running" if i < args.running else ("succeeded", "failed", "stopped")[i % 3]
            write_record(
                home, f"bench-{i:03d}", phase=phase, owner="bench", points=args.points, created=now - i * 60
            )
        print(
            f"wrote {args.jobs} job records ({args.running} running; {args.points} metric events each) in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        grow = RunningJobs(home, args.running, args.points * 10)

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
            times = []
            for _ in range(args.requests):
                grow.append(20)  # 20 new points per running job between two polls
                times.append(get()[0])
            _, body = get()
            steps = [j["step"] for j in body["jobs"] if j["phase"] == "running"]
            assert len(steps) == args.running and all(s == grow.step for s in steps), (steps, grow.step)
            times.sort()
            median = statistics.median(times)
            p95 = times[int(0.95 * (len(times) - 1))]
            size = len(json.dumps(body))
            print(
                f"GET /tfk8s/api/jobs with {args.jobs} jobs, {args.running} running ({size / 1024:.0f} KiB of JSON):"
            )
            print(f"  first request (every job summarized from its events): {first_ms:.1f} ms")
            print(
                f"  next {args.requests} (20 new points per running job before each): median {median:.1f} ms, "
                f"p95 {p95:.1f} ms  (target: median <= 50 ms)"
            )
            return 0 if median <= 50 else 1
        finally:
            server.terminate()
            server.wait(timeout=20)


class RunningJobs:
    """Appends metric events to the running jobs' records, as their supervisors would."""

    def __init__(self, home: Path, running: int, step: int):
        from tfk8s_jupyter.records import JobRecord

        self.records = [JobRecord(f"bench-{i:03d}", home) for i in range(running)]
        self.step = step

    def append(self, n: int) -> None:
        lines = []
        for _ in range(n):
            self.step += 1
            event = {"type": "metric", "run": 0, "seq": self.step + 1, "t": time.time(), "epoch": 0}
            event.update(step=self.step, values={"loss": 1.0 / self.step, "accuracy": 1 - 1.0 / self.step})
            lines.append(json.dumps(event, separators=(",", ":")) + "\n")
        text = "".join(lines)
        for record in self.records:
            with open(record.events_path, "a") as f:
                f.write(text)


def incremental_side_by_side(args) -> int:
    """``JobsManager.list_jobs`` in this process: incremental reads against whole re-reads, same records."""
    from tfk8s_jupyter.server.manager import JobsManager

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        now = time.time()
        for i in range(args.jobs):
            phase = "running" if i < args.running else ("succeeded", "failed", "stopped")[i % 3]
            write_record(
                home, f"bench-{i:03d}", phase=phase, owner="bench", points=args.points, created=now - i
            )
        grow = RunningJobs(home, args.running, args.points * 10)
        grow.append(args.grown - args.points)  # long runs: the whole re-read grows with them
        os.environ.update(TFK8S_HOME=str(home), JUPYTERHUB_USER="bench", KUBECONFIG=str(Path(tmp) / "none"))
        results = {}
        for mode in ("incremental", "whole re-read"):
            manager = JobsManager(backends=["local"])
            manager.list_jobs()
            times = []
            for _ in range(max(5, args.requests // 5)):
                grow.append(20)
                if mode != "incremental":
                    manager._live.clear()  # what every poll did before: each running job read whole
                start = time.perf_counter()
                body = manager.list_jobs()
                times.append((time.perf_counter() - start) * 1000)
            manager.close()
            assert all(j["step"] == grow.step for j in body["jobs"] if j["phase"] == "running")
            results[mode] = statistics.median(times)
    ratio = results["whole re-read"] / results["incremental"]
    print(
        f"JobsManager.list_jobs in-process, {args.jobs} jobs, {args.running} running with ~{args.grown:,} events "
        f"each: incremental median {results['incremental']:.1f} ms, whole re-read {results['whole re-read']:.1f} "
        f"ms (x{ratio:.1f})"
    )
    return 0


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
