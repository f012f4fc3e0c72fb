"""tfk8s-jupyter: train a notebook's TensorFlow cell as a distributed job, locally or on Kubernetes.

``import tfk8s_jupyter`` stays fast and never imports TensorFlow; the API is loaded on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = {
    "submit": "api",
    "submit_spec": "api",
    "attach": "api",
    "list_jobs": "api",
    "check": "api",
    "Job": "api",
    "JobSpec": "spec",
    "make_spec": "spec",
    "SpecError": "spec",
    "Payload": "payload",
    "JobState": "monitor",
    "TFK8s": "config",
    "report": "cell_report",
}

__all__ = sorted(_API) + ["load_ipython_extension", "__version__"]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'tfk8s_jupyter' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)


def load_ipython_extension(ipython) -> None:
    """``%load_ext tfk8s_jupyter``: registers the ``%%tfk8s_train`` and ``%tfk8s_*`` magics."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "tfk8s-jupyter"}]


def _jupyter_server_extension_points():
    return [{"module": "tfk8s_jupyter.server"}]
