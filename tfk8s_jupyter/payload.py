"""The payload a job ships to every replica: the cell plus what it needs from the notebook.

Pure data. ``capture.py`` builds one from a notebook; the runner rebuilds the cell's namespace from it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

PAYLOAD_VERSION = 1


@dataclass(frozen=True)
class Payload:
    """What a replica executes.

    Attributes:
        code: the cell source, run unchanged.
        prelude: source run first in the same namespace (functions, classes, imports the cell relies on).
        values: name -> pickled bytes of small values the cell uses (constants, configs).
        files: relative path -> text of local modules and extra files, written beside the cell.
    """

    code: str
    prelude: str = ""
    values: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": PAYLOAD_VERSION,
                "code": self.code,
                "prelude": self.prelude,
                "values": {k: base64.b64encode(v).decode() for k, v in self.values.items()},
                "files": self.files,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Payload:
        d = json.loads(text)
        return cls(
            code=d["code"],
            prelude=d.get("prelude", ""),
            values={k: base64.b64decode(v) for k, v in d.get("values", {}).items()},
            files=dict(d.get("files", {})),
        )

    @property
    def size(self) -> int:
        return len(self.to_json().encode())
