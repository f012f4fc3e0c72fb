"""Job records on disk, the same layout for every backend.

``<root>/<name>/``::

    spec.json        the JobSpec (JSON)
    payload.json     the Payload shipped to replicas
    status.json      the latest JobStatus (written atomically)
    events.jsonl     protocol events of the reporting replica, de-duplicated by (run, seq)
    logs/<role>-<index>.log   each replica's output (kept after processes or pods are gone)

``root`` is ``$TFK8S_HOME`` when set, else ``<jupyter data dir>/tfk8s/jobs``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from .protocol import EventDedup


def records_root() -> Path:
    home = os.environ.get("TFK8S_HOME")
    if home:
        return Path(home)
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "tfk8s" / "jobs"


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


class JobRecord:
    """One job's folder."""

    def __init__(self, name: str, root: Path | None = None):
        self.name = name
        self.dir = Path(root or records_root()) / name

    @classmethod
    def all(cls, root: Path | None = None) -> list[JobRecord]:
        root = Path(root or records_root())
        if not root.is_dir():
            return []
        return [cls(p.name, root) for p in sorted(root.iterdir()) if (p / "spec.json").exists()]

    def exists(self) -> bool:
        return (self.dir / "spec.json").exists()

    # spec / payload / status -------------------------------------------------
    def write_spec(self, spec_json: dict) -> None:
        write_json_atomic(self.dir / "spec.json", spec_json)

    def read_spec(self) -> dict:
        return json.loads((self.dir / "spec.json").read_text())

    def write_payload(self, payload_json: str) -> Path:
        path = self.dir / "payload.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(payload_json)
        return path

    def write_status(self, status_json: dict, unless: tuple[str, ...] = ()) -> bool:
        """Write the status, unless the one on disk has a phase in ``unless`` (a follower's running status
        never replaces the end another caller wrote meanwhile); ``False`` when it was not written. The check
        and the write are one step for every writer of this record (a lock file beside it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".status.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if unless and (self.read_status() or {}).get("phase") in unless:
                return False
            write_json_atomic(self.dir / "status.json", status_json)
            return True

    def read_status(self) -> dict | None:
        try:
            return json.loads((self.dir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    # events -------------------------------------------------------------------
    @property
    def events_path(self) -> Path:
        return self.dir / "events.jsonl"

    def read_events(self) -> list[dict]:
        return [e for batch in self.iter_events() for e in batch]

    def read_events_from(self, offset: int = 0, max_bytes: int | None = None) -> tuple[list[dict], int]:
        """The events of the complete lines after byte ``offset`` (at most about ``max_bytes`` of them),
        and the offset to read from next time: a poll reads only what was appended since the last one."""
        try:
            with open(self.events_path, "rb") as f:
                f.seek(offset)
                chunk = f.read() if max_bytes is None else f.read(max_bytes)
                if max_bytes is not None and chunk and not chunk.endswith(b"\n"):
                    chunk += f.readline()  # finish the line the chunk cut (or stop at a half-written one)
        except FileNotFoundError:
            return [], offset
        end = chunk.rfind(b"\n") + 1  # a line being written right now waits for the next read
        out = []
        for line in chunk[:end].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out, offset + end

    def iter_events(self, batch_bytes: int = 1 << 20):
        """The recorded events in batches (lists) of about ``batch_bytes`` of JSON each: a long job's
        history is folded without holding all of it at once."""
        offset = 0
        while True:
            events, next_offset = self.read_events_from(offset, batch_bytes)
            if next_offset == offset:
                return
            offset = next_offset
            if events:
                yield events

    def append_events(self, events: list[dict], dedup: EventDedup | None = None) -> list[dict]:
        """Append events not yet recorded; return the ones actually appended.

        ``dedup`` is the caller's memory of recorded events; it is filled from disk when empty.
        """
        if dedup is None:
            dedup = EventDedup()
        if not len(dedup):
            for batch in self.iter_events():
                dedup.new(batch)
        new = dedup.new(events)
        if new:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.events_path, "a") as f:
                f.write("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in new))
        return new

    # logs ---------------------------------------------------------------------
    def log_path(self, replica: str) -> Path:
        return self.dir / "logs" / f"{replica}.log"

    def delete(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def record_of(backend, name: str) -> JobRecord | None:
    """The job's record as ``backend`` keeps it in this process's file system (``None`` when it keeps
    none or has no such job), for readers that follow its ``events.jsonl`` incrementally."""
    for attr in ("record", "_record"):
        get = getattr(backend, attr, None)
        if callable(get):
            try:
                record = get(name)
            except Exception:
                return None
            return record if isinstance(record, JobRecord) else None
    return None
