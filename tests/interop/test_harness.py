"""Proves the interop harness itself, without the sidecar.

* the mqadmin output parsers on real outputs of both server versions (no servers needed);
* both clusters of the "distinct" pair start and are isolated from each other;
* the 4.9.8 Java client smoke works directly against each cluster, and the 5.3.3 client against
  the new one; the broker-side helpers (topic_max_offsets_total, keys_stored, consumer_lag) see
  the smoke's messages;
* producer/consumer pods: the producer never skips a key and both stop paths (stop file,
  SIGTERM) end them cleanly.

Run: ``python3 -m pytest tests/interop/test_harness.py -v``
"""

from __future__ import annotations

import random
import signal
import time

import pytest

import harness

# Real outputs captured from mqadmin 4.9.7 and 5.3.3 (trimmed).
PROGRESS_497 = """\
#Topic                                                            #Broker Name                      #QID  #Broker Offset        #Consumer Offset      #Diff                 #LastTime
%RETRY%GA                                                         old-broker-a                      0     0                     0                     0                     N/A
TopicA                                                            old-broker-a                      0     12                    12                    0                     2026-11-25 11:56:01
TopicA                                                            old-broker-a                      1     12                    10                    2                     2026-11-25 11:56:01
TopicA                                                            old-broker-a                      2     13                    13                    0                     2026-11-25 11:56:01
TopicA                                                            old-broker-a                      3     13                    0                     13                    N/A

Consume TPS: 5.00
Diff Total: 15
"""
PROGRESS_533 = """\
#Topic                                                            #Broker Name                      #QID  #Broker Offset        #Consumer Offset      #Diff                #Inflight           #LastTime
TopicA                                                            new-broker-a                      0     25                    25                    0                    0                    2026-11-25 11:56:56
TopicA                                                            new-broker-a                      1     25                    20                    5                    0                    2026-11-25 11:56:56
AVeryLongTopicNameThatOverflowsTheSixtyFourCharacterColumnWidthOfMqadminXX new-broker-a 2 7 7 0 0 2026-11-25 11:56:56

Consume TPS: 0.00
Consume Diff Total: 5
Consume Inflight Total: 0
"""
TOPIC_STATUS_533 = """\
#Broker Name                      #QID  #Min Offset           #Max Offset             #Last Updated
new-broker-a                      0     0                     25                      2026-11-25 11:56:56,207
new-broker-a                      1     0                     25                      2026-11-25 11:56:56,209
new-broker-a                      2     0                     0                       

Topic Put TPS: 0.0
"""
CLUSTER_LIST_497 = """\
#Cluster Name     #Broker Name            #BID  #Addr                  #Version                #InTPS(LOAD)       #OutTPS(LOAD) #PCWait(ms) #Hour #SPACE
OldCluster        old-broker-a            0     127.0.0.1:30911        V4_9_7                   0.00(0,0ms)         0.00(0,0ms)          0 498779.92 0.1400
"""


def test_parse_consumer_progress_both_layouts():
    rows = harness.parse_consumer_progress(PROGRESS_497)
    assert [(r.topic, r.queue_id, r.diff) for r in rows if r.topic == "TopicA"] == [
        ("TopicA", 0, 0), ("TopicA", 1, 2), ("TopicA", 2, 0), ("TopicA", 3, 13)]
    assert sum(r.diff for r in rows if r.topic == "TopicA") == 15
    assert any(r.topic == "%RETRY%GA" for r in rows)
    rows = harness.parse_consumer_progress(PROGRESS_533)
    assert sum(r.diff for r in rows if r.topic == "TopicA") == 5
    long_name = [r for r in rows if r.topic.startswith("AVeryLong")]
    assert len(long_name) == 1 and long_name[0].broker_offset == 7
    assert harness.parse_consumer_progress("org.apache...SubCommandException: command failed\n"
                                           "CODE: 17  DESC: No topic route info") == []


def test_parse_topic_status_and_cluster_list():
    rows = harness.parse_topic_status(TOPIC_STATUS_533)
    assert rows == [("new-broker-a", 0, 0, 25), ("new-broker-a", 1, 0, 25), ("new-broker-a", 2, 0, 0)]
    assert harness.parse_cluster_list(CLUSTER_LIST_497) == [
        dict(cluster="OldCluster", broker="old-broker-a", bid=0, addr="127.0.0.1:30911", version="V4_9_7")]


def test_clusters_start_and_are_isolated(pair_distinct):
    old, new = pair_distinct.old, pair_distinct.new
    assert old.alive() and new.alive()
    old_rows, new_rows = old.cluster_list(), new.cluster_list()
    assert [(r["broker"], r["addr"]) for r in old_rows] == [(old.broker_name, old.broker_addr)]
    assert [(r["broker"], r["addr"]) for r in new_rows] == [(new.broker_name, new.broker_addr)]
    assert old_rows[0]["version"] == "V" + harness.OLD_SERVER_VERSION.replace(".", "_")
    assert new_rows[0]["version"] == "V" + harness.NEW_SERVER_VERSION.replace(".", "_")
    harness.log(f"cluster start-up times: old {old.started_in:.1f}s, new {new.started_in:.1f}s")


@pytest.mark.parametrize("side,client_version", [
    ("old", harness.OLD_CLIENT_VERSION),
    ("new", harness.OLD_CLIENT_VERSION),
    ("new", harness.NEW_CLIENT_VERSION),
])
def test_smoke_direct(pair_distinct, test_dir, side, client_version):
    """Official client smoke straight at a cluster, then broker-side checks of what it wrote."""
    cluster = getattr(pair_distinct, side)
    tag = f"{side}{client_version.replace('.', '')}{random.randrange(10**6)}"
    topic, group = f"SmokeTopic{tag}", f"SmokeGroup{tag}"
    cluster.update_topic(topic, 4)
    cluster.update_sub_group(group)
    count = 50
    res = harness.run_smoke(cluster.namesrv_addr, topic, group, count, test_dir,
                            client_version=client_version)
    assert res.ok, f"{res.summary}\n{res.output[-3000:]}"
    assert len(res.records) == count
    assert {r[1] for r in res.records} == {cluster.broker_name}

    # broker-side: the messages are stored there, and the consumer's offsets are committed
    assert cluster.topic_max_offsets_total(topic) >= count
    keys = [r[0] for r in res.records]
    check = cluster.keys_stored(topic, keys + ["no-such-key-" + tag], sample=None)
    assert set(check.found) == set(keys)
    assert check.missing == ["no-such-key-" + tag]
    assert set(check.store_hosts.values()) == {cluster.broker_addr}
    assert harness.wait_until(lambda: cluster.consumer_lag(group, topic) == 0, 20,
                              f"lag 0 for {group}", 1.0)
    assert cluster.consumer_lag("NoSuchGroup" + tag, topic) is None
    assert cluster.topic_max_offsets_total("NoSuchTopic" + tag) is None


def test_producer_and_consumer_pods(pair_distinct, test_dir):
    """Producer/consumer pod modes straight at the old cluster; both stop paths."""
    old = pair_distinct.old
    tag = str(random.randrange(10**6))
    topic, group = f"PodTopic{tag}", f"PodGroup{tag}"
    old.update_topic(topic, 4)
    old.update_sub_group(group)
    consumer = harness.Pod("cons" + tag, "consumer", namesrv=old.namesrv_addr, topic=topic, group=group,
                           workdir=test_dir, timers=harness.FAST_TIMERS).start()
    producer = harness.Pod("prod" + tag, "producer", namesrv=old.namesrv_addr, topic=topic,
                           group="PodProducer" + tag, workdir=test_dir, rate=50,
                           timers=harness.FAST_TIMERS)
    try:
        harness.wait_until(lambda: old.consumer_online(group, consumer.name), 30, "consumer online", 1.0,
                           consumer.proc.exited_reason)
        time.sleep(3)  # rebalance (2 s) so the fresh group owns the queues before anything is sent
        producer.start()
        harness.wait_until(lambda: len(producer.records()) >= 100, 30, "100 acked sends", 0.5,
                           producer.proc.exited_reason)
        assert producer.stop() == 0  # stop file -> clean exit 0
        sent = producer.keys()
        assert sent == [f"k-{producer.name}-{i}" for i in range(len(sent))], "producer skipped or reordered keys"
        rec = producer.records()[0]
        assert len(rec) == 5 and rec[1] == old.broker_name and rec[4].isdigit()
        harness.wait_until(lambda: set(sent) <= set(consumer.keys()), 30, "consumer got every key", 0.5)
        # SIGTERM path: the JVM runs the shutdown hook (which calls shutdown()) and exits 143
        rc = consumer.proc.stop(20, sig=signal.SIGTERM)
        assert rc in (0, 128 + signal.SIGTERM, -signal.SIGTERM), rc
        assert "SIGTERM/shutdown: stopping" in consumer.output()
        # shutdown() persisted the offsets: the broker reports no lag for the group
        assert harness.wait_until(lambda: old.consumer_lag(group, topic) == 0, 15, "lag 0 after stop", 1.0)
    finally:
        producer.stop(10)
        consumer.stop(10)


def test_accounting_detects_loss_duplicates_and_extras():
    """The migration accounting on synthetic pod outputs (no servers needed)."""
    classify = {"broker-a": "old", "new~broker-a": "new"}.get
    sent = [["k-P-0", "broker-a"], ["k-P-1", "broker-a"], ["k-P-2", "new~broker-a"],
            ["k-P-3", "broker-a"], ["k-P-4", "new~broker-a"], ["k-P-10", "weird"]]
    consumers = {
        "C1": [["k-P-0", "broker-a"], ["k-P-2", "new~broker-a"], ["k-P-2", "new~broker-a"]],
        "C2": [["k-P-1", "broker-a"], ["k-P-3", "broker-a"], ["k-P-99", "broker-a"], ["k-P-10", "weird"]],
    }
    rep = harness.MigrationReport("t", "old", "new", "4.9.8", "timers", "T", "G")
    harness.account(rep, sent, consumers, lambda b: classify(b, "unknown"))
    assert rep.sent == 6 and rep.sent_old == 3 and rep.sent_new == 2 and rep.sent_unknown == 1
    assert rep.sent_old_after_switch == 1  # k-P-3 went to old after k-P-2 went to new
    assert rep.lost == ["k-P-4"]
    assert rep.duplicate_keys == 1 and rep.extra_keys == 1
    assert rep.deliveries == 7 and rep.received_unique == 6
    assert rep.per_consumer["C1"] == dict(deliveries=3, old=1, new=2)
    assert "LOST          1" in rep.format()


def test_classify_broker_names(tmp_path):
    same_old = harness.Cluster("4.9.7", "o", 1, 2, "broker-a", "C", tmp_path)
    same_new = harness.Cluster("5.3.3", "n", 3, 4, "broker-a", "C", tmp_path)
    assert harness._classify("broker-a", same_old, same_new, "new~") == "old"
    assert harness._classify("new~broker-a", same_old, same_new, "new~") == "new"
    d_old = harness.Cluster("4.9.7", "o", 1, 2, "old-broker-a", "C", tmp_path)
    d_new = harness.Cluster("5.3.3", "n", 3, 4, "new-broker-a", "C", tmp_path)
    assert harness._classify("new-broker-a", d_old, d_new, "new~") == "new"  # sidecar without renaming
    assert harness._classify("other", d_old, d_new, "new~") == "unknown"
