"""The payload a job ships to every replica: the cell plus what it needs from the notebook.

Pure data. ``capture.py`` builds one from a notebook; the runner rebuilds the cell's namespace from it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

PAYLOAD_VERSION = 1


class CaptureError(ValueError):
    """The cell cannot be made into a payload (shipped); the message is one sentence naming the problem
    and the fix."""


@dataclass(frozen=True)
class Payload:
    """What a replica executes.

    Attributes:
        code: the cell source, run unchanged.
        prelude: source run first in the same namespace (functions, classes, imports the cell relies on).
        values: name -> pickled bytes of small values the cell uses (constants, configs).
        files: relative path -> text of local modules and extra text files, written beside the cell.
        inputs: relative path -> size of every file the cell reads from the notebook's folder (found at
            submission: paths in the cell's strings, ``--files``); the replicas see them by those paths.
        data: relative path -> bytes of the inputs that travel with the job (Kubernetes), written beside
            the cell; empty where the replicas see the notebook's folder itself (local backend).
    """

    code: str
    prelude: str = ""
    values: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, int] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)

    def to_json(self) -> str:
        d = {
            "version": PAYLOAD_VERSION,
            "code": self.code,
            "prelude": self.prelude,
            "values": {k: base64.b64encode(v).decode() for k, v in self.values.items()},
            "files": self.files,
        }
        if self.inputs:
            d["inputs"] = self.inputs
        if self.data:
            d["data"] = {k: base64.b64encode(v).decode() for k, v in self.data.items()}
        return json.dumps(d, sort_keys=True)

    def without_data(self) -> Payload:
        """The same payload with the inputs' bytes left out (they travel apart, or not at all)."""
        return Payload(self.code, self.prelude, dict(self.values), dict(self.files), dict(self.inputs))

    @classmethod
    def from_json(cls, text: str) -> Payload:
        d = json.loads(text)
        return cls(
            code=d["code"],
            prelude=d.get("prelude", ""),
            values={k: base64.b64decode(v) for k, v in d.get("values", {}).items()},
            files=dict(d.get("files", {})),
            inputs={k: int(v) for k, v in d.get("inputs", {}).items()},
            data={k: base64.b64decode(v) for k, v in d.get("data", {}).items()},
        )

    @property
    def size(self) -> int:
        return len(self.to_json().encode())
