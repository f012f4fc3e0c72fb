"""Job history: which finished jobs go, and what the job list reads of each job's record.

- :func:`select_expired` is the rule, pure: given statuses, the time and a limit (a count of jobs or an
  age), the names of the finished jobs of one owner that are beyond it. ``%tfk8s_delete --older-than`` and
  ``c.TFK8s.keep_jobs`` both use it.
- :func:`apply_keep_jobs` applies ``c.TFK8s.keep_jobs`` to a backend's listing: what is beyond the limit is
  deleted through the backend's ``delete`` (on Kubernetes the parent ConfigMap, and with it every object of
  the job), and the listing comes back without it.
- :func:`last_loss` reads a job's last reported loss from the end of its events file, however long it is.

Age is counted from submission, as the ``age`` column of ``%tfk8s_jobs`` shows it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .backends.base import Backend, JobNotFound, JobStatus, TFK8sError
from .records import JobRecord
from .spec import parse_keep


def select_expired(
    statuses: Iterable[JobStatus],
    now: float,
    *,
    count: int | None = None,
    max_age: float | None = None,
    owner: str | None = None,
) -> list[str]:
    """The names of the finished jobs of ``owner`` beyond the limit, oldest first.

    Args:
        statuses: jobs as a backend lists them (any owners, any phases).
        now: the time (``time.time()``) ages are measured at.
        count: keep the ``count`` newest finished jobs of ``owner``; older finished ones are beyond it.
        max_age: finished jobs submitted more than ``max_age`` seconds before ``now`` are beyond it.
        owner: whose jobs may go; every job of another owner (or of none recorded) stays. ``None``: any.

    A job that has not ended (pending, running) is never beyond the limit, nor counted in it.
    """
    if (count is None) == (max_age is None):
        raise ValueError("give exactly one of count and max_age")
    finished = [s for s in statuses if s.done and (owner is None or s.owner == owner)]
    finished.sort(key=lambda s: (s.created, s.name), reverse=True)  # newest first
    if count is not None:
        beyond = finished[count:]
    else:
        beyond = [s for s in finished if now - s.created > max_age]
    return [s.name for s in reversed(beyond)]


def keep_limit(keep) -> dict:
    """``c.TFK8s.keep_jobs`` (``"50"``, ``"7d"``) as :func:`select_expired`'s ``count``/``max_age``.

    Raises:
        SpecError: neither a count nor an age, in one sentence with the fix.
    """
    count, max_age = parse_keep(keep)
    return {"count": count} if count is not None else {"max_age": max_age}


@dataclass
class Pruned:
    """What :func:`apply_keep_jobs` did: the listing without the deleted jobs, and what went."""

    kept: list[JobStatus]
    deleted: list[str] = field(default_factory=list)
    keep: str | None = None
    backend: str = ""
    failed: dict[str, str] = field(default_factory=dict)  # name -> the backend's sentence
    remains: list[str] = field(default_factory=list)  # where deleted jobs' artifacts remain (one line each)

    def line(self) -> str | None:
        """One line for the user when anything went (or could not go); ``None`` otherwise."""
        if not self.deleted and not self.failed:
            return None
        text = f"tfk8s: keep_jobs = {self.keep!r}"
        if self.deleted:
            n = len(self.deleted)
            jobs = "job" if n == 1 else "jobs"
            text += f" removed {n} finished {self.backend} {jobs} ({', '.join(self.deleted)})"
        if self.failed:
            name, why = next(iter(self.failed.items()))
            more = f" (and {len(self.failed) - 1} more)" if len(self.failed) > 1 else ""
            text += f"{'; ' if self.deleted else ': '}could not remove {self.backend} job {name}{more}: "
            text += why.rstrip(".")
        return text + "." + "".join(f"\ntfk8s: {line}" for line in self.remains)


class JobArtifactsRemoval:
    """A job's artifacts deleted with the job: create it before ``backend.delete(name)`` (it reads the
    job's spec), call :meth:`remove` after. Local artifacts live in the job's record and go with it; a
    Kubernetes job's on a claim this notebook mounts (``c.TFK8s.storage_mount``) are deleted here, and
    otherwise (claim not mounted, object storage) :meth:`remove` says in one line where they remain."""

    def __init__(self, backend: Backend, name: str) -> None:
        self.spec = None
        if backend.name != "kubernetes":
            return
        try:
            self.spec = backend.spec(name)
        except (TFK8sError, FileNotFoundError, KeyError, ValueError):
            self.spec = None

    def remove(self) -> str | None:
        if self.spec is None:
            return None
        from .backends.kubernetes.storage import remove_artifacts
        from .config import current_config

        cfg = current_config()
        return remove_artifacts(self.spec, cfg.storage_mount, cfg.storage)


def apply_keep_jobs(
    backend: Backend,
    statuses: list[JobStatus],
    keep=None,
    *,
    owner: str | None = None,
    now: float | None = None,
) -> Pruned:
    """Apply ``keep_jobs`` to a listing of ``backend``: delete (through ``backend.delete``) the finished jobs
    of ``owner`` beyond the limit and return the listing without them.

    Args:
        backend: the backend ``statuses`` came from.
        statuses: its listing (other owners' jobs may be in it: they stay).
        keep: the limit; default ``c.TFK8s.keep_jobs`` (``None`` there: nothing is deleted).
        owner: whose jobs may go; default the current user.
        now: the time ages are measured at; default now.

    A job deleted meanwhile by someone else (``JobNotFound``) leaves the listing without being counted; a
    job the backend fails to delete stays in the listing and is named in :meth:`Pruned.line`.
    """
    from .config import current_config, current_owner

    if keep is None:
        keep = current_config().keep_jobs
    if keep is None or not statuses:
        return Pruned(list(statuses), keep=None if keep is None else str(keep), backend=backend.name)
    limit = keep_limit(keep)
    owner = owner if owner is not None else current_owner()
    names = select_expired(statuses, time.time() if now is None else now, owner=owner, **limit)
    pruned = Pruned([], keep=str(keep), backend=backend.name)
    gone = set()
    for name in names:
        artifacts = JobArtifactsRemoval(backend, name)
        try:
            backend.delete(name)
        except (JobNotFound, FileNotFoundError):  # deleted meanwhile (another listing, another kernel)
            gone.add(name)
            continue
        except TFK8sError as e:
            pruned.failed[name] = str(e)
            continue
        gone.add(name)
        pruned.deleted.append(name)
        remains = artifacts.remove()
        if remains:
            pruned.remains.append(remains)
    pruned.kept = [s for s in statuses if not (s.name in gone and s.owner == owner and s.done)]
    return pruned


# -- the last loss ------------------------------------------------------------------------------------
LAST_LOSS_READ_LIMIT = 1 << 20  # bytes read back from the end of an events file at most


def _loss_of(line: bytes) -> float | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None  # a line being written right now
    if not isinstance(event, dict) or event.get("type") not in ("metric", "epoch"):
        return None
    value = (event.get("values") or {}).get("loss")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def last_loss(
    path: str | os.PathLike, limit: int = LAST_LOSS_READ_LIMIT, chunk: int = 64 * 1024
) -> float | None:
    """The loss of the last ``metric`` or ``epoch`` event with one in an ``events.jsonl``, read backwards
    from the end in ``chunk``-sized pieces (at most ``limit`` bytes); ``None`` when there is none."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        end = f.seek(0, os.SEEK_END)
        pos, tail, read = end, b"", 0
        while pos > 0 and read < limit:
            size = min(chunk, pos)
            pos -= size
            f.seek(pos)
            block = f.read(size) + tail
            read += size
            lines = block.split(b"\n")
            tail = lines.pop(0) if pos > 0 else b""  # maybe cut: completed by the next piece back
            for line in reversed(lines):
                if line.strip():
                    loss = _loss_of(line)
                    if loss is not None:
                        return loss
    return None


def events_path(backend: Backend, name: str) -> Path:
    """Where ``backend`` records ``name``'s protocol events (both backends keep a local record)."""
    return JobRecord(name, getattr(backend, "root", None)).events_path
