//! Gate `backlog_drained`: the pod's consumers may leave a cluster while other members of
//! their group stay there (those keep consuming), but the last members leave only once
//! nothing is left for them: no backlog on any queue of the group there (its retry topic
//! included) and no message written there for `quiet` (a producer still writing there
//! would strand what it writes).
//!
//! Members come from GET_CONSUMER_LIST_BY_GROUP on a broker of the group's topics (the
//! pod's own client ids taken out); backlog and the last write from GET_CONSUME_STATS on
//! every broker of those topics (`lastTimestamp` is the store time of each queue's last
//! message).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rmq_common::Target;
use serde::Serialize;

use super::reads::ClusterReads;

/// One consumer group of the pod.
#[derive(Debug, Clone, Serialize)]
pub struct GroupGate {
    /// The group.
    pub group: String,
    /// Members on the cluster being left other than this pod's clients.
    pub other_members: usize,
    /// This pod's clients are the last members there (the backlog decides).
    pub last_members: bool,
    /// Messages not consumed, per topic (retry topic included), on the cluster being left.
    pub backlog: BTreeMap<String, i64>,
    /// Milliseconds since a message was last written to one of its queues there.
    pub last_write_ms_ago: Option<u64>,
    /// Whether this group may leave.
    pub passed: bool,
    /// Why.
    pub detail: String,
}

/// What the gate found.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerGate {
    /// Every consumer group of the pod.
    pub groups: Vec<GroupGate>,
    /// Reads that failed.
    pub failed_reads: Vec<String>,
}

impl ConsumerGate {
    /// Whether the consumers may leave.
    pub fn passed(&self) -> bool {
        self.failed_reads.is_empty() && self.groups.iter().all(|g| g.passed)
    }

    /// One line: what passed, or what to wait for.
    pub fn reason(&self, from: Target) -> String {
        if let Some(first) = self.failed_reads.first() {
            return format!(
                "{} read(s) failed, so the gate cannot tell whether the switch is safe (fails closed); first: {first}",
                self.failed_reads.len()
            );
        }
        if self.groups.is_empty() {
            return "the pod has no consumer group recorded: nothing to check".to_owned();
        }
        let waiting: Vec<String> = self
            .groups
            .iter()
            .filter(|g| !g.passed)
            .map(|g| format!("{}: {}", g.group, g.detail))
            .collect();
        if waiting.is_empty() {
            let last = self.groups.iter().filter(|g| g.last_members).count();
            return format!(
                "{} group(s) keep other members on {from}; {last} leave(s) {from} with nothing left to consume",
                self.groups.len() - last
            );
        }
        format!(
            "the pod's clients are the last members on {from} of: {}",
            waiting.join("; ")
        )
    }
}

/// What the gate is asked to check.
#[derive(Debug, Clone)]
pub struct ConsumerGateInput<'a> {
    /// The cluster the consumers leave.
    pub from: Target,
    /// Group -> subscribed topics (retry topic included), as the pod's heartbeats said.
    pub consumed: &'a BTreeMap<String, BTreeSet<String>>,
    /// The pod's client ids.
    pub own_ids: &'a BTreeSet<String>,
    /// Now (Unix ms).
    pub now_ms: u64,
    /// How long the cluster must have had no write to the group's topics.
    pub quiet: Duration,
}

/// Runs the gate.
pub async fn check<R: ClusterReads>(reads: &R, input: ConsumerGateInput<'_>) -> ConsumerGate {
    let mut gate = ConsumerGate {
        groups: Vec::new(),
        failed_reads: Vec::new(),
    };
    for (group, topics) in input.consumed {
        match check_group(reads, &input, group, topics).await {
            Ok(g) => gate.groups.push(g),
            Err(e) => gate.failed_reads.push(e),
        }
    }
    gate
}

async fn check_group<R: ClusterReads>(
    reads: &R,
    input: &ConsumerGateInput<'_>,
    group: &str,
    topics: &BTreeSet<String>,
) -> Result<GroupGate, String> {
    let from = input.from;
    // Every master of the group's topics on the cluster being left.
    let mut brokers: BTreeSet<String> = BTreeSet::new();
    for topic in topics {
        match reads.topic_queues(from, topic).await {
            Ok(Some(q)) => brokers.extend(q.into_iter().filter_map(|b| b.master)),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let mut out = GroupGate {
        group: group.to_owned(),
        other_members: 0,
        last_members: false,
        backlog: BTreeMap::new(),
        last_write_ms_ago: None,
        passed: false,
        detail: String::new(),
    };
    let Some(first) = brokers.iter().next() else {
        out.passed = true;
        out.detail = format!("none of its topics is on {from}");
        return Ok(out);
    };
    let ids = reads
        .consumer_ids(from, first, group)
        .await
        .map_err(|e| e.to_string())?;
    out.other_members = ids.difference(input.own_ids).count();
    if out.other_members > 0 {
        out.passed = true;
        out.detail = format!(
            "{} other member(s) stay on {from} and keep consuming",
            out.other_members
        );
        return Ok(out);
    }
    out.last_members = true;
    let mut last_write: i64 = 0;
    for addr in &brokers {
        let stats = reads
            .consume_stats(from, addr, group)
            .await
            .map_err(|e| e.to_string())?;
        for q in stats {
            *out.backlog.entry(q.topic.clone()).or_default() += q.lag();
            last_write = last_write.max(q.last_timestamp);
        }
    }
    if last_write > 0 {
        out.last_write_ms_ago = Some(input.now_ms.saturating_sub(last_write as u64));
    }
    let total: i64 = out.backlog.values().sum();
    let quiet_ms = input.quiet.as_millis() as u64;
    if total > 0 {
        let per_topic: Vec<String> = out
            .backlog
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        out.detail = format!(
            "backlog {total} on {from} ({}); wait until it is consumed",
            per_topic.join(", ")
        );
    } else if let Some(ago) = out.last_write_ms_ago.filter(|ago| *ago < quiet_ms) {
        out.detail = format!(
            "no backlog, but a message was written on {from} {:.1} s ago (a producer still writes there?); wait {} s without writes",
            ago as f64 / 1000.0,
            input.quiet.as_secs()
        );
    } else {
        out.passed = true;
        out.detail = format!(
            "no backlog on {from}, and no write for at least {} s",
            input.quiet.as_secs()
        );
    }
    Ok(out)
}
