"""The preflight's LimitRange row: the namespace's LimitRanges versus what each container of the job asks.

A job's container asks ``--cpu`` / ``--memory`` as requests = limits (and ``--gpus`` of
``gpu_resource`` on workers). The LimitRange admission plugin refuses a pod whose container is above a
``max``, below a ``min``, or whose limit/request ratio is above ``maxLimitRequestRatio``; what a job leaves
unset it fills from ``default`` / ``defaultRequest`` (defaulted as the API server does: a missing default
limit is the max, a missing default request is the default limit, else the min). One ``list limitranges``.
"""

from __future__ import annotations

from kubernetes import client as k8s

from ...spec import JobSpec, parse_quantity
from .connection import Cluster
from .errors import ApiErrorContext

FLAGS = {"cpu": "--cpu", "memory": "--memory"}
FIX = "or ask your admin"


def _qty(value) -> float | None:
    try:
        return parse_quantity(value) if value not in (None, "") else None
    except ValueError:
        return None


def defaulted(item: dict) -> dict[str, dict]:
    """A LimitRange item's ``default`` and ``defaultRequest`` filled in as the API server does."""
    default = dict(item.get("default") or {})
    for key, value in (item.get("max") or {}).items():
        default.setdefault(key, value)
    request = dict(item.get("defaultRequest") or {})
    for key, value in default.items():
        request.setdefault(key, value)
    for key, value in (item.get("min") or {}).items():
        request.setdefault(key, value)
    return {"default": default, "defaultRequest": request}


def container_asks(spec: JobSpec) -> list[tuple[str, dict[str, str]]]:
    """(role, {resource: quantity}) of each role's container, as the manifests render it."""
    out = []
    for r in spec.replicas:
        asks: dict[str, str] = {}
        if r.resources.cpu:
            asks["cpu"] = str(r.resources.cpu)
        if r.resources.memory:
            asks["memory"] = str(r.resources.memory)
        if r.resources.gpus:
            asks[spec.gpu_resource] = str(r.resources.gpus)
        out.append((r.role, asks))
    return out


def _flag(resource: str, spec: JobSpec) -> str:
    return FLAGS.get(resource, "--gpus" if resource == spec.gpu_resource else resource)


def limit_problems(spec: JobSpec, ranges: list[dict]) -> tuple[list[str], list[str]]:
    """(one sentence per way a container breaks a LimitRange, notes of the defaults unset values get)."""
    problems: list[str] = []
    notes: list[str] = []
    for lr in ranges:
        name = lr["metadata"]["name"]
        owner = f"{name}'" if name.endswith("s") else f"{name}'s"
        for item in (lr.get("spec") or {}).get("limits") or []:
            kind = item.get("type") or "Container"
            if kind not in ("Container", "Pod"):
                continue
            per = "per container" if kind == "Container" else "per pod"
            filled = defaulted(item) if kind == "Container" else {"default": {}, "defaultRequest": {}}
            for _role, asks in container_asks(spec):
                for resource, value in asks.items():
                    have = _qty(value)
                    flag = f"{_flag(resource, spec)} {value}"
                    top = (item.get("max") or {}).get(resource)
                    if top is not None and have is not None and have > (_qty(top) or 0):
                        problems.append(
                            f"{flag} is above LimitRange {owner} max of {top} {per}; ask for at most "
                            f"{top} {FIX}."
                        )
                    low = (item.get("min") or {}).get(resource)
                    if low is not None and have is not None and have < (_qty(low) or 0):
                        problems.append(
                            f"{flag} is below LimitRange {owner} min of {low} {per}; ask for at least "
                            f"{low} {FIX}."
                        )
                for resource in ("cpu", "memory"):
                    if resource in asks:
                        continue  # requests = limits: ratio 1
                    limit = filled["default"].get(resource)
                    request = filled["defaultRequest"].get(resource)
                    ratio = (item.get("maxLimitRequestRatio") or {}).get(resource)
                    if ratio is not None:
                        lq, rq = _qty(limit), _qty(request)
                        if lq is None or not rq:
                            problems.append(
                                f"the job sets no {FLAGS[resource]} and LimitRange {name} has a "
                                f"maxLimitRequestRatio of {ratio} for {resource} but no default to fill it "
                                f"from; pass {FLAGS[resource]} (requests = limits) {FIX}."
                            )
                        elif lq / rq > (_qty(ratio) or 0):
                            problems.append(
                                f"the job sets no {FLAGS[resource]}, so LimitRange {owner} defaults (request "
                                f"{request}, limit {limit}) give a limit/request ratio of {lq / rq:g}, above "
                                f"its maxLimitRequestRatio of {ratio}; pass {FLAGS[resource]} (requests = "
                                f"limits) {FIX}."
                            )
                    if limit is not None or request is not None:
                        note = (
                            f"{resource} request {request or limit} / limit {limit or 'none'} "
                            f"(LimitRange {name})"
                        )
                        if note not in notes:
                            notes.append(note)
    return list(dict.fromkeys(problems)), notes


def limitranges(cluster: Cluster, namespace: str) -> list[dict]:
    """The namespace's LimitRanges (``list limitranges``, granted by the Role tfk8s-jobs)."""
    out = cluster.raw(
        ApiErrorContext("list", "limitranges", namespace),
        k8s.CoreV1Api(cluster.api_client).list_namespaced_limit_range,
        namespace,
    )
    return out.get("items", [])


def limitrange_rows(cluster: Cluster, spec: JobSpec, namespace: str) -> list[tuple[bool, str]]:
    """(ok, sentence) rows of the LimitRange check: one per problem, else one ✓ (with the defaults a job
    that sets no cpu/memory will get)."""
    ranges = limitranges(cluster, namespace)
    problems, notes = limit_problems(spec, ranges)
    if problems:
        return [(False, p) for p in problems]
    if not ranges:
        return [(True, f"namespace {namespace} has no LimitRange.")]
    fits = f"the job fits the {len(ranges)} LimitRange(s) of namespace {namespace}"
    if notes:
        return [(True, f"{fits}; what the job leaves unset it gets by default: {'; '.join(notes)}.")]
    return [(True, f"{fits}.")]


def fit_container(resources: dict[str, dict[str, str]], ranges: list[dict]) -> dict[str, dict[str, str]]:
    """``resources`` (requests and limits) moved inside the LimitRanges' container max / min /
    maxLimitRequestRatio, for a pod of our own choosing (the image check's)."""
    requests = dict(resources.get("requests") or {})
    limits = dict(resources.get("limits") or {})
    for lr in ranges:
        for item in (lr.get("spec") or {}).get("limits") or []:
            if (item.get("type") or "Container") != "Container":
                continue
            for key, top in (item.get("max") or {}).items():
                if key in limits and (_qty(limits[key]) or 0) > (_qty(top) or 0):
                    limits[key] = str(top)
            for key, low in (item.get("min") or {}).items():
                if key in requests and (_qty(requests[key]) or 0) < (_qty(low) or 0):
                    requests[key] = str(low)
            for key, value in list(requests.items()):
                if key in limits and (_qty(value) or 0) > (_qty(limits[key]) or 0):
                    limits[key] = value
            for key, ratio in (item.get("maxLimitRequestRatio") or {}).items():
                lq, rq = _qty(limits.get(key)), _qty(requests.get(key))
                if lq and rq and lq / rq > (_qty(ratio) or 1):
                    requests[key] = limits[key]
    return {"requests": requests, "limits": limits}
