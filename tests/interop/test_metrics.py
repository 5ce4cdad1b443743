"""Metrics on real traffic: the official Java client sends through a sidecar to the old
cluster, the pod is switched, it sends to the new one; the sidecar's ``/metrics`` (parsed with
the Prometheus project's own text parser) must count every acknowledged send under the
cluster it went to, show the cutover, and carry no unbounded label.

Run: ``python3 -m pytest tests/interop/test_metrics.py -v -rA``
"""

from __future__ import annotations

import http.client
import random

from prometheus_client.parser import text_string_to_metric_families

import harness

ALLOWED_LABELS = {"target", "peer", "code", "response_code", "group", "direction", "listener", "cause",
                  "reason", "cluster", "outcome", "endpoint", "version", "le", "role", "action", "gate"}
#: The one family with a group name as a label value: the pod's own groups, at most 16.
GROUP_FAMILY = "rmq_sidecar_consumer_backlog_messages"


def scrape(sc: harness.Sidecar) -> tuple[str, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", sc.health_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def sends_ok(samples: dict, target: str) -> float:
    # The Java client sends with SEND_MESSAGE_V2 (310) by default.
    return value(samples, "rmq_sidecar_responses_total", target=target, peer="broker",
                 code="SEND_MESSAGE_V2", response_code="0")


def test_counters_follow_the_traffic_across_a_switch(pair_distinct, test_dir, sidecar_binary):
    old, new = pair_distinct.old, pair_distinct.new
    tag = random.randrange(10**6)
    topic, group = f"MetricsTopic{tag}", f"MetricsGroup{tag}"
    for c in (old, new):
        c.update_topic(topic, 4)
        c.update_sub_group(group)
    sc = harness.Sidecar("metrics", old_namesrv=old.namesrv_addr, new_namesrv=new.namesrv_addr,
                         workdir=test_dir, target="old", binary=sidecar_binary)
    try:
        sc.start()
        first = harness.run_smoke(sc.namesrv_addr, topic, group, 30, test_dir, name=f"metrics-old-{tag}")
        assert first.ok, first.summary
        _, before = scrape(sc)
        assert sends_ok(before, "old") >= 30, "every acknowledged send is counted under old"
        assert sends_ok(before, "new") == 0
        for role in ("producer", "consumer"):
            assert value(before, "rmq_sidecar_route_target", role=role, target="old") == 1
        assert value(before, "rmq_sidecar_route_answers_total", cluster="old") >= 1
        assert value(before, "rmq_sidecar_requests_total", target="old", peer="broker", code="PULL_MESSAGE") >= 1

        sc.switch("new", force=True)  # the smoke app stopped first: a metrics test, not an order test
        second = harness.run_smoke(sc.namesrv_addr, topic, group, 40, test_dir, name=f"metrics-new-{tag}")
        assert second.ok, second.summary
        text, after = scrape(sc)
    finally:
        sc.stop()
    assert sends_ok(after, "new") >= 40, "sends after the switch are counted under new"
    assert sends_ok(after, "old") == sends_ok(before, "old"), "no send went to old after the switch"
    for role in ("producer", "consumer"):
        assert value(after, "rmq_sidecar_route_target", role=role, target="new") == 1
        assert value(after, "rmq_sidecar_route_target", role=role, target="old") == 0
        assert value(after, "rmq_sidecar_role_switches_total", role=role, target="new") == 1
    assert value(after, "rmq_sidecar_route_generation") == 1
    assert value(after, "rmq_sidecar_switch_requests_total", outcome="applied") == 1
    assert value(after, "rmq_sidecar_route_answers_total", cluster="new") >= 1
    assert value(after, "rmq_sidecar_request_duration_seconds_count", target="new", peer="broker", group="send") >= 40
    assert value(after, "rmq_sidecar_bytes_total", target="new", direction="to_upstream") > 0
    # Bounded labels: known names only; no topic, group, client id or address in any value.
    for (name, labels), _ in after.items():
        assert name.startswith("rmq_sidecar_"), name
        for k, v in labels:
            assert k in ALLOWED_LABELS, f"{name} has label {k}"
            if name == GROUP_FAMILY and k == "group":
                continue
            assert topic not in v and group not in v and "127." not in v and "@" not in v, f"{name}{{{k}={v}}}"
    rest = "\n".join(line for line in text.splitlines() if not line.startswith(GROUP_FAMILY + "{"))
    assert topic not in rest and group not in rest
