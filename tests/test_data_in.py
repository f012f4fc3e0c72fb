"""Data in: the files a cell reads by relative path are found at submission and reach every replica.

Detection and its refusals (pure), the replica's work dir as the runner builds it (a real runner process
per case, no TensorFlow), the local backend's checks at submit, and end to end with real TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from data_in_helpers import DATA_CELL, folder_state, make_notebook_folder
from local_helpers import wait_for

import tfk8s_jupyter as tk
from tfk8s_jupyter.backends.base import TFK8sError
from tfk8s_jupyter.capture import CaptureError, capture
from tfk8s_jupyter.cell_inputs import find_inputs, read_inputs
from tfk8s_jupyter.payload import Payload

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def nb(tmp_path, monkeypatch) -> Path:
    """The notebook's folder, the submitting process's cwd, with the inputs of :data:`DATA_CELL`."""
    folder = make_notebook_folder(tmp_path / "nb")
    monkeypatch.chdir(folder)
    return folder


# -- detection -------------------------------------------------------------------------------------
def test_paths_in_the_cells_strings_are_its_inputs_with_sizes(nb):
    inputs = find_inputs([DATA_CELL], nb)
    assert sorted(inputs) == [
        "data/nested/arrays.npz",
        "images/img0.png",
        "images/img1.png",
        "images/img2.png",
        "images/img3.png",
        "images/img4.png",
        "images/img5.png",
        "train.csv",
    ]
    assert inputs["train.csv"] == (nb / "train.csv").stat().st_size
    # other strings of the cell ("mse", "w", a path it only writes) are not inputs; a folder is every file
    assert find_inputs(['x = np.load(f"data/{name}")', 'act = "relu"'], nb) == {
        "data/nested/arrays.npz": (nb / "data/nested/arrays.npz").stat().st_size
    }


def test_files_takes_binary_files_folders_and_globs(nb):
    inputs = find_inputs(["x = 1"], nb, ["data", "images/img[01].png"])
    assert sorted(inputs) == ["data/nested/arrays.npz", "images/img0.png", "images/img1.png"]
    # given --files, a folder named only in the cell is not taken whole (--files chooses from it)
    only = find_inputs(['root = "images"', 'table = "train.csv"'], nb, ["images/img2.png"])
    assert sorted(only) == ["images/img2.png", "train.csv"]


def test_kubernetes_capture_reads_the_bytes_and_local_capture_does_not(nb):
    cell = 'a = np.load("data/nested/arrays.npz")'
    k8s = capture(cell, backend="kubernetes", root=nb)
    assert k8s.payload.data == {"data/nested/arrays.npz": (nb / "data/nested/arrays.npz").read_bytes()}
    local = capture(cell, backend="local", root=nb)
    assert local.payload.data == {} and local.payload.inputs == k8s.payload.inputs
    listing = k8s.summary()
    assert "inputs:      1 file (travel with the job" in listing and "data/nested/arrays.npz (" in listing
    assert "read in place from the notebook's folder" in local.summary()


# -- bad input: one sentence each, nothing started ------------------------------------------------
def test_a_path_outside_the_notebooks_folder_is_refused(nb):
    (nb.parent / "secret.csv").write_text("1,2\n")
    with pytest.raises(CaptureError, match=r"'../secret.csv', which lies outside the notebook's folder"):
        find_inputs(['np.loadtxt("../secret.csv")'], nb)
    with pytest.raises(CaptureError, match=r"--files '../secret.csv' lies outside the notebook's folder"):
        find_inputs(["x = 1"], nb, ["../secret.csv"])
    # a string that names nothing outside is not a path: no refusal
    assert find_inputs(['p = "../nothing-here.csv"'], nb) == {}


def test_files_matching_nothing_is_refused(nb):
    with pytest.raises(CaptureError, match=r"--files 'missing/\*.csv' matches no file under .*; give a path"):
        find_inputs(["x = 1"], nb, ["missing/*.csv"])


def test_symlink_loops_are_refused(nb):
    (nb / "self").symlink_to("self")
    with pytest.raises(CaptureError, match="'self' is a symlink loop"):
        find_inputs(["x = 1"], nb, ["self"])
    with pytest.raises(CaptureError, match="'self' is a symlink loop"):
        find_inputs(['open("self")'], nb)
    (nb / "self").unlink()
    (nb / "data" / "up").symlink_to("..")
    with pytest.raises(CaptureError, match="leads into a symlink loop .*'data/up' points back"):
        find_inputs(['np.load("data/nested/arrays.npz"); d = "data"'], nb)


def test_inputs_over_the_shipping_limit_are_refused_naming_the_largest(nb):
    (nb / "big.bin").write_bytes(b"\0" * 9_000_000)
    with pytest.raises(CaptureError) as e:
        capture('blob = open("big.bin", "rb").read(); t = "train.csv"', backend="kubernetes", root=nb)
    msg = str(e.value)
    assert "over the 8.0 MB that travel with a Kubernetes job (largest: 'big.bin' (8.6 MB)" in msg
    assert "--files" in msg and "URI" in msg and msg.count(". ") == 0
    # locally nothing travels: no limit
    assert capture('blob = open("big.bin", "rb").read()', backend="local", root=nb).payload.inputs


def test_a_file_that_disappears_before_launch_is_refused_and_nothing_starts(nb, tfk8s_home):
    cap = capture('t = np.loadtxt("train.csv")', backend="local", root=nb)
    (nb / "train.csv").unlink()
    with pytest.raises(TFK8sError, match=r"the cell's input 'train.csv' disappeared from .* put it back"):
        tk.submit(cap.payload.code, workers=1, name="gone", payload=cap.payload)
    assert not any(tfk8s_home.rglob("*.json")), "a record was left behind"
    with pytest.raises(CaptureError, match="'train.csv' disappeared while the job was being prepared"):
        read_inputs({"train.csv": 10}, nb)


# -- the replica's work dir (the real runner's prepare_workdir, in a process of its own) -------------
def _run_replica(
    tmp_path: Path, payload: Payload, script: str, env: dict[str, str], before: str = "", timeout: float = 60
) -> subprocess.CompletedProcess:
    work = tmp_path / "work" / "worker-0"
    code = textwrap.dedent(
        f"""
        import json, os, sys, glob, types
        {before}
        sys.path.insert(0, {str(REPO)!r})
        from tfk8s_jupyter.payload import Payload
        from tfk8s_jupyter import runner
        renv = types.SimpleNamespace(workdir={str(work)!r}, job="j", name="worker-0")
        payload = Payload.from_json({payload.to_json()!r})
        runner.prepare_workdir(renv, payload)
        """
    ) + textwrap.dedent(script)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TFK8S_")}
    return subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=timeout
    )


def test_local_work_dir_presents_the_notebooks_folder_and_keeps_writes_its_own(nb, tmp_path):
    before = folder_state(nb)
    payload = Payload(code="", files={"helpers.py": "X = 1\n"}, inputs={"train.csv": 1})
    (nb / "helpers.py").write_text("X = 'the notebook folder version'\n")
    before = folder_state(nb)
    proc = _run_replica(
        tmp_path,
        payload,
        """
        print(json.dumps({
            "cwd": os.getcwd(),
            "csv": open("train.csv").read().count("\\n"),
            "npz": os.path.getsize("./data/nested/arrays.npz"),
            "glob": sorted(glob.glob("images/*.png")),
            "unrelated": open("unrelated.txt").read(),
        }))
        with open("train.csv", "w") as f:
            f.write("mine")
        with open("unrelated.txt", "a") as f:
            f.write("appended")
        with open("data/nested/new.txt", "w") as f:
            f.write("new")
        open("fresh.txt", "w").write("x")
        from pathlib import Path
        Path("images/img0.png").write_bytes(b"replaced")
        import helpers
        print(json.dumps({"train": open("train.csv").read(), "unrelated": open("unrelated.txt").read(),
                          "helpers": helpers.X}))
        """,
        {"TFK8S_INPUT_DIR": str(nb)},
    )
    assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(line) for line in proc.stdout.splitlines()[-2:])
    work = tmp_path / "work" / "worker-0"
    assert first["cwd"] == str(work)
    assert first["csv"] == 64 and first["npz"] > 0 and first["unrelated"] == "not read\n"
    assert first["glob"] == [f"images/img{i}.png" for i in range(6)]
    # the replica sees its own writes, and the payload's module over the folder's file of that name
    assert second == {"train": "mine", "unrelated": "not read\nappended", "helpers": 1}
    assert (work / "data" / "nested" / "new.txt").read_text() == "new"
    assert (work / "fresh.txt").read_text() == "x"
    # ... and the notebook's folder is exactly as it was
    assert folder_state(nb) == before


def test_a_folder_linked_whole_is_recreated_before_a_write_into_it(nb, tmp_path):
    (nb / ".cache" / "deep").mkdir(parents=True)
    (nb / ".cache" / "deep" / "vocab.txt").write_text("a b c")
    before = folder_state(nb)
    proc = _run_replica(
        tmp_path,
        Payload(code=""),
        """
        print(os.path.islink(".cache"), open(".cache/deep/vocab.txt").read())
        with open(".cache/deep/new.txt", "w") as f:
            f.write("mine")
        print(os.path.islink(".cache"), os.path.islink(".cache/deep"), open(".cache/deep/vocab.txt").read())
        """,
        {"TFK8S_INPUT_DIR": str(nb)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["True a b c", "False False a b c"]
    assert folder_state(nb) == before


# Every gate a native or library writer passes, each onto a presented file (or into a folder linked whole):
# name -> (the write, what the replica must then read there).
NATIVE_WRITES = {
    "train.csv": ('tf.io.write_file("train.csv", "by write_file")', b"by write_file"),
    "unrelated.txt": ('f = tf.io.gfile.GFile("unrelated.txt", "a"); f.write("+gfile"); f.close()', None),
    "images/img0.png": ('tf.io.gfile.copy("train.csv", "images/img0.png", overwrite=True)', b"by write_file"),
    "images/img1.png": ("traced_write()", b"traced"),
    "images/img2.png": (
        "fd = os.open('images/img2.png', os.O_WRONLY | os.O_TRUNC); os.write(fd, b'os.open'); os.close(fd)",
        b"os.open",
    ),
    "images/img3.png": ("os.truncate('images/img3.png', 3)", None),
    "images/img4.png": ("shutil.copy('train.csv', 'images/img4.png')", b"by write_file"),
    "images/img5.png": ("h5py.File('images/img5.png', 'w').close()", None),
    "data/nested/arrays.npz": ("np.savez('data/nested/arrays.npz', mine=np.arange(3))", None),
    ".cache/deep/vocab.txt": (
        'with tf.io.gfile.GFile(".cache/deep/vocab.txt", "w") as f: f.write("own vocab")',
        b"own vocab",
    ),
}


@pytest.mark.tf
def test_native_writers_through_a_presented_file_write_the_replicas_own(nb, tmp_path):
    (nb / ".cache" / "deep").mkdir(parents=True)  # a hidden folder: presented as one link
    (nb / ".cache" / "deep" / "vocab.txt").write_text("a b c")
    (nb / "old_ckpt").mkdir()
    (nb / "old_ckpt" / "keep.txt").write_text("the user's")
    before = folder_state(nb)
    script = "import shutil, h5py, numpy as np\n@tf.function\ndef traced_write():\n"
    script += "    tf.io.write_file('images/img1.png', 'traced')\n"
    for write, _ in NATIVE_WRITES.values():
        script += write + "\n"
    script += textwrap.dedent(
        f"""
        tf.io.gfile.makedirs(".cache/deep/made")
        tf.io.gfile.rmtree("old_ckpt")
        os.remove(".cache/deep/vocab.txt")
        with open(".cache/deep/vocab.txt", "w") as f:
            f.write("own vocab")
        saved = {{}}
        for name in {list(NATIVE_WRITES)!r}:
            with open(name, "rb") as f:
                saved[name] = f.read().hex()
        saved["npz"] = np.load("data/nested/arrays.npz")["mine"].tolist()
        saved["h5"] = open("images/img5.png", "rb").read()[:8].hex()
        saved["gone"] = os.path.exists("old_ckpt")
        print(json.dumps(saved))
        """
    )
    proc = _run_replica(
        tmp_path, Payload(code=""), script, {"TFK8S_INPUT_DIR": str(nb)}, "import tensorflow as tf", 180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.splitlines()[-1])
    # the notebook's folder is exactly as it was
    assert folder_state(nb) == before
    # and the replica sees what it wrote
    for name, (_, expect) in NATIVE_WRITES.items():
        if expect is not None:
            assert bytes.fromhex(seen[name]) == expect, name
    assert bytes.fromhex(seen["unrelated.txt"]) == b"not read\n+gfile"
    assert bytes.fromhex(seen["images/img3.png"]) == (nb / "images" / "img3.png").read_bytes()[:3]
    assert bytes.fromhex(seen["h5"]) == b"\x89HDF\r\n\x1a\n"
    assert seen["npz"] == [0, 1, 2] and seen["gone"] is False
    work = tmp_path / "work" / "worker-0"
    assert not any(p.is_symlink() for p in [work / n for n in NATIVE_WRITES]), "a write left a link"


def test_a_work_dir_inside_the_notebooks_folder_is_not_presented_in_itself(tmp_path):
    folder = tmp_path / "nb"  # its work/ folder holds the replica's work dir
    folder.mkdir()
    (folder / "train.csv").write_text("1,2\n")
    proc = _run_replica(
        folder, Payload(code=""), "print(sorted(os.listdir('.')))", {"TFK8S_INPUT_DIR": str(folder)}
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "['train.csv']"


def test_kubernetes_inputs_are_written_into_the_work_dir(tmp_path):
    payload = Payload(code="", data={"data/a.bin": b"\x00\x01", "b.csv": b"1,2\n"}, inputs={"data/a.bin": 2})
    part_dir = tmp_path / "mount-0"
    part_dir.mkdir()
    (part_dir / "f0").write_bytes(b"hel")
    (part_dir / "f1").write_bytes(b"lo")
    (part_dir / "index.json").write_text(
        json.dumps({"f0": ["text/greeting.txt", 0, 2], "f1": ["text/greeting.txt", 1, 2]})
    )
    proc = _run_replica(
        tmp_path,
        payload,
        """
        print(open("data/a.bin", "rb").read(), open("b.csv").read().strip(), open("text/greeting.txt").read())
        """,
        {"TFK8S_DATA_DIR_0": str(part_dir)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["b'\\x00\\x01'", "1,2", "hello"]


def test_a_missing_file_in_a_replica_says_where_it_runs_what_travelled_and_the_fix(nb, tmp_path):
    script = """
        import numpy as np
        try:
            np.loadtxt("nowhere.csv")
        except FileNotFoundError as e:
            print(runner.summarize_exception(e)[0])
        try:
            open("data/nowhere.txt")
        except FileNotFoundError as e:
            print(runner.summarize_exception(e)[0])
        # TensorFlow's errors, by the names and texts its file ops and list_files raise
        NotFoundError = type("NotFoundError", (Exception,), {})
        InvalidArgumentError = type("InvalidArgumentError", (Exception,), {})
        for exc in (
            NotFoundError("gone.csv; No such file or directory"),
            InvalidArgumentError("Expected 'tf.Tensor(False)' to be true. Summarized data: b'No files matched pattern: pics/*.png'"),
            NotFoundError("Resource localhost/var/N10tensorflow3VarE does not exist."),
        ):
            print(runner.summarize_exception(exc)[0])
        """
    local = _run_replica(tmp_path, Payload(code=""), script, {"TFK8S_INPUT_DIR": str(nb)})
    assert local.returncode == 0, local.stderr
    np_line, open_line, tf_line, pattern_line, other_line = local.stdout.splitlines()
    assert tf_line.startswith("NotFoundError: gone.csv; No such file or directory — worker-0 runs in ")
    assert "No files matched pattern: pics/*.png' — worker-0 runs in " in pattern_line
    assert other_line == "NotFoundError: Resource localhost/var/N10tensorflow3VarE does not exist."
    work = tmp_path / "work" / "worker-0"
    assert np_line.startswith("FileNotFoundError: nowhere.csv not found. — worker-0 runs in ")
    assert f"runs in {work}, which presents the notebook's folder {nb} as it was" in np_line
    assert "'data/nowhere.txt' is not there; put the file in the notebook's folder" in open_line

    absolute = _run_replica(
        tmp_path / "abs",
        Payload(code=""),
        "try:\n    open('/no/such/dir/x.csv')\nexcept FileNotFoundError as e:\n"
        "    print(runner.summarize_exception(e)[0])\n",
        {"TFK8S_INPUT_DIR": str(nb)},
    )
    assert "where '/no/such/dir/x.csv' does not exist; read it by a path relative to the notebook" in (
        absolute.stdout
    ), absolute.stderr

    shipped = Payload(code="", inputs={"train.csv": 5}, data={"train.csv": b"1,2\n"})
    pod = _run_replica(tmp_path / "pod", shipped, script, {})
    assert pod.returncode == 0, pod.stderr
    line = pod.stdout.splitlines()[0]
    assert "where only the input files found at submission arrived (train.csv)" in line
    assert "with --files so it travels with the job, or read it from a URI inside the cell" in line


@pytest.mark.tf
@pytest.mark.timeout(300)
@pytest.mark.parametrize("keras_module", ["keras", "tf_keras"])
def test_local_replicas_download_a_keras_dataset_once(tmp_path, keras_module):
    import http.server
    import threading

    blob = np.arange(1000, dtype="int64").tobytes()
    requests = []

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            time.sleep(1.0)  # a download long enough for the other replica to ask meanwhile
            self.send_response(200)
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cache = tmp_path / "keras-home"
    cache.mkdir()  # Keras falls back to /tmp/.keras for a cache dir that does not exist
    code = textwrap.dedent(
        f"""
        import sys, types
        sys.path.insert(0, {str(REPO)!r})
        import {keras_module} as keras
        from tfk8s_jupyter import runner
        from tfk8s_jupyter.payload import Payload
        runner.prepare_workdir(types.SimpleNamespace(workdir=sys.argv[1], job="j", name="w"), Payload(code=""))
        from {"keras.src.datasets" if keras_module == "keras" else "tf_keras.src.datasets"} import mnist
        path = mnist.get_file("blob.bin", origin="http://127.0.0.1:{server.server_port}/blob.bin",
                              cache_dir={str(cache)!r})
        print(open(path, "rb").read() == {blob!r})
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFK8S_")}
    env["TFK8S_INPUT_DIR"] = str(tmp_path)
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    outs = _two_replicas(code, env, tmp_path)
    server.shutdown()
    for rc, out, err in outs:
        assert rc == 0, err[-2000:]
        assert out.split()[-1] == "True"
    assert requests == ["/blob.bin"], "each replica downloaded the dataset itself"


def _two_replicas(code: str, env: dict, tmp_path) -> list[tuple[int, str, str]]:
    """Run ``code`` as two replica processes at once (work dirs ``work/w0``, ``work/w1``): their
    (exit code, stdout, stderr)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "work" / f"w{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]


TFDS_CELL = """
import sys, time, types
sys.path.insert(0, {repo!r})
import tensorflow as tf
from tfk8s_jupyter import runner
from tfk8s_jupyter.payload import Payload
runner.prepare_workdir(types.SimpleNamespace(workdir=sys.argv[1], job="j", name="w"), Payload(code=""))
import numpy as np
import tensorflow_datasets as tfds


class CountedSquares(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({{"x": np.int64, "y": np.int64}})
        )

    def _split_generators(self, dl_manager):
        with open({log!r}, "a") as f:  # a download and preparation happened
            f.write("prepared\\n")
        time.sleep(1.0)  # long enough for the other replica to ask meanwhile
        return {{"train": self._generate_examples()}}

    def _generate_examples(self):
        for i in range(10):
            yield i, {{"x": i, "y": i * i}}


ds = tfds.load("counted_squares", split="train")
print(sorted(int(e["y"]) for e in ds))
"""


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_local_replicas_prepare_a_tensorflow_datasets_dataset_once(tmp_path):
    log = tmp_path / "prepared.log"
    data_dir = tmp_path / "tfds"  # TFDS_DATA_DIR, as a user sets it (else ~/tensorflow_datasets)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFK8S_")}
    env.update(TFK8S_INPUT_DIR=str(tmp_path), TFDS_DATA_DIR=str(data_dir))
    code = TFDS_CELL.format(repo=str(REPO), log=str(log))
    outs = _two_replicas(code, env, tmp_path)
    for rc, out, err in outs:
        assert rc == 0, err[-3000:]
        assert out.splitlines()[-1] == str([i * i for i in range(10)])
    assert log.read_text().splitlines() == ["prepared"], "each replica prepared the dataset itself"
    assert any(data_dir.glob("counted_squares/1.0.0/*.tfrecord*"))


# -- end to end, real TensorFlow ------------------------------------------------------------------
@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_local_replicas_read_the_notebooks_files_by_relative_path(nb, tfk8s_home):
    before = folder_state(nb)
    cap = capture(DATA_CELL, backend="local", root=nb)
    job = tk.submit(DATA_CELL, workers=2, name="data-in", payload=cap.payload, setup_timeout=180)
    assert job.wait(timeout=400) == "succeeded", f"{job.status.message}\n{job.logs('worker-0')[-3000:]}"
    for replica in ("worker-0", "worker-1"):
        log = job.logs(replica)
        assert "inputs: (64, 5) 2.0 [0, 40, 80, 120, 160, 200] 6" in log, log[-2000:]
        work = tfk8s_home / "data-in" / "work" / replica
        assert f"replica cwd: {work}" in log
        assert (work / "written-by-replica.txt").read_text() == "mine"
        assert (work / "train.csv").read_text() == "overwritten by the replica"
        assert (work / "data" / "nested" / "out.npy").is_file()
    # nothing the replicas wrote reached the notebook's folder
    assert folder_state(nb) == before


@pytest.mark.tf
@pytest.mark.timeout(600)
def test_tf_local_missing_file_error_names_where_the_replica_runs(nb, tfk8s_home):
    cell = 'import numpy as np\nimport tensorflow as tf\nx = np.loadtxt("not-there.csv", delimiter=",")\n'
    job = tk.submit(
        cell, workers=1, name="data-missing", payload=capture(cell, root=nb).payload, setup_timeout=180
    )
    assert job.wait(timeout=300) == "failed"
    error = next(e for e in job.events() if e["type"] == "error")
    assert "FileNotFoundError: not-there.csv not found." in error["message"]
    assert f"presents the notebook's folder {nb}" in error["message"]
    wait_for(lambda: job.status.done, 10, "the job to end")
