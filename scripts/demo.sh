#!/usr/bin/env bash
# The demo migration: starts an old (Apache RocketMQ 4.9.x) and a new (5.3.3) cluster on
# loopback and seven simulated pods (the official Java client at its default timers, each
# behind its own sidecar; one pod consumes a topic and produces another), tries to move a
# producer first (its sidecar's migration gates refuse), runs the five steps through the
# gates and prints the accounting. `scripts/demo.sh --unsafe` forces the wrong order and
# prints the messages it lost. Installs what it needs (Maven downloads RocketMQ and the client).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in cargo java mvn python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "demo.sh: '$tool' is required" >&2; exit 2; }
done
cargo build --release --locked
RMQ_SIDECAR_BIN="$PWD/target/release/rmq-sidecar" exec python3 tests/interop/demo.py "$@"
