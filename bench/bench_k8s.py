"""Kubernetes backend figures, against the in-repo test API server (real ``kubernetes`` client, HTTP).

    .venv/bin/python bench/bench_k8s.py

Prints:
- API calls the client makes to submit 1 chief + 64 workers + 8 ps (O(roles), not O(replicas)), for the
  native and TFJob flavors, and how that count scales with the replica count;
- submission time (median and worst of 20) of that job;
- the monitor handling 10,000 pod events: folding them into the job status in-process, and end to end
  through one watch stream over HTTP with the real client.
"""

from __future__ import annotations

import copy
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

from tfk8s_jupyter.backends.kubernetes import KubernetesBackend  # noqa: E402
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


def main() -> None:
    import os

    os.environ["TFK8S_HOME"] = tempfile.mkdtemp(prefix="tfk8s-bench-")
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


if __name__ == "__main__":
    main()
