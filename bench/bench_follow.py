"""Memory of following one long job: kernel RSS growth of the whole follow path (backend, Monitor, JobState
and the ipywidgets panel) while a fresh interpreter follows a 1,000,000-point job.

A writer process plays the job (a local job record whose ``events.jsonl`` grows by batches of metric events
as a supervisor writes them, then ``succeeded``); this process plays the kernel: an in-process IPython shell
with the extension loaded shows the job's widget panel with ``%tfk8s_attach`` (the same objects
``%%tfk8s_train`` creates: the backend, the job's :class:`~tfk8s_jupyter.monitor.Monitor`, its
:class:`~tfk8s_jupyter.monitor.JobState` and the :class:`~tfk8s_jupyter.job_panel.JobPanel` rendering it).
RSS is sampled every 0.1 s from just before the panel opens (after the modules the first panel imports,
reported apart: a one-off per kernel) until the panel's final render.

Cases, each in a fresh interpreter:

* ``live``: the panel follows from the job's start (the panel of a running cell);
* ``attach``: the panel opens once the 1,000,000 points are recorded (``%tfk8s_attach`` after a kernel
  restart): its history is folded from the record in batches;
* ``k8s-live``: the Kubernetes backend against the test API server, whose test kubelet (in its own process,
  so the pods' logs are not counted in the kernel's memory) runs the TensorFlow-free stand-in runner printing
  ``--k8s-points`` metric points as fast as it can; the panel follows from the submission (one pod watch,
  one log stream) through the end (logs captured, events folded into the record).

``--face monitor`` measures a ``Monitor`` filling a ``JobState`` alone (no shell, no widgets), for comparison.

    .venv/bin/python bench/bench_follow.py [--points 1000000] [--case live|attach|both|k8s-live]
                                           [--face panel|monitor|both] [--k8s-points 200000]

Target: RSS growth ≤ 50 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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


def new_shell():
    """An in-process IPython shell with the extension loaded and widget panels, as in a notebook kernel."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    cfg = Config()
    cfg.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=cfg)
    shell.run_line_magic("load_ext", "tfk8s_jupyter")
    shell.run_line_magic("config", "TFK8s.frontend = 'widgets'")
    return shell


def serve_cluster(workdir: Path) -> None:
    """The cluster's side, in its own process (its pods' logs are kept in its memory, not the kernel's): the
    test API server and the test kubelet running the TensorFlow-free stand-in runner; writes
    ``workdir/kubeconfig`` once up and serves until its stdin closes."""
    sys.path.insert(0, str(REPO / "tests" / "k8s"))
    from apiserver import ApiServer
    from kubelet import STANDIN_RUNNER, TestCluster

    server = ApiServer().start()
    cluster = TestCluster(server, workdir=workdir / "kubelet", runner_override=STANDIN_RUNNER).start()
    server.kubeconfig(workdir / "kubeconfig.tmp").rename(workdir / "kubeconfig")
    sys.stdin.read()
    cluster.stop()
    server.stop()


def follow(case: str, points: int, rate: float, face: str) -> dict:
    """The kernel's side (this process): follow the job and sample RSS.

    ``face`` ``panel``: the objects ``%%tfk8s_train`` / ``%tfk8s_attach`` create in an in-process IPython
    shell (the backend, the job's ``Monitor``, its ``JobState`` and the ipywidgets ``JobPanel`` rendering
    it); ``monitor``: a ``Monitor`` filling a ``JobState``, no shell, no widgets.
    """
    home = Path(tempfile.mkdtemp(prefix="tfk8s-bench-follow-"))
    os.environ["TFK8S_HOME"] = str(home)
    name = "long"
    kubernetes = case.startswith("k8s")
    shell = new_shell() if face == "panel" else None
    from tfk8s_jupyter.monitor import JobState, Monitor

    imported = rss_mb()
    if shell is not None:  # imported by the first panel (bqplot brings numpy and pandas): once per kernel
        import bqplot  # noqa: F401
        import ipywidgets  # noqa: F401
        import numpy  # noqa: F401

        import tfk8s_jupyter.api
        import tfk8s_jupyter.job_panel
        import tfk8s_jupyter.results  # noqa: F401
    imports = rss_mb() - imported

    cluster = None
    if kubernetes:
        from tfk8s_jupyter.backends.kubernetes import KubernetesBackend
        from tfk8s_jupyter.payload import Payload
        from tfk8s_jupyter.spec import make_spec

        cluster = subprocess.Popen([sys.executable, __file__, "--serve", str(home)], stdin=subprocess.PIPE)
        while not (home / "kubeconfig").exists():
            if cluster.poll() is not None:
                raise SystemExit("the test cluster did not start")
            time.sleep(0.05)
        os.environ["KUBECONFIG"] = str(home / "kubeconfig")
        backend = KubernetesBackend(config_file=str(home / "kubeconfig"))
        backend.cluster()  # connect (kubeconfig parsing and the client's import are not following)
        step_seconds = 0 if not rate else 1 / rate
        code = f"EPOCHS = {max(points // 10_000, 1)}\nSTEPS = {min(points, 10_000)}\nSTEP_SECONDS = {step_seconds}"
        spec = make_spec(code, workers=1, name=name, backend="kubernetes", flavor="native")
    else:
        from tfk8s_jupyter.backends.local import LocalBackend

        backend = LocalBackend(root=home)
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

    seen: list = [None]  # the followed JobState, once there is one
    peak_at = [0.0, 0, None]  # seconds, points folded and phase when the peak was sampled

    def sample() -> None:
        while not sampling.wait(0.1):
            rss = rss_mb()
            if rss > peak[0]:
                peak[0] = rss
                st = seen[0]
                peak_at[:] = [
                    time.monotonic() - started,
                    st.n_points if st else 0,
                    st.status.phase if st is not None and st.status else None,
                ]

    started = time.monotonic()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    writer = None
    if case == "live":
        writer = subprocess.Popen(writer_args)
        while not (home / name / "status.json").exists():
            time.sleep(0.05)
    if kubernetes:
        backend.submit(spec, Payload(code=spec.code))
    if shell is not None:
        magics = shell.magics_manager.registry["TFK8sMagics"]
        shell.run_line_magic("tfk8s_attach", f"{name} --backend {backend.name}")
        job = shell.user_ns["_tfk8s_job"]
        (panel,) = magics.panels[name]
        state = seen[0] = panel.state
        job.monitor().done.wait()
        deadline = time.monotonic() + 30
        while not panel.done and time.monotonic() < deadline:  # its final render
            time.sleep(0.1)
    else:
        state = seen[0] = JobState(name)
        Monitor(backend, name, state).start().done.wait()
    if writer is not None:
        writer.wait()
    seconds = time.monotonic() - started
    sampling.set()
    sampler.join()
    end = rss_mb()
    if cluster is not None:
        cluster.communicate()  # closes its stdin: it stops its pods and the server
    return {
        "case": case,
        "face": face,
        "points": state.n_points,
        "phase": state.status.phase if state.status else None,
        "series_points": len(state.step_series["loss"].x),
        "baseline_mb": round(baseline, 1),
        "panel_imports_mb": round(imports, 1),
        "peak_growth_mb": round(max(peak[0], end) - baseline, 1),
        "end_growth_mb": round(end - baseline, 1),
        "peak_at": [round(peak_at[0], 1), peak_at[1], peak_at[2]],
        "seconds": round(seconds, 1),
        "events_mb": round((home / name / "events.jsonl").stat().st_size / 1e6, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=20_000, help="points/s the job writes (live case)")
    parser.add_argument(
        "--case",
        choices=("live", "attach", "both", "k8s-live"),
        default="both",
        help="live, attach: local backend (both: the two); k8s-live: only the Kubernetes case",
    )
    parser.add_argument(
        "--face",
        choices=("panel", "monitor", "both"),
        default="panel",
        help="panel: the shell's widget panel as %%tfk8s_attach shows it; monitor: Monitor + JobState only",
    )
    parser.add_argument(
        "--k8s-points", type=int, default=200_000, help="points of the Kubernetes live case (0: skip it)"
    )
    parser.add_argument("--write", help=argparse.SUPPRESS)  # the job's side, in its own process
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # the test cluster, in its own process
    parser.add_argument("--follow", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_job(Path(args.write), "long", args.points, args.rate or None)
        return 0
    if args.serve:
        serve_cluster(Path(args.serve))
        return 0
    if args.follow:
        with contextlib.redirect_stdout(io.StringIO()):  # the panel's text face, printed without a front end
            result = follow(args.case, args.points, args.rate, args.face)
        print(json.dumps(result))
        return 0
    cases = {"both": ("live", "attach"), "k8s-live": ()}.get(args.case, (args.case,))
    faces = ("panel", "monitor") if args.face == "both" else (args.face,)
    runs = [(case, face, args.points, args.rate) for face in faces for case in cases]
    if args.k8s_points:
        runs += [("k8s-live", face, args.k8s_points, 0) for face in faces]
    status = 0
    print(f"following a long job, kernel RSS growth (target <= 50 MB); load average {os.getloadavg()[0]:.2f}")
    for case, face, points, rate in runs:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--follow",
                "--case",
                case,
                "--face",
                face,
                "--points",
                str(points),
                "--rate",
                str(rate),
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            print(f"  {case:8s} {face:7s}: failed\n{out.stderr[-3000:]}")
            status = 1
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ok = r["points"] >= points and r["phase"] == "succeeded" and r["peak_growth_mb"] <= 50
        status |= 0 if ok else 1
        imports = f" (the panel's imports before it: {r['panel_imports_mb']} MB)" if face == "panel" else ""
        where = "Kubernetes (test server), stand-in runner" if case.startswith("k8s") else "local backend"
        pace = "as fast as it prints" if case.startswith("k8s") else (f"{rate:g}/s" if case == "live" else "")
        print(
            f"  {case:8s} {face:7s} ({where}{', ' + pace if pace else ''}): {r['points']:,} points folded "
            f"({r['events_mb']} MB of events, {r['seconds']} s), phase {r['phase']}, {r['series_points']} points "
            f"kept per series; kernel RSS {r['baseline_mb']} MB at start{imports}, growth {r['peak_growth_mb']} MB at "
            f"peak ({r['peak_at'][0]} s in, {r['peak_at'][1]:,} points folded, phase {r['peak_at'][2]}), "
            f"{r['end_growth_mb']} MB at the end {'(met)' if ok else '(NOT met)'}"
        )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return status


if __name__ == "__main__":
    sys.exit(main())
