"""End-to-end migration through the rmq-sidecar binary (real RocketMQ, official Java client).

Needs the sidecar binary (``target/release/rmq-sidecar`` or ``target/debug/rmq-sidecar``, the
newer one wins; or ``RMQ_SIDECAR_BIN``); the tests fail without it.

* ``test_sidecar_admin_contract``: GET /ready, /live, /route; PUT /route validation.
* ``test_smoke_533_client_through_sidecar``: the 5.3.3 client smoke through a sidecar that
  targets the new cluster; the app sees prefixed broker names, the new broker stores the keys.
* ``test_migration[distinct-names]`` / ``test_migration[same-broker-name]``: two consumer pods and
  a producer pod (4.9.8 client, shortened timers) each behind its own sidecar, switched
  old -> new in the safe order while producing ~50 msg/s; nothing acked may be lost.

Run: ``python3 -m pytest tests/interop/test_migration.py -v -rA``
"""

from __future__ import annotations

import random

import pytest

import harness

PREFIX = "new~"


def _sidecar(name, pair, test_dir, binary, target="old") -> harness.Sidecar:
    return harness.Sidecar(name, old_namesrv=pair.old.namesrv_addr, new_namesrv=pair.new.namesrv_addr,
                           workdir=test_dir, target=target, binary=binary, broker_name_prefix=PREFIX)


def test_sidecar_admin_contract(pair_distinct, test_dir, sidecar_binary):
    sc = _sidecar("contract", pair_distinct, test_dir, sidecar_binary)
    try:
        sc.start()
        assert sc.live()
        route = sc.route()
        assert route["target"] == "old"
        assert isinstance(route.get("generation"), int)
        assert sc.route(via_health=True)["target"] == "old"
        status, body = sc.switch_raw("elsewhere")
        assert status == 400 and isinstance(body, dict) and body.get("error"), (status, body)
        assert sc.route()["target"] == "old"
        gen0 = route["generation"]
        moved = sc.switch("new")
        assert moved["target"] == "new" and moved["generation"] > gen0
        assert sc.route(via_health=True)["target"] == "new"
        status, _ = sc._http("PUT", "/route", {"target": "old"}, port=sc.health_port)
        assert status != 200, "the health listener must be read-only"
        assert sc.route()["target"] == "new"
    finally:
        rc = sc.stop()
    assert rc == 0, f"sidecar exit code after SIGTERM: {rc}"


def test_smoke_533_client_through_sidecar(pair_distinct, test_dir, sidecar_binary):
    new = pair_distinct.new
    tag = random.randrange(10**6)
    topic, group = f"SideSmokeTopic{tag}", f"SideSmokeGroup{tag}"
    new.update_topic(topic, 4)
    new.update_sub_group(group)
    sc = _sidecar("smoke533", pair_distinct, test_dir, sidecar_binary, target="new")
    try:
        sc.start()
        res = harness.run_smoke(sc.namesrv_addr, topic, group, 50, test_dir,
                                client_version=harness.NEW_CLIENT_VERSION)
        assert res.ok, f"{res.summary}\n{res.output[-3000:]}"
    finally:
        sc.stop()
    assert {r[1] for r in res.records} == {PREFIX + new.broker_name}, "app must see the prefixed name"
    check = new.keys_stored(topic, [r[0] for r in res.records], sample=5)
    assert check.all_found, check
    assert set(check.store_hosts.values()) == {new.broker_addr}
    assert new.topic_max_offsets_total(topic) >= 50


@pytest.mark.parametrize("kind", ["distinct-names", "same-broker-name"])
def test_migration(kind, cluster_pairs, test_dir, sidecar_binary, record_migration):
    pair = cluster_pairs.get("distinct" if kind == "distinct-names" else "same")
    report = harness.run_migration(pair.old, pair.new, test_dir, label=kind, timers=harness.FAST_TIMERS,
                                   client_version=harness.OLD_CLIENT_VERSION, rate=50,
                                   broker_name_prefix=PREFIX, sidecar_binary=sidecar_binary)
    record_migration(report)
    assert report.new_max_offsets_total is not None and report.new_max_offsets_total >= report.sent_new
    assert report.new_sample_wrong_host == []
