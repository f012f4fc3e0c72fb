"""The runner contract, built once for both backends and read back by the runner (no TensorFlow)."""

from __future__ import annotations

import json
import re

import pytest

from tfk8s_jupyter.backends.kubernetes.manifests import container_env
from tfk8s_jupyter.backends.local import cluster_of, process_env
from tfk8s_jupyter.replica_env import SetupError, is_reporting, merge_no_proxy, read_env
from tfk8s_jupyter.runner import prepare_process_env
from tfk8s_jupyter.spec import make_spec

PS = "parameter_server"
MWMS = "multi_worker_mirrored"


def _env(**over) -> dict[str, str]:
    env = {
        "TFK8S_JOB": "j1",
        "TFK8S_ROLE": "worker",
        "TFK8S_INDEX": "1",
        "TFK8S_STRATEGY": PS,
        "TFK8S_CLUSTER": json.dumps(
            {"chief": ["h0:1"], "worker": ["h1:2", "h2:3"], "ps": ["h3:4"]},
        ),
        "TFK8S_PAYLOAD": "/p.json",
        "TFK8S_CHECKPOINT_DIR": "/ck",
        "TFK8S_METRIC_INTERVAL": "2.5",
    }
    env.update(over)
    return {k: v for k, v in env.items() if v is not None}


def test_tf_config_from_cluster_role_and_index():
    renv = read_env(_env())
    assert renv.checkpoint_interval == 10.0
    assert renv.tf_config == {
        "cluster": {"chief": ["h0:1"], "worker": ["h1:2", "h2:3"], "ps": ["h3:4"]},
        "task": {"type": "worker", "index": 1},
    }
    assert renv.metric_interval == 2.5 and renv.serves_only and not renv.reporting


def test_tf_config_drops_empty_roles_and_uses_completion_index():
    env = _env(
        TFK8S_STRATEGY=MWMS,
        TFK8S_INDEX=None,
        JOB_COMPLETION_INDEX="0",
        TFK8S_CLUSTER=json.dumps({"worker": ["a:1", "b:2"], "ps": [], "chief": []}),
    )
    renv = read_env(env)
    assert renv.tf_config == {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    assert renv.reporting and not renv.serves_only and not renv.uses_tf_keras


def test_existing_tf_config_is_kept():
    given = {"cluster": {"worker": ["x:1", "y:2"]}, "task": {"type": "worker", "index": 1}}
    renv = read_env(_env(TFK8S_STRATEGY=MWMS, TF_CONFIG=json.dumps(given), TFK8S_CLUSTER=None))
    assert renv.tf_config == given and renv.cluster == given["cluster"]


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"TFK8S_ROLE": "boss"}, "TFK8S_ROLE"),
        ({"TFK8S_INDEX": "one"}, "TFK8S_INDEX"),
        ({"TFK8S_INDEX": "5"}, "TFK8S_INDEX is 5"),
        ({"TFK8S_STRATEGY": "async"}, "TFK8S_STRATEGY"),
        ({"TFK8S_CLUSTER": "{not json"}, "TFK8S_CLUSTER is not JSON"),
        ({"TFK8S_CLUSTER": None}, "TFK8S_CLUSTER is not set"),
        ({"TFK8S_ROLE": "ps", "TFK8S_CLUSTER": json.dumps({"chief": ["a:1"], "worker": ["b:1"]})}, "ps"),
        ({"TFK8S_METRIC_INTERVAL": "fast"}, "TFK8S_METRIC_INTERVAL"),
    ],
)
def test_bad_environment_is_one_clear_sentence(over, words):
    with pytest.raises(SetupError, match=re.escape(words)):
        read_env(_env(**over))


def test_reporting_replica():
    cluster_ps = {"chief": ["a:1"], "worker": ["b:1"], "ps": ["c:1"]}
    assert is_reporting("chief", 0, PS, cluster_ps)
    assert not is_reporting("worker", 0, PS, cluster_ps)
    assert is_reporting("worker", 0, MWMS, {"worker": ["a:1", "b:1"]})
    assert not is_reporting("worker", 1, MWMS, {"worker": ["a:1", "b:1"]})


# ------------------------------------------------------------------------------------------------
# One contract for both backends


def _local_env(spec, replica: str, tmp_path, base: dict | None = None) -> dict[str, str]:
    ports = list(range(2001, 2001 + len(spec.replica_names)))
    return process_env(
        spec,
        replica,
        cluster_of(spec, ports),
        payload_path=tmp_path / "payload.json",
        checkpoint=tmp_path / "ckpt",
        workdir=tmp_path / "work",
        cuda_visible_devices="",
        base=base if base is not None else {"PATH": "/bin"},
    )


def _k8s_env(spec, role: str, index: int, flavor: str = "native") -> dict[str, str]:
    env = {e["name"]: e.get("value") for e in container_env(spec, role, "team-a", flavor)}
    env["JOB_COMPLETION_INDEX"] = str(index)  # what the Indexed Job controller adds
    return env


HOSTILE_USER_ENV = {
    "TFK8S_ROLE": "ps",
    "TFK8S_STRATEGY": "mirrored",
    "TFK8S_CLUSTER": '{"worker": ["evil:1"]}',
    "TFK8S_PAYLOAD": "/elsewhere.json",
    "no_proxy": "corp.example,internal.example",
    "MY_FLAG": "on",
}


@pytest.mark.parametrize("backend", ["local", "kubernetes"])
def test_the_contract_wins_over_the_users_env_and_no_proxy_is_merged(backend, tmp_path):
    spec = make_spec("print(1)", ps=1, workers=2, env=HOSTILE_USER_ENV)
    env = _local_env(spec, "worker-1", tmp_path) if backend == "local" else _k8s_env(spec, "worker", 1)
    renv = read_env(env)
    assert (renv.role, renv.index, renv.strategy) == ("worker", 1, PS)
    assert renv.tf_config["task"] == {"type": "worker", "index": 1}
    assert "evil:1" not in json.dumps(renv.cluster) and len(renv.cluster["worker"]) == 2
    assert env["TFK8S_PAYLOAD"] != "/elsewhere.json"
    assert env["MY_FLAG"] == "on"  # the user's own variables reach the replica
    for key in ("no_proxy", "NO_PROXY"):
        hosts = env[key].split(",")
        assert {"localhost", "127.0.0.1", ".svc", ".cluster.local"} <= set(hosts), hosts
        assert {"corp.example", "internal.example"} <= set(hosts), hosts


def test_both_backends_give_the_same_contract_variables(tmp_path):
    spec = make_spec("print(1)", workers=2, metric_interval=0.5)
    local = _local_env(spec, "worker-0", tmp_path)
    k8s = _k8s_env(spec, "worker", 0)
    contract = {k for k in local if k.startswith("TFK8S_")} - {"TFK8S_INDEX"}
    assert contract == {k for k in k8s if k.startswith("TFK8S_")}
    for key in ("TFK8S_JOB", "TFK8S_ROLE", "TFK8S_STRATEGY", "TFK8S_METRIC_INTERVAL"):
        assert local[key] == k8s[key], key
    assert read_env(local).reporting and read_env(k8s).reporting


def test_a_local_replica_never_inherits_the_submitters_cluster_settings(tmp_path):
    spec = make_spec("print(1)", workers=2)
    base = {"PATH": "/bin", "TF_CONFIG": "{}", "TFK8S_ROLE": "ps", "TFK8S_KERAS": "legacy", "NO_PROXY": "a.b"}
    env = _local_env(spec, "worker-1", tmp_path, base)
    assert "TF_CONFIG" not in env and "TFK8S_KERAS" not in env
    assert env["TFK8S_ROLE"] == "worker" and env["PATH"] == "/bin"
    assert "a.b" in env["no_proxy"].split(",")


def test_the_tfjob_flavor_leaves_the_cluster_to_the_operator():
    spec = make_spec("print(1)", ps=1, workers=2, backend="kubernetes")
    env = _k8s_env(spec, "worker", 0, flavor="tfjob")
    assert "TFK8S_CLUSTER" not in env
    assert f"{spec.name}" in env["no_proxy"]


def test_merge_no_proxy_keeps_the_first_of_each_host():
    assert merge_no_proxy("a,b", ["b", "c"], " d , ,a") == "a,b,c,d"
    assert merge_no_proxy("", ()) == ""


def test_process_env_for_parameter_servers_and_all_reduce():
    env = {"no_proxy": "corp.example", "http_proxy": "http://proxy:3128", "TF_USE_LEGACY_KERAS": "1"}
    prepare_process_env(read_env(_env(TFK8S_STRATEGY=MWMS, TFK8S_ROLE="worker")), env)
    for key in ("no_proxy", "NO_PROXY"):
        hosts = env[key].split(",")
        assert {"localhost", "127.0.0.1", ".svc", ".cluster.local", "h1", "h2"} <= set(hosts)
    assert env["no_proxy"].startswith("corp.example,")
    assert "TF_USE_LEGACY_KERAS" not in env and "GRPC_FAIL_FAST" not in env
    assert json.loads(env["TF_CONFIG"])["task"] == {"type": "worker", "index": 1}

    env = {}
    prepare_process_env(read_env(_env()), env)
    assert env["TF_USE_LEGACY_KERAS"] == "1" and env["GRPC_FAIL_FAST"] == "use_caller"
