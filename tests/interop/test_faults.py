"""Faults on a real cluster, through the sidecar and directly, side by side, with accounting.

One RocketMQ 4.9.7 cluster of two name servers (A, B) and two brokers (fault-a, fault-b), each
broker registered with both (conftest ``PAIR_LAYOUT["faults"]``). Two keyed loads run on it
for the whole module, each a producer (20 msg/s) and a consumer JVM of the official 4.9.8
client (or ``RMQ_FAULTS_CLIENT``) with short timers (2 s route poll and heartbeat):

* **direct**: the client's name-server list is ``A;B``, as an app without a sidecar has it;
* **sidecar**: the client's name server is the sidecar, whose ``old`` cluster is ``A;B`` and
  whose ``new`` cluster does not answer (a closed port).

The faults, in order, each on the running loads (the direct load is the baseline):

1. broker fault-a killed (SIGKILL) for 10 s, then restarted on the same store;
2. name server A killed, then restarted (one of two down);
3. both name servers killed, then restarted (all down and back);
4. the sidecar killed (SIGKILL) and restarted with the same configuration;
5. a switch to a cluster that does not answer: a closed port, and a name server that accepts
   connections and never answers;
6. then every acknowledged send must have been consumed, on both loads: 0 lost.

Asserted: what the sidecar must do (refuse connections for a dead broker at once, answer route
queries within the client's own 3 s timeout with one name server down, answer at all with none,
refuse the switch and keep the route, resume after its restart) and the accounting. Recovery
times, send stalls and failures are figures, printed and written to ``figures.json`` in the
test directory, never timed assertions. A switch under load (the other fault the suite covers)
is ``test_migration.py``, ``test_roles.py`` and ``test_guarded.py``: each switches producers
and consumers while they run and accounts every key.

Run: ``python3 -m pytest tests/interop/test_faults.py -v -rA`` (``RMQ_FAULTS_CLIENT=5.3.3`` runs
both loads on the 5.3.3 client instead of 4.9.8).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

import harness
import remoting_probe

RATE = 20
#: The Java client's own timeout for a name-server request (and a send's default).
CLIENT_TIMEOUT_S = 3.0
#: How long a fault lasts before the part comes back.
DOWN_S = 10.0
#: Bound on every recovery wait (not a figure: past it the load did not recover).
RECOVER_S = 120.0
#: A name server nothing listens on.
CLOSED = "127.0.0.1:1"
#: The official Java client of both loads (``RMQ_FAULTS_CLIENT=5.3.3`` for the 5.x client).
CLIENT_VERSION = os.environ.get("RMQ_FAULTS_CLIENT", harness.OLD_CLIENT_VERSION)

FIGURES: dict = {}


@dataclasses.dataclass
class Side:
    """One keyed load: a producer and a consumer JVM on one topic and group."""

    name: str
    topic: str
    producer: harness.Pod
    consumer: harness.Pod

    def acks(self) -> list[tuple[float, str]]:
        """(ack time s, broker name) per acknowledged send."""
        return [(int(r[4]) / 1000, r[1]) for r in self.producer.records() if len(r) >= 5]

    def deliveries(self) -> list[tuple[float, str, str]]:
        """(delivery time s, broker name, key) per delivery."""
        return [(int(r[4]) / 1000, r[1], r[0]) for r in self.consumer.records() if len(r) >= 5]

    def failures(self) -> int:
        """Sends that failed so far (each retried with the same key)."""
        return self.producer.output().count(" failed: ")


@dataclasses.dataclass
class Load:
    pair: object
    sidecar: harness.Sidecar
    direct: Side
    via: Side
    test_dir: Path

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.direct, self.via


def _figure(fault: str, key: str, value) -> None:
    FIGURES.setdefault(fault, {})[key] = value
    harness.log(f"figure [{fault}] {key}: {value}")


def _longest_gap(times: list[float], start: float, end: float) -> float:
    """Longest time between two consecutive events, of those from the last event before
    ``start`` to the first after ``end``."""
    times = sorted(times)
    before = [t for t in times if t < start][-1:]
    after = [t for t in times if t > end][:1]
    points = before + [t for t in times if start <= t <= end] + after
    return round(max((b - a for a, b in zip(points, points[1:])), default=0.0), 2)


def _first_after(times: list[float], t: float) -> float | None:
    later = [x for x in times if x > t]
    return min(later) if later else None


def _route_listeners(sidecar: harness.Sidecar, topic: str) -> dict[str, str]:
    """broker name -> the sidecar's listener for it, from a route asked of the sidecar."""
    reply = remoting_probe.invoke(sidecar.namesrv_addr, 105, {"topic": topic}, timeout=CLIENT_TIMEOUT_S)
    assert reply.code == 0, reply.short()
    route = json.loads(re.sub(r"([{,])(\d+):", r'\1"\2":', reply.body.decode()))
    return {bd["brokerName"]: bd["brokerAddrs"]["0"] for bd in route["brokerDatas"]}


def _timed_route(addr: str, topic: str, timeout: float = CLIENT_TIMEOUT_S) -> tuple[float, int | None]:
    """Seconds a route query took at ``addr`` and its answer code (None: no answer in time)."""
    t0 = time.monotonic()
    try:
        code = remoting_probe.invoke(addr, 105, {"topic": topic}, timeout=timeout).code
    except OSError:
        code = None
    return round(time.monotonic() - t0, 3), code


def _metric(sc: harness.Sidecar, line_start: str) -> float | None:
    status, text = sc._http("GET", "/metrics")
    assert status == 200
    for line in str(text).splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def load(pair_faults, run_dir, sidecar_binary):
    a, b = pair_faults.old, pair_faults.new
    both = f"{a.namesrv_addr};{b.namesrv_addr}"
    test_dir = run_dir / "tests" / "faults"
    test_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{int(time.time()) % 100000}{random.randrange(100):02d}"
    sc = harness.Sidecar("faults", old_namesrv=both, new_namesrv=CLOSED, workdir=test_dir,
                         binary=sidecar_binary)
    sides = []
    try:
        sc.start()
        for name, namesrv in (("direct", both), ("sidecar", sc.namesrv_addr)):
            topic, group = f"Fault{name.title()}{tag}", f"FaultGroup{name.title()}{tag}"
            a.update_topic(topic, 4)  # on both brokers: the name server knows the whole cluster
            a.update_sub_group(group)
            common = dict(namesrv=namesrv, topic=topic, workdir=test_dir, timers=harness.FAST_TIMERS,
                          client_version=CLIENT_VERSION)
            consumer = harness.Pod(f"{name}-consumer", "consumer", group=group, **common).start()
            producer = harness.Pod(f"{name}-producer", "producer", group=f"FaultProducer{name.title()}{tag}",
                                   rate=RATE, **common).start()
            sides.append(Side(name, topic, producer, consumer))
        ld = Load(pair_faults, sc, sides[0], sides[1], test_dir)
        for side in ld.sides:
            harness.wait_until(lambda s=side: {x[1] for x in s.deliveries()} >= {"fault-a", "fault-b"}, 90,
                               f"{side.name} load consumed from both brokers", 1.0,
                               lambda s=side: s.producer.proc.exited_reason() or s.consumer.proc.exited_reason())
        time.sleep(5)  # steady traffic before the first fault
        yield ld
    finally:
        for side in sides:
            side.producer.stop(15)
            side.consumer.stop(15)
        sc.stop()
        (test_dir / "figures.json").write_text(json.dumps(FIGURES, indent=2) + "\n")
        if FIGURES:
            print("\nFAULT FIGURES\n" + json.dumps(FIGURES, indent=2))


def _wait_resumed(load: Load, since: float, broker: str | None, fault: str, what: str) -> None:
    """Wait until each side acks and consumes (from ``broker``, if given) after ``since``;
    record how long after ``since`` that was."""
    def on(broker_name: str) -> bool:
        return broker is None or broker_name == broker

    for side in load.sides:
        harness.wait_until(lambda s=side: _first_after([t for t, br in s.acks() if on(br)], since), RECOVER_S,
                           f"{side.name} producer acked{' by ' + broker if broker else ''} after {what}", 0.5)
        harness.wait_until(lambda s=side: _first_after([t for t, br, _ in s.deliveries() if on(br)], since),
                           RECOVER_S, f"{side.name} consumer received{' from ' + broker if broker else ''} "
                           f"after {what}", 0.5)
        acked = _first_after([t for t, br in side.acks() if on(br)], since)
        got = _first_after([t for t, br, _ in side.deliveries() if on(br)], since)
        _figure(fault, f"{side.name}: first ack after {what}, s", round(acked - since, 2))
        _figure(fault, f"{side.name}: first delivery after {what}, s", round(got - since, 2))


def test_a_broker_crash_refuses_at_once_through_the_sidecar_and_both_loads_recover(load):
    fault = "broker fault-a killed for 10 s, restarted"
    a = load.pair.old
    listener = _route_listeners(load.sidecar, load.via.topic)["fault-a"]
    failures = {s.name: s.failures() for s in load.sides}
    down = 'rmq_sidecar_broker_listeners_down{target="old"}'
    killed = time.time()
    a.kill_broker()
    try:
        # The sidecar closes its listeners for a broker that refuses connections (its main
        # port and its VIP port), so the app's connect is refused at once, as by the broker
        # itself, instead of being accepted and then held until its request times out.
        harness.wait_until(lambda: _metric(load.sidecar, down) == 2, DOWN_S,
                           "the sidecar's listeners for fault-a closed", 0.2)
        _figure(fault, "sidecar listeners for fault-a closed after, s", round(time.time() - killed, 2))
        host, port = listener.rsplit(":", 1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=CLIENT_TIMEOUT_S).close()
        time.sleep(max(0.0, killed + DOWN_S - time.time()))
    finally:
        a.start_broker()
    back = time.time()
    _wait_resumed(load, back, "fault-a", fault, "the broker's restart")
    harness.wait_until(lambda: _metric(load.sidecar, down) == 0,
                       RECOVER_S, "the sidecar's listener for fault-a open again", 0.5)
    for side in load.sides:
        _figure(fault, f"{side.name}: longest send stall, s", _longest_gap([t for t, _ in side.acks()],
                                                                         killed - 1, back + 5))
        _figure(fault, f"{side.name}: failed sends (retried)", side.failures() - failures[side.name])


def test_one_name_server_down_costs_the_route_queries_nothing(load):
    fault = "name server A killed (B up), restarted"
    a, b = load.pair.old, load.pair.new
    a.kill_namesrv()
    try:
        # Route queries through the sidecar still come back well inside the client's own
        # timeout (the dead name server is skipped, not waited for), ten of them at once.
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(_timed_route(load.sidecar.namesrv_addr,
                                                                               load.via.topic)))
                   for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [code for _, code in results] == [0] * 10, results
        _figure(fault, "10 concurrent route queries through the sidecar, slowest s", max(s for s, _ in results))
        _figure(fault, "one route query straight to B, s", _timed_route(b.namesrv_addr, load.via.topic)[0])
        # A client that starts now, through the sidecar, sends and consumes.
        tag = random.randrange(10**6)
        topic, group = f"FaultSmoke{tag}", f"FaultSmokeGroup{tag}"
        b.update_topic(topic, 2)
        b.update_sub_group(group)
        smoke = harness.run_smoke(load.sidecar.namesrv_addr, topic, group, 20, load.test_dir)
        assert smoke.ok, f"{smoke.summary}\n{smoke.output[-3000:]}"
        sends_before = len(load.via.acks())
        time.sleep(2)
        assert len(load.via.acks()) > sends_before, "the load through the sidecar stopped"
    finally:
        a.start_namesrv()
    harness.wait_until(a.broker_registered, 60, "fault-a registered again in name server A", 1.0)


def test_all_name_servers_down_and_back(load):
    fault = "both name servers killed for 10 s, restarted"
    a, b = load.pair.old, load.pair.new
    acks = {s.name: len(s.acks()) for s in load.sides}
    a.kill_namesrv()
    b.kill_namesrv()
    killed = time.time()
    try:
        # The brokers still run: both loads carry on with the routes they have.
        time.sleep(DOWN_S / 2)
        for side in load.sides:
            assert len(side.acks()) > acks[side.name], f"{side.name}: no send acked with the name servers down"
        # The sidecar answers a route query (with an error, as a name server that is down
        # cannot) within the client's timeout instead of holding it.
        took, code = _timed_route(load.sidecar.namesrv_addr, load.via.topic, timeout=CLIENT_TIMEOUT_S + 2)
        assert code is not None and code != 0, (took, code)
        _figure(fault, "route query through the sidecar with none up: answered in s (error code)", [took, code])
        time.sleep(max(0.0, killed + DOWN_S - time.time()))
    finally:
        a.start_namesrv()
        b.start_namesrv()
    back = time.time()
    for cluster, name in ((a, "A"), (b, "B")):
        harness.wait_until(lambda: _timed_route(cluster.namesrv_addr, load.via.topic)[1] == 0, RECOVER_S,
                           f"name server {name} knows the topic again (brokers re-registered)", 0.5)
        _figure(fault, f"route answered by name server {name} after its restart, s", round(time.time() - back, 2))
    harness.wait_until(lambda: _timed_route(load.sidecar.namesrv_addr, load.via.topic)[1] == 0, RECOVER_S,
                       "route answered through the sidecar", 0.5)
    _figure(fault, "route answered through the sidecar after the restart, s", round(time.time() - back, 2))
    for side in load.sides:
        _figure(fault, f"{side.name}: longest send stall, s", _longest_gap([t for t, _ in side.acks()],
                                                                         killed - 1, back + 5))
    _wait_resumed(load, back, None, fault, "the name servers' restart")


def test_the_sidecar_killed_and_restarted_under_load(load):
    fault = "sidecar killed (SIGKILL), restarted"
    sc = load.sidecar
    failures = load.via.failures()
    killed = time.time()
    sc.proc.send_signal(signal.SIGKILL)
    assert sc.proc.wait(10) is not None
    time.sleep(1)
    sc.start()
    back = time.time()
    _figure(fault, "sidecar ready again after, s", round(back - killed, 2))
    assert sc.route()["target"] == "old", "the route survives the restart (state dir)"
    _wait_resumed(load, back, None, fault, "the sidecar's restart")
    _figure(fault, "sidecar: longest send stall, s", _longest_gap([t for t, _ in load.via.acks()],
                                                                killed - 1, back + 5))
    _figure(fault, "sidecar: failed sends (retried)", load.via.failures() - failures)


def test_a_switch_to_a_cluster_that_does_not_answer_is_refused_and_the_route_stays(load, tmp_path):
    fault = "switch to a cluster that does not answer"
    sc = load.sidecar
    t0 = time.monotonic()
    status, doc = sc.put_route({"target": "new"})
    _figure(fault, "refused (closed port) in s", round(time.monotonic() - t0, 3))
    assert status == 409 and doc["refused_by"] == ["target_reachable"], (status, doc)
    assert CLOSED in doc["error"], doc["error"]
    assert sc.route()["target"] == "old"
    # A name server that accepts connections and never answers: refused within the gates'
    # read timeout, never stuck.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    hung_addr = "127.0.0.1:%d" % hung.getsockname()[1]
    other = harness.Sidecar("faults-hung", old_namesrv=sc.old_namesrv, new_namesrv=hung_addr, workdir=tmp_path,
                            binary=sc.binary)
    try:
        other.start()
        t0 = time.monotonic()
        status, doc = other.put_route({"consumer": "new"}, timeout=30)
        _figure(fault, "refused (name server that never answers) in s", round(time.monotonic() - t0, 3))
        assert status == 409 and doc["refused_by"] == ["target_reachable"], (status, doc)
        assert "no answer" in doc["error"], doc["error"]
        assert other.route()["target"] == "old"
    finally:
        other.stop()
        hung.close()
    acks = len(load.via.acks())
    harness.wait_until(lambda: len(load.via.acks()) > acks, 30, "the load through the sidecar goes on", 0.5)


def test_every_acknowledged_send_was_consumed_on_both_loads(load):
    for side in load.sides:
        side.producer.stop(30)
    totals = {}
    for side in load.sides:
        sent = {r[0] for r in side.producer.records()}
        harness.wait_until(lambda s=side, k=sent: k <= {r[0] for r in s.consumer.records()}, RECOVER_S,
                           f"{side.name}: every acked key consumed", 1.0)
    time.sleep(2)
    for side in load.sides:
        side.consumer.stop(30)
        sent = {r[0] for r in side.producer.records()}
        counts: dict[str, int] = {}
        for r in side.consumer.records():
            counts[r[0]] = counts.get(r[0], 0) + 1
        totals[side.name] = {"acknowledged": len(sent), "consumed": len(sent & set(counts)),
                             "lost": len(sent - set(counts)),
                             "duplicated": sum(1 for n in counts.values() if n > 1),
                             "failed sends (retried)": side.failures()}
    FIGURES["accounting"] = totals
    harness.log(f"fault suite accounting: {totals}")
    for name, t in totals.items():
        assert t["lost"] == 0, f"{name}: {t}"
        assert t["acknowledged"] > 0, f"{name}: nothing was sent"
