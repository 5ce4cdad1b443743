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

import random

import harness

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
