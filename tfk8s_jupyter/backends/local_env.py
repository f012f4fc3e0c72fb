"""The environment and folders of a local job's replica processes: the job-scoped checkpoint dir, the
artifact directory inside the record and the runner contract of each replica process (built here, started
by the supervisor)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from ..records import JobRecord
from ..replica_env import ARTIFACT_CHECKPOINTS, contract_env, merge_no_proxy
from ..spec import JobSpec

ARTIFACTS = "artifacts"  # the job's artifact directory inside its record


def checkpoint_dir(spec: JobSpec, record: JobRecord) -> Path:
    """The job-scoped checkpoint base: ``<checkpoint_dir>/<job>`` when configured, else the artifact
    directory's ``checkpoints/`` inside the record."""
    if spec.checkpoint_dir:
        return Path(spec.checkpoint_dir).expanduser() / spec.name
    return record.dir / ARTIFACTS / ARTIFACT_CHECKPOINTS


def process_env(
    spec: JobSpec,
    replica: str,
    cluster: Mapping[str, list[str]],
    *,
    payload_path: Path,
    checkpoint: Path,
    workdir: Path,
    cuda_visible_devices: str,
    base: Mapping[str, str] | None = None,
    input_dir: str | None = None,
    artifacts: str | os.PathLike | None = None,
    resume_from: str | None = None,
) -> dict[str, str]:
    """The environment of one replica process: this process's environment (less any cluster settings of
    its own) under the runner contract (:func:`~tfk8s_jupyter.replica_env.contract_env`), plus
    ``TFK8S_INPUT_DIR`` (the notebook's folder its work dir presents) when ``input_dir`` is given.

    ``artifacts`` and ``resume_from`` default to what the job's ``local.json`` (beside ``payload_path``
    in the record) says: ``<record>/artifacts`` and the checkpoint directory of the job it resumes."""
    role, index = replica.rsplit("-", 1)
    if artifacts is None:
        record_dir = Path(payload_path).parent
        try:
            local = json.loads((record_dir / "local.json").read_text())
        except (OSError, ValueError):
            local = {}
        artifacts = local.get("artifacts") or record_dir / ARTIFACTS
        if resume_from is None:
            resume_from = local.get("resume_from")
    env = dict(os.environ if base is None else base)
    for key in list(env):
        # Never let the submitting process's own cluster settings leak into a replica.
        if key.startswith("TFK8S_") or key in ("TF_CONFIG", "JOB_COMPLETION_INDEX"):
            del env[key]
    inherited_no_proxy = merge_no_proxy(env.get("no_proxy", ""), env.get("NO_PROXY", ""))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(
        contract_env(
            spec,
            role,
            index=int(index),
            cluster=cluster,
            payload=str(payload_path),
            checkpoint_dir=str(checkpoint),
            workdir=str(workdir),
            # Serving replicas give up on a chief they never saw a little after the supervisor's own
            # deadline, which names the replica that did not come up.
            setup_timeout=float(spec.setup_timeout) + 30.0,
            inherited_no_proxy=inherited_no_proxy,
            artifacts=str(artifacts),
            resume_from=resume_from or "",
            extra={
                "CUDA_VISIBLE_DEVICES": cuda_visible_devices,
                **({"TFK8S_INPUT_DIR": input_dir} if input_dir else {}),
            },
        )
    )
    return env


def pool_envs(spec: JobSpec, slices: dict[str, str], size: int = -1) -> list[dict[str, str]]:
    """The environments of ``spec``'s replicas as this process's supervisors would build them (paths and
    ports aside, which a pool process learns from its assignment): one per replica, or cycled to ``size``."""
    ports = iter(range(1, len(spec.replica_names) + 1))
    cluster = {r.role: [f"127.0.0.1:{next(ports)}" for _ in range(r.count)] for r in spec.replicas}
    base = supervisor_env()
    envs = [
        process_env(
            spec,
            name,
            cluster,
            payload_path=Path("payload.json"),
            checkpoint=Path("checkpoints"),
            workdir=Path("work") / name,
            cuda_visible_devices=slices.get(name, ""),
            base=base,
            artifacts="artifacts",
        )
        for name in spec.replica_names
    ]
    return envs if size < 0 else [envs[i % len(envs)] for i in range(size)]


def supervisor_env() -> dict[str, str]:
    """The environment a job's supervisor runs with (so its replicas' environments start from it): this
    process's, with the package importable."""
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    return env


def job_cwd(local: Mapping, job_dir: Path) -> str:
    """The replicas' working directory as the job's ``local.json`` gives it (the notebook's folder), or the
    record when that folder is gone."""
    cwd = local.get("cwd") or str(job_dir)
    return cwd if os.path.isdir(cwd) else str(job_dir)


def job_replica_env(
    spec: JobSpec,
    job_dir: Path,
    local: Mapping,
    replica: str,
    cluster: Mapping[str, list[str]],
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of ``replica`` of the job in ``job_dir`` (its ``local.json`` as ``local``) on
    ``cluster``: what its supervisor starts it with, also computed by the submitting process when it hands
    the job to kept replicas (``base``: the supervisor's environment)."""
    cwd = job_cwd(local, job_dir)
    return process_env(
        spec,
        replica,
        cluster,
        payload_path=job_dir / "payload.json",
        checkpoint=Path(local["checkpoint_dir"]),
        workdir=job_dir / "work" / replica,
        cuda_visible_devices=(local.get("gpus") or {}).get(replica, ""),
        base=base,
        input_dir=cwd if cwd != str(job_dir) else None,
        artifacts=local.get("artifacts") or job_dir / ARTIFACTS,
        resume_from=local.get("resume_from"),
    )
