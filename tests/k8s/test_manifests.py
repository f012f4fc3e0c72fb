"""Manifests as pure functions: schema-valid (strict, current Kubernetes; the TFJob CRD), restricted Pod
Security, GPUs only where they belong, stable DNS, labels, and a runner that builds the right TF_CONFIG."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tfk8s_jupyter.backends.kubernetes import ManifestError, manifests_yaml, render_manifests
from tfk8s_jupyter.backends.kubernetes.manifests import RUNNER_FILES, set_owner
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import make_spec

pytestmark = pytest.mark.k8s

K8S_VERSION = "1.33"
CRD = Path(__file__).parent / "data" / "kubeflow.org_tfjobs.v1.9.0.yaml"
TFJOB_SCHEMA = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def ps_spec(**kw):
    opts = dict(
        ps=2,
        workers=3,
        gpus=1,
        name="mnist",
        backend="kubernetes",
        cpu="2",
        memory="4Gi",
        owner="alice@example.org",
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        node_selector={"pool": "gpu"},
        image_pull_secrets=["registry"],
        service_account="trainer",
        env={"EXTRA": "1", "no_proxy": "internal.example"},
        labels={"team": "vision"},
    )
    opts.update(kw)
    return make_spec("model.fit(x, y)", **opts)


def mwms_spec(**kw):
    return make_spec("model.fit(x, y)", workers=4, name="sync", backend="kubernetes", **kw)


def validate_core(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def containers(obj: dict) -> list[tuple[str, dict, dict]]:
    """(role, pod spec, container) of a Job or of every TFJob replica."""
    if obj["kind"] == "Job":
        t = obj["spec"]["template"]
        return [(t["metadata"]["labels"]["tfk8s.io/role"], t["spec"], t["spec"]["containers"][0])]
    if obj["kind"] == "TFJob":
        out = []
        for rs in obj["spec"]["tfReplicaSpecs"].values():
            t = rs["template"]
            out.append((t["metadata"]["labels"]["tfk8s.io/role"], t["spec"], t["spec"]["containers"][0]))
        return out
    return []


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize("spec", [ps_spec(), mwms_spec(), ps_spec(gpus=0, cpu=None, memory=None)])
def test_every_native_object_passes_strict_validation(spec):
    objs = render_manifests(spec, Payload(code=spec.code))
    assert [o["kind"] for o in objs][:3] == ["ConfigMap", "Secret", "Service"]
    assert [o["metadata"]["name"] for o in objs[3:]] == [f"{spec.name}-{r.role}" for r in spec.replicas]
    for obj in objs:
        validate_core(obj)


def test_owner_references_validate_once_the_parent_exists():
    spec = ps_spec()
    cm, *children = render_manifests(spec)
    cm["metadata"]["uid"] = "0c3e7a8e-4c5e-4a8b-9a51-2d1f6f0e2b11"
    for child in children:
        set_owner(child, cm)
        validate_core(child)
        assert child["metadata"]["ownerReferences"][0]["name"] == spec.name


@pytest.mark.parametrize("spec", [ps_spec(), mwms_spec()])
def test_tfjob_passes_the_upstream_crd_schema(spec):
    cm, secret, tfjob = render_manifests(spec, flavor="tfjob")
    validate_core(cm)
    validate_core(secret)
    jsonschema.validate(tfjob, TFJOB_SCHEMA)
    assert tfjob["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"
    assert tfjob["spec"]["runPolicy"]["backoffLimit"] == spec.max_restarts
    replica_types = set(tfjob["spec"]["tfReplicaSpecs"])
    assert replica_types == ({"Chief", "PS", "Worker"} if spec.ps else {"Worker"})
    for rs in tfjob["spec"]["tfReplicaSpecs"].values():
        # the operator finds the TF port on the container named "tensorflow"
        assert rs["template"]["spec"]["containers"][0]["name"] == "tensorflow"
        assert rs["restartPolicy"] == "OnFailure"
        assert "TFK8S_CLUSTER" not in env_of(
            rs["template"]["spec"]["containers"][0]
        )  # the operator sets TF_CONFIG


def test_an_invalid_tfjob_is_caught_by_the_crd_schema():
    *_, tfjob = render_manifests(ps_spec(), flavor="tfjob")
    tfjob["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tfjob, TFJOB_SCHEMA)


def test_strict_validation_catches_an_unknown_field():
    job = render_manifests(ps_spec())[3]
    job["spec"]["template"]["spec"]["containers"][0]["gpuCount"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(job)


@pytest.mark.parametrize("flavor", ["native", "tfjob"])
def test_gpus_go_to_chief_and_workers_never_to_ps(flavor):
    spec = ps_spec(gpus=2, gpu_resource="amd.com/gpu")
    seen = set()
    for obj in render_manifests(spec, flavor=flavor):
        for role, _, c in containers(obj):
            seen.add(role)
            limits = c.get("resources", {}).get("limits", {})
            if role == "ps":
                assert "amd.com/gpu" not in limits and "nvidia.com/gpu" not in limits
            else:
                assert limits["amd.com/gpu"] == "2"
            assert c["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert seen == {"ps", "chief", "worker"}


@pytest.mark.parametrize("flavor", ["native", "tfjob"])
def test_pods_meet_the_restricted_pod_security_profile(flavor):
    for obj in render_manifests(ps_spec(), flavor=flavor):
        for _, pod, c in containers(obj):
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert "privileged" not in sc and "hostNetwork" not in pod and "hostPath" not in json.dumps(pod)
            assert pod["automountServiceAccountToken"] is False


def test_pod_options_from_the_spec():
    spec = ps_spec()
    for obj in render_manifests(spec):
        for _, pod, c in containers(obj):
            assert pod["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ]
            assert pod["nodeSelector"] == {"pool": "gpu"}
            assert pod["imagePullSecrets"] == [{"name": "registry"}]
            assert pod["serviceAccountName"] == "trainer"
            assert c["image"] == "tfk8s/trainer:0.1.0"
            env = env_of(c)
            assert env["EXTRA"] == "1"
            hosts = env["no_proxy"].split(",")
            assert {".svc", ".cluster.local", "localhost", "127.0.0.1", "internal.example"} <= set(hosts)
            assert env["NO_PROXY"] == env["no_proxy"]


def test_labels_on_every_object_and_pod_template():
    spec = ps_spec()
    for obj in render_manifests(spec) + render_manifests(spec, flavor="tfjob")[1:]:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "tfk8s-jupyter"
        assert labels["tfk8s.io/job"] == "mnist"
        assert labels["tfk8s.io/owner"] == "alice-example.org"  # a valid label value
        assert labels["team"] == "vision"
        assert obj["metadata"]["annotations"]["tfk8s.io/owner"] == "alice@example.org"
        for role, _, _ in containers(obj):
            assert role in ("ps", "chief", "worker")


def test_native_dns_names_and_the_runner_builds_tf_config_from_them():
    """Each pod's env (+ the JOB_COMPLETION_INDEX the Job controller adds) gives the runner its TF_CONFIG."""
    from tfk8s_jupyter.replica_env import read_env

    spec = ps_spec()
    objs = render_manifests(spec, namespace="ml")
    svc = objs[2]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    for job in objs[3:]:
        role = job["metadata"]["labels"]["tfk8s.io/role"]
        pod = job["spec"]["template"]["spec"]
        assert pod["subdomain"] == svc["metadata"]["name"]
        assert job["spec"]["completionMode"] == "Indexed"
        count = job["spec"]["completions"]
        for index in range(count):
            env = {**env_of(pod["containers"][0]), "JOB_COMPLETION_INDEX": str(index)}
            renv = read_env(env)
            assert renv.tf_config["task"] == {"type": role, "index": index}
            me = renv.tf_config["cluster"][role][index]
            # Indexed Job pods are named <job-name>-<index>; with the subdomain that is their DNS name
            assert me == f"{job['metadata']['name']}-{index}.{svc['metadata']['name']}.ml.svc:2222"
    assert read_env({**env, "JOB_COMPLETION_INDEX": "0"}).tf_config["cluster"].keys() == {
        "chief",
        "ps",
        "worker",
    }


def test_ttl_backoff_and_restart_policy_of_native_jobs():
    spec = ps_spec(max_restarts=2, ttl_seconds_after_finished=600)
    for job in render_manifests(spec)[3:]:
        assert job["spec"]["ttlSecondsAfterFinished"] == 600
        assert job["spec"]["backoffLimit"] == 2 * job["spec"]["completions"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


def test_the_configmap_carries_payload_spec_and_a_standalone_runner(tmp_path):
    """The runner travels in the ConfigMap: a stock image needs no copy of this package."""
    spec = mwms_spec()
    payload = Payload(code=spec.code, prelude="import math\n", values={"n": b"\x80\x04K\x03."})
    cm = render_manifests(spec, payload)[0]
    data = cm["data"]
    assert Payload.from_json(data["payload.json"]) == payload
    assert json.loads(data["spec.json"])["name"] == "sync"
    assert set(RUNNER_FILES) <= set(data)
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    # outside the repo, with no tfk8s_jupyter importable (-S: not even through the editable install's
    # .pth in site-packages): the copy must run on its own
    env = {"PATH": os.environ["PATH"], "TFK8S_ROLE": "nonsense"}
    proc = subprocess.run(
        [sys.executable, "-S", str(tmp_path / "runner.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "TFK8S_ROLE" in proc.stderr and "Traceback" not in proc.stderr


def test_a_payload_too_large_for_a_configmap_is_one_clear_error():
    spec = mwms_spec()
    with pytest.raises(ManifestError, match="more than the 1 MB a Kubernetes ConfigMap holds"):
        render_manifests(spec, Payload(code=spec.code, files={"big.txt": "x" * 1_100_000}))


def test_dry_run_yaml_parses_back_to_the_same_objects_and_validates():
    spec = ps_spec()
    for flavor in ("native", "tfjob", "auto"):
        objs = render_manifests(spec, flavor=flavor)
        text = manifests_yaml(objs)
        docs = [d for d in yaml.safe_load_all(text) if d]
        assert docs == objs
        for d in docs:
            if d["kind"] == "TFJob":
                jsonschema.validate(d, TFJOB_SCHEMA)
            else:
                validate_core(d)
    assert [d["kind"] for d in yaml.safe_load_all(manifests_yaml(render_manifests(spec, flavor="auto")))] == [
        "ConfigMap",
        "Secret",
        "Service",
        "Job",
        "Job",
        "Job",
    ]


def test_dry_run_needs_no_cluster_and_no_kubernetes_import():
    code = (
        "import sys\n"
        "from tfk8s_jupyter.backends.kubernetes import render_manifests, manifests_yaml\n"
        "from tfk8s_jupyter.spec import make_spec\n"
        "s = make_spec('print(1)', workers=2, name='x', backend='kubernetes')\n"
        "print(manifests_yaml(render_manifests(s))[:3])\n"
        "assert 'kubernetes' not in sys.modules, 'dry-run imported the kubernetes client'\n"
    )
    env = {**os.environ, "KUBECONFIG": "/nonexistent"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("---")


@pytest.mark.parametrize("flavor", ["native", "tfjob"])
def test_deadline_priority_class_queue_and_service_account(flavor):
    spec = ps_spec(deadline="90m", priority_class="batch-low", queue="team-a", service_account="trainer")
    objs = render_manifests(spec, flavor=flavor)
    for obj in objs:
        if obj["kind"] == "TFJob":
            jsonschema.validate(obj, TFJOB_SCHEMA)
            policy = obj["spec"]["runPolicy"]
            assert policy["activeDeadlineSeconds"] == 5400 and policy["suspend"] is True
            assert obj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        else:
            validate_core(obj)
        if obj["kind"] == "Job":
            assert obj["spec"]["activeDeadlineSeconds"] == 5400 and obj["spec"]["suspend"] is True
            assert obj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    pods = [(role, pod) for role, pod, _ in (c for o in objs[1:] for c in containers(o))]
    assert pods and all(p["priorityClassName"] == "batch-low" for _, p in pods)
    assert all(p["serviceAccountName"] == "trainer" for _, p in pods)
    plain = render_manifests(ps_spec(), flavor=flavor)
    text = json.dumps(plain)
    assert "activeDeadlineSeconds" not in text and "suspend" not in text and "priorityClassName" not in text


@pytest.mark.parametrize("flavor", ["native", "tfjob"])
def test_the_protocol_key_is_in_the_jobs_secret_only_never_in_the_pod_spec_or_the_parent(flavor):
    """The job's protocol key lives in its own Secret <job>-protocol; the pods read it with secretKeyRef,
    and neither the pod spec nor the parent ConfigMap (readable by the whole namespace) shows it."""
    spec = mwms_spec(flavor=flavor)
    objects = render_manifests(spec, Payload(code=spec.code))
    assert spec.protocol_key
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    validate_core(secret)
    assert secret["metadata"]["name"] == f"{spec.name}-protocol"
    assert base64.b64decode(secret["data"]["protocol-key"]).decode() == spec.protocol_key
    assert json.loads(objects[0]["data"]["spec.json"])["protocol_key"] == ""
    for obj in objects:
        if obj["kind"] != "Secret":
            assert spec.protocol_key not in json.dumps(obj), f"the key is readable in the {obj['kind']}"
    pods = [p for obj in objects for p in containers(obj)]
    assert pods
    for _, pod_spec, container in pods:
        (volume,) = [v for v in pod_spec["volumes"] if v.get("configMap", {}).get("name") == spec.name]
        projected = {i["key"] for i in volume["configMap"]["items"]}
        assert projected == {"payload.json", *RUNNER_FILES}
        (entry,) = [e for e in container["env"] if e["name"] == "TFK8S_PROTOCOL_KEY"]
        assert entry == {
            "name": "TFK8S_PROTOCOL_KEY",
            "valueFrom": {"secretKeyRef": {"name": f"{spec.name}-protocol", "key": "protocol-key"}},
        }


@pytest.mark.parametrize("flavor", ["native", "tfjob"])
def test_secret_env_becomes_secret_key_refs_in_every_replica_and_no_value_anywhere(flavor):
    spec = ps_spec(
        secret_env={"WANDB_API_KEY": "wandb/api-key", "EXTRA": "extra/value"},
        env={"EXTRA": "plain", "A": "1"},
    )
    objects = render_manifests(spec, flavor=flavor)
    pods = [c for obj in objects for c in containers(obj)]
    assert {role for role, _, _ in pods} == {"ps", "chief", "worker"}
    for _, _, container in pods:
        env = {e["name"]: e for e in container["env"]}
        assert env["WANDB_API_KEY"] == {
            "name": "WANDB_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}},
        }
        # a name in both: the Secret wins and the plain value is not stored in the pod spec
        assert env["EXTRA"] == {
            "name": "EXTRA",
            "valueFrom": {"secretKeyRef": {"name": "extra", "key": "value"}},
        }
        assert env["A"] == {"name": "A", "value": "1"}
        assert [e["name"] for e in container["env"]].count("EXTRA") == 1
    for obj in objects:
        if obj["kind"] == "TFJob":
            jsonschema.validate(obj, TFJOB_SCHEMA)
        else:
            validate_core(obj)


def test_secret_env_cannot_override_the_runner_contract():
    spec = ps_spec(secret_env={"TFK8S_ROLE": "s/k"})
    for obj in render_manifests(spec):
        for role, _, container in containers(obj):
            (entry,) = [e for e in container["env"] if e["name"] == "TFK8S_ROLE"]
            assert entry == {"name": "TFK8S_ROLE", "value": role}
