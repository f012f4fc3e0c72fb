"""Jupyter Server extension: the REST API the JupyterLab side panel uses (``/tfk8s/api/jobs``).

Enabled on install through ``jupyter-config/server-config/tfk8s_jupyter.json``.
``c.TFK8s.*`` in ``jupyter_server_config.py`` sets the defaults; ``c.JobsManager.*`` the listing.
"""

from __future__ import annotations

from ..config import TFK8s, set_current_config
from .handlers import setup_handlers
from .manager import JobsManager

__all__ = ["JobsManager"]


def _jupyter_server_extension_points():
    return [{"module": "tfk8s_jupyter.server"}]


def _load_jupyter_server_extension(server_app) -> None:
    """Install the jobs manager and the ``/tfk8s/api`` routes on a running Jupyter server."""
    defaults, problems = TFK8s.from_config(config=server_app.config, where="the server config")
    for problem in problems:
        server_app.log.error("tfk8s-jupyter: %s The built-in default is used instead.", problem)
    set_current_config(defaults)
    manager = JobsManager(config=server_app.config, log=server_app.log)
    server_app.web_app.settings["tfk8s_jobs_manager"] = manager
    setup_handlers(server_app.web_app, manager)
    server_app.log.info(
        "tfk8s-jupyter: REST API at %s", server_app.web_app.settings["base_url"] + "tfk8s/api/jobs"
    )


def _unload_jupyter_server_extension(server_app) -> None:
    """Stop what the jobs manager started (its TensorBoards, its listing threads) when the server stops."""
    manager = server_app.web_app.settings.pop("tfk8s_jobs_manager", None)
    if manager is not None:
        manager.close()
