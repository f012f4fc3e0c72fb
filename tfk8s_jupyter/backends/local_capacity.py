"""Can this machine run a local job at all? Refuse, before anything starts, a job whose replicas would
not fit in the memory available or would swamp the cores, with the numbers and the way out (Kubernetes);
and the GPUs it offers (:func:`detect_gpus`), sliced per replica (:func:`gpu_slices`).

The local backend calls :func:`check_local_capacity` when a job is submitted; it reads ``/proc/meminfo``
and the CPUs this process may run on, nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..spec import JobSpec, SpecError, parse_quantity

# The memory one replica process takes at the least: the peak RSS (VmHWM in /proc/<pid>/status, sampled
# every 0.3 s) of every replica of real local jobs, measured on this machine kind (2 cores, 24 GiB, Python
# 3.11, TensorFlow 2.21, tf_keras) with a tiny tf.keras MLP trained by fit: a 2-worker all-reduce job 667 and
# 668 MiB per worker, a ps + chief + worker job 627, 637 and 639 MiB. Importing TensorFlow is most of it, so
# a real model needs more; a job that does not fit even this floor cannot run.
REPLICA_MEMORY = 660 * 2**20
# More TensorFlow processes than this per core only time-slice: start-up alone (~3 s of CPU per import)
# then takes minutes and gRPC deadlines start to fail; a job that size belongs on a cluster.
MAX_REPLICAS_PER_CORE = 8
MEMINFO = Path("/proc/meminfo")


def available_memory(meminfo: Path = MEMINFO) -> int | None:
    """Bytes of memory available for new processes (``MemAvailable``), or ``None`` when unknown."""
    return _meminfo("MemAvailable", meminfo)


def total_memory(meminfo: Path = MEMINFO) -> int | None:
    """Bytes of memory this machine has in all (``MemTotal``), or ``None`` when unknown."""
    return _meminfo("MemTotal", meminfo)


def _meminfo(field: str, meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity, which a container's cpuset narrows)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _size(n: float) -> str:
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= factor:
            return f"{n / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n / 2**20:.1f}".removesuffix(".0") + " MiB"


def check_local_capacity(spec: JobSpec, available: int | None = None, cores: int | None = None) -> None:
    """Refuse a local job this machine cannot run: its replicas × the memory of one TensorFlow replica
    (:data:`REPLICA_MEMORY`, or the spec's ``memory`` when larger) over the available memory, or more than
    :data:`MAX_REPLICAS_PER_CORE` replicas per core.

    Args:
        spec: the job.
        available: bytes available (default: ``MemAvailable`` of ``/proc/meminfo``; unknown: not checked).
        cores: usable cores (default: this process's CPU affinity).

    Raises:
        SpecError: one sentence with the numbers and the suggestion to use the Kubernetes backend.
    """
    replicas = len(spec.replica_names)
    cores = cores or usable_cores()
    available = available_memory() if available is None else available
    asked = parse_quantity(spec.memory, "memory") if spec.memory else 0
    per_replica = max(REPLICA_MEMORY, asked)
    each = (
        "the memory each replica asks for"
        if asked > REPLICA_MEMORY
        else "measured for one TensorFlow replica"
    )
    core_limit = MAX_REPLICAS_PER_CORE * cores
    memory_limit = None if available is None else int(available // per_replica)
    problems = []
    if replicas > core_limit:
        problems.append(
            f"its {cores} core{'s' if cores != 1 else ''} take at most {core_limit} ({MAX_REPLICAS_PER_CORE} per core)"
        )
    if memory_limit is not None and replicas > memory_limit:
        problems.append(
            f"they would need about {_size(replicas * per_replica)} of memory ({replicas} × "
            f"{_size(per_replica)}, {each}) where {_size(available)} is available"
        )
    if not problems:
        return
    limit = min(x for x in (core_limit, memory_limit) if x is not None)
    fewer = f"use at most {limit} replicas here" if limit >= 1 else "free some memory"
    raise SpecError(
        f"job {spec.name} would start {replicas} TensorFlow processes on this machine, but "
        + " and ".join(problems)
        + f"; {fewer}, or run it on Kubernetes (backend='kubernetes', or --backend kubernetes)."
    )


# --------------------------------------------------------------------------- GPUs
def detect_gpus(proc_dir: str = "/proc/driver/nvidia/gpus", nvidia_smi: str = "nvidia-smi") -> list[str]:
    """The GPU ids this machine offers to jobs (``CUDA_VISIBLE_DEVICES`` of this process narrows them)."""
    count = 0
    proc = Path(proc_dir)
    if proc.is_dir():
        count = sum(1 for _ in proc.iterdir())
    elif shutil.which(nvidia_smi):
        try:
            out = subprocess.run(
                [nvidia_smi, "-L"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
            count = sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            count = 0
    ids = [str(i) for i in range(count)]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and count:
        # This process was given a subset (ids or GPU-UUIDs); jobs share that subset only.
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        ids = [v for v in wanted if v in ids or v.startswith(("GPU-", "MIG-"))][:count]
    return ids


def gpu_slices(spec: JobSpec, available: list[str]) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` for every replica: consecutive slices of ``spec.gpus`` for the chief and
    workers, ``""`` (no GPU) for ps and for every replica of a job without GPUs.

    Raises:
        SpecError: the job needs more GPUs than ``available`` holds; the message says how many there are.
    """
    gpu_replicas = [n for r in spec.replicas if r.role != "ps" for n in r.names]
    need = spec.gpus * len(gpu_replicas)
    if need > len(available):
        have = f"{len(available)} ({', '.join('GPU ' + g for g in available)})" if available else "none"
        raise SpecError(
            f"the job asks for {need} GPU(s) ({spec.gpus} for each of {len(gpu_replicas)} chief/worker "
            f"replicas) but this machine has {have}; use gpus={len(available) // max(1, len(gpu_replicas))} "
            "or fewer workers, or the kubernetes backend."
        )
    out = {name: "" for name in spec.replica_names}
    for i, name in enumerate(gpu_replicas):
        out[name] = ",".join(available[i * spec.gpus : (i + 1) * spec.gpus])
    return out
