#!/usr/bin/env python3
"""Load tool: how long a switch takes to act, per role, with the official Java client at its
default timers (route poll 30 s, heartbeat 30 s, rebalance 20 s), on real Apache RocketMQ.

For each client version (4.9.8 and 5.3.3) and each sidecar binary given (this build, and
optionally an older one with --before, which switches the whole pod at once and only waits
for the client's next route poll):

- consumer: a consumer pod reads topic T on old while a producer (fully on new) writes T on
  new; its consumers are switched to new (`{"consumer":"new"}`, or `{"target":"new"}` on a
  binary without roles). Measured: PUT /route -> the old cluster no longer lists the pod in
  the group (mqadmin consumerConnection, polled about every 2 s), and PUT /route -> first
  message consumed from new.
- producer: a producer pod writes T on old; its producers are switched to new. Measured:
  PUT /route -> first SEND_OK from the new broker.

Each measurement repeats --runs times (default 3); the switch happens at a random point of
the client's timers. Prints one line per run and the medians. Figures only: nothing here is
asserted.

    cargo build --release && python3 benches/switch_latency.py [--before /path/to/old/rmq-sidecar] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "interop"))

import harness  # noqa: E402
from conftest import ClusterPairs  # noqa: E402

PREFIX = "new~"
GIVE_UP_S = 120.0


def switch(sc: harness.Sidecar, role: str, per_role: bool) -> float:
    t = time.time()
    if per_role:
        # This build's gates would hold a producer switch until the consumers are on new;
        # the latency of the switch itself is measured here, so it is forced.
        sc.switch_roles(**{role: "new"}, force=True)
    else:
        sc.switch("new")
    return t


def measure_consumer(pair, binary: Path, per_role: bool, client: str, work: Path, tag: str) -> dict:
    old, new = pair.old, pair.new
    topic, group = f"SwitchLatC{tag}", f"SwitchLatCG{tag}"
    for c in (old, new):
        c.update_topic(topic, 4)
        c.update_sub_group(group)
    sc_c = harness.Sidecar(f"lat-c-{tag}", old_namesrv=old.namesrv_addr, new_namesrv=new.namesrv_addr,
                           workdir=work, binary=binary, broker_name_prefix=PREFIX).start()
    sc_p = harness.Sidecar(f"lat-p-{tag}", old_namesrv=old.namesrv_addr, new_namesrv=new.namesrv_addr,
                           workdir=work, binary=binary, target="new", broker_name_prefix=PREFIX).start()
    pods = []
    try:
        consumer = harness.Pod(f"lat-c-{tag}", "consumer", namesrv=sc_c.namesrv_addr, topic=topic, group=group,
                               workdir=work, client_version=client).start()
        pods.append(consumer)
        harness.wait_until(lambda: old.consumer_online(group, consumer.name), 90, "consumer online on old")
        producer = harness.Pod(f"lat-p-{tag}", "producer", namesrv=sc_p.namesrv_addr, topic=topic,
                               group=f"SwitchLatCP{tag}", workdir=work, client_version=client, rate=20).start()
        pods.append(producer)
        harness.wait_until(lambda: len(producer.records()) > 5, 90, "producer sends on new")
        time.sleep(random.uniform(0, 30))  # anywhere in the client's timer cycles
        t0 = switch(sc_c, "consumer", per_role)
        left = first = None
        deadline = t0 + GIVE_UP_S
        while time.time() < deadline and (left is None or first is None):
            if left is None and not old.consumer_online(group, consumer.name):
                left = time.time() - t0
            if first is None:
                news = [float(r[4]) / 1000 for r in consumer.records() if r[1].startswith(PREFIX)]
                if news:
                    first = min(news) - t0
            time.sleep(0.5)
        return {"left_old_s": left, "first_consumed_new_s": first}
    finally:
        for p in pods:
            p.stop()
        sc_c.stop()
        sc_p.stop()


def measure_producer(pair, binary: Path, per_role: bool, client: str, work: Path, tag: str) -> dict:
    old, new = pair.old, pair.new
    topic = f"SwitchLatP{tag}"
    for c in (old, new):
        c.update_topic(topic, 4)
    sc = harness.Sidecar(f"lat-q-{tag}", old_namesrv=old.namesrv_addr, new_namesrv=new.namesrv_addr,
                         workdir=work, binary=binary, broker_name_prefix=PREFIX).start()
    producer = harness.Pod(f"lat-q-{tag}", "producer", namesrv=sc.namesrv_addr, topic=topic,
                           group=f"SwitchLatPG{tag}", workdir=work, client_version=client, rate=20).start()
    try:
        harness.wait_until(lambda: len(producer.records()) > 5, 90, "producer sends on old")
        time.sleep(random.uniform(0, 30))
        t0 = switch(sc, "producer", per_role)
        first = None
        deadline = t0 + GIVE_UP_S
        while time.time() < deadline and first is None:
            news = [float(r[4]) / 1000 for r in producer.records() if r[1].startswith(PREFIX)]
            if news:
                first = min(news) - t0
            time.sleep(0.5)
        return {"first_sent_new_s": first}
    finally:
        producer.stop()
        sc.stop()


def median(values: list) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "n/a"
    extra = f" ({len(values) - len(got)} gave up after {GIVE_UP_S:.0f} s)" if len(got) < len(values) else ""
    return f"{statistics.median(got):.1f} s (min {min(got):.1f}, max {max(got):.1f}){extra}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="an older rmq-sidecar binary (switches the whole pod)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", default=f"{harness.OLD_CLIENT_VERSION},{harness.NEW_CLIENT_VERSION}")
    args = ap.parse_args()
    binaries = [("this build", REPO / "target" / "release" / "rmq-sidecar", True)]
    if args.before:
        binaries.append(("before", args.before, False))
    clients = [c for c in args.clients.split(",") if c]
    run = harness.new_run_dir()
    harness.ensure_admin_runner()
    for v in (harness.OLD_SERVER_VERSION, harness.NEW_SERVER_VERSION):
        harness.ensure_rocketmq(v)
    for c in clients:
        harness.ensure_client(c)
    pairs = ClusterPairs(run)
    pair = pairs.get("distinct")
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, {platform.platform()}; client default timers")
    try:
        for label, binary, per_role in binaries:
            for client in clients:
                cons, prod = [], []
                for i in range(args.runs):
                    tag = f"{random.randrange(10**6)}"
                    c = measure_consumer(pair, binary, per_role, client, run, tag)
                    p = measure_producer(pair, binary, per_role, client, run, tag)
                    print(f"{label:10} client {client} run {i + 1}: consumer left old {c['left_old_s']}, "
                          f"first consumed from new {c['first_consumed_new_s']}; "
                          f"producer first sent to new {p['first_sent_new_s']}", flush=True)
                    cons.append(c)
                    prod.append(p)
                print(f"== {label}, client {client}:")
                print(f"   consumer: left the old group      {median([c['left_old_s'] for c in cons])}")
                print(f"   consumer: first message from new  {median([c['first_consumed_new_s'] for c in cons])}")
                print(f"   producer: first send to new       {median([p['first_sent_new_s'] for p in prod])}",
                      flush=True)
    finally:
        pairs.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
