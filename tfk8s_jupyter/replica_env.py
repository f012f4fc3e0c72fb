"""The runner contract: the environment every replica of a job gets, built and read in one place.

Both backends build a replica's environment with :func:`contract_env`, and the runner reads it back with
:func:`read_env`. Stdlib only: this file travels with the runner in the job's ConfigMap.

Variables:
    TFK8S_JOB, TFK8S_ROLE (chief|worker|ps), TFK8S_INDEX (fallback JOB_COMPLETION_INDEX),
    TFK8S_CLUSTER (JSON ``{"chief": [...], "worker": [...], "ps": [...]}``; TF_CONFIG is built from it
    unless TF_CONFIG is already set), TFK8S_STRATEGY (parameter_server|multi_worker_mirrored|mirrored),
    TFK8S_PAYLOAD (path of payload.json), TFK8S_CHECKPOINT_DIR (job-scoped base dir),
    TFK8S_METRIC_INTERVAL (seconds), optional TFK8S_WORKDIR, TFK8S_SETUP_TIMEOUT (seconds a serving
    replica waits to see the chief, default 600), TFK8S_CHECKPOINT_INTERVAL (seconds between
    checkpoints after the first epoch, the chief's with parameter servers, every worker's, agreed, with
    all-reduce; default 10; 0 = every epoch) and TFK8S_KERAS
    (``legacy`` runs all-reduce jobs on tf_keras); ``no_proxy``/``NO_PROXY``.

    Results: TFK8S_ARTIFACTS (the job's artifact directory, a path or a ``gs://``/``s3://`` URI, the same
    for every replica; layout below), TFK8S_SAVE_MODEL (``1``/``0``: save the trained model after a
    successful fit), optional TFK8S_RESUME_FROM (an earlier job's checkpoint directory, or its artifact
    directory whose ``checkpoints/`` is used: restored before training when this job has no checkpoint of
    its own yet).

    Protocol: optional TFK8S_PROTOCOL_KEY, the per-run secret that authenticates protocol lines (the
    runner takes it out of the environment before the cell runs).

    Checkpoint on demand (no variable): a file ``checkpoint.request`` (:data:`CHECKPOINT_REQUEST`) in
    TFK8S_CHECKPOINT_DIR, when that dir is a local path, asks the job's backup for a checkpoint at the next
    epoch end, whatever TFK8S_CHECKPOINT_INTERVAL says: a request is honoured by the first save that
    starts after the file's modification time (so rewriting the file asks again). The replicas that save
    check it with one ``stat`` at an epoch end, at most every :data:`REQUEST_CHECK` seconds; all-reduce
    workers fold it into the vote they already agree on each epoch's save with, so every worker saves the
    same epoch. The local backend's supervisor writes it when a resize waits for a checkpoint and removes
    it before the new shape starts.

The artifact directory's layout (``ARTIFACT_*``), read back by the kernel side: ``checkpoints/`` (the
BackupAndRestore checkpoints, unless a checkpoint dir is configured), ``model/`` (the trained model),
``tensorboard/`` (TensorBoard logs of ``fit`` and of the cell's own summaries) and ``artifacts.json`` (what
the reporting replica wrote: the model's file, Keras flavour, size and save time, TensorBoard folders).

Precedence: the user's ``env`` comes first and the contract is laid over it, so a user variable can never
change which replica a process is or where it finds its peers; a user ``no_proxy`` is merged into the
contract's, never replacing localhost or the cluster domains.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

STRATEGIES = ("parameter_server", "multi_worker_mirrored", "mirrored")
ROLES = ("chief", "worker", "ps")
# Hosts gRPC must reach directly: through a proxy it hangs at strategy creation.
DIRECT_HOSTS = ("localhost", "127.0.0.1", "::1", ".svc", ".cluster.local")
NO_PROXY_KEYS = ("no_proxy", "NO_PROXY")
ARTIFACT_CHECKPOINTS = "checkpoints"
ARTIFACT_MODEL = "model"
ARTIFACT_TENSORBOARD = "tensorboard"
ARTIFACT_INDEX = "artifacts.json"
PROTOCOL_KEY_ENV = "TFK8S_PROTOCOL_KEY"
CHECKPOINT_REQUEST = "checkpoint.request"  # in TFK8S_CHECKPOINT_DIR: a checkpoint at the next epoch end
REQUEST_CHECK = 0.2  # seconds between two looks at the request file (one stat each)


class SetupError(RuntimeError):
    """The replica cannot start: bad environment or an image without what the job needs."""


def merge_no_proxy(*parts: str | Iterable[str]) -> str:
    """One ``no_proxy`` value: every host of every part (comma-separated text or a list), first seen first."""
    hosts: list[str] = []
    for part in parts:
        items = part.split(",") if isinstance(part, str) else part
        hosts.extend(h.strip() for h in items if h and h.strip())
    return ",".join(dict.fromkeys(hosts))


def contract_env(
    spec,
    role: str,
    *,
    payload: str,
    checkpoint_dir: str,
    workdir: str,
    setup_timeout: float,
    index: int | None = None,
    cluster: Mapping[str, list[str]] | None = None,
    direct_hosts: Iterable[str] = (),
    inherited_no_proxy: str = "",
    extra: Mapping[str, str] | None = None,
    artifacts: str = "",
    resume_from: str = "",
    protocol_key: str = "",
) -> dict[str, str]:
    """The environment of one replica: the user's ``spec.env`` with the contract laid over it.

    Args:
        spec: the job's ``JobSpec`` (``name``, ``strategy``, ``metric_interval``, ``env`` are read).
        role: ``chief``, ``worker`` or ``ps``.
        payload, checkpoint_dir, workdir: paths as the replica sees them.
        setup_timeout: seconds a serving replica waits to see the chief.
        index: the replica's index, when the backend knows it (Kubernetes Indexed Jobs give
            ``JOB_COMPLETION_INDEX``, the TFJob operator TF_CONFIG).
        cluster: every replica's ``host:port`` by role, when the backend provides it (TFJob: TF_CONFIG).
        direct_hosts: more hosts for ``no_proxy`` (the job's Service).
        inherited_no_proxy: the ``no_proxy`` the replica would inherit (local processes).
        extra: backend-specific contract variables (``CUDA_VISIBLE_DEVICES``, ``HOME``).
        artifacts: the job's artifact directory as the replica sees it (path or URI).
        resume_from: an earlier job's checkpoint directory to restore from, as the replica sees it.
        protocol_key: the per-run secret that authenticates protocol lines (default: the spec's).
    """
    user = {str(k): str(v) for k, v in spec.env.items()}
    no_proxy = merge_no_proxy(
        DIRECT_HOSTS, direct_hosts, inherited_no_proxy, user.get("no_proxy", ""), user.get("NO_PROXY", "")
    )
    env = {k: v for k, v in user.items() if k not in NO_PROXY_KEYS}
    env.update(
        {
            "TFK8S_JOB": spec.name,
            "TFK8S_ROLE": role,
            "TFK8S_STRATEGY": spec.strategy,
            "TFK8S_PAYLOAD": str(payload),
            "TFK8S_CHECKPOINT_DIR": str(checkpoint_dir),
            "TFK8S_METRIC_INTERVAL": f"{float(spec.metric_interval):g}",
            "TFK8S_SETUP_TIMEOUT": f"{float(setup_timeout):g}",
            "TFK8S_WORKDIR": str(workdir),
            "TFK8S_ARTIFACTS": str(artifacts),
            "TFK8S_SAVE_MODEL": "1" if getattr(spec, "save_model", True) else "0",
            "PYTHONUNBUFFERED": "1",
            "no_proxy": no_proxy,
            "NO_PROXY": no_proxy,
        }
    )
    if resume_from:
        env["TFK8S_RESUME_FROM"] = str(resume_from)
    protocol_key = protocol_key or getattr(spec, "protocol_key", "")
    if protocol_key:
        env[PROTOCOL_KEY_ENV] = str(protocol_key)
    if index is not None:
        env["TFK8S_INDEX"] = str(index)
    if cluster is not None:
        env["TFK8S_CLUSTER"] = json.dumps(dict(cluster), separators=(",", ":"))
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    return env


@dataclass(frozen=True)
class ReplicaEnv:
    """What one replica learns from its environment."""

    job: str
    role: str
    index: int
    cluster: dict[str, list[str]]
    strategy: str
    payload_path: str | None
    checkpoint_dir: str | None
    metric_interval: float = 1.0
    workdir: str | None = None
    setup_timeout: float = 600.0
    checkpoint_interval: float = 10.0
    legacy_keras: bool = False
    tf_config: dict | None = field(default=None)
    artifacts_dir: str | None = None
    resume_from: str | None = None
    save_model: bool = True
    protocol_key: str = field(default="", repr=False)

    @property
    def checkpoint_request(self) -> str | None:
        """The path of the checkpoint-on-demand file (see the module doc), or None: no local checkpoint dir."""
        if not self.checkpoint_dir or "://" in self.checkpoint_dir:
            return None
        return os.path.join(self.checkpoint_dir, CHECKPOINT_REQUEST)

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    @property
    def serves_only(self) -> bool:
        """ps and non-chief workers of a parameter-server job serve and never run the cell."""
        return self.strategy == "parameter_server" and self.role != "chief"

    @property
    def reporting(self) -> bool:
        return is_reporting(self.role, self.index, self.strategy, self.cluster)

    @property
    def uses_tf_keras(self) -> bool:
        return self.strategy == "parameter_server" or self.legacy_keras


def is_reporting(role: str, index: int, strategy: str, cluster: dict[str, list[str]]) -> bool:
    """The replica that prints protocol lines: chief-0 with parameter servers (or when a chief exists),
    worker-0 otherwise."""
    if strategy == "parameter_server" or cluster.get("chief"):
        return role == "chief" and index == 0
    return role == "worker" and index == 0


def build_tf_config(cluster: dict[str, list[str]], role: str, index: int) -> dict:
    """TF_CONFIG for one replica of ``cluster``.

    Raises:
        SetupError: the role is not in the cluster or the index is out of range.
    """
    clean = {r: list(addrs) for r, addrs in cluster.items() if addrs}
    if role not in clean:
        raise SetupError(
            f"TFK8S_ROLE is {role!r}, but TFK8S_CLUSTER has no {role!r} entry; "
            f"list its addresses in TFK8S_CLUSTER (roles present: {sorted(clean)})."
        )
    if not 0 <= index < len(clean[role]):
        raise SetupError(
            f"TFK8S_INDEX is {index}, but TFK8S_CLUSTER lists {len(clean[role])} {role} address(es); "
            f"use an index from 0 to {len(clean[role]) - 1}."
        )
    return {"cluster": clean, "task": {"type": role, "index": index}}


def add_no_proxy(environ: dict[str, str], hosts: list[str]) -> None:
    """Extend ``no_proxy``/``NO_PROXY`` in place so gRPC never sends cluster traffic to a proxy."""
    for key in ("no_proxy", "NO_PROXY"):
        environ[key] = merge_no_proxy(environ.get(key, ""), DIRECT_HOSTS, hosts)


def read_env(environ: dict[str, str] | None = None) -> ReplicaEnv:
    """Parse the runner contract from ``environ`` (default ``os.environ``).

    Raises:
        SetupError: a variable is missing or malformed; the message names it and the fix.
    """
    env = os.environ if environ is None else environ
    role = env.get("TFK8S_ROLE", "").strip()
    if role not in ROLES:
        raise SetupError(f"TFK8S_ROLE is {role!r}; set it to one of chief, worker, ps.")
    raw_index = env.get("TFK8S_INDEX", env.get("JOB_COMPLETION_INDEX", "0")).strip() or "0"
    try:
        index = int(raw_index)
    except ValueError:
        raise SetupError(
            f"TFK8S_INDEX is {raw_index!r}; set it to the replica's number (0, 1, ...)."
        ) from None
    strategy = env.get("TFK8S_STRATEGY", "").strip()
    if strategy not in STRATEGIES:
        raise SetupError(f"TFK8S_STRATEGY is {strategy!r}; set it to one of {', '.join(STRATEGIES)}.")
    cluster_text = env.get("TFK8S_CLUSTER", "").strip()
    tf_config = None
    if env.get("TF_CONFIG", "").strip():
        try:
            tf_config = json.loads(env["TF_CONFIG"])
            cluster = tf_config["cluster"]
        except (ValueError, KeyError, TypeError):
            raise SetupError("TF_CONFIG is not JSON with a 'cluster' entry; unset it or fix it.") from None
    elif cluster_text:
        try:
            cluster = json.loads(cluster_text)
        except ValueError:
            raise SetupError(
                'TFK8S_CLUSTER is not JSON; set it like {"worker": ["host:port", ...], "ps": [...]}.'
            ) from None
    elif strategy == "mirrored":
        cluster = {"worker": ["localhost:0"]}
    else:
        raise SetupError(f"TFK8S_CLUSTER is not set; a {strategy} job needs every replica's host:port in it.")
    if not isinstance(cluster, dict) or not all(
        isinstance(v, list) and all(isinstance(a, str) for a in v) for v in cluster.values()
    ):
        raise SetupError('TFK8S_CLUSTER must map roles to lists of "host:port" strings.')
    if strategy == "parameter_server" and not (cluster.get("chief") and cluster.get("ps")):
        raise SetupError("a parameter_server job needs a chief and at least one ps in TFK8S_CLUSTER.")
    if tf_config is None and strategy != "mirrored":
        tf_config = build_tf_config(cluster, role, index)

    def _float(key: str, default: float) -> float:
        text = env.get(key, "").strip()
        if not text:
            return default
        try:
            return float(text)
        except ValueError:
            raise SetupError(f"{key} is {text!r}; set it to a number of seconds.") from None

    return ReplicaEnv(
        job=env.get("TFK8S_JOB", "").strip() or "tfk8s-job",
        role=role,
        index=index,
        cluster={r: list(a) for r, a in cluster.items() if a},
        strategy=strategy,
        payload_path=env.get("TFK8S_PAYLOAD") or None,
        checkpoint_dir=env.get("TFK8S_CHECKPOINT_DIR") or None,
        metric_interval=max(0.0, _float("TFK8S_METRIC_INTERVAL", 1.0)),
        workdir=env.get("TFK8S_WORKDIR") or None,
        setup_timeout=_float("TFK8S_SETUP_TIMEOUT", 600.0),
        checkpoint_interval=max(0.0, _float("TFK8S_CHECKPOINT_INTERVAL", 10.0)),
        legacy_keras=env.get("TFK8S_KERAS", "").strip().lower() in ("legacy", "tf_keras", "tf-keras"),
        tf_config=tf_config,
        artifacts_dir=env.get("TFK8S_ARTIFACTS") or None,
        resume_from=env.get("TFK8S_RESUME_FROM") or None,
        save_model=env.get("TFK8S_SAVE_MODEL", "1").strip().lower() not in ("0", "false", "no", "off"),
        protocol_key=env.get(PROTOCOL_KEY_ENV, ""),
    )


# -- the processes a cell starts ----------------------------------------------------------------
# A process the cell starts (subprocess.Popen, os.system("... &"), a multiprocessing Process) would outlive
# the replica, and the job: the runner ends what its run left (runner.main), and the local supervisor ends
# the processes below a replica it stops. Linux only (``/proc``); elsewhere these find nothing.
PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> None:
    """Make this process the one orphaned descendants are given to (Linux ``PR_SET_CHILD_SUBREAPER``), so
    a daemon the cell starts (``os.system("cmd &")``, a double fork) stays below it, where
    :func:`descendants` finds it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _stat(pid: int | str) -> list[str]:
    """``/proc/<pid>/stat`` after the command name (state, ppid, ...), ``[]`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return []
    return stat[stat.rindex(")") + 2 :].split()


def descendants(*pids: int) -> list[tuple[int, int]]:
    """``(pid, start ticks)`` of every live (non-zombie) process below ``pids``."""
    children: dict[int, list[tuple[int, int]]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        fields = _stat(entry)
        if len(fields) > 19 and fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append((int(entry), int(fields[19])))
    out, todo = [], list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def _same(pid: int, ticks: int) -> bool:
    fields = _stat(pid)
    return len(fields) > 19 and fields[0] not in ("Z", "X") and int(fields[19]) == ticks


def end_processes(processes: Iterable[tuple[int, int]], grace: float = 1.0) -> list[str]:
    """SIGTERM each ``(pid, start ticks)`` still that process, SIGKILL what is left after ``grace`` seconds,
    reap those that are this process's children; ``"pid N: command"`` of each process ended."""
    import signal

    ended = []
    live = [(pid, ticks) for pid, ticks in processes if _same(pid, ticks)]
    for pid, _ in live:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            command = "?"
        ended.append(f"pid {pid}: {command[:60]}")
        for sig in (signal.SIGTERM, signal.SIGCONT):  # a stopped process handles SIGTERM once continued
            try:
                os.kill(pid, sig)
            except OSError:
                pass
    _wait_gone(live, grace)
    for pid, ticks in live:
        if _same(pid, ticks):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    _wait_gone(live, 1.0)
    return ended


def _wait_gone(processes: list[tuple[int, int]], seconds: float) -> None:
    """Up to ``seconds`` until none of ``processes`` runs, reaping those that are this process's children."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        _reap(processes)
        if not any(_same(pid, ticks) for pid, ticks in processes) or time.monotonic() > deadline:
            return
        time.sleep(0.02)


def _reap(processes: list[tuple[int, int]]) -> None:
    for pid, _ in processes:
        try:
            os.waitpid(pid, os.WNOHANG)
        except OSError:  # not this process's child
            pass
