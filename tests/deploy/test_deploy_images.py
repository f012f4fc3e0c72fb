"""The Dockerfiles, read as text (no Docker engine here): every version pinned and within pyproject.toml's
requirements, the notebook image complete and non-root, the trainer image non-root with the uid the
generated pods run as."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from deploytools import DEPLOY, ROOT, Z2JH_DEFAULTS, load_yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tfk8s_jupyter.backends.kubernetes import render_manifests
from tfk8s_jupyter.config import TFK8s
from tfk8s_jupyter.spec import make_spec

NOTEBOOK = DEPLOY / "docker" / "notebook" / "Dockerfile"
TRAINER = DEPLOY / "docker" / "trainer" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def pip_pins(path: Path) -> dict[str, Requirement]:
    """Every requirement given to ``pip install`` in a Dockerfile (local wheel files excluded)."""
    pins: dict[str, Requirement] = {}
    for word, args in instructions(path):
        if word != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            tokens = command.split()
            if tokens[:2] != ["pip", "install"]:
                continue
            for token in tokens[2:]:
                if token.startswith("-") or token.endswith(".whl"):
                    continue
                req = Requirement(token)
                pins[canonicalize_name(req.name)] = req
    return pins


def project_requirements() -> dict[str, Requirement]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        reqs += extra
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in reqs}


def exact(req: Requirement) -> Version:
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, (
        f"{req} in a Dockerfile is not pinned to one exact version; write {req.name}==X.Y.Z"
    )
    return Version(specs[0].version)


def final_user(path: Path) -> str:
    users = [args for word, args in instructions(path) if word == "USER"]
    assert users, f"{path} has no USER instruction, so the image runs as root"
    args = {
        m.group(1): m.group(2)
        for word, a in instructions(path)
        if word == "ARG"
        for m in [re.match(r"(\w+)=(\S+)", a)]
        if m
    }
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), users[-1])


@pytest.mark.parametrize("dockerfile", [NOTEBOOK, TRAINER], ids=["notebook", "trainer"])
def test_every_pin_is_exact_and_allowed_by_pyproject(dockerfile):
    pins = pip_pins(dockerfile)
    assert pins, f"{dockerfile} installs nothing with pip"
    wanted = project_requirements()
    for name, req in pins.items():
        version = exact(req)
        if name in wanted:
            assert wanted[name].specifier.contains(version, prereleases=True), (
                f"{dockerfile.relative_to(ROOT)} pins {req}, outside pyproject.toml's {wanted[name]}"
            )


@pytest.mark.parametrize("dockerfile", [NOTEBOOK, TRAINER], ids=["notebook", "trainer"])
def test_base_image_is_pinned(dockerfile):
    bases = [args.split()[0] for word, args in instructions(dockerfile) if word == "FROM"]
    assert bases
    for base in bases:
        name, _, tag = base.partition(":")
        assert tag and tag != "latest" and re.match(r"\d+\.\d+\.\d+", tag), f"{base} is not pinned"


def test_notebook_image_installs_every_runtime_dependency_and_tensorflow():
    pins = pip_pins(NOTEBOOK)
    runtime = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    runtime += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["tensorflow"]]
    missing = [str(r) for r in runtime if canonicalize_name(r.name) not in pins]
    assert not missing, f"the notebook image leaves these to pip's resolver, unpinned: {missing}"
    for extra in ("jupyterlab", "jupyterhub", "ipykernel"):
        assert extra in pins, f"the notebook image does not pin {extra}"
    wheel = re.findall(r"tfk8s_jupyter-([^-]+)-py3-none-any\.whl", NOTEBOOK.read_text())
    assert wheel and set(wheel) == {VERSION}, (
        f"the notebook image installs tfk8s-jupyter {wheel}, not {VERSION}"
    )


def test_both_images_share_python_and_tensorflow():
    """Values shipped with a cell are pickled in the notebook and unpickled in the replicas."""
    nb, tr = pip_pins(NOTEBOOK), pip_pins(TRAINER)
    for name in ("tensorflow", "tf-keras"):
        assert exact(nb[name]) == exact(tr[name]), f"{name} differs between the images"
    assert exact(tr["tensorflow"]).release[:2] == exact(tr["tf-keras"]).release[:2]

    def base(path):
        return [a.split()[0] for w, a in instructions(path) if w == "FROM"][-1]

    assert base(NOTEBOOK) == base(TRAINER)


def test_notebook_image_runs_as_the_chart_user_not_root():
    user = final_user(NOTEBOOK)
    uid, _, gid = user.partition(":")
    assert uid not in ("0", "root") and uid == str(load_yaml(Z2JH_DEFAULTS)["singleuser"]["uid"])
    assert gid == "100"  # the chart's fsGid: the home volume stays writable


def test_trainer_image_runs_as_the_uid_of_the_generated_pods():
    uid = final_user(TRAINER).partition(":")[0]
    assert uid not in ("0", "root")
    spec = make_spec("print(1)", backend="kubernetes", workers=2, name="uidcheck", owner="alice")
    job = next(o for o in render_manifests(spec) if o["kind"] == "Job")
    assert str(job["spec"]["template"]["spec"]["securityContext"]["runAsUser"]) == uid


def test_default_trainer_image_is_this_release():
    assert TFK8s().image.endswith(f"/trainer:{VERSION}")
    assert f"tfk8s/trainer:{VERSION}" in TRAINER.read_text()
    assert f"tfk8s/notebook:{VERSION}" in NOTEBOOK.read_text()
