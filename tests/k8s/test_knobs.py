"""The knobs shared clusters ask of batch work, on the test cluster: a Kueue queue (the Jobs wait suspended,
the job shows "queued", and it runs once admitted), and a deadline that ends a job with a clear message."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import SpecError, make_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from k8s_scenarios import LONG, QUICK, follow  # noqa: E402

pytestmark = pytest.mark.k8s


def submit(backend, name, code, **kw):
    spec = make_spec(code, name=name, backend="kubernetes", **{"flavor": "native", "workers": 2, **kw})
    return backend.submit(spec, Payload(code=code))


def test_a_queued_job_shows_queued_until_kueue_admits_it(backend, standin_cluster, apiserver):
    status = submit(backend, "kq", QUICK, queue="team-a")
    time.sleep(1.0)
    status = backend.get("kq")
    assert status.phase == "queued", status
    assert "Kueue" in status.message and "team-a" in status.message
    jobs = apiserver.objects("jobs", namespace="default")
    assert jobs and all(j["spec"]["suspend"] is True for j in jobs)
    assert all(j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a" for j in jobs)
    assert apiserver.objects("pods", namespace="default") == []
    for j in jobs:
        standin_cluster.admit("default", j["metadata"]["name"])
    final = follow(backend, "kq", timeout=90)
    assert final.phase == "succeeded", final
    backend.delete("kq")


def test_a_deadline_exceeded_ends_the_job_with_a_clear_message(backend, standin_cluster, apiserver):
    submit(backend, "kd", LONG, deadline="3s")
    jobs = apiserver.objects("jobs", namespace="default")
    assert {j["spec"]["activeDeadlineSeconds"] for j in jobs} == {3}
    final = follow(backend, "kd", timeout=90)
    assert final.phase == "failed", final
    assert "ran past its deadline of 3 s" in final.message and "--deadline" in final.message, final.message
    assert not standin_cluster.running()
    backend.delete("kd")


def test_a_tfjob_past_its_deadline_ends_with_the_same_clear_message(backend, standin_cluster, apiserver):
    """The TFJob flavor's deadline is ``runPolicy.activeDeadlineSeconds``; the training operator fails the
    TFJob (TFJobFailed, "... active longer than specified deadline") and removes its pods."""
    apiserver.tfjob_crd = True
    submit(backend, "kd-tf", LONG, flavor="tfjob", ps=1, workers=1, deadline="3s")
    tfjob = apiserver.objects("tfjobs", namespace="default")[0]
    assert tfjob["spec"]["runPolicy"]["activeDeadlineSeconds"] == 3
    final = follow(backend, "kd-tf", timeout=90)
    assert final.phase == "failed", final
    assert "ran past its deadline of 3 s" in final.message and "--deadline" in final.message, final.message
    assert not standin_cluster.running()
    backend.delete("kd-tf")


@pytest.mark.parametrize("bad", ["0", "-5", "soon", 0])
def test_a_deadline_that_is_not_a_positive_duration_is_refused(bad):
    with pytest.raises(SpecError, match="not a positive duration"):
        make_spec("pass", workers=1, deadline=bad)


def test_a_queue_or_priority_class_that_is_not_a_name_is_refused():
    with pytest.raises(SpecError, match="priority_class 'Low Prio' is not a valid object name"):
        make_spec("pass", workers=1, priority_class="Low Prio")


def test_all_namespaces_lists_the_users_jobs_in_every_namespace_they_may_list(backend, apiserver, capsys):
    import yaml

    role = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "deploy/kubernetes/base/role.yaml").read_text()
    )
    apiserver.enforce_rules(role["rules"])  # namespaces come from the kubeconfig's contexts (default, team)
    submit(backend, "in-default", QUICK)
    submit(backend, "in-team", QUICK, namespace="team")
    assert [s.name for s in backend.list()] == ["in-default"]
    everywhere = {s.name: s.namespace for s in backend.list(all_namespaces=True)}
    assert everywhere == {"in-default": "default", "in-team": "team"}
    assert not any(e["resource"] == "namespaces" for e in apiserver.request_log)  # not allowed: not asked

    from IPython.testing.globalipapp import get_ipython

    import tfk8s_jupyter.api as api_module

    ip = get_ipython()
    ip.run_line_magic("load_ext", "tfk8s_jupyter")
    api_module._backends.clear()
    capsys.readouterr()
    ip.run_line_magic("tfk8s_jobs", "--backend kubernetes --all-namespaces")
    out = capsys.readouterr().out
    assert "in-team" in out and "kubernetes/team" in out and "in-default" in out, out
    api_module._backends.clear()
    for name in ("in-default", "in-team"):
        backend.delete(name)
