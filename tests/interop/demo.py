#!/usr/bin/env python3
"""Demo: move a running application from an old RocketMQ cluster to a new one with sidecars.

    python3 tests/interop/demo.py [--same-broker-name] [--rate 50] [--keep-producing 15]

What it does, on loopback only:

1. starts an OLD Apache RocketMQ cluster (4.9.7 servers) and a NEW one (5.3.3), each one
   name server + one broker (downloaded from Maven Central on first use);
2. starts three simulated application pods running the official Java client 4.9.8 with its
   DEFAULT timers (route poll 30 s, heartbeat 30 s, rebalance 20 s, offset persist 5 s): two
   consumers (C1, C2) of one group and a producer (P) sending ~50 msg/s with unique keys, each
   pod talking only to its own sidecar, which points at the old cluster;
3. switches the sidecars one by one in the safe order -- C1, then P, then (once the old
   cluster shows zero lag for the group) C2 -- using the sidecars' admin API;
4. prints what went where: every acknowledged message must have been consumed.

The sidecar binary is target/release/rmq-sidecar or target/debug/rmq-sidecar (the newer one),
or --sidecar PATH / $RMQ_SIDECAR_BIN. Exit code 0 when nothing acked was lost.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

INTRO = """\
This demo migrates a running application between two real RocketMQ clusters without
restarting it. The application pods (official Java client, default settings) only know
"their" sidecar as name server. Switching a sidecar (PUT /route) makes its pod see the new
cluster's routes at the next route poll; the pod then moves by itself.
Order matters: consumers first (so the group is present on the new cluster before any message
lands there), then producers, then the last consumer once the old cluster is drained.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--same-broker-name", action="store_true",
                    help="both clusters name their broker 'broker-a' (default: old-broker-a / new-broker-a)")
    ap.add_argument("--rate", type=float, default=50, help="producer messages per second (default 50)")
    ap.add_argument("--keep-producing", type=float, default=15,
                    help="seconds to keep producing after the last switch (default 15)")
    ap.add_argument("--fast-timers", action="store_true",
                    help="shorten the client timers to 2 s as the tests do (default: client defaults)")
    ap.add_argument("--sidecar", type=Path, help="sidecar binary (default: newest target/*/rmq-sidecar)")
    args = ap.parse_args(argv)

    binary = args.sidecar or harness.find_sidecar_binary()
    if binary is None or not binary.exists():
        print("demo: no rmq-sidecar binary; run `cargo build --release` first (or pass --sidecar)",
              file=sys.stderr)
        return 2
    timers = harness.FAST_TIMERS if args.fast_timers else harness.DEFAULT_TIMERS
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[demo {time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    print(INTRO)
    say(f"sidecar binary: {binary}")
    say("preparing RocketMQ servers and the Java client pods (cached after the first run)")
    harness.ensure_admin_runner()
    for v in (harness.OLD_SERVER_VERSION, harness.NEW_SERVER_VERSION):
        harness.ensure_rocketmq(v)
    harness.ensure_client(harness.OLD_CLIENT_VERSION)

    run = harness.new_run_dir()
    same = args.same_broker_name
    old = harness.Cluster(
        harness.OLD_SERVER_VERSION, "old",
        harness.reserve_port_block(29876, (0,)), harness.reserve_port_block(30911, harness.BROKER_PORT_OFFSETS),
        "broker-a" if same else "old-broker-a", "DefaultCluster" if same else "OldCluster", run / "old")
    new = harness.Cluster(
        harness.NEW_SERVER_VERSION, "new",
        harness.reserve_port_block(39876, (0,)), harness.reserve_port_block(40911, harness.BROKER_PORT_OFFSETS),
        "broker-a" if same else "new-broker-a", "DefaultCluster" if same else "NewCluster", run / "new")
    try:
        say(f"starting the OLD cluster: RocketMQ {old.version}, broker '{old.broker_name}' at {old.broker_addr}, "
            f"name server {old.namesrv_addr}")
        say(f"starting the NEW cluster: RocketMQ {new.version}, broker '{new.broker_name}' at {new.broker_addr}, "
            f"name server {new.namesrv_addr}")
        harness.start_clusters(old, new)
        say("both clusters are up")
        say(f"client timers: {timers.describe()} -- every step below waits for these, so it takes minutes")
        report = harness.run_migration(
            old, new, run / "demo", label="demo" + (" (same broker name)" if same else ""),
            timers=timers, rate=args.rate, say=say, sidecar_binary=binary,
            bounds=harness.MigrationBounds.for_timers(timers, keep_producing=args.keep_producing))
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    except harness.HarnessError as e:
        say(f"FAILED: {e}")
        print(harness.dump_all_logs(lines=30))
        return 1
    finally:
        harness.stop_clusters(old, new)
        harness.kill_all_live()

    print()
    print(report.format())
    print()
    ok = report.error is None and not report.lost and report.sent_new > 0
    if ok:
        say(f"OK: {report.sent} messages acknowledged, every one consumed "
            f"({report.sent_old} via the old cluster, {report.sent_new} via the new one, "
            f"{report.duplicate_keys} delivered twice). Files: {run}")
    else:
        say(f"NOT OK: lost={len(report.lost)} error={report.error!r}. Logs and pod outputs: {run}")
        print(harness.dump_all_logs(lines=30))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
