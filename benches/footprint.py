#!/usr/bin/env python3
"""Footprint of the shipped binaries: file size (as built, debug info stripped as the
Dockerfile does, fully stripped), crates linked (`cargo tree -e normal`), TLS/YAML/Kubernetes
crates among them, and idle RSS after start-up.

Run side by side against an older checkout to compare (it must have been built with
`cargo build --release` too):

    cargo build --release && python3 benches/footprint.py [--before ../old-checkout]

The sidecar runs with name servers that do not exist (127.0.0.1:1, :2), as an idle pod's
sidecar whose cluster is unreachable; the injector runs with certificates from
deploy/scripts/gen-webhook-certs.sh and no stage lookups. RSS is read from /proc after
the process has answered /live and 3 s have passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "deploy"))

#: Crates a data-plane sidecar should not carry.
HEAVY = ("rustls", "ring", "tokio-rustls", "rustls-webpki", "rustls-pki-types", "serde_yaml_ng",
         "unsafe-libyaml", "kube", "k8s-openapi")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sizes(binary: Path) -> tuple[int, int, int]:
    with tempfile.TemporaryDirectory() as d:
        debug, full = Path(d) / "debug", Path(d) / "full"
        shutil.copy(binary, debug)
        shutil.copy(binary, full)
        subprocess.run(["strip", "--strip-debug", str(debug)], check=True)
        subprocess.run(["strip", str(full)], check=True)
        return binary.stat().st_size, debug.stat().st_size, full.stat().st_size


def crates(repo: Path, package: str | None) -> list[str]:
    cmd = ["cargo", "tree", "-e", "normal", "--prefix", "none", "--locked"]
    if package:
        cmd += ["-p", package]
    out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[0] for line in out.splitlines() if line.strip()})


def wait_live(port: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"exited {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/live", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("never answered /live")


def idle_rss(argv: list[str], env: dict, health_port: int) -> int:
    """RSS (KiB) of `argv` 3 s after its /live answers on `health_port`."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_live(health_port, proc)
        time.sleep(3)
        return rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def sidecar_rss(binary: Path) -> int:
    health = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RMQ_SIDECAR_")}
    env.update({"RMQ_SIDECAR_LISTEN": f"127.0.0.1:{free_port()}", "RMQ_SIDECAR_ADMIN": f"127.0.0.1:{free_port()}",
                "RMQ_SIDECAR_METRICS": f"127.0.0.1:{health}", "RMQ_SIDECAR_BROKER_BIND": "127.66.0.0/16",
                "RMQ_SIDECAR_OLD_NAMESRV": "127.0.0.1:1", "RMQ_SIDECAR_NEW_NAMESRV": "127.0.0.1:2",
                "RMQ_SIDECAR_LOG": "warn"})
    return idle_rss([str(binary)], env, health)


def injector_rss(binary: Path, args: list[str]) -> int:
    from inject_support import gen_certs  # noqa: E402
    work = Path(tempfile.mkdtemp(prefix="footprint-"))
    certs = gen_certs(work / "certs")
    https, health = free_port(), free_port()
    config = work / "injector.toml"
    config.write_text(
        f'[webhook]\nlisten = "127.0.0.1:{https}"\nhealth_listen = "127.0.0.1:{health}"\n'
        f'cert_file = "{certs / "tls.crt"}"\nkey_file = "{certs / "tls.key"}"\n'
        '[stages]\nconfigmap = ""\n[sidecar]\nold_namesrv = "a:9876"\nnew_namesrv = "b:9876"\n')
    env = dict(os.environ, RMQ_SIDECAR_LOG="warn")
    try:
        return idle_rss([str(binary), *args, "--config", str(config)], env, health)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(label: str, binary: Path, crate_list: list[str], rss: int) -> None:
    raw, debug, full = sizes(binary)
    heavy = [c for c in crate_list if c in HEAVY]
    print(f"{label:<28} {raw / 1e6:7.1f} MB {debug / 1e6:6.1f} MB {full / 1e6:6.1f} MB "
          f"{len(crate_list):6d} {rss / 1024:7.1f} MiB  {', '.join(heavy) or '-'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="an older checkout, built with cargo build --release")
    args = parser.parse_args()
    print(f"{'binary':<28} {'as built':>10} {'-debug':>9} {'strip':>9} {'crates':>6} {'idle RSS':>11}  "
          "TLS/YAML/Kubernetes crates")
    if args.before:
        old = args.before / "target" / "release" / "rmq-sidecar"
        report("before: rmq-sidecar (both)", old, crates(args.before, None), sidecar_rss(old))
        report("before: as injector", old, crates(args.before, None), injector_rss(old, ["inject-webhook"]))
    rel = REPO / "target" / "release"
    report("rmq-sidecar", rel / "rmq-sidecar", crates(REPO, "rocketmq-sidecar"), sidecar_rss(rel / "rmq-sidecar"))
    report("rmq-injector", rel / "rmq-injector", crates(REPO, "rmq-injector"),
           injector_rss(rel / "rmq-injector", ["webhook"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
