#!/usr/bin/env python3
"""Load tool: synchronous send latency of the official Java client straight to a real broker
versus through ``rmq-sidecar``, plus the sidecar's memory at idle and under that load.

Starts the interop clusters (old Apache RocketMQ 4.9.x, new 5.3.3) on loopback, one sidecar
targeting the chosen cluster, and one JVM with two producers (one per name server) that send
1 KiB messages in alternating rounds. Prints medians, p99s, the ratio and the sidecar's RSS.
Timing is measured here, never asserted in tests.

    cargo build --release && python3 benches/interop_latency.py [--target new|old] [--rounds 10 --per-round 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "interop"))

import harness  # noqa: E402
from conftest import ClusterPairs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=["old", "new"], default="new")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=300)
    args = ap.parse_args()
    os.environ.setdefault("RMQ_SIDECAR_BIN", str(REPO / "target" / "release" / "rmq-sidecar"))

    run = harness.new_run_dir()
    harness.ensure_admin_runner()
    for v in (harness.OLD_SERVER_VERSION, harness.NEW_SERVER_VERSION):
        harness.ensure_rocketmq(v)
    harness.ensure_client(harness.OLD_CLIENT_VERSION)
    pairs = ClusterPairs(run)
    pair = pairs.get("distinct")
    sc = None
    try:
        cluster = pair.new if args.target == "new" else pair.old
        tag = random.randrange(10**6)
        topic, group = f"LatencyTopic{tag}", f"LatencyGroup{tag}"
        cluster.update_topic(topic, 4)
        sc = harness.Sidecar("latency", old_namesrv=pair.old.namesrv_addr, new_namesrv=pair.new.namesrv_addr,
                             workdir=run, target=args.target, log_filter="warn").start()
        idle = sc.memory_kib()
        pod = harness.Pod("latency", "latency", namesrv=sc.namesrv_addr, topic=topic, group=group,
                          workdir=run, client_version=harness.OLD_CLIENT_VERSION,
                          timers=harness.DEFAULT_TIMERS,
                          extra_args=["--direct-namesrv", cluster.namesrv_addr, "--sidecar-namesrv", sc.namesrv_addr,
                                      "--rounds", str(args.rounds), "--per-round", str(args.per_round),
                                      "--warmup", str(args.warmup)])
        pod.start()
        rc = pod.wait_exit(900)
        loaded = sc.memory_kib()
        line = next((ln for ln in pod.output().splitlines() if ln.startswith("LATENCY ")), None)
        if rc != 0 or line is None:
            print(pod.output()[-3000:])
            print(f"latency pod failed (rc={rc})")
            return 1
        r = json.loads(line[len("LATENCY "):])
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), platform.processor())
        print(f"machine: {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}")
        print(f"target {args.target} cluster ({cluster!r}), rocketmq-client {harness.OLD_CLIENT_VERSION}, "
              f"1 KiB sync sends, {r['samples']} samples per path, interleaved rounds of {args.per_round}")
        print(f"  direct   median {r['direct_median_us']:8.1f} us   p99 {r['direct_p99_us']:8.1f} us")
        print(f"  sidecar  median {r['sidecar_median_us']:8.1f} us   p99 {r['sidecar_p99_us']:8.1f} us")
        print(f"  ratio    median {r['sidecar_median_us'] / r['direct_median_us']:8.2f}x     "
              f"p99 {r['sidecar_p99_us'] / r['direct_p99_us']:8.2f}x")
        print(f"sidecar RSS: idle {idle.get('VmRSS', 0) / 1024:.1f} MiB, after load {loaded.get('VmRSS', 0) / 1024:.1f} MiB, "
              f"peak {loaded.get('VmHWM', 0) / 1024:.1f} MiB")
        return 0
    finally:
        if sc is not None:
            sc.stop()
        pairs.stop()


if __name__ == "__main__":
    sys.exit(main())
