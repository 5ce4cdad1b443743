"""Fixtures for tests/deploy: the sidecar binary, its metric list, and a running sidecar.

The binary is $RMQ_SIDECAR_BIN, else target/debug/rmq-sidecar after `cargo build --locked`
(cargo rebuilds only when src/ changed). Nothing here needs a RocketMQ cluster: the sidecar
is pointed at name servers that do not exist (127.0.0.1:1 and :2) and serves its admin and
health ports anyway (GET /ready is then 503).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy_support import REPO, Family, SidecarProcess


@pytest.fixture(scope="session")
def sidecar_bin() -> Path:
    env_bin = os.environ.get("RMQ_SIDECAR_BIN")
    if env_bin:
        path = Path(env_bin)
        if not path.is_file():
            pytest.fail(f"RMQ_SIDECAR_BIN={env_bin} does not exist")
        return path
    path = REPO / "target" / "debug" / "rmq-sidecar"
    cargo = shutil.which("cargo")
    if cargo:
        r = subprocess.run([cargo, "build", "--locked", "--bin", "rmq-sidecar"], cwd=REPO,
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            pytest.fail(f"cargo build failed:\n{r.stderr[-4000:]}")
    if not path.is_file():
        pytest.fail(f"{path} does not exist (cargo build, or set RMQ_SIDECAR_BIN)")
    return path


@pytest.fixture(scope="session")
def families(sidecar_bin: Path) -> dict[str, Family]:
    """`rmq-sidecar list-metrics`: name -> Family. The source of truth for metric names."""
    r = subprocess.run([str(sidecar_bin), "list-metrics"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"list-metrics exited {r.returncode}: {r.stderr}"
    out: dict[str, Family] = {}
    for line in r.stdout.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        assert len(parts) == 4, f"list-metrics line is not name<TAB>type<TAB>labels<TAB>help: {line!r}"
        name, kind, labels, help_text = parts
        out[name] = Family(name, kind, tuple(x for x in labels.split(",") if x), help_text)
    assert out, "list-metrics printed nothing"
    return out


@pytest.fixture(scope="module")
def sidecar(sidecar_bin: Path, tmp_path_factory) -> SidecarProcess:
    sc = SidecarProcess(sidecar_bin, tmp_path_factory.mktemp("sidecar")).start()
    yield sc
    sc.stop()
