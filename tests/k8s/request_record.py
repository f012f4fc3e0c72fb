"""Every request the Kubernetes backend made in this pytest session (tests/k8s/conftest.py records them),
so the least-privilege test can hold the Role against the whole suite's calls; and :func:`record_requests`,
which keeps each request a test API server answers with its query and its time (a benchmark counts the
watches, the followed log streams and the polling of an open panel from it)."""

from __future__ import annotations

import threading
import time
from urllib.parse import parse_qs, urlparse

BACKEND_REQUESTS: list[dict] = []

_FIELDS = ("verb", "group", "resource", "subresource", "namespace", "name")


def record_requests(server) -> list[dict]:
    """Keep every request ``server`` (a started ``apiserver.ApiServer``) answers from now on.

    Returns the list it appends to: one dict per request with the fields of ``server.request_log``
    (``verb``, ``group``, ``resource``, ``subresource``, ``namespace``, ``name``, ``status``), plus ``query``
    (first value of each query parameter, e.g. ``{"watch": "true"}`` or ``{"follow": "true"}``) and ``t``
    (``time.monotonic()`` when it was answered; a stream's when it started).
    """
    entries: list[dict] = []
    lock = threading.Lock()
    paths = threading.local()  # the path of the request the serving thread handles
    base = server.httpd.RequestHandlerClass

    class Recording(base):
        def _dispatch(self, method: str) -> None:
            paths.path = self.path
            super()._dispatch(method)

    server.httpd.RequestHandlerClass = Recording
    original = server.log_request

    def log_request(req: dict, status: int) -> None:
        original(req, status)
        query = parse_qs(urlparse(getattr(paths, "path", "") or "").query)
        entry = {k: req.get(k) for k in _FIELDS}
        entry.update(status=status, query={k: v[0] for k, v in query.items()}, t=time.monotonic())
        with lock:
            entries.append(entry)

    server.log_request = log_request
    return entries
