//! Gate `consumers_on_target`: the pod's producers may move to a cluster only once every
//! consumer group of their topics is there. A group that first arrives on a cluster
//! starts at the queues' end (protocol notes §8), so whatever the moved producers wrote
//! before it came would be skipped for it.
//!
//! For each topic the pod has produced to: the groups consuming it on the cluster being
//! left (QUERY_TOPIC_CONSUME_BY_WHO on each of its brokers there: the groups online, and
//! those with offsets); for each group, on the target: a member online subscribed to the
//! topic (GET_CONSUMER_CONNECTION_LIST), else a committed offset on every queue of the
//! topic (QUERY_CONSUMER_OFFSET, `setZeroIfNotFound=false`). With `seed_offsets`, the
//! missing offsets are committed at the queues' current end (GET_MAX_OFFSET, then
//! UPDATE_CONSUMER_OFFSET): the group then receives everything written from now on.

use std::collections::{BTreeMap, BTreeSet};

use rmq_common::Target;
use serde::Serialize;

use super::reads::{ClusterReads, ReadError};
use crate::protocol::admin::{is_system_group, BrokerQueues, Queue};

/// Where a consumer group stands on the target cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupStanding {
    /// A member is connected there and subscribes to the topic.
    Online,
    /// It has a committed offset on every queue of the topic there.
    Offsets,
    /// The missing offsets were committed at the queues' end just now.
    Seeded,
    /// Offsets would be seeded (dry run).
    WouldSeed,
    /// Neither online nor with offsets on every queue: the switch would lose messages.
    Missing,
    /// A read failed: not known (the gate refuses).
    Unknown,
}

/// One consumer group of one topic.
#[derive(Debug, Clone, Serialize)]
pub struct GroupOnTarget {
    /// The group.
    pub group: String,
    /// Where it stands on the target.
    pub standing: GroupStanding,
    /// Queues of the topic on the target without an offset of the group.
    pub queues_without_offset: Vec<Queue>,
    /// What was read.
    pub detail: String,
}

/// One topic the pod produces to.
#[derive(Debug, Clone, Serialize)]
pub struct TopicGate {
    /// The topic.
    pub topic: String,
    /// The pod's producer groups that sent to it.
    pub produced_by: BTreeSet<String>,
    /// Its consumer groups on the cluster being left, and where each stands on the target.
    pub groups: Vec<GroupOnTarget>,
    /// Reads that failed for this topic.
    pub failed_reads: Vec<String>,
}

/// What the gate found.
#[derive(Debug, Clone, Serialize)]
pub struct ProducerGate {
    /// Every topic checked.
    pub topics: Vec<TopicGate>,
}

impl ProducerGate {
    /// Whether the switch loses nothing: every group of every topic online or with
    /// offsets (or seeded) on the target, and every read answered.
    pub fn passed(&self) -> bool {
        self.topics.iter().all(|t| {
            t.failed_reads.is_empty()
                && t.groups.iter().all(|g| {
                    matches!(
                        g.standing,
                        GroupStanding::Online
                            | GroupStanding::Offsets
                            | GroupStanding::Seeded
                            | GroupStanding::WouldSeed
                    )
                })
        })
    }

    /// One line: what passed, or what to do.
    pub fn reason(&self, from: Target, to: Target) -> String {
        if self.topics.is_empty() {
            return "the pod has produced nothing since it started (or its state was restored): no topic to check".to_owned();
        }
        let failed: Vec<&String> = self.topics.iter().flat_map(|t| &t.failed_reads).collect();
        if let Some(first) = failed.first() {
            return format!(
                "{} read(s) failed, so the gate cannot tell whether the switch is safe (fails closed); first: {first}",
                failed.len()
            );
        }
        let mut missing: Vec<String> = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        for t in &self.topics {
            for g in &t.groups {
                match g.standing {
                    GroupStanding::Missing => {
                        missing.push(format!("{} (topic {})", g.group, t.topic))
                    }
                    GroupStanding::Unknown => {
                        unknown.push(format!("{} (topic {}: {})", g.group, t.topic, g.detail))
                    }
                    _ => {}
                }
            }
        }
        if !missing.is_empty() || !unknown.is_empty() {
            let mut s = String::new();
            if !missing.is_empty() {
                s.push_str(&format!(
                    "consumer group(s) not yet on {to}: {}; move at least one consumer of each to {to} first (or switch with \"seed_offsets\": true to commit their offsets on {to} at the queues' end)",
                    missing.join(", ")
                ));
            }
            if !unknown.is_empty() {
                if !s.is_empty() {
                    s.push_str("; ");
                }
                s.push_str(&format!("not known: {}", unknown.join(", ")));
            }
            return s;
        }
        let groups: BTreeSet<&str> = self
            .topics
            .iter()
            .flat_map(|t| t.groups.iter().map(|g| g.group.as_str()))
            .collect();
        format!(
            "every consumer group of the pod's {} topic(s) on {from} is on {to} ({} group(s))",
            self.topics.len(),
            groups.len()
        )
    }
}

/// What the gate is asked to check.
#[derive(Debug, Clone)]
pub struct ProducerGateInput<'a> {
    /// The cluster the producers leave.
    pub from: Target,
    /// The cluster they move to.
    pub to: Target,
    /// Topic -> the pod's producer groups that sent to it.
    pub produced: &'a std::collections::BTreeMap<String, BTreeSet<String>>,
    /// Commit missing offsets at the queues' end.
    pub seed_offsets: bool,
    /// Read only: seeding is reported as `would_seed`, nothing is written.
    pub dry_run: bool,
}

/// Runs the gate.
pub async fn check<R: ClusterReads>(reads: &R, input: ProducerGateInput<'_>) -> ProducerGate {
    let mut topics = Vec::new();
    for (topic, produced_by) in input.produced {
        if topic.starts_with("%RETRY%") || topic.starts_with("%DLQ%") {
            continue;
        }
        topics.push(check_topic(reads, &input, topic, produced_by).await);
    }
    ProducerGate { topics }
}

async fn check_topic<R: ClusterReads>(
    reads: &R,
    input: &ProducerGateInput<'_>,
    topic: &str,
    produced_by: &BTreeSet<String>,
) -> TopicGate {
    let mut gate = TopicGate {
        topic: topic.to_owned(),
        produced_by: produced_by.clone(),
        groups: Vec::new(),
        failed_reads: Vec::new(),
    };
    // Who consumes it where the producers are now.
    let source = match reads.topic_queues(input.from, topic).await {
        Ok(Some(q)) => q,
        // Not on the cluster being left: nobody can be consuming it there.
        Ok(None) => return gate,
        Err(e) => {
            gate.failed_reads.push(e.to_string());
            return gate;
        }
    };
    let mut groups = BTreeSet::new();
    for broker in &source {
        let Some(addr) = &broker.master else { continue };
        match reads.consume_by_who(input.from, addr, topic).await {
            Ok(g) => groups.extend(consumer_groups(g, topic)),
            Err(e) => gate.failed_reads.push(e.to_string()),
        }
    }
    if groups.is_empty() {
        return gate;
    }
    let target = match reads.topic_queues(input.to, topic).await {
        Ok(Some(q)) => q,
        Ok(None) => {
            gate.failed_reads.push(format!(
                "topic {topic} does not exist on {}: create it there first",
                input.to
            ));
            return gate;
        }
        Err(e) => {
            gate.failed_reads.push(e.to_string());
            return gate;
        }
    };
    // The groups with offsets on the topic (or online) per broker of the target: a group
    // absent there has no offset on any of that broker's queues. (A 4.9.x broker answers
    // QUERY_CONSUMER_OFFSET of an empty queue with 0 whether an offset is stored or not.)
    // Where that cannot be asked (a 5.x Proxy serves no QUERY_TOPIC_CONSUME_BY_WHO), the
    // per-queue answers decide alone (5.x brokers honour `setZeroIfNotFound=false`).
    let mut known_there: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for broker in &target {
        let Some(addr) = &broker.master else { continue };
        match reads.consume_by_who(input.to, addr, topic).await {
            Ok(g) => {
                known_there.insert(broker.broker_name.clone(), g);
            }
            Err(e) => {
                tracing::debug!(cluster = %input.to, %topic, reason = %e, "groups of the topic not listed there; asking per queue");
            }
        }
    }
    for group in groups {
        gate.groups
            .push(check_group(reads, input, topic, &group, &target, &known_there).await);
    }
    gate
}

/// The consumer groups of a QUERY_TOPIC_CONSUME_BY_WHO answer: system groups dropped, and
/// the topic's own name, which 5.3.x brokers list in place of the names of the groups
/// online (`ConsumerManager` adds the subscription's topic to its topic -> groups table);
/// groups with committed offsets are listed by name on every version. (A group named exactly
/// like its topic is dropped with that entry: the one answer cannot tell the two apart.)
fn consumer_groups(answer: BTreeSet<String>, topic: &str) -> impl Iterator<Item = String> + '_ {
    answer
        .into_iter()
        .filter(move |g| g != topic && !is_system_group(g))
}

async fn check_group<R: ClusterReads>(
    reads: &R,
    input: &ProducerGateInput<'_>,
    topic: &str,
    group: &str,
    target: &[BrokerQueues],
    known_there: &BTreeMap<String, BTreeSet<String>>,
) -> GroupOnTarget {
    let to = input.to;
    let mut out = GroupOnTarget {
        group: group.to_owned(),
        standing: GroupStanding::Unknown,
        queues_without_offset: Vec::new(),
        detail: String::new(),
    };
    // Online there and subscribed: it pulls everything written from now on.
    for broker in target {
        let Some(addr) = &broker.master else { continue };
        match reads.online(to, addr, group).await {
            Ok(Some(conn)) if conn.topics.is_empty() || conn.topics.contains(topic) => {
                out.standing = GroupStanding::Online;
                out.detail = format!("{} member(s) online at {addr}", conn.client_ids.len());
                return out;
            }
            Ok(Some(_)) => {
                out.detail = format!("online at {addr} but not subscribed to {topic}");
            }
            Ok(None) => {}
            Err(e) => {
                out.detail = e.to_string();
                return out;
            }
        }
        // Membership is registered with every broker alike: one answer is enough.
        break;
    }
    // Otherwise: an offset on every queue.
    let mut missing: Vec<(String, Queue)> = Vec::new();
    let mut present = 0usize;
    for broker in target {
        let Some(addr) = &broker.master else {
            out.detail = format!(
                "broker {} of {topic} has no master on {to}",
                broker.broker_name
            );
            return out;
        };
        let listed = known_there
            .get(&broker.broker_name)
            .is_none_or(|groups| groups.contains(group));
        for queue_id in 0..broker.queues {
            let queue = Queue {
                broker_name: broker.broker_name.clone(),
                queue_id,
            };
            if !listed {
                missing.push((addr.clone(), queue));
                continue;
            }
            match reads.committed_offset(to, addr, group, topic, &queue).await {
                Ok(Some(_)) => present += 1,
                Ok(None) => missing.push((addr.clone(), queue)),
                Err(e) => {
                    out.detail = e.to_string();
                    return out;
                }
            }
        }
    }
    if missing.is_empty() {
        out.standing = GroupStanding::Offsets;
        out.detail = format!("offsets on all {present} queue(s)");
        return out;
    }
    out.queues_without_offset = missing.iter().map(|(_, q)| q.clone()).collect();
    if !input.seed_offsets {
        out.standing = GroupStanding::Missing;
        out.detail = format!(
            "not online on {to}; no offset on {} of {} queue(s)",
            missing.len(),
            missing.len() + present
        );
        return out;
    }
    if input.dry_run {
        out.standing = GroupStanding::WouldSeed;
        out.detail = format!(
            "{} queue(s) would get an offset at their end",
            missing.len()
        );
        return out;
    }
    let mut seeded = Vec::new();
    for (addr, queue) in &missing {
        let end = match reads.max_offset(to, addr, topic, queue).await {
            Ok(end) => end,
            Err(e) => {
                out.detail = format!("seeding stopped: {e}");
                return out;
            }
        };
        if let Err(e) = reads
            .commit_offset(to, addr, group, topic, queue, end)
            .await
        {
            out.detail = match &e {
                ReadError::Refused { code: 26, .. } => format!(
                    "seeding refused: create the subscription group {group} on {to} first ({e})"
                ),
                _ => format!("seeding stopped: {e}"),
            };
            return out;
        }
        seeded.push(format!("{}:{}@{end}", queue.broker_name, queue.queue_id));
    }
    out.standing = GroupStanding::Seeded;
    out.detail = format!(
        "offsets committed at the queues' end: {}",
        seeded.join(", ")
    );
    out
}
