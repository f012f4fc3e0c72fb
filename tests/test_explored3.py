"""What a notebook user does with a training cell that the other explored tests do not: a cell that leaves
its process by itself (``os._exit``), a cell that starts processes of its own. Each outcome is checked as
the user reads it (the job's one sentence, what is still running after the job)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tfk8s_jupyter as tk  # noqa: E402
from tfk8s_jupyter.logtext import log_excerpt  # noqa: E402

# The end of a replica's log as the supervisor reads it: TensorFlow's start-up noise, the runner's protocol
# line, then the cell's own words.
REPLICA_LOG_END = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796181832.674122   14202 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
E0000 00:00:1796181833.530384   14202 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
@tfk8s {"v":1,"type":"start","run":"fb74e87d","seq":1,"job":"x","role":"worker","index":0} #cda629662b989411942a2279
loading data
\x1b[31mbefore\x1b[0m
"""


def test_a_log_excerpt_quotes_the_cells_words_not_protocol_lines_or_tensorflow_noise():
    assert log_excerpt(REPLICA_LOG_END, n=5) == "loading data | before"


@pytest.mark.tf
@pytest.mark.timeout(120)
def test_a_cell_that_leaves_with_os_exit_fails_with_its_own_last_words():
    cell = "import os\nimport tensorflow as tf\nprint('before', flush=True)\nos._exit(3)\n"
    job = tk.submit(cell, workers=1, name="os-exit", max_restarts=0, setup_timeout=90)
    assert job.wait(timeout=90) == "failed"
    assert job.status.message == "worker-0 exited with code 3; its last log lines: before"


def test_a_log_excerpt_gives_an_error_events_message():
    line = '@tfk8s {"v":1,"type":"error","run":"a","seq":2,"message":"ValueError: the cell is broken"} #00'
    assert log_excerpt(f"loading data\n{line}\n", n=3) == "loading data | ValueError: the cell is broken"


def _pids(log: str, word: str) -> list[int]:
    return [int(line.split()[1]) for line in log.splitlines() if line.startswith(f"{word} ")]


def _gone(pids: list[int]) -> bool:
    from tfk8s_jupyter.backends.local import process_alive

    return not any(process_alive(pid) for pid in pids)


def _kill_left(pids: list[int]) -> None:
    import os
    import signal

    from tfk8s_jupyter.backends.local import process_alive

    for pid in pids:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


# A cell that starts processes of its own and does not wait for them: a child, a daemon (a shell's `&`), a
# multiprocessing worker.
STARTS_PROCESSES = """\
import multiprocessing, os, subprocess, time
child = subprocess.Popen(["sleep", "171"])
print("child", child.pid, flush=True)
os.system("sleep 172 & echo daemon $!")
worker = multiprocessing.Process(target=time.sleep, args=(173,))
worker.start()
print("worker", worker.pid, flush=True)
"""


@pytest.mark.tf
@pytest.mark.timeout(120)
def test_processes_a_cell_leaves_running_end_with_the_job():
    from local_helpers import wait_for

    job = tk.submit(STARTS_PROCESSES, workers=1, name="leaves-processes", setup_timeout=90)
    assert job.wait(timeout=90) == "succeeded", job.status.message
    log = job.logs("worker-0")
    pids = _pids(log, "child") + _pids(log, "daemon") + _pids(log, "worker")
    assert len(pids) == 3, log
    try:
        wait_for(lambda: _gone(pids), 10, "the cell's processes to end with the job")
        assert "tfk8s: the cell left 3 process(es) running (pid " in log
    finally:
        _kill_left(pids)


@pytest.mark.tf
@pytest.mark.timeout(120)
def test_processes_of_a_cell_still_running_end_when_the_job_is_stopped():
    from local_helpers import wait_for

    cell = STARTS_PROCESSES + "time.sleep(120)\n"
    job = tk.submit(cell, workers=1, name="stopped-processes", setup_timeout=90)
    log = wait_for(lambda: (lambda t: "worker " in t and t)(job.logs("worker-0")), 60, "the cell's processes")
    pids = _pids(log, "child") + _pids(log, "daemon") + _pids(log, "worker")
    assert len(pids) == 3, log
    try:
        job.stop()
        assert job.wait(timeout=30) == "stopped"
        wait_for(lambda: _gone(pids), 10, "the cell's processes to end with the stopped job")
    finally:
        _kill_left(pids)


@pytest.mark.parametrize(
    ("magic", "line", "says"),
    [
        ("model", "", "required: name; run %tfk8s_model? for the options and examples."),
        ("model", "some-job --bogus", "unknown option --bogus; run %tfk8s_model? to see the options."),
        ("tensorboard", "--bogus", "unknown option --bogus; run %tfk8s_tensorboard? to see the options."),
        ("scale", "some-job", "required: --workers; run %tfk8s_scale? for the options and examples."),
        ("scale", "some-job --workers", "expected one argument; give it a value, e.g. --workers 2."),
        ("delete", "--older-than", "expected one argument; give it a value, e.g. --older-than 7d."),
        ("logs", "some-job --replica", "expected one argument; give it a value, e.g. --replica worker-0."),
        ("train", "--name", "expected one argument; give it a value, e.g. --name my-job."),
        ("train", "--backend", "expected one argument; give it a value, e.g. --backend kubernetes."),
    ],
)
def test_a_magic_line_argparse_refuses_names_that_magic_and_a_value_it_takes(magic, line, says):
    from IPython.core.error import UsageError

    from tfk8s_jupyter.job_magics import JobMagics
    from tfk8s_jupyter.magic_args import parse_magic_line
    from tfk8s_jupyter.magics import TFK8sMagics
    from tfk8s_jupyter.result_magics import ResultMagics
    from tfk8s_jupyter.scale_magics import ScaleMagics

    owner = {"model": ResultMagics, "tensorboard": ResultMagics, "scale": ScaleMagics, "train": TFK8sMagics}
    func = getattr(owner.get(magic, JobMagics), f"tfk8s_{magic}")
    with pytest.raises(UsageError) as e:
        parse_magic_line(func, line)
    message = str(e.value)
    assert message.endswith(says), message
    assert re.search(r"\. [A-Z]", message) is None, message  # one sentence


@pytest.mark.parametrize(
    ("flag", "item", "says"),
    [
        ("--env", "=1", "--env '=1' is not KEY=VALUE; write it as --env KEY=1."),
        ("--env", "WANDB", "--env 'WANDB' is not KEY=VALUE; write it as --env WANDB=value."),
        (
            "--secret-env",
            "=wandb/api-key",
            "--secret-env '=wandb/api-key' is not NAME=SECRET/KEY; write it as --secret-env NAME=wandb/api-key.",
        ),
    ],
)
def test_an_env_flag_without_its_name_names_the_missing_half(flag, item, says):
    from IPython.core.error import UsageError

    from tfk8s_jupyter.magic_args import parse_env

    example = "value" if flag == "--env" else "SECRET/KEY"
    with pytest.raises(UsageError) as e:
        parse_env([item], flag=flag, example=example)
    assert str(e.value) == says


# The notebook checks tutorials start with, and a magic as nbconvert spells it in Python.
NOTEBOOK_CHECK = """\
IN_COLAB = "google.colab" in str(get_ipython())
print("in colab:", IN_COLAB, "in a kernel:", get_ipython() is not None)
"""


@pytest.mark.tf
@pytest.mark.timeout(120)
def test_a_cell_asking_get_ipython_where_it_runs_hears_a_plain_python_process():
    job = tk.submit(NOTEBOOK_CHECK, workers=1, name="get-ipython", setup_timeout=90)
    assert job.wait(timeout=90) == "succeeded", job.status.message
    assert "in colab: False in a kernel: False" in job.logs("worker-0")


def test_a_cell_calling_get_ipython_methods_is_refused_in_one_sentence(tfk8s_home):
    cell = "import numpy as np\nget_ipython().run_line_magic('matplotlib', 'inline')\n"
    with pytest.raises(tk.SpecError) as e:
        tk.submit(cell, workers=1, name="kernel-call")
    assert str(e.value) == (
        "line 2 of the code calls get_ipython().run_line_magic, which needs the notebook's IPython kernel and "
        "the replicas have none; run it in a separate cell above, or write it in plain Python."
    )
    assert not any(tfk8s_home.iterdir())


@pytest.mark.parametrize(
    "cell",
    [
        "# model.fit(x, y, epochs=5)\n# commented out while debugging\n",
        '"""Train the model."""\n# model.fit(x, y)\n',
    ],
)
def test_a_cell_with_only_comments_starts_no_job(tfk8s_home, cell):
    with pytest.raises(tk.SpecError) as e:
        tk.submit(cell, workers=1, name="comments-only")
    assert str(e.value) == (
        "the cell has only comments, so its job would train nothing; write the model and its model.fit(...) "
        "call in the cell (or uncomment them)."
    )
    assert not any(tfk8s_home.iterdir())


def test_the_python_api_refuses_a_wrong_type_of_name_timeout_or_tail_in_one_sentence(standin):
    from tfk8s_jupyter.backends.base import JobNotFound

    with pytest.raises(JobNotFound) as e:
        tk.attach(None)
    assert str(e.value) == (
        "attach() was given None, not a job name; pass the name as text, e.g. tfk8s_jupyter.attach('mnist-ps') "
        "(tfk8s_jupyter.list_jobs() lists the jobs)."
    )
    job = tk.submit("EPOCHS = 1\nSTEPS = 2\n", workers=1, name="api-types")
    assert job.wait(timeout=60) == "succeeded"
    with pytest.raises(tk.SpecError) as e:
        job.wait(timeout="10")
    assert str(e.value) == (
        "timeout '10' is not a number of seconds; pass one, e.g. job.wait(timeout=300), or None to wait until "
        "the job ends."
    )
    for tail in ("5", 0, -1, 2.5):
        with pytest.raises(tk.SpecError) as e:
            job.logs(tail=tail)
        assert str(e.value) == (
            f"tail {tail!r} is not a number of lines; pass a whole number from 1, e.g. job.logs(tail=50), or "
            "None for the whole log."
        )
    assert job.logs(tail=1).strip() != ""
