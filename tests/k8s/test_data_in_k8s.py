"""Data in on Kubernetes: the files a cell reads by relative path travel with the job (``binaryData``
ConfigMaps, split across objects, at most 8 MB in all) and sit in every pod's work dir by those paths."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import kubernetes_validate
import pytest
from data_in_helpers import DATA_CELL, folder_state, make_notebook_folder

from tfk8s_jupyter.backends.kubernetes import ManifestError, manifests_yaml, render_manifests
from tfk8s_jupyter.backends.kubernetes.manifests import CONFIGMAP_LIMIT, DATA_INDEX
from tfk8s_jupyter.capture import capture
from tfk8s_jupyter.payload import Payload
from tfk8s_jupyter.replica_workdir import shipped_inputs
from tfk8s_jupyter.spec import make_spec

pytestmark = pytest.mark.k8s


def _spec(name="data-job", **kw):
    return make_spec("x = 1", workers=2, name=name, backend="kubernetes", **kw)


def _mount(cm: dict, folder: Path) -> Path:
    """What a kubelet makes of a ConfigMap volume: one file per key."""
    folder.mkdir(parents=True)
    for key, value in (cm.get("data") or {}).items():
        (folder / key).write_text(value)
    for key, value in (cm.get("binaryData") or {}).items():
        (folder / key).write_bytes(base64.b64decode(value))
    return folder


def test_inputs_are_split_across_configmaps_under_the_limit_and_reassembled(tmp_path):
    big = bytes(range(256)) * 10_000  # 2.56 MB: parts in three objects
    data = {"data/big.bin": big, "train.csv": b"1,2\n3,4\n", "images/a.png": b"\x89PNG..."}
    payload = Payload(code="x = 1", inputs={k: len(v) for k, v in data.items()}, data=data)
    objs = render_manifests(_spec(), payload)
    cms = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("data-job-data-")]
    assert len(cms) == 3
    for cm in cms:
        kubernetes_validate.validate(cm, "1.33", strict=True)
        size = sum(len(base64.b64decode(v)) for v in cm["binaryData"].values()) + len(cm["data"][DATA_INDEX])
        assert size < CONFIGMAP_LIMIT
    # the payload ConfigMap holds no input bytes
    assert "data" not in json.loads(objs[0]["data"]["payload.json"])
    # every pod mounts every data ConfigMap and is told where
    jobs = [o for o in objs if o["kind"] == "Job"]
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        mounted = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
        assert mounted == {"data-job", *(cm["metadata"]["name"] for cm in cms)}
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert [env[f"TFK8S_DATA_DIR_{i}"] for i in range(3)] == [f"/etc/tfk8s-data-{i}" for i in range(3)]
    # what the runner reassembles from the mounts is the files, byte for byte
    environ = {f"TFK8S_DATA_DIR_{i}": str(_mount(cm, tmp_path / str(i))) for i, cm in enumerate(cms)}
    assert shipped_inputs(environ) == data
    # the dry run shows sizes, not megabytes of base64
    text = manifests_yaml(objs)
    assert "<900000 bytes>" in text and base64.b64encode(big[:300]).decode() not in text


def test_inputs_over_the_limit_stop_the_manifests_in_one_sentence():
    payload = Payload(code="x = 1", data={"a.bin": b"\0" * 9_000_000, "b.bin": b"\0" * 10})
    with pytest.raises(
        ManifestError, match=r"over the 8.0 MB that travel with a Kubernetes job \(largest: 'a.bin'"
    ):
        render_manifests(_spec(), payload)


def test_dry_run_lists_what_travels_with_sizes(shell_for_dry_run, tmp_path, capsys):
    shell = shell_for_dry_run
    shell.run_cell_magic(
        "tfk8s_train", "--dry-run --workers 2 --backend kubernetes --name dry-data", DATA_CELL
    )
    out = capsys.readouterr().out
    assert "#   inputs:      8 files (travel with the job, " in out
    assert "#     train.csv (" in out and "#     data/nested/arrays.npz (" in out
    assert "unrelated.txt" not in out
    assert "name: dry-data-data-0" in out and "binaryData:" in out


@pytest.fixture
def shell_for_dry_run(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    folder = make_notebook_folder(tmp_path / "nb")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "tfk8s_jupyter")
    yield shell
    InteractiveShell.clear_instance()


@pytest.mark.tf
@pytest.mark.timeout(900)
def test_tf_pods_read_the_notebooks_files_by_relative_path(apiserver, make_cluster, backend, tmp_path):
    nb = make_notebook_folder(tmp_path / "nb")
    before = folder_state(nb)
    make_cluster()  # the real runner, as shipped in the ConfigMap
    spec = make_spec(DATA_CELL, workers=2, name="k8s-data", backend="kubernetes", setup_timeout=240)
    payload = capture(DATA_CELL, backend="kubernetes", root=nb).payload
    assert len(payload.data) == 8
    backend.submit(spec, payload)
    statuses: list = []
    stop = threading.Event()
    t = threading.Thread(
        target=backend.watch, args=(spec.name, statuses.append, [].extend, stop), daemon=True
    )
    t.start()
    t.join(600)
    stop.set()
    assert statuses and statuses[-1].phase == "succeeded", (
        f"{statuses[-1].message if statuses else None}\n{backend.logs(spec.name, 'worker-0')[-3000:]}"
    )
    log = backend.logs(spec.name, "worker-0")
    assert "inputs: (64, 5) 2.0 [0, 40, 80, 120, 160, 200] 6" in log, log[-2000:]
    assert folder_state(nb) == before
    names = {o["metadata"]["name"] for o in apiserver.objects("configmaps")}
    assert "k8s-data-data-0" in names
    backend.delete(spec.name)
    assert not any(o["metadata"]["name"].startswith("k8s-data") for o in apiserver.objects("configmaps"))


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_a_file_that_did_not_travel_is_explained_in_the_error(apiserver, make_cluster, backend, tmp_path):
    nb = make_notebook_folder(tmp_path / "nb")
    make_cluster()
    cell = 'import numpy as np\nimport tensorflow as tf\nt = np.loadtxt("train.csv", delimiter=",")\nname = "labels" + ".csv"\nopen(name)\n'
    spec = make_spec(
        cell, workers=1, name="k8s-missing", backend="kubernetes", setup_timeout=240, max_restarts=0
    )
    payload = capture(cell, backend="kubernetes", root=nb).payload
    assert list(payload.data) == ["train.csv"]
    backend.submit(spec, payload)
    statuses: list = []
    stop = threading.Event()
    t = threading.Thread(
        target=backend.watch, args=(spec.name, statuses.append, [].extend, stop), daemon=True
    )
    t.start()
    t.join(400)
    stop.set()
    assert statuses and statuses[-1].phase == "failed"
    error = next(e for e in backend.events(spec.name) if e["type"] == "error")
    message = error["message"]
    assert message.startswith(
        "FileNotFoundError: [Errno 2] No such file or directory: 'labels.csv' — worker-0 runs on "
    )
    assert "where only the input files found at submission arrived (train.csv)" in message
    assert "with --files so it travels with the job, or read it from a URI inside the cell" in message


def test_tfjob_pods_mount_the_inputs_too():
    import jsonschema
    import yaml

    crd = Path(__file__).parent / "data" / "kubeflow.org_tfjobs.v1.9.0.yaml"
    schema = yaml.safe_load(crd.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    payload = Payload(code="x = 1", inputs={"a.bin": 3}, data={"a.bin": b"abc"})
    objs = render_manifests(
        make_spec("x = 1", ps=1, workers=2, name="tf-data", backend="kubernetes"), payload, "tfjob"
    )
    assert [o["kind"] for o in objs] == ["ConfigMap", "ConfigMap", "Secret", "TFJob"]
    tfjob = objs[-1]
    jsonschema.validate(tfjob, schema)
    for rs in tfjob["spec"]["tfReplicaSpecs"].values():
        pod = rs["template"]["spec"]
        assert {"name": "tfk8s-data-0", "configMap": {"name": "tf-data-data-0"}} in pod["volumes"]
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod}, "1.33", strict=True
        )


def test_a_job_with_input_files_is_listed_once(apiserver, backend, tfk8s_home):
    """The input ConfigMaps carry the job's labels, but only the parent is a job to list (or to expire)."""
    data = {"train.csv": b"1,2\n3,4\n"}
    payload = Payload(code="x = 1", inputs={k: len(v) for k, v in data.items()}, data=data)
    backend.submit(_spec(), payload)
    assert [o["metadata"]["name"] for o in apiserver.objects("configmaps")] == ["data-job", "data-job-data-0"]
    assert [s.name for s in backend.list()] == ["data-job"]
    backend.delete("data-job")
    assert apiserver.objects("configmaps") == []


BAD_INPUTS = {
    "outside": (
        "",
        'import numpy as np\nt = np.loadtxt("../secret.csv")\n',
        "lies outside the notebook's folder",
    ),
    "files-nothing": ("--files 'missing/*.csv' ", "x = 1\n", "--files 'missing/*.csv' matches no file"),
    "symlink-loop": ("", 'f = open("self")\n', "'self' is a symlink loop"),
    "over-limit": (
        "",
        'blob = open("big.bin", "rb").read()\n',
        "over the 8.0 MB that travel with a Kubernetes",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_through_the_magic_say_one_sentence_and_create_nothing(
    case, apiserver, kubeconfig, tfk8s_home, tmp_path, monkeypatch
):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    flags, cell, expect = BAD_INPUTS[case]
    nb = make_notebook_folder(tmp_path / "nb")
    (tmp_path / "secret.csv").write_text("1,2\n")
    (nb / "self").symlink_to("self")
    (nb / "big.bin").write_bytes(b"\0" * 9_000_000)
    monkeypatch.chdir(nb)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    before = apiserver.objects()
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "tfk8s_jupyter")
        with pytest.raises(UsageError) as e:
            shell.run_cell_magic(
                "tfk8s_train", f"{flags}--workers 2 --backend kubernetes --name bad-{case}", cell
            )
    finally:
        InteractiveShell.clear_instance()
    message = str(e.value)
    assert expect in message, message
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0, message
    assert apiserver.objects() == before  # no API object
    assert not any(tfk8s_home.rglob("*.json")), "a job record was left behind"
