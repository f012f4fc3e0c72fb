"""Drive the Kubernetes backend through everything a notebook user does — preflight (with the image
check), submit (native and TFJob, flavor
discovery, results on a storage claim), follow (one watch + the metrics log), logs, list, attach from another kernel, stop, delete,
diagnostics — against the in-repo test API server, so the deploy tests can read its request log."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

K8S_TESTS = Path(__file__).resolve().parents[1] / "k8s"
STANDIN_RUNNER = Path(__file__).resolve().parents[1] / "standin_runner.py"
if str(K8S_TESTS) not in sys.path:
    sys.path.insert(0, str(K8S_TESTS))

from apiserver import ApiServer  # noqa: E402  (the test API server lives with the Kubernetes tests)
from kubelet import TestCluster  # noqa: E402

from tfk8s_jupyter.backends.base import TERMINAL, JobStatus  # noqa: E402
from tfk8s_jupyter.backends.kubernetes import KubernetesBackend  # noqa: E402
from tfk8s_jupyter.config import TFK8s, set_current_config  # noqa: E402
from tfk8s_jupyter.payload import Payload  # noqa: E402
from tfk8s_jupyter.spec import make_spec  # noqa: E402

QUICK = "EPOCHS = 1\nSTEPS = 4\nSTEP_SECONDS = 0.05\n"
LONG = "EPOCHS = 1\nSTEPS = 100000\nSTEP_SECONDS = 0.05\n"
NAMESPACE = "tfk8s-jobs"
CLAIM = "tfk8s-results"  # the shared ReadWriteMany claim of deploy/kubernetes/storage/


@contextmanager
def test_cluster(
    tmp_path: Path, tfjob_crd: bool = False, rules: list[dict] | None = None, **kubelet
) -> Iterator[tuple[ApiServer, TestCluster | None, Path]]:
    """A test API server (namespace ``tfk8s-jobs``) with a kubelet running the stand-in runner, and a
    kubeconfig whose context points at that namespace. ``rules``: enforce these RBAC rules."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    server = ApiServer(namespaces=(NAMESPACE,), tfjob_crd=tfjob_crd).start()
    server.enforce_rules(rules)
    server.add_claim(NAMESPACE, CLAIM, access_modes=("ReadWriteMany",))
    kubeconfig = server.kubeconfig(tmp_path / f"kubeconfig-{id(server)}", namespace=NAMESPACE)
    cluster = TestCluster(
        server, workdir=tmp_path / f"kubelet-{id(server)}", runner_override=STANDIN_RUNNER, **kubelet
    ).start()
    set_current_config(TFK8s())
    try:
        yield server, cluster, kubeconfig
    finally:
        cluster.stop()
        server.stop()
        set_current_config(TFK8s())


def backend_for(kubeconfig: Path, root: Path | None = None) -> KubernetesBackend:
    return KubernetesBackend(config_file=str(kubeconfig), root=root)


def submit(backend: KubernetesBackend, name: str, code: str = QUICK, flavor: str = "auto", **kw) -> JobStatus:
    spec = make_spec(code, name=name, backend="kubernetes", flavor=flavor, **{"workers": 2, **kw})
    return backend.submit(spec, Payload(code=code))


def follow(backend: KubernetesBackend, name: str, timeout: float = 60.0) -> JobStatus:
    """Run the backend's watch (status + metrics) until the job ends; the last status."""
    seen: list[JobStatus] = []
    events: list[dict] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            backend.watch(name, seen.append, events.extend, stop)
        except BaseException as e:  # surfaced below
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while t.is_alive() and time.monotonic() < deadline:
        if seen and seen[-1].phase in TERMINAL:
            break
        t.join(0.1)
    stop.set()
    t.join(10)
    if errors:
        raise errors[0]
    assert seen, f"the watch of {name} reported no status in {timeout:.0f} s"
    assert seen[-1].phase in TERMINAL, f"{name} did not end in {timeout:.0f} s: {seen[-1].phase}"
    assert any(e.get("type") == "metric" for e in events), f"no metric of {name} reached the watcher"
    return seen[-1]


def wait_running(backend: KubernetesBackend, name: str, timeout: float = 30.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = backend.get(name)
        if status.phase == "running" or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def native_lifecycle(kubeconfig: Path, tmp_path: Path) -> None:
    """Everything a user does with native jobs: submit (flavor discovery), follow to the end, logs of
    every replica, list, attach from another kernel, stop a running job, delete both."""
    b = backend_for(kubeconfig)
    preflight_with_image_check(b)
    done = submit(b, "lp-done", ps=1, workers=2, storage=f"pvc:{CLAIM}/runs")  # the claim is checked
    assert done.flavor == "native"
    final = follow(b, "lp-done")
    assert final.phase == "succeeded", final.message
    for replica in ("chief-0", "worker-0", "worker-1", "ps-0"):
        b.logs("lp-done", replica)
    assert [s.name for s in b.list()] == ["lp-done"]

    submit(b, "lp-stop", code=LONG, workers=2)
    assert wait_running(b, "lp-stop").phase == "running"
    b.logs("lp-stop", "worker-0", tail=5)
    other_kernel = backend_for(kubeconfig, root=tmp_path / "other-kernel")
    assert other_kernel.get("lp-stop").phase == "running"  # attach: no local record
    b.stop("lp-stop")
    for name in ("lp-done", "lp-stop"):
        b.delete(name)


def preflight_with_image_check(backend: KubernetesBackend) -> None:
    """``%tfk8s_check --image``: the preflight a submission runs (LimitRanges included) plus the image
    check's one-off pod, which is deleted after."""
    from tfk8s_jupyter.backends.kubernetes.preflight import preflight

    spec = make_spec("pass", name="preflight", backend="kubernetes", workers=1)
    report = preflight(backend, spec, cheap=True, image=True, image_timeout=120)
    assert report.ok, report.text()
    assert [c.mark for c in report.checks if c.name == "image"] == ["✓"], report.text()


def failed_submission(server: ApiServer, kubeconfig: Path) -> str:
    """The second Job of a submission is refused: the backend removes what it created (Service, parent).
    Returns the error message."""
    b = backend_for(kubeconfig)
    server.fail(500, verb="create", resource="jobs", skip=1)
    try:
        submit(b, "lp-undo", ps=1, workers=1)
    except Exception as e:  # noqa: BLE001 - the message is the result
        assert server.objects(namespace=NAMESPACE) == [], "a failed submission left objects behind"
        return str(e)
    raise AssertionError("the injected failure did not fail the submission")


def tfjob_lifecycle(kubeconfig: Path) -> None:
    """TFJob flavor chosen by discovery: submit, read its status, stop, delete (no operator runs here)."""
    b = backend_for(kubeconfig)
    status = submit(b, "lp-tfjob", ps=1, workers=1)
    assert status.flavor == "tfjob"
    b.get("lp-tfjob")
    b.list()
    b.stop("lp-tfjob")
    b.delete("lp-tfjob")


def diagnostics_lifecycle(kubeconfig: Path) -> JobStatus:
    """A job whose pods the quota refuses: the backend reads the Jobs' events to say why."""
    b = backend_for(kubeconfig)
    submit(b, "lp-quota", code=LONG, workers=2)
    deadline = time.monotonic() + 20
    status = b.get("lp-quota")
    while not status.message and time.monotonic() < deadline:
        time.sleep(0.3)
        status = b.get("lp-quota")
    b.delete("lp-quota")
    return status
