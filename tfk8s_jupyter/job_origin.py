"""Where a job came from: the notebook and cell that started it, carried as job labels, and the generated
job names that say which notebook it was. Set by the magics, shown by ``%tfk8s_jobs`` and the side panel."""

from __future__ import annotations

import hashlib
import os
import re
import secrets

NOTEBOOK_LABEL = "tfk8s.io/notebook"
CELL_LABEL = "tfk8s.io/cell"


def notebook_name(shell) -> str | None:
    """The notebook this kernel runs (Jupyter Server tells the kernel through ``JPY_SESSION_NAME``)."""
    path = os.environ.get("JPY_SESSION_NAME") or (shell.user_ns.get("__session__") if shell else None)
    return os.path.basename(str(path)) if path else None


def _label_value(text: str) -> str:
    """``text`` as a Kubernetes label value: [A-Za-z0-9._-], at most 63, alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def origin_labels(shell) -> dict[str, str]:
    """Where a job came from: the notebook's file name and the cell's execution count."""
    labels = {}
    nb = notebook_name(shell)
    if nb and _label_value(nb):
        labels[NOTEBOOK_LABEL] = _label_value(nb)
    count = getattr(shell, "execution_count", None)
    if isinstance(count, int) and count > 0:
        labels[CELL_LABEL] = str(count)
    return labels


def origin_job_name(shell, code: str) -> str | None:
    """A generated name that says which notebook started the job (``quickstart-3f2a1c-9b0e4``); None
    (the spec's ``tf-<hash>-<random>``) outside a notebook."""
    nb = notebook_name(shell)
    if not nb:
        return None
    stem = re.sub(r"[^a-z0-9]+", "-", os.path.splitext(nb)[0].lower()).strip("-")[:24].strip("-")
    if not stem or not stem[0].isalpha():
        stem = f"nb-{stem}".strip("-")[:24].strip("-")
    digest = hashlib.sha256(code.encode()).hexdigest()[:6]
    return f"{stem}-{digest}-{secrets.token_hex(3)[:5]}"


def origin_of(labels) -> str | None:
    """``"forecast.ipynb [7]"``: the notebook and cell a job came from, from its labels."""
    nb, cell = (labels or {}).get(NOTEBOOK_LABEL), (labels or {}).get(CELL_LABEL)
    if not nb and not cell:
        return None
    return " ".join(x for x in (nb, f"[{cell}]" if cell else None) if x)


CELL_KEY_LABEL = "tfk8s.io/cell-key"


def cell_key_label(cell_key: str) -> str:
    """The label value that ties a job to its cell (the front end's cell id, else the cell's text)."""
    return hashlib.sha1(cell_key.encode()).hexdigest()[:20]


def running_job_of_cell(backend, cell_key: str, owner: str | None) -> str | None:
    """The name of ``owner``'s running job that ``cell_key``'s cell started, read from the backend (after a
    kernel restart the kernel no longer knows it); None when there is none."""
    value = cell_key_label(cell_key)
    for status in sorted(backend.list(owner=owner), key=lambda s: s.created, reverse=True):
        if status.done:
            continue
        try:
            labels = backend.spec(status.name).labels or {}
        except Exception:  # a record being written or removed: not this cell's job
            continue
        if labels.get(CELL_KEY_LABEL) == value:
            return status.name
    return None
