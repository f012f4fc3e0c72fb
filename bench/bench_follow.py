"""Memory of following one long job: kernel RSS growth while a Monitor follows a 1,000,000-point job.

A writer process plays the job (a local job record whose ``events.jsonl`` grows by batches of metric events
as a supervisor writes them, then ``succeeded``); this process plays the kernel: a
:class:`~tfk8s_jupyter.monitor.Monitor` on the local backend follows the job live from its start and keeps
its :class:`~tfk8s_jupyter.monitor.JobState` (the panel's model). RSS is sampled every 0.1 s.

Two cases, each in a fresh interpreter:

* ``live``: the monitor follows from the job's start (the panel of a running cell);
* ``attach``: the monitor attaches once the 1,000,000 points are recorded (``tfk8s.attach`` after a kernel
  restart): its history is folded from the record in batches.

    .venv/bin/python bench/bench_follow.py [--points 1000000] [--case live|attach|both]

Target: RSS growth ≤ 50 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "lab"))

BATCH = 5000


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def write_job(home: Path, name: str, points: int, rate: float | None) -> None:
    """The job's side: ``points`` metric events appended in batches (``rate`` points/s, None: at once)."""
    from labjobs import write_record

    from tfk8s_jupyter.backends.base import JobStatus
    from tfk8s_jupyter.records import JobRecord

    record = write_record(home, name, phase="running", owner="bench", points=0, workers=1, ps=0)
    started = time.monotonic()
    with open(record.events_path, "a") as f:
        for first in range(1, points + 1, BATCH):
            lines = []
            for step in range(first, min(first + BATCH, points + 1)):
                event = {
                    "v": 1,
                    "type": "metric",
                    "run": "r1",
                    "seq": step + 1,
                    "t": round(started + step * 1e-3, 3),
                    "epoch": step // 10_000,
                    "step": step,
                    "values": {"loss": 1.0 / step, "accuracy": 1.0 - 1.0 / step},
                }
                lines.append(json.dumps(event, separators=(",", ":")) + "\n")
            f.write("".join(lines))
            f.flush()
            if rate:
                ahead = (first + BATCH) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    status = JobStatus.from_json(record.read_status())
    status.end("succeeded", None, replica_state="succeeded")
    JobRecord(name, home).write_status(status.to_json())


def follow(case: str, points: int, rate: float) -> dict:
    """The kernel's side (this process): follow the job and sample RSS."""
    home = Path(tempfile.mkdtemp(prefix="tfk8s-bench-follow-"))
    os.environ["TFK8S_HOME"] = str(home)
    from tfk8s_jupyter.backends.local import LocalBackend
    from tfk8s_jupyter.monitor import JobState, Monitor

    backend = LocalBackend(root=home)
    name = "long"
    writer_args = [
        sys.executable,
        __file__,
        "--write",
        str(home),
        "--points",
        str(points),
        "--rate",
        str(rate),
    ]
    if case == "attach":
        subprocess.run([*writer_args[:-2], "--rate", "0"], check=True)
    baseline = rss_mb()
    peak = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.1):
            peak[0] = max(peak[0], rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    writer = None
    if case == "live":
        writer = subprocess.Popen(writer_args)
        while not (home / name / "status.json").exists():
            time.sleep(0.05)
    state = JobState(name)
    monitor = Monitor(backend, name, state).start()
    monitor.done.wait()
    if writer is not None:
        writer.wait()
    seconds = time.monotonic() - started
    sampling.set()
    sampler.join()
    end = rss_mb()
    return {
        "case": case,
        "points": state.n_points,
        "phase": state.status.phase if state.status else None,
        "series_points": len(state.step_series["loss"].x),
        "baseline_mb": round(baseline, 1),
        "peak_growth_mb": round(max(peak[0], end) - baseline, 1),
        "end_growth_mb": round(end - baseline, 1),
        "seconds": round(seconds, 1),
        "events_mb": round((home / name / "events.jsonl").stat().st_size / 1e6, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=20_000, help="points/s the job writes (live case)")
    parser.add_argument("--case", choices=("live", "attach", "both"), default="both")
    parser.add_argument("--write", help=argparse.SUPPRESS)  # the job's side, in its own process
    parser.add_argument("--follow", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_job(Path(args.write), "long", args.points, args.rate or None)
        return 0
    if args.follow:
        print(json.dumps(follow(args.case, args.points, args.rate)))
        return 0
    cases = ("live", "attach") if args.case == "both" else (args.case,)
    status = 0
    print(f"following a {args.points:,}-point job (target: RSS growth <= 50 MB)")
    for case in cases:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--follow",
                "--case",
                case,
                "--points",
                str(args.points),
                "--rate",
                str(args.rate),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ok = r["points"] == args.points and r["peak_growth_mb"] <= 50
        status |= 0 if ok else 1
        print(
            f"  {case:6s}: {r['points']:,} points folded ({r['events_mb']} MB of events, {r['seconds']} s), "
            f"phase {r['phase']}, {r['series_points']} points kept per series; kernel RSS "
            f"{r['baseline_mb']} MB at start, growth {r['peak_growth_mb']} MB at peak, {r['end_growth_mb']} MB "
            f"at the end {'(met)' if ok else '(NOT met)'}"
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
