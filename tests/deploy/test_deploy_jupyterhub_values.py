"""The Zero to JupyterHub values: merged over the chart's defaults as Helm does and validated against the
chart's own values schema (4.4.0, offline), and consistent with the cluster manifests and the package."""

from __future__ import annotations

import json
from pathlib import Path

import jupyter_core.paths
import pytest
import tomllib
from deploytools import (
    DEPLOY,
    OVERLAYS,
    ROOT,
    find_object,
    helm_merge,
    load_yaml,
    render_overlay,
    values_errors,
)
from ipykernel.kernelapp import IPKernelApp
from IPython.core.application import SYSTEM_CONFIG_DIRS as IPYTHON_SYSTEM_CONFIG_DIRS
from jupyter_server.serverapp import ServerApp

import tfk8s_jupyter
from tfk8s_jupyter.config import TFK8s

VALUES = DEPLOY / "jupyterhub" / "values.yaml"
PER_USER = DEPLOY / "jupyterhub" / "values-per-user-namespace.yaml"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def tfk8s_defaults(values: dict) -> dict[str, dict]:
    """The c.TFK8s defaults each extra file gives, by mount path."""
    files = values["singleuser"]["extraFiles"]
    return {f["mountPath"]: f["data"]["TFK8s"] for f in files.values() if "TFK8s" in (f.get("data") or {})}


@pytest.mark.parametrize(
    "files", [[VALUES], [VALUES, PER_USER]], ids=["shared-namespace", "per-user-namespace"]
)
def test_values_pass_the_chart_schema(files):
    assert values_errors(*files) == []


def test_unknown_key_fails_naming_it(tmp_path):
    bad = tmp_path / "values.yaml"
    bad.write_text(VALUES.read_text().replace("  serviceAccountName:", "  serviceAcountName:"))
    errors = values_errors(bad)
    assert any(e.startswith("singleuser:") and "serviceAcountName" in e for e in errors), errors


def test_wrong_type_fails_naming_the_path(tmp_path):
    bad = tmp_path / "values.yaml"
    bad.write_text(VALUES.read_text().replace('tag: "0.1.0"', "tag: [0, 1]"))
    errors = values_errors(bad)
    assert any(e.startswith("singleuser.image.tag:") for e in errors), errors


def test_server_and_kernels_load_the_same_defaults_and_only_real_options(tmp_path, monkeypatch):
    """The files land where the Jupyter server and IPython kernels read their config, under the names they
    load (general config is never read from jupyter_server_config.d/), and hold only real c.TFK8s options."""
    defaults = tfk8s_defaults(load_yaml(VALUES))
    by_dir = {str(Path(p).parent): Path(p).name for p in defaults}
    assert by_dir == {"/etc/jupyter": "jupyter_server_config.json", "/etc/ipython": "ipython_config.json"}
    assert "/etc/jupyter" in jupyter_core.paths.SYSTEM_CONFIG_PATH
    assert "/etc/ipython" in IPYTHON_SYSTEM_CONFIG_DIRS
    server, kernel = (defaults[f"{d}/{n}"] for d, n in sorted(by_dir.items()))
    assert server == kernel
    known = set(TFK8s.class_trait_names(config=True))
    assert set(server) <= known, f"unknown c.TFK8s options: {sorted(set(server) - known)}"

    files = load_yaml(VALUES)["singleuser"]["extraFiles"].values()
    for f in files:
        (tmp_path / Path(f["mountPath"]).name).write_text(json.dumps(f["data"]))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path))
    server_app = ServerApp()
    server_app.load_config_file()
    kernel_app = IPKernelApp()
    kernel_app.config_file_paths = [str(tmp_path)]
    kernel_app.load_config_file()
    for app in (server_app, kernel_app):
        cfg = TFK8s(config=app.config)  # traitlets checks every value's type
        assert (cfg.backend, cfg.namespace, cfg.image) == ("kubernetes", server["namespace"], server["image"])
    # Kernels load the magics themselves (no %load_ext in every notebook).
    assert kernel_app.config.InteractiveShellApp.extensions == ["tfk8s_jupyter"]
    assert callable(tfk8s_jupyter.load_ipython_extension)


def test_values_match_the_cluster_manifests_and_the_images():
    values = load_yaml(VALUES)
    shared = render_overlay(OVERLAYS / "shared-namespace")
    sa = find_object(shared, "ServiceAccount")
    role = find_object(shared, "Role", "tfk8s-jobs")
    assert values["singleuser"]["serviceAccountName"] == sa["metadata"]["name"]
    defaults = next(iter(tfk8s_defaults(values).values()))
    assert defaults["namespace"] == role["metadata"]["namespace"]
    assert values["singleuser"]["image"]["tag"] == VERSION
    assert defaults["image"].endswith(f":{VERSION}")
    assert defaults["image"].split(":")[0].endswith("/trainer")


def test_per_user_mode_drops_the_fixed_namespace_and_prepares_each_namespace():
    merged = helm_merge(load_yaml(VALUES), load_yaml(PER_USER))
    for defaults in tfk8s_defaults(merged).values():
        assert "namespace" not in defaults  # jobs go to the server's own namespace
        assert defaults["backend"] == "kubernetes"
    hook = merged["hub"]["extraConfig"]["tfk8s-user-namespaces"]
    compile(hook, "tfk8s-user-namespaces", "exec")
    assert "enable_user_namespaces = True" in hook
    per_user = render_overlay(OVERLAYS / "per-user-namespace")
    find_object(per_user, "ClusterRole", "tfk8s-jobs")
    assert '"name": "tfk8s-jobs"' in hook and '"kind": "ClusterRole"' in hook
    assert f'"name": "{merged["singleuser"]["serviceAccountName"]}"' in hook


def test_the_api_server_is_reachable_through_the_chart_network_policy():
    egress = load_yaml(VALUES)["singleuser"]["networkPolicy"]["egress"]
    ports = {p["port"] for rule in egress for p in rule.get("ports", [])}
    assert {443, 6443} <= ports
    json.dumps(egress)  # plain data, no YAML-only types
