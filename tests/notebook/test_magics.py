"""The magics on a real InteractiveShell: flags, help, --dry-run, bad input, config, submitting jobs.

Jobs here run the TensorFlow-free stand-in runner (``standin`` fixture) through the real local backend;
``test_notebook_e2e_tf.py`` runs real TensorFlow.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from IPython.core.error import UsageError
from notebook_helpers import magics_of, make_shell, run
from traitlets.config.loader import PyFileConfigLoader

CELL = "x = 1\n"
QUICK = "EPOCHS = 2\nSTEPS = 5\nSTEP_SECONDS = 0.02\n"


def dry_run(shell, capsys, line: str, cell: str = CELL) -> tuple[dict, str]:
    capsys.readouterr()
    shell.run_cell_magic("tfk8s_train", f"{line} --dry-run", cell)
    out = capsys.readouterr().out
    spec_text = out.split("# spec\n", 1)[1].split("\n# replicas", 1)[0]
    return json.loads(spec_text), out


def records(home) -> list[str]:
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


# -- help and flags ------------------------------------------------------------------------------
def test_help_shows_usage_every_flag_and_examples(shell, capsys):
    shell.run_cell("%%tfk8s_train?\n")
    out = capsys.readouterr().out
    assert "%%tfk8s_train [--ps PS] [--workers WORKERS]" in out
    for flag in (
        "--ps --workers --gpus --strategy --backend --name --image --namespace --cpu --memory "
        "--checkpoint-dir --max-restarts --env --dry-run --wait --panel --no-panel --flavor --context "
        "--files --out"
    ).split():
        assert flag in out, flag
    assert "Examples" in out and "%%tfk8s_train --ps 1 --workers 2" in out
    for magic in (
        "tfk8s_jobs",
        "tfk8s_attach",
        "tfk8s_logs",
        "tfk8s_stop",
        "tfk8s_config",
        "tfk8s_wait",
        "tfk8s_delete",
    ):
        shell.run_cell(f"%{magic}?\n")
        assert "Example" in capsys.readouterr().out, magic


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("--ps 2 --workers 3", {"ps": 2, "workers": 3, "strategy": "parameter_server"}),
        ("--workers 3", {"ps": 0, "workers": 3, "strategy": "multi_worker_mirrored"}),
        ("--workers 1 --gpus 2", {"workers": 1, "gpus": 2, "strategy": "mirrored"}),
        ("--strategy mwms --workers 2", {"strategy": "multi_worker_mirrored", "ps": 0}),
        ("--strategy parameter_server", {"strategy": "parameter_server", "ps": 1}),
        ("--backend kubernetes", {"backend": "kubernetes"}),
        ("--backend kubernetes --flavor tfjob", {"flavor": "tfjob"}),
        ("--context kind-dev", {"context": "kind-dev"}),
        ("--name mnist-ps", {"name": "mnist-ps"}),
        ("--image registry.local/tf:2.21", {"image": "registry.local/tf:2.21"}),
        ("--namespace team-a", {"namespace": "team-a"}),
        ("--cpu 500m --memory 4Gi", {"cpu": "500m", "memory": "4Gi"}),
        ("--checkpoint-dir /data/ckpt", {"checkpoint_dir": "/data/ckpt"}),
        ("--max-restarts 0", {"max_restarts": 0}),
        ("--metric-interval 0.25", {"metric_interval": 0.25}),
        ("--env A=1 --env 'B=x=y z'", {"env": {"A": "1", "B": "x=y z"}}),
    ],
)
def test_every_flag_reaches_the_spec(shell, capsys, tfk8s_home, line, expected):
    spec, out = dry_run(shell, capsys, line)
    for key, value in expected.items():
        assert spec[key] == value, (key, spec)
    assert "nothing was started" in out
    assert records(tfk8s_home) == []


def test_dry_run_summarizes_payload_and_files(shell, capsys, notebook_dir, tfk8s_home):
    (notebook_dir / "vocab.txt").write_text("a\nb\n")
    run(shell, "LR = 0.1\ndef build_model(lr):\n    return lr")
    _, out = dry_run(shell, capsys, "--ps 1 --workers 2 --files vocab.txt", "model = build_model(LR)\n")
    assert "# replicas: ps-0, chief-0, worker-0, worker-1 (reporting: chief-0)" in out
    assert "definitions: build_model" in out and "constants:   LR" in out
    assert "vocab.txt (4 B)" in out
    assert records(tfk8s_home) == []
    assert "_tfk8s_job" not in shell.user_ns


def test_dry_run_prints_kubernetes_manifests(shell, capsys):
    _, out = dry_run(shell, capsys, "--backend kubernetes --ps 1 --workers 2 --name mnist-ps --namespace ml")
    assert "# manifests" in out
    assert "kind: ConfigMap" in out and "kind: Service" in out
    for role in ("ps", "chief", "worker"):
        assert f"name: mnist-ps-{role}\n" in out
    _, out = dry_run(shell, capsys, "--backend kubernetes --flavor tfjob --workers 2 --name mnist-ar")
    assert "kind: TFJob" in out


# -- bad input: one sentence, nothing started ------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "cell", "expected"),
    [
        (
            "--wrkers 2",
            CELL,
            "unknown option --wrkers; did you mean --workers? run %%tfk8s_train? to see the options.",
        ),
        ("--workers -1", CELL, "workers is -1; use at least 1 worker."),
        ("--workers two", CELL, "invalid int value: 'two'; give a number"),
        ("--ps 1 --strategy multi_worker_mirrored", CELL, "ps=1 does not fit strategy multi_worker_mirrored"),
        ("--memory 12XB", CELL, "memory '12XB' is not a Kubernetes quantity"),
        ("--name my_job", CELL, "job name 'my_job' is not a valid DNS-1123 label"),
        ("--env NOVALUE", CELL, "--env 'NOVALUE' is not KEY=VALUE"),
        ("--strategy fast", CELL, "strategy 'fast' is unknown"),
        ("--panel --no-panel", CELL, "--panel and --no-panel contradict each other"),
        ("--out 2fast", CELL, "--out '2fast' is not a Python variable name; use one like --out job."),
        ("", "model.fit(x, epochs=2\n", "the cell has a syntax error on line 1"),
        ("", "\n\n", "the cell is empty"),
        ("", "import os\n!nvidia-smi\nx = 1\n", "line 2 of the training cell is a shell escape"),
        ("", "%matplotlib inline\nx = 1\n", "line 1 of the training cell is an IPython magic"),
        ("--files nope.csv", CELL, "--files 'nope.csv' matches no file"),
    ],
)
def test_bad_input_gives_its_sentence_and_starts_nothing(shell, tfk8s_home, line, cell, expected):
    with pytest.raises(UsageError) as e:
        shell.run_cell_magic("tfk8s_train", line, cell)
    message = str(e.value)
    assert expected in message
    assert re.search(r"\. [A-Z]", message) is None and message.endswith("."), message  # one sentence
    assert records(tfk8s_home) == []
    assert "_tfk8s_job" not in shell.user_ns


def test_unshippable_name_and_oversized_context_start_nothing(shell, tfk8s_home):
    run(shell, "log = open('train.log', 'w')")
    with pytest.raises(UsageError, match="the cell uses 'log', an open file"):
        shell.run_cell_magic("tfk8s_train", "", "log.write('hi')\n")
    run(shell, "import numpy as np\nDATA = np.ones((800, 800))")
    run(shell, "%config TFK8s.max_payload_bytes = 1000000")
    with pytest.raises(UsageError, match="over the 976.6 KB limit .*load the data inside the training cell"):
        shell.run_cell_magic("tfk8s_train", "", "print(DATA.sum())\n")
    assert records(tfk8s_home) == []


# -- config ------------------------------------------------------------------------------------------
def test_config_defaults_sources_and_flag_override(ipython_dir, notebook_dir, capsys):
    profile = ipython_dir / "profile_default"
    profile.mkdir()
    (profile / "ipython_config.py").write_text("c.TFK8s.workers = 3\nc.TFK8s.image = 'corp/tf:1'\n")
    cfg = PyFileConfigLoader("ipython_config.py", path=str(profile)).load_config()
    shell = make_shell(ipython_dir, cfg)
    shell.run_line_magic("load_ext", "tfk8s_jupyter")
    shell.run_line_magic("config", "TFK8s.gpus = 1")
    capsys.readouterr()
    shell.run_line_magic("tfk8s_config", "")
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["TFK8s.workers"][1:] == ["3", "config", "file"]
    assert rows["TFK8s.image"][1:] == ["'corp/tf:1'", "config", "file"]
    assert rows["TFK8s.gpus"][1:] == ["1", "%config"]
    assert rows["TFK8s.backend"][1:] == ["'local'", "default"]
    assert len(rows) == len(magics_of(shell).defaults.trait_names(config=True))
    spec, _ = dry_run(shell, capsys, "")
    assert (spec["workers"], spec["gpus"], spec["image"]) == (3, 1, "corp/tf:1")
    spec, _ = dry_run(shell, capsys, "--workers 2 --gpus 0 --image other:2")
    assert (spec["workers"], spec["gpus"], spec["image"]) == (2, 0, "other:2")
    with pytest.raises(UsageError, match="takes no arguments"):
        shell.run_line_magic("tfk8s_config", "workers")


@pytest.mark.parametrize(
    ("setting", "flags", "sentence"),
    [
        ("workers = -1", "--workers -1", "workers is -1; use at least 1 worker."),
        ("ps = -2", "--ps -2", "ps is -2; use 0 parameter servers (all-reduce) or more (asynchronous)."),
        ("gpus = -1", "--gpus -1", "gpus is -1; use a whole number of GPUs, 0 or more."),
        ("backend = 'locl'", "--backend locl", "backend 'locl' is unknown; use 'local' or 'kubernetes'."),
        ("flavor = 'tfjobs'", "--flavor tfjobs", "flavor 'tfjobs' is unknown; use auto, native or tfjob."),
        (
            "strategy = 'allreduce'",
            "--strategy allreduce",
            "strategy 'allreduce' is unknown; use auto, parameter_server, multi_worker_mirrored or mirrored.",
        ),
        ("cpu = '2 cores'", "--cpu '2 cores'", "cpu '2 cores' is not a Kubernetes quantity;"),
        ("memory = '-4Gi'", "--memory=-4Gi", "memory '-4Gi' is not a Kubernetes quantity;"),
        ("max_restarts = -1", "--max-restarts -1", "max_restarts is -1; use 0 (never restart) or more."),
        (
            "metric_interval = -0.5",
            "--metric-interval -0.5",
            "metric_interval -0.5 must be 0 or more seconds, e.g. 1.0.",
        ),
    ],
)
def test_a_bad_config_value_is_refused_at_once_with_the_flags_sentence(
    shell, capsys, caplog, setting, flags, sentence
):
    """``%config TFK8s.x = bad`` says what the flag would say, keeps the previous value, and so cannot
    break a later, unrelated cell."""
    defaults = magics_of(shell).defaults
    name = setting.split(" =")[0]
    before = getattr(defaults, name)
    caplog.clear()
    shell.run_line_magic("config", f"TFK8s.{setting}")
    assert [r.getMessage() for r in caplog.records] and caplog.records[-1].getMessage().startswith(sentence)
    assert getattr(defaults, name) == before
    with pytest.raises(UsageError) as refused:
        shell.run_cell_magic("tfk8s_train", f"{flags} --dry-run", CELL)
    assert str(refused.value).startswith(sentence)
    spec, _ = dry_run(shell, capsys, "")  # a later cell still works
    assert spec["workers"] == defaults.workers


def test_every_config_option_checks_what_it_is_given(shell):
    """No option takes a value of the wrong kind; each refusal is one sentence naming the option."""
    from traitlets import TraitError

    defaults = magics_of(shell).defaults
    names = defaults.trait_names(config=True)
    assert len(names) >= 25
    for name in names:
        with pytest.raises(TraitError) as refused:
            setattr(defaults, name, object())
        message = str(refused.value)
        assert message.startswith((f"{name} <object", f"{name} entry", "environment variable")), message
        assert (
            message.count(";") <= 1
            and message.replace("e.g. ", "").count(". ") == 0
            and message.endswith(".")
        ), message
    defaults.env = {"OK": "1"}
    with pytest.raises(TraitError, match="environment variable name '1BAD' is invalid"):
        defaults.env = {"1BAD": "x"}
    assert defaults.env == {"OK": "1"}


def test_a_bad_value_in_a_config_file_stops_the_extension_from_loading_with_one_sentence(
    ipython_dir, notebook_dir
):
    profile = ipython_dir / "profile_default"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "ipython_config.py").write_text("c.TFK8s.workers = 0\nc.TFK8s.image = 'corp/tf:1'\n")
    cfg = PyFileConfigLoader("ipython_config.py", path=str(profile)).load_config()
    shell = make_shell(ipython_dir, cfg)
    with pytest.raises(UsageError) as refused:
        shell.run_line_magic("load_ext", "tfk8s_jupyter")
    assert "c.TFK8s.workers in " in str(refused.value)
    assert str(refused.value).endswith(": workers is 0; use at least 1 worker.")

    from tfk8s_jupyter.config import TFK8s

    defaults, problems = TFK8s.from_config(config=cfg, where="jupyter_server_config.py")
    assert problems == ["c.TFK8s.workers in jupyter_server_config.py: workers is 0; use at least 1 worker."]
    assert (defaults.workers, defaults.image) == (2, "corp/tf:1")  # the server keeps serving


# -- submitting (stand-in runner, real local backend) ---------------------------------------------------
def test_cell_returns_at_once_then_line_magics_follow_the_job(shell, standin, capsys, tfk8s_home):
    start = time.perf_counter()
    shell.run_cell_magic("tfk8s_train", "--ps 1 --workers 2 --name quick-ps --out job --no-wait", QUICK)
    returned = time.perf_counter() - start
    assert returned < 2.0, returned
    job = shell.user_ns["job"]
    assert shell.user_ns["_tfk8s_job"] is job and job.name == "quick-ps"
    assert records(tfk8s_home) == ["quick-ps"]
    shell.run_line_magic("tfk8s_wait", "--timeout 120")
    out = capsys.readouterr().out
    assert "tfk8s: submitted job quick-ps (local); progress follows." in out
    assert out.rstrip().endswith("tfk8s job quick-ps: succeeded")
    # plain-text fallback: progress lines and a final summary
    assert "[tfk8s] job quick-ps · " in out
    assert "tfk8s job quick-ps: succeeded after" in out and "last: loss=0.09091" in out
    shell.run_line_magic("tfk8s_jobs", "")
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == [
        "name",
        "phase",
        "backend",
        "strategy",
        "replicas",
        "loss",
        "origin",
        "age",
    ]
    row = table.splitlines()[1].split()
    assert row[:4] == ["quick-ps", "succeeded", "local", "parameter_server"]
    assert "0.09091" in row  # the last loss
    shell.run_line_magic("tfk8s_logs", "quick-ps --tail 3")
    out = capsys.readouterr().out
    assert out.startswith("stand-in chief-0 listening on 127.0.0.1:") and "@tfk8s" not in out
    shell.run_line_magic("tfk8s_logs", "quick-ps --tail 3 --raw")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and '"type":"end"' in out[-1]
    shell.run_line_magic("tfk8s_logs", "quick-ps --replica ps-0")
    assert "stand-in ps-0" in capsys.readouterr().out
    with pytest.raises(
        UsageError, match="has no replica 'worker-7'; use one of ps-0, chief-0, worker-0, worker-1"
    ):
        shell.run_line_magic("tfk8s_logs", "quick-ps --replica worker-7")
    with pytest.raises(UsageError, match="there is no local job named 'nope'; %tfk8s_jobs lists your jobs"):
        shell.run_line_magic("tfk8s_attach", "nope")


def test_terminal_ipython_waits_by_default_and_ends_with_the_summary(shell, standin, capsys):
    """No interactive front end: the cell blocks until the job ends; its output is the progress lines
    and the final summary with the last loss. ``TFK8s.batch_wait = False`` returns at once."""
    shell.run_cell_magic("tfk8s_train", "--workers 2 --name waits", QUICK)
    job = shell.user_ns["_tfk8s_job"]
    assert job.status.done and job.phase == "succeeded"
    out = capsys.readouterr().out
    assert "[tfk8s] job waits · " in out
    summary = out[out.index("tfk8s job waits: succeeded after") :]
    assert "reached epoch 2, step 10" in summary and "last: loss=0.09091" in summary
    run(shell, "%config TFK8s.batch_wait = False")
    shell.run_cell_magic("tfk8s_train", "--workers 2 --name returns", "EPOCHS = 50\nSTEPS = 100\n")
    job = shell.user_ns["_tfk8s_job"]
    assert not job.status.done
    job.stop()
    with pytest.raises(UsageError, match="--wait and --no-wait contradict each other"):
        shell.run_cell_magic("tfk8s_train", "--wait --no-wait", QUICK)


def test_wait_flag_blocks_and_surfaces_a_failure(shell, standin, capsys):
    with pytest.raises(UsageError, match=r"job bad-cell failed: ValueError: no data"):
        shell.run_cell_magic(
            "tfk8s_train", "--workers 2 --name bad-cell --wait --timeout 120", "raise ValueError('no data')\n"
        )
    assert shell.user_ns["_tfk8s_job"].phase == "failed"


def test_stop_and_no_panel(shell, standin, capsys):
    shell.run_cell_magic(
        "tfk8s_train",
        "--workers 2 --name long-run --no-panel",
        "EPOCHS = 50\nSTEPS = 100\nSTEP_SECONDS = 0.05\n",
    )
    assert "tfk8s: submitted job long-run; %tfk8s_attach long-run shows its panel." in capsys.readouterr().out
    job = shell.user_ns["_tfk8s_job"]
    deadline = time.monotonic() + 60
    while job.phase == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
    shell.run_line_magic("tfk8s_stop", "long-run")
    assert capsys.readouterr().out.strip() == "tfk8s: job long-run stopped."
    assert job.phase == "stopped"
    shell.run_line_magic("tfk8s_stop", "long-run")
    assert capsys.readouterr().out.strip() == (
        "tfk8s: job long-run had already stopped; there was nothing to stop."
    )


def test_widget_panel_final_state_and_attach_after_a_kernel_restart(
    shell, standin, ipython_dir, notebook_dir
):
    run(shell, "%config TFK8s.frontend = 'widgets'")
    shell.run_cell_magic("tfk8s_train", "--ps 1 --workers 2 --name panel-ps --wait --timeout 120", QUICK)
    (panel,) = magics_of(shell).panels["panel-ps"]
    assert panel.done and panel.badge.value == "succeeded"
    assert "tfk8s-phase-succeeded" in panel.badge._dom_classes
    assert list(panel.lines.labels) == ["loss"]
    assert list(panel.lines.x) == list(range(1, 11))  # 2 epochs x 5 steps, every point
    assert np.atleast_2d(panel.lines.y)[0][-1] == pytest.approx(1 / 11)
    for replica in ("ps-0", "chief-0", "worker-0", "worker-1"):
        assert f'data-replica="{replica}"' in panel.table.value
    assert panel.table.value.count(">succeeded<") + panel.table.value.count(">stopped<") == 4
    assert panel.stop_button.disabled

    # a new kernel: the job's history comes back with %tfk8s_attach
    restarted = make_shell(ipython_dir)
    restarted.run_line_magic("load_ext", "tfk8s_jupyter")
    restarted.run_line_magic("config", "TFK8s.frontend = 'widgets'")
    restarted.run_line_magic("tfk8s_attach", "panel-ps")
    (again,) = magics_of(restarted).panels["panel-ps"]
    deadline = time.monotonic() + 30
    while not again.done and time.monotonic() < deadline:
        time.sleep(0.1)
    assert again.done and again.badge.value == "succeeded"
    assert list(again.lines.x) == list(range(1, 11))
    again.kind.value = "epoch"
    assert list(again.lines.x) == [1, 2]  # epochs as Keras counts them
    again.close()


def test_settings_panel_launches_and_becomes_the_job_panel(shell, standin):
    run(shell, "%config TFK8s.frontend = 'widgets'")
    shell.run_cell_magic("tfk8s_train", "--panel --workers 3 --name form-job", QUICK)
    form = shell.user_ns["_tfk8s_settings"]
    assert "tfk8s-settings-panel" in form._dom_classes
    assert form.fields["workers"].value == 3 and form.fields["backend"].value == "local"
    # a contradictory choice: the sentence shows under the form, nothing starts
    form.fields["ps"].value = 1
    form.fields["strategy"].value = "multi_worker_mirrored"
    form.launch_button.click()
    assert "ps=1 does not fit strategy multi_worker_mirrored" in form.message.value
    assert form.job is None and not form.launch_button.disabled
    form.fields["ps"].value = 0
    form.fields["workers"].value = 2
    form.launch_button.click()
    assert form.job is not None and form.job.name == "form-job"
    assert form.job.spec.workers == 2 and form.job.spec.strategy == "multi_worker_mirrored"
    assert form.children == (form.job_panel,) and "tfk8s-job-panel" in form.job_panel._dom_classes
    assert "tfk8s-settings-panel" not in form._dom_classes
    assert shell.user_ns["_tfk8s_job"] is form.job
    shell.run_line_magic("tfk8s_wait", "form-job --timeout 120")
    assert form.job_panel.badge.value == "succeeded"


def test_rerunning_a_cell_whose_job_runs_launches_nothing_and_shows_that_job(
    shell, standin, capsys, tfk8s_home
):
    run(shell, "%config TFK8s.frontend = 'widgets'")
    long = "EPOCHS = 50\nSTEPS = 100\nSTEP_SECONDS = 0.05\n"
    shell.run_cell_magic("tfk8s_train", "--workers 2 --no-wait", long)
    first = shell.user_ns["_tfk8s_job"]
    capsys.readouterr()
    shell.run_cell_magic("tfk8s_train", "--workers 2 --no-wait", long)
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == (
        f"tfk8s: job {first.name} from this cell is still running, so nothing new was started; its panel "
        "follows (re-run with --replace to stop it and start anew)."
    )
    assert out[1].startswith(f"job {first.name} · ")  # the panel (its text face in this shell)
    assert records(tfk8s_home) == [first.name]
    assert shell.user_ns["_tfk8s_job"] is first and not first.status.done
    assert len(magics_of(shell).panels[first.name]) == 2  # the re-run cell shows the running job again
    # another cell is another intent
    shell.run_cell_magic("tfk8s_train", "--workers 2 --no-wait --name other-cell", QUICK)
    assert len(records(tfk8s_home)) == 2
    shell.run_line_magic("tfk8s_wait", "other-cell --timeout 120")
    # --replace: the running job stops (its record stays), the cell starts anew
    capsys.readouterr()
    shell.run_cell_magic("tfk8s_train", "--workers 2 --no-wait --replace", long)
    assert f"tfk8s: stopped job {first.name}; starting the cell anew." in capsys.readouterr().out
    second = shell.user_ns["_tfk8s_job"]
    assert second.name != first.name and first.phase == "stopped"
    assert sorted(records(tfk8s_home)) == sorted([first.name, second.name, "other-cell"])
    shell.run_line_magic("tfk8s_stop", second.name)
    # the cell's job has ended: a re-run trains again
    shell.run_cell_magic("tfk8s_train", "--workers 2 --no-wait", long)
    third = shell.user_ns["_tfk8s_job"]
    assert third.name not in (first.name, second.name) and len(records(tfk8s_home)) == 4
    third.stop()


def test_after_a_kernel_restart_rerunning_the_cell_finds_its_running_job(
    shell, standin, capsys, ipython_dir, tfk8s_home
):
    """The kernel that started the job is gone: the re-run cell still launches nothing, says so, and
    follows the job; --replace stops it and starts anew."""
    long = "EPOCHS = 50\nSTEPS = 100\nSTEP_SECONDS = 0.05\n"
    shell.run_cell_magic("tfk8s_train", "--workers 2 --no-wait", long)
    first = shell.user_ns["_tfk8s_job"]
    restarted = make_shell(ipython_dir)
    restarted.run_line_magic("load_ext", "tfk8s_jupyter")
    restarted.run_line_magic("config", "TFK8s.frontend = 'widgets'")
    capsys.readouterr()
    restarted.run_cell_magic("tfk8s_train", "--workers 2 --no-wait", long)
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == (
        f"tfk8s: job {first.name} from this cell is still running (started before the kernel restarted), "
        "so nothing new was started; its panel follows (re-run with --replace to stop it and start anew)."
    )
    assert records(tfk8s_home) == [first.name]
    assert restarted.user_ns["_tfk8s_job"].name == first.name
    (panel,) = magics_of(restarted).panels[first.name]
    assert not panel.stop_button.disabled  # a live panel on the running job
    # another cell's text is another cell: it trains
    restarted.run_cell_magic("tfk8s_train", "--workers 2 --no-wait --name other-cell", QUICK)
    assert sorted(records(tfk8s_home)) == sorted([first.name, "other-cell"])
    restarted.run_line_magic("tfk8s_wait", "other-cell --timeout 120")
    capsys.readouterr()
    restarted.run_cell_magic("tfk8s_train", "--workers 2 --no-wait --replace", long)
    assert f"tfk8s: stopped job {first.name}; starting the cell anew." in capsys.readouterr().out
    second = restarted.user_ns["_tfk8s_job"]
    assert second.name != first.name and first.phase == "stopped"
    second.stop()
    for p in magics_of(restarted).panels.get(first.name, []) + magics_of(restarted).panels.get(
        second.name, []
    ):
        p.close()


def said(capsys) -> list[str]:
    """The lines a magic printed, without a running job's background progress lines."""
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("tfk8s:")]


def test_jobs_say_which_notebook_and_cell_started_them_and_delete_says_what_goes(
    shell, standin, capsys, tfk8s_home, monkeypatch
):
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/Sales Forecast.ipynb")
    shell.execution_count = 7
    shell.run_cell_magic("tfk8s_train", "--workers 2 --no-wait", QUICK)
    first = shell.user_ns["_tfk8s_job"]
    assert re.fullmatch(r"sales-forecast-[0-9a-f]{6}-[0-9a-f]{5}", first.name)
    shell.run_line_magic("tfk8s_wait", "--timeout 120")
    shell.run_cell_magic(
        "tfk8s_train", "--workers 2 --name still-running --no-wait", "EPOCHS = 50\nSTEPS = 100\n"
    )
    capsys.readouterr()
    shell.run_line_magic("tfk8s_jobs", "")
    out = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("[tfk8s]")]
    rows = {line.split()[0]: line for line in out[1:]}
    assert "Sales-Forecast.ipynb [7]" in rows[first.name] and "0.09091" in rows[first.name]

    # --dry-run refuses a name that is taken, as the launch would
    with pytest.raises(UsageError, match=f"a job named '{first.name}' exists already; choose another --name"):
        shell.run_cell_magic("tfk8s_train", f"--name {first.name} --dry-run", CELL)

    # nothing is deleted when one name is wrong or one job still runs
    with pytest.raises(UsageError, match="there is no local job named 'nope'"):
        shell.run_line_magic("tfk8s_delete", f"{first.name} nope")
    with pytest.raises(UsageError, match="job still-running is still running; stop it first"):
        shell.run_line_magic("tfk8s_delete", f"{first.name} still-running")
    assert sorted(records(tfk8s_home)) == sorted([first.name, "still-running"])
    with pytest.raises(UsageError, match="name the jobs to delete"):
        shell.run_line_magic("tfk8s_delete", "")

    capsys.readouterr()
    shell.run_line_magic("tfk8s_delete", "--finished --dry-run")
    # the running job's text progress may print a line meanwhile: only the magic's own lines count
    assert said(capsys) == [f"tfk8s: would delete 1 job: {first.name} (succeeded); nothing was deleted."]
    shell.run_line_magic("tfk8s_delete", "--finished")
    assert said(capsys) == [f"tfk8s: deleted 1 job: {first.name} (succeeded)."]
    assert records(tfk8s_home) == ["still-running"]
    shell.run_line_magic("tfk8s_delete", "still-running --stop")
    (line,) = said(capsys)
    assert line.startswith("tfk8s: deleted 1 job: still-running (")
    assert records(tfk8s_home) == []


def test_a_deleted_jobs_panel_keeps_its_last_state_and_cannot_stop(shell, standin, tfk8s_home):
    run(shell, "%config TFK8s.frontend = 'widgets'")
    shell.run_cell_magic("tfk8s_train", "--workers 2 --name gone-job --no-wait", "EPOCHS = 50\nSTEPS = 100\n")
    (panel,) = magics_of(shell).panels["gone-job"]
    job = shell.user_ns["_tfk8s_job"]
    deadline = time.monotonic() + 60
    while job.phase != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    shell.run_line_magic("tfk8s_delete", "gone-job --stop")
    assert panel.stop_button.disabled and panel.stop_button.description == "Stop"
    assert "job gone-job deleted (last known state: running)" in panel.info.value
    assert "tfk8s-gone" in panel._dom_classes


TF_STARTUP = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796051095.595902   17194 port.cc:153] oneDNN custom operations are on. You may see "
    "slightly different numerical results.\n"
    "I0000 00:00:1796051095.596239   17194 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.\n"
    "E0000 00:00:1796051099.292135   17194 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)\n"
    "WARNING:tensorflow:Callback method `on_train_batch_end` is slow compared to the batch time (batch "
    "time: 0.0010s vs `on_train_batch_end` time: 0.0030s). Check your callbacks.\n"
)


def test_logs_fold_tensorflow_start_up_noise_unless_all(shell, standin, capsys):
    cell = f"import sys\nsys.stderr.write({TF_STARTUP!r})\nprint('the cell speaks')\n" + QUICK
    shell.run_cell_magic("tfk8s_train", "--workers 2 --name noisy --wait --timeout 120 --no-panel", cell)
    capsys.readouterr()
    shell.run_line_magic("tfk8s_logs", "noisy")
    out = capsys.readouterr().out
    assert out.startswith("(5 TensorFlow start-up lines folded; show all to see them)\n")
    assert "the cell speaks" in out and "stand-in worker-0" in out
    for noise in ("absl::InitializeLog", "oneDNN", "cuda drivers", "cuInit", "is slow compared"):
        assert noise not in out
    shell.run_line_magic("tfk8s_logs", "noisy --all")
    everything = capsys.readouterr().out
    assert "failed call to cuInit" in everything and "folded" not in everything
    job = shell.user_ns["_tfk8s_job"]
    assert "failed call to cuInit" in job.logs("worker-0")  # the stored log is unchanged


def test_double_click_on_launch_submits_one_job(shell, standin, tfk8s_home):
    run(shell, "%config TFK8s.frontend = 'widgets'")
    shell.run_cell_magic("tfk8s_train", "--panel --workers 2", QUICK)
    form = shell.user_ns["_tfk8s_settings"]
    form.launch_button.click()
    form.launch_button.click()  # the second click message of a double click
    assert len(records(tfk8s_home)) == 1
    shell.run_line_magic("tfk8s_wait", f"{form.job.name} --timeout 120")


def test_panel_needs_a_widget_frontend(shell):
    with pytest.raises(UsageError, match="--panel needs a widget frontend"):
        shell.run_cell_magic("tfk8s_train", "--panel", CELL)


def test_logs_follow_prints_until_the_job_ends(shell, standin, capsys):
    shell.run_cell_magic("tfk8s_train", "--workers 2 --name follow-me --no-panel", QUICK)
    capsys.readouterr()
    start = time.monotonic()
    shell.run_line_magic("tfk8s_logs", "follow-me --follow")
    assert time.monotonic() - start < 60
    out = capsys.readouterr().out
    assert "stand-in worker-0 listening on 127.0.0.1:" in out and "@tfk8s" not in out
    assert shell.user_ns["_tfk8s_job"].status.done


def test_interrupting_a_wait_leaves_the_job_running(shell, standin, monkeypatch):
    from tfk8s_jupyter.api import Job

    shell.run_cell_magic(
        "tfk8s_train", "--workers 2 --name keeps-going --no-panel", "EPOCHS = 50\nSTEPS = 100\n"
    )

    def interrupted(self, timeout=None, poll=0.5):
        raise KeyboardInterrupt

    monkeypatch.setattr(Job, "wait", interrupted)
    with pytest.raises(
        UsageError, match="stopped waiting; job keeps-going keeps running .* %tfk8s_stop keeps-going"
    ):
        shell.run_line_magic("tfk8s_wait", "keeps-going")
    job = shell.user_ns["_tfk8s_job"]
    assert not job.status.done
    job.stop()


@pytest.mark.k8s
def test_train_on_kubernetes_through_the_magic(shell, kube_cluster, capsys):
    run(shell, "%config TFK8s.frontend = 'widgets'")
    shell.run_cell_magic(
        "tfk8s_train",
        "--backend kubernetes --context team --ps 1 --workers 2 --name kube-ps --wait --timeout 120",
        "EPOCHS = 2\nSTEPS = 5\nSTEP_SECONDS = 0.02\n",
    )
    (panel,) = magics_of(shell).panels["kube-ps"]
    assert panel.done and panel.badge.value == "succeeded"
    assert list(panel.lines.x) == list(range(1, 11))
    assert panel.table.value.count("data-replica=") == 4 and "kube-ps-chief-0" in panel.table.value
    assert {p["metadata"]["namespace"] for p in kube_cluster.objects("pods")} == {"team"}
    capsys.readouterr()
    shell.run_line_magic("tfk8s_jobs", "--backend kubernetes")
    assert capsys.readouterr().out.strip() == "no tfk8s jobs"  # the current context's namespace is default
    run(shell, "%config TFK8s.context = 'team'")
    shell.run_line_magic("tfk8s_jobs", "--backend kubernetes")
    assert capsys.readouterr().out.splitlines()[1].split()[:4] == [
        "kube-ps",
        "succeeded",
        "kubernetes",
        "parameter_server",
    ]
    shell.run_line_magic("tfk8s_logs", "kube-ps --replica ps-0")
    assert "stand-in ps-0 listening on" in capsys.readouterr().out
