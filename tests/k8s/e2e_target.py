"""Where the Kubernetes end-to-end scenarios (tests/k8s/test_e2e_cluster.py) run: one scenario, two targets.

- ``InRepoTarget``: the in-repo test API server + test kubelet running the real runner (real TensorFlow) —
  what ``make test`` runs, so no scenario is untested here;
- ``ClusterTarget``: the cluster of ``TFK8S_E2E_KUBECONFIG`` (``make e2e-cluster KUBECONFIG=… [IMAGE=…]
  [NAMESPACE=…]``): the pods run ``TFK8S_E2E_IMAGE`` (default ``c.TFK8s.image``) in
  ``TFK8S_E2E_NAMESPACE`` (default: the kubeconfig context's namespace).

Both answer the same questions through the Kubernetes API with the official client, so a scenario never
knows which one it runs on: the objects a job left behind, a least-privilege kubeconfig (a ServiceAccount
bound to the Role of ``deploy/kubernetes/base/role.yaml``, with a token from the TokenRequest API).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import yaml
from apiserver import TEST_CLIENT_AGENT
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tfk8s_jupyter.backends.kubernetes import KubernetesBackend
from tfk8s_jupyter.backends.kubernetes.manifests import job_selector

ROOT = Path(__file__).resolve().parents[2]
ROLE_FILE = ROOT / "deploy/kubernetes/base/role.yaml"
ENV_KUBECONFIG = "TFK8S_E2E_KUBECONFIG"
ENV_IMAGE = "TFK8S_E2E_IMAGE"
ENV_NAMESPACE = "TFK8S_E2E_NAMESPACE"
ADMIN_TOKEN = "e2e-admin-token"  # the in-repo server's administrator (the scenarios' own setup and reads)


class Target:
    """A cluster the scenarios run on: a kubeconfig for the backend and an admin client for checks."""

    name = "?"
    kubeconfig: Path
    namespace: str
    image: str | None = None
    timeout = 300.0  # seconds a scenario waits for a job

    def __init__(self, admin_kubeconfig: Path):
        self.admin = k8s_config.new_client_from_config(config_file=str(admin_kubeconfig))
        self.admin.user_agent = TEST_CLIENT_AGENT  # the scenarios' own reads and setup, not the backend's
        self.core = k8s.CoreV1Api(self.admin)
        self.rbac = k8s.RbacAuthorizationV1Api(self.admin)

    def backend(self, kubeconfig: Path | None = None, root: Path | None = None) -> KubernetesBackend:
        return KubernetesBackend(config_file=str(kubeconfig or self.kubeconfig), root=root)

    @property
    def server(self) -> str:
        return self.admin.configuration.host

    def leftovers(self, job: str) -> list[str]:
        """The job's objects still on the cluster (ConfigMap, Services, Jobs, pods), as ``kind/name``."""
        batch = k8s.BatchV1Api(self.admin)
        sel = job_selector(job)
        found = [
            f"configmap/{o.metadata.name}"
            for o in self.core.list_namespaced_config_map(self.namespace, label_selector=sel).items
        ]
        found += [
            f"service/{o.metadata.name}"
            for o in self.core.list_namespaced_service(self.namespace, label_selector=sel).items
        ]
        found += [
            f"job/{o.metadata.name}"
            for o in batch.list_namespaced_job(self.namespace, label_selector=sel).items
        ]
        found += [
            f"pod/{o.metadata.name}"
            for o in self.core.list_namespaced_pod(self.namespace, label_selector=sel).items
        ]
        return found

    def wait_clean(self, job: str, timeout: float = 120.0) -> list[str]:
        """Wait until the garbage collector removed every object of ``job``; what is left after ``timeout``."""
        deadline = time.monotonic() + timeout
        left = self.leftovers(job)
        while left and time.monotonic() < deadline:
            time.sleep(1.0)
            left = self.leftovers(job)
        return left

    def least_privilege_kubeconfig(self, path: Path) -> tuple[Path, callable]:
        """A kubeconfig for a new ServiceAccount bound (RoleBinding) to a copy of the Role ``tfk8s-jobs``,
        authenticated by a token from the TokenRequest API; and the function that removes all three."""
        suffix = uuid.uuid4().hex[:6]
        sa, role_name = f"tfk8s-e2e-{suffix}", f"tfk8s-jobs-e2e-{suffix}"
        role = yaml.safe_load(ROLE_FILE.read_text())
        self.core.create_namespaced_service_account(self.namespace, {"metadata": {"name": sa}})
        self.rbac.create_namespaced_role(
            self.namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": role_name},
                "rules": role["rules"],
            },
        )
        self.rbac.create_namespaced_role_binding(
            self.namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": role_name},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": self.namespace}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
            },
        )
        token = self.core.create_namespaced_service_account_token(
            sa, self.namespace, {"spec": {"expirationSeconds": 3600}}
        ).status.token
        cfg = yaml.safe_load(self.admin_kubeconfig_text())
        current = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
        cfg["users"] = [{"name": sa, "user": {"token": token}}]
        cfg["contexts"] = [
            {"name": sa, "context": {"cluster": current["cluster"], "user": sa, "namespace": self.namespace}}
        ]
        cfg["current-context"] = sa
        path.write_text(yaml.safe_dump(cfg))

        def remove() -> None:
            self.rbac.delete_namespaced_role_binding(role_name, self.namespace)
            self.rbac.delete_namespaced_role(role_name, self.namespace)
            self.core.delete_namespaced_service_account(sa, self.namespace)

        return path, remove

    def admin_kubeconfig_text(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        self.admin.close()


class InRepoTarget(Target):
    """The in-repo test API server and test kubelet (real runner, real TensorFlow in the pods)."""

    timeout = 420.0

    def __init__(self, server, kubelet, tmp_path: Path):
        self.server_obj, self.kubelet = server, kubelet
        server.admin_tokens.add(ADMIN_TOKEN)
        self.kubeconfig = Path(os.environ.get("KUBECONFIG") or server.kubeconfig(tmp_path / "kubeconfig"))
        self._admin_path = tmp_path / "admin-kubeconfig"
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        cfg["users"] = [{"name": u["name"], "user": {"token": ADMIN_TOKEN}} for u in cfg["users"]]
        self._admin_path.write_text(yaml.safe_dump(cfg))
        self.namespace = "default"
        self.name = "in-repo test API server + test kubelet"
        super().__init__(self._admin_path)

    def admin_kubeconfig_text(self) -> str:
        return self._admin_path.read_text()


class ClusterTarget(Target):
    """The cluster a kubeconfig names (``make e2e-cluster``)."""

    def __init__(self, kubeconfig: Path, image: str | None = None, namespace: str | None = None):
        self.kubeconfig = kubeconfig
        cfg = yaml.safe_load(kubeconfig.read_text())
        current = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
        self.namespace = namespace or current.get("namespace") or "default"
        self.image = image or None
        super().__init__(kubeconfig)
        self.name = f"cluster {self.server} (context {cfg['current-context']}, namespace {self.namespace})"

    def admin_kubeconfig_text(self) -> str:
        return self.kubeconfig.read_text()
