"""Job specifications: what to run, how many of each replica, with which resources.

Pure data and validation, no I/O. Every invalid value raises :class:`SpecError` with one sentence that
names the value and says how to fix it; nothing is ever started for an invalid spec.
"""

from __future__ import annotations

import ast
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

STRATEGIES = ("parameter_server", "multi_worker_mirrored", "mirrored")
STRATEGY_ALIASES = {
    "auto": "auto",
    "ps": "parameter_server",
    "parameter_server": "parameter_server",
    "parameterserver": "parameter_server",
    "mwms": "multi_worker_mirrored",
    "multi_worker_mirrored": "multi_worker_mirrored",
    "multiworkermirrored": "multi_worker_mirrored",
    "mirrored": "mirrored",
}
BACKENDS = ("local", "kubernetes")
FLAVORS = ("auto", "native", "tfjob")
ROLES = ("chief", "worker", "ps")
MAX_NAME_LENGTH = 40

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY_RE = re.compile(
    r"^(?P<num>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][-+]?[0-9]+)?$"
)
_SUFFIX_FACTORS = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_DURATION_RE = re.compile(
    r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$"
)


def parse_duration(value, what: str = "duration") -> float:
    """Seconds from a number or a duration like ``90``, ``90s``, ``30m``, ``2h``, ``1h30m``, ``1d``.

    Raises:
        SpecError: not a positive duration.
    """
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value.strip().lower())
        if m and value.strip() and any(m.groups()):
            d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            seconds = d * 86400 + h * 3600 + mi * 60 + s
    if seconds is None or not seconds > 0 or seconds != seconds:
        raise SpecError(
            f"{what} {value!r} is not a positive duration; use seconds or e.g. '90s', '30m', '2h'."
        )
    return seconds


_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class SpecError(ValueError):
    """An invalid job specification; the message is one sentence naming the value and the fix."""


def parse_quantity(value: str | int | float, what: str = "quantity") -> float:
    """Parse a Kubernetes resource quantity (``"500m"``, ``"2Gi"``, ``"1.5"``) into a number.

    Raises:
        SpecError: the value is not a Kubernetes quantity.
    """
    if isinstance(value, bool):
        raise SpecError(
            f"{what} {value!r} is not a quantity; use a number or a string like '2', '500m' or '4Gi'."
        )
    if isinstance(value, (int, float)):
        if value <= 0:
            raise SpecError(f"{what} {value!r} must be positive; use a value like '2', '500m' or '4Gi'.")
        return float(value)
    m = _QUANTITY_RE.match(str(value).strip())
    if not m:
        raise SpecError(
            f"{what} {value!r} is not a Kubernetes quantity; use a number with an optional suffix "
            "(m, k, M, G, T or Ki, Mi, Gi, Ti), e.g. '500m', '2', '4Gi'."
        )
    suffix = m.group("suffix")
    number = float(m.group("num"))
    if suffix and suffix[0] in "eE" and len(suffix) > 1 and suffix not in _SUFFIX_FACTORS:
        factor = 10 ** int(suffix[1:])
    else:
        factor = _SUFFIX_FACTORS[suffix]
    if number * factor <= 0:
        raise SpecError(f"{what} {value!r} must be positive; use a value like '2', '500m' or '4Gi'.")
    return number * factor


@dataclass(frozen=True)
class Resources:
    """Per-replica compute resources. ``cpu``/``memory`` are Kubernetes quantities (requests = limits)."""

    cpu: str | None = None
    memory: str | None = None
    gpus: int = 0

    def validate(self, role: str) -> None:
        if self.cpu is not None:
            parse_quantity(self.cpu, "cpu")
        if self.memory is not None:
            parse_quantity(self.memory, "memory")
        if not isinstance(self.gpus, int) or isinstance(self.gpus, bool) or self.gpus < 0:
            raise SpecError(f"gpus for {role} is {self.gpus!r}; use a whole number of GPUs, 0 or more.")
        if role == "ps" and self.gpus:
            raise SpecError(
                f"ps replicas were given {self.gpus} GPU(s), but parameter servers only hold variables; "
                "drop the GPUs for ps (GPUs go to the chief and workers)."
            )


@dataclass(frozen=True)
class ReplicaSpec:
    """One role of the job: how many replicas, their resources and restart limit."""

    role: str
    count: int
    resources: Resources = Resources()
    max_restarts: int = 3

    @property
    def names(self) -> list[str]:
        return [f"{self.role}-{i}" for i in range(self.count)]


@dataclass(frozen=True)
class JobSpec:
    """A validated, immutable description of one distributed training job.

    Build it with :func:`make_spec`, which resolves ``strategy="auto"`` and validates every field.
    """

    name: str
    code: str
    strategy: str
    workers: int
    ps: int = 0
    gpus: int = 0
    cpu: str | None = None
    memory: str | None = None
    backend: str = "local"
    flavor: str = "auto"
    image: str | None = None
    namespace: str | None = None
    context: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # Kubernetes: NAME -> "secret-name/key", given to every replica as a secretKeyRef (never stored in the job's
    # objects as a value, unlike ``env``).
    secret_env: Mapping[str, str] = field(default_factory=dict)
    max_restarts: int = 3
    checkpoint_dir: str | None = None
    metric_interval: float = 1.0
    setup_timeout: float = 120.0
    stall_timeout: float = 120.0
    owner: str = "user"
    labels: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, str], ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    service_account: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    ttl_seconds_after_finished: int = 3600
    deadline: float | str | None = None  # seconds or a duration like "90m"; the job fails past it
    priority_class: str | None = None
    queue: str | None = None  # Kueue LocalQueue: the Jobs are created suspended until admitted
    # Results (one artifact directory per job, exported to the cell as TFK8S_ARTIFACTS): Kubernetes storage
    # ``pvc:NAME[/subpath]`` or an object-store URI (``gs://``, ``s3://``); local jobs keep theirs in the record.
    storage: str | None = None
    resume_from: str | None = None  # a job name: restore its last checkpoint before training
    save_model: bool = True  # save the trained model into the artifacts after a successful fit
    # The per-job secret that authenticates protocol lines (TFK8S_PROTOCOL_KEY); generated by make_spec.
    protocol_key: str = field(default="", repr=False, compare=False)

    @property
    def deadline_seconds(self) -> float | None:
        """The deadline in seconds (``None``: no deadline)."""
        return None if self.deadline is None else parse_duration(self.deadline, "deadline")

    @property
    def has_chief(self) -> bool:
        """Parameter-server jobs get one chief (the coordinator); all-reduce jobs use worker 0."""
        return self.strategy == "parameter_server"

    @property
    def reporting_replica(self) -> str:
        """The replica whose stdout carries the line protocol and whose exit decides the job."""
        return "chief-0" if self.has_chief else "worker-0"

    @property
    def replicas(self) -> tuple[ReplicaSpec, ...]:
        """The roles in creation order: ps first, then chief, then workers."""
        worker_res = Resources(self.cpu, self.memory, self.gpus)
        out = []
        if self.ps:
            out.append(ReplicaSpec("ps", self.ps, Resources(self.cpu, self.memory, 0), self.max_restarts))
        if self.has_chief:
            out.append(ReplicaSpec("chief", 1, worker_res, self.max_restarts))
        out.append(ReplicaSpec("worker", self.workers, worker_res, self.max_restarts))
        return tuple(out)

    @property
    def replica_names(self) -> list[str]:
        return [n for r in self.replicas for n in r.names]

    @property
    def total_gpus(self) -> int:
        return sum(r.count * r.resources.gpus for r in self.replicas)

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["env"] = dict(self.env)
        d["secret_env"] = dict(self.secret_env)
        d["labels"] = dict(self.labels)
        d["node_selector"] = dict(self.node_selector)
        d["tolerations"] = [dict(t) for t in self.tolerations]
        d["image_pull_secrets"] = list(self.image_pull_secrets)
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> JobSpec:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["tolerations"] = tuple(d.get("tolerations") or ())
        d["image_pull_secrets"] = tuple(d.get("image_pull_secrets") or ())
        return cls(**d)

    def with_(self, **changes) -> JobSpec:
        """A copy with some fields changed, validated again."""
        spec = replace(self, **changes)
        validate(spec)
        return spec


STORAGE_SCHEMES = ("pvc", "gs", "s3", "hdfs")


@dataclass(frozen=True)
class Storage:
    """Where a Kubernetes job's artifacts live: a PersistentVolumeClaim (with an optional subpath) or a URI."""

    kind: str  # "pvc" or "uri"
    claim: str | None = None
    subpath: str = ""
    uri: str | None = None


def parse_storage(value: str) -> Storage:
    """``pvc:NAME[/subpath]`` or ``gs://bucket/path`` / ``s3://bucket/path`` / ``hdfs://...``."""
    fix = "use pvc:CLAIM[/subpath] (a PersistentVolumeClaim) or a gs://, s3:// or hdfs:// URI"
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"storage {value!r} is empty; {fix}.")
    text = value.strip()
    if text.startswith("pvc:"):
        rest = text[4:].strip("/")
        claim, _, sub = rest.partition("/")
        if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", claim or "") or len(claim) > 253:
            raise SpecError(
                f"storage {value!r} names no valid claim ({claim!r}); {fix}, e.g. pvc:team-data/runs."
            )
        parts = [p for p in sub.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise SpecError(f"storage {value!r} has '.' or '..' in its subpath; use a plain folder path.")
        return Storage("pvc", claim=claim, subpath="/".join(parts))
    m = re.match(r"^([a-z][a-z0-9+.-]*)://([^/]+)(/.*)?$", text)
    if m is None:
        raise SpecError(f"storage {value!r} is neither a claim nor a URI; {fix}.")
    if m.group(1) not in STORAGE_SCHEMES:
        raise SpecError(f"storage scheme {m.group(1)!r} in {value!r} is not supported; {fix}.")
    return Storage("uri", uri=text.rstrip("/"))


def parse_keep(value) -> tuple[int | None, float | None]:
    """A history limit: a count of jobs (``50``, ``"50"``) or an age (``"7d"``, ``"12h"``, seconds).

    Returns ``(count, None)`` or ``(None, seconds)``."""
    fix = "use a number of jobs (e.g. 50) or an age (e.g. '7d', '12h')"
    if isinstance(value, bool):
        raise SpecError(f"keep_jobs {value!r} is neither a count nor an age; {fix}.")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        count = int(value)
        if count < 1:
            raise SpecError(f"keep_jobs {value!r} would keep no job; {fix}.")
        return count, None
    if isinstance(value, str) and value.strip() and value.strip()[-1].isalpha():
        return None, parse_duration(value, "keep_jobs")
    raise SpecError(f"keep_jobs {value!r} is neither a count nor an age; {fix}.")


def generate_name(code: str) -> str:
    """``tf-<cell-hash>-<random>``: stable prefix per cell, unique per submission, DNS-1123."""
    digest = hashlib.sha256(code.encode()).hexdigest()[:6]
    return f"tf-{digest}-{secrets.token_hex(3)[:5]}"


def resolve_strategy(strategy: str | None, ps: int, workers: int, gpus: int) -> str:
    """Resolve ``auto`` and aliases to one of :data:`STRATEGIES`."""
    key = str(strategy or "auto").strip().lower().replace("-", "_")
    resolved = STRATEGY_ALIASES.get(key) or STRATEGY_ALIASES.get(key.replace("_", ""))
    if resolved is None:
        raise SpecError(
            f"strategy {strategy!r} is unknown; use auto, parameter_server, multi_worker_mirrored or mirrored."
        )
    if resolved != "auto":
        return resolved
    if ps > 0:
        return "parameter_server"
    if workers > 1:
        return "multi_worker_mirrored"
    return "mirrored"


def _check_count(value, what: str, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                raise ValueError
        except ValueError:
            raise SpecError(f"{what} {value!r} is not a whole number; {fix}.") from None
    if value < minimum:
        raise SpecError(f"{what} is {value}; {fix}.")
    return value


def _check_ps_has_workers(ps: int, workers) -> None:
    if ps > 0 and isinstance(workers, int) and not isinstance(workers, bool) and workers < 1:
        raise SpecError(
            f"ps={ps} with workers={workers} cannot train: parameter servers only hold variables and "
            "workers compute; use workers=1 or more."
        )


# A line IPython would run but Python cannot: a magic (``%x``, ``%%x``, ``y = %x``) or a shell escape (``!x``).
_IPYTHON_LINE_RE = re.compile(r"^\s*(?:[A-Za-z_][\w.,\s]*=\s*)?(%%|[!%])")


def check_code(code: str) -> None:
    """Reject empty code and code that does not compile (naming the line; IPython syntax named as such)."""
    if code is not None and not isinstance(code, str):
        raise SpecError(
            f"the code {code!r} is not text; pass the cell's Python source as a string, e.g. submit(cell_text)."
        )
    if not code or not code.strip():
        raise SpecError("the cell is empty; write the model and its model.fit(...) call in the cell.")
    try:
        tree = ast.parse(code)
        compile(tree, "<cell>", "exec")  # the compiler's own checks ('return' outside a function, ...)
    except SyntaxError as e:
        for lineno, line in enumerate(code.splitlines(), 1):
            m = _IPYTHON_LINE_RE.match(line)
            if m is None:
                continue
            text = line.strip()[:60]
            if text.startswith("%%tfk8s_train"):
                raise SpecError(
                    f"line {lineno} of the code is the magic line {text!r}; submit() takes plain Python, so "
                    "drop that line and pass its flags as arguments, e.g. submit(code, workers=2)."
                ) from None
            kind = "a shell escape ('!')" if m.group(1) == "!" else "an IPython magic ('%')"
            raise SpecError(
                f"line {lineno} of the code is {kind}, {text!r}, which is IPython syntax and not Python the "
                "replicas can run; remove it (run it in the notebook before submitting) or write it in plain "
                "Python."
            ) from None
        raise SpecError(
            f"the cell has a syntax error on line {e.lineno}: {e.msg}; fix that line and run the cell again."
        ) from None
    if all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in tree.body):
        raise SpecError(
            "the cell has only comments, so its job would train nothing; write the model and its "
            "model.fit(...) call in the cell (or uncomment them)."
        )
    check_kernel_calls(code, tree)


GUARDS = (ast.If, ast.IfExp, ast.Try, ast.While, ast.BoolOp, ast.Match)


def check_kernel_calls(code: str, tree: ast.AST) -> None:
    """Reject ``get_ipython().<method>`` (a magic or shell escape spelled in Python, as nbconvert writes
    them) where it always runs: the replicas have no IPython kernel, and their ``get_ipython()`` answers
    None, as in any plain Python process. A call under a condition or a ``try`` (``if IN_COLAB:
    get_ipython().system(...)``) is left to that guard, which sees None in a replica."""
    guarded = {id(n) for g in ast.walk(tree) if isinstance(g, GUARDS) for n in ast.walk(g) if n is not g}
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "get_ipython"
        ):
            text = (ast.get_source_segment(code, node) or f"get_ipython().{node.attr}")[:60]
            raise SpecError(
                f"line {node.lineno} of the code calls {text}, which needs the notebook's IPython kernel and "
                "the replicas have none; run it in a separate cell above, or write it in plain Python."
            )


def check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise SpecError("the job name is empty; use lowercase letters, digits and '-', e.g. 'mnist-ps'.")
    if len(name) > MAX_NAME_LENGTH:
        raise SpecError(
            f"job name {name!r} is {len(name)} characters long; use at most {MAX_NAME_LENGTH} "
            "(it becomes part of Kubernetes object and DNS names)."
        )
    if not _NAME_RE.match(name):
        raise SpecError(
            f"job name {name!r} is not a valid DNS-1123 label; use lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit, e.g. 'mnist-ps'."
        )


def validate(spec: JobSpec) -> None:
    """Validate every field of a spec; raise :class:`SpecError` naming the first bad value."""
    check_name(spec.name)
    check_code(spec.code)
    if spec.strategy not in STRATEGIES:
        raise SpecError(
            f"strategy {spec.strategy!r} is unknown; use auto, parameter_server, multi_worker_mirrored or mirrored."
        )
    ps = _check_count(spec.ps, "ps", 0, "use 0 parameter servers (all-reduce) or more (asynchronous)")
    _check_ps_has_workers(ps, spec.workers)
    workers = _check_count(spec.workers, "workers", 1, "use at least 1 worker")
    if spec.strategy == "parameter_server" and ps == 0:
        raise SpecError(
            "strategy parameter_server needs at least one parameter server; pass ps=1 or more, "
            "or use strategy multi_worker_mirrored for synchronous training."
        )
    if spec.strategy != "parameter_server" and ps > 0:
        raise SpecError(
            f"ps={ps} does not fit strategy {spec.strategy}, which is synchronous and has no parameter servers; "
            "use ps=0, or strategy parameter_server (or auto) for asynchronous training."
        )
    if spec.strategy == "mirrored" and workers > 1:
        raise SpecError(
            f"strategy mirrored runs on one machine but workers={workers}; use workers=1, "
            "or strategy multi_worker_mirrored for several workers."
        )
    for r in spec.replicas:
        r.resources.validate(r.role)
    if spec.backend not in BACKENDS:
        raise SpecError(f"backend {spec.backend!r} is unknown; use 'local' or 'kubernetes'.")
    if spec.flavor not in FLAVORS:
        raise SpecError(f"flavor {spec.flavor!r} is unknown; use auto, native or tfjob.")
    _check_count(spec.max_restarts, "max_restarts", 0, "use 0 (never restart) or more")
    _check_count(
        spec.ttl_seconds_after_finished,
        "ttl_seconds_after_finished",
        0,
        "use 0 or more seconds (how long Kubernetes keeps a finished job's objects), e.g. 3600",
    )
    # 0 is valid: a metric point at every step (fit's epoch ends always report).
    if not _is_number(spec.metric_interval) or not spec.metric_interval >= 0:
        raise SpecError(f"metric_interval {spec.metric_interval!r} must be 0 or more seconds, e.g. 1.0.")
    if not _is_number(spec.setup_timeout) or not spec.setup_timeout > 0:
        raise SpecError(
            f"setup_timeout {spec.setup_timeout!r} must be a positive number of seconds, e.g. 120."
        )
    if (
        isinstance(spec.stall_timeout, bool)
        or not isinstance(spec.stall_timeout, (int, float))
        or not spec.stall_timeout >= 0
    ):
        raise SpecError(
            f"stall_timeout {spec.stall_timeout!r} must be 0 (off) or more seconds without training progress "
            "before a replica counts as hung, e.g. 120."
        )
    if spec.deadline is not None:
        parse_duration(spec.deadline, "deadline")
    if spec.storage is not None:
        parse_storage(spec.storage)
    if spec.resume_from is not None:
        if not isinstance(spec.resume_from, str) or not _NAME_RE.match(spec.resume_from):
            raise SpecError(
                f"resume_from {spec.resume_from!r} is not a job name; pass the name of an earlier job "
                "(see %tfk8s_jobs), e.g. resume_from='mnist-ps'."
            )
        if spec.resume_from == spec.name:
            raise SpecError(
                f"resume_from names this job itself ({spec.name!r}); pass an earlier job's name, "
                "or give the new job another name."
            )
    if not isinstance(spec.save_model, bool):
        raise SpecError(f"save_model {spec.save_model!r} must be True or False.")
    if spec.checkpoint_dir is not None and (
        not isinstance(spec.checkpoint_dir, str) or not spec.checkpoint_dir.strip()
    ):
        raise SpecError(
            f"checkpoint_dir {spec.checkpoint_dir!r} is not a folder path; give one as a string, e.g. '/data/ckpt'."
        )
    if not isinstance(spec.owner, str) or not spec.owner.strip():
        raise SpecError(f"owner {spec.owner!r} is not a user name; leave it out to use the current user.")
    for what, value in (("priority_class", spec.priority_class), ("queue", spec.queue)):
        if value is not None and not (
            isinstance(value, str) and re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", value)
        ):
            raise SpecError(
                f"{what} {value!r} is not a valid object name; use lowercase letters, digits, '-' and '.'."
            )
    if not isinstance(spec.env, Mapping):
        from .spec_fields import not_a_mapping

        raise SpecError(not_a_mapping("env", spec.env, "{'WANDB_MODE': 'offline'}"))
    from .spec_fields import validate_kubernetes_fields

    validate_kubernetes_fields(spec)
    for key, value in spec.env.items():
        if not _ENV_KEY_RE.match(str(key)):
            raise SpecError(
                f"environment variable name {key!r} is invalid; use letters, digits and '_' "
                "(starting with a letter or '_'), as in KEY=VALUE."
            )
        if not isinstance(value, str):
            raise SpecError(
                f"environment variable {key} has a non-string value {value!r}; pass it as a string."
            )
    check_secret_env(spec.secret_env)


_SECRET_REF_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[-._a-zA-Z0-9]{1,253}$")


def check_secret_env(secret_env) -> None:
    """``secret_env`` is ``{NAME: "secret-name/key"}``; raises :class:`SpecError` naming the bad entry."""
    if not isinstance(secret_env, Mapping):
        from .spec_fields import not_a_mapping

        raise SpecError(not_a_mapping("secret_env", secret_env, "{'WANDB_API_KEY': 'wandb/api-key'}"))
    for key, ref in secret_env.items():
        if not _ENV_KEY_RE.match(str(key)):
            raise SpecError(
                f"secret_env variable name {key!r} is invalid; use letters, digits and '_' "
                "(starting with a letter or '_'), as in NAME=secret/key."
            )
        if not isinstance(ref, str) or not _SECRET_REF_RE.match(ref):
            raise SpecError(
                f"secret_env {key}={ref!r} is not SECRET/KEY; name a Secret in the job's namespace and one of "
                "its keys, e.g. --secret-env WANDB_API_KEY=wandb/api-key."
            )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_gpus(gpus) -> tuple[int, int]:
    """Accept ``gpus`` as an int (per worker) or a role mapping; return (per-worker GPUs, ps GPUs)."""
    if isinstance(gpus, Mapping):
        unknown = set(gpus) - set(ROLES)
        if unknown:
            raise SpecError(f"gpus names unknown role(s) {sorted(unknown)}; use chief, worker or ps.")
        worker = gpus.get("worker", gpus.get("chief", 0))
        return _check_count(worker, "gpus", 0, "use a whole number of GPUs, 0 or more"), gpus.get("ps", 0)
    return _check_count(
        gpus if gpus is not None else 0, "gpus", 0, "use a whole number of GPUs, 0 or more"
    ), 0


def make_spec(
    code: str,
    *,
    ps: int = 0,
    workers: int = 1,
    gpus: int | Mapping[str, int] = 0,
    strategy: str | None = "auto",
    name: str | None = None,
    **options,
) -> JobSpec:
    """Build and validate a :class:`JobSpec`.

    Args:
        code: the cell's Python source.
        ps: parameter servers (``> 0`` means asynchronous ParameterServerStrategy with a chief).
        workers: workers (``> 1`` with ``ps=0`` means synchronous MultiWorkerMirroredStrategy).
        gpus: GPUs per worker and chief (never ps), or a mapping ``{"worker": 1}``.
        strategy: ``auto``, ``parameter_server``, ``multi_worker_mirrored`` or ``mirrored``.
        name: DNS-1123 job name, generated from the code when omitted.
        **options: any other :class:`JobSpec` field (cpu, memory, backend, image, env, ...).

    Raises:
        SpecError: one sentence naming the bad value and the fix.

    Example:
        >>> make_spec("print(1)", ps=1, workers=2).strategy
        'parameter_server'
    """
    unknown = set(options) - set(JobSpec.__dataclass_fields__)
    if unknown:
        raise SpecError(
            f"unknown option(s) {sorted(unknown)}; see help(tfk8s_jupyter.submit) for the options."
        )
    check_code(code)
    ps = _check_count(ps, "ps", 0, "use 0 parameter servers (all-reduce) or more (asynchronous)")
    _check_ps_has_workers(ps, workers)
    workers = _check_count(workers, "workers", 1, "use at least 1 worker")
    worker_gpus, ps_gpus = parse_gpus(gpus)
    if ps_gpus:
        Resources(gpus=ps_gpus).validate("ps")
    resolved = resolve_strategy(strategy, ps, workers, worker_gpus)
    from .spec_fields import normalize_options

    options = normalize_options({k: v for k, v in options.items() if v is not None})
    options.setdefault("protocol_key", secrets.token_hex(16))
    spec = JobSpec(
        name=name or generate_name(code),
        code=code,
        strategy=resolved,
        workers=workers,
        ps=ps,
        gpus=worker_gpus,
        **options,
    )
    validate(spec)
    return spec
