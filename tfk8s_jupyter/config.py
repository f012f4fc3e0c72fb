"""Defaults for every job option, as one traitlets ``Configurable``.

Set them in ``ipython_config.py`` / ``jupyter_server_config.py`` (``c.TFK8s.image = "..."``) or with
``%config TFK8s.image = "..."``; the magic's flags and ``submit()``'s arguments override them per call.
"""

from __future__ import annotations

import getpass
import os

from traitlets import Bool, Dict, Enum, Float, Int, List, Unicode
from traitlets.config import Configurable


def current_owner() -> str:
    """The JupyterHub user when running under JupyterHub, else the local user name."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


class TFK8s(Configurable):
    """Defaults for tfk8s-jupyter jobs."""

    backend = Enum(
        ["local", "kubernetes"], "local", help="Where jobs run: local processes or Kubernetes."
    ).tag(config=True)
    flavor = Enum(
        ["auto", "native", "tfjob"],
        "auto",
        help="Kubernetes flavor: native Jobs, a Kubeflow TFJob, or auto (TFJob when the operator is installed).",
    ).tag(config=True)
    strategy = Unicode("auto", help="auto, parameter_server, multi_worker_mirrored or mirrored.").tag(
        config=True
    )
    ps = Int(0, help="Parameter servers per job (> 0 means asynchronous training with a chief).").tag(
        config=True
    )
    workers = Int(2, help="Workers per job.").tag(config=True)
    gpus = Int(0, help="GPUs per worker and chief (never given to ps).").tag(config=True)
    cpu = Unicode(
        None, allow_none=True, help="CPU per replica, a Kubernetes quantity such as '2' or '500m'."
    ).tag(config=True)
    memory = Unicode(
        None, allow_none=True, help="Memory per replica, a Kubernetes quantity such as '4Gi'."
    ).tag(config=True)
    image = Unicode("tfk8s/trainer:0.1.0", help="Container image of the replicas (Kubernetes).").tag(
        config=True
    )
    image_pull_secrets = List(Unicode(), help="Names of Secrets used to pull the image.").tag(config=True)
    service_account = Unicode(None, allow_none=True, help="ServiceAccount the replica pods run as.").tag(
        config=True
    )
    namespace = Unicode(
        None,
        allow_none=True,
        help="Kubernetes namespace; default: the kubeconfig context's, or the pod's own under JupyterHub.",
    ).tag(config=True)
    context = Unicode(None, allow_none=True, help="kubeconfig context to use.").tag(config=True)
    node_selector = Dict(help="nodeSelector for replica pods.").tag(config=True)
    tolerations = List(Dict(), help="Tolerations for replica pods (e.g. for GPU nodes).").tag(config=True)
    gpu_resource = Unicode("nvidia.com/gpu", help="Extended resource name of a GPU.").tag(config=True)
    labels = Dict(help="Extra labels on every object of a job.").tag(config=True)
    env = Dict(help="Extra environment variables for every replica.").tag(config=True)
    max_restarts = Int(
        3, help="Restarts per replica (all workers together for all-reduce) before failing."
    ).tag(config=True)
    checkpoint_dir = Unicode(
        None, allow_none=True, help="Where BackupAndRestore checkpoints go; default: inside the job record."
    ).tag(config=True)
    metric_interval = Float(
        1.0, help="Seconds between per-step metric points (epoch ends always report)."
    ).tag(config=True)
    setup_timeout = Float(
        180.0, help="Seconds a job may take to bring every replica up before it fails."
    ).tag(config=True)
    ttl_seconds_after_finished = Int(3600, help="Kubernetes: seconds finished Jobs are kept.").tag(
        config=True
    )
    max_payload_bytes = Int(4 * 1024 * 1024, help="Largest notebook context shipped with a cell.").tag(
        config=True
    )
    panel = Bool(True, help="Show the live panel under a training cell.").tag(config=True)
    frontend = Enum(
        ["auto", "widgets", "text"],
        "auto",
        help="How a training cell shows progress: widgets (the live panel), text (progress lines and a final "
        "summary), or auto (the live panel under an interactive front end such as JupyterLab; text in batch "
        "runs - nbconvert, papermill, nbclient - and in terminal IPython).",
    ).tag(config=True)
    batch_wait = Bool(
        True,
        help="Without an interactive front end (nbconvert, papermill, nbclient, terminal IPython) a training "
        "cell waits for its job and its output ends with the final summary; False returns at once (as "
        "--no-wait does for one cell).",
    ).tag(config=True)

    def job_options(self) -> dict:
        """The defaults as keyword arguments of :func:`tfk8s_jupyter.spec.make_spec`."""
        names = (
            "backend flavor strategy ps workers gpus cpu memory image image_pull_secrets service_account "
            "namespace context node_selector tolerations gpu_resource labels env max_restarts checkpoint_dir "
            "metric_interval setup_timeout ttl_seconds_after_finished"
        ).split()
        return {n: getattr(self, n) for n in names}


_current: TFK8s | None = None


def current_config() -> TFK8s:
    """The process-wide defaults (the magics and the server extension install theirs here)."""
    global _current
    if _current is None:
        _current = TFK8s()
    return _current


def set_current_config(cfg: TFK8s) -> None:
    global _current
    _current = cfg
