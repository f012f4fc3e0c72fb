"""Job history on Kubernetes, against the test API server and test kubelet (stand-in runner): deleting a job
and ``keep_jobs`` remove the job's parent ConfigMap and with it every object of the job, and nothing else;
``%tfk8s_jobs --all-backends`` lists local and Kubernetes jobs together."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.kubernetes import manifests as m
from tfk8s_jupyter.config import current_owner
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.records import JobRecord
from tfk8s_jupyter.retention import apply_keep_jobs
from tfk8s_jupyter.spec import make_spec

sys.path.insert(0, str(Path(__file__).parents[1] / "notebook"))
sys.path.insert(0, str(Path(__file__).parents[1]))
from local_helpers import wait_for  # noqa: E402
from notebook_helpers import make_shell  # noqa: E402

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(240)]

QUICK = "EPOCHS = 1\nSTEPS = {steps}\nSTEP_SECONDS = 0.01\n"
LONG = "EPOCHS = 100\nSTEPS = 100\nSTEP_SECONDS = 0.05\n"
DAY = 86400.0


def submit(backend, name: str, code: str, owner: str | None = None):
    spec = make_spec(code, name=name, workers=2, ps=1, backend="kubernetes", owner=owner or current_owner())
    backend.submit(spec, Payload(code=spec.code))


def finish(backend, name: str) -> None:
    wait_for(lambda: backend.get(name).done, 90, f"{name} to end", poll=0.3)


def objects_by_job(apiserver) -> dict[str, dict[str, int]]:
    """Every object on the server, counted by its job label and kind (``-`` for objects of no job)."""
    out: dict[str, dict[str, int]] = {}
    for obj in apiserver.objects():
        job = (obj["metadata"].get("labels") or {}).get(m.LABEL_JOB, "-")
        kinds = out.setdefault(job, {})
        kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
    return out


def test_delete_and_keep_jobs_remove_a_jobs_configmap_and_objects_and_nothing_else(
    apiserver, standin_cluster, backend, tfk8s_home
):
    for name, steps in (("a1", 2), ("a2", 3), ("a3", 4)):
        submit(backend, name, QUICK.format(steps=steps))
        time.sleep(0.05)  # distinct submission times
    submit(backend, "b1", QUICK.format(steps=2), owner="bob")
    for name in ("a1", "a2", "a3", "b1"):
        finish(backend, name)
    submit(backend, "live", LONG)
    wait_for(lambda: backend.get("live").phase == "running", 60, "live to run", poll=0.3)
    before = objects_by_job(apiserver)
    assert sorted(before) == ["a1", "a2", "a3", "b1", "live"]
    for name in ("a1", "a2", "a3", "b1"):
        # a finished job keeps its parent ConfigMap and Service (and the reporting replica's Job until its
        # TTL): without retention they stay forever
        # (the parent ConfigMap, and the outcome ConfigMap the job's end writes)
        assert before[name]["ConfigMap"] >= 1 and before[name]["Service"] == 1, before[name]

    # keep the newest finished job of mine: a1 and a2 go, with everything of theirs
    mark = len(apiserver.request_log)
    pruned = apply_keep_jobs(backend, backend.list(owner=None), keep="1")
    assert pruned.deleted == ["a1", "a2"]
    assert pruned.line() == "tfk8s: keep_jobs = '1' removed 2 finished kubernetes jobs (a1, a2)."
    assert sorted(s.name for s in pruned.kept) == ["a3", "b1", "live"]
    after = objects_by_job(apiserver)
    assert after == {k: v for k, v in before.items() if k not in ("a1", "a2")}
    assert not JobRecord("a1").exists() and not JobRecord("a2").exists() and JobRecord("a3").exists()
    deletes = [(r["resource"], r["name"]) for r in apiserver.request_log[mark:] if r["verb"] == "delete"]
    assert deletes == [("configmaps", "a1"), ("configmaps", "a2")]

    # an age: a3 is the only finished job of mine older than it; the running job stays however old
    status = JobRecord("a3").read_status()
    status["created"] -= 8 * DAY
    JobRecord("a3").write_status(status)
    # a delete the cluster refuses: the job stays listed, and the line says why
    apiserver.fail(403, verb="delete", resource="configmaps", name="a3")
    pruned = apply_keep_jobs(backend, backend.list(owner=current_owner()), keep="7d")
    assert pruned.deleted == [] and sorted(s.name for s in pruned.kept) == ["a3", "live"]
    assert pruned.line() == (
        "tfk8s: keep_jobs = '7d': could not remove kubernetes job a3: your account may not delete configmaps "
        "in namespace default; ask an administrator to grant it (a Role with verb 'delete' on 'configmaps', "
        "see deploy/), or use a namespace where you may."
    )
    assert objects_by_job(apiserver) == {k: v for k, v in before.items() if k not in ("a1", "a2")}
    pruned = apply_keep_jobs(backend, backend.list(owner=current_owner()), keep="1s")
    assert pruned.deleted == ["a3"]
    assert objects_by_job(apiserver) == {k: v for k, v in before.items() if k in ("b1", "live")}
    assert backend.get("live").phase == "running"

    # deleting a job (here the running one) removes its ConfigMap and every object of it
    backend.delete("live")
    wait_for(lambda: "live" not in objects_by_job(apiserver), 30, "live's objects to go")
    assert objects_by_job(apiserver) == {"b1": before["b1"]}


@pytest.fixture
def shell(tmp_path, monkeypatch, standin, kubeconfig):
    import tfk8s_jupyter.api as api

    nb = tmp_path / "nb"
    nb.mkdir()
    monkeypatch.chdir(nb)
    api._backends.pop("kubernetes", None)
    sh = make_shell(tmp_path / "ipython")
    sh.run_line_magic("load_ext", "tfk8s_jupyter")
    yield sh
    InteractiveShell.clear_instance()
    api._backends.pop("kubernetes", None)


def test_magics_list_both_backends_and_delete_older_kubernetes_jobs(
    apiserver, standin_cluster, shell, capsys
):
    local = tk.submit(QUICK.format(steps=3), workers=1, name="on-laptop")
    b = tk.api.backend_for("kubernetes")
    submit(b, "on-cluster", QUICK.format(steps=4))
    submit(b, "old-on-cluster", QUICK.format(steps=2))
    assert local.wait(timeout=60) == "succeeded"
    finish(b, "on-cluster")
    finish(b, "old-on-cluster")
    capsys.readouterr()

    shell.run_line_magic("tfk8s_jobs", "--all-backends")
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == ["old-on-cluster", "on-cluster", "on-laptop"]
    assert rows["on-laptop"][1:3] == ["succeeded", "local"] and "0.25" in rows["on-laptop"]
    assert rows["on-cluster"][1:3] == ["succeeded", "kubernetes"] and "0.2" in rows["on-cluster"]

    status = JobRecord("old-on-cluster").read_status()
    status["created"] -= 8 * DAY
    JobRecord("old-on-cluster").write_status(status)
    shell.run_line_magic("tfk8s_delete", "--backend kubernetes --older-than 7d")
    assert capsys.readouterr().out.strip() == "tfk8s: deleted 1 job: old-on-cluster (succeeded)."
    assert sorted(objects_by_job(apiserver)) == ["on-cluster"]
    # (the job's parent ConfigMap and the outcome ConfigMap its end wrote)
    assert [cm["metadata"]["name"] for cm in apiserver.objects("configmaps")] == [
        "on-cluster",
        "on-cluster-outcome",
    ]
