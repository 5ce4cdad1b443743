#!/usr/bin/env python3
"""Demo: move a running fleet from an old RocketMQ cluster to a new one, guarded by the sidecars.

    python3 tests/interop/demo.py [--unsafe] [--rate 20] [--keep-producing 10] [--fast-timers]

What it does, on loopback only:

1. starts an OLD Apache RocketMQ cluster (4.9.7 servers) and a NEW one (5.3.3), each one
   name server + one broker (downloaded from Maven Central on first use);
2. starts seven simulated application pods running the official Java client 4.9.8 with its
   DEFAULT timers (route poll 30 s), each talking only to its own sidecar on the old
   cluster, under keyed load: topic A (producer PA; consumers CA1, CA2 and X of one group)
   and topic B (producers PB and X; consumers CB1, CB2). X both consumes A and produces B;
3. tries to move PA's producers first: its sidecar refuses, naming the group not yet on new;
4. runs the five steps through the sidecars' admin API with the migration gates on:
   metadata and preflight, some consumers of each group, some producers, all producers, and
   the remaining consumers once their gate sees the old cluster drained and quiet;
5. prints the accounting: sent, received, lost, duplicated per topic, and each step's time
   and what its gate waited for.

``--unsafe`` forces the wrong order instead (every producer first, the consumers after) on a
new cluster that behaves like a busy production broker (a 4.9.7 broker with
``accessMessageInMemoryMaxRatio=0``: a brand-new consumer group starts at the queues' end; on
an idle loopback 5.3.3 broker it is answered offset 0 and the loss would hide), and prints the
messages that were lost: the reason the gates exist.

The sidecar binary is target/release/rmq-sidecar or target/debug/rmq-sidecar (the newer one),
or --sidecar PATH / $RMQ_SIDECAR_BIN. Exit code 0 when the guarded run lost nothing (or the
unsafe run lost something, as it should).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guarded  # noqa: E402
import harness  # noqa: E402

INTRO = """\
This demo migrates a running fleet between two real RocketMQ clusters without restarting it.
The application pods (official Java client, default settings) only know "their" sidecar as
name server. Switching a sidecar's producers or consumers (PUT /route) makes its pod see the
new cluster's routes at its next route poll; the pod then moves by itself. Each sidecar's
migration gates refuse the order that loses messages: producers before their topics'
consumers, or the last consumers of a group before the old cluster is drained.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--unsafe", action="store_true",
                    help="force the wrong order (producers first) and show the messages lost")
    ap.add_argument("--rate", type=float, default=20, help="messages per second per producer (default 20)")
    ap.add_argument("--keep-producing", type=float, default=10,
                    help="seconds to keep producing after the last switch (default 10)")
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
    unsafe = args.unsafe
    old = harness.Cluster(
        harness.OLD_SERVER_VERSION, "old",
        harness.reserve_port_block(29876, (0,)), harness.reserve_port_block(30911, harness.BROKER_PORT_OFFSETS),
        "old-broker-a", "OldCluster", run / "old")
    new_version = harness.OLD_SERVER_VERSION if unsafe else harness.NEW_SERVER_VERSION
    new = harness.Cluster(
        new_version, "new",
        harness.reserve_port_block(39876, (0,)), harness.reserve_port_block(40911, harness.BROKER_PORT_OFFSETS),
        "new-broker-a", "NewCluster", run / "new",
        extra_broker_conf={"accessMessageInMemoryMaxRatio": 0} if unsafe else None)
    try:
        say(f"starting the OLD cluster: RocketMQ {old.version}, broker '{old.broker_name}' at {old.broker_addr}")
        say(f"starting the NEW cluster: RocketMQ {new.version}, broker '{new.broker_name}' at {new.broker_addr}"
            + (" (busy-broker behaviour: accessMessageInMemoryMaxRatio=0)" if unsafe else ""))
        harness.start_clusters(old, new)
        say("both clusters are up")
        say(f"client timers: {timers.describe()} -- every step below waits for these, so it takes minutes")
        report = guarded.run_guarded(old, new, run / "demo", unsafe=unsafe, timers=timers, rate=args.rate,
                                     keep_producing=args.keep_producing, sidecar_binary=binary, say=say)
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
    sent = sum(t["sent"] for t in report.topics.values())
    if unsafe:
        ok = report.error is None and report.lost > 0
        say(f"UNSAFE order, forced past the gates: {report.lost} of {sent} acknowledged messages were never "
            f"consumed. The guarded run (without --unsafe) loses none. Files: {run}")
    else:
        ok = report.error is None and report.lost == 0 and bool(report.refusal)
        if ok:
            say(f"OK: {sent} messages acknowledged, every one consumed; the producers-first attempt was "
                f"refused. Files: {run}")
        else:
            say(f"NOT OK: lost={report.lost} error={report.error!r}. Logs and pod outputs: {run}")
            print(harness.dump_all_logs(lines=30))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
