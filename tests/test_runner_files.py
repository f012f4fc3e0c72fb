"""The runner as the Kubernetes backend ships it: exactly ``runner_files()`` in an empty directory, run by a
Python that has TensorFlow but not this package (a stock image's ``python runner.py``)."""

from __future__ import annotations

import ast
import os
import pickle
import site
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cells  # noqa: E402

import tfk8s_jupyter  # noqa: E402
from tfk8s_jupyter import protocol  # noqa: E402
from tfk8s_jupyter.backends.kubernetes.manifests import RUNNER_FILES, runner_files  # noqa: E402
from tfk8s_jupyter.payload import Payload  # noqa: E402
from tfk8s_jupyter.replica_env import contract_env  # noqa: E402
from tfk8s_jupyter.runner import EXIT_SETUP_ERROR  # noqa: E402
from tfk8s_jupyter.spec import make_spec  # noqa: E402

PACKAGE = Path(tfk8s_jupyter.__file__).resolve().parent
JOB_TIMEOUT = 150
NOT_IMPORTABLE = (
    "import importlib.util; assert importlib.util.find_spec('tfk8s_jupyter') is None, 'package found'"
)


def image_python() -> tuple[list[str], dict[str, str]]:
    """The command and environment of a Python like a stock image's: TensorFlow and tf_keras, no package.

    ``-S`` skips ``site``, so the editable install's ``.pth`` (which puts this repo on ``sys.path``) is never
    read; this interpreter's site-packages come from PYTHONPATH instead. Run with ``cwd`` = the runner's dir.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TFK8S_")) and k != "TF_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in site.getsitepackages() if Path(p).is_dir())
    return [sys.executable, "-S"], env


def image_job(spec, job: Path) -> tuple[list[str], dict[str, str]]:
    """:func:`image_python` with the contract environment of ``spec``'s worker 0, its payload, checkpoints
    and work dir in ``job``."""
    command, env = image_python()
    env.update(
        contract_env(
            spec,
            "worker",
            payload=str(job / "payload.json"),
            checkpoint_dir=str(job / "checkpoints"),
            workdir=str(job / "work"),
            setup_timeout=60,
            index=0,
        )
    )
    return command, env


def write_runner_files(directory: Path) -> Path:
    """``runner_files()``, and nothing else, written into an empty ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    assert not any(directory.iterdir())
    for name, text in runner_files().items():
        (directory / name).write_text(text)
    return directory


def _imported_package_modules(path: Path) -> set[str]:
    """Names of this package's modules that ``path`` imports, either way (package or standalone)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == "tfk8s_jupyter":
                names.update(parts[1:2] or [alias.name for alias in node.names])
            else:
                names.add(parts[0])
    return {n for n in names if (PACKAGE / f"{n}.py").is_file() or (PACKAGE / n).is_dir()}


# Local-backend-only imports, made inside functions and only when TFK8S_KEEP is set (kept replicas, which
# the Kubernetes backend never sets): a pod never reaches them.
LOCAL_ONLY = {"runner.py": {"backends"}}


def test_local_only_imports_are_guarded_by_the_local_keep_variable():
    source = (PACKAGE / "runner.py").read_text()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tfk8s_jupyter.backends"):
            assert node.col_offset > 0, "runner.py imports the backends package at module level"
    # each such import sits under a TFK8S_KEEP check
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if "from tfk8s_jupyter.backends" in line:
            before = "\n".join(lines[max(0, i - 6) : i])
            assert "TFK8S_KEEP" in before, f"runner.py line {i + 1} is not guarded by TFK8S_KEEP"


def test_every_runner_file_is_shipped_and_imports_only_shipped_modules():
    files = runner_files()
    assert set(files) == set(RUNNER_FILES)
    for name in RUNNER_FILES:
        assert files[name].strip(), f"{name} is empty"
        imported = _imported_package_modules(PACKAGE / name) - LOCAL_ONLY.get(name, set())
        missing = {f"{n}.py" for n in imported} - set(RUNNER_FILES)
        assert not missing, f"{name} imports {sorted(missing)}, which the ConfigMap does not carry"


def test_each_runner_file_imports_standalone_without_tensorflow(tmp_path):
    image = write_runner_files(tmp_path / "image")
    command, env = image_python()
    for name in RUNNER_FILES:
        module = name.removesuffix(".py")
        code = (
            f"{NOT_IMPORTABLE}; import sys, {module}; print('tensorflow' in sys.modules, {module}.__file__)"
        )
        proc = subprocess.run(
            [*command, "-c", code], cwd=image, env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        tf_loaded, where = proc.stdout.split()
        assert tf_loaded == "False" and Path(where).resolve() == (image / name).resolve(), proc.stdout

    # the isolation is real: a shipped file left out is not found anywhere else
    (image / "replica_output.py").unlink()
    proc = subprocess.run(
        [*command, "-c", "import runner"], cwd=image, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "No module named 'replica_output'" in proc.stderr, proc.stderr


def test_standalone_runner_reports_a_bad_environment(tmp_path):
    image = write_runner_files(tmp_path / "image")
    command, env = image_python()
    env.update(TFK8S_ROLE="worker", TFK8S_STRATEGY="async")
    proc = subprocess.run(
        [*command, "runner.py"], cwd=image, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == EXIT_SETUP_ERROR, proc.stderr
    (event,) = protocol.parse_lines(proc.stdout)
    assert event["type"] == "error" and "TFK8S_STRATEGY is 'async'" in event["message"]


PAYLOAD_CELL = """\
import pickle
import tensorflow as tf
from helpers.data import make_data

x, y = make_data()
model = make_model(tf)
model.compile(optimizer=tf.keras.optimizers.Adam(LEARNING_RATE), loss="mse")
model.fit(x, y, batch_size=64, epochs=2, verbose=1)

class Point:
    pass

print("cell namespace:", __name__, len(pickle.dumps(Point())) > 0)
"""


@pytest.mark.tf
def test_the_configmap_runner_trains_a_mirrored_job_from_an_empty_dir(tmp_path):
    image = write_runner_files(tmp_path / "image")
    job = tmp_path / "job"
    job.mkdir()
    payload = Payload(
        code=PAYLOAD_CELL,
        prelude=(
            "def make_model(tf):\n"
            "    return tf.keras.Sequential([tf.keras.Input(shape=(8,)), tf.keras.layers.Dense(1)])\n"
        ),
        values={"LEARNING_RATE": pickle.dumps(0.05)},
        files={
            "helpers/data.py": cells._DATA.replace("\n", "\n    ").replace(
                "import numpy", "def make_data():\n    import numpy", 1
            )
            + "return x, y\n"
        },
    )
    (job / "payload.json").write_text(payload.to_json())
    spec = make_spec(PAYLOAD_CELL, workers=1, strategy="mirrored", name="standalone", metric_interval=0.1)
    command, env = image_job(spec, job)
    probe = subprocess.run(
        [*command, "-c", NOT_IMPORTABLE], cwd=image, env=env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0, probe.stderr

    proc = subprocess.run(
        [*command, "runner.py"], cwd=image, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = protocol.parse_lines(proc.stdout)
    assert events[0]["type"] == "start" and events[0]["strategy"] == "mirrored"
    assert events[0]["keras"] == "keras3"
    assert any(e["type"] == "metric" and "loss" in e["values"] for e in events)
    losses = [e["values"]["loss"] for e in events if e["type"] == "epoch"]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert [e["step"] for e in events if e["type"] == "epoch"] == [32, 64]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "succeeded"
    assert "cell namespace: __main__ True" in proc.stdout
    assert (job / "work" / "helpers" / "data.py").exists()
    assert sorted(p.name for p in image.iterdir() if p.suffix == ".py") == sorted(RUNNER_FILES)
