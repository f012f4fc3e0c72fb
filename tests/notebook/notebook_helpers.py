"""Helpers for the notebook-face tests: a real shell, running cells, running a payload like a replica."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

REPO = Path(__file__).resolve().parents[2]


def make_shell(ipython_dir: Path, config: Config | None = None) -> InteractiveShell:
    """A fresh InteractiveShell (not the process singleton), history in memory."""
    cfg = config or Config()
    cfg.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance(ipython_dir=str(ipython_dir), config=cfg)
    return shell


def magics_of(shell):
    return shell.magics_manager.registry["TFK8sMagics"]


def run(shell, source: str) -> None:
    """Run a notebook cell (stored in the history, as in a notebook); fail on an error."""
    result = shell.run_cell(textwrap.dedent(source), store_history=True)
    if not result.success:
        raise AssertionError(f"cell failed: {result.error_before_exec or result.error_in_exec!r}")


def run_payload(payload, tmp_path: Path, extra: str = "") -> str:
    """Run a payload the way a replica does (runner: files -> prelude -> values -> code) in a fresh
    Python process without the notebook; return its stdout."""
    work = tmp_path / "replica"
    work.mkdir(exist_ok=True)
    (work / "payload.json").write_text(payload.to_json())
    script = (
        textwrap.dedent(
            f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from tfk8s_jupyter.payload import Payload
        from tfk8s_jupyter.runner import run_cell
        payload = Payload.from_json(Path("payload.json").read_text())
        for rel, text in payload.files.items():
            p = Path("files") / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        sys.path.insert(0, str(Path("files").resolve()))
        run_cell(payload)
        """
        )
        + extra
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=work, capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
