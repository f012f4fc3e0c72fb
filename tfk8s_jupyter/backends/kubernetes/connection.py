"""The connection to a cluster: kubeconfig or service-account loading, one :class:`Cluster` per context,
the namespace and flavor a job gets, requests as raw JSON, and the helpers that read streaming responses.

Reads use raw JSON (``_preload_content=False``): the status functions work on plain dicts and a busy job's
pod events cost no model deserialization. Every request goes through :meth:`Cluster.call`, which turns a
failure into the typed error of :mod:`.errors`.
"""

from __future__ import annotations

import codecs
import functools
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from ...config import current_config
from ..base import BackendUnavailable, JobNotFound, TFK8sError
from . import manifests as m
from .errors import ApiErrorContext, api_status, translate

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TFJOB = ("kubeflow.org", "v1", "tfjobs")
READ_TIMEOUT = 90  # seconds; a stream silent for this long is considered dead
RESOURCE_NAMES = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "Job": "jobs",
    "TFJob": "tfjobs",
    "Secret": "secrets",
}
_NAMED_VERBS = ("get", "patch", "delete")  # the requests that name one object


def _json(resp) -> dict:
    try:
        return json.loads(resp.data)
    finally:
        resp.release_conn()


STREAM_READ = 1 << 16  # bytes read from a streaming response at a time


def iter_lines(resp, amt: int = STREAM_READ) -> Iterator[str]:
    """Lines of a chunked streaming response, as text.

    Read at most ``amt`` bytes at a time, whatever the server's chunks: a follow stream that reconnects gets
    the container's whole log in one chunk (hundreds of MB for a long job), and a reader that falls behind
    gets everything printed meanwhile in one chunk. Each byte is split once; what is held at any moment is
    one read and the line it ends in.
    """
    partial: list[bytes] = []  # the pieces of a line not ended yet
    for data in resp.stream(amt, decode_content=False):
        if b"\n" not in data:
            partial.append(data)
            continue
        if partial:
            partial.append(data)
            data = b"".join(partial)
            partial = []
        lines = data.split(b"\n")
        last = lines.pop()
        for line in lines:
            yield line.decode("utf-8", "replace")
        if last:
            partial.append(last)
    if partial:
        yield b"".join(partial).decode("utf-8", "replace")


class closed_when:
    """Close a streaming response as soon as ``stop`` is set, so a blocked read returns at once."""

    def __init__(self, stop: threading.Event, resp):
        self.stop, self.resp, self.done = stop, resp, threading.Event()

    def _wait(self) -> None:
        while not self.done.is_set():
            if self.stop.wait(0.2):
                # closing alone does not wake a thread blocked in recv(); shutting the socket down does
                conn = getattr(self.resp, "connection", None) or getattr(self.resp, "_connection", None)
                sock = getattr(conn, "sock", None)
                try:
                    if sock is not None:
                        sock.shutdown(socket.SHUT_RDWR)
                    self.resp.close()
                except Exception:
                    pass
                return

    def __enter__(self) -> closed_when:
        threading.Thread(target=self._wait, name="tfk8s-stream-stop", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()


class LineStream:
    """The lines of a streaming response until it ends or ``stop`` is set; use it in a ``with`` block,
    which releases the response however the block ends.

    A read that fails because ``stop`` closed the stream ends the lines quietly; any other failure is raised.
    """

    def __init__(self, resp, stop: threading.Event):
        self.resp, self.stop = resp, stop
        self._lines: Iterator[str] | None = None

    def _read(self) -> Iterator[str]:
        try:
            with closed_when(self.stop, self.resp):
                yield from iter_lines(self.resp)
        except Exception:
            if not self.stop.is_set():
                raise

    def __iter__(self) -> Iterator[str]:
        self._lines = self._read()
        return self._lines

    def __enter__(self) -> LineStream:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._lines is not None:
                self._lines.close()
        finally:
            self.resp.release_conn()
            self.resp.close()


class Cluster:
    """One API connection (one kubeconfig context or the in-cluster service account)."""

    def __init__(self, api_client: k8s.ApiClient, default_namespace: str):
        self.api_client = api_client
        self.core = k8s.CoreV1Api(api_client)
        self.batch = k8s.BatchV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self.default_namespace = default_namespace
        self._tfjob_installed: bool | None = None
        core, batch = self.core, self.batch
        group, version, plural = TFJOB

        def tfjob(fn: Callable) -> Callable:
            return functools.partial(fn, group, version, plural=plural)

        # resource → verb → the client method; each takes namespace=, name= (named verbs), body=, selectors
        self._methods: dict[str, dict[str, Callable]] = {
            "configmaps": {
                "get": core.read_namespaced_config_map,
                "list": core.list_namespaced_config_map,
                "create": core.create_namespaced_config_map,
                "delete": core.delete_namespaced_config_map,
            },
            "services": {"create": core.create_namespaced_service, "delete": core.delete_namespaced_service},
            "secrets": {"create": core.create_namespaced_secret, "delete": core.delete_namespaced_secret},
            "jobs": {
                "list": batch.list_namespaced_job,
                "create": batch.create_namespaced_job,
                "delete": batch.delete_namespaced_job,
            },
            "pods": {"list": core.list_namespaced_pod, "delete": core.delete_namespaced_pod},
            "persistentvolumeclaims": {"get": core.read_namespaced_persistent_volume_claim},
            "events": {"list": core.list_namespaced_event},
            "tfjobs": {
                "get": tfjob(self.custom.get_namespaced_custom_object),
                "create": tfjob(self.custom.create_namespaced_custom_object),
                "delete": tfjob(self.custom.delete_namespaced_custom_object),
            },
        }

    def call(self, ctx: ApiErrorContext, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)``; a failure raised as the typed error for ``ctx``."""
        try:
            return fn(*args, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            raise translate(e, ctx, self.api_client.configuration.host) from e

    def raw(self, ctx: ApiErrorContext, fn: Callable, *args, **kwargs) -> dict:
        """``fn`` called for raw JSON."""
        return _json(self.call(ctx, fn, *args, _preload_content=False, **kwargs))

    def request(self, verb: str, resource: str, namespace: str, name: str | None = None, **kwargs) -> dict:
        """One ``verb`` (get, list, create, patch, delete) on ``resource``, as raw JSON.

        Raises:
            TFK8sError: the typed error (:func:`.errors.translate`) with its hint.
        """
        if verb in _NAMED_VERBS:
            kwargs["name"] = name
        ctx = ApiErrorContext(verb, resource, namespace, name)
        return self.raw(ctx, self._methods[resource][verb], namespace=namespace, **kwargs)

    def get(self, resource: str, namespace: str, name: str) -> dict:
        """One object."""
        return self.request("get", resource, namespace, name)

    def list(self, resource: str, namespace: str, **selectors) -> dict:
        """A list (``items``, ``metadata.resourceVersion``), filtered by ``label_selector`` and the like."""
        return self.request("list", resource, namespace, **selectors)

    def items(self, resource: str, namespace: str, **selectors) -> list[dict]:
        """The objects of a list."""
        return self.list(resource, namespace, **selectors)["items"]

    def create(self, namespace: str, obj: dict) -> dict:
        """Create ``obj`` (a rendered manifest); returns it as the server stored it."""
        resource = RESOURCE_NAMES[obj["kind"]]
        return self.request("create", resource, namespace, obj["metadata"]["name"], body=obj)

    def patch(self, resource: str, namespace: str, name: str, body: dict) -> dict:
        return self.request("patch", resource, namespace, name, body=body)

    def delete(self, resource: str, namespace: str, name: str) -> dict:
        """Delete one object and its dependents (background propagation)."""
        return self.request("delete", resource, namespace, name, body={"propagationPolicy": "Background"})

    def tfjob_installed(self) -> bool:
        """API discovery: does the cluster serve ``kubeflow.org/v1`` ``tfjobs``?"""
        if self._tfjob_installed is None:
            try:
                resources = self.raw(
                    ApiErrorContext("get", "apis/kubeflow.org/v1", None),
                    self.custom.get_api_resources,
                    "kubeflow.org",
                    "v1",
                )
                self._tfjob_installed = any(r.get("name") == "tfjobs" for r in resources.get("resources", []))
            except JobNotFound:
                self._tfjob_installed = False
            except BackendUnavailable as e:
                if api_status(e) != 404:
                    raise
                self._tfjob_installed = False
        return self._tfjob_installed

    # pod logs -----------------------------------------------------------------------------------
    def _log_request(self, namespace: str, pod: str, **kwargs):
        return self.call(
            ApiErrorContext("get", "pods/log", namespace, pod),
            self.core.read_namespaced_pod_log,
            pod,
            namespace,
            container=m.CONTAINER,
            _preload_content=False,
            **kwargs,
        )

    def read_log(self, namespace: str, pod: str, tail: int | None = None, previous: bool = False) -> str:
        """A pod's log (its last ``tail`` lines; the previous container's); ``""`` before it started."""
        try:
            resp = self._log_request(namespace, pod, tail_lines=tail, previous=previous or None)
        except TFK8sError as e:
            if api_status(e) == 400:
                return ""  # not started yet, or no previous container
            raise
        try:
            return resp.data.decode("utf-8", "replace")
        finally:
            resp.release_conn()

    def stream_log(self, namespace: str, pod: str, previous: bool = False, chunk: int = 1 << 16):
        """A pod's whole log (the previous container's) as decoded text chunks, read ``chunk`` bytes at a
        time so a long log is never held whole; nothing before the container started."""
        try:
            resp = self._log_request(namespace, pod, previous=previous or None)
        except TFK8sError as e:
            if api_status(e) == 400:
                return  # not started yet, or no previous container
            raise
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            for data in resp.stream(chunk):
                text = decoder.decode(data)
                if text:
                    yield text
            text = decoder.decode(b"", final=True)
            if text:
                yield text
        finally:
            resp.release_conn()

    def follow_log(self, namespace: str, pod: str, **kwargs):
        """A follow stream of a pod's log (a response for :class:`LineStream`).

        Raises:
            TFK8sError: the typed error; its status is 400 while the container has not started.
        """
        return self._log_request(namespace, pod, follow=True, **kwargs)


def load_cluster(context: str | None = None, config_file: str | None = None) -> Cluster:
    """Connect with a kubeconfig (optionally a given ``context``) or, in a pod, the service account.

    Raises:
        BackendUnavailable: no usable configuration.
    """
    cfg = k8s.Configuration()
    namespace = None
    kubeconfig = (
        config_file
        or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        or str(Path.home() / ".kube" / "config")
    )
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    if context and Path(kubeconfig).exists():
        try:
            known = [c["name"] for c in k8s_config.list_kube_config_contexts(config_file=kubeconfig)[0]]
        except (ConfigException, OSError, TypeError, ValueError, KeyError):
            known = None  # an unreadable kubeconfig is explained below
        if known is not None and context not in known:
            raise BackendUnavailable(
                f"context {context!r} is not in {kubeconfig} (its contexts: {', '.join(known) or 'none'}); "
                "pass one of them with --context or c.TFK8s.context."
            )
    try:
        if context or Path(kubeconfig).exists() or not in_cluster:
            k8s_config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=cfg, persist_config=False
            )
            contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c["name"] == context), active) if context else active
            namespace = (chosen or {}).get("context", {}).get("namespace")
        else:
            k8s_config.load_incluster_config(client_configuration=cfg)
    except (ConfigException, OSError, TypeError, ValueError) as e:
        where = f"context {context!r} of {kubeconfig}" if context else kubeconfig
        raise BackendUnavailable(
            f"no usable Kubernetes configuration ({where}: {e}); set KUBECONFIG or pass --context, "
            "or run inside a cluster."
        ) from e
    if namespace is None and SA_NAMESPACE_FILE.exists():
        namespace = SA_NAMESPACE_FILE.read_text().strip() or None
    return Cluster(k8s.ApiClient(cfg), namespace or "default")


class Connections:
    """The clusters of one backend, one per kubeconfig context (loaded on first use), and the namespace
    and flavor a job gets.

    Args:
        namespace: default namespace (flag).
        context: kubeconfig context (default: ``TFK8s.context``, else the current one).
        config_file: kubeconfig path (default: ``$KUBECONFIG`` or ``~/.kube/config``).
    """

    def __init__(self, namespace: str | None, context: str | None, config_file: str | None):
        self.namespace, self.context, self.config_file = namespace, context, config_file
        self._clusters: dict[str | None, Cluster] = {}
        self._lock = threading.Lock()

    def preset(self, api_client: k8s.ApiClient) -> None:
        """Use an already configured ``ApiClient`` for the default context."""
        with self._lock:
            self._clusters[self.context] = Cluster(api_client, self.namespace or "default")

    def cluster(self, context: str | None = None) -> Cluster:
        context = context or self.context or current_config().context
        with self._lock:
            if context not in self._clusters:
                self._clusters[context] = load_cluster(context, self.config_file)
            return self._clusters[context]

    def resolve_namespace(self, spec_namespace: str | None = None, context: str | None = None) -> str:
        """Flag (spec, then backend) → ``TFK8s.namespace`` → kubeconfig context → service account → default."""
        return (
            spec_namespace
            or self.namespace
            or current_config().namespace
            or self.cluster(context).default_namespace
        )

    def context_namespaces(self) -> list[str]:
        """The namespaces the kubeconfig's contexts on the same cluster as the current one name."""
        kubeconfig = self.config_file or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        kubeconfig = kubeconfig or str(Path.home() / ".kube" / "config")
        try:
            contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
        except (ConfigException, OSError, TypeError, ValueError):
            return []
        chosen = self.context or current_config().context
        current = next((c for c in contexts if c["name"] == chosen), active) if chosen else active
        cluster = ((current or {}).get("context") or {}).get("cluster")
        out = []
        for c in contexts:
            ctx = c.get("context") or {}
            if ctx.get("cluster") == cluster and ctx.get("namespace") and ctx["namespace"] not in out:
                out.append(ctx["namespace"])
        return out

    def resolve_flavor(self, flavor: str, context: str | None = None) -> str:
        """``auto`` → ``tfjob`` when API discovery shows ``kubeflow.org/v1 tfjobs``, else ``native``."""
        if flavor in ("native", "tfjob"):
            return flavor
        return "tfjob" if self.cluster(context).tfjob_installed() else "native"
