#!/usr/bin/env bash
# The demo migration: starts an old (Apache RocketMQ 4.9.x) and a new (5.3.3) cluster on
# loopback, one sidecar per simulated pod, two consumer pods and a producer pod running
# the official Java client with its default timers, switches them in the safe order and
# prints what went where. Installs what it needs (Maven downloads RocketMQ and the client).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in cargo java mvn python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "demo.sh: '$tool' is required" >&2; exit 2; }
done
cargo build --release --locked
RMQ_SIDECAR_BIN="$PWD/target/release/rmq-sidecar" exec python3 tests/interop/demo.py "$@"
