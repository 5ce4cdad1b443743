//! Each gate's decision from recorded server answers: a fake cluster that answers what
//! the real servers answered in each situation, and records what was written to it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use rmq_common::{RoleTargets, Target};

use super::reads::{ClusterReads, ReadError};
use super::*;
use crate::protocol::admin::{BrokerQueues, ConsumerConnection, Queue, QueueStat};

const OLD_BROKER: &str = "10.0.0.1:10911";
const NEW_BROKER: &str = "10.0.1.1:10911";

/// Recorded answers of both clusters.
#[derive(Default)]
struct Recorded {
    /// (cluster, topic) -> queues per broker; absent = TOPIC_NOT_EXIST.
    routes: HashMap<(Target, String), Vec<BrokerQueues>>,
    /// (cluster, topic) -> groups consuming it.
    by_who: HashMap<(Target, String), BTreeSet<String>>,
    /// (cluster, group) -> online members and subscriptions.
    online: HashMap<(Target, String), ConsumerConnection>,
    /// (cluster, group) -> rebalance ids.
    ids: HashMap<(Target, String), BTreeSet<String>>,
    /// (cluster, group, topic, queue) -> committed offset.
    offsets: Mutex<HashMap<(Target, String, String, u32), i64>>,
    /// (cluster, group) -> consume stats.
    stats: HashMap<(Target, String), Vec<QueueStat>>,
    /// Clusters whose reads fail.
    down: HashSet<Target>,
    /// 5.x without the subscription group: commits refused with 26.
    refuse_commits: bool,
    /// A 5.x Proxy: QUERY_TOPIC_CONSUME_BY_WHO not served on that cluster.
    no_by_who: HashSet<Target>,
    /// The reach checks asked: (cluster, topics).
    reached: Mutex<Vec<(Target, Vec<String>)>>,
}

fn queues(n: u32, addr: &str, name: &str) -> Vec<BrokerQueues> {
    vec![BrokerQueues {
        broker_name: name.to_owned(),
        master: Some(addr.to_owned()),
        queues: n,
    }]
}

impl Recorded {
    fn check(&self, cluster: Target, what: &str) -> Result<(), ReadError> {
        if self.down.contains(&cluster) {
            return Err(ReadError::Unreachable {
                what: what.to_owned(),
                addr: "x".to_owned(),
                reason: "connect failed: Connection refused".to_owned(),
            });
        }
        Ok(())
    }
}

impl ClusterReads for Recorded {
    async fn reach(&self, c: Target, topics: &[String]) -> Result<String, ReadError> {
        self.reached.lock().unwrap().push((c, topics.to_vec()));
        self.check(c, "cluster info")?;
        Ok("reached".to_owned())
    }
    async fn topic_queues(
        &self,
        c: Target,
        t: &str,
    ) -> Result<Option<Vec<BrokerQueues>>, ReadError> {
        self.check(c, "route")?;
        Ok(self.routes.get(&(c, t.to_owned())).cloned())
    }
    async fn consume_by_who(
        &self,
        c: Target,
        _: &str,
        t: &str,
    ) -> Result<BTreeSet<String>, ReadError> {
        self.check(c, "by who")?;
        if self.no_by_who.contains(&c) {
            return Err(ReadError::Refused {
                what: "QUERY_TOPIC_CONSUME_BY_WHO".to_owned(),
                addr: "proxy".to_owned(),
                code: 25,
                remark: "request type 300 not supported".to_owned(),
            });
        }
        // As the brokers answer: the groups online, and those with offsets on the topic.
        let mut groups = self
            .by_who
            .get(&(c, t.to_owned()))
            .cloned()
            .unwrap_or_default();
        for (cluster, group, topic, _) in self.offsets.lock().unwrap().keys() {
            if *cluster == c && topic == t {
                groups.insert(group.clone());
            }
        }
        Ok(groups)
    }
    async fn online(
        &self,
        c: Target,
        _: &str,
        g: &str,
    ) -> Result<Option<ConsumerConnection>, ReadError> {
        self.check(c, "online")?;
        Ok(self.online.get(&(c, g.to_owned())).cloned())
    }
    async fn consumer_ids(
        &self,
        c: Target,
        _: &str,
        g: &str,
    ) -> Result<BTreeSet<String>, ReadError> {
        self.check(c, "ids")?;
        Ok(self
            .ids
            .get(&(c, g.to_owned()))
            .cloned()
            .unwrap_or_default())
    }
    async fn committed_offset(
        &self,
        c: Target,
        _: &str,
        g: &str,
        t: &str,
        q: &Queue,
    ) -> Result<Option<i64>, ReadError> {
        self.check(c, "offset")?;
        let offsets = self.offsets.lock().unwrap();
        Ok(offsets
            .get(&(c, g.to_owned(), t.to_owned(), q.queue_id))
            .copied())
    }
    async fn max_offset(&self, c: Target, _: &str, _: &str, q: &Queue) -> Result<i64, ReadError> {
        self.check(c, "max")?;
        Ok(100 + i64::from(q.queue_id))
    }
    async fn commit_offset(
        &self,
        c: Target,
        a: &str,
        g: &str,
        t: &str,
        q: &Queue,
        o: i64,
    ) -> Result<(), ReadError> {
        self.check(c, "commit")?;
        if self.refuse_commits {
            return Err(ReadError::Refused {
                what: "UPDATE_CONSUMER_OFFSET".to_owned(),
                addr: a.to_owned(),
                code: 26,
                remark: "subscription group not exist".to_owned(),
            });
        }
        self.offsets
            .lock()
            .unwrap()
            .insert((c, g.to_owned(), t.to_owned(), q.queue_id), o);
        Ok(())
    }
    async fn consume_stats(
        &self,
        c: Target,
        _: &str,
        g: &str,
    ) -> Result<Vec<QueueStat>, ReadError> {
        self.check(c, "stats")?;
        Ok(self
            .stats
            .get(&(c, g.to_owned()))
            .cloned()
            .unwrap_or_default())
    }
}

/// Topic T (2 queues on each cluster) consumed on old by group G.
fn topic_consumed_on_old() -> Recorded {
    let mut r = Recorded::default();
    r.routes
        .insert((Target::Old, "T".into()), queues(2, OLD_BROKER, "old-a"));
    r.routes
        .insert((Target::New, "T".into()), queues(2, NEW_BROKER, "new-a"));
    r.by_who.insert(
        (Target::Old, "T".into()),
        // "T" itself: 5.3.x lists the topic's name in place of its online groups' names.
        BTreeSet::from(["G".into(), "TOOLS_CONSUMER".into(), "T".into()]),
    );
    r
}

struct Pod {
    produced: BTreeMap<String, BTreeSet<String>>,
    consumed: BTreeMap<String, BTreeSet<String>>,
    own: BTreeSet<String>,
    tx: BTreeSet<String>,
}

fn producer_pod() -> Pod {
    Pod {
        produced: BTreeMap::from([("T".into(), BTreeSet::from(["PG".into()]))]),
        consumed: BTreeMap::new(),
        own: BTreeSet::from(["10.0.0.9@1".into()]),
        tx: BTreeSet::new(),
    }
}

fn consumer_pod() -> Pod {
    Pod {
        produced: BTreeMap::new(),
        consumed: BTreeMap::from([("G".into(), BTreeSet::from(["T".into(), "%RETRY%G".into()]))]),
        own: BTreeSet::from(["10.0.0.9@1".into()]),
        tx: BTreeSet::new(),
    }
}

const NOW: u64 = 1_800_000_000_000;

async fn evaluate(
    r: &Recorded,
    pod: &Pod,
    from: RoleTargets,
    to: RoleTargets,
    options: SwitchOptions,
) -> Evaluation {
    let facts = Facts {
        produced: &pod.produced,
        consumed: &pod.consumed,
        own_ids: &pod.own,
        transactional: &pod.tx,
        now_ms: NOW,
        quiet: Duration::from_secs(30),
    };
    let checks = run(r, from, to, options, &facts).await;
    verdict(from, to, options, "admin", checks, Duration::ZERO)
}

fn producers_to(to: Target) -> (RoleTargets, RoleTargets) {
    let from = RoleTargets::both(to.other());
    (from, from.with(Role::Producer, to))
}

fn consumers_to(to: Target) -> (RoleTargets, RoleTargets) {
    let from = RoleTargets::both(to.other());
    (from, from.with(Role::Consumer, to))
}

#[tokio::test]
async fn producers_are_refused_until_the_group_is_on_the_target() {
    let r = topic_consumed_on_old();
    let (from, to) = producers_to(Target::New);
    let e = evaluate(&r, &producer_pod(), from, to, SwitchOptions::default()).await;
    assert!(!e.allowed);
    assert_eq!(e.refused_by, vec![GateName::ConsumersOnTarget]);
    let refusal = e.refusal();
    assert!(refusal.contains("G (topic T)"), "{refusal}");
    assert!(
        !refusal.contains("TOOLS_CONSUMER"),
        "system groups are not the migration's: {refusal}"
    );
    let groups = &e.checks[1].producer.as_ref().unwrap().topics[0].groups;
    assert_eq!(groups.len(), 1, "only G: {refusal}");
    let gate = e.checks[1].producer.as_ref().unwrap();
    assert_eq!(
        gate.topics[0].groups[0].standing,
        producer::GroupStanding::Missing
    );
    assert_eq!(gate.topics[0].groups[0].queues_without_offset.len(), 2);
}

#[tokio::test]
async fn producers_pass_when_the_group_is_online_or_has_every_offset() {
    let (from, to) = producers_to(Target::New);
    let mut online = topic_consumed_on_old();
    online.online.insert(
        (Target::New, "G".into()),
        ConsumerConnection {
            client_ids: BTreeSet::from(["c@1".into()]),
            topics: BTreeSet::from(["T".into()]),
        },
    );
    let e = evaluate(&online, &producer_pod(), from, to, SwitchOptions::default()).await;
    assert!(e.allowed && e.refused_by.is_empty(), "{}", e.refusal());

    // Online but subscribed to something else does not count; offsets on one queue of
    // two do not either.
    let mut partial = topic_consumed_on_old();
    partial.online.insert(
        (Target::New, "G".into()),
        ConsumerConnection {
            client_ids: BTreeSet::from(["c@1".into()]),
            topics: BTreeSet::from(["OTHER".into()]),
        },
    );
    partial
        .offsets
        .lock()
        .unwrap()
        .insert((Target::New, "G".into(), "T".into(), 0), 5);
    let e = evaluate(
        &partial,
        &producer_pod(),
        from,
        to,
        SwitchOptions::default(),
    )
    .await;
    assert!(!e.allowed);
    partial
        .offsets
        .lock()
        .unwrap()
        .insert((Target::New, "G".into(), "T".into(), 1), 0);
    let e = evaluate(
        &partial,
        &producer_pod(),
        from,
        to,
        SwitchOptions::default(),
    )
    .await;
    assert!(e.allowed, "{}", e.refusal());
    let gate = e.checks[1].producer.as_ref().unwrap();
    assert_eq!(
        gate.topics[0].groups[0].standing,
        producer::GroupStanding::Offsets
    );
}

#[tokio::test]
async fn nobody_consuming_on_the_source_passes_and_a_missing_target_topic_refuses() {
    let (from, to) = producers_to(Target::New);
    let mut r = topic_consumed_on_old();
    r.by_who.clear();
    let e = evaluate(&r, &producer_pod(), from, to, SwitchOptions::default()).await;
    assert!(e.allowed, "{}", e.refusal());

    let mut r = topic_consumed_on_old();
    r.routes.remove(&(Target::New, "T".into()));
    let e = evaluate(&r, &producer_pod(), from, to, SwitchOptions::default()).await;
    assert!(!e.allowed);
    assert!(
        e.refusal().contains("does not exist on new"),
        "{}",
        e.refusal()
    );
}

#[tokio::test]
async fn seeding_commits_the_queue_ends_and_a_dry_run_writes_nothing() {
    let (from, to) = producers_to(Target::New);
    let r = topic_consumed_on_old();
    let seed = SwitchOptions {
        seed_offsets: true,
        dry_run: true,
        ..Default::default()
    };
    let e = evaluate(&r, &producer_pod(), from, to, seed).await;
    assert!(e.allowed && e.dry_run);
    assert!(
        r.offsets.lock().unwrap().is_empty(),
        "a dry run writes nothing"
    );
    let standing = e.checks[1].producer.as_ref().unwrap().topics[0].groups[0].standing;
    assert_eq!(standing, producer::GroupStanding::WouldSeed);

    let seed = SwitchOptions {
        seed_offsets: true,
        ..Default::default()
    };
    let e = evaluate(&r, &producer_pod(), from, to, seed).await;
    assert!(e.allowed, "{}", e.refusal());
    let offsets = r.offsets.lock().unwrap().clone();
    assert_eq!(
        offsets.get(&(Target::New, "G".into(), "T".into(), 0)),
        Some(&100)
    );
    assert_eq!(
        offsets.get(&(Target::New, "G".into(), "T".into(), 1)),
        Some(&101)
    );
    // Once seeded, the plain check passes too.
    let e = evaluate(&r, &producer_pod(), from, to, SwitchOptions::default()).await;
    assert!(e.allowed, "{}", e.refusal());

    // A 5.x broker without the subscription group refuses the commit: the gate says so.
    let mut r = topic_consumed_on_old();
    r.refuse_commits = true;
    let e = evaluate(&r, &producer_pod(), from, to, seed).await;
    assert!(!e.allowed);
    assert!(
        e.refusal()
            .contains("create the subscription group G on new"),
        "{}",
        e.refusal()
    );
}

#[tokio::test]
async fn failed_reads_refuse_and_force_overrides() {
    let (from, to) = producers_to(Target::New);
    let mut r = topic_consumed_on_old();
    r.down.insert(Target::New);
    let e = evaluate(&r, &producer_pod(), from, to, SwitchOptions::default()).await;
    assert!(!e.allowed);
    assert_eq!(e.refused_by, vec![GateName::TargetReachable]);
    assert!(
        e.refusal().contains("new is unreachable"),
        "{}",
        e.refusal()
    );
    assert_eq!(
        e.checks.len(),
        1,
        "nothing else is read from a cluster that does not answer"
    );
    let forced = SwitchOptions {
        force: true,
        ..Default::default()
    };
    let e = evaluate(&r, &producer_pod(), from, to, forced).await;
    assert!(e.allowed && e.force);
    assert_eq!(
        e.refused_by,
        vec![GateName::TargetReachable],
        "a forced switch still names what it overrode"
    );
}

#[tokio::test]
async fn a_consumer_move_to_a_cluster_that_does_not_answer_is_refused() {
    // The backlog gate reads only the cluster a consumer leaves: without the reach
    // check, a consumer would move to a dead cluster and stop consuming there.
    let (from, to) = consumers_to(Target::New);
    let mut r = consumed_on_old(vec![stat("T", 50, 10, 0)], &["10.0.0.8@1"]);
    let e = evaluate(&r, &consumer_pod(), from, to, SwitchOptions::default()).await;
    assert!(e.allowed, "{}", e.refusal());
    assert_eq!(
        r.reached.lock().unwrap().clone(),
        vec![(Target::New, vec!["T".to_owned()])],
        "the brokers of the pod's own topics (not its retry topic) on the target"
    );
    r.down.insert(Target::New);
    let e = evaluate(&r, &consumer_pod(), from, to, SwitchOptions::default()).await;
    assert!(!e.allowed);
    assert_eq!(e.refused_by, vec![GateName::TargetReachable]);
    assert_eq!(e.checks[0].role, Role::Consumer);
}

#[test]
fn every_gate_is_exported_at_zero_from_the_start() {
    let metrics = crate::metrics::Metrics::new(prometheus::Registry::new()).unwrap();
    let text = String::from_utf8(metrics.encode().0).unwrap();
    for gate in GateName::ALL {
        for family in ["gate_refusals_total", "gate_forced_total"] {
            let line = format!("rmq_sidecar_{family}{{gate=\"{}\"}} 0", gate.as_str());
            assert!(text.contains(&line), "{line} missing");
        }
    }
}

fn stat(topic: &str, end: i64, committed: i64, last_ms: i64) -> QueueStat {
    QueueStat {
        topic: topic.into(),
        broker_name: "old-a".into(),
        queue_id: 0,
        broker_offset: end,
        consumer_offset: committed,
        last_timestamp: last_ms,
    }
}

fn consumed_on_old(stats: Vec<QueueStat>, others: &[&str]) -> Recorded {
    let mut r = Recorded::default();
    r.routes
        .insert((Target::Old, "T".into()), queues(1, OLD_BROKER, "old-a"));
    r.routes.insert(
        (Target::Old, "%RETRY%G".into()),
        queues(1, OLD_BROKER, "old-a"),
    );
    let mut ids: BTreeSet<String> = others.iter().map(|s| s.to_string()).collect();
    ids.insert("10.0.0.9@1".into());
    r.ids.insert((Target::Old, "G".into()), ids);
    r.stats.insert((Target::Old, "G".into()), stats);
    r
}

#[tokio::test]
async fn consumers_that_are_not_the_last_leave_freely() {
    let (from, to) = consumers_to(Target::New);
    let r = consumed_on_old(vec![stat("T", 50, 10, 0)], &["10.0.0.8@1"]);
    let e = evaluate(&r, &consumer_pod(), from, to, SwitchOptions::default()).await;
    assert!(e.allowed, "{}", e.refusal());
    let g = &e.checks[1].consumer.as_ref().unwrap().groups[0];
    assert_eq!((g.other_members, g.last_members), (1, false));
}

#[tokio::test]
async fn the_last_consumers_wait_for_the_backlog_and_for_writes_to_stop() {
    let (from, to) = consumers_to(Target::New);
    let old_write = NOW as i64 - 120_000;
    // Backlog on the topic and on the retry topic.
    let r = consumed_on_old(
        vec![
            stat("T", 50, 40, old_write),
            stat("%RETRY%G", 3, 1, old_write),
        ],
        &[],
    );
    let e = evaluate(&r, &consumer_pod(), from, to, SwitchOptions::default()).await;
    assert_eq!(e.refused_by, vec![GateName::BacklogDrained]);
    let refusal = e.refusal();
    assert!(
        refusal.contains("backlog 12 on old")
            && refusal.contains("%RETRY%G 2")
            && refusal.contains("T 10"),
        "{refusal}"
    );

    // Drained, but written 5 s ago: a producer still writes there.
    let r = consumed_on_old(vec![stat("T", 50, 50, NOW as i64 - 5_000)], &[]);
    let e = evaluate(&r, &consumer_pod(), from, to, SwitchOptions::default()).await;
    assert!(!e.allowed);
    assert!(e.refusal().contains("5.0 s ago"), "{}", e.refusal());

    // Drained and quiet.
    let r = consumed_on_old(
        vec![stat("T", 50, 50, old_write), stat("%RETRY%G", 0, 0, 0)],
        &[],
    );
    let e = evaluate(&r, &consumer_pod(), from, to, SwitchOptions::default()).await;
    assert!(e.allowed, "{}", e.refusal());
    let g = &e.checks[1].consumer.as_ref().unwrap().groups[0];
    assert!(g.last_members && g.last_write_ms_ago == Some(120_000));

    // The old cluster unreachable: fails closed.
    let mut r = consumed_on_old(vec![], &[]);
    r.down.insert(Target::Old);
    let e = evaluate(&r, &consumer_pod(), from, to, SwitchOptions::default()).await;
    assert!(!e.allowed && e.refusal().contains("fails closed"));
}

#[tokio::test]
async fn rolling_back_is_gated_the_same_way_in_reverse() {
    // Producers back to old while G consumes T on new only.
    let mut r = Recorded::default();
    r.routes
        .insert((Target::New, "T".into()), queues(2, NEW_BROKER, "new-a"));
    r.routes
        .insert((Target::Old, "T".into()), queues(2, OLD_BROKER, "old-a"));
    r.by_who
        .insert((Target::New, "T".into()), BTreeSet::from(["G".into()]));
    let (from, to) = producers_to(Target::Old);
    let e = evaluate(&r, &producer_pod(), from, to, SwitchOptions::default()).await;
    assert!(!e.allowed);
    assert!(e.refusal().contains("not yet on old"), "{}", e.refusal());
}

#[tokio::test]
async fn a_switch_of_both_roles_runs_both_gates_and_reports_transactions() {
    let r = topic_consumed_on_old();
    let mut pod = producer_pod();
    pod.tx.insert("TXG".into());
    let from = RoleTargets::both(Target::Old);
    let to = RoleTargets::both(Target::New);
    let e = evaluate(&r, &pod, from, to, SwitchOptions::default()).await;
    let gates: Vec<GateName> = e.checks.iter().map(|c| c.gate).collect();
    assert_eq!(
        gates,
        vec![
            GateName::TargetReachable,
            GateName::TargetReachable,
            GateName::BacklogDrained,
            GateName::ConsumersOnTarget,
            GateName::Transactions
        ]
    );
    let tx = &e.checks[4];
    assert!(tx.passed && tx.transactional_groups == vec!["TXG".to_owned()]);
    assert!(tx.reason.contains("keep(s) heartbeating old"));
}

#[tokio::test]
async fn a_target_behind_a_proxy_is_judged_by_its_per_queue_answers() {
    let (from, to) = producers_to(Target::New);
    let mut r = topic_consumed_on_old();
    r.no_by_who.insert(Target::New);
    let e = evaluate(&r, &producer_pod(), from, to, SwitchOptions::default()).await;
    assert!(!e.allowed, "no offsets there: still refused");
    for q in 0..2 {
        r.offsets
            .lock()
            .unwrap()
            .insert((Target::New, "G".into(), "T".into(), q), 7);
    }
    let e = evaluate(&r, &producer_pod(), from, to, SwitchOptions::default()).await;
    assert!(e.allowed, "{}", e.refusal());
}
