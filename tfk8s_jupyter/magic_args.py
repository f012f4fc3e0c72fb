"""The magics' arguments: the shared ``magic_arguments`` bundles, parsing a magic line into one
sentence that names the fix on bad usage, and turning flags plus ``TFK8s`` defaults into job options.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import re
import shlex

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument

from .config import TFK8s, current_owner

# Flags that map 1:1 to JobSpec fields (argparse dest -> spec field).
SPEC_FLAGS = (
    "ps",
    "workers",
    "gpus",
    "strategy",
    "backend",
    "flavor",
    "context",
    "image",
    "namespace",
    "cpu",
    "memory",
    "checkpoint_dir",
    "max_restarts",
    "metric_interval",
    "deadline",
    "priority_class",
    "queue",
    "service_account",
    "stall_timeout",
    "storage",
    "resume_from",
    "save_model",
)


def positive_seconds(text: str, flag: str, example: str) -> float:
    """An argparse ``type``: a positive number of seconds, else the sentence naming the value and the fix."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive number of seconds; use e.g. {flag} {example}"
        )
    return seconds


# %%tfk8s_train's options, in the order its help lists them.
TRAIN_ARGUMENTS = (
    argument(
        "--ps", type=int, default=None, help="Parameter servers (> 0: asynchronous training with a chief)."
    ),
    argument("--workers", type=int, default=None, help="Workers."),
    argument("--gpus", type=int, default=None, help="GPUs per worker and chief (never the ps)."),
    argument(
        "--strategy",
        default=None,
        help="auto (default), parameter_server, multi_worker_mirrored or mirrored.",
    ),
    argument("--backend", default=None, help="local (processes on this machine) or kubernetes."),
    argument("--flavor", default=None, help="Kubernetes flavor: auto, native or tfjob."),
    argument("--context", default=None, help="kubeconfig context (Kubernetes)."),
    argument("--name", default=None, help="Job name (lowercase letters, digits, '-'); generated if omitted."),
    argument("--image", default=None, help="Container image of the replicas (Kubernetes)."),
    argument("--namespace", default=None, help="Kubernetes namespace."),
    argument("--cpu", default=None, help="CPU per replica, e.g. 2 or 500m."),
    argument("--memory", default=None, help="Memory per replica, e.g. 4Gi."),
    argument("--checkpoint-dir", dest="checkpoint_dir", default=None, help="Where checkpoints go."),
    argument(
        "--storage",
        default=None,
        help="Kubernetes: where the job's artifacts go: pvc:CLAIM[/subpath] or a gs:// / s3:// URI.",
    ),
    argument(
        "--resume-from",
        dest="resume_from",
        default=None,
        metavar="JOB",
        help="Start from that job's last checkpoint (the step count continues).",
    ),
    argument(
        "--no-save-model",
        dest="save_model",
        action="store_false",
        default=None,
        help="Do not save the trained model into the job's artifacts.",
    ),
    argument("--max-restarts", dest="max_restarts", type=int, default=None, help="Restarts before failing."),
    argument(
        "--metric-interval",
        dest="metric_interval",
        type=float,
        default=None,
        help="Seconds between per-step metric points; 0 reports every step (epoch ends always report).",
    ),
    argument(
        "--stall-timeout",
        dest="stall_timeout",
        type=float,
        default=None,
        help="Seconds without training progress before a hung replica is restarted (0: off; default 120).",
    ),
    argument(
        "--deadline",
        default=None,
        help="Longest the job may run: seconds, or e.g. 30m, 2h; past it the job fails (default: none).",
    ),
    argument("--priority-class", dest="priority_class", default=None, help="PriorityClass (Kubernetes)."),
    argument("--queue", default=None, help="Kueue LocalQueue; the job waits, 'queued', until admitted."),
    argument("--service-account", dest="service_account", default=None, help="ServiceAccount of the pods."),
    argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="Environment variable for every replica (repeatable). Its value is stored in the job's "
        "objects, readable by anyone who can read them; use --secret-env for secrets.",
    ),
    argument(
        "--secret-env",
        dest="secret_env",
        action="append",
        metavar="NAME=SECRET/KEY",
        help="Kubernetes: environment variable from a key of a Secret in the job's namespace (repeatable).",
    ),
    argument(
        "--files",
        action="append",
        metavar="PATH",
        help=(
            "Input files, folders or globs in the notebook's folder that the cell reads (any kind of file; "
            "repeatable or comma-separated). Relative paths named in the cell are found without it; given, "
            "folders named only in the cell are not sent whole to Kubernetes."
        ),
    ),
    argument("--out", default=None, metavar="VAR", help="Also store the job handle in this variable."),
    argument("--dry-run", dest="dry_run", action="store_true", help="Validate and print; start nothing."),
    argument("--wait", action="store_true", help="Block until the job ends (the panel still updates)."),
    argument(
        "--no-wait",
        dest="no_wait",
        action="store_true",
        help="Return at once even in a batch run (nbconvert, papermill, terminal IPython), which waits by "
        "default (TFK8s.batch_wait).",
    ),
    argument(
        "--timeout",
        type=lambda text: positive_seconds(text, "--timeout", "600"),
        default=None,
        help="With --wait: give up waiting after this many seconds.",
    ),
    argument(
        "--replace",
        action="store_true",
        help="Stop the job this cell started if it still runs, then start anew (without it a re-run "
        "re-attaches to the running job).",
    ),
    argument("--panel", action="store_true", help="Show a settings form with a Launch button first."),
    argument(
        "--no-panel", dest="no_panel", action="store_true", help="Submit without showing the live panel."
    ),
)

# The arguments of the magics that act on one job.
job_name_argument = argument(
    "name", nargs="?", default=None, help="Job name (default: the last job of this kernel)."
)
job_backend_argument = argument("--backend", default=None, help="local or kubernetes.")


def train_arguments(func):
    """Decorate ``func`` with every :data:`TRAIN_ARGUMENTS` (under ``@magic_arguments``)."""
    for add in reversed(TRAIN_ARGUMENTS):  # decorators apply bottom-up
        func = add(func)
    return func


# A value each option takes, for "give it a value, e.g. ...": an option missing here gets a number when it
# takes one, else the magic's help is named.
_EXAMPLES = {
    "--workers": "2",
    "--metric-interval": "1.0",
    "--stall-timeout": "120",
    "--timeout": "600",
    "--image-timeout": "120",
    "--tail": "50",
    "--strategy": "parameter_server",
    "--backend": "kubernetes",
    "--flavor": "tfjob",
    "--context": "my-cluster",
    "--name": "my-job",
    "--image": "tfk8s/trainer:0.1.0",
    "--namespace": "team-a",
    "--cpu": "500m",
    "--memory": "4Gi",
    "--checkpoint-dir": "/data/ckpt",
    "--storage": "pvc:CLAIM",
    "--resume-from": "my-earlier-job",
    "--deadline": "90s",
    "--priority-class": "high-priority",
    "--queue": "team-queue",
    "--service-account": "trainer",
    "--env": "KEY=VALUE",
    "--secret-env": "NAME=SECRET/KEY",
    "--files": "data.csv",
    "--out": "job",
    "--replica": "worker-0",
    "--older-than": "7d",
}


def magic_name(func=None) -> str:
    """How a user types ``func``'s magic: ``%%name`` for a cell magic, ``%name`` for a line magic."""
    if func is None:
        return "%%tfk8s_train"
    prefix = "%%" if "cell" in inspect.signature(func).parameters else "%"
    return prefix + func.parser.prog.lstrip("%")


def _example(flag: str, func, kind: str) -> str | None:
    """A value for ``flag``: its example, else a number of ``kind`` ("int", "float") when it takes one."""
    if flag in _EXAMPLES:
        return _EXAMPLES[flag]
    actions = func.parser._actions if func is not None else []
    action = next((a for a in actions if flag in a.option_strings), None)
    takes = kind or getattr(getattr(action, "type", None), "__name__", "")
    return {"int": "2", "float": "10"}.get(takes)


def fix_usage(message: str, func=None) -> str:
    """Argparse's wording, turned into one sentence that names the fix."""
    message = str(message).strip().rstrip(".")
    name = magic_name(func)
    if message.startswith("unrecognized arguments:"):
        words = message.split(":", 1)[1].split()
        bad = next((w for w in words if w.startswith("-")), None)
        if bad is None:
            return f"unexpected argument(s) {' '.join(words)}; run {name}? to see what it takes."
        known = [o for a in func.parser._actions for o in a.option_strings] if func is not None else []
        close = difflib.get_close_matches(bad.split("=")[0], known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"unknown option {bad}; {hint}run {name}? to see the options."
    m = re.match(r"argument (-[-\w]+)", message)
    if m and "; use e.g." in message:  # an argument type's own sentence (positive_seconds)
        return f"{m.group(1)} {message.split(': ', 1)[1]}."
    flag = m.group(1) if m else "--workers"
    for kind in ("int", "float"):
        if f"invalid {kind} value" in message:
            return f"{message}; give a number, e.g. {flag} {_example(flag, func, kind)}."
    if "expected one argument" in message:
        example = _example(flag, func, "")
        if example is None:
            return f"{message}; give it a value (run {name}? to see what it takes)."
        return f"{message}; give it a value, e.g. {flag} {example}."
    return f"{message}; run {name}? for the options and examples."


def parse_magic_line(func, line: str):
    """Parse a magic's line with shell quoting (``--env 'MSG=a b'``).

    Raises:
        UsageError: one sentence naming the problem and the fix.
    """
    try:
        argv = shlex.split(line)
    except ValueError:
        raise UsageError(
            "the magic line has a quote that is never closed; close it, e.g. --env 'MSG=a b'."
        ) from None
    try:
        return func.parser.parse_args(argv)
    except UsageError as e:
        raise UsageError(fix_usage(str(e), func)) from None


def parse_env(items: list[str] | None, flag: str = "--env", example: str = "value") -> dict[str, str]:
    """``--env KEY=VALUE`` (or ``--secret-env NAME=SECRET/KEY``) flags as a dict."""
    env: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            name = "KEY" if example == "value" else "NAME"  # --secret-env NAME=SECRET/KEY
            fixed = f"{item or name}={example}" if not sep else f"{name}{item}"  # the missing half named
            raise UsageError(
                f"{flag} {item!r} is not {name}={example.upper() if example != 'value' else 'VALUE'}; "
                f"write it as {flag} {fixed}."
            )
        env[key] = value
    return env


def split_files(items: list[str] | None) -> list[str]:
    """``--files`` flags (repeatable, comma-separated) as one list."""
    out: list[str] = []
    for item in items or []:
        out.extend(p for p in item.split(",") if p)
    return out


def job_options(defaults: TFK8s, args, overrides: dict | None = None) -> dict:
    """The ``TFK8s`` defaults overridden by the flags in ``args`` (and by ``overrides``, e.g. the
    settings form): keyword arguments for :func:`~tfk8s_jupyter.spec.make_spec`."""
    merged = defaults.job_options()
    given = {k: getattr(args, k, None) for k in SPEC_FLAGS}
    given.update(overrides or {})
    for k, v in given.items():
        if v is not None:
            merged[k] = v
    ps_given = given.get("ps") is not None
    if not ps_given and (given.get("workers") is not None or given.get("strategy") is not None):
        strategy = str(given.get("strategy") or "auto").replace("-", "_").lower()
        merged["ps"] = 0 if strategy not in ("parameter_server", "ps") else max(1, defaults.ps)
    env = dict(merged.get("env") or {})
    env.update(parse_env(getattr(args, "env", None)))
    merged["env"] = env
    secret_env = dict(merged.get("secret_env") or {})
    secret_env.update(parse_env(getattr(args, "secret_env", None), flag="--secret-env", example="SECRET/KEY"))
    merged["secret_env"] = secret_env
    merged["owner"] = current_owner()
    return merged
