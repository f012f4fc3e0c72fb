"""The bad-input matrix: every bad value through each face a user has - the Python API (``submit``), the
``%%tfk8s_train`` magic and the line magics on a real IPython shell, the REST routes on a real Jupyter server,
and ``c.TFK8s.*`` config - is refused in ONE sentence that names the value and the fix, with no traceback and
no raw ``ValueError``/``TypeError`` text, and leaves nothing behind: no new file under the job records, no new
child process, no new Kubernetes object (counted on the in-repo test API server), and no request at all to a
cluster when the value is wrong in itself (a kubeconfig pointing at an address where nothing listens: the
error names the value, never a connection).

One table, :data:`CASES`; each face's test takes the rows of its face. Nothing here starts TensorFlow: every
refusal happens before any process starts (``subprocess.Popen`` is a tripwire on the faces that could start
one, so a case that is wrongly accepted fails without starting a job).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from local_helpers import children_of
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

import tfk8s_jupyter as tk
from tfk8s_jupyter import api
from tfk8s_jupyter import config as tfk8s_config
from tfk8s_jupyter.backends.base import TFK8sError
from tfk8s_jupyter.backends.local_capacity import (
    MAX_REPLICAS_PER_CORE,
    REPLICA_MEMORY,
    check_local_capacity,
    usable_cores,
)
from tfk8s_jupyter.config import TFK8s, current_owner
from tfk8s_jupyter.spec import SpecError, make_spec

TESTS = Path(__file__).resolve().parent
for sub in ("k8s", "lab", "notebook"):
    if str(TESTS / sub) not in sys.path:
        sys.path.insert(0, str(TESTS / sub))

from apiserver import ApiServer  # noqa: E402
from labjobs import write_record  # noqa: E402
from notebook_helpers import make_shell  # noqa: E402

pytest_plugins = ["pytest_jupyter.jupyter_server"]

CODE = "model.fit(x, y, epochs=1)\n"
# What no refusal may carry: a traceback, Python's own exception texts, a connection error.
RAW = (
    "Traceback",
    "ValueError",
    "TypeError",
    "KeyError",
    "AttributeError",
    "dictionary update sequence",
    "object has no attribute",
    "invalid literal",
    "Errno",
    "Connection refused",
    "Max retries",
    "NewConnectionError",
    "could not be reached",
    "cannot be reached",
    "unreachable",
)


@dataclass(frozen=True)
class Case:
    face: str  # api | cluster | apiserver | magic | line | rest | config
    given: Any
    says: tuple[str, ...]  # fragments the sentence must hold: the bad value and the fix


def case(face: str, name: str, given: Any, *says: str):
    return pytest.param(Case(face, given, says), id=f"{face}:{name}")


BIG = 5000  # workers=5000 on the local backend: 5,000 TensorFlow processes on this machine
LOCAL_BACKEND = "backend='kubernetes', or --backend kubernetes"

CASES = [
    # -- the Python API, local backend ---------------------------------------------------------------------
    case("api", "workers-5000-local", dict(workers=BIG), f"{BIG} TensorFlow processes", LOCAL_BACKEND),
    case(
        "api",
        "ps-and-workers-beyond-the-cores",
        dict(ps=4, workers=40),
        "45 TensorFlow processes",
        LOCAL_BACKEND,
    ),
    case(
        "api", "metric-interval-negative", dict(metric_interval=-1), "metric_interval -1", "0 or more seconds"
    ),
    case("api", "metric-interval-text", dict(metric_interval="fast"), "metric_interval 'fast'", "e.g. 1.0"),
    case(
        "api",
        "ttl-negative",
        dict(ttl_seconds_after_finished=-1),
        "ttl_seconds_after_finished is -1",
        "0 or more",
    ),
    case(
        "api",
        "ttl-text",
        dict(ttl_seconds_after_finished="1h"),
        "ttl_seconds_after_finished '1h'",
        "whole number",
    ),
    case("api", "label-key-invalid", dict(labels={"team name!": "ml"}), "'team name!'", "label key"),
    case(
        "api",
        "label-value-invalid",
        dict(labels={"team": "machine learning"}),
        "'machine learning'",
        "at most 63",
    ),
    case(
        "api",
        "labels-a-string",
        dict(labels="team=ml"),
        "labels 'team=ml' is not a mapping",
        "{'team': 'ml'}",
    ),
    case("api", "env-a-string", dict(env="A=1"), "env 'A=1' is not a mapping", "{'A': '1'}"),
    case("api", "env-a-list", dict(env=["A=1"]), "env ['A=1'] is not a mapping", "give a dict"),
    case(
        "api", "env-value-not-a-string", dict(env={"A": 1}), "environment variable A", "pass it as a string"
    ),
    case("api", "env-name-invalid", dict(env={"1BAD": "x"}), "'1BAD' is invalid", "KEY=VALUE"),
    case(
        "api",
        "node-selector-a-string",
        dict(node_selector="gpu"),
        "node_selector 'gpu' is not a mapping",
        "e.g.",
    ),
    case("api", "node-selector-value", dict(node_selector={"gpu": 1}), "value 1 of 'gpu'", "label value"),
    case("api", "tolerations-a-string", dict(tolerations="gpu"), "tolerations 'gpu'", "give one like"),
    case(
        "api",
        "toleration-operator",
        dict(tolerations=[{"key": "gpu", "operator": "Sometimes"}]),
        "'Sometimes'",
        "'Exists' or 'Equal'",
    ),
    case(
        "api",
        "pull-secrets-a-string",
        dict(image_pull_secrets="regcred"),
        "image_pull_secrets 'regcred'",
        "['regcred']",
    ),
    case(
        "api",
        "magic-line",
        dict(code="%matplotlib inline\nmodel.fit(x, y)\n"),
        "'%matplotlib inline'",
        "IPython",
    ),
    case(
        "api",
        "shell-line",
        dict(code="!pip install pandas\nmodel.fit(x, y)\n"),
        "'!pip install pandas'",
        "plain Python",
    ),
    case("api", "assigned-shell-line", dict(code="x = 1\nfiles = !ls\n"), "line 2", "shell escape"),
    case(
        "api",
        "the-magic-line-itself",
        dict(code="%%tfk8s_train --workers 2\nmodel.fit(x, y)\n"),
        "'%%tfk8s_train --workers 2'",
        "submit(code, workers=2)",
    ),
    case(
        "api",
        "syntax-error",
        dict(code="if x > 1\n    model.fit(x)\n"),
        "syntax error on line 1",
        "fix that line",
    ),
    case("api", "empty-cell", dict(code=""), "the cell is empty", "model.fit"),
    case("api", "blank-cell", dict(code="  \n\t\n"), "the cell is empty", "model.fit"),
    case("api", "gpus-negative", dict(gpus=-1), "gpus is -1", "0 or more"),
    case("api", "gpus-fraction", dict(gpus=1.5), "gpus 1.5 is not a whole number", "0 or more"),
    case(
        "api",
        "gpus-on-ps",
        dict(ps=1, workers=1, gpus={"ps": 1}),
        "ps replicas were given 1 GPU",
        "drop the GPUs for ps",
    ),
    case("api", "cpu-lots", dict(cpu="lots"), "cpu 'lots'", "e.g. '500m'"),
    case("api", "memory-negative", dict(memory="-1Gi"), "memory '-1Gi'", "'4Gi'"),
    case("api", "deadline-soon", dict(deadline="soon"), "deadline 'soon'", "'90s'"),
    case("api", "stall-timeout-negative", dict(stall_timeout=-1), "stall_timeout -1", "0 (off) or more"),
    case("api", "setup-timeout-zero", dict(setup_timeout=0), "setup_timeout 0", "positive number of seconds"),
    case("api", "unknown-option", dict(wokers=2), "['wokers']", "help(tfk8s_jupyter.submit)"),
    case("api", "name-too-long", dict(name="a" * 41), "is 41 characters long", "at most 40"),
    case("api", "name-uppercase", dict(name="MyJob"), "'MyJob'", "lowercase letters"),
    case("api", "workers-zero", dict(workers=0), "workers is 0", "at least 1 worker"),
    case("api", "workers-text", dict(workers="two"), "workers 'two'", "at least 1 worker"),
    case("api", "ps-negative", dict(ps=-1), "ps is -1", "0 parameter servers"),
    case("api", "ps-without-workers", dict(ps=1, workers=0), "ps=1 with workers=0", "workers=1 or more"),
    case(
        "api",
        "mirrored-with-workers",
        dict(workers=2, strategy="mirrored"),
        "workers=2",
        "multi_worker_mirrored",
    ),
    case("api", "strategy-unknown", dict(strategy="horovod"), "'horovod'", "parameter_server"),
    case("api", "backend-unknown", dict(backend="mars"), "'mars'", "'local' or 'kubernetes'"),
    case("api", "flavor-unknown", dict(flavor="operator"), "'operator'", "native or tfjob"),
    case("api", "max-restarts-negative", dict(max_restarts=-1), "max_restarts is -1", "0 (never restart)"),
    case("api", "storage-unknown-scheme", dict(storage="ftp://files/runs"), "'ftp'", "pvc:CLAIM"),
    case("api", "storage-bad-claim", dict(storage="pvc:Team_Data"), "'Team_Data'", "pvc:team-data/runs"),
    case("api", "resume-from-not-a-name", dict(resume_from="last run"), "'last run'", "earlier job"),
    case(
        "api",
        "resume-from-itself",
        dict(name="same-job", resume_from="same-job"),
        "'same-job'",
        "another name",
    ),
    case("api", "save-model-text", dict(save_model="yes"), "save_model 'yes'", "True or False"),
    case("api", "checkpoint-dir-number", dict(checkpoint_dir=5), "checkpoint_dir 5", "'/data/ckpt'"),
    case("api", "gpu-resource-invalid", dict(gpu_resource="gpu"), "gpu_resource 'gpu'", "'nvidia.com/gpu'"),
    case("api", "code-not-text", dict(code=123), "the code 123 is not text", "as a string"),
    case("api", "payload-not-a-payload", dict(payload="x = 1"), "payload 'x = 1'", "Payload"),
    case("api", "gpus-beyond-this-machine", dict(gpus=64), "GPU(s)", "kubernetes backend"),
    case("api", "gpus-unknown-role", dict(gpus={"wrker": 1}), "['wrker']", "chief, worker or ps"),
    case("api", "context-blank", dict(context=" "), "context ' '", "'my-cluster'"),
    case("api", "storage-on-local", dict(storage="pvc:data"), "'pvc:data'", "backend='kubernetes'"),
    case(
        "api",
        "secret-env-on-local",
        dict(secret_env={"WANDB_API_KEY": "wandb/api-key"}),
        "secret_env WANDB_API_KEY",
        "env=",
        "backend='kubernetes'",
    ),
    case("api", "resume-from-missing", dict(resume_from="no-such-job"), "'no-such-job'", "%tfk8s_jobs"),
    # -- the Python API on Kubernetes: refused before any cluster is contacted ------------------------------
    case("cluster", "namespace-invalid", dict(namespace="Team_A"), "namespace 'Team_A'", "e.g. 'team-a'"),
    case("cluster", "namespace-too-long", dict(namespace="n" * 64), "'" + "n" * 64 + "'", "at most 63"),
    case(
        "cluster",
        "image-with-a-space",
        dict(image="tfk8s/trainer :0.1"),
        "'tfk8s/trainer :0.1'",
        "[registry/]repository[:tag]",
    ),
    case("cluster", "image-uppercase", dict(image="Corp/TF:2.21"), "'Corp/TF:2.21'", "lowercase"),
    case(
        "cluster",
        "image-empty-tag",
        dict(image="tfk8s/trainer:"),
        "'tfk8s/trainer:'",
        "e.g. 'tfk8s/trainer:0.1.0'",
    ),
    case("cluster", "service-account", dict(service_account="Trainer_SA"), "'Trainer_SA'", "e.g. 'trainer'"),
    case("cluster", "priority-class", dict(priority_class="High_Prio"), "'High_Prio'", "lowercase letters"),
    case("cluster", "queue", dict(queue="team queue"), "'team queue'", "lowercase letters"),
    case(
        "cluster", "pull-secret-name", dict(image_pull_secrets=["Reg_Cred"]), "'Reg_Cred'", "e.g. 'regcred'"
    ),
    case("cluster", "context-missing", dict(context="nope"), "context 'nope'", "--context"),
    # -- the Python API on Kubernetes with the in-repo test API server: 0 objects ---------------------------
    case("apiserver", "label-key", dict(labels={"-team": "ml"}), "'-team'", "label key"),
    case(
        "apiserver",
        "ttl-negative",
        dict(ttl_seconds_after_finished=-1),
        "ttl_seconds_after_finished is -1",
        "0 or more",
    ),
    case(
        "apiserver",
        "node-selector-list",
        dict(node_selector=["gpu"]),
        "node_selector ['gpu'] is not a mapping",
        "e.g.",
    ),
    case("apiserver", "storage-bad-claim", dict(storage="pvc:-data"), "'-data'", "pvc:CLAIM"),
    case(
        "apiserver",
        "toleration-effect",
        dict(tolerations=[{"key": "gpu", "effect": "Never"}]),
        "'Never'",
        "NoSchedule",
    ),
    case(
        "apiserver",
        "namespace-missing",
        dict(namespace="team-b"),
        "namespace team-b does not exist",
        "pass --namespace",
    ),
    # -- %%tfk8s_train ------------------------------------------------------------------------------------
    case(
        "magic",
        "workers-5000-local",
        (f"--workers {BIG}", CODE),
        f"{BIG} TensorFlow processes",
        LOCAL_BACKEND,
    ),
    case(
        "magic",
        "metric-interval-negative",
        ("--metric-interval -1", CODE),
        "metric_interval -1",
        "0 or more seconds",
    ),
    case(
        "magic", "metric-interval-text", ("--metric-interval often", CODE), "'often'", "--metric-interval 1.0"
    ),
    case("magic", "workers-text", ("--workers lots", CODE), "'lots'", "--workers 2"),
    case("magic", "unknown-option", ("--wokers 2", CODE), "--wokers", "did you mean --workers?"),
    case("magic", "gpus-negative", ("--gpus -1", CODE), "gpus is -1", "0 or more"),
    case("magic", "cpu-lots", ("--cpu lots", CODE), "cpu 'lots'", "'500m'"),
    case("magic", "memory-negative", ("--memory=-1Gi", CODE), "memory '-1Gi'", "'4Gi'"),
    case("magic", "deadline-soon", ("--deadline soon", CODE), "deadline 'soon'", "'90s'"),
    case(
        "magic", "stall-timeout-negative", ("--stall-timeout -1", CODE), "stall_timeout -1", "0 (off) or more"
    ),
    case("magic", "name-uppercase", ("--name MyJob", CODE), "'MyJob'", "lowercase letters"),
    case("magic", "name-too-long", ("--name " + "b" * 41, CODE), "41 characters long", "at most 40"),
    case("magic", "storage-unknown-scheme", ("--storage ftp://files/runs", CODE), "'ftp'", "pvc:CLAIM"),
    case(
        "magic", "storage-bad-claim", ("--storage pvc:Team_Data", CODE), "'Team_Data'", "pvc:team-data/runs"
    ),
    case("magic", "resume-from-not-a-name", ("--resume-from 'last run'", CODE), "'last run'", "earlier job"),
    case("magic", "env-not-key-value", ("--env WANDB", CODE), "'WANDB'", "--env WANDB=value"),
    case("magic", "env-name-invalid", ("--env 1BAD=x", CODE), "'1BAD'", "KEY=VALUE"),
    case(
        "magic",
        "ps-without-workers",
        ("--ps 1 --workers 0", CODE),
        "ps=1 with workers=0",
        "workers=1 or more",
    ),
    case(
        "magic",
        "max-restarts-negative",
        ("--max-restarts -1", CODE),
        "max_restarts is -1",
        "0 (never restart)",
    ),
    case("magic", "unclosed-quote", ("--env 'A=1", CODE), "a quote that is never closed", "close it"),
    case("magic", "out-not-a-name", ("--out 2fast", CODE), "'2fast'", "--out job"),
    case("magic", "wait-and-no-wait", ("--wait --no-wait", CODE), "--wait and --no-wait", "only one"),
    case("magic", "empty-cell", ("", "\n\n"), "the cell is empty", "model.fit"),
    case("magic", "shell-line", ("", "!nvidia-smi\nmodel.fit(x, y)\n"), "'!nvidia-smi'", "separate cell"),
    case("magic", "magic-line", ("", "x = 1\n%time model.fit(x, y)\n"), "line 2", "separate cell"),
    case(
        "magic",
        "namespace-invalid-k8s",
        ("--backend kubernetes --namespace Team_A", CODE),
        "'Team_A'",
        "'team-a'",
    ),
    case(
        "magic",
        "image-invalid-k8s",
        ("--backend kubernetes --image 'tf trainer'", CODE),
        "'tf trainer'",
        "[registry/]",
    ),
    case("magic", "timeout-negative", ("--wait --timeout -5", CODE), "--timeout '-5'", "--timeout 600"),
    case("magic", "gpus-beyond-this-machine", ("--gpus 64", CODE), "GPU(s)", "kubernetes backend"),
    case("magic", "resume-from-missing", ("--resume-from no-such-job", CODE), "'no-such-job'", "%tfk8s_jobs"),
    case("magic", "storage-on-local", ("--storage pvc:data", CODE), "'pvc:data'", "backend='kubernetes'"),
    case("magic", "code-with-ipython-after-python", ("", "x = 1\n  !ls\n"), "line 2", "separate cell"),
    # -- the line magics ----------------------------------------------------------------------------------
    case("line", "logs-tail-text", ("tfk8s_logs", "some-job --tail lots"), "'lots'", "--tail 50"),
    case("line", "logs-bad-name", ("tfk8s_logs", "Bad_Name"), "'Bad_Name'", "%tfk8s_jobs"),
    case("line", "stop-missing", ("tfk8s_stop", "no-such-job"), "'no-such-job'", "%tfk8s_jobs lists"),
    case(
        "line",
        "attach-backend-unknown",
        ("tfk8s_attach", "some-job --backend mars"),
        "'mars'",
        "'local' or 'kubernetes'",
    ),
    case("line", "delete-nothing-named", ("tfk8s_delete", ""), "name the jobs", "--older-than"),
    case("line", "delete-older-than-soon", ("tfk8s_delete", "--older-than soon"), "'soon'", "7d"),
    case("line", "jobs-unknown-option", ("tfk8s_jobs", "--everything"), "--everything", "%tfk8s_jobs?"),
    case(
        "line",
        "check-local-backend",
        ("tfk8s_check", "--backend local"),
        "local backend",
        "backend='kubernetes'",
    ),
    case("line", "check-namespace-invalid", ("tfk8s_check", "--namespace Team_A"), "'Team_A'", "'team-a'"),
    case("line", "wait-timeout-text", ("tfk8s_wait", "some-job --timeout soon"), "'soon'", "--timeout 600"),
    case("line", "config-takes-no-arguments", ("tfk8s_config", "workers"), "takes no arguments", "%config"),
    case("line", "logs-tail-negative", ("tfk8s_logs", "done-job --tail -3"), "--tail -3", "--tail 50"),
    case("line", "logs-tail-zero", ("tfk8s_logs", "done-job --tail 0"), "--tail 0", "--tail 50"),
    case(
        "line",
        "logs-replica-unknown",
        ("tfk8s_logs", "done-job --replica worker-9"),
        "'worker-9'",
        "worker-1",
    ),
    case(
        "line",
        "wait-timeout-negative",
        ("tfk8s_wait", "done-job --timeout -1"),
        "--timeout -1",
        "--timeout 600",
    ),
    # -- the REST routes ----------------------------------------------------------------------------------
    case("rest", "name-uppercase", ("GET", ("Bad_Name",), {}), "'Bad_Name'", "lowercase letters"),
    case("rest", "name-too-long", ("GET", ("c" * 41,), {}), "41 characters long", "at most 40"),
    case(
        "rest",
        "backend-unknown",
        ("GET", ("done-job",), {"backend": "mars"}),
        "'mars'",
        "'local' or 'kubernetes'",
    ),
    case("rest", "tail-text", ("GET", ("done-job", "logs"), {"tail": "lots"}), "tail='lots'", "tail=N"),
    case("rest", "tail-zero", ("GET", ("done-job", "logs"), {"tail": "0"}), "tail='0'", "tail=N"),
    case("rest", "tail-negative", ("GET", ("done-job", "logs"), {"tail": "-5"}), "tail='-5'", "tail=N"),
    case(
        "rest",
        "replica-unknown",
        ("GET", ("done-job", "logs"), {"replica": "worker-9"}),
        "'worker-9'",
        "worker-1",
    ),
    case("rest", "stop-bad-name", ("POST", ("Bad_Name", "stop"), {}), "'Bad_Name'", "lowercase letters"),
    case(
        "rest",
        "stop-finished",
        ("POST", ("done-job", "stop"), {}),
        "done-job has already succeeded",
        "nothing to stop",
    ),
    case("rest", "delete-bad-name", ("DELETE", ("-dash",), {}), "'-dash'", "lowercase letters"),
    case(
        "rest",
        "delete-backend-unknown",
        ("DELETE", ("done-job",), {"backend": "mars"}),
        "'mars'",
        "'local' or 'kubernetes'",
    ),
    case("rest", "submit-is-no-route", ("POST", (), {}), "POST is not supported", "%%tfk8s_train"),
    case("rest", "missing-job", ("GET", ("no-such-job",), {}), "'no-such-job'", "refresh the jobs list"),
    # -- c.TFK8s.* config ---------------------------------------------------------------------------------
    case("config", "workers-negative", {"workers": -1}, "workers is -1", "at least 1 worker"),
    case(
        "config",
        "metric-interval-negative",
        {"metric_interval": -1.0},
        "metric_interval -1.0",
        "0 or more seconds",
    ),
    case(
        "config",
        "ttl-negative",
        {"ttl_seconds_after_finished": -1},
        "ttl_seconds_after_finished is -1",
        "0 or more",
    ),
    case("config", "label-key-invalid", {"labels": {"team name!": "ml"}}, "'team name!'", "label key"),
    case(
        "config",
        "labels-a-string",
        {"labels": "team=ml"},
        "labels 'team=ml' is not a mapping",
        "{'team': 'ml'}",
    ),
    case("config", "env-a-string", {"env": "A=1"}, "env 'A=1'", "{'A': '1'}"),
    case(
        "config",
        "node-selector-a-string",
        {"node_selector": "gpu"},
        "node_selector 'gpu' is not a mapping",
        "e.g.",
    ),
    case("config", "namespace-invalid", {"namespace": "Team_A"}, "namespace 'Team_A'", "'ml'"),
    case("config", "image-invalid", {"image": "tf trainer"}, "image 'tf trainer'", "[registry/]"),
    case("config", "storage-unknown-scheme", {"storage": "ftp://files/runs"}, "'ftp'", "pvc:CLAIM"),
    case("config", "storage-bad-claim", {"storage": "pvc:Team_Data"}, "'Team_Data'", "pvc:team-data/runs"),
    case("config", "keep-jobs-zero", {"keep_jobs": 0}, "keep_jobs 0 would keep no job", "e.g. 50"),
    case("config", "keep-jobs-soon", {"keep_jobs": "soon"}, "keep_jobs 'soon'", "'90s'"),
    case("config", "gpus-negative", {"gpus": -1}, "gpus is -1", "0 or more"),
    case("config", "cpu-lots", {"cpu": "lots"}, "cpu 'lots'", "'500m'"),
    case("config", "memory-negative", {"memory": "-1Gi"}, "memory '-1Gi'", "'4Gi'"),
    case("config", "deadline-soon", {"deadline": "soon"}, "deadline 'soon'", "'90s'"),
    case("config", "stall-timeout-negative", {"stall_timeout": -1}, "stall_timeout -1", "0 or more seconds"),
    case("config", "backend-unknown", {"backend": "mars"}, "'mars'", "'local' or 'kubernetes'"),
    case("config", "frontend-unknown", {"frontend": "fancy"}, "'fancy'", "auto, widgets or text"),
    case("config", "tolerations-a-string", {"tolerations": "gpu"}, "toleration 'gpu'", "give each one like"),
    case("config", "pull-secret-name", {"image_pull_secrets": ["Reg_Cred"]}, "'Reg_Cred'", "'regcred'"),
    case("config", "service-account", {"service_account": "Trainer_SA"}, "'Trainer_SA'", "'trainer'"),
    case("config", "gpu-resource", {"gpu_resource": "gpu"}, "gpu_resource 'gpu'", "'nvidia.com/gpu'"),
    case("config", "save-model-text", {"save_model": "yes"}, "save_model 'yes'", "True or False"),
    case(
        "config",
        "max-payload-zero",
        {"max_payload_bytes": 0},
        "max_payload_bytes is 0",
        "positive number of bytes",
    ),
    case("config", "warm-pool-negative", {"warm_pool": -1}, "warm_pool is -1", "use 0 (off) or a number"),
    case("config", "warm-pool-text", {"warm_pool": "lots"}, "warm_pool 'lots'", "use 0 (off) or a number"),
    case("config", "keep-warm-negative", {"keep_warm": -1}, "keep_warm -1", "0 or more seconds", "0 turns"),
    case(
        "config",
        "keep-warm-text",
        {"keep_warm": "ten minutes"},
        "keep_warm 'ten minutes'",
        "0 or more seconds, e.g. 600",
    ),
    case("config", "unknown-option", {"wokers": 2}, "c.TFK8s.wokers", "(did you mean c.TFK8s.workers?)"),
]


def cases_of(face: str) -> list:
    return [c for c in CASES if c.values[0].face == face]


# -- what every refusal must be ------------------------------------------------------------------------------
def assert_one_sentence(message: str, says: tuple[str, ...]) -> None:
    """One sentence, naming the value and the fix; no traceback, no Python exception text."""
    assert message == message.strip() and "\n" not in message, message
    assert message.endswith("."), message
    assert re.search(r"[.!?] [A-Z(%]", message.replace("e.g. ", "")) is None, (
        f"more than one sentence: {message}"
    )
    for raw in RAW:
        assert raw not in message, f"{raw!r} in {message!r}"
    for fragment in says:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


JOB_KINDS = ("configmaps", "services", "jobs", "tfjobs")


@contextmanager
def nothing_created(home: Path, server: ApiServer | None = None):
    """No new file under the records, no new child process, no new Kubernetes object (and no create)."""
    files, children = files_under(home), set(children_of(os.getpid()))
    objects = server.count() if server else 0
    seen = len(server.request_log) if server else 0
    yield
    assert files_under(home) == files, "a job record was written"
    assert set(children_of(os.getpid())) - children == set(), "a process was started"
    if server is not None:
        assert server.count() == objects, "a Kubernetes object was created"
        creates = [
            r for r in server.request_log[seen:] if r["verb"] == "create" and r["resource"] in JOB_KINDS
        ]
        assert creates == [], creates


# -- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def fresh_defaults(monkeypatch):
    """The built-in ``TFK8s`` defaults, no cached backend or preflight, restored after."""
    monkeypatch.setattr(tfk8s_config, "_current", TFK8s())
    monkeypatch.setattr(api, "_backends", {})
    monkeypatch.setattr(api, "_preflight_passed", set())
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture
def no_process_start(monkeypatch):
    """A tripwire: a wrongly accepted case fails here instead of starting a job."""

    def refuse(*args, **kwargs):
        pytest.fail(f"a process was started for a bad input: {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.fixture
def unreachable_cluster(tmp_path, monkeypatch) -> Path:
    """A kubeconfig whose API server address has nothing listening: any request fails to connect."""
    path = tmp_path / "kubeconfig-nothing-listens"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "gone", "context": {"cluster": "gone", "user": "u", "namespace": "ml"}}
                ],
                "current-context": "gone",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture(scope="module")
def test_apiserver():
    server = ApiServer(namespaces=("default", "team")).start()
    yield server
    server.stop()


@pytest.fixture
def apiserver_kubeconfig(test_apiserver, tmp_path, monkeypatch) -> ApiServer:
    path = test_apiserver.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return test_apiserver


@pytest.fixture
def shell(tmp_path, monkeypatch, unreachable_cluster):
    """A real InteractiveShell with ``%load_ext tfk8s_jupyter`` done (Kubernetes: the unreachable cluster)."""
    from IPython.core.interactiveshell import InteractiveShell

    ipython_dir = tmp_path / "ipython"
    ipython_dir.mkdir()
    monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))
    monkeypatch.chdir(tmp_path)
    sh = make_shell(ipython_dir)
    sh.run_line_magic("load_ext", "tfk8s_jupyter")
    yield sh
    InteractiveShell.clear_instance()


# -- the faces ----------------------------------------------------------------------------------------------
def submit_refused(given: dict) -> str:
    kwargs = dict(given)
    code = kwargs.pop("code", CODE)
    with pytest.raises((SpecError, TFK8sError)) as refused:
        tk.submit(code, **kwargs)
    return str(refused.value)


@pytest.mark.parametrize("c", cases_of("api"))
def test_the_python_api_refuses_in_one_sentence_and_starts_nothing(c, tfk8s_home, no_process_start):
    with nothing_created(tfk8s_home):
        message = submit_refused(c.given)
    assert_one_sentence(message, c.says)


@pytest.mark.parametrize("c", cases_of("cluster"))
def test_kubernetes_values_are_refused_before_any_cluster_is_contacted(
    c, tfk8s_home, unreachable_cluster, no_process_start
):
    with nothing_created(tfk8s_home):
        message = submit_refused({**c.given, "backend": "kubernetes"})
    assert_one_sentence(message, c.says)  # names the value; never "could not connect"


@pytest.mark.parametrize("c", cases_of("apiserver"))
def test_kubernetes_submissions_refused_leave_no_object(
    c, tfk8s_home, apiserver_kubeconfig, no_process_start
):
    with nothing_created(tfk8s_home, apiserver_kubeconfig):
        message = submit_refused({**c.given, "backend": "kubernetes", "flavor": "native"})
    assert_one_sentence(message, c.says)


@pytest.mark.parametrize("c", cases_of("magic"))
def test_the_training_magic_refuses_in_one_sentence_and_starts_nothing(
    c, shell, tfk8s_home, no_process_start
):
    line, cell = c.given
    with nothing_created(tfk8s_home), pytest.raises(UsageError) as refused:
        shell.run_cell_magic("tfk8s_train", line, cell)
    assert_one_sentence(str(refused.value), c.says)
    assert "_tfk8s_job" not in shell.user_ns


@pytest.mark.parametrize("c", cases_of("line"))
def test_the_line_magics_refuse_in_one_sentence(c, shell, tfk8s_home, no_process_start):
    magic, line = c.given
    write_record(tfk8s_home, "done-job", owner=current_owner())  # a finished job of this user
    with nothing_created(tfk8s_home), pytest.raises(UsageError) as refused:
        shell.run_line_magic(magic, line)
    assert_one_sentence(str(refused.value), c.says)


@pytest.mark.parametrize("c", cases_of("config"))
def test_a_bad_config_value_is_one_sentence_and_keeps_the_default(c):
    ((key, value),) = c.given.items()
    config = Config()
    config.TFK8s[key] = value
    defaults, problems = TFK8s.from_config(config=config, where="ipython_config.py")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"c.TFK8s.{key} in ipython_config.py")
    assert_one_sentence(problems[0], c.says)
    if defaults.has_trait(key):
        assert getattr(defaults, key) == getattr(TFK8s(), key)  # the built-in default stays


@pytest.mark.parametrize("c", [c for c in cases_of("config") if "wokers" not in c.values[0].given])
def test_a_bad_value_set_with_percent_config_is_refused_with_the_same_sentence(c, shell, caplog):
    """``%config TFK8s.<option> = <bad>`` in a running kernel: the sentence is logged, the value stays."""
    ((key, value),) = c.given.items()
    from tfk8s_jupyter.magics import TFK8sMagics

    defaults = shell.magics_manager.registry[TFK8sMagics.__name__].defaults
    before = getattr(defaults, key)
    caplog.clear()
    shell.run_line_magic("config", f"TFK8s.{key} = {value!r}")
    messages = [r.getMessage() for r in caplog.records]
    assert messages, "nothing was said about the refused value"
    assert_one_sentence(messages[-1], c.says)
    assert getattr(defaults, key) == before


# -- REST (a real Jupyter server with the extension; as tests/lab/test_lab_rest.py) -------------------------
@pytest.fixture
def jp_server_config(tfk8s_home, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    return {"ServerApp": {"jpserver_extensions": {"tfk8s_jupyter": True}}}


@pytest.mark.parametrize("c", cases_of("rest"))
async def test_the_rest_routes_refuse_in_one_sentence(c, jp_fetch, tfk8s_home):
    method, parts, params = c.given
    write_record(tfk8s_home, "done-job")
    with nothing_created(tfk8s_home):
        with pytest.raises(HTTPClientError) as refused:
            body = b"" if method == "POST" else None
            await jp_fetch("tfk8s", "api", "jobs", *parts, method=method, params=params, body=body)
    assert refused.value.code in (400, 404, 405, 409)
    reply = json.loads(refused.value.response.body)
    assert reply["status"] == refused.value.code
    assert_one_sentence(reply["message"], c.says)


def test_the_unreachable_cluster_really_is_one(tfk8s_home, unreachable_cluster):
    """The control for the "cluster" rows: a valid job there fails to connect, and that error is not a refusal
    the matrix would pass - so a bad value checked only after contacting the cluster fails its row."""
    with nothing_created(tfk8s_home):
        message = submit_refused({"backend": "kubernetes", "namespace": "team-a"})
    assert "https://127.0.0.1:1" in message
    with pytest.raises(AssertionError):
        assert_one_sentence(message, ())


# -- local resource sanity, directly ------------------------------------------------------------------------
def test_the_matrix_has_at_least_60_cases_over_every_face():
    faces = {c.values[0].face for c in CASES}
    assert len(CASES) >= 60 and faces == {"api", "cluster", "apiserver", "magic", "line", "rest", "config"}


def test_a_local_job_beyond_the_cores_is_refused_with_the_numbers():
    spec = make_spec(CODE, name="wide", workers=17)
    with pytest.raises(SpecError) as refused:
        check_local_capacity(spec, available=64 * 2**30, cores=2)
    message = str(refused.value)
    assert_one_sentence(
        message, ("job wide would start 17 TensorFlow processes", "its 2 cores take at most 16")
    )
    assert "use at most 16 replicas here" in message and LOCAL_BACKEND in message
    check_local_capacity(make_spec(CODE, name="fits", workers=16), available=64 * 2**30, cores=2)


def test_a_local_job_beyond_the_memory_is_refused_with_the_numbers():
    spec = make_spec(CODE, name="heavy", ps=1, workers=4)  # 6 replicas with the chief
    available = 3 * REPLICA_MEMORY + REPLICA_MEMORY // 2
    with pytest.raises(SpecError) as refused:
        check_local_capacity(spec, available=available, cores=64)
    message = str(refused.value)
    assert_one_sentence(message, ("6 TensorFlow processes", "6 × 660 MiB", "use at most 3 replicas here"))
    assert LOCAL_BACKEND in message
    check_local_capacity(make_spec(CODE, name="light", workers=3), available=available, cores=64)


def test_the_memory_a_job_asks_for_counts_when_larger_than_the_measured_floor():
    spec = make_spec(CODE, name="asks", workers=2, memory="8Gi")
    with pytest.raises(
        SpecError, match=r"2 × 8 GiB, the memory each replica asks for\) where 10 GiB is available"
    ):
        check_local_capacity(spec, available=10 * 2**30, cores=8)


def test_this_machine_refuses_5000_workers_and_accepts_a_small_job():
    """On the real /proc/meminfo and CPU affinity of this machine."""
    with pytest.raises(SpecError) as refused:
        check_local_capacity(make_spec(CODE, name="huge", workers=BIG))
    cores = usable_cores()
    assert f"its {cores} core" in str(refused.value) and f"at most {MAX_REPLICAS_PER_CORE * cores}" in str(
        refused.value
    )
    check_local_capacity(make_spec(CODE, name="small", ps=1, workers=1))


def test_metric_interval_0_means_every_step_and_is_documented():
    """Accepted on purpose: 0 reports a point at every step; the flag's and the option's help say so."""
    assert make_spec(CODE, metric_interval=0).metric_interval == 0
    assert "0 reports every step" in TFK8s.class_traits()["metric_interval"].help
    from tfk8s_jupyter.magic_args import TRAIN_ARGUMENTS

    helps = [a.kwds.get("help", "") for a in TRAIN_ARGUMENTS if "--metric-interval" in a.args]
    assert helps and "0 reports every step" in helps[0]
