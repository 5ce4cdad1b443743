"""The workspace's shape: the sidecar (every pod's data plane) links no TLS, YAML or
Kubernetes crate; those live in the injector only; both build from one version."""

from __future__ import annotations

import subprocess
import tomllib

from deploy_support import REPO

#: What the injector needs and a sidecar must not carry (a CVE in one of them would mean
#: restarting every pod of the fleet).
CONTROL_PLANE_CRATES = {"rustls", "ring", "tokio-rustls", "rustls-webpki", "rustls-pki-types",
                        "serde_yaml_ng", "unsafe-libyaml", "kube", "k8s-openapi", "openssl"}


def linked_crates(package: str) -> set[str]:
    r = subprocess.run(["cargo", "tree", "-e", "normal", "--prefix", "none", "--locked", "-p", package],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return {line.split()[0] for line in r.stdout.splitlines() if line.strip()}


def test_the_sidecar_links_no_tls_yaml_or_kubernetes_crate():
    sidecar = linked_crates("rocketmq-sidecar")
    assert "rmq-common" in sidecar
    assert not sidecar & CONTROL_PLANE_CRATES, sorted(sidecar & CONTROL_PLANE_CRATES)
    assert "rmq-injector" not in sidecar


def test_the_injector_has_them_and_not_the_data_plane():
    injector = linked_crates("rmq-injector")
    assert {"rustls", "serde_yaml_ng"} <= injector, "the checker would pass on an empty tree"
    assert "rocketmq-sidecar" not in injector, "the injector must not link the data plane"


def test_one_version_for_every_crate():
    root = tomllib.loads((REPO / "Cargo.toml").read_text())
    assert root["package"]["version"] == {"workspace": True}
    for member in root["workspace"]["members"]:
        if member == ".":
            continue
        package = tomllib.loads((REPO / member / "Cargo.toml").read_text())["package"]
        assert package["version"] == {"workspace": True}, f"{member} has its own version"
