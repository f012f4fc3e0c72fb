"""REST handlers: thin wrappers that parse, call :class:`JobsManager` in a thread and map errors.

Routes (under the server's base URL)::

    GET    /tfk8s/api/jobs                               the user's jobs, every configured backend
    GET    /tfk8s/api/jobs/{name}[?backend=]             detail: replicas, metric series
    GET    /tfk8s/api/jobs/{name}/logs?replica=&tail=    a replica's last lines
    POST   /tfk8s/api/jobs/{name}/stop                   stop every replica
    POST   /tfk8s/api/jobs/{name}/tensorboard            start (or reuse) its TensorBoard on 127.0.0.1: URL
    PATCH  /tfk8s/api/jobs/{name}   {"workers": N}       resize a running job (PS scale-down, live)
    DELETE /tfk8s/api/jobs/{name}                        stop if needed, remove the record
    GET|POST /tfk8s/api/check  {backend, context, namespace, image, gpus}
                                                         the preflight of %tfk8s_check: ✓/✗ rows
"""

from __future__ import annotations

import asyncio
import json

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from ..backends.base import BackendUnavailable, Forbidden, JobConflict, JobNotFound, TFK8sError
from .manager import BadRequest, JobsManager

NAME = r"(?P<name>[^/]+)"

_STATUS = (
    (BadRequest, 400),
    (Forbidden, 403),
    (JobNotFound, 404),
    (JobConflict, 409),
    (BackendUnavailable, 503),
    (TFK8sError, 400),
)


class JobsBaseHandler(APIHandler):
    @property
    def manager(self) -> JobsManager:
        return self.settings["tfk8s_jobs_manager"]

    async def call(self, fn, *args):
        """Run a blocking manager method off the event loop; map its errors to HTTP statuses."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except tornado.web.HTTPError:
            raise
        except Exception as e:
            for cls, code in _STATUS:
                if isinstance(e, cls):
                    raise tornado.web.HTTPError(code, "%s", _message(e)) from e
            self.log.exception("tfk8s: %s failed", getattr(fn, "__name__", fn))
            raise tornado.web.HTTPError(500, "%s", _message(e)) from e

    def write_error(self, status_code: int, **kwargs) -> None:
        # One JSON shape for every error: {"message": <one sentence>}; the panel shows it as is.
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code == 405 and isinstance(self, CheckHandler):
            message = (
                f"{self.request.method} is not supported on {self.request.path}; run the cluster preflight "
                "with POST (a JSON object of backend, context, namespace, image, gpus) or GET (the same as "
                "query arguments)."
            )
        elif status_code == 405:
            message = (
                f"{self.request.method} is not supported on {self.request.path}; jobs are submitted from a "
                "notebook (%%tfk8s_train or tfk8s_jupyter.submit()), and this API lists them (GET), stops "
                "them (POST .../stop), shows their TensorBoard (POST .../tensorboard), resizes them (PATCH "
                '{"workers": N}) and deletes them (DELETE).'
            )
        else:
            message = self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "status": status_code}))

    def reply(self, obj) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(obj))


def _message(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class JobsHandler(JobsBaseHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.reply(await self.call(self.manager.list_jobs))


class JobHandler(JobsBaseHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        self.reply(await self.call(self.manager.get_job, name, self.get_query_argument("backend", None)))

    @tornado.web.authenticated
    async def patch(self, name: str) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or set(body) != {"workers"}:
            raise tornado.web.HTTPError(
                400, "%s", 'a resize takes a JSON body with the worker count only, such as {"workers": 2}.'
            )
        backend = self.get_query_argument("backend", None)
        self.reply(await self.call(self.manager.scale, name, body["workers"], backend))

    @tornado.web.authenticated
    async def delete(self, name: str) -> None:
        self.reply(await self.call(self.manager.delete, name, self.get_query_argument("backend", None)))


class JobLogsHandler(JobsBaseHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        tail_arg = self.get_query_argument("tail", None)
        try:
            tail = int(tail_arg) if tail_arg not in (None, "") else None
        except ValueError:
            tail = 0
        if tail is not None and tail < 1:
            raise tornado.web.HTTPError(
                400,
                "%s",
                f"tail={tail_arg!r} is not a number of lines; ask for the last N lines with tail=N.",
            )
        replica = self.get_query_argument("replica", None) or None
        backend = self.get_query_argument("backend", None)
        self.reply(await self.call(self.manager.logs, name, replica, tail, backend))


class JobStopHandler(JobsBaseHandler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(self.manager.stop, name, self.get_query_argument("backend", None)))


class JobTensorBoardHandler(JobsBaseHandler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(self.manager.tensorboard, name, self.get_query_argument("backend", None)))


class CheckHandler(JobsBaseHandler):
    """The cluster preflight: options as query arguments (GET) or a JSON object (POST; the image check
    runs a one-off pod, so the side panel posts)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        options = {
            k: self.get_query_argument(k)
            for k in self.request.query_arguments
            if k not in ("token", "_xsrf")  # the server's own authentication, not options
        }
        self.reply(await self.call(self.manager.check, options))

    @tornado.web.authenticated
    async def post(self) -> None:
        try:
            options = json.loads(self.request.body or b"{}")
        except ValueError:
            options = None
        self.reply(await self.call(self.manager.check, options))


def setup_handlers(web_app, manager: JobsManager) -> None:
    web_app.settings["tfk8s_jobs_manager"] = manager
    base = url_path_join(web_app.settings["base_url"], "tfk8s", "api", "jobs")
    web_app.add_handlers(
        ".*$",
        [
            (base, JobsHandler),
            (url_path_join(base, NAME, "logs"), JobLogsHandler),
            (url_path_join(base, NAME, "stop"), JobStopHandler),
            (url_path_join(base, NAME, "tensorboard"), JobTensorBoardHandler),
            (url_path_join(base, NAME), JobHandler),
            (url_path_join(web_app.settings["base_url"], "tfk8s", "api", "check"), CheckHandler),
        ],
    )
