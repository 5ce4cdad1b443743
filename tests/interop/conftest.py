"""pytest fixtures for the rocketmq-sidecar interop tests (real Apache RocketMQ on loopback).

Clusters are expensive (about 10-20 s to start a pair on 2 cores), so they are session-wide and
managed by ``ClusterPairs``: at most one pair runs at a time, and tests are ordered so that all
users of the "distinct" pair run before the users of the "same" pair (one switch per session);
the "acl" pair (plus a proxy) is used only by test_acl.py, which pytest collects first.

Pairs (old = RocketMQ 4.9.7 servers, new = 5.3.3; see harness.py for why not 4.9.8 servers):

* ``distinct``: OldCluster/old-broker-a (namesrv :29876, broker :30911) and
  NewCluster/new-broker-a (namesrv :39876, broker :40911)
* ``same``: DefaultCluster/broker-a on both sides (namesrv :29886 / :39886, broker :30921 / :40921)
* ``faults``: one cluster FaultCluster of two name servers (:29946, :39946) and two brokers
  (fault-a :30991, fault-b :40991), each broker registered with both name servers
* ``acl``: authenticated clusters: OldAclCluster/old-acl-broker with ACL 1.0 (namesrv :29896,
  broker :30931) and NewAclCluster/new-acl-broker with ACL 2.0 authentication + authorization
  (namesrv :39896, broker :40931), plus a RocketMQ Proxy 5.3.3 (cluster mode, authentication and
  authorization on) in front of the new cluster (remoting :40951, gRPC :40952). Accounts:
  ``OLD_ACL`` / ``NEW_ACL`` (SUPER) and ``NEW_LIMITED`` (no permission) below.

A preferred port that is taken is replaced by the next free block (step 10). Every broker also
binds port-2 and port+1 on all interfaces.

Environment: ``RMQ_SIDECAR_BIN`` (binary to test), ``RMQ_INTEROP_BUILD_SIDECAR=1`` (run
``cargo build`` first), ``RMQ_INTEROP_OLD_VERSION`` / ``RMQ_INTEROP_NEW_VERSION``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Cluster, ClusterAuth, Proxy  # noqa: E402

#: The accounts of the "acl" pair (test values; both keys longer than 6 characters).
OLD_ACL = ClusterAuth("oldAclAccess", "oldAclSecret-4971-Q2v")
NEW_ACL = ClusterAuth("newAclAccess", "newAclSecret-5333-Zk8")
#: A NORMAL ACL 2.0 user of the new cluster without any permission (authorization is on there;
#: NEW_ACL is the SUPER user and never checked).
NEW_LIMITED = ClusterAuth("limitedAccess", "limitedSecret-5333-Rw4")

PAIR_LAYOUT = {
    "distinct": {
        "old": dict(namesrv=29876, broker=30911, broker_name="old-broker-a", cluster_name="OldCluster"),
        "new": dict(namesrv=39876, broker=40911, broker_name="new-broker-a", cluster_name="NewCluster"),
    },
    "same": {
        "old": dict(namesrv=29886, broker=30921, broker_name="broker-a", cluster_name="DefaultCluster"),
        "new": dict(namesrv=39886, broker=40921, broker_name="broker-a", cluster_name="DefaultCluster"),
    },
    # The gates' pair: old is 5.3.3; new is a 4.9.7 broker that answers a brand-new consumer
    # group QUERY_NOT_FOUND (so it starts at the queues' end) as a busy production broker does:
    # accessMessageInMemoryMaxRatio=0 puts every queue's first message "on disk" (protocol
    # notes §8). On an idle loopback broker the default (40 %) answers 0 and hides the loss.
    "gates": {
        "old": dict(namesrv=29906, broker=30941, broker_name="gates-old-a", cluster_name="GatesOld",
                    version=harness.NEW_SERVER_VERSION),
        "new": dict(namesrv=39906, broker=40941, broker_name="gates-new-a", cluster_name="GatesNew",
                    version=harness.OLD_SERVER_VERSION, extra_broker_conf={"accessMessageInMemoryMaxRatio": 0}),
    },
    # The real node's pair (tests/interop/test_node.py): the brokers advertise the node bridge's
    # address (tests/node/node.py GATEWAY), the one address of this machine a pod can reach.
    "node": {
        "old": dict(namesrv=29926, broker=30961, broker_name="node-old-a", cluster_name="NodeOld",
                    extra_broker_conf={"brokerIP1": "10.244.77.1"}),
        "new": dict(namesrv=39926, broker=40971, broker_name="node-new-a", cluster_name="NodeNew",
                    extra_broker_conf={"brokerIP1": "10.244.77.1"}),
    },
    # The fault suite's one cluster (tests/interop/test_faults.py): two name servers and two
    # brokers, all 4.9.7. "old" is name server A with broker fault-a, "new" name server B with
    # broker fault-b; both brokers register with both name servers ("one_cluster"), every 10 s
    # (the default 30 s would only slow the recovery after the name servers come back).
    "faults": {
        "one_cluster": True,
        "old": dict(namesrv=29946, broker=30991, broker_name="fault-a", cluster_name="FaultCluster",
                    version=harness.OLD_SERVER_VERSION, extra_broker_conf={"registerNameServerPeriod": 10000}),
        "new": dict(namesrv=39946, broker=40991, broker_name="fault-b", cluster_name="FaultCluster",
                    version=harness.OLD_SERVER_VERSION, extra_broker_conf={"registerNameServerPeriod": 10000}),
    },
    "acl": {
        "old": dict(namesrv=29896, broker=30931, broker_name="old-acl-broker", cluster_name="OldAclCluster",
                    auth=OLD_ACL),
        "new": dict(namesrv=39896, broker=40931, broker_name="new-acl-broker", cluster_name="NewAclCluster",
                    auth=NEW_ACL, authorization=True, proxy=40951, users=(NEW_LIMITED,)),
    },
}


@dataclasses.dataclass
class ClusterPair:
    kind: str
    old: Cluster
    new: Cluster
    #: a RocketMQ Proxy in front of ``new`` (pair "acl" only)
    proxy: Proxy | None = None

    def alive(self) -> bool:
        return self.old.alive() and self.new.alive() and (self.proxy is None or self.proxy.alive())


class ClusterPairs:
    """Starts cluster pairs on demand; keeps one running; stops everything at session end."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.current: ClusterPair | None = None
        self.failed: dict[str, BaseException] = {}

    def get(self, kind: str) -> ClusterPair:
        if self.current is not None and self.current.kind == kind and self.current.alive():
            return self.current
        if kind in self.failed:
            raise harness.HarnessError(f"cluster pair '{kind}' failed to start earlier: {self.failed[kind]}")
        self.stop()
        layout = PAIR_LAYOUT[kind]
        clusters = {}
        for side, version in (("old", harness.OLD_SERVER_VERSION), ("new", harness.NEW_SERVER_VERSION)):
            spec = layout[side]
            ns = harness.reserve_port_block(spec["namesrv"], (0,), step=10)
            br = harness.reserve_port_block(spec["broker"], harness.BROKER_PORT_OFFSETS, step=10)
            clusters[side] = Cluster(spec.get("version", version), f"{kind}-{side}", ns, br, spec["broker_name"],
                                     spec["cluster_name"], self.run_dir / "clusters" / kind / side,
                                     extra_broker_conf=spec.get("extra_broker_conf"),
                                     auth=spec.get("auth"), authorization=spec.get("authorization", False))
        if layout.get("one_cluster"):
            both = f"{clusters['old'].namesrv_addr};{clusters['new'].namesrv_addr}"
            for c in clusters.values():
                c.extra_broker_conf["namesrvAddr"] = both
        pair = ClusterPair(kind, clusters["old"], clusters["new"])
        proxy_port = layout["new"].get("proxy")
        try:
            harness.start_clusters(pair.old, pair.new)
            for user in layout["new"].get("users", ()):
                pair.new.create_user(user)
            if proxy_port:
                rp = harness.reserve_port_block(proxy_port, (0, 1), step=10)
                pair.proxy = Proxy(pair.new, rp, rp + 1, self.run_dir / "clusters" / kind / "proxy",
                                   auth=layout["new"].get("auth"),
                                   authorization=layout["new"].get("authorization", False))
                pair.proxy.start()
        except BaseException as e:
            self.failed[kind] = e
            if pair.proxy is not None:
                pair.proxy.dump_logs(30)
                pair.proxy.stop(10)
            harness.stop_clusters(pair.old, pair.new)
            raise
        self.current = pair
        return pair

    def stop(self) -> None:
        if self.current is not None:
            if self.current.proxy is not None:
                self.current.proxy.stop()
            harness.stop_clusters(self.current.old, self.current.new)
            self.current = None

    def running_clusters(self) -> list:
        if self.current is None:
            return []
        return [self.current.old, self.current.new] + ([self.current.proxy] if self.current.proxy else [])


# --------------------------------------------------------------------------- session fixtures


@pytest.fixture(scope="session")
def run_dir() -> Path:
    d = harness.new_run_dir()
    harness.log(f"interop run directory: {d}")
    return d


@pytest.fixture(scope="session")
def builds():
    """Download the servers and build both client pods (cached in target/interop)."""
    harness.ensure_admin_runner()
    for v in (harness.OLD_SERVER_VERSION, harness.NEW_SERVER_VERSION):
        harness.ensure_rocketmq(v)
    return {v: harness.ensure_client(v) for v in (harness.OLD_CLIENT_VERSION, harness.NEW_CLIENT_VERSION)}


@pytest.fixture(scope="session")
def cluster_pairs(request, run_dir, builds):
    pairs = ClusterPairs(run_dir)
    request.config._interop_pairs = pairs
    yield pairs
    pairs.stop()
    harness.kill_all_live()


@pytest.fixture
def pair_distinct(cluster_pairs) -> ClusterPair:
    """Old 4.9.7 cluster ``old-broker-a`` + new 5.3.3 cluster ``new-broker-a``."""
    return cluster_pairs.get("distinct")


@pytest.fixture
def pair_same(cluster_pairs) -> ClusterPair:
    """Old 4.9.7 and new 5.3.3 clusters that both name their broker ``broker-a``."""
    return cluster_pairs.get("same")


@pytest.fixture
def pair_acl(cluster_pairs) -> ClusterPair:
    """Old 4.9.7 with ACL 1.0 + new 5.3.3 with ACL 2.0 + a RocketMQ Proxy 5.3.3 (authenticating)
    in front of the new one. Accounts: ``conftest.OLD_ACL`` / ``conftest.NEW_ACL``."""
    return cluster_pairs.get("acl")


@pytest.fixture
def pair_gates(cluster_pairs) -> ClusterPair:
    """Old 5.3.3 + new 4.9.7 whose brand-new groups start at the queues' end (see PAIR_LAYOUT)."""
    return cluster_pairs.get("gates")


@pytest.fixture(scope="module")
def pair_faults(cluster_pairs) -> ClusterPair:
    """One 4.9.7 cluster of two name servers and two brokers (see PAIR_LAYOUT["faults"]);
    module-wide: the fault suite stops and restarts its processes between tests."""
    return cluster_pairs.get("faults")


@pytest.fixture
def old_cluster(pair_distinct) -> Cluster:
    return pair_distinct.old


@pytest.fixture
def new_cluster(pair_distinct) -> Cluster:
    return pair_distinct.new


@pytest.fixture(scope="session")
def sidecar_binary() -> Path:
    """The rmq-sidecar binary. A missing binary fails the test: a skipped interop check
    would pass CI without proving anything."""
    if os.environ.get("RMQ_INTEROP_BUILD_SIDECAR") == "1":
        return harness.build_sidecar(release=os.environ.get("RMQ_INTEROP_RELEASE") == "1")
    path = harness.find_sidecar_binary()
    if path is None:
        pytest.fail("rmq-sidecar binary not built: run `cargo build --release` (scripts/test.sh does), "
                    "or set RMQ_SIDECAR_BIN")
    harness.log(f"sidecar binary under test: {path}")
    return path


@pytest.fixture
def test_dir(request, run_dir) -> Path:
    """A per-test directory under the run directory (pods, sidecars, outputs)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    d = run_dir / "tests" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def record_migration(request, test_dir):
    """Records a migration report (printed, kept in the test's run directory and in the
    session summary) and checks what every migration must show: it happened, every ack
    came from a known broker, nothing acked was lost, and a sample is stored on the new
    broker (asked of the broker, not of the sidecar)."""
    def record(report) -> None:
        text = report.format()
        print(text)
        (test_dir / "accounting.txt").write_text(text + "\n")
        request.config._interop_accounting = getattr(request.config, "_interop_accounting", []) + [text]
        assert report.error is None, report.error
        assert report.sent > 0 and report.sent_old > 0 and report.sent_new > 0, "no migration happened"
        assert report.sent_unknown == 0, "acks from a broker name that is neither old nor new"
        assert report.lost == [], f"{len(report.lost)} acked messages never consumed"
        assert report.new_sample is not None and report.new_sample.all_found, report.new_sample
    return record


@pytest.fixture(autouse=True)
def _interop_log_marker(request):
    """Remember which log sources existed before the test (for the failure dump)."""
    request.node._interop_log_start = len(harness.LOG_SOURCES)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tails of every server, sidecar and pod log to the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        start = getattr(item, "_interop_log_start", 0)
        pairs = getattr(item.config, "_interop_pairs", None)
        sources = list(pairs.running_clusters()) if pairs else []
        for src in harness.LOG_SOURCES[start:]:
            if src not in sources:
                sources.append(src)
        if sources:
            rep.sections.append(("interop log tails", harness.dump_all_logs(sources, lines=40)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print every migration accounting block of the session at the end, pass or fail."""
    blocks = getattr(config, "_interop_accounting", [])
    if blocks:
        terminalreporter.section("interop migration accounting")
        for b in blocks:
            terminalreporter.write_line(b)
