"""The migration gates on real Apache RocketMQ (old 5.3.3, new 4.9.7) with the official Java client.

The new cluster of this pair answers a brand-new consumer group QUERY_NOT_FOUND, so the group
starts at the queues' end, as a busy production broker does (its queues' first messages are no
longer "in memory": ``accessMessageInMemoryMaxRatio=0``; protocol notes §8). That is the
condition under which moving producers before consumers loses messages silently.

* ``test_producers_first_is_refused_and_loses_messages_when_forced``: a producer pod and a
  consumer pod on old, keyed load. Moving the producer to new is refused (409,
  ``consumers_on_target``, naming the group); the consumer's move right after is refused too
  (``backlog_drained``: old was written to seconds ago). Forced anyway, the producer writes to
  new before the group exists there; the consumer then moves once its gate passes, and every
  message the producer wrote to new before the group arrived is lost. The test fails if
  nothing is lost: that is the loss the gate exists to prevent. A sidecar restarted mid-way
  keeps its roles, the gates' last evaluation and what the pod uses.
* ``test_seeded_offsets_make_the_producers_first_order_lossless``: the same order with
  ``seed_offsets``: the sidecar commits the group's offsets on new at the queues' end before
  the producer moves, so the group, arriving later, starts there: zero lost.
"""

from __future__ import annotations

import json
import random
import time

import harness

PREFIX = "new~"
TIMERS = harness.FAST_TIMERS


def _sidecar(name, pair, test_dir, binary) -> harness.Sidecar:
    return harness.Sidecar(name, old_namesrv=pair.old.namesrv_addr, new_namesrv=pair.new.namesrv_addr,
                           workdir=test_dir, target="old", binary=binary, broker_name_prefix=PREFIX)


def _setup(pair, test_dir, binary, label):
    tag = random.randrange(10**6)
    topic, group, pgroup = f"Gate{label}{tag}", f"GateGroup{label}{tag}", f"GateProducer{label}{tag}"
    for c in (pair.old, pair.new):
        c.update_topic(topic, 2)
        c.update_sub_group(group)
    sc_c = _sidecar(f"gc-{label}", pair, test_dir, binary).start()
    sc_p = _sidecar(f"gp-{label}", pair, test_dir, binary).start()
    consumer = harness.Pod(f"C-{label}", "consumer", namesrv=sc_c.namesrv_addr, topic=topic, group=group,
                           workdir=test_dir, timers=TIMERS).start()
    harness.wait_until(lambda: pair.old.consumer_online(group, f"C-{label}"), 60,
                       "the consumer online on old", 1.0)
    producer = harness.Pod(f"P-{label}", "producer", namesrv=sc_p.namesrv_addr, topic=topic, group=pgroup,
                           workdir=test_dir, timers=TIMERS, rate=20).start()
    harness.wait_until(lambda: len(consumer.records()) >= 20, 60, "the consumer receiving on old", 0.5)
    return topic, group, sc_c, sc_p, consumer, producer


def _sent_to_new(producer: harness.Pod) -> list[str]:
    return [r[0] for r in producer.records() if r[1].startswith(PREFIX)]


def _account(producer: harness.Pod, consumer: harness.Pod) -> dict:
    sent = [r[0] for r in producer.records()]
    received: dict[str, int] = {}
    for r in consumer.records():
        received[r[0]] = received.get(r[0], 0) + 1
    return {
        "sent": len(set(sent)),
        "sent_new": len(set(_sent_to_new(producer))),
        "received": len(received),
        "lost": sorted(set(sent) - set(received)),
        "duplicates": sum(1 for n in received.values() if n > 1),
    }


def _metric(sc: harness.Sidecar, line_start: str) -> float:
    status, text = sc._http("GET", "/metrics")
    assert status == 200
    for line in str(text).splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not exported:\n{text}")


def _finish(pair, group, topic, consumer, producer, keep_s=6.0):
    """Produce a little more on new, stop the producer, let the consumer drain new."""
    time.sleep(keep_s)
    producer.stop()
    harness.wait_until(lambda: pair.new.consumer_lag(group, topic) == 0, 90, "the consumer drained new", 2.0)
    time.sleep(2 * TIMERS.persist_s + 1)
    consumer.stop()
    return _account(producer, consumer)


def test_producers_first_is_refused_and_loses_messages_when_forced(pair_gates, test_dir, sidecar_binary):
    pair = pair_gates
    topic, group, sc_c, sc_p, consumer, producer = _setup(pair, test_dir, sidecar_binary, "Forced")
    try:
        # 1. Producers first: refused, the group named.
        status, doc = sc_p.put_route({"producer": "new"})
        assert status == 409, json.dumps(doc.get("gates"), indent=1)
        assert doc["refused_by"] == ["consumers_on_target"], doc
        assert group in doc["error"] and "seed_offsets" in doc["error"], doc["error"]
        harness.log(f"refusal: {doc['error']}")
        assert sc_p.route()["roles"]["producer"]["target"] == "old", "a refused switch changed the route"
        assert _metric(sc_p, 'rmq_sidecar_gate_refusals_total{gate="consumers_on_target"}') == 1
        # A dry run with seeding would pass, and changes nothing.
        status, doc = sc_p.put_route({"producer": "new", "seed_offsets": True, "dry_run": True})
        assert status == 200 and doc["would_switch"] is True, doc
        status, doc = sc_p.put_route({"producer": "new", "dry_run": True})
        assert status == 200 and doc["would_switch"] is False, f"the seeding dry run wrote offsets: {doc}"

        # 2. Forced: applied, counted, logged.
        status, doc = sc_p.put_route({"producer": "new", "force": True})
        assert status == 200 and doc["roles"]["producer"]["target"] == "new", doc
        assert doc["gates"]["last"]["force"] is True and doc["gates"]["last"]["refused_by"] == ["consumers_on_target"]
        assert _metric(sc_p, 'rmq_sidecar_gate_forced_total{gate="consumers_on_target"}') == 1
        assert "FORCED past the migration gates" in sc_p.log_path.read_text()

        # 3. The last consumer leaving old right away: refused (old written to seconds ago).
        status, doc = sc_c.put_route({"consumer": "new"})
        assert status == 409, doc
        assert doc["refused_by"] == ["backlog_drained"], doc
        harness.log(f"consumer refusal: {doc['error']}")

        # 4. A restart mid-migration keeps the roles, the gates' view and the recorded usage.
        sc_p.stop()
        sc_p.start()
        route = sc_p.route()
        assert route["roles"]["producer"]["target"] == "new" and route["roles"]["consumer"]["target"] == "old"
        assert route["gates"]["last"]["force"] is True, route["gates"]
        status, pre = sc_p._http("GET", "/preflight?to=new")
        assert status == 200 and topic in [t["topic"] for t in pre["topics"]], pre

        harness.wait_until(lambda: len(_sent_to_new(producer)) >= 60, 60, "the producer acked by new", 0.5)
        # 5. The consumer moves once its gate passes (old drained and quiet): it arrives on new
        # as a brand-new group and starts at the queues' end.
        _, waited, refused = sc_c.switch_when_gates_pass(120, consumer="new")
        harness.log(f"consumer gate passed after {waited:.1f}s; last refusal: {str(refused)[:300]}")
        harness.wait_until(lambda: pair.new.consumer_online(group, consumer.name), 60, "the consumer on new", 1.0)
        acc = _finish(pair, group, topic, consumer, producer)
    finally:
        for p in (producer, consumer):
            p.stop()
        for sc in (sc_p, sc_c):
            sc.stop()
    harness.log(f"forced producers-first accounting: sent {acc['sent']} ({acc['sent_new']} to new), "
                f"received {acc['received']}, lost {len(acc['lost'])}, duplicates {acc['duplicates']}")
    assert acc["lost"], ("nothing was lost with the producers forced first: this broker no longer shows the "
                         "loss the gate prevents, so the gate is not proven here")
    on_new = set(_sent_to_new(producer))
    assert set(acc["lost"]) <= on_new, "a message sent to old was lost: not the producers-first loss"


def test_seeded_offsets_make_the_producers_first_order_lossless(pair_gates, test_dir, sidecar_binary):
    pair = pair_gates
    topic, group, sc_c, sc_p, consumer, producer = _setup(pair, test_dir, sidecar_binary, "Seeded")
    try:
        status, doc = sc_p.put_route({"producer": "new", "seed_offsets": True})
        assert status == 200 and doc["roles"]["producer"]["target"] == "new", doc
        check = next(c for c in doc["gates"]["last"]["checks"] if c["gate"] == "consumers_on_target")
        standing = check["producer"]["topics"][0]["groups"][0]
        assert standing["group"] == group and standing["standing"] == "seeded", check
        assert len(standing["queues_without_offset"]) == 2, standing
        harness.log(f"seeded: {standing['detail']}")
        # Seeded offsets are what the group has on new now: the gate passes without seeding.
        status, doc = sc_p.put_route({"producer": "new", "dry_run": True})
        assert status == 200 and doc["would_switch"] is False, "a dry run of the current route switches nothing"
        # Rolling the producer back is gated in reverse: the group is online on old, so it would pass.
        status, doc = sc_p.put_route({"producer": "old", "dry_run": True})
        assert status == 200 and doc["would_switch"] is True, doc

        harness.wait_until(lambda: len(_sent_to_new(producer)) >= 60, 60, "the producer acked by new", 0.5)
        _, waited, _ = sc_c.switch_when_gates_pass(120, consumer="new")
        harness.log(f"consumer gate passed after {waited:.1f}s")
        harness.wait_until(lambda: pair.new.consumer_online(group, consumer.name), 60, "the consumer on new", 1.0)
        acc = _finish(pair, group, topic, consumer, producer)
    finally:
        for p in (producer, consumer):
            p.stop()
        for sc in (sc_p, sc_c):
            sc.stop()
    harness.log(f"seeded producers-first accounting: sent {acc['sent']} ({acc['sent_new']} to new), "
                f"received {acc['received']}, lost {len(acc['lost'])}, duplicates {acc['duplicates']}")
    assert acc["sent_new"] >= 60
    assert acc["lost"] == [], f"lost {len(acc['lost'])}: {acc['lost'][:20]}"
