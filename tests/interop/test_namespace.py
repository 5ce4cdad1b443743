"""Namespaces (TDMQ 4.x) on a real RocketMQ 5.3.3 cluster with the official Java client 4.9.8.

The topic and groups exist on the cluster only under their namespaced names
(``<ns>%Topic``, ``<ns>%Group``), as on a TDMQ 4.x cluster. Apps written without a namespace
use it through a sidecar whose ``clusters.new.namespace`` is set; control apps use the official
client's own ``setNamespace`` against the cluster directly. Both exchange messages both ways:
a concurrent consumer behind the sidecar fails the first delivery of every 7th key (those come
back through ``%RETRY%<ns>%Group``), an orderly consumer behind the sidecar locks its queues;
every acknowledged send is consumed by every group (0 lost), the app sees the plain topic name
on every message (retries included), and the broker knows the sidecar's app by the namespaced
names only.
"""

from __future__ import annotations

import json
import random
import time

import harness
import wiretap

NS = "MQ_INST_rmqtest|ns1"
TIMERS = harness.FAST_TIMERS


def test_an_app_without_a_namespace_uses_a_namespaced_cluster(pair_distinct, test_dir, sidecar_binary):
    new = pair_distinct.new
    tag = random.randrange(10**6)
    topic, group, orderly, control = f"NsTopic{tag}", f"NsGroup{tag}", f"NsOrderly{tag}", f"NsControl{tag}"
    new.update_topic(f"{NS}%{topic}", 4)
    for g in (group, orderly, control):
        new.update_sub_group(f"{NS}%{g}")
    sc = harness.Sidecar("namespace", old_namesrv=pair_distinct.old.namesrv_addr, new_namesrv=new.namesrv_addr,
                         workdir=test_dir, target="new", binary=sidecar_binary,
                         cluster_toml={"new": {"namespace": NS}})
    pods: list[harness.Pod] = []

    def pod(name, mode, group_name, *, direct=False, **kw):
        extra = list(kw.pop("extra_args", ()))
        if direct:
            extra += ["--namespace", NS]
        p = harness.Pod(f"{name}-{tag}", mode, namesrv=new.namesrv_addr if direct else sc.namesrv_addr,
                        topic=topic, group=group_name, workdir=test_dir, timers=TIMERS, extra_args=extra, **kw)
        pods.append(p)
        return p.start()

    try:
        sc.start()
        app_c = pod("app-c", "consumer", group, extra_args=["--fail-every", "7"])
        app_o = pod("app-o", "consumer", orderly, extra_args=["--orderly"])
        ctl_c = pod("ctl-c", "consumer", control, direct=True)
        harness.wait_until(lambda: all(new.consumer_online(f"{NS}%{g}", p.name)
                                       for g, p in ((group, app_c), (orderly, app_o), (control, ctl_c))),
                           60, "every consumer online under its namespaced group", 1.0)
        app_p = pod("app-p", "producer", f"NsProducer{tag}", rate=20, count=200)
        ctl_p = pod("ctl-p", "producer", f"NsCtlProducer{tag}", direct=True, rate=20, count=200)
        for p in (app_p, ctl_p):
            assert p.wait_exit(90) == 0, p.output()[-2000:]
        sent = {r[0] for p in (app_p, ctl_p) for r in p.records()}
        assert len(sent) == 400

        def received(p: harness.Pod) -> set:
            return {r[0] for r in p.records()}

        # The retried messages come back after the broker's first retry delay (10 s).
        harness.wait_until(lambda: all(sent <= received(p) for p in (app_c, app_o, ctl_c)), 120,
                           "every group consumed every acknowledged send", 1.0)
        retried = [r for r in app_c.records() if r[6] != "0"]
        harness.log(f"namespace: {len(sent)} sent (half by the app behind the sidecar, half by the "
                    f"control app with setNamespace); app consumer {len(received(app_c))}, orderly "
                    f"{len(received(app_o))}, control {len(received(ctl_c))}; {len(retried)} delivered again "
                    f"through %RETRY%{NS}%{group}")
        assert retried, "no message came back through the retry topic"
        seen_topics = {r[5] for p in (app_c, app_o) for r in p.records()}
        assert seen_topics == {topic}, f"the app saw {seen_topics}, not its plain topic"
        assert {r[5] for r in ctl_c.records()} == {topic}, "the control app's client unwraps it too"
        # What the broker knows: the app's group only under its namespaced name.
        assert new.consumer_online(f"{NS}%{group}", app_c.name)
        assert not new.consumer_online(group, app_c.name), "the plain group name reached the broker"
        routes = sc.route()
        assert routes["partial_answers"] == [], routes["partial_answers"]
    finally:
        for p in pods:
            p.stop()
        sc.stop()


def test_migration_to_a_namespaced_cluster(pair_distinct, test_dir, sidecar_binary, record_migration):
    """The interop migration (two consumer pods and a producer pod, the safe order through the
    gates) onto a new cluster that knows the topic and group only by their namespaced names."""
    report = harness.run_migration(pair_distinct.old, pair_distinct.new, test_dir,
                                   label=f"4.9.7 -> 5.3.3 namespaced ({NS})", timers=TIMERS, rate=50,
                                   sidecar_binary=sidecar_binary, new_namespace=NS)
    record_migration(report)
    assert report.error is None, report.error
    assert report.sent_new > 0, "nothing went to the new cluster"
    assert report.lost == [], f"lost {len(report.lost)}: {report.lost[:20]}"


#: The request fields that name a topic or a group, per code, compared between the two paths.
NAME_FIELDS = {310: ("a", "b", "c"), 11: ("consumerGroup", "topic"), 14: ("consumerGroup", "topic"),
               15: ("consumerGroup", "topic"), 38: ("consumerGroup",), 35: ("producerGroup", "consumerGroup")}


def _heartbeat_names(body: bytes) -> tuple:
    hb = json.loads(body)
    consumers = sorted((c["groupName"], tuple(sorted(s["topic"] for s in c.get("subscriptionDataSet", []))))
                       for c in hb.get("consumerDataSet", []))
    producers = sorted(p["groupName"] for p in hb.get("producerDataSet", []))
    return tuple(consumers), tuple(producers)


def test_the_sidecar_sends_what_the_official_client_sends_with_set_namespace(pair_distinct, test_dir,
                                                                             sidecar_binary):
    """The same app twice against the namespaced cluster: once without a namespace through the
    sidecar, once with the official client's setNamespace directly. Each path's broker traffic
    goes through its own recording tap (a name server in front of the real one points its
    clients at the tap); the requests of every code both paths sent are compared field by
    field: the same ext fields, the same namespaced names, the same heartbeat groups and
    subscriptions."""
    new = pair_distinct.new
    tag = random.randrange(10**6)
    topic, group, pgroup = f"NsTap{tag}", f"NsTapGroup{tag}", f"NsTapProducer{tag}"
    new.update_topic(f"{NS}%{topic}", 4)
    new.update_sub_group(f"{NS}%{group}")
    taps = {side: wiretap.BrokerTap(new.broker_addr) for side in ("sidecar", "official")}
    names = {side: wiretap.NamesrvRewriter(new.namesrv_addr, new.broker_addr, taps[side].addr) for side in taps}
    sc = harness.Sidecar("ns-tap", old_namesrv=pair_distinct.old.namesrv_addr, new_namesrv=names["sidecar"].addr,
                         workdir=test_dir, target="new", binary=sidecar_binary,
                         cluster_toml={"new": {"namespace": NS}})
    try:
        sc.start()
        # One path after the other, each alone in the group, so that each consumer is handed
        # every queue (the topic's and the retry topic's) and sends every kind of request.
        for side, namesrv, extra in (("sidecar", sc.namesrv_addr, []),
                                     ("official", names["official"].addr, ["--namespace", NS])):
            pods = []
            try:
                consumer = harness.Pod(f"tap-{side}-c-{tag}", "consumer", namesrv=namesrv, topic=topic,
                                       group=group, workdir=test_dir, timers=TIMERS, extra_args=extra).start()
                pods.append(consumer)
                harness.wait_until(lambda: new.consumer_online(f"{NS}%{group}", consumer.name), 60,
                                   f"the {side} consumer online", 1.0)
                producer = harness.Pod(f"tap-{side}-p-{tag}", "producer", namesrv=namesrv, topic=topic,
                                       group=pgroup, workdir=test_dir, timers=TIMERS, extra_args=extra,
                                       rate=20, count=40).start()
                pods.append(producer)
                assert producer.wait_exit(90) == 0, producer.output()[-2000:]
                sent = {r[0] for r in producer.records()}
                harness.wait_until(lambda: sent <= {r[0] for r in consumer.records()}, 60,
                                   f"the {side} consumer consumed every send", 1.0)
                time.sleep(2 * TIMERS.persist_s + 1)  # offsets committed
            finally:
                for p in pods:
                    p.stop()
    finally:
        sc.stop()
        for t in list(taps.values()) + list(names.values()):
            t.close()
    by_code = {side: {} for side in taps}
    for side, tap in taps.items():
        for r in tap.requests:
            by_code[side].setdefault(r.code, []).append(r)
    common = sorted(set(by_code["sidecar"]) & set(by_code["official"]))
    harness.log(f"namespace tap: request codes on both paths {common}; sidecar only "
                f"{sorted(set(by_code['sidecar']) - set(common))}, official only "
                f"{sorted(set(by_code['official']) - set(common))}")
    for code in (310, 11, 14, 15, 34, 38):
        assert code in common, f"request {code} not seen on both paths"
    for code in common:
        ours, theirs = by_code["sidecar"][code], by_code["official"][code]
        keys_ours = set().union(*(r.ext for r in ours))
        keys_theirs = set().union(*(r.ext for r in theirs))
        assert keys_ours == keys_theirs, f"request {code}: fields {sorted(keys_ours)} != {sorted(keys_theirs)}"
        fields = NAME_FIELDS.get(code, ())
        if not fields:
            continue
        names_ours = {tuple(r.ext.get(k) for k in fields) for r in ours}
        names_theirs = {tuple(r.ext.get(k) for k in fields) for r in theirs}
        assert names_ours == names_theirs, f"request {code} {fields}: {sorted(names_ours)} != {sorted(names_theirs)}"
        for values in names_ours:
            for key, value in zip(fields, values):
                if value is not None and key != "c" and value != "CLIENT_INNER_PRODUCER":
                    assert NS + "%" in value, f"request {code} {key}: {value!r} is not namespaced"
    # Heartbeats: the same namespaced groups and subscriptions (the clients' own inner
    # producer group aside, which is a system group on both).
    ours = {_heartbeat_names(r.body) for r in by_code["sidecar"][34] if r.body}
    theirs = {_heartbeat_names(r.body) for r in by_code["official"][34] if r.body}
    assert ours & theirs, f"no heartbeat in common: sidecar {sorted(ours)[:3]} official {sorted(theirs)[:3]}"
