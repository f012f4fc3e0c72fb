"""Fixtures for the notebook face: a real IPython shell in a temporary IPYTHONDIR, with the extension."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from notebook_helpers import magics_of, make_shell


@pytest.fixture
def notebook_dir(tmp_path, monkeypatch) -> Path:
    """The notebook's directory (the kernel's cwd), importable like a notebook's folder."""
    d = tmp_path / "nb"
    d.mkdir()
    monkeypatch.chdir(d)
    monkeypatch.syspath_prepend(str(d))
    return d


@pytest.fixture
def ipython_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "ipython"
    d.mkdir()
    monkeypatch.setenv("IPYTHONDIR", str(d))
    return d


@pytest.fixture
def shell(ipython_dir, notebook_dir):
    """A real InteractiveShell with ``%load_ext tfk8s_jupyter`` done."""
    sh = make_shell(ipython_dir)
    sh.run_line_magic("load_ext", "tfk8s_jupyter")
    yield sh
    for job in list(magics_of(sh).jobs.values()):
        try:
            if not job.status.done:
                job.stop()
        except Exception:
            pass
    for panels in magics_of(sh).panels.values():
        for p in panels:
            p.close()
    InteractiveShell.clear_instance()
