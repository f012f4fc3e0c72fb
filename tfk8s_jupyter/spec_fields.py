"""Checks of the job spec's fields beyond counts and strategy: the syntax Kubernetes demands of names,
labels, the image and scheduling fields - checked for every backend before any cluster is contacted, so a
typo in a namespace or image is one sentence naming the value, never a connection or API error later - and
the kinds of the mapping and list options :func:`~tfk8s_jupyter.spec.make_spec` copies (``env="A=1"`` is a
sentence, not ``dict()``'s ``ValueError``). Pure, no I/O; every check raises
:class:`~tfk8s_jupyter.spec.SpecError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .spec import SpecError, _check_count

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_LABEL_RE = re.compile(rf"^{_LABEL}$")
DNS_SUBDOMAIN_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

# An image reference as the container runtimes parse it (distribution/reference): [domain[:port]/]path[:tag][@digest]
_DOMAIN = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_RE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*(?::[\w][\w.-]{{0,127}})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?$"
)
TOLERATION_KEYS = ("key", "operator", "value", "effect", "tolerationSeconds")
TOLERATION_OPERATORS = ("Exists", "Equal")
TOLERATION_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")


def check_dns_label(value, what: str, example: str) -> None:
    """A DNS-1123 label (a namespace): lowercase letters, digits and '-', at most 63 characters."""
    if not isinstance(value, str) or len(value) > 63 or not DNS_LABEL_RE.match(value):
        raise SpecError(
            f"{what} {value!r} is not a valid Kubernetes name; use at most 63 lowercase letters, digits and "
            f"'-', starting and ending with a letter or digit, e.g. {example!r}."
        )


def check_object_name(value, what: str, example: str) -> None:
    """A DNS-1123 subdomain (ServiceAccount, Secret, PriorityClass, claim): lowercase, digits, '-' and '.'."""
    if not isinstance(value, str) or len(value) > 253 or not DNS_SUBDOMAIN_RE.match(value):
        raise SpecError(
            f"{what} {value!r} is not a valid Kubernetes object name; use lowercase letters, digits, '-' and "
            f"'.', starting and ending with a letter or digit, e.g. {example!r}."
        )


def label_key_ok(key) -> bool:
    """``[prefix/]name``: a DNS subdomain prefix of at most 253 characters, a name of at most 63."""
    if not isinstance(key, str) or not key:
        return False
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN_RE.match(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME_RE.match(name))


def label_value_ok(value) -> bool:
    """Empty, or at most 63 of [A-Za-z0-9._-] with a letter or digit at both ends."""
    return isinstance(value, str) and (
        value == "" or (len(value) <= 63 and bool(_LABEL_NAME_RE.match(value)))
    )


def check_string_map(value, what: str, example: str) -> None:
    """A mapping of label keys to label values (``labels``, ``node_selector``)."""
    if not isinstance(value, Mapping):
        raise SpecError(not_a_mapping(what, value, example))
    for key, item in value.items():
        if not label_key_ok(key):
            raise SpecError(
                f"{what} key {key!r} is not a valid Kubernetes label key; use letters, digits, '-', '_' and "
                f"'.' (at most 63, optionally after a DNS prefix and '/'), e.g. {example}."
            )
        if not label_value_ok(item):
            raise SpecError(
                f"{what} value {item!r} of {key!r} is not a valid Kubernetes label value; use a string of at "
                f"most 63 letters, digits, '-', '_' and '.', e.g. {example}."
            )


def check_image(value) -> None:
    """An image reference such as ``tfk8s/trainer:0.1.0`` or ``registry.local:5000/team/tf@sha256:...``."""
    if not isinstance(value, str) or len(value) > 4096 or not IMAGE_RE.match(value):
        raise SpecError(
            f"image {value!r} is not a valid image reference; use [registry/]repository[:tag] in lowercase "
            "without spaces, e.g. 'tfk8s/trainer:0.1.0'."
        )


def check_resource_name(value) -> None:
    """An extended resource name with a domain, e.g. ``nvidia.com/gpu``."""
    if not (isinstance(value, str) and "/" in value and label_key_ok(value)):
        raise SpecError(
            f"gpu_resource {value!r} is not an extended resource name; use domain/name, e.g. 'nvidia.com/gpu'."
        )


def check_tolerations(value) -> None:
    """A list of toleration mappings (key, operator, value, effect, tolerationSeconds)."""
    example = "[{'key': 'gpu', 'operator': 'Exists', 'effect': 'NoSchedule'}]"
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise SpecError(f"tolerations {value!r} is not a list of tolerations; give one like {example}.")
    for t in value:
        if not isinstance(t, Mapping):
            raise SpecError(f"toleration {t!r} is not a mapping; give each one like {example}.")
        unknown = sorted(str(k) for k in t if k not in TOLERATION_KEYS)
        if unknown:
            raise SpecError(
                f"toleration {dict(t)!r} has unknown field(s) {unknown}; use {', '.join(TOLERATION_KEYS)}."
            )
        if t.get("operator", "Equal") not in TOLERATION_OPERATORS:
            raise SpecError(f"toleration operator {t.get('operator')!r} is unknown; use 'Exists' or 'Equal'.")
        if t.get("effect", "") not in TOLERATION_EFFECTS:
            raise SpecError(
                f"toleration effect {t.get('effect')!r} is unknown; use NoSchedule, PreferNoSchedule or NoExecute."
            )
        if t.get("key") is not None and not label_key_ok(t.get("key")):
            raise SpecError(
                f"toleration key {t.get('key')!r} is not a valid key; use a label key like 'gpu'."
            )
        if t.get("value") is not None and not label_value_ok(t.get("value")):
            raise SpecError(f"toleration value {t.get('value')!r} is not a valid value; use a label value.")
        seconds = t.get("tolerationSeconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
            raise SpecError(f"tolerationSeconds {seconds!r} is not a whole number of seconds; use e.g. 300.")


def check_name_list(value, what: str, example: str) -> None:
    """A list of object names (``image_pull_secrets``)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise SpecError(f"{what} {value!r} is not a list of names; give one like [{example!r}].")
    for item in value:
        check_object_name(item, f"{what} entry", example)


def validate_kubernetes_fields(spec) -> None:
    """The fields a cluster would refuse, checked for every backend so a typo never waits for a cluster."""
    if spec.namespace is not None:
        check_dns_label(spec.namespace, "namespace", "team-a")
    if spec.image is not None:
        check_image(spec.image)
    if spec.context is not None and (not isinstance(spec.context, str) or not spec.context.strip()):
        raise SpecError(
            f"context {spec.context!r} is not a kubeconfig context name; give one, e.g. 'my-cluster'."
        )
    if spec.service_account is not None:
        check_object_name(spec.service_account, "service_account", "trainer")
    check_name_list(spec.image_pull_secrets, "image_pull_secrets", "regcred")
    check_string_map(spec.labels, "labels", "{'team': 'ml'}")
    check_string_map(spec.node_selector, "node_selector", "{'accelerator': 'nvidia-t4'}")
    check_tolerations(spec.tolerations)
    check_resource_name(spec.gpu_resource)


def not_a_mapping(what: str, value, example: str) -> str:
    hint = ""
    if isinstance(value, str) and "=" in value:
        key, _, val = value.partition("=")
        hint = f" (for {value!r} write {{{key.strip()!r}: {val.strip()!r}}})"
    return f"{what} {value!r} is not a mapping{hint}; give a dict of name to value, e.g. {example}."


# Options that must be mappings or lists before make_spec copies them (dict("A=1") is no error message).
_MAPPING_OPTIONS = {
    "env": "{'WANDB_MODE': 'offline'}",
    "labels": "{'team': 'ml'}",
    "node_selector": "{'accelerator': 'nvidia-t4'}",
}


def normalize_options(options: dict) -> dict:
    """``options`` with mappings and lists copied into the spec's types, refusing a value of the wrong kind."""
    for key, example in _MAPPING_OPTIONS.items():
        if options.get(key) is not None:
            if not isinstance(options[key], Mapping):
                raise SpecError(not_a_mapping(key, options[key], example))
            options[key] = dict(options[key])
    if options.get("tolerations") is not None:
        check_tolerations(options["tolerations"])
        options["tolerations"] = tuple(options["tolerations"])
    if options.get("image_pull_secrets") is not None:
        check_name_list(options["image_pull_secrets"], "image_pull_secrets", "regcred")
        options["image_pull_secrets"] = tuple(options["image_pull_secrets"])
    for key, fix in (
        ("max_restarts", "use 0 (never restart) or more"),
        ("ttl_seconds_after_finished", "use 0 or more seconds, e.g. 3600"),
    ):
        if options.get(key) is not None:
            options[key] = _check_count(options[key], key, 0, fix)
    return options
