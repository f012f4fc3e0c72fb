"""Launch the replicas of a job by hand, with the runner contract's environment (no backend involved).

Used by the runner tests and by ``bench/bench_engine.py`` as the baseline. One subprocess per replica,
stdout and stderr to files, free ports chosen up front, every process killed by pid on teardown.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tfk8s_jupyter import protocol  # noqa: E402
from tfk8s_jupyter.payload import Payload  # noqa: E402


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make_cluster(strategy: str, workers: int, ps: int = 0) -> dict[str, list[str]]:
    roles = {"worker": workers, "ps": ps}
    if strategy == "parameter_server":
        roles["chief"] = 1
    count = sum(roles.values())
    ports = iter(free_ports(count))
    return {role: [f"127.0.0.1:{next(ports)}" for _ in range(n)] for role, n in roles.items() if n}


@dataclass
class Replica:
    role: str
    index: int
    proc: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    started: float

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"


class HandLaunch:
    """A job's replicas started by hand.

    Args:
        code: the cell source.
        strategy: parameter_server, multi_worker_mirrored or mirrored.
        workers: number of workers; ps: number of parameter servers (a chief is added with ps).
        tmp: a directory for payload, logs, checkpoints and work dirs.
        env: extra environment for every replica.
        command: the replica command (default: the runner); replicas get the same environment either way.
    """

    def __init__(
        self,
        code: str,
        strategy: str,
        workers: int,
        tmp: Path,
        ps: int = 0,
        env: dict[str, str] | None = None,
        metric_interval: float = 0.5,
        payload: Payload | None = None,
        command: list[str] | None = None,
        job: str = "hand",
    ) -> None:
        self.tmp = Path(tmp)
        self.strategy = strategy
        self.cluster = make_cluster(strategy, workers, ps) if strategy != "mirrored" else {"worker": ["-"]}
        self.payload = payload or Payload(code=code)
        self.extra_env = dict(env or {})
        self.metric_interval = metric_interval
        self.command = command or [sys.executable, "-m", "tfk8s_jupyter.runner"]
        self.job = job
        self.replicas: dict[str, Replica] = {}
        self.checkpoint_dir = self.tmp / "checkpoints"
        self.t0: float | None = None

    @property
    def reporting(self) -> str:
        return "chief-0" if "chief" in self.cluster else "worker-0"

    def replica_env(self, role: str, index: int) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("TF_CONFIG", None)
        env.update(
            {
                "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
                "PYTHONUNBUFFERED": "1",
                "TFK8S_JOB": self.job,
                "TFK8S_ROLE": role,
                "TFK8S_INDEX": str(index),
                "TFK8S_STRATEGY": self.strategy,
                "TFK8S_PAYLOAD": str(self.tmp / "payload.json"),
                "TFK8S_CHECKPOINT_DIR": str(self.checkpoint_dir),
                "TFK8S_METRIC_INTERVAL": str(self.metric_interval),
                "TFK8S_WORKDIR": str(self.tmp / "work" / f"{role}-{index}"),
                "TFK8S_SETUP_TIMEOUT": "180",
            }
        )
        if self.strategy != "mirrored":
            env["TFK8S_CLUSTER"] = json.dumps(self.cluster)
        env.update(self.extra_env)
        return env

    def prepare(self) -> HandLaunch:
        """Write the payload and the logs dir; ``start`` does it, ``start_replica`` alone does not."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        (self.tmp / "payload.json").write_text(self.payload.to_json())
        (self.tmp / "logs").mkdir(exist_ok=True)
        return self

    def start(self) -> HandLaunch:
        self.prepare()
        self.t0 = time.time()
        order = [r for r in ("ps", "worker", "chief") if r in self.cluster]
        for role in order:
            for index in range(len(self.cluster[role])):
                self.start_replica(role, index)
        return self

    def start_replica(self, role: str, index: int) -> Replica:
        name = f"{role}-{index}"
        out = self.tmp / "logs" / f"{name}.out"
        err = self.tmp / "logs" / f"{name}.err"
        with open(out, "ab") as fo, open(err, "ab") as fe:
            proc = subprocess.Popen(
                self.command, env=self.replica_env(role, index), stdout=fo, stderr=fe, cwd=str(self.tmp)
            )
        replica = Replica(role, index, proc, out, err, time.time())
        self.replicas[name] = replica
        return replica

    # --- observation
    def stdout(self, name: str) -> str:
        return self.replicas[name].stdout_path.read_text(errors="replace")

    def stderr(self, name: str) -> str:
        return self.replicas[name].stderr_path.read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict]:
        return protocol.parse_lines(self.stdout(name or self.reporting))

    def alive(self, name: str) -> bool:
        return self.replicas[name].proc.poll() is None

    def wait(self, name: str, timeout: float) -> int:
        """The replica's exit status; raises ``TimeoutError`` with its log tail when it runs too long."""
        try:
            return self.replicas[name].proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{name} still running after {timeout} s:\n{self.tail(name)}") from None

    def wait_event(self, predicate, timeout: float, name: str | None = None) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for event in self.events(name):
                if predicate(event):
                    return event
            time.sleep(0.05)
        raise TimeoutError(f"no matching event within {timeout} s:\n{self.tail(name or self.reporting)}")

    def tail(self, name: str, chars: int = 3000) -> str:
        return f"--- {name} stdout\n{self.stdout(name)[-chars:]}\n--- {name} stderr\n{self.stderr(name)[-chars:]}"

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.replicas[name].proc
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def teardown(self, grace: float = 5.0) -> None:
        """SIGTERM every replica still alive, SIGKILL after ``grace`` seconds; only our own pids."""
        for replica in self.replicas.values():
            if replica.proc.poll() is None:
                try:
                    os.kill(replica.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + grace
        for replica in self.replicas.values():
            try:
                replica.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.kill(replica.proc.pid, signal.SIGKILL)
                replica.proc.wait(timeout=10)

    def __enter__(self) -> HandLaunch:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.teardown()
