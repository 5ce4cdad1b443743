#!/usr/bin/env bash
# Runs every test: formatting, lints, unit/protocol/in-process tests, then the interop
# suite against real Apache RocketMQ 4.9.x and 5.3.3 with the official Java client.
# The interop suite includes a real one-node Kubernetes (tests/interop/test_node.py: containerd,
# a kubelet, the shipped manifests and images built here); it needs root.
# Installs what it needs (Rust components; Debian packages from tests/apt-packages.txt,
# Python packages from tests/requirements.txt, kustomize and a Kubernetes API server from
# the Go module proxy; Maven
# downloads RocketMQ and the client).
# Set RMQ_SKIP_INTEROP=1 to run only the Rust and the deploy (tests/deploy) tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "test.sh: '$1' is required but not installed" >&2; exit 2; }; }
need cargo
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked
echo "== fuzz: every cargo-fuzz target for ${RMQ_FUZZ_SECONDS:-10} s (scripts/fuzz.sh; nightly, cargo-fuzz installed if missing)"
scripts/fuzz.sh "${RMQ_FUZZ_SECONDS:-10}"

echo "== test dependencies: tests/apt-packages.txt (missing ones only), tests/requirements.txt"
need python3
missing_apt=()
while read -r pkg _; do
  case "$pkg" in ''|'#'*) continue ;; esac
  dpkg -s "$pkg" >/dev/null 2>&1 || missing_apt+=("$pkg")
done < tests/apt-packages.txt
if [ "${#missing_apt[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing_apt[@]}"
fi
python3 -m pip install -q -r tests/requirements.txt
echo "== kustomize from the Go module proxy (tests/deploy/test_manifests.py)"
need go
scripts/install-kustomize.sh
echo "== kube-apiserver, kubectl, etcd, kubelet + controller manager + scheduler (k8s-node) from the Go"
echo "   module proxy (tests/deploy/test_apiserver.py, tests/interop/test_node.py)"
k8s_started=$(date +%s)
scripts/install-k8s-test-bins.sh
echo "   (Kubernetes binaries ready in $(( $(date +%s) - k8s_started )) s)"
echo "== deploy: dashboard + alert rules vs list-metrics, promtool, admin API contract, /metrics,"
echo "   Kubernetes manifests, the injector (webhook over HTTPS, offline inject), the batch mover"
python3 -m pytest tests/deploy -v -rA

if [ "${RMQ_SKIP_INTEROP:-0}" = "1" ]; then
  echo "== interop skipped (RMQ_SKIP_INTEROP=1)"
  exit 0
fi

need java
need mvn
need python3
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install --quiet pytest
echo "== cargo build --release (the binary the interop suite runs)"
cargo build --release --locked
echo "== interop: real Apache RocketMQ + official Java client"
RMQ_SIDECAR_BIN="$PWD/target/release/rmq-sidecar" python3 -m pytest tests/interop -v -rA --durations=0 "$@"
