"""Fixtures for tests/deploy: the two binaries, their metric lists, and a running sidecar.

The binaries are $RMQ_SIDECAR_BIN / $RMQ_INJECTOR_BIN, else target/debug/rmq-sidecar and
target/debug/rmq-injector after `cargo build --locked` (cargo rebuilds only what changed). Nothing here needs a RocketMQ cluster: the sidecar
is pointed at an old name server that does not exist (127.0.0.1:1) and a new cluster that is
a fake answering SUCCESS (deploy_support.FakeRocketMQ, so switches to new pass the sidecar's
`target_reachable` gate), and serves its admin and health ports anyway (GET /ready is then 503).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy_support import REPO, Family, SidecarProcess


def built_binary(name: str, env_var: str) -> Path:
    """$env_var, else target/debug/NAME after `cargo build --locked --bin NAME`."""
    env_bin = os.environ.get(env_var)
    if env_bin:
        path = Path(env_bin)
        if not path.is_file():
            pytest.fail(f"{env_var}={env_bin} does not exist")
        return path
    path = REPO / "target" / "debug" / name
    cargo = shutil.which("cargo")
    if cargo:
        r = subprocess.run([cargo, "build", "--locked", "--bin", name], cwd=REPO,
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            pytest.fail(f"cargo build failed:\n{r.stderr[-4000:]}")
    if not path.is_file():
        pytest.fail(f"{path} does not exist (cargo build, or set {env_var})")
    return path


@pytest.fixture(scope="session")
def sidecar_bin() -> Path:
    """The data plane: `rmq-sidecar`."""
    return built_binary("rmq-sidecar", "RMQ_SIDECAR_BIN")


@pytest.fixture(scope="session")
def injector_bin() -> Path:
    """The injector: `rmq-injector` (webhook, offline inject)."""
    return built_binary("rmq-injector", "RMQ_INJECTOR_BIN")


def list_metrics(binary: Path) -> dict[str, Family]:
    r = subprocess.run([str(binary), "list-metrics"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{binary.name} list-metrics exited {r.returncode}: {r.stderr}"
    out: dict[str, Family] = {}
    for line in r.stdout.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        assert len(parts) == 4, f"list-metrics line is not name<TAB>type<TAB>labels<TAB>help: {line!r}"
        name, kind, labels, help_text = parts
        out[name] = Family(name, kind, tuple(x for x in labels.split(",") if x), help_text)
    assert out, f"{binary.name} list-metrics printed nothing"
    return out


@pytest.fixture(scope="session")
def sidecar_families(sidecar_bin: Path) -> dict[str, Family]:
    """`rmq-sidecar list-metrics`: what one sidecar's /metrics declares."""
    return list_metrics(sidecar_bin)


@pytest.fixture(scope="session")
def families(sidecar_families: dict[str, Family], injector_bin: Path) -> dict[str, Family]:
    """Both binaries' `list-metrics`: name -> Family. The source of truth for the metric names
    the dashboard and the alert rules may use."""
    injector = list_metrics(injector_bin)
    both = set(sidecar_families) & set(injector)
    assert not both, f"families declared by both binaries: {sorted(both)}"
    return {**sidecar_families, **injector}


@pytest.fixture(scope="module")
def sidecar(sidecar_bin: Path, tmp_path_factory) -> SidecarProcess:
    sc = SidecarProcess(sidecar_bin, tmp_path_factory.mktemp("sidecar")).start()
    yield sc
    sc.stop()
