"""Per-role routing on real Apache RocketMQ (old 4.9.7, new 5.3.3) with the official Java client.

* ``test_a_pod_moves_its_consumers_first_and_its_producers_later``: pod X consumes topic A and
  produces topic B (two JVMs behind one sidecar). Other pods: Y consumes A on old, Z produces A,
  V consumes B on old, W consumes B on new. X moves its consumers to new, then Z moves, then X
  moves its producers. Proven on the servers, not by the sidecar's word: the old cluster (where X
  then only produces) stops listing X in A's group within seconds and never again, and Y (fully
  on old) is handed every queue of A there; the new cluster lists X. Keyed traffic on both topics
  throughout: every acknowledged send consumed (lost = 0), duplicates counted.
* ``test_an_orderly_533_consumer_leaves_the_old_cluster_at_once``: a 5.3.3 client with an orderly
  listener (it keeps locking its queues with LOCK_BATCH_MQ and heartbeating every broker it still
  holds a connection to) is switched whole to new while another member of its group stays on old:
  the old cluster drops it from the group within seconds and the member that stays consumes
  every queue, with nothing lost.

Latency figures (from the switch to what the servers show) are printed in the report; they
are figures, not assertions (client timers decide most of them).
"""

from __future__ import annotations

import random
import time

import harness

PREFIX = "new~"
#: Far below the broker's 120 s channel expiry, which is what leaving a group took before.
LEAVE_WITHIN_S = 20.0


def _sidecar(name, pair, test_dir, binary, target="old") -> harness.Sidecar:
    return harness.Sidecar(name, old_namesrv=pair.old.namesrv_addr, new_namesrv=pair.new.namesrv_addr,
                           workdir=test_dir, target=target, binary=binary, broker_name_prefix=PREFIX)


def _kind(broker_name: str) -> str:
    return "new" if broker_name.startswith(PREFIX) else "old"


def _wait_records(pod: harness.Pod, pred, timeout: float, desc: str) -> None:
    harness.wait_until(lambda: pred(pod.records()), timeout, desc)


def _drained(cluster: harness.Cluster, group: str, topic: str) -> bool:
    lag = cluster.consumer_lag(group, topic)
    return lag == 0


def _account(label: str, producer: harness.Pod, consumers: list[harness.Pod]) -> dict:
    sent = {r[0] for r in producer.records()}
    received: dict[str, int] = {}
    for c in consumers:
        for r in c.records():
            received[r[0]] = received.get(r[0], 0) + 1
    lost = sorted(sent - set(received))
    return {
        "topic": label,
        "sent": len(sent),
        "sent_new": sum(1 for r in producer.records() if _kind(r[1]) == "new"),
        "received_unique": len(set(received)),
        "lost": lost,
        "duplicates": sum(1 for n in received.values() if n > 1),
        "per_consumer": {c.name: len(c.records()) for c in consumers},
    }


def test_a_pod_moves_its_consumers_first_and_its_producers_later(pair_distinct, test_dir, sidecar_binary):
    pair = pair_distinct
    old, new = pair.old, pair.new
    tag = random.randrange(10**6)
    topic_a, topic_b = f"RoleA{tag}", f"RoleB{tag}"
    group_a, group_b = f"RoleGroupA{tag}", f"RoleGroupB{tag}"
    for c in (old, new):
        c.update_topic(topic_a, 4)
        c.update_topic(topic_b, 4)
        c.update_sub_group(group_a)
        c.update_sub_group(group_b)
    timers = harness.FAST_TIMERS
    sidecars = {n: _sidecar(f"role-{n}", pair, test_dir, sidecar_binary, target=t)
                for n, t in (("x", "old"), ("y", "old"), ("z", "old"), ("v", "old"), ("w", "new"))}
    pods: dict[str, harness.Pod] = {}

    def pod(name, mode, sc, topic, group, **kw) -> harness.Pod:
        p = harness.Pod(f"role-{name}-{tag}", mode, namesrv=sidecars[sc].namesrv_addr, topic=topic,
                        group=group, workdir=test_dir, timers=timers, **kw)
        pods[name] = p
        return p

    timeline: list[tuple[float, str]] = []
    t0 = time.time()

    def mark(what: str) -> None:
        timeline.append((time.time() - t0, what))
        harness.log(f"roles: {what}")

    try:
        for sc in sidecars.values():
            sc.start()
        xc = pod("xc", "consumer", "x", topic_a, group_a).start()
        y = pod("y", "consumer", "y", topic_a, group_a).start()
        v = pod("v", "consumer", "v", topic_b, group_b).start()
        w = pod("w", "consumer", "w", topic_b, group_b).start()
        harness.wait_until(lambda: old.consumer_online(group_a, xc.name) and old.consumer_online(group_a, y.name),
                           60, "both A consumers online on old")
        harness.wait_until(lambda: new.consumer_online(group_b, w.name), 60, "W online on new")
        z = pod("z", "producer", "z", topic_a, f"RoleProdA{tag}", rate=20).start()
        xp = pod("xp", "producer", "x", topic_b, f"RoleProdB{tag}", rate=20).start()
        _wait_records(xc, lambda r: len(r) >= 5, 60, "X consumes A on old")
        _wait_records(v, lambda r: len(r) >= 5, 60, "V consumes B on old")
        mark("traffic flows: X consumes A and produces B on old")

        # What X uses, recorded from the official client's own traffic, checked against new.
        status, pre = sidecars["x"]._http("GET", "/preflight?to=new")
        assert status == 200, pre
        by_topic = {t["topic"]: t for t in pre["topics"]}
        assert by_topic[topic_a]["consumed_by"] == [group_a] and by_topic[topic_a]["on_target"] == "present", pre
        assert by_topic[topic_b]["produced_by"] == [f"RoleProdB{tag}"], pre
        assert by_topic[topic_b]["on_target"] == "present", pre
        assert f"%RETRY%{group_a}" in pre["groups"][group_a], pre
        assert set(pre["missing"]) <= {f"%RETRY%{group_a}"}, pre
        mark(f"preflight to new: {len(pre['topics'])} topics, missing {pre['missing']}")

        # 1. X's consumers to new; its producers stay on old.
        switched = time.time()
        sidecars["x"].switch_roles(consumer="new")
        mark("X consumers -> new")
        harness.wait_until(lambda: not old.consumer_online(group_a, xc.name), LEAVE_WITHIN_S,
                           "old still lists X in A's group")
        left_old_s = time.time() - switched
        mark(f"old no longer lists X in {group_a} ({left_old_s:.1f}s after the switch)")
        harness.wait_until(lambda: new.consumer_online(group_a, xc.name), 60, "new lists X in A's group")
        mark("new lists X in A's group")
        # Y is now the only member on old: it is handed every queue of A there.
        since = time.time()
        harness.wait_until(
            lambda: {r[2] for r in y.records() if float(r[4]) / 1000 > since + 2} >= {"0", "1", "2", "3"},
            60, "Y does not consume every queue of A on old")
        mark("Y consumes all four queues of A on old")

        # 2. Z (A's producer) moves whole: A now goes to new, where X consumes it.
        switched = time.time()
        sidecars["z"].switch("new")
        mark("Z -> new")
        _wait_records(z, lambda r: any(_kind(x[1]) == "new" for x in r), 60, "Z sends to new")
        z_first_new_s = min(float(x[4]) / 1000 for x in z.records() if _kind(x[1]) == "new") - switched
        _wait_records(xc, lambda r: any(_kind(x[1]) == "new" for x in r), 60, "X consumes A from new")
        mark(f"Z sends A to new ({z_first_new_s:.1f}s after its switch); X consumes it there")

        # 3. X's producers follow: B now goes to new, where W consumes it.
        switched = time.time()
        sidecars["x"].switch_roles(producer="new")
        mark("X producers -> new")
        _wait_records(xp, lambda r: any(_kind(x[1]) == "new" for x in r), 60, "X sends B to new")
        xp_first_new_s = min(float(x[4]) / 1000 for x in xp.records() if _kind(x[1]) == "new") - switched
        _wait_records(w, lambda r: len(r) > 0, 60, "W consumes B on new")
        mark(f"X sends B to new ({xp_first_new_s:.1f}s after its switch); W consumes it")

        # The old backlogs drain (Y for A, V for B); then the producers stop.
        harness.wait_until(lambda: _drained(old, group_a, topic_a), 90, "A's backlog on old drained")
        harness.wait_until(lambda: _drained(old, group_b, topic_b), 90, "B's backlog on old drained")
        mark("old backlogs drained")
        assert not old.consumer_online(group_a, xc.name), "X came back into A's group on old"
        time.sleep(3)
        z.stop()
        xp.stop()
        sent_a, sent_b = set(z.keys()), set(xp.keys())
        harness.wait_until(lambda: sent_a <= set(xc.keys()) | set(y.keys())
                           and sent_b <= set(v.keys()) | set(w.keys()), 60,
                           "every acknowledged send consumed")
        mark("every acknowledged send consumed")
        for p in (xc, y, v, w):
            p.stop()
    finally:
        for p in pods.values():
            p.stop()
        for sc in sidecars.values():
            sc.stop()

    a = _account(topic_a, pods["z"], [pods["xc"], pods["y"]])
    b = _account(topic_b, pods["xp"], [pods["v"], pods["w"]])
    harness.log("roles timeline:\n" + "\n".join(f"  {t:6.1f}s {what}" for t, what in timeline))
    harness.log(f"roles accounting: {a}\n{b}")
    harness.log(f"roles latency (client route poll {timers.poll_s:g}s): X left old's group "
                f"{left_old_s:.1f}s after its consumer switch; Z first sent to new {z_first_new_s:.1f}s, "
                f"X's producer {xp_first_new_s:.1f}s after their switches")
    for acc in (a, b):
        assert acc["sent"] > 50 and acc["sent_new"] > 0, acc
        assert acc["lost"] == [], f"lost {len(acc['lost'])} acknowledged keys of {acc['topic']}: {acc['lost'][:10]}"


def test_an_orderly_533_consumer_leaves_the_old_cluster_at_once(pair_distinct, test_dir, sidecar_binary):
    pair = pair_distinct
    old, new = pair.old, pair.new
    tag = random.randrange(10**6)
    topic, group = f"RoleOrderly{tag}", f"RoleOrderlyGroup{tag}"
    for c in (old, new):
        c.update_topic(topic, 4)
        c.update_sub_group(group)
    # Default client timers: heartbeats every 30 s, so leaving "within seconds" is the
    # sidecar's doing, not the client's.
    sidecars = {n: _sidecar(f"orderly-{n}", pair, test_dir, sidecar_binary) for n in ("m", "s", "p")}
    pods: list[harness.Pod] = []
    try:
        for sc in sidecars.values():
            sc.start()
        mover = harness.Pod(f"orderly-m-{tag}", "consumer", namesrv=sidecars["m"].namesrv_addr, topic=topic,
                            group=group, workdir=test_dir, client_version=harness.NEW_CLIENT_VERSION,
                            extra_args=["--orderly"]).start()
        stayer = harness.Pod(f"orderly-s-{tag}", "consumer", namesrv=sidecars["s"].namesrv_addr, topic=topic,
                             group=group, workdir=test_dir, client_version=harness.NEW_CLIENT_VERSION,
                             extra_args=["--orderly"]).start()
        pods += [mover, stayer]
        harness.wait_until(lambda: old.consumer_online(group, mover.name) and old.consumer_online(group, stayer.name),
                           90, "both orderly consumers online on old")
        producer = harness.Pod(f"orderly-p-{tag}", "producer", namesrv=sidecars["p"].namesrv_addr, topic=topic,
                               group=f"RoleOrderlyProd{tag}", workdir=test_dir, rate=20).start()
        pods.append(producer)
        harness.wait_until(lambda: len(mover.records()) >= 5 and len(stayer.records()) >= 5, 90,
                           "both orderly consumers consume on old")
        switched = time.time()
        sidecars["m"].switch("new")
        harness.wait_until(lambda: not old.consumer_online(group, mover.name), LEAVE_WITHIN_S,
                           "old still lists the switched orderly consumer")
        left_s = time.time() - switched
        since = time.time()
        harness.wait_until(
            lambda: {r[2] for r in stayer.records() if float(r[4]) / 1000 > since + 2} >= {"0", "1", "2", "3"},
            90, "the consumer that stays does not get every queue")
        # Still gone a while later: the client's own heartbeats and locks on its old
        # connections do not bring it back.
        time.sleep(35)
        assert not old.consumer_online(group, mover.name), "the switched consumer is back in the old group"
        producer.stop()
        sent = set(producer.keys())
        harness.wait_until(lambda: sent <= set(mover.keys()) | set(stayer.keys()), 90,
                           "every acknowledged send consumed")
    finally:
        for p in pods:
            p.stop()
        for sc in sidecars.values():
            sc.stop()
    lost = sent - set(mover.keys()) - set(stayer.keys())
    harness.log(f"orderly 5.3.3: left the old group {left_s:.1f}s after the switch; sent {len(sent)}, lost {len(lost)}")
    assert len(sent) > 50
    assert not lost, sorted(lost)[:10]
