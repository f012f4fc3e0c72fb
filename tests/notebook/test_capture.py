"""The notebook's context travels with the cell: capture on a real InteractiveShell, replayed like a replica."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from notebook_helpers import run, run_payload

from tfk8s_jupyter.capture import CaptureError, capture, check_cell
from tfk8s_jupyter.cell_names import free_names


def test_functions_classes_constants_and_nested_helpers_travel(shell, tmp_path):
    run(shell, "import math\nfrom collections import OrderedDict as OD")
    run(shell, "LR = 0.01\nSHAPE = (4, 8)\nLAYERS = {'hidden': [16, 8]}")
    run(
        shell,
        """
        def scale(n):
            return n * LR * 100

        def helper(n):
            return round(scale(n) + math.sqrt(16), 4)

        def build_model(lr):
            return Net(helper(SHAPE[0]), lr, LAYERS["hidden"])
        """,
    )
    run(
        shell,
        """
        class Base:
            kind = "base"

        class Net(Base):
            def __init__(self, a, lr, hidden):
                self.a, self.lr, self.hidden = a, lr, hidden

            def describe(self):
                return f"{self.kind} a={self.a} lr={self.lr} hidden={self.hidden} od={type(OD()).__name__}"
        """,
    )
    code = "model = build_model(LR)\nprint(model.describe())\n"
    cap = capture(code, shell)
    assert set(cap.definitions) == {"scale", "helper", "build_model", "Base", "Net"}
    assert set(cap.constants) == {"LR", "SHAPE", "LAYERS"}
    assert set(cap.imports) == {"math", "OD"}
    assert "from collections import OrderedDict as OD" in cap.payload.prelude
    # a class is shipped before its subclass
    assert cap.payload.prelude.index("class Base") < cap.payload.prelude.index("class Net(Base)")
    out = run_payload(cap.payload, tmp_path)
    assert out.strip() == "base a=8.0 lr=0.01 hidden=[16, 8] od=OrderedDict"


def test_small_values_are_pickled_and_instances_of_notebook_classes_work(shell, tmp_path):
    run(shell, "import numpy as np\nclass Config:\n    def __init__(self, n):\n        self.n = n")
    run(shell, "WEIGHTS = np.arange(6, dtype='float32').reshape(2, 3)\ncfg = Config(5)")
    cap = capture("print(float(WEIGHTS.sum()) * cfg.n)", shell)
    assert set(cap.values) == {"WEIGHTS", "cfg"}
    assert "Config" in cap.definitions
    assert pickle.loads(cap.payload.values["WEIGHTS"]).shape == (2, 3)
    assert run_payload(cap.payload, tmp_path).strip() == "75.0"


def test_local_module_and_its_local_imports_travel_as_files(shell, notebook_dir, tmp_path):
    (notebook_dir / "nbhelpers.py").write_text(
        "import nbconst\n\ndef double(x):\n    return 2 * x * nbconst.K\n"
    )
    (notebook_dir / "nbconst.py").write_text("K = 3\n")
    pkg = notebook_dir / "nbpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .core import triple\n")
    (pkg / "core.py").write_text("def triple(x):\n    return 3 * x\n")
    run(shell, "import nbhelpers\nfrom nbpkg import triple")
    cap = capture("import nbconst\nprint(nbhelpers.double(5), triple(2), nbconst.K)", shell)
    assert set(cap.payload.files) == {"nbhelpers.py", "nbconst.py", "nbpkg/__init__.py", "nbpkg/core.py"}
    # installed packages are imported on the replica, never shipped
    run(shell, "import json")
    assert "json.py" not in capture("json.dumps(1)", shell).payload.files
    assert run_payload(cap.payload, tmp_path).strip() == "30 6 3"


def test_cell_names_it_binds_itself_are_not_shipped(shell):
    run(shell, "model = object()\nepochs = 3")
    cap = capture("model = 1\nfor epochs in range(2):\n    pass\nprint(model)", shell)
    assert cap.payload.prelude == "" and cap.payload.values == {}
    # but a name read before the cell rebinds it is shipped
    cap = capture("epochs = epochs + 1", shell)
    assert cap.constants == ["epochs"]


def test_lambda_by_source_and_aliases(shell, tmp_path):
    run(shell, "OFFSET = 10\nshift = lambda x: x + OFFSET\ndef base(x):\n    return x * 2\nalias = base")
    cap = capture("print(shift(1), alias(4))", shell)
    assert "shift = lambda x: x + OFFSET" in cap.payload.prelude
    assert run_payload(cap.payload, tmp_path).strip() == "11 8"


def test_extra_files(shell, notebook_dir, tmp_path):
    (notebook_dir / "conf").mkdir()
    (notebook_dir / "conf" / "a.yaml").write_text("lr: 0.1\n")
    (notebook_dir / "labels.txt").write_text("cat\ndog\n")
    (notebook_dir / "blob.bin").write_bytes(bytes(range(256)))
    cap = capture(
        "x = 1",
        shell,
        files=["labels.txt", "conf/*.yaml", "blob.bin"],
        backend="kubernetes",
    )
    # --files takes any kind of file: they are the cell's inputs, and travel to Kubernetes as bytes
    assert cap.payload.inputs == {"blob.bin": 256, "conf/a.yaml": 8, "labels.txt": 8}
    assert cap.payload.data["blob.bin"] == bytes(range(256))
    assert cap.payload.files == {}
    with pytest.raises(CaptureError, match="matches no file"):
        capture("x = 1", shell, files=["missing.csv"])


@pytest.mark.parametrize(
    ("setup", "cell", "expected"),
    [
        (
            "fh = open(__file__ if '__file__' in dir() else 'x.txt', 'w')",
            "fh.write('x')",
            "'fh', an open file",
        ),
        ("import socket\nsock = socket.socket()", "sock.close()", "'sock', a socket"),
        (
            "fh = open('y.txt', 'w')\nread = lambda: fh.write('y')",
            "read()",
            "'read', which uses 'fh', an open file",
        ),
        (
            "class DBSession:\n    def __reduce__(self):\n        raise TypeError('cannot pickle a live session')\n"
            "session = DBSession()",
            "session.query()",
            "'session', a live session",
        ),
        (
            "def outer():\n    k = 2\n    def inner(x):\n        return x * k\n    return inner\nf = outer()",
            "f(1)",
            "closure",
        ),
    ],
)
def test_unshippable_names_are_named(shell, setup, cell, expected):
    run(shell, setup)
    with pytest.raises(CaptureError) as e:
        capture(cell, shell)
    assert expected in str(e.value)
    assert "inside the training cell" in str(e.value)


def test_oversized_context_tells_the_user_to_load_data_in_the_cell(shell):
    run(shell, "import numpy as np\nDATA = np.zeros((1000, 1000))")
    with pytest.raises(CaptureError) as e:
        capture("print(DATA.shape)", shell, max_bytes=1_000_000)
    msg = str(e.value)
    assert "'DATA' (7.6 MB)" in msg and "load the data inside the training cell" in msg
    assert "max_payload_bytes" in msg


@pytest.mark.parametrize(
    ("cell", "what"),
    [
        ("import os\n!ls -l\nx = 1", "line 2 of the training cell is a shell escape"),
        ("files = !ls\n", "line 1 of the training cell is a shell escape"),
        ("%time x = 1", "line 1 of the training cell is an IPython magic"),
        ("x = 1\n  %matplotlib inline", "line 2 of the training cell is an IPython magic"),
        ("%%time\nx = 1", "line 1 of the training cell is an IPython magic"),
    ],
)
def test_magics_and_shell_escapes_in_the_cell_are_an_error(cell, what):
    with pytest.raises(CaptureError, match=what):
        check_cell(cell)


def test_python_that_looks_like_an_escape_is_fine():
    check_cell("a = 7 % 3\nb = a != 1\ns = '''\n!not an escape\n%nor a magic\n'''\n")


def test_free_names():
    names, imports = free_names(
        "import os\nfrom a.b import c\nx = f(y)\ndef g(p=DEFAULT):\n    return p + z\nclass K(Base):\n    pass\n"
    )
    assert names == {"f", "y", "DEFAULT", "z", "Base"}
    assert ("os", 0) in imports and ("a.b", 0) in imports


def test_installed_packages_are_never_shipped_even_inside_the_notebook_dir(shell, notebook_dir, monkeypatch):
    site = notebook_dir / ".venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (site / "vendored_lib.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(site))
    run(shell, "import vendored_lib")
    assert capture("print(vendored_lib.X)", shell).payload.files == {}
    # the project's own package, installed in editable mode from the notebook's directory
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    run(shell, "import tfk8s_jupyter")
    cap = capture("import tensorflow\nprint(tfk8s_jupyter.__version__)", shell, root=repo)
    assert cap.payload.files == {} and cap.imports == ["tfk8s_jupyter"]


def test_decorated_notebook_functions_travel_with_their_decorators(shell, tmp_path):
    run(
        shell,
        """
        import functools

        def logged(fn):
            @functools.wraps(fn)
            def wrapper(*args):
                return f"{fn.__name__}{args} = {fn(*args)}"
            return wrapper

        @logged
        def area(w, h):
            return w * h
        """,
    )
    cap = capture("print(area(3, 4))", shell)
    assert "@logged\ndef area(w, h):" in cap.payload.prelude and "logged" in cap.definitions
    assert run_payload(cap.payload, tmp_path).strip() == "area(3, 4) = 12"


@pytest.mark.tf
def test_tensorflow_objects_built_in_the_kernel_are_refused_by_name(shell):
    run(shell, "import tensorflow as tf\nds = tf.data.Dataset.range(8).batch(2)\nEPOCHS = 2")
    with pytest.raises(CaptureError) as e:
        capture("model.fit(ds, epochs=EPOCHS)", shell)
    message = str(e.value)
    assert message.startswith("the cell uses 'ds', a TensorFlow/Keras object (tensorflow.")
    assert "build it inside the training cell, or in a function the cell calls." in message
    # the module itself travels as its import
    cap = capture("ds2 = tf.data.Dataset.range(EPOCHS)", shell)
    assert cap.payload.prelude.startswith("import tensorflow as tf\n")


def test_an_imported_name_rebound_later_travels_as_its_value(shell, tmp_path):
    run(shell, "from math import pi\nfrom collections import Counter\nfrom os.path import join")
    run(shell, "pi = 3\nCounter = {'a': 1}")
    cap = capture("print(pi, Counter, join('a', 'b'))", shell)
    assert "pi = 3" in cap.payload.prelude and "Counter = {'a': 1}" in cap.payload.prelude
    assert "from math import pi" not in cap.payload.prelude
    assert "from os.path import join" in cap.payload.prelude
    assert run_payload(cap.payload, tmp_path).strip() == "3 {'a': 1} a/b"


def test_inputs_named_in_the_shipped_context_are_found(shell, notebook_dir):
    (notebook_dir / "data").mkdir()
    (notebook_dir / "data" / "train.npz").write_bytes(b"\x93NUMPY binary")
    (notebook_dir / "labels.csv").write_text("a,b\n")
    run(shell, 'DATA = "data/train.npz"\ndef labels():\n    return open("labels.csv").read()')
    cap = capture("x = np_load(DATA); y = labels()", shell, backend="kubernetes")
    assert cap.payload.inputs == {"data/train.npz": 13, "labels.csv": 4}
    assert cap.payload.data["data/train.npz"] == b"\x93NUMPY binary"
    assert "inputs:      2 files (travel with the job, 17 B of 8.0 MB)" in cap.summary()


def test_a_path_object_from_the_notebook_is_an_input(shell, notebook_dir):
    (notebook_dir / "images").mkdir()
    (notebook_dir / "images" / "a.png").write_bytes(b"\x89PNG")
    run(shell, "from pathlib import Path\nIMAGES = Path('images')")
    run(shell, "IMAGES_AGAIN = IMAGES")  # defined in another cell: travels pickled, not as source
    cap = capture("files = sorted(IMAGES_AGAIN.glob('*.png'))", shell)
    assert cap.payload.inputs == {"images/a.png": 4}


def test_dry_run_lists_the_inputs_and_their_sizes(shell, notebook_dir, capsys):
    (notebook_dir / "data" / "nested").mkdir(parents=True)
    (notebook_dir / "data" / "nested" / "a.npz").write_bytes(b"\0" * 2048)
    (notebook_dir / "train.csv").write_text("1,2\n" * 10)
    shell.run_cell_magic(
        "tfk8s_train",
        "--dry-run --workers 2",
        'import numpy as np\nt = np.loadtxt("train.csv")\nz = np.load("./data/nested/a.npz")\n',
    )
    out = capsys.readouterr().out
    assert "#   inputs:      2 files (2.0 KB, read in place from the notebook's folder)" in out
    assert "#     data/nested/a.npz (2.0 KB)\n#     train.csv (40 B)" in out
    assert not list(notebook_dir.parent.rglob("status.json")), "a dry run started something"
