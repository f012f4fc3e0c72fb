"""Defaults for every job option, as one traitlets ``Configurable``.

Set them in ``ipython_config.py`` / ``jupyter_server_config.py`` (``c.TFK8s.image = "..."``) or with
``%config TFK8s.image = "..."``; the magic's flags and ``submit()``'s arguments override them per call.
"""

from __future__ import annotations

import difflib
import getpass
import math
import os
from collections.abc import Callable
from typing import Any

from traitlets import Bool, Dict, Float, Int, List, TraitError, Unicode
from traitlets.config import Configurable

from .spec import (
    _ENV_KEY_RE,
    BACKENDS,
    FLAVORS,
    SpecError,
    _check_count,
    parse_quantity,
    resolve_strategy,
)
from .spec_fields import (
    check_dns_label,
    check_image,
    check_name_list,
    check_object_name,
    check_resource_name,
    check_string_map,
    check_tolerations,
    not_a_mapping,
)


def current_owner() -> str:
    """The JupyterHub user when running under JupyterHub, else the local user name."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def _checked(base):
    """``base`` (a trait type) whose values first pass ``check``: a bad value - from ``%config``, a config
    file or an assignment - is refused with the sentence the magic's flag would give (``check`` raises
    :class:`~tfk8s_jupyter.spec.SpecError`), and the previous value stays."""

    class Checked(base):
        def __init__(self, *args, check: Callable[[Any], Any], **kwargs):
            self.check = check
            super().__init__(*args, **kwargs)

        def validate(self, obj, value):
            if value is None and self.allow_none:
                return value
            try:
                value = self.check(value)
            except SpecError as e:
                raise TraitError(str(e)) from None
            return super().validate(obj, value)

    Checked.__name__ = Checked.__qualname__ = f"Checked{base.__name__}"
    return Checked


CheckedInt, CheckedFloat, CheckedUnicode, CheckedBool = (_checked(t) for t in (Int, Float, Unicode, Bool))
CheckedDict, CheckedList = _checked(Dict), _checked(List)


def _count(what: str, minimum: int, fix: str) -> Callable[[Any], int]:
    return lambda v: _check_count(v, what, minimum, fix)


def _pool_size(n: int) -> int:
    """A warm pool that could never fit in this machine's memory is refused in one sentence."""
    from .backends.local_pool import pool_size_problem

    problem = pool_size_problem(n)
    if problem:
        raise SpecError(problem)
    return n


def _seconds(what: str, strict: bool, example: str) -> Callable[[Any], float]:
    bound = "a positive number of" if strict else "0 or more"

    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (strict and v == 0):
            raise SpecError(f"{what} {v!r} must be {bound} seconds, e.g. {example}.")
        return float(v)

    return check


def _finite_seconds(what: str, example: str) -> Callable[[Any], float]:
    """:func:`_seconds` (0 allowed), refusing NaN and infinity too (a NaN compares false to everything: it
    would pass as 0 or more)."""
    check = _seconds(what, False, example)

    def finite(v):
        value = check(v)
        if not math.isfinite(value):
            raise SpecError(f"{what} {v!r} must be 0 or more seconds, e.g. {example}.")
        return value

    return finite


def _one_of(what: str, choices: tuple[str, ...], fix: str) -> Callable[[Any], str]:
    def check(v):
        if v not in choices:
            raise SpecError(f"{what} {v!r} is unknown; use {fix}.")
        return v

    return check


def _strategy(v):
    if not isinstance(v, str):
        raise SpecError(
            f"strategy {v!r} is unknown; use auto, parameter_server, multi_worker_mirrored or mirrored."
        )
    resolve_strategy(v, 0, 2, 0)
    return v


def _quantity(what: str) -> Callable[[Any], str]:
    def check(v):
        parse_quantity(v, what)
        return str(v)

    return check


def _duration(what: str) -> Callable[[Any], str]:
    def check(v):
        from .spec import parse_duration

        parse_duration(v, what)
        return str(v)

    return check


def _text(what: str, example: str) -> Callable[[Any], str]:
    def check(v):
        if not isinstance(v, str) or not v.strip():
            raise SpecError(f"{what} {v!r} is not a name; give one as a string, e.g. {example!r}.")
        return v

    return check


def _kube(check, *args) -> Callable[[Any], Any]:
    """A :mod:`~tfk8s_jupyter.spec_fields` check as a trait check (the value itself is kept)."""

    def run(v):
        check(v, *args)
        return v

    return run


def _storage(v):
    from .spec import parse_storage

    parse_storage(v)
    return v


def _keep_jobs(v):
    from .spec import parse_keep

    parse_keep(v)
    return str(v)


def _secret_env(v):
    from .spec import check_secret_env

    check_secret_env(v)
    return dict(v)


def _flag(what: str) -> Callable[[Any], bool]:
    def check(v):
        if not isinstance(v, bool):
            raise SpecError(f"{what} {v!r} is not True or False; set it to True or False.")
        return v

    return check


def _string_map(what: str, example: str, keys_are_env: bool = False) -> Callable[[Any], dict]:
    def check(v):
        if not isinstance(v, dict):
            raise SpecError(not_a_mapping(what, v, example))
        for key, value in v.items():
            if keys_are_env and not _ENV_KEY_RE.match(str(key)):
                raise SpecError(
                    f"environment variable name {key!r} is invalid; use letters, digits and '_' "
                    "(starting with a letter or '_'), as in KEY=VALUE."
                )
            if not isinstance(value, str):
                noun = f"environment variable {key}" if keys_are_env else f"{what} entry {key!r}"
                raise SpecError(f"{noun} has a non-string value {value!r}; pass it as a string.")
        return v

    return check


class TFK8s(Configurable):
    """Defaults for tfk8s-jupyter jobs.

    Every value is checked when it is set (``%config``, config files, assignment) with the same sentence
    as the matching ``%%tfk8s_train`` flag; a refused value leaves the previous one in place.
    """

    backend = CheckedUnicode(
        "local",
        check=_one_of("backend", BACKENDS, "'local' or 'kubernetes'"),
        help="Where jobs run: local (processes on this machine) or kubernetes.",
    ).tag(config=True)
    flavor = CheckedUnicode(
        "auto",
        check=_one_of("flavor", FLAVORS, "auto, native or tfjob"),
        help="Kubernetes flavor: native Jobs, a Kubeflow TFJob (tfjob), or auto (TFJob when the operator is "
        "installed).",
    ).tag(config=True)
    strategy = CheckedUnicode(
        "auto", check=_strategy, help="auto, parameter_server, multi_worker_mirrored or mirrored."
    ).tag(config=True)
    ps = CheckedInt(
        0,
        check=_count("ps", 0, "use 0 parameter servers (all-reduce) or more (asynchronous)"),
        help="Parameter servers per job (> 0 means asynchronous training with a chief).",
    ).tag(config=True)
    workers = CheckedInt(2, check=_count("workers", 1, "use at least 1 worker"), help="Workers per job.").tag(
        config=True
    )
    gpus = CheckedInt(
        0,
        check=_count("gpus", 0, "use a whole number of GPUs, 0 or more"),
        help="GPUs per worker and chief (never given to ps).",
    ).tag(config=True)
    cpu = CheckedUnicode(
        None,
        allow_none=True,
        check=_quantity("cpu"),
        help="CPU per replica, a Kubernetes quantity such as '2' or '500m'.",
    ).tag(config=True)
    memory = CheckedUnicode(
        None,
        allow_none=True,
        check=_quantity("memory"),
        help="Memory per replica, a Kubernetes quantity such as '4Gi'.",
    ).tag(config=True)
    image = CheckedUnicode(
        "tfk8s/trainer:0.1.0",
        check=_kube(check_image),
        help="Container image of the replicas (Kubernetes).",
    ).tag(config=True)
    image_pull_secrets = CheckedList(
        Unicode(),
        check=_kube(check_name_list, "image_pull_secrets", "regcred"),
        help="Names of Secrets used to pull the image.",
    ).tag(config=True)
    service_account = CheckedUnicode(
        None,
        allow_none=True,
        check=_kube(check_object_name, "service_account", "trainer"),
        help="ServiceAccount the replica pods run as.",
    ).tag(config=True)
    namespace = CheckedUnicode(
        None,
        allow_none=True,
        check=_kube(check_dns_label, "namespace", "ml"),
        help="Kubernetes namespace; default: the kubeconfig context's, or the pod's own under JupyterHub.",
    ).tag(config=True)
    context = CheckedUnicode(
        None, allow_none=True, check=_text("context", "my-cluster"), help="kubeconfig context to use."
    ).tag(config=True)
    node_selector = CheckedDict(
        check=_kube(check_string_map, "node_selector", "{'accelerator': 'nvidia-t4'}"),
        help="nodeSelector for replica pods.",
    ).tag(config=True)
    tolerations = CheckedList(
        Dict(),
        check=_kube(check_tolerations),
        help="Tolerations for replica pods (e.g. for GPU nodes).",
    ).tag(config=True)
    gpu_resource = CheckedUnicode(
        "nvidia.com/gpu",
        check=_kube(check_resource_name),
        help="Extended resource name of a GPU.",
    ).tag(config=True)
    labels = CheckedDict(
        check=_kube(check_string_map, "labels", "{'team': 'ml'}"),
        help="Extra labels on every object of a job.",
    ).tag(config=True)
    env = CheckedDict(
        check=_string_map("env", "{'WANDB_MODE': 'offline'}", keys_are_env=True),
        help="Extra environment variables for every replica (stored in the job's objects: on Kubernetes "
        "anyone who can read the namespace's ConfigMaps and pods reads them; use secret_env for secrets).",
    ).tag(config=True)
    secret_env = CheckedDict(
        check=_secret_env,
        help="Kubernetes: environment variables taken from Secrets in the job's namespace, "
        "{'WANDB_API_KEY': 'wandb/api-key'} (NAME: secret-name/key), given to the pods as secretKeyRef.",
    ).tag(config=True)
    max_restarts = CheckedInt(
        3,
        check=_count("max_restarts", 0, "use 0 (never restart) or more"),
        help="Restarts per replica (all workers together for all-reduce) before failing.",
    ).tag(config=True)
    checkpoint_dir = CheckedUnicode(
        None,
        allow_none=True,
        check=_text("checkpoint_dir", "/data/ckpt"),
        help="Where BackupAndRestore checkpoints go; default: inside the job record.",
    ).tag(config=True)
    metric_interval = CheckedFloat(
        1.0,
        check=_seconds("metric_interval", False, "1.0"),
        help="Seconds between per-step metric points; 0 reports every step (epoch ends always report).",
    ).tag(config=True)
    setup_timeout = CheckedFloat(
        180.0,
        check=_seconds("setup_timeout", True, "120"),
        help="Seconds a job may take to bring every replica up before it fails.",
    ).tag(config=True)
    stall_timeout = CheckedFloat(
        120.0,
        check=_seconds("stall_timeout", False, "120"),
        help="Seconds without training progress (or with a replica frozen) before the hung replica is "
        "killed and restarted per the role rules, counted in max_restarts; 0 turns it off.",
    ).tag(config=True)
    deadline = CheckedUnicode(
        None,
        allow_none=True,
        check=_duration("deadline"),
        help="Longest a job may run (seconds, or e.g. '30m', '2h'); past it the job fails. Default: none.",
    ).tag(config=True)
    priority_class = CheckedUnicode(
        None,
        allow_none=True,
        check=_kube(check_object_name, "priority_class", "batch-low"),
        help="Kubernetes PriorityClass of the replica pods.",
    ).tag(config=True)
    queue = CheckedUnicode(
        None,
        allow_none=True,
        check=_kube(check_object_name, "queue", "team-queue"),
        help="Kueue LocalQueue: the Jobs are created suspended and start when Kueue admits them.",
    ).tag(config=True)
    storage = CheckedUnicode(
        None,
        allow_none=True,
        check=_storage,
        help="Kubernetes: where each job's artifacts (checkpoints, model, TensorBoard logs) go: "
        "pvc:CLAIM[/subpath] or a gs:// / s3:// URI. Without it they vanish with the pods.",
    ).tag(config=True)
    storage_mount = CheckedUnicode(
        None,
        allow_none=True,
        check=_text("storage_mount", "/home/jovyan/shared"),
        help="Where this notebook sees the storage claim's root (a pvc: storage mounted in the notebook "
        "pod too); default: the path the job pods mount it at.",
    ).tag(config=True)
    save_model = CheckedBool(
        True,
        check=_flag("save_model"),
        help="Save the trained model into the job's artifacts after a successful fit.",
    ).tag(config=True)
    keep_jobs = CheckedUnicode(
        None,
        allow_none=True,
        check=_keep_jobs,
        help="Job history kept when jobs are listed: a count (e.g. '50') or an age (e.g. '7d'); "
        "older finished jobs are deleted with their records. Default: keep everything.",
    ).tag(config=True)
    ttl_seconds_after_finished = CheckedInt(
        3600,
        check=_count("ttl_seconds_after_finished", 0, "use 0 or more seconds"),
        help="Kubernetes: seconds finished Jobs are kept.",
    ).tag(config=True)
    max_payload_bytes = CheckedInt(
        4 * 1024 * 1024,
        check=_count("max_payload_bytes", 1, "use a positive number of bytes, e.g. 4194304"),
        help="Largest notebook context shipped with a cell.",
    ).tag(config=True)
    panel = CheckedBool(True, check=_flag("panel"), help="Show the live panel under a training cell.").tag(
        config=True
    )
    frontend = CheckedUnicode(
        "auto",
        check=_one_of("frontend", ("auto", "widgets", "text"), "auto, widgets or text"),
        help="How a training cell shows progress: widgets (the live panel), text (progress lines and a final "
        "summary), or auto (the live panel under an interactive front end such as JupyterLab; text in batch "
        "runs - nbconvert, papermill, nbclient - and in terminal IPython).",
    ).tag(config=True)
    batch_wait = CheckedBool(
        True,
        check=_flag("batch_wait"),
        help="Without an interactive front end (nbconvert, papermill, nbclient, terminal IPython) a training "
        "cell waits for its job and its output ends with the final summary; False returns at once (as "
        "--no-wait does for one cell).",
    ).tag(config=True)

    keep_warm = CheckedFloat(
        600.0,
        check=_finite_seconds("keep_warm", "600 (0 turns kept replicas off)"),
        help="Local backend: seconds a finished job's replica processes stay to take the next run of the same "
        "shape (strategy, counts, GPUs, Keras flavour, env) without a cold start; 0 turns it off.",
    ).tag(config=True)
    warm_pool = CheckedInt(
        None,
        allow_none=True,
        check=lambda v: _pool_size(
            _check_count(v, "warm_pool", 0, "use 0 (off) or a number of processes, e.g. 4")
        ),
        help="Local backend: processes kept with TensorFlow imported, waiting to become the replicas of a "
        "new job; default (None): as many as the last job had; 0 turns the pool off.",
    ).tag(config=True)
    warm_pool_idle = CheckedFloat(
        600.0,
        check=_seconds("warm_pool_idle", True, "600"),
        help="Local backend: seconds an unclaimed warm process waits before it exits.",
    ).tag(config=True)

    @classmethod
    def from_config(cls, config=None, parent=None, where: str = "") -> tuple[TFK8s, list[str]]:
        """The defaults from ``config`` (or ``parent``'s), each ``c.TFK8s.<option>`` checked on its own:
        ``(defaults, problems)``, where every refused option keeps its built-in default and gives one
        sentence in ``problems`` (``"c.TFK8s.workers in <where>: workers is -1; use at least 1 worker."``)."""
        from copy import deepcopy

        from traitlets.config import Config

        if config is None:
            config = parent.config if parent is not None else Config()
        section = config.get("TFK8s", {}) if "TFK8s" in config else {}
        probe, problems, refused = cls(), [], []
        options = probe.trait_names(config=True)
        for key, value in section.items():
            if not probe.has_trait(key):
                close = difflib.get_close_matches(key, options, n=1)
                hint = f" (did you mean c.TFK8s.{close[0]}?)" if close else ""
                problems.append(
                    f"c.TFK8s.{key}{' in ' + where if where else ''} is not an option{hint}; "
                    "%tfk8s_config lists the options."
                )
                refused.append(key)
                continue
            try:
                setattr(probe, key, deepcopy(value))
            except TraitError as e:
                problems.append(f"c.TFK8s.{key}{' in ' + where if where else ''}: {e}")
                refused.append(key)
        if refused:
            config = deepcopy(config)
            for key in refused:
                del config.TFK8s[key]
        return cls(parent=parent, config=config), problems

    def job_options(self) -> dict:
        """The defaults as keyword arguments of :func:`tfk8s_jupyter.spec.make_spec`."""
        names = (
            "backend flavor strategy ps workers gpus cpu memory image image_pull_secrets service_account "
            "namespace context node_selector tolerations gpu_resource labels env secret_env max_restarts "
            "checkpoint_dir "
            "metric_interval setup_timeout stall_timeout ttl_seconds_after_finished "
            "deadline priority_class queue storage save_model"
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
