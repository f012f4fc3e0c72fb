"""The cluster preflight behind ``/tfk8s/api/check``: the same checks as ``%tfk8s_check`` and ``tk.check()``.

The side panel's "Check cluster" view sends the options the magic takes (backend, context, namespace,
image, gpus) and shows the rows as they come: ✓, ✗ or – with one sentence each (a ✗ names the fix).
"""

from __future__ import annotations

import json

from ..spec import SpecError

OPTIONS = ("backend", "context", "namespace", "image", "gpus")


class BadCheckRequest(SpecError):
    """Options the preflight cannot take (an unknown option, a GPU count that is not a count)."""


def parse_check_options(raw) -> dict:
    """The preflight's keyword arguments from a JSON body or query arguments; empty values mean "the
    configured default". Raises :class:`BadCheckRequest` in one sentence."""
    if not isinstance(raw, dict):
        raise BadCheckRequest(
            'a check takes a JSON object of options, such as {"namespace": "team", "gpus": 1}.'
        )
    unknown = sorted(set(raw) - set(OPTIONS))
    if unknown:
        raise BadCheckRequest(f"{unknown[0]!r} is not an option of the check; it takes {', '.join(OPTIONS)}.")
    options: dict = {"backend": "kubernetes"}
    for key, value in raw.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if key == "gpus":
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadCheckRequest(
                    f"gpus={json.dumps(value)} is not a number of GPUs; give a whole number of at least 0, "
                    "such as 1."
                )
        elif not isinstance(value, str):
            raise BadCheckRequest(f"{key}={json.dumps(value)} is not text; give the {key} by name.")
        else:
            value = value.strip()
        options[key] = value
    return options


def report_model(report) -> dict:
    """The JSON of a ``PreflightReport`` (mirrored by ``ICheckReport`` in ``labextension/src/model.ts``)."""
    return {
        "context": report.context,
        "namespace": report.namespace,
        "ok": report.ok,
        "summary": report.text().splitlines()[0],
        "checks": [c.to_json() for c in report.checks],
    }


def run_check(raw) -> dict:
    """Run the preflight ``tk.check`` runs, with the options of a request; its report as JSON."""
    from ..api import check

    return report_model(check(**parse_check_options(raw)))
