"""Kubernetes backend figures, against the in-repo test API server (real ``kubernetes`` client, HTTP).

    .venv/bin/python bench/bench_k8s.py

Prints:
- API calls the client makes to submit 1 chief + 64 workers + 8 ps (O(roles), not O(replicas)), for the
  native and TFJob flavors, and how that count scales with the replica count;
- submission time (median and worst of 20) of that job;
- the monitor handling 10,000 pod events: folding them into the job status in-process, and end to end
  through one watch stream over HTTP with the real client;
- the requests an open panel makes, counted from the test API server's request log: a job runs in the test
  kubelet (the TensorFlow-free stand-in runner in its pods) while the cell's panel (``JobPanel`` on the job's
  ``Monitor``, in-process, as ``%%tfk8s_train`` opens it) follows it for ``--seconds``; watches
  (``watch=true``) and followed log streams (``/log?follow=true``) per job and per kind, and every other GET
  (polling) per second. Once with one job, once with three jobs followed at once.

    .venv/bin/python bench/bench_k8s.py [--seconds 20] [--only panel]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "k8s"))

from apiserver import ApiServer  # noqa: E402
from kubelet import STANDIN_RUNNER, TestCluster  # noqa: E402
from request_record import record_requests  # noqa: E402

from tfk8s_jupyter.backends.kubernetes import KubernetesBackend  # noqa: E402
from tfk8s_jupyter.backends.kubernetes import manifests as m  # noqa: E402
from tfk8s_jupyter.backends.kubernetes.follower import JobFollower  # noqa: E402
from tfk8s_jupyter.payload import Payload  # noqa: E402
from tfk8s_jupyter.spec import make_spec  # noqa: E402

EVENTS = 10_000


def client_calls(server: ApiServer, since: int) -> list[dict]:
    return server.request_log[since:]


def synthetic_pods(spec, namespace: str) -> list[dict]:
    pods = []
    for r in spec.replicas:
        for i in range(r.count):
            pods.append(
                {
                    "metadata": {
                        "name": f"{spec.name}-{r.role}-{i}-x{i:04d}",
                        "namespace": namespace,
                        "labels": {"tfk8s.io/job": spec.name, "tfk8s.io/role": r.role},
                        "annotations": {"batch.kubernetes.io/job-completion-index": str(i)},
                    },
                    "spec": {"containers": [{"name": "tensorflow", "image": "tfk8s/trainer:0.1.0"}]},
                }
            )
    return pods


def pod_states(n: int):
    """Cycling container states a busy job shows: running, crash-looping, restarted."""
    for k in range(n):
        restarts = k // 500
        if k % 3 == 1:
            state = {"waiting": {"reason": "CrashLoopBackOff"}}
            last = {
                "terminated": {"exitCode": 1, "reason": "Error", "message": f"step {k}\nValueError: boom"}
            }
        else:
            state, last = {"running": {"startedAt": "2026-11-26T10:00:00Z"}}, {}
        yield {
            "phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "tensorflow",
                    "image": "tfk8s/trainer:0.1.0",
                    "restartCount": restarts,
                    "state": state,
                    "lastState": last,
                }
            ],
        }


def submission_and_events() -> None:
    server = ApiServer().start()
    kubeconfig = server.kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
    backend = KubernetesBackend(config_file=str(kubeconfig))
    backend.cluster()  # connect once (kubeconfig parsing is not submission)

    print("API calls to submit (client side; the Job controller / operator creates the pods):")
    for workers, ps in ((1, 1), (8, 2), (64, 8)):
        for flavor in ("native", "tfjob"):
            server.tfjob_crd = flavor == "tfjob"
            spec = make_spec(
                "x = 1",
                ps=ps,
                workers=workers,
                name=f"c-{flavor}-{workers}",
                backend="kubernetes",
                flavor=flavor,
            )
            since = len(server.request_log)
            backend.submit(spec, Payload(code=spec.code))
            calls = client_calls(server, since)
            kinds = ", ".join(f"{c['verb']} {c['resource']}" for c in calls)
            replicas = 1 + workers + ps
            print(
                f"  {flavor:6s} 1 chief + {workers:2d} workers + {ps} ps ({replicas:2d} replicas): {len(calls)} calls  [{kinds}]"
            )
    print(
        "  (the TFJob operator itself then creates a Service and a Pod per replica: 146 objects for 73 replicas;"
    )
    print("   native: 1 headless Service for all, 73 pods by the Job controller)")

    server.tfjob_crd = False
    times = []
    for k in range(20):
        spec = make_spec("x = 1", ps=8, workers=64, name=f"t-{k}", backend="kubernetes", flavor="native")
        t = time.perf_counter()
        backend.submit(spec, Payload(code=spec.code))
        times.append(time.perf_counter() - t)
    print(
        f"submission of 1 chief + 64 workers + 8 ps (native, 20 runs): median {statistics.median(times) * 1000:.1f} ms, "
        f"worst {max(times) * 1000:.1f} ms (target < 1 s)"
    )

    # --- the monitor and 10,000 pod events --------------------------------------------------------
    spec = make_spec("x = 1", ps=8, workers=64, name="ev", backend="kubernetes", flavor="native")
    backend.submit(spec, Payload(code=spec.code))
    job = backend._job_context("ev")
    namespace = job.namespace
    pods = synthetic_pods(spec, namespace)
    delivered = []
    f = JobFollower(job, backend.finisher, delivered.append, lambda e: None, threading.Event())
    f.log_done.set()
    for p in pods:
        p["status"] = next(pod_states(1))
        f.handle_event({"type": "ADDED", "object": copy.deepcopy(p)})
    events = []
    for k, st in enumerate(pod_states(EVENTS)):
        obj = pods[k % len(pods)]
        events.append(
            {
                "type": "MODIFIED",
                "object": {
                    **obj,
                    "status": st,
                    "metadata": {**obj["metadata"], "resourceVersion": str(10_000 + k)},
                },
            }
        )
    t = time.perf_counter()
    for ev in events:
        f.handle_event(ev)
        f.publish()
    dt = time.perf_counter() - t
    print(
        f"monitor, in-process: {EVENTS} pod events folded into the status of a 73-replica job in {dt * 1000:.0f} ms "
        f"({len(delivered)} status changes delivered; target < 1 s)"
    )

    # end to end: the same events through one watch over HTTP with the real client
    store = server.store
    for p in pods:
        store.create("", "pods", copy.deepcopy(p))
    rv0 = str(store.rv)
    k = 0
    states = pod_states(10 * EVENTS)
    while store.rv - int(rv0) < EVENTS:  # an update that changes nothing makes no event
        name = pods[k % len(pods)]["metadata"]["name"]
        status = next(states)
        store.update("", "pods", namespace, name, lambda o, st=status: o.__setitem__("status", st))
        k += 1
    stop = threading.Event()
    delivered2 = []
    f2 = JobFollower(job, backend.finisher, delivered2.append, lambda e: None, stop)
    f2.log_done.set()
    f2.rv = rv0
    seen = [0]
    handle = f2.handle_event

    finished = [0.0]

    def counting(ev):
        seen[0] += 1
        out = handle(ev)
        if seen[0] >= EVENTS:
            finished[0] = time.perf_counter()
            stop.set()
        return out

    f2.handle_event = counting
    t = time.perf_counter()
    f2.stream_once()
    dt2 = finished[0] - t
    print(
        f"monitor, end to end: {seen[0]} pod events over one watch stream (HTTP, real client, JSON) in "
        f"{dt2 * 1000:.0f} ms ({len(delivered2)} status changes; the test server's own serialization included)"
    )
    server.stop()


# --- an open panel's requests ------------------------------------------------------------------------
LONG_JOB = "EPOCHS = 100000\nSTEPS = 10\nSTEP_SECONDS = 0.1"  # the stand-in runner: a point every 0.1 s


def _job_of(entry: dict, names: list[str]) -> str | None:
    """The job a request is about: its label selector, or the object's name (the job's objects and pods
    are named after it)."""
    selector = entry["query"].get("labelSelector", "").split(",")
    for name in sorted(names, key=len, reverse=True):
        if m.job_selector(name) in selector:
            return name
        obj = entry.get("name") or ""
        if obj == name or obj.startswith(name + "-"):
            return name
    return None


def _kind(entry: dict) -> str:
    q = entry["query"]
    if entry["verb"] == "watch":
        return "watch"
    if entry["subresource"] == "log":
        return "log stream" if q.get("follow") == "true" else "log read"
    return entry["verb"]


def _describe(entry: dict) -> str:
    """A request's kind and target, e.g. ``watch pods``, ``log read chief``, ``list pods``."""
    kind = _kind(entry)
    if entry["subresource"] == "log":
        pod = entry.get("name") or ""
        role = next((r for r in ("chief", "worker", "ps", "evaluator") if f"-{r}-" in pod), "pod")
        return f"{kind} ({role})"
    return f"{kind} {entry['resource']}"


def panel_requests(jobs: int, seconds: float, backend, log: list[dict], earlier: list[str]) -> list[str]:
    """Submit ``jobs`` long jobs, open each one's panel at once (as the cell does), keep them open
    ``seconds`` and count the requests about each job made meanwhile (``log``: the server's requests, from
    :func:`record_requests`); the jobs are stopped after. Requests about the ``earlier`` jobs (stopped before)
    made meanwhile are counted too: there should be none."""
    from tfk8s_jupyter.api import Job
    from tfk8s_jupyter.job_panel import JobPanel

    names = [f"panel{jobs}-{chr(ord('a') + k)}" for k in range(jobs)]
    panels, handles = [], []
    for name in names:
        spec = make_spec(LONG_JOB, ps=1, workers=2, name=name, backend="kubernetes", flavor="native")
        backend.submit(spec, Payload(code=spec.code))
    opened = time.monotonic()
    for name in names:
        job = Job(name, backend)
        handles.append(job)
        panels.append(JobPanel(job))  # the panel follows the job through job.state (its Monitor)
    time.sleep(seconds)
    closed = time.monotonic()
    phases = [job.state.status.phase if job.state.status else "?" for job in handles]
    points = [job.state.n_points for job in handles]
    for panel, job in zip(panels, handles, strict=True):
        panel.close()
        job.stop()
        job.monitor().stop()
        job.monitor().join(10)
    window = [e for e in log if opened <= e["t"] <= closed]
    out = []
    for name, phase, n in zip(names, phases, points, strict=True):
        mine = [e for e in window if _job_of(e, names) == name]
        kinds: dict[str, int] = {}
        for e in mine:
            kinds[_describe(e)] = kinds.get(_describe(e), 0) + 1
        watches = sum(1 for e in mine if _kind(e) == "watch")
        streams = sum(1 for e in mine if _kind(e) == "log stream")
        polls = [e for e in mine if _kind(e) not in ("watch", "log stream")]
        steady = [e for e in polls if e["t"] >= opened + 5]  # past the first relist and log seeding
        out.append(
            f"  {name}: {watches} watch / {streams} log stream in {closed - opened:.0f} s ({phase}, {n} points "
            f"shown); other requests {len(polls)} ({len(polls) / (closed - opened):.2f}/s; "
            f"{len(steady) / max(closed - opened - 5, 1e-9):.2f}/s after the first 5 s)"
        )
        out.append("    " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])))
    other = [e for e in window if _job_of(e, names) is None]
    if other:
        out.append(
            f"  requests about no job: {len(other)} [{', '.join(sorted({_describe(e) for e in other}))}]"
        )
    return out


def panels(seconds: float) -> None:
    server = ApiServer().start()
    kubeconfig = server.kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    backend = KubernetesBackend(config_file=str(kubeconfig))
    backend.cluster()
    cluster = TestCluster(
        server, workdir=Path(tempfile.mkdtemp(prefix="tfk8s-bench-kubelet-")), runner_override=STANDIN_RUNNER
    ).start()
    log = record_requests(server)
    earlier: list[str] = []
    try:
        for jobs in (1, 3):
            print(
                f"an open panel's requests, {jobs} job{'s' if jobs > 1 else ''} (1 chief + 2 workers + 1 ps, "
                f"a point every 0.1 s) followed at once for {seconds:g} s (target per job: 1 watch, 1 log stream):"
            )
            for line in panel_requests(jobs, seconds, backend, log, earlier):
                print(line)
    finally:
        cluster.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each panel stays open")
    parser.add_argument("--only", choices=("panel",), help="only the open panels' requests")
    args = parser.parse_args()
    os.environ["TFK8S_HOME"] = tempfile.mkdtemp(prefix="tfk8s-bench-")
    if args.only != "panel":
        submission_and_events()
    panels(args.seconds)


if __name__ == "__main__":
    main()
