"""JobSpec validation: every bad input of issue 2 gets one sentence naming the value and the fix, and nothing
is started and no record is written for an invalid spec."""

from __future__ import annotations

import subprocess

import pytest
from traitlets import TraitError

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.local import LocalBackend
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.spec import JobSpec, SpecError, make_spec, parse_duration, parse_quantity

CODE = "import tensorflow as tf\nmodel.fit(ds, epochs=1)\n"


def _error(**kwargs) -> str:
    code = kwargs.pop("code", CODE)
    with pytest.raises(SpecError) as e:
        make_spec(code, **kwargs)
    message = str(e.value)
    # One sentence: it ends with a period and carries no second sentence after one.
    assert message.endswith("."), message
    assert ". " not in message.rstrip(".").replace("e.g. ", "").replace("i.e. ", ""), message
    return message


# --------------------------------------------------------------------------- one test per bad input
def test_zero_workers():
    assert _error(workers=0) == "workers is 0; use at least 1 worker."


def test_negative_workers():
    assert _error(workers=-2) == "workers is -2; use at least 1 worker."


def test_negative_ps():
    assert _error(ps=-1) == "ps is -1; use 0 parameter servers (all-reduce) or more (asynchronous)."


def test_counts_that_are_not_numbers():
    assert _error(workers="two") == "workers 'two' is not a whole number; use at least 1 worker."


def test_ps_without_workers():
    message = _error(ps=1, workers=0)
    assert message.startswith("ps=1 with workers=0 cannot train") and "use workers=1 or more" in message


def test_ps_with_a_synchronous_strategy():
    message = _error(ps=2, strategy="multi_worker_mirrored")
    assert message.startswith("ps=2 does not fit strategy multi_worker_mirrored")
    assert "use ps=0, or strategy parameter_server" in message
    assert _error(ps=1, strategy="mirrored").startswith("ps=1 does not fit strategy mirrored")


def test_parameter_server_strategy_without_ps():
    message = _error(ps=0, strategy="parameter_server")
    assert "needs at least one parameter server" in message and "pass ps=1 or more" in message


def test_gpus_on_ps():
    message = _error(ps=1, workers=2, gpus={"ps": 1, "worker": 1})
    assert message.startswith("ps replicas were given 1 GPU(s)") and "drop the GPUs for ps" in message


def test_negative_gpus():
    assert _error(gpus=-1) == "gpus is -1; use a whole number of GPUs, 0 or more."


def test_name_not_dns_1123():
    message = _error(name="My_Job")
    assert message.startswith("job name 'My_Job' is not a valid DNS-1123 label")
    assert "use lowercase letters, digits and '-'" in message
    assert "not a valid DNS-1123 label" in _error(name="-leading-dash")
    assert "not a valid DNS-1123 label" in _error(name="9starts-with-digit")


def test_name_too_long():
    name = "a" * 41
    message = _error(name=name)
    assert message.startswith(f"job name '{name}' is 41 characters long; use at most 40")


def test_bad_cpu_quantity():
    message = _error(cpu="12XB")
    assert (
        message.startswith("cpu '12XB' is not a Kubernetes quantity") and "e.g. '500m', '2', '4Gi'" in message
    )


def test_bad_memory_quantity():
    assert _error(memory="12XB").startswith("memory '12XB' is not a Kubernetes quantity")
    assert _error(memory="-1Gi").startswith("memory '-1Gi' is not a Kubernetes quantity")
    assert _error(cpu=0) == "cpu 0 must be positive; use a value like '2', '500m' or '4Gi'."


def test_good_quantities_parse():
    assert parse_quantity("500m") == 0.5
    assert parse_quantity("4Gi") == 4 * 2**30
    assert parse_quantity("1.5") == 1.5
    assert parse_quantity("2k") == 2000


def test_unknown_strategy():
    assert _error(strategy="horovod") == (
        "strategy 'horovod' is unknown; use auto, parameter_server, multi_worker_mirrored or mirrored."
    )


def test_empty_code():
    expected = "the cell is empty; write the model and its model.fit(...) call in the cell."
    assert _error(code="") == expected
    assert _error(code="  \n\t\n") == expected


def test_code_with_a_syntax_error_reports_the_line():
    message = _error(code="import tensorflow as tf\nif epochs > 3\n    model.fit(ds)\n")
    assert message.startswith("the cell has a syntax error on line 2: expected ':'"), message
    assert message.endswith("fix that line and run the cell again.")
    assert _error(code="x = 1\ny = 2\ndef f(:\n    pass\n").startswith(
        "the cell has a syntax error on line 3:"
    )


def test_unknown_option():
    assert _error(wokers=2).startswith("unknown option(s) ['wokers']")


def test_bad_environment_variable_name():
    assert _error(env={"1BAD": "x"}).startswith("environment variable name '1BAD' is invalid")


def test_non_positive_setup_timeout():
    assert _error(setup_timeout=0).startswith("setup_timeout 0 must be a positive number of seconds")


def test_stall_timeout_is_0_or_more_seconds():
    assert _error(stall_timeout=-1).startswith("stall_timeout -1 must be 0 (off) or more seconds")
    assert _error(stall_timeout="fast").startswith("stall_timeout 'fast' must be 0 (off) or more seconds")
    assert make_spec(CODE, stall_timeout=0).stall_timeout == 0
    assert make_spec(CODE).stall_timeout == 120


# --------------------------------------------------------------------------- valid specs
def test_auto_strategy():
    assert make_spec(CODE, ps=1, workers=2).strategy == "parameter_server"
    assert make_spec(CODE, workers=2).strategy == "multi_worker_mirrored"
    assert make_spec(CODE, workers=1, gpus=2).strategy == "mirrored"
    assert make_spec(CODE, workers=2, strategy="MWMS").strategy == "multi_worker_mirrored"


def test_replicas_and_reporting_replica():
    ps = make_spec(CODE, ps=2, workers=2, gpus=1)
    assert ps.replica_names == ["ps-0", "ps-1", "chief-0", "worker-0", "worker-1"]
    assert ps.reporting_replica == "chief-0"
    assert [r.resources.gpus for r in ps.replicas] == [0, 1, 1]
    assert ps.total_gpus == 3
    mw = make_spec(CODE, workers=3)
    assert mw.replica_names == ["worker-0", "worker-1", "worker-2"] and mw.reporting_replica == "worker-0"


def test_spec_json_round_trip():
    spec = make_spec(CODE, ps=1, workers=2, cpu="500m", memory="2Gi", env={"A": "1"}, name="round-trip")
    assert JobSpec.from_json(spec.to_json()) == spec


def test_generated_names_are_valid_and_unique():
    names = {make_spec(CODE).name for _ in range(20)}
    assert len(names) == 20
    assert all(n.startswith("tf-") and len(n) <= 40 for n in names)


# --------------------------------------------------------------------------- nothing is started
BAD_SUBMITS = [
    dict(workers=0),
    dict(ps=1, workers=0),
    dict(ps=1, strategy="multi_worker_mirrored"),
    dict(ps=1, workers=1, gpus={"ps": 1}),
    dict(name="Bad_Name"),
    dict(name="x" * 41),
    dict(cpu="12XB"),
    dict(strategy="nope"),
    dict(code=""),
    dict(code="model.fit(\n"),
]


@pytest.mark.parametrize(
    "kwargs", BAD_SUBMITS, ids=lambda k: ",".join(f"{a}={b!r}"[:20] for a, b in k.items())
)
def test_an_invalid_submit_starts_nothing_and_writes_no_record(kwargs, tfk8s_home, monkeypatch):
    started = []
    monkeypatch.setattr(
        subprocess, "Popen", lambda *a, **k: started.append(a) or pytest.fail("a process started")
    )
    code = kwargs.pop("code", CODE)
    with pytest.raises(SpecError):
        tk.submit(code, **kwargs)
    assert started == []
    assert list(tfk8s_home.iterdir()) == []
    assert tk.list_jobs() == []


def test_the_backend_validates_a_spec_built_by_hand(tfk8s_home, monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a process started"))
    spec = JobSpec(name="by-hand", code=CODE, strategy="parameter_server", workers=1, ps=0)
    with pytest.raises(SpecError, match="needs at least one parameter server"):
        LocalBackend().submit(spec, Payload(code=CODE))
    assert list(tfk8s_home.iterdir()) == []


@pytest.mark.parametrize(
    "text, seconds",
    [(90, 90.0), ("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("1h30m", 5400.0), ("1d", 86400.0)],
)
def test_a_deadline_is_a_positive_duration(text, seconds):
    assert parse_duration(text) == seconds
    spec = make_spec(CODE, workers=1, deadline=text)
    assert spec.deadline_seconds == seconds
    assert JobSpec.from_json(spec.to_json()).deadline_seconds == seconds  # survives the record


@pytest.mark.parametrize("bad", [0, -1, "0s", "-5m", "soon", "", True, "5 minutes"])
def test_a_deadline_that_is_not_a_positive_duration_is_one_sentence(bad):
    with pytest.raises(
        SpecError, match=r"deadline .* is not a positive duration; use seconds or e\.g\. '90s'"
    ):
        make_spec(CODE, workers=1, deadline=bad)


def test_the_cluster_knobs_are_spec_fields_and_traits():
    spec = make_spec(CODE, workers=1, priority_class="batch-low", queue="team-a", service_account="trainer")
    assert (spec.priority_class, spec.queue, spec.service_account) == ("batch-low", "team-a", "trainer")
    cfg = tk.TFK8s()
    cfg.deadline, cfg.queue, cfg.priority_class = "2h", "team-a", "batch-low"
    assert {k: cfg.job_options()[k] for k in ("deadline", "queue", "priority_class")} == {
        "deadline": "2h",
        "queue": "team-a",
        "priority_class": "batch-low",
    }
    with pytest.raises(TraitError, match="deadline '-1' is not a positive duration"):
        cfg.deadline = "-1"
    assert cfg.deadline == "2h"  # a refused value leaves the previous one


# --------------------------------------------------------------------------- Kubernetes syntax (issue 10)
@pytest.mark.parametrize(
    "image",
    [
        "tfk8s/trainer:0.1.0",
        "python:3.11-slim",
        "tensorflow/tensorflow:2.21.0-gpu",
        "registry.local:5000/team/tf:2.21",
        "localhost/tf",
        "docker.io/library/python",
        "Registry.Example.com/team/tf_keras__v2:latest",
        "gcr.io/proj/img@sha256:" + "a" * 64,
        "ghcr.io/org/img:1.0@sha256:" + "0" * 64,
    ],
)
def test_valid_image_references_are_accepted(image):
    assert make_spec(CODE, image=image, backend="kubernetes").image == image


@pytest.mark.parametrize(
    "image",
    ["", "tf trainer", "Corp/TF:2.21", "tfk8s/trainer:", "tfk8s//trainer", "-tf/x", "tf:a:b", "tf@sha256:12"],
)
def test_invalid_image_references_name_the_value(image):
    assert _error(image=image).startswith(f"image {image!r} is not a valid image reference")


def test_valid_labels_node_selectors_and_tolerations_are_accepted():
    spec = make_spec(
        CODE,
        labels={
            "app.kubernetes.io/part-of": "ml",
            "team": "",
            "a_b.c-D": "V1_x",
            "tfk8s.io/notebook": "q.ipynb",
        },
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        image_pull_secrets=["regcred", "team.pull-secret"],
        namespace="team-a",
        service_account="trainer.v2",
        gpu_resource="amd.com/gpu",
    )
    assert spec.tolerations[0]["key"] == "nvidia.com/gpu" and spec.image_pull_secrets == (
        "regcred",
        "team.pull-secret",
    )
    assert JobSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    "labels, says",
    [
        ({"": "x"}, "labels key ''"),
        ({"a" * 64: "x"}, "is not a valid Kubernetes label key"),
        ({"Bad_Prefix/x": "y"}, "labels key 'Bad_Prefix/x'"),
        ({"team": "x" * 64}, "is not a valid Kubernetes label value"),
        ({"team": "-ml"}, "labels value '-ml' of 'team'"),
    ],
)
def test_invalid_labels_name_the_key_or_value(labels, says):
    assert says in _error(labels=labels)


def test_counts_given_as_text_become_numbers():
    spec = make_spec(CODE, max_restarts="2", ttl_seconds_after_finished="60")
    assert (spec.max_restarts, spec.ttl_seconds_after_finished) == (2, 60)


def test_code_through_the_api_with_ipython_syntax_names_the_line_and_the_way_out():
    message = _error(code="import tensorflow as tf\n%load_ext tensorboard\nmodel.fit(ds)\n")
    assert message.startswith("line 2 of the code is an IPython magic ('%'), '%load_ext tensorboard'")
    assert "run it in the notebook before submitting" in message
    # a '%' or '!' inside valid Python is no escape
    assert make_spec("x = 10 % 3\ny = x != 1\n").code


def test_a_kernel_call_under_a_guard_is_left_to_the_guard():
    """``if IN_COLAB: get_ipython().system(...)`` runs as in any plain Python process (the replica's
    ``get_ipython()`` answers None); an unguarded one is refused, naming its line."""
    from tfk8s_jupyter.spec import check_code

    check_code(
        "IN_COLAB = 'google.colab' in str(get_ipython())\n"
        "if IN_COLAB:\n    get_ipython().system('pip install tensorflow-datasets')\n"
        "try:\n    get_ipython().run_line_magic('load_ext', 'tensorboard')\nexcept AttributeError:\n    pass\n"
        "shell = get_ipython() and get_ipython().run_line_magic('env', 'A=1')\n"
    )
    with pytest.raises(SpecError, match="^line 3 of the code calls get_ipython\\(\\).system"):
        check_code("import os\n\nget_ipython().system('nvidia-smi')\n")
