"""Job records written the way the local backend writes them, for the REST API, bench and browser tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tfk8s_jupyter.backends.base import JobStatus, ReplicaStatus
from tfk8s_jupyter.records import JobRecord, write_json_atomic
from tfk8s_jupyter.spec import make_spec

CODE = "model.fit(x, y, epochs=3)\n"


def write_record(
    root: Path,
    name: str,
    *,
    phase: str = "succeeded",
    owner: str = "alice",
    points: int = 30,
    created: float | None = None,
    workers: int = 2,
    ps: int = 1,
) -> JobRecord:
    """A job record as the local backend leaves it: spec, status, metric events, one log per replica."""
    spec = make_spec(CODE, name=name, ps=ps, workers=workers, owner=owner)
    record = JobRecord(name, root)
    record.write_spec(spec.to_json())
    created = created if created is not None else time.time() - 120
    done = phase in ("succeeded", "failed", "stopped")
    replica_state = {"succeeded": "succeeded", "failed": "failed", "stopped": "stopped"}.get(phase, "running")
    replicas = [
        ReplicaStatus(role=r.role, index=i, state=replica_state, started=created + 1)
        for r in spec.replicas
        for i in range(r.count)
    ]
    status = JobStatus(
        name=name,
        backend="local",
        strategy=spec.strategy,
        phase=phase,
        replicas=replicas,
        created=created,
        finished=created + 60 if done else None,
        owner=owner,
        message="the training cell raised ValueError: boom" if phase == "failed" else None,
    )
    record.write_status(status.to_json())
    events = [{"type": "start", "run": 0, "seq": 0, "t": created + 2}]
    for i in range(points):
        events.append(
            {
                "type": "metric",
                "run": 0,
                "seq": i + 1,
                "t": created + 3 + i,
                "epoch": i // 10,
                "step": i * 10,
                "values": {"loss": 2.0 / (1 + i), "accuracy": i / max(points, 1)},
            }
        )
    record.append_events(events)
    for r in replicas:
        path = record.log_path(r.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{r.name} line {j}\n" for j in range(50)))
    return record


def attach_sleeping_supervisor(record: JobRecord) -> subprocess.Popen:
    """Make a 'running' record owned by a real process (a sleep) so stop has something to end."""
    proc = subprocess.Popen(["sleep", "300"])
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    write_json_atomic(
        record.dir / "supervisor.json", {"pid": proc.pid, "start_ticks": ticks, "processes": []}
    )
    return proc


def start_test_cluster(kubeconfig: Path):
    """The in-repo test API server (namespaces default and team, the Role ``tfk8s-jobs`` enforced, list
    nodes granted, one node with 4 GPUs) and a kubeconfig at ``kubeconfig`` pointing at it (current context
    ``test``, namespace default; context ``team``, namespace team). Stop it with ``server.stop()``."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))
    from apiserver import ApiServer

    from tfk8s_jupyter.backends.kubernetes.preflight import ROLE_RULES

    server = ApiServer(namespaces=("default", "team"), validate=True).start()
    server.enforce_rules([dict(r) for r in ROLE_RULES])
    server.grant_cluster_rules([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}])
    server.add_node("gpu-node", {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"})
    server.kubeconfig(kubeconfig, contexts={"team": "team"})
    return server
